//! Broadcast signatures: the origin signs, every receiver verifies once
//! (docs/PROTOCOL.md 3.5 "Signatures").
//!
//! Before these, a neighbour that knew an origin's id could send broadcasts "from"
//! it: every node delivered them as that origin's, and the origin's real broadcasts
//! with the same sequence numbers were then dropped everywhere as duplicates. Now a
//! BROADCAST carries its origin's Ed25519 public key and a signature, and a receiver
//! accepts it only if the key hashes to the origin id (the id *is* that hash, see
//! `identity`) and the signature verifies over [`Broadcast::signed_bytes`]. A relay
//! cannot forge one, so it cannot pre-empt an origin's sequence numbers either.
//!
//! The methods live here rather than beside `Broadcast` in `p2p_message`, because
//! they need `identity`, and `identity` imports `p2p_message` (for `NodeId`): the
//! wire module stays free of crypto, the bytes to sign stay with the layout.

use crate::identity::{node_id_from_public_key, verify_signature, Identity};
use crate::p2p_message::{Broadcast, ForgedReason};

impl Broadcast {
    /// Makes `identity` the signer: sets the public key and signs the signed bytes.
    /// The caller sets `origin` to `identity.node_id()` first (otherwise
    /// [`verify`](Broadcast::verify) refuses the result, as it should).
    pub fn sign(&mut self, identity: &Identity) {
        self.public_key = identity.public_key();
        self.signature = identity.sign(&self.signed_bytes());
    }

    /// Whether the origin signed this broadcast: the key must hash to `origin`, and
    /// the signature must be the key's over the signed bytes. The hash is checked
    /// first: it is much cheaper (one SHA-256 of 44 bytes against about 37 µs for an
    /// Ed25519 verification), and a key that is not the origin's makes the signature
    /// worthless however valid it is.
    pub fn verify(&self) -> Result<(), ForgedReason> {
        if node_id_from_public_key(&self.public_key) != self.origin {
            return Err(ForgedReason::KeyNotOrigin);
        }
        if !verify_signature(&self.public_key, &self.signed_bytes(), &self.signature) {
            return Err(ForgedReason::BadSignature);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::p2p_message::{NodeId, P2PMessage, BROADCAST_SIGNING_DOMAIN, LEN_PREFIX};

    fn signed(identity: &Identity, text: &str) -> Broadcast {
        let mut b = Broadcast {
            origin: identity.node_id(),
            seq: 7,
            hops: 1,
            origin_addr: "192.0.2.1:9000".parse().expect("addr"),
            public_key: [0; 32],
            signature: [0; 64],
            text: text.into(),
        };
        b.sign(identity);
        b
    }

    #[test]
    fn signed_bytes_are_domain_origin_seq_addr_text() {
        let b = Broadcast {
            origin: NodeId(0x0102_0304_0506_0708),
            seq: 2,
            hops: 9,
            origin_addr: "1.2.3.4:5".parse().expect("addr"),
            public_key: [0xAA; 32],
            signature: [0xBB; 64],
            text: "x".into(),
        };
        let mut want = b"p2p-overlay broadcast v3\0".to_vec();
        want.extend_from_slice(&[1, 2, 3, 4, 5, 6, 7, 8]);
        want.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0, 2]);
        want.extend_from_slice(&[4, 1, 2, 3, 4, 0, 5]);
        want.push(b'x');
        assert_eq!(b.signed_bytes(), want);
        assert_eq!(
            &want[..BROADCAST_SIGNING_DOMAIN.len()],
            BROADCAST_SIGNING_DOMAIN
        );
        // Neither hops nor key nor signature is signed.
        let other = Broadcast {
            hops: 1,
            public_key: [0; 32],
            signature: [0; 64],
            ..b.clone()
        };
        assert_eq!(other.signed_bytes(), want);
    }

    #[test]
    fn a_signed_broadcast_verifies_and_survives_the_wire_and_any_hop_count() {
        let a = Identity::generate();
        let b = signed(&a, "hello ünïcødé");
        assert_eq!(b.verify(), Ok(()));
        let frame = P2PMessage::Broadcast(b.clone()).encode();
        let Ok(P2PMessage::Broadcast(back)) = P2PMessage::decode(&frame[LEN_PREFIX..]) else {
            panic!("does not decode");
        };
        assert_eq!(back.verify(), Ok(()));
        for hops in [0, 2, 255] {
            assert_eq!(Broadcast { hops, ..b.clone() }.verify(), Ok(()));
        }
        // Signing is deterministic (Ed25519): the same broadcast, the same bytes.
        assert_eq!(signed(&a, "hello ünïcødé"), b);
    }

