//! Property tests of the wire codec (`read_frame`, `P2PMessage::decode`/`encode`):
//! arbitrary bytes never panic and always give a typed answer; every valid message
//! survives encode -> read_frame -> decode unchanged; and decode accepts only what
//! encode could have produced (so there is one byte string per message).

use std::io::{self, Read};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use proptest::collection::vec;
use proptest::prelude::*;

use p2p_overlay::p2p_message::{
    read_frame, read_frame_buffered, Announcement, Broadcast, DecodeError, Join, DEFAULT_MAX_FRAME,
    LEN_PREFIX, MAX_JOIN_FRAME, MAX_NETWORK_NAME, MAX_PEERS_PER_MESSAGE,
};
use p2p_overlay::{MessageType, NodeId, P2PMessage, PeerEntry};

// ---------------------------------------------------------------------------------
// Generators
// ---------------------------------------------------------------------------------

fn text(max_chars: usize) -> impl Strategy<Value = String> {
    prop_oneof![
        vec(any::<char>(), 0..max_chars).prop_map(String::from_iter),
        vec(0x20u8..0x7f, 0..max_chars).prop_map(|b| String::from_utf8(b).expect("ascii")),
    ]
}

/// Network names of at most 64 bytes, ASCII up to the limit or any characters.
fn network() -> impl Strategy<Value = String> {
    prop_oneof![
        vec(0x20u8..0x7f, 0..=MAX_NETWORK_NAME).prop_map(|b| String::from_utf8(b).expect("ascii")),
        vec(any::<char>(), 0..=16).prop_map(String::from_iter),
    ]
    .prop_filter("at most 64 bytes", |s| s.len() <= MAX_NETWORK_NAME)
}

fn ip() -> impl Strategy<Value = IpAddr> {
    prop_oneof![
        any::<[u8; 4]>().prop_map(|o| IpAddr::V4(Ipv4Addr::from(o))),
        any::<[u8; 16]>().prop_map(|o| IpAddr::V6(Ipv6Addr::from(o))),
    ]
}

fn socket_addr() -> impl Strategy<Value = SocketAddr> {
    (ip(), any::<u16>()).prop_map(|(ip, port)| SocketAddr::new(ip, port))
}

fn join() -> impl Strategy<Value = Join> {
    (
        any::<u16>(),
        any::<u64>(),
        any::<u16>(),
        network(),
        proptest::option::of(ip()),
        proptest::option::of(ip()),
    )
        .prop_map(
            |(version, id, listen_port, network, advertise, observed)| Join {
                version,
                node_id: NodeId(id),
                listen_port,
                network,
                advertise,
                observed,
            },
        )
}

fn broadcast() -> impl Strategy<Value = Broadcast> {
    (
        any::<u64>(),
        any::<u64>(),
        any::<u8>(),
        socket_addr(),
        (any::<[u8; 32]>(), any::<[u8; 32]>(), any::<[u8; 32]>()),
        text(200),
    )
        .prop_map(
            |(origin, seq, hops, origin_addr, (public_key, sig_a, sig_b), text)| {
                // Any bytes: the codec does not check signatures (the receiver does).
                let mut signature = [0u8; 64];
                signature[..32].copy_from_slice(&sig_a);
                signature[32..].copy_from_slice(&sig_b);
                Broadcast {
                    origin: NodeId(origin),
                    seq,
                    hops,
                    origin_addr,
                    public_key,
                    signature,
                    text,
                }
            },
        )
}

fn message() -> impl Strategy<Value = P2PMessage> {
    prop_oneof![
        join().prop_map(P2PMessage::Join),
        text(300).prop_map(|text| P2PMessage::Data { text }),
        any::<u64>().prop_map(|nonce| P2PMessage::Ping { nonce }),
        any::<u64>().prop_map(|nonce| P2PMessage::Pong { nonce }),
        vec((socket_addr(), any::<u64>()), 0..=50).prop_map(|v| P2PMessage::Peers {
            addrs: v
                .into_iter()
                .map(|(addr, id)| PeerEntry {
                    addr,
                    id: Some(NodeId(id)).filter(|i| i.0 != 0),
                })
                .collect()
        }),
        broadcast().prop_map(P2PMessage::Broadcast),
        Just(P2PMessage::Leave),
        vec((any::<u64>(), any::<u64>(), any::<u8>()), 0..=40).prop_map(|ids| {
            P2PMessage::IHave {
                ids: ids
                    .into_iter()
                    .map(|(o, s, hops)| Announcement {
                        id: (NodeId(o), s),
                        hops,
                    })
                    .collect(),
            }
        }),
        vec((any::<u64>(), any::<u64>()), 0..=40).prop_map(|ids| P2PMessage::Graft {
            ids: ids.into_iter().map(|(o, s)| (NodeId(o), s)).collect()
        }),
        any::<u64>().prop_map(|o| P2PMessage::Prune { origin: NodeId(o) }),
    ]
}