    #[test]
    fn any_changed_signed_field_or_signature_bit_is_refused() {
        let a = Identity::generate();
        let b = signed(&a, "text");
        let mut text = b.clone();
        text.text = "texT".into();
        let mut seq = b.clone();
        seq.seq ^= 1;
        let mut port = b.clone();
        port.origin_addr.set_port(9001);
        let mut ip = b.clone();
        ip.origin_addr = "192.0.2.2:9000".parse().expect("addr");
        let mut v6 = b.clone();
        v6.origin_addr = "[::ffff:192.0.2.1]:9000".parse().expect("addr");
        let mut sig = b.clone();
        sig.signature[63] ^= 0x80;
        let mut empty = b.clone();
        empty.text.clear();
        for (what, forged) in [
            ("text", text),
            ("seq", seq),
            ("port", port),
            ("ip", ip),
            ("address family", v6),
            ("signature bit", sig),
            ("text removed", empty),
        ] {
            assert_eq!(forged.verify(), Err(ForgedReason::BadSignature), "{what}");
        }
    }

    #[test]
    fn a_key_that_is_not_the_origins_is_refused_even_with_a_valid_signature() {
        let a = Identity::generate();
        let attacker = Identity::generate();
        // The attacker signs correctly with its own key, claiming a's id.
        let mut b = signed(&attacker, "from a, honestly");
        b.origin = a.node_id();
        b.signature = attacker.sign(&b.signed_bytes());
        assert_eq!(b.verify(), Err(ForgedReason::KeyNotOrigin));
        // a's key with the attacker's signature.
        b.public_key = a.public_key();
        assert_eq!(b.verify(), Err(ForgedReason::BadSignature));
        // a's real broadcast, re-signed under a changed origin id.
        let mut moved = signed(&a, "x");
        moved.origin = NodeId(moved.origin.0 ^ 1);
        assert_eq!(moved.verify(), Err(ForgedReason::KeyNotOrigin));
        // All-zero key and signature (what an unsigned sender would put).
        let zero = Broadcast {
            public_key: [0; 32],
            signature: [0; 64],
            ..signed(&a, "x")
        };
        assert_eq!(zero.verify(), Err(ForgedReason::KeyNotOrigin));
    }

    fn unhex(s: &str) -> Vec<u8> {
        s.split_whitespace()
            .map(|b| u8::from_str_radix(b, 16).expect("hex"))
            .collect()
    }

    /// The golden signed BROADCAST of docs/PROTOCOL.md section 6, made with the
    /// secret key of RFC 8032's first Ed25519 test vector, so another implementation
    /// can check its signed bytes, node id and signature against ours byte by byte.
    #[test]
    fn golden_signed_broadcast_from_the_rfc8032_test_key() {
        let mut pkcs8 = unhex("30 2e 02 01 00 30 05 06 03 2b 65 70 04 22 04 20");
        pkcs8.extend(unhex(
            "9d 61 b1 9d ef fd 5a 60 ba 84 4a f4 92 ec 2c c4 \
             44 49 c5 69 7b 32 69 19 70 3b ac 03 1c ae 7f 60",
        ));
        let key = Identity::from_pkcs8_der(&pkcs8).expect("RFC 8032 key");
        assert_eq!(
            key.public_key().to_vec(),
            unhex(
                "d7 5a 98 01 82 b1 0a b7 d5 4b fe d3 c9 64 07 3a \
                 0e e1 72 f3 da a6 23 25 af 02 1a 68 f7 07 51 1a"
            )
        );
        assert_eq!(key.node_id(), NodeId(0x06e3_fd8f_da29_bb60));
        let mut b = Broadcast {
            origin: key.node_id(),
            seq: 1,
            hops: 1,
            origin_addr: "192.0.2.1:9000".parse().expect("addr"),
            public_key: [0; 32],
            signature: [0; 64],
            text: "hi".into(),
        };
        b.sign(&key);
        assert_eq!(
            b.signed_bytes(),
            unhex(
                "70 32 70 2d 6f 76 65 72 6c 61 79 20 62 72 6f 61 64 63 61 73 74 20 76 33 00 \
                 06 e3 fd 8f da 29 bb 60  00 00 00 00 00 00 00 01  04 c0 00 02 01 23 28  68 69"
            )
        );
        let sig = unhex(
            "b3 d6 4f 0e aa 0c 1c 27 6c f1 d4 4a 82 f0 22 92 51 b0 61 95 05 f5 da 25 c5 4d 89 ff \
             83 e0 c2 23 7b 9c 19 8d e6 8c c9 49 c9 4a 1e 42 c6 2e 71 93 e3 98 66 db a5 6e fd fd \
             d3 06 6d 79 43 fb 3b 03",
        );
        assert_eq!(b.signature.to_vec(), sig);
        let mut frame = unhex(
            "00 00 00 7b  05  06 e3 fd 8f da 29 bb 60  00 00 00 00 00 00 00 01  01  \
             04 c0 00 02 01 23 28",
        );
        frame.extend(key.public_key());
        frame.extend(&sig);
        frame.extend(b"hi");
        assert_eq!(P2PMessage::Broadcast(b.clone()).encode(), frame);
        assert_eq!(b.verify(), Ok(()));
    }
}