/// Arbitrary bytes, biased towards frames: often a plausible length prefix and a
/// known type byte in front of random bytes, so the decoder's inner paths are reached.
fn framish_bytes() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        vec(any::<u8>(), 0..600),
        (0u8..12, vec(any::<u8>(), 0..600)).prop_map(|(t, body)| {
            let mut v = ((body.len() + 1) as u32).to_be_bytes().to_vec();
            v.push(t);
            v.extend(body);
            v
        }),
    ]
}

/// A reader that hands out its bytes in the given chunk sizes and returns
/// `Interrupted` before every chunk, like a socket read by a signal-heavy process.
struct Trickle {
    data: Vec<u8>,
    pos: usize,
    chunks: Vec<usize>,
    next: usize,
    interrupt: bool,
}

impl Read for Trickle {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.interrupt {
            self.interrupt = false;
            return Err(io::Error::new(io::ErrorKind::Interrupted, "signal"));
        }
        self.interrupt = true;
        let want = self.chunks.get(self.next).copied().unwrap_or(7).max(1);
        self.next += 1;
        let n = want.min(buf.len()).min(self.data.len() - self.pos);
        buf[..n].copy_from_slice(&self.data[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

fn frame_body(msg: &P2PMessage) -> Vec<u8> {
    msg.encode()[LEN_PREFIX..].to_vec()
}

// ---------------------------------------------------------------------------------
// Properties
// ---------------------------------------------------------------------------------

proptest! {
    /// Any byte string: `decode` returns a message or a typed error, never panics,
    /// and whatever it accepts is exactly what `encode` writes for that message
    /// (for JOIN: a prefix of it, since a JOIN may carry trailing extension bytes).
    #[test]
    fn decode_of_any_bytes_is_total_and_canonical(bytes in framish_bytes()) {
        let frame = if bytes.len() > LEN_PREFIX { &bytes[LEN_PREFIX..] } else { &bytes[..] };
        for input in [&bytes[..], frame] {
            match P2PMessage::decode(input) {
                Ok(msg) => {
                    let again = frame_body(&msg);
                    match msg {
                        P2PMessage::Join(_) => prop_assert!(input.starts_with(&again)),
                        _ => prop_assert_eq!(&again[..], input),
                    }
                    prop_assert_eq!(msg.encoded_len(), again.len() + LEN_PREFIX);
                }
                Err(e) => {
                    let framing_error =
                        matches!(e, DecodeError::Io(_) | DecodeError::TooLarge { .. } | DecodeError::Empty);
                    prop_assert!(!framing_error, "decode reported a framing error: {:?}", e);
                    if let DecodeError::UnknownType(t) = e {
                        prop_assert!(t >= 7);
                        prop_assert_eq!(input[0], t);
                    }
                    prop_assert!(!e.to_string().is_empty());
                }
            }
        }
    }

    /// Any byte string and any limit: `read_frame` never panics and its answer is
    /// exactly determined by the length prefix.
    #[test]
    fn read_frame_of_any_bytes_is_total_and_exact(
        bytes in framish_bytes(),
        max in prop_oneof![Just(MAX_JOIN_FRAME), Just(DEFAULT_MAX_FRAME), 0u32..700],
    ) {
        let got = read_frame(&mut &bytes[..], max);
        if bytes.is_empty() {
            prop_assert!(matches!(got, Ok(None)));
            return Ok(());
        }
        if bytes.len() < LEN_PREFIX {
            prop_assert!(
                matches!(got, Err(DecodeError::Truncated { needed: 4, got: g }) if g == bytes.len()),
                "{:?}", got
            );
            return Ok(());
        }
        let len = u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]);
        let avail = bytes.len() - LEN_PREFIX;
        match got {
            Ok(Some(f)) => {
                prop_assert!(len >= 1 && len <= max);
                prop_assert_eq!(&f[..], &bytes[LEN_PREFIX..LEN_PREFIX + len as usize]);
            }
            Ok(None) => prop_assert!(false, "None for a non-empty input"),
            Err(DecodeError::Empty) => prop_assert_eq!(len, 0),
            Err(DecodeError::TooLarge { len: l, max: m }) => {
                prop_assert_eq!((l, m), (len, max));
                prop_assert!(len > max && len != 0);
            }
            Err(DecodeError::Truncated { needed, got }) => {
                prop_assert!(len >= 1 && len <= max);
                prop_assert_eq!((needed, got), (len as usize, avail));
                prop_assert!(avail < len as usize);
            }
            Err(e) => prop_assert!(false, "unexpected {:?}", e),
        }
    }

    /// Delivery in arbitrary small chunks, with interrupted reads in between, gives
    /// the same frame as one big read.
    #[test]
    fn read_frame_does_not_depend_on_how_bytes_arrive(
        msg in message(),
        chunks in vec(1usize..9, 0..64),
    ) {
        let bytes = msg.encode();
        let mut r = Trickle { data: bytes.clone(), pos: 0, chunks, next: 0, interrupt: true };
        let frame = read_frame(&mut r, DEFAULT_MAX_FRAME).expect("reads").expect("a frame");
        prop_assert_eq!(&frame[..], &bytes[LEN_PREFIX..]);
        prop_assert_eq!(P2PMessage::decode(&frame).expect("decodes"), msg);
    }

    /// Every valid message round-trips through encode -> read_frame -> decode, and
    /// `encoded_len` is the encoded size.
    #[test]
    fn every_valid_message_round_trips(msg in message()) {
        let bytes = msg.encode();
        prop_assert_eq!(bytes.len(), msg.encoded_len());
        prop_assert_eq!(
            u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]) as usize,
            bytes.len() - LEN_PREFIX
        );
        let frame = read_frame(&mut &bytes[..], DEFAULT_MAX_FRAME)
            .expect("reads")
            .expect("a frame");
        let kind = MessageType::from(frame[0]);
        prop_assert_eq!(kind, msg.message_type());
        prop_assert_eq!(P2PMessage::decode(&frame).expect("decodes"), msg.clone());
        if let P2PMessage::Join(_) = msg {
            // A version-1 JOIN always fits the pre-handshake limit.
            prop_assert!(frame.len() <= MAX_JOIN_FRAME as usize);
        }
    }

    /// Several messages back to back on one stream come out in order, then a clean
    /// end of stream.
    #[test]
    fn a_stream_of_messages_decodes_in_order(msgs in vec(message(), 0..12)) {
        let mut stream = Vec::new();
        for m in &msgs {
            m.encode_into(&mut stream);
        }
        let mut r = &stream[..];
        for m in &msgs {
            let f = read_frame(&mut r, DEFAULT_MAX_FRAME).expect("reads").expect("a frame");
            prop_assert_eq!(&P2PMessage::decode(&f).expect("decodes"), m);
        }
        prop_assert!(matches!(read_frame(&mut r, DEFAULT_MAX_FRAME), Ok(None)));
    }

    /// `read_frame_buffered` gives exactly what `read_frame` gives, frame by frame,
    /// for any bytes, any limit and any buffer size (so frames straddle refills),
    /// however the bytes trickle in.
    #[test]
    fn read_frame_buffered_agrees_with_read_frame(
        bytes in prop_oneof![
            framish_bytes(),
            vec(message(), 0..8).prop_map(|ms| {
                let mut v = Vec::new();
                ms.iter().for_each(|m| m.encode_into(&mut v));
                v
            }),
        ],
        max in prop_oneof![Just(DEFAULT_MAX_FRAME), 1u32..300],
        cap in 1usize..80,
        chunks in vec(1usize..40, 0..20),
    ) {
        let mut plain = &bytes[..];
        let trickle = Trickle { data: bytes.clone(), pos: 0, chunks, next: 0, interrupt: false };
        let mut buffered = io::BufReader::with_capacity(cap, trickle);
        for _ in 0..bytes.len() + 1 {
            let want = read_frame(&mut plain, max);
            let got = read_frame_buffered(&mut buffered, max);
            prop_assert_eq!(format!("{want:?}"), format!("{got:?}"));
            if !matches!(want, Ok(Some(_))) {
                break;
            }
        }
    }

    /// A valid message cut anywhere is `Truncated` for `read_frame`; its body cut
    /// anywhere, or with one byte changed, never makes `decode` panic.
    #[test]
    fn damaged_messages_never_panic(
        msg in message(),
        cut in any::<prop::sample::Index>(),
        flip in any::<(prop::sample::Index, u8)>(),
    ) {
        let bytes = msg.encode();
        let at = cut.index(bytes.len());
        if at > 0 {
            let got = read_frame(&mut &bytes[..at], DEFAULT_MAX_FRAME);
            prop_assert!(matches!(got, Err(DecodeError::Truncated { .. })), "{:?}", got);
        }
        let body = &bytes[LEN_PREFIX..];
        let _ = P2PMessage::decode(&body[..cut.index(body.len())]);
        let mut changed = body.to_vec();
        let i = flip.0.index(changed.len());
        changed[i] ^= flip.1 | 1;
        let _ = P2PMessage::decode(&changed);
    }

    /// PEERS lists: up to 1000 entries decode, more are `TooManyPeers` whatever
    /// follows the count.
    #[test]
    fn peers_count_is_bounded(n in 0u16..=u16::MAX, tail in vec(any::<u8>(), 0..64)) {
        let mut frame = vec![4u8];
        frame.extend_from_slice(&n.to_be_bytes());
        frame.extend(tail);
        let got = P2PMessage::decode(&frame);
        if n as usize > MAX_PEERS_PER_MESSAGE {
            prop_assert!(matches!(got, Err(DecodeError::TooManyPeers(m)) if m == n as usize), "{:?}", got);
        } else if let Ok(P2PMessage::Peers { addrs }) = got {
            prop_assert_eq!(addrs.len(), n as usize);
        }
    }
}
