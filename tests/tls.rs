//! TLS 1.3 links under attack and under load, with real sockets on 127.0.0.1, real
//! certificates made here with rcgen, and an attacker side built from rustls directly
//! (its verifiers accept anything, so the only checks that run are the node's).
//!
//! "Refused" means, in every case: the node closes the connection (a read on the
//! attacker's socket ends within the deadline), its `handshakes_failed` counter grows,
//! no `PeerUp` for the attacker, and the node still links with a fresh honest node.

mod common;

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use common::*;
use p2p_overlay::identity::node_id_from_spki;
use p2p_overlay::p2p_message::{read_frame, Join, DEFAULT_MAX_FRAME, PROTOCOL_VERSION};
use p2p_overlay::{
    Config, Encryption, Error, Event, HandshakeError, Identity, NetworkCa, NodeId, P2PMessage,
};
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair, PKCS_ED25519,
};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{
    ClientConfig, ClientConnection, DigitallySignedStruct, DistinguishedName, ServerConfig,
    ServerConnection, SignatureScheme, StreamOwned,
};

// -------------------------------------------------------------------------------------
// The attacker's TLS side
// -------------------------------------------------------------------------------------

/// Accepts every certificate and every signature: the attacker checks nothing.
#[derive(Debug)]
struct AcceptAnything;

impl ServerCertVerifier for AcceptAnything {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        _: &[u8],
        _: &CertificateDer<'_>,
        _: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Ok(HandshakeSignatureValid::assertion())
    }
    fn verify_tls13_signature(
        &self,
        _: &[u8],
        _: &CertificateDer<'_>,
        _: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Ok(HandshakeSignatureValid::assertion())
    }
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        vec![SignatureScheme::ED25519]
    }
}

impl ClientCertVerifier for AcceptAnything {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }
    fn verify_client_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        Ok(ClientCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        _: &[u8],
        _: &CertificateDer<'_>,
        _: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Ok(HandshakeSignatureValid::assertion())
    }
    fn verify_tls13_signature(
        &self,
        _: &[u8],
        _: &CertificateDer<'_>,
        _: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Ok(HandshakeSignatureValid::assertion())
    }
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        vec![SignatureScheme::ED25519]
    }
}

/// A certificate chain and its key, and the node id the first certificate proves.
struct Cred {
    chain: Vec<CertificateDer<'static>>,
    key: PrivatePkcs8KeyDer<'static>,
    id: NodeId,
}

fn ed25519_key() -> KeyPair {
    KeyPair::generate_for(&PKCS_ED25519).expect("Ed25519 key")
}

fn id_of(key: &KeyPair) -> NodeId {
    node_id_from_spki(&rcgen::PublicKeyData::subject_public_key_info(key))
        .expect("an Ed25519 SPKI has an id")
}

fn params(cn: &str) -> CertificateParams {
    let mut p = CertificateParams::default();
    p.distinguished_name.push(DnType::CommonName, cn);
    p
}

/// A valid self-signed Ed25519 certificate (what an open-network node presents).
fn self_signed() -> Cred {
    let key = ed25519_key();
    let cert = params("attacker").self_signed(&key).expect("certificate");
    Cred {
        chain: vec![cert.der().clone()],
        id: id_of(&key),
        key: PrivatePkcs8KeyDer::from(key.serialize_der()),
    }
}

/// A self-signed Ed25519 certificate that expired in 2001.
fn expired_self_signed() -> Cred {
    let key = ed25519_key();
    let mut p = params("expired");
    p.not_before = rcgen::date_time_ymd(2000, 1, 1);
    p.not_after = rcgen::date_time_ymd(2001, 1, 1);
    let cert = p.self_signed(&key).expect("certificate");
    Cred {
        chain: vec![cert.der().clone()],
        id: id_of(&key),
        key: PrivatePkcs8KeyDer::from(key.serialize_der()),
    }
}

/// A network CA: its issuer and its certificate.
fn make_ca(cn: &str) -> CertifiedIssuer<'static, KeyPair> {
    let mut p = params(cn);
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    CertifiedIssuer::self_signed(p, ed25519_key()).expect("CA certificate")
}

/// A leaf certificate for `key`, issued by `ca`.
fn issued(key: &KeyPair, ca: &CertifiedIssuer<'static, KeyPair>) -> CertificateDer<'static> {
    params("member")
        .signed_by(key, ca)
        .expect("issued certificate")
        .der()
        .clone()
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A TLS 1.3 client config that checks nothing, presenting `cred` (or no certificate).
fn client_config(cred: Option<&Cred>) -> Arc<ClientConfig> {
    let b = ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .expect("TLS 1.3")
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AcceptAnything));
    let c = match cred {
        Some(c) => b
            .with_client_auth_cert(c.chain.clone(), PrivateKeyDer::Pkcs8(c.key.clone_key()))
            .expect("client certificate"),
        None => b.with_no_client_auth(),
    };
    Arc::new(c)
}

fn server_config(cred: &Cred) -> Arc<ServerConfig> {
    let c = ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .expect("TLS 1.3")
        .with_client_cert_verifier(Arc::new(AcceptAnything))
        .with_single_cert(
            cred.chain.clone(),
            PrivateKeyDer::Pkcs8(cred.key.clone_key()),
        )
        .expect("server certificate");
    Arc::new(c)
}

fn server_name() -> ServerName<'static> {
    ServerName::IpAddress(std::net::Ipv4Addr::LOCALHOST.into())
}

/// A TCP connection with read and write timeouts, so no test can hang on it.
fn tcp(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect_timeout(&addr, DEADLINE).expect("connect");
    s.set_read_timeout(Some(DEADLINE)).expect("timeout");
    s.set_write_timeout(Some(DEADLINE)).expect("timeout");
    s
}

type TlsClient = StreamOwned<ClientConnection, TcpStream>;

/// Connects to `addr` and runs the client side of the handshake as far as the client
/// is concerned (in TLS 1.3 the client is done before the server has judged the
/// client's certificate). `Err` if the node refused before that.
fn tls_connect(addr: SocketAddr, cred: Option<&Cred>) -> (TlsClient, io::Result<()>) {
    let conn = ClientConnection::new(client_config(cred), server_name()).expect("client");
    let mut s = StreamOwned::new(conn, tcp(addr));
    let mut r = Ok(());
    while s.conn.is_handshaking() {
        if let Err(e) = s.conn.complete_io(&mut s.sock) {
            r = Err(e);
            break;
        }
    }
    (s, r)
}

/// The first flight of a TLS 1.3 client: one ClientHello record.
fn client_hello() -> Vec<u8> {
    let mut conn =
        ClientConnection::new(client_config(Some(&self_signed())), server_name()).unwrap();
    let mut out = Vec::new();
    while conn.wants_write() {
        conn.write_tls(&mut out).unwrap();
    }
    assert_eq!(&out[..2], &[0x16, 0x03], "a handshake record");
    out
}

/// Accepts one connection within `timeout` (a test's listener never blocks forever
/// when the node does not dial after all). The stream gets read and write timeouts.
fn accept_within(listener: &TcpListener, timeout: Duration) -> Option<TcpStream> {
    listener.set_nonblocking(true).expect("nonblocking");
    let deadline = Instant::now() + timeout;
    loop {
        match listener.accept() {
            Ok((s, _)) => {
                s.set_nonblocking(false).expect("blocking");
                s.set_read_timeout(Some(DEADLINE)).expect("timeout");
                s.set_write_timeout(Some(DEADLINE)).expect("timeout");
                return Some(s);
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock && Instant::now() < deadline => {
                thread::sleep(Duration::from_millis(5));
            }
            Err(_) => return None,
        }
    }
}

fn join_frame(id: NodeId, listen_port: u16) -> Vec<u8> {
    P2PMessage::Join(Join {
        version: PROTOCOL_VERSION,
        node_id: id,
        listen_port,
        network: default_network(),
        advertise: None,
        observed: None,
    })
    .encode()
}

/// Reads (and discards) until the stream ends or fails (`true`), or `timeout` passes
/// with it still open (`false`). For TLS streams, an alert or bad record counts as
/// the end.
fn ends_within<S: Read>(s: &mut S, sock: &TcpStream, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    let mut buf = [0u8; 4096];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return false;
        }
        sock.set_read_timeout(Some(left)).expect("timeout");
        match s.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                return false
            }
            Err(_) => return true,
        }
    }
}

fn tls_ends_within(s: &mut TlsClient, timeout: Duration) -> bool {
    let sock = s.sock.try_clone().expect("clone");
    ends_within(s, &sock, timeout)
}

fn failed(node: &TestNode) -> u64 {
    node.info().counters.handshakes_failed
}

/// The common verdict: the counter grew past `before`, the attacker (if it has an id)
/// never came up, and the node still links with a fresh honest node.
fn assert_refused(node: &TestNode, before: u64, attacker: Option<NodeId>) {
    assert!(
        eventually(DEADLINE, || failed(node) > before),
        "handshakes_failed stayed at {before}"
    );
    let events = node.pending_events();
    if let Some(id) = attacker {
        assert!(
            !events.iter().any(|e| is_peer_up(e, id)),
            "attacker {id} came up: {events:?}"
        );
        assert!(!node.peer_ids().contains(&id), "attacker {id} is listed");
    }
    assert!(
        !events.iter().any(|e| matches!(e, Event::PeerUp(_))),
        "no link should have come up: {events:?}"
    );
    keeps_serving(node);
}

/// A fresh honest node links with `node`.
fn keeps_serving(node: &TestNode) {
    let honest = start_node(|_| {});
    link(&honest, node);
    assert!(node.is_running());
}

/// A TLS node for refusal tests: short handshake timeout, no dialing of its own.
fn tls_node(handshake: Duration) -> TestNode {
    start_node(|c| {
        c.handshake_timeout = handshake;
        c.auto_dial = false;
    })
}

// -------------------------------------------------------------------------------------
// Refused
// -------------------------------------------------------------------------------------

/// (1) A TLS client that presents no certificate never gets a link: the node requires
/// a client certificate (certificate_required alert) and closes.
#[test]
fn refuses_client_without_certificate() {
    let node = tls_node(Duration::from_secs(2));
    let before = failed(&node);
    let (mut s, _) = tls_connect(node.addr(), None);
    assert!(
        tls_ends_within(&mut s, DEADLINE),
        "node kept the socket open"
    );
    assert_refused(&node, before, None);
}

fn closed_node(ca: &CertifiedIssuer<'static, KeyPair>, dir: &std::path::Path) -> TestNode {
    closed_node_with(ca, &[], ca.der(), dir)
}

fn pem_cert(der: &[u8]) -> String {
    format!(
        "-----BEGIN CERTIFICATE-----\n{}\n-----END CERTIFICATE-----\n",
        base64(der)
    )
}

/// A closed-network node whose certificate `issuer` issued, presented with
/// `intermediates` after it; it trusts `anchor` (the network's root CA).
fn closed_node_with(
    issuer: &CertifiedIssuer<'static, KeyPair>,
    intermediates: &[CertificateDer<'static>],
    anchor: &CertificateDer<'static>,
    dir: &std::path::Path,
) -> TestNode {
    let key = ed25519_key();
    let identity = Identity::from_pkcs8_der(&key.serialize_der()).expect("identity");
    let path = dir.join(format!("{}.pem", identity.node_id()));
    let mut pem = pem_cert(issued(&key, issuer).as_ref());
    for c in intermediates {
        pem.push_str(&pem_cert(c.as_ref()));
    }
    std::fs::write(&path, pem).expect("write certificate");
    let identity = identity
        .with_certificate_file(&path)
        .expect("certificate for the key");
    let anchor = NetworkCa::from_der(vec![anchor.to_vec()]);
    start_node(move |c| {
        c.handshake_timeout = Duration::from_secs(2);
        c.auto_dial = false;
        c.identity = Some(identity);
        c.network_ca = Some(anchor);
    })
}

/// Standard base64 (the PEM body), without pulling in a crate for it.
fn base64(bytes: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for (i, chunk) in bytes.chunks(3).enumerate() {
        if i > 0 && i % 16 == 0 {
            out.push('\n');
        }
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for k in 0..4 {
            if k <= chunk.len() {
                out.push(T[(n >> (18 - 6 * k)) as usize & 63] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// (2) A closed network: two members (CA-issued certificates) link, while a client
/// whose certificate a foreign CA issued (with that CA in its chain, even) is refused.
#[test]
fn closed_network_refuses_foreign_ca() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = make_ca("network CA");
    let node = closed_node(&ca, dir.path());
    let member = closed_node(&ca, dir.path());
    link(&member, &node);

    let foreign = make_ca("foreign CA");
    let key = ed25519_key();
    let cred = Cred {
        chain: vec![issued(&key, &foreign), foreign.der().clone()],
        id: id_of(&key),
        key: PrivatePkcs8KeyDer::from(key.serialize_der()),
    };
    let before = failed(&node);
    let (mut s, _) = tls_connect(node.addr(), Some(&cred));
    // Whatever the client got through, a JOIN now must not be answered with a link.
    let _ = s.write_all(&join_frame(cred.id, 9));
    let _ = s.flush();
    assert!(
        tls_ends_within(&mut s, DEADLINE),
        "node kept the socket open"
    );
    assert!(
        eventually(DEADLINE, || failed(&node) > before),
        "handshakes_failed stayed at {before}"
    );
    assert!(!node.peer_ids().contains(&cred.id));
    assert!(!node.pending_events().iter().any(|e| is_peer_up(e, cred.id)));
    // A self-signed certificate is no member either.
    let before = failed(&node);
    let own = self_signed();
    let (mut s, _) = tls_connect(node.addr(), Some(&own));
    assert!(
        tls_ends_within(&mut s, DEADLINE),
        "node kept the socket open"
    );
    assert!(eventually(DEADLINE, || failed(&node) > before));
    // Control: the same hand-made client with a certificate the network CA issued
    // gets a link, so the refusals above are the issuer check.
    let key = ed25519_key();
    let member_cred = Cred {
        chain: vec![issued(&key, &ca)],
        id: id_of(&key),
        key: PrivatePkcs8KeyDer::from(key.serialize_der()),
    };
    let spare = TcpListener::bind((localhost(), 0)).unwrap();
    let port = spare.local_addr().unwrap().port();
    let _s = tls_join(node.addr(), &member_cred, member_cred.id, port);
    assert!(
        node.wait_for(|e| is_peer_up(e, member_cred.id)).is_some(),
        "a CA-issued hand-made client should come up"
    );
    // Still serves members: a third one links.
    let third = closed_node(&ca, dir.path());
    link(&third, &node);
    assert!(member.is_linked_to(&node));
}

/// (3) An expired self-signed Ed25519 certificate is refused.
#[test]
fn refuses_expired_certificate() {
    let node = tls_node(Duration::from_secs(2));
    let cred = expired_self_signed();
    let before = failed(&node);
    let (mut s, _) = tls_connect(node.addr(), Some(&cred));
    let _ = s.write_all(&join_frame(cred.id, 9));
    let _ = s.flush();
    assert!(
        tls_ends_within(&mut s, DEADLINE),
        "node kept the socket open"
    );
    assert_refused(&node, before, Some(cred.id));
}

/// Completes TLS with `cred`, then reads the node's JOIN and sends one claiming
/// `claimed`. Returns the stream (for the verdict).
fn tls_join(addr: SocketAddr, cred: &Cred, claimed: NodeId, listen_port: u16) -> TlsClient {
    let (mut s, r) = tls_connect(addr, Some(cred));
    r.expect("TLS with a valid self-signed certificate completes");
    match read_frame(&mut s, DEFAULT_MAX_FRAME) {
        Ok(Some(f)) => assert!(matches!(P2PMessage::decode(&f), Ok(P2PMessage::Join(_)))),
        other => panic!("expected the node's JOIN over TLS, got {other:?}"),
    }
    s.write_all(&join_frame(claimed, listen_port))
        .expect("send JOIN");
    s.flush().expect("flush");
    s
}

/// (4) TLS completes with key K (a valid self-signed certificate), then the JOIN
/// claims another node's id: refused (IdMismatch), while an honest JOIN with K's own
/// id over the same kind of connection is accepted (so the refusal is the id check).
#[test]
fn refuses_join_id_that_differs_from_certificate() {
    let node = tls_node(Duration::from_secs(2));
    let other = start_node(|_| {});
    let cred = self_signed();
    let spare = TcpListener::bind((localhost(), 0)).unwrap();
    let port = spare.local_addr().unwrap().port();
    let before = failed(&node);
    let mut s = tls_join(node.addr(), &cred, other.id(), port);
    assert!(
        tls_ends_within(&mut s, DEADLINE),
        "node kept the socket open"
    );
    assert_refused(&node, before, Some(cred.id));

    // Control: the same kind of client with its own id gets a link.
    let honest = self_signed();
    let s = tls_join(node.addr(), &honest, honest.id, port);
    assert!(
        node.wait_for(|e| is_peer_up(e, honest.id)).is_some(),
        "an honest hand-made TLS peer should come up"
    );
    drop(s.sock.shutdown(Shutdown::Both));
}

/// (5) Man in the middle: the node dials an address where an attacker terminates TLS
/// with its own key and then claims the victim's id in its JOIN. The node has no
/// public way to say whom it expects at an address (`Dial.expect` is crate-private
/// and every dial sets it to `None`), so what protects it is the JOIN check: the id
/// the attacker's certificate proves is the attacker's, not the victim's.
#[test]
fn dial_to_mitm_claiming_victim_id_is_refused() {
    let node = tls_node(Duration::from_secs(2));
    let victim = start_node(|_| {});
    let listener = TcpListener::bind((localhost(), 0)).unwrap();
    let mitm_addr = listener.local_addr().unwrap();
    let cred = self_signed();
    let config = server_config(&cred);
    let victim_id = victim.id();
    let port = mitm_addr.port();
    let mitm = thread::spawn(move || {
        let sock = accept_within(&listener, DEADLINE).expect("the node dials");
        let conn = ServerConnection::new(config).unwrap();
        let mut s = StreamOwned::new(conn, sock);
        while s.conn.is_handshaking() {
            s.conn
                .complete_io(&mut s.sock)
                .expect("node completes TLS with the attacker's certificate");
        }
        s.write_all(&join_frame(victim_id, port)).unwrap();
        s.flush().unwrap();
        let sock = s.sock.try_clone().unwrap();
        ends_within(&mut s, &sock, DEADLINE)
    });
    let before = failed(&node);
    match node.connect_to_peer(mitm_addr) {
        Err(Error::Handshake {
            reason: HandshakeError::IdMismatch { claimed, proven },
            ..
        }) => {
            assert_eq!(claimed, victim_id);
            assert_eq!(proven, cred.id);
        }
        other => panic!("expected IdMismatch, got {other:?}"),
    }
    assert!(mitm.join().unwrap(), "node kept the MITM's socket open");
    assert_refused(&node, before, Some(victim_id));
    // The real victim is still reachable.
    link(&node, &victim);
}

/// (5b) A node cannot be displaced: while A is linked to B, an attacker with another
/// key claiming A's id at B is refused, and B's link to A stays up.
#[test]
fn linked_node_cannot_be_displaced_by_its_id() {
    let a = start_node(|c| c.auto_dial = false);
    let b = start_node(|c| {
        c.auto_dial = false;
        c.handshake_timeout = Duration::from_secs(2);
    });
    link(&a, &b);
    let _ = b.pending_events();
    let cred = self_signed();
    let before = failed(&b);
    // Even A's listen port, as A announced it.
    let mut s = tls_join(b.addr(), &cred, a.id(), a.addr().port());
    assert!(tls_ends_within(&mut s, DEADLINE), "B kept the socket open");
    assert!(eventually(DEADLINE, || failed(&b) > before));
    let events = b.events_within(QUIET);
    assert!(
        !events.iter().any(|e| is_peer_down(e, a.id())),
        "A's link was dropped: {events:?}"
    );
    assert!(b.is_linked_to(&a) && a.is_linked_to(&b));
    assert!(!b.peer_ids().contains(&cred.id));
    keeps_serving(&b);
}

/// (6) A plaintext JOIN to a TLS node is refused at once (long before the handshake
/// timeout): the raw peer reads a TLS alert record (0x15) or the end.
#[test]
fn plaintext_join_to_tls_node_is_refused_quickly() {
    let node = tls_node(Duration::from_secs(30));
    let before = failed(&node);
    let mut raw = RawPeer::connect(node.addr());
    let started = Instant::now();
    raw.send(&raw.join_msg(&default_network()));
    let mut first = [0u8; 1];
    match raw.stream.read(&mut first) {
        Ok(0) => {}
        Ok(_) => assert_eq!(first[0], 0x15, "expected a TLS alert record"),
        Err(e) => assert!(
            !matches!(
                e.kind(),
                io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
            ),
            "no answer: {e}"
        ),
    }
    assert!(raw.closed_within(DEADLINE), "node kept the socket open");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "refused only after {:?}",
        started.elapsed()
    );
    assert_refused(&node, before, Some(raw.id));
}

/// (7) A TLS ClientHello to a plaintext node is refused at once (PeerTls), long
/// before its handshake timeout.
#[test]
fn tls_client_hello_to_plaintext_node_is_refused_quickly() {
    let node = start_node(|c| {
        c.encryption = Encryption::Plain;
        c.handshake_timeout = Duration::from_secs(30);
        c.auto_dial = false;
    });
    let before = failed(&node);
    let mut s = tcp(node.addr());
    let started = Instant::now();
    s.write_all(&client_hello()).unwrap();
    assert!(closed_within(&mut s, DEADLINE), "node kept the socket open");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "refused only after {:?}",
        started.elapsed()
    );
    assert!(eventually(DEADLINE, || failed(&node) > before));
    assert!(node.pending_events().is_empty());
    let honest = start_node(|c| c.encryption = Encryption::Plain);
    link(&honest, &node);
}

/// (8) Garbage that starts like a TLS record, a record header announcing more than
/// any record may hold, and a truncated ClientHello followed by a close: each is
/// refused without a panic, and the node keeps serving.
#[test]
fn garbage_and_truncated_client_hello_are_refused() {
    let node = tls_node(Duration::from_secs(2));
    let mut rng = XorShift::new(0x7e57_0001);
    let hello = client_hello();
    let mut junk = vec![0x16, 0x03, 0x01, 0x00, 0x40];
    junk.extend(rng.bytes(64));
    let mut oversized = vec![0x16, 0x03, 0x03, 0xff, 0xff];
    oversized.extend(rng.bytes(300));
    let mut bad_version = vec![0x16, 0x7f, 0x7f, 0x00, 0x10];
    bad_version.extend(rng.bytes(16));
    for (what, bytes, close) in [
        ("junk after a handshake header", junk, false),
        ("an oversized record", oversized, false),
        ("a bad record version", bad_version, false),
        (
            "a truncated ClientHello",
            hello[..hello.len() / 2].to_vec(),
            true,
        ),
        ("a 3-byte record header", hello[..3].to_vec(), true),
    ] {
        let before = failed(&node);
        let mut s = tcp(node.addr());
        let _ = s.write_all(&bytes);
        if close {
            s.shutdown(Shutdown::Write).unwrap();
        }
        assert!(
            closed_within(&mut s, DEADLINE),
            "{what}: node kept the socket open"
        );
        assert!(
            eventually(DEADLINE, || failed(&node) > before),
            "{what}: not counted"
        );
        assert!(node.is_running(), "{what}");
    }
    assert!(node.pending_events().is_empty());
    keeps_serving(&node);
}

/// (9) A handshake that stalls half-way (part of a ClientHello, then silence, socket
/// held open) is closed by the node at its handshake timeout, and the node serves
/// another peer meanwhile.
#[test]
fn stalled_handshake_is_closed_at_the_timeout() {
    let timeout = Duration::from_secs(2);
    let node = tls_node(timeout);
    let before = failed(&node);
    let hello = client_hello();
    let mut s = tcp(node.addr());
    let started = Instant::now();
    s.write_all(&hello[..hello.len() - 10]).unwrap();
    // Meanwhile: an honest node links (and the stalled socket is still open).
    let honest = start_node(|_| {});
    link(&honest, &node);
    assert!(
        closed_within(&mut s, timeout + Duration::from_secs(8)),
        "stalled handshake still open after {:?}",
        started.elapsed()
    );
    let took = started.elapsed();
    assert!(
        took >= timeout - Duration::from_millis(300),
        "closed after {took:?}, before the handshake timeout"
    );
    assert!(eventually(DEADLINE, || failed(&node) > before));
    assert!(honest.is_linked_to(&node));
}

// -------------------------------------------------------------------------------------
// Random first bytes (the property form of fuzz/fuzz_targets/tls_handshake.rs)
// -------------------------------------------------------------------------------------

/// 200 deterministic random inputs as a TLS node's first bytes: pure noise, noise
/// behind a valid record header, and real ClientHellos with bytes flipped or cut.
/// Each connection is half-closed after the input so no case waits for the timeout.
/// The node never panics, closes and counts every one, and still links with an
/// honest node.
#[test]
fn random_first_bytes_never_break_a_tls_node() {
    let _dog = watchdog("random_first_bytes_never_break_a_tls_node", WATCHDOG);
    let node = tls_node(Duration::from_secs(2));
    let hello = client_hello();
    let mut rng = XorShift::new(0x7e57_0002);
    for i in 0..200 {
        let input = match i % 4 {
            0 => {
                let n = rng.below(600);
                rng.bytes(n)
            }
            1 => {
                let mut v = vec![0x16, 0x03, rng.below(4) as u8];
                let n = rng.below(400);
                v.extend_from_slice(&(n as u16).to_be_bytes());
                v.extend(rng.bytes(n));
                v
            }
            2 => {
                let mut v = hello.clone();
                for _ in 0..1 + rng.below(8) {
                    let at = 5 + rng.below(v.len() - 5);
                    v[at] ^= 1 << rng.below(8);
                }
                v
            }
            _ => {
                let cut = rng.below(hello.len());
                hello[..cut].to_vec()
            }
        };
        let before = failed(&node);
        let mut s = tcp(node.addr());
        let _ = s.write_all(&input);
        let _ = s.shutdown(Shutdown::Write);
        assert!(
            closed_within(&mut s, DEADLINE),
            "input {i} ({} bytes): node kept the socket open",
            input.len()
        );
        assert!(node.is_running(), "input {i}");
        // Judged and refused, not silently dropped (a panicking connection thread
        // would skip the count).
        assert!(
            eventually(DEADLINE, || failed(&node) > before),
            "input {i}: not counted as a failed handshake"
        );
    }
    assert!(node.peers().is_empty());
    keeps_serving(&node);
}

// -------------------------------------------------------------------------------------
// Works
// -------------------------------------------------------------------------------------

/// (10) A 20-node TLS overlay forms through two seeds; one broadcast reaches each of
/// the 19 others exactly once.
#[test]
fn twenty_node_tls_overlay_delivers_a_broadcast_once_each() {
    let _dog = watchdog("twenty_node_tls_overlay", WATCHDOG);
    let nodes = start_nodes(20, |c| {
        c.handshake_timeout = Duration::from_secs(5);
    });
    link(&nodes[1], &nodes[0]);
    for (i, n) in nodes.iter().enumerate().skip(2) {
        link(n, &nodes[i % 2]);
    }
    for n in &nodes {
        assert!(!n.peers().is_empty());
        assert!(n.peers().iter().all(|p| p.encryption == Encryption::Tls));
    }
    let text = "tls overlay broadcast";
    let origin = &nodes[7];
    origin.broadcast_data(text).expect("broadcast");
    for (i, n) in nodes.iter().enumerate() {
        if i == 7 {
            continue;
        }
        assert!(
            n.wait_for(|e| is_broadcast_of(e, text)).is_some(),
            "node {i} never saw the broadcast"
        );
    }
    for (i, n) in nodes.iter().enumerate() {
        let again = n
            .events_within(if i == 0 { QUIET } else { Duration::ZERO })
            .into_iter()
            .chain(n.pending_events())
            .filter(|e| is_broadcast_of(e, text))
            .count();
        assert_eq!(again, 0, "node {i} got a second copy");
        let total = n
            .history()
            .iter()
            .filter(|e| is_broadcast_of(e, text))
            .count();
        assert_eq!(total, usize::from(i != 7), "node {i}");
    }
}

/// Drains `node`'s events on a thread, counting DATA messages of `len` bytes and any
/// `PeerDown`, until `stop` is set.
struct Drain {
    got: Arc<AtomicUsize>,
    downs: Arc<AtomicUsize>,
    handle: Option<thread::JoinHandle<()>>,
    stop: Arc<std::sync::atomic::AtomicBool>,
}

impl Drain {
    fn start(node: &TestNode, len: usize) -> Drain {
        let events = node.events.clone();
        let got = Arc::new(AtomicUsize::new(0));
        let downs = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let handle = {
            let (got, downs, stop) = (Arc::clone(&got), Arc::clone(&downs), Arc::clone(&stop));
            thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    match events.recv_timeout(Duration::from_millis(50)) {
                        Ok(Event::Message { text, .. }) if text.len() == len => {
                            got.fetch_add(1, Ordering::Relaxed);
                        }
                        Ok(Event::PeerDown { .. }) => {
                            downs.fetch_add(1, Ordering::Relaxed);
                        }
                        _ => {}
                    }
                }
            })
        };
        Drain {
            got,
            downs,
            handle: Some(handle),
            stop,
        }
    }
}

impl Drop for Drain {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

/// 64 KiB texts.
const CHUNK: usize = 64 * 1024;

/// (11) Both ends write ~100 MB at once while reading: no deadlock, every message
/// arrives. Each sender blocks on backpressure; each side's events are drained by
/// another thread.
#[test]
fn both_ends_writing_100_mb_at_once_never_deadlock() {
    let _dog = watchdog("both_ends_writing_100_mb", WATCHDOG);
    const COUNT: usize = 1_600; // 1,600 x 64 KiB = 100 MiB each way
    let a = start_node(|c| c.auto_dial = false);
    let b = start_node(|c| c.auto_dial = false);
    link(&a, &b);
    assert!(a.peers().iter().all(|p| p.encryption == Encryption::Tls));
    let drain_a = Drain::start(&a, CHUNK);
    let drain_b = Drain::start(&b, CHUNK);
    let text = Arc::new("x".repeat(CHUNK));
    let started = Instant::now();
    let send = |from: &TestNode, to: SocketAddr| {
        let node = Arc::clone(&from.node);
        let text = Arc::clone(&text);
        thread::spawn(move || {
            for i in 0..COUNT {
                node.send_data_to_peer(to, &text)
                    .unwrap_or_else(|e| panic!("send {i}: {e}"));
            }
        })
    };
    let ta = send(&a, b.addr());
    let tb = send(&b, a.addr());
    let limit = Duration::from_secs(120);
    let done = eventually(limit, || {
        drain_a.got.load(Ordering::Relaxed) == COUNT && drain_b.got.load(Ordering::Relaxed) == COUNT
    });
    assert!(
        done,
        "after {:?}: a got {}, b got {} of {COUNT}",
        started.elapsed(),
        drain_a.got.load(Ordering::Relaxed),
        drain_b.got.load(Ordering::Relaxed)
    );
    ta.join().expect("sender a");
    tb.join().expect("sender b");
    eprintln!("2 x {COUNT} x 64 KiB over TLS in {:?}", started.elapsed());
    assert_eq!(drain_a.downs.load(Ordering::Relaxed), 0);
    assert_eq!(drain_b.downs.load(Ordering::Relaxed), 0);
    assert!(a.is_linked_to(&b) && b.is_linked_to(&a));
}

/// (12) Heartbeats keep flowing during a bulk transfer one way: the link is never
/// dropped for silence (heartbeat every 200 ms, peer timeout 1.5 s) and the measured
/// rtt keeps being updated. The transfer runs for a fixed time (4 s: many heartbeat
/// periods, more than twice the peer timeout) however fast the machine is.
#[test]
fn heartbeats_flow_during_bulk_transfer() {
    let _dog = watchdog("heartbeats_flow_during_bulk_transfer", WATCHDOG);
    const SEND_FOR: Duration = Duration::from_secs(4);
    let configure = |c: &mut Config| {
        c.auto_dial = false;
        c.heartbeat_interval = Duration::from_millis(200);
        c.peer_timeout = Duration::from_millis(1_500);
    };
    let a = start_node(configure);
    let b = start_node(configure);
    link(&a, &b);
    assert!(a.peers().iter().all(|p| p.encryption == Encryption::Tls));
    let drain_a = Drain::start(&a, CHUNK);
    let drain_b = Drain::start(&b, CHUNK);
    let sent = Arc::new(AtomicUsize::new(0));
    let sender = {
        let node = Arc::clone(&a.node);
        let to = b.addr();
        let sent = Arc::clone(&sent);
        thread::spawn(move || {
            let text = "y".repeat(CHUNK);
            let started = Instant::now();
            while started.elapsed() < SEND_FOR {
                node.send_data_to_peer(to, &text)
                    .unwrap_or_else(|e| panic!("send {}: {e}", sent.load(Ordering::Relaxed)));
                sent.fetch_add(1, Ordering::Relaxed);
            }
        })
    };
    let rtt_of = |n: &TestNode, other: &TestNode| {
        n.peers()
            .into_iter()
            .find(|p| p.node_id == other.id())
            .and_then(|p| p.rtt)
    };
    let mut rtts = std::collections::HashSet::new();
    let deadline = Instant::now() + SEND_FOR + Duration::from_secs(60);
    while !sender.is_finished() {
        assert!(Instant::now() < deadline, "the sender is stuck");
        if let Some(r) = rtt_of(&a, &b) {
            rtts.insert(r);
        }
        assert!(a.is_linked_to(&b), "link dropped during the transfer");
        thread::sleep(Duration::from_millis(20));
    }
    sender.join().expect("sender");
    let sent = sent.load(Ordering::Relaxed);
    assert!(
        eventually(Duration::from_secs(60), || drain_b
            .got
            .load(Ordering::Relaxed)
            == sent),
        "b got {} of {sent}",
        drain_b.got.load(Ordering::Relaxed)
    );
    eprintln!(
        "{sent} x 64 KiB one way in {SEND_FOR:?}; rtts seen: {}",
        rtts.len()
    );
    assert_eq!(drain_a.downs.load(Ordering::Relaxed), 0, "PeerDown at a");
    assert_eq!(drain_b.downs.load(Ordering::Relaxed), 0, "PeerDown at b");
    assert!(
        rtts.len() >= 2,
        "rtt was not updated during the transfer: {rtts:?}"
    );
    assert!(a.is_linked_to(&b) && b.is_linked_to(&a));
}

// -------------------------------------------------------------------------------------
// More refusals: certificate variants, stalls after TLS, stalls on dials, stop
// -------------------------------------------------------------------------------------

/// (3b) A self-signed Ed25519 certificate that is not valid yet (from 2090) is refused.
#[test]
fn refuses_not_yet_valid_certificate() {
    let node = tls_node(Duration::from_secs(2));
    let key = ed25519_key();
    let mut p = params("future");
    p.not_before = rcgen::date_time_ymd(2090, 1, 1);
    p.not_after = rcgen::date_time_ymd(2091, 1, 1);
    let cred = Cred {
        chain: vec![p.self_signed(&key).unwrap().der().clone()],
        id: id_of(&key),
        key: PrivatePkcs8KeyDer::from(key.serialize_der()),
    };
    let before = failed(&node);
    let (mut s, _) = tls_connect(node.addr(), Some(&cred));
    let _ = s.write_all(&join_frame(cred.id, 9));
    let _ = s.flush();
    assert!(
        tls_ends_within(&mut s, DEADLINE),
        "node kept the socket open"
    );
    assert_refused(&node, before, Some(cred.id));
}

/// (3c) A valid self-signed certificate with an ECDSA P-256 key carries no node id:
/// refused (whether the client then sends it or, finding no Ed25519 scheme to sign
/// with, sends none).
#[test]
fn refuses_non_ed25519_certificate() {
    let node = tls_node(Duration::from_secs(2));
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let cred = Cred {
        chain: vec![params("ecdsa").self_signed(&key).unwrap().der().clone()],
        id: NodeId(1),
        key: PrivatePkcs8KeyDer::from(key.serialize_der()),
    };
    let before = failed(&node);
    let (mut s, _) = tls_connect(node.addr(), Some(&cred));
    let _ = s.write_all(&join_frame(NodeId::random(), 9));
    let _ = s.flush();
    assert!(
        tls_ends_within(&mut s, DEADLINE),
        "node kept the socket open"
    );
    assert_refused(&node, before, None);
}

/// (3d) In an open network a certificate must be its own anchor: a valid
/// self-signed leaf followed by any "intermediate" is refused.
#[test]
fn open_network_refuses_a_chain() {
    let node = tls_node(Duration::from_secs(2));
    let mut cred = self_signed();
    let ca = make_ca("some CA");
    cred.chain.push(ca.der().clone());
    let before = failed(&node);
    let (mut s, _) = tls_connect(node.addr(), Some(&cred));
    let _ = s.write_all(&join_frame(cred.id, 9));
    let _ = s.flush();
    assert!(
        tls_ends_within(&mut s, DEADLINE),
        "node kept the socket open"
    );
    assert_refused(&node, before, Some(cred.id));
}

/// (9b) TLS completes, then no JOIN ever comes: the node closes at the handshake
/// timeout (the deadline covers TLS and JOIN together).
#[test]
fn tls_without_join_is_closed_at_the_timeout() {
    let timeout = Duration::from_secs(2);
    let node = tls_node(timeout);
    let cred = self_signed();
    let before = failed(&node);
    let started = Instant::now();
    let (mut s, r) = tls_connect(node.addr(), Some(&cred));
    r.expect("TLS completes");
    assert!(
        tls_ends_within(&mut s, timeout + Duration::from_secs(8)),
        "still open after {:?}",
        started.elapsed()
    );
    assert!(started.elapsed() >= timeout - Duration::from_millis(300));
    assert_refused(&node, before, Some(cred.id));
}

/// (9c) The node dials an address whose listener accepts TCP but never answers the
/// ClientHello: `connect_to_peer` fails with `TlsTimeout` near the handshake timeout.
#[test]
fn dial_to_silent_server_times_out() {
    let timeout = Duration::from_secs(2);
    let node = tls_node(timeout);
    let silent = TcpListener::bind((localhost(), 0)).unwrap();
    let started = Instant::now();
    match node.connect_to_peer(silent.local_addr().unwrap()) {
        Err(Error::Handshake {
            reason: HandshakeError::TlsTimeout { .. },
            ..
        }) => {}
        other => panic!("expected TlsTimeout, got {other:?}"),
    }
    let took = started.elapsed();
    assert!(
        took >= timeout - Duration::from_millis(300) && took < timeout + Duration::from_secs(8),
        "took {took:?}"
    );
    keeps_serving(&node);
}

/// (9d) `stop` is not held up by TLS handshakes stalled in both directions (an
/// inbound partial ClientHello, a dial to a silent server), with a 30 s handshake
/// timeout.
#[test]
fn stop_is_not_held_up_by_stalled_tls_handshakes() {
    let node = tls_node(Duration::from_secs(30));
    let hello = client_hello();
    let mut inbound = tcp(node.addr());
    inbound.write_all(&hello[..hello.len() / 2]).unwrap();
    let silent = TcpListener::bind((localhost(), 0)).unwrap();
    let dialer = {
        let n = Arc::clone(&node.node);
        let to = silent.local_addr().unwrap();
        thread::spawn(move || n.connect_to_peer(to))
    };
    // Both handshakes are under way.
    assert!(eventually(DEADLINE, || node.info().connections >= 2));
    let started = Instant::now();
    node.stop();
    let took = started.elapsed();
    assert!(took < Duration::from_secs(5), "stop took {took:?}");
    assert!(closed_within(&mut inbound, DEADLINE));
    assert!(dialer.join().unwrap().is_err());
}

/// (7b) Mixed modes dialling each other fail at once with the reason named: a
/// plaintext node dialling a TLS node learns `PeerTls` (it reads the TLS alert), a
/// TLS node dialling a plaintext node learns `PeerPlaintext` (it reads the plaintext
/// JOIN where a ServerHello belongs).
#[test]
fn mixed_mode_dials_name_the_mismatch() {
    let long = Duration::from_secs(30);
    let tls = start_node(|c| {
        c.handshake_timeout = long;
        c.auto_dial = false;
    });
    let plain = start_node(|c| {
        c.encryption = Encryption::Plain;
        c.handshake_timeout = long;
        c.auto_dial = false;
    });
    for round in 0..5 {
        let started = Instant::now();
        match plain.connect_to_peer(tls.addr()) {
            Err(Error::Handshake {
                reason: HandshakeError::PeerTls,
                ..
            }) => {}
            other => panic!("round {round}: plaintext -> TLS: expected PeerTls, got {other:?}"),
        }
        match tls.connect_to_peer(plain.addr()) {
            Err(Error::Handshake {
                reason: HandshakeError::PeerPlaintext,
                ..
            }) => {}
            other => {
                panic!("round {round}: TLS -> plaintext: expected PeerPlaintext, got {other:?}")
            }
        }
        assert!(started.elapsed() < Duration::from_secs(10));
    }
    assert!(tls.peers().is_empty() && plain.peers().is_empty());
}

/// A TLS server on 127.0.0.1 presenting `cred` that accepts one connection, runs its
/// side of the handshake (accepting any client certificate) and reports whether it
/// completed. What the node does as the *client* is then the test's subject.
fn one_shot_server(cred: Cred) -> (SocketAddr, thread::JoinHandle<bool>) {
    let listener = TcpListener::bind((localhost(), 0)).unwrap();
    let addr = listener.local_addr().unwrap();
    let config = server_config(&cred);
    let h = thread::spawn(move || {
        let Some(sock) = accept_within(&listener, DEADLINE) else {
            return false;
        };
        let mut s = StreamOwned::new(ServerConnection::new(config).unwrap(), sock);
        while s.conn.is_handshaking() {
            if s.conn.complete_io(&mut s.sock).is_err() {
                return false;
            }
        }
        // A client that refused the server's certificate says so with an alert
        // before the server would see its Finished.
        let sock = s.sock.try_clone().unwrap();
        !ends_within(&mut s, &sock, Duration::from_millis(200))
    });
    (addr, h)
}

/// (2b, 3e) The node checks the certificate of the node it dials, too: an open node
/// refuses a server with an expired certificate, a closed node refuses a server whose
/// certificate is self-signed (not issued by the network CA). `connect_to_peer`
/// reports a TLS error.
#[test]
fn dialled_servers_certificate_is_checked() {
    let open = tls_node(Duration::from_secs(2));
    let (addr, server) = one_shot_server(expired_self_signed());
    match open.connect_to_peer(addr) {
        Err(Error::Handshake {
            reason: HandshakeError::Tls(_),
            ..
        }) => {}
        other => panic!("open node dialling an expired certificate: {other:?}"),
    }
    assert!(!server.join().unwrap(), "the node completed TLS with it");

    let dir = tempfile::tempdir().expect("tempdir");
    let ca = make_ca("network CA");
    let closed = closed_node(&ca, dir.path());
    let (addr, server) = one_shot_server(self_signed());
    match closed.connect_to_peer(addr) {
        Err(Error::Handshake {
            reason: HandshakeError::Tls(_),
            ..
        }) => {}
        other => panic!("closed node dialling a non-member: {other:?}"),
    }
    assert!(!server.join().unwrap(), "the node completed TLS with it");
    assert!(open.peers().is_empty() && closed.peers().is_empty());
}

/// Many threads on each side sending small DATA at once, both ways: direct sends from
/// callers' threads and the writer thread interleave on one TLS session. Every
/// message arrives, each thread's in order (a record sent out of the order it was
/// encrypted in would fail its MAC and drop the link).
#[test]
fn concurrent_small_sends_both_ways_keep_order() {
    let _dog = watchdog("concurrent_small_sends_both_ways_keep_order", WATCHDOG);
    const THREADS: usize = 4;
    const EACH: usize = 3_000;
    let a = start_node(|c| c.auto_dial = false);
    let b = start_node(|c| c.auto_dial = false);
    link(&a, &b);
    let collect = |n: &TestNode| {
        let events = n.events.clone();
        thread::spawn(move || {
            let mut next = [0usize; THREADS];
            let mut got = 0;
            let deadline = Instant::now() + Duration::from_secs(60);
            while got < THREADS * EACH && Instant::now() < deadline {
                match events.recv_timeout(Duration::from_millis(100)) {
                    Ok(Event::Message { text, .. }) => {
                        let (t, seq) = text.split_once(':').expect("t:seq");
                        let (t, seq): (usize, usize) = (t.parse().unwrap(), seq.parse().unwrap());
                        if next[t] != seq {
                            return Err(format!("thread {t}: got {seq}, expected {}", next[t]));
                        }
                        next[t] += 1;
                        got += 1;
                    }
                    Ok(Event::PeerDown { reason, .. }) => return Err(format!("down: {reason}")),
                    _ => {}
                }
            }
            Ok(got)
        })
    };
    let ca = collect(&a);
    let cb = collect(&b);
    let mut senders = Vec::new();
    for (from, to) in [(&a, b.addr()), (&b, a.addr())] {
        for t in 0..THREADS {
            let node = Arc::clone(&from.node);
            senders.push(thread::spawn(move || {
                for seq in 0..EACH {
                    node.send_data_to_peer(to, &format!("{t}:{seq}"))
                        .unwrap_or_else(|e| panic!("send {t}:{seq}: {e}"));
                }
            }));
        }
    }
    for s in senders {
        s.join().expect("sender");
    }
    assert_eq!(ca.join().unwrap(), Ok(THREADS * EACH), "at a");
    assert_eq!(cb.join().unwrap(), Ok(THREADS * EACH), "at b");
    assert!(a.is_linked_to(&b) && b.is_linked_to(&a));
}

/// (9e) Slowloris: a ClientHello trickled one byte every 50 ms (it would take many
/// seconds), and, on another connection, a JOIN trickled one byte per TLS record after
/// a completed TLS handshake. The handshake timeout bounds the whole exchange however
/// the bytes trickle in: both are closed near it.
#[test]
fn trickled_handshakes_are_closed_at_the_timeout() {
    let timeout = Duration::from_secs(2);
    let node = tls_node(timeout);
    let hello = client_hello();
    let addr = node.addr();
    let tls_trickle = thread::spawn(move || {
        let mut s = tcp(addr);
        let started = Instant::now();
        for b in &hello {
            if s.write_all(&[*b]).is_err() {
                return started.elapsed();
            }
            // Closed? A read with a short timeout tells.
            s.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
            let mut buf = [0u8; 512];
            match s.read(&mut buf) {
                Ok(0) => return started.elapsed(),
                Err(e)
                    if !matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) =>
                {
                    return started.elapsed()
                }
                _ => {}
            }
            if started.elapsed() > DEADLINE {
                break;
            }
        }
        panic!(
            "the node kept a trickled ClientHello open for {:?}",
            started.elapsed()
        );
    });
    let cred = self_signed();
    let join_trickle = thread::spawn(move || {
        let started = Instant::now();
        let (mut s, r) = tls_connect(addr, Some(&cred));
        r.expect("TLS completes");
        for b in join_frame(cred.id, 9) {
            // One byte per TLS record.
            if s.write_all(&[b]).and_then(|_| s.flush()).is_err() {
                return started.elapsed();
            }
            if tls_ends_within(&mut s, Duration::from_millis(100)) {
                return started.elapsed();
            }
            if started.elapsed() > DEADLINE {
                break;
            }
        }
        // The whole JOIN got through slowly but within the timeout: then the node may
        // accept it; the trickle must be slow enough that this never happens.
        panic!("the JOIN trickle finished after {:?}", started.elapsed());
    });
    for (what, h) in [("ClientHello", tls_trickle), ("JOIN", join_trickle)] {
        let took = h.join().unwrap();
        assert!(
            took >= timeout - Duration::from_millis(300) && took < timeout + Duration::from_secs(8),
            "{what} trickle closed after {took:?}"
        );
    }
    assert!(node.peers().is_empty());
    keeps_serving(&node);
}

/// (2c) A real open-network node (self-signed certificate) dialling a closed node is
/// refused: the dial fails, the closed node counts it, neither lists the other, and
/// the closed node still links a member.
#[test]
fn open_node_dialling_a_closed_network_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = make_ca("network CA");
    let closed = closed_node(&ca, dir.path());
    let outsider = tls_node(Duration::from_secs(2));
    let before = failed(&closed);
    let r = outsider.connect_to_peer(closed.addr());
    eprintln!("outsider's dial: {r:?}");
    assert!(r.is_err(), "the outsider got in: {r:?}");
    assert!(eventually(DEADLINE, || failed(&closed) > before));
    assert!(!closed.is_linked_to(&outsider) && !outsider.is_linked_to(&closed));
    // And the other way: the closed node dialling the outsider refuses its certificate.
    match closed.connect_to_peer(outsider.addr()) {
        Err(Error::Handshake {
            reason: HandshakeError::Tls(_),
            ..
        }) => {}
        other => panic!("closed node dialling an outsider: {other:?}"),
    }
    let member = closed_node(&ca, dir.path());
    link(&member, &closed);
    assert!(closed.peers().len() == 1);
}

/// A LEAVE sent over TLS arrives before the link closes: `remove_peer` and `stop` at
/// one end are seen as `Left` at the other (not as a cut or a read failure), also
/// right after a burst of traffic that went out partly by direct sends.
#[test]
fn leave_over_tls_arrives_before_the_close() {
    for how in ["remove_peer", "stop"] {
        let a = start_node(|c| c.auto_dial = false);
        let b = start_node(|c| c.auto_dial = false);
        link(&a, &b);
        for i in 0..200 {
            b.send_data_to_peer(a.addr(), &format!("before leave {i}"))
                .unwrap();
        }
        match how {
            "remove_peer" => assert!(b.remove_peer(a.addr())),
            _ => b.stop(),
        }
        let down = a
            .wait_for(|e| is_peer_down(e, b.id()))
            .unwrap_or_else(|| panic!("{how}: no PeerDown at a"));
        assert_eq!(
            down_reason(&down),
            p2p_overlay::DownReason::Left.to_string(),
            "{how}"
        );
        let got = a
            .history()
            .iter()
            .filter(|e| matches!(e, Event::Message { .. }))
            .count();
        assert_eq!(got, 200, "{how}: messages lost before the LEAVE");
    }
}

/// An authenticated peer that then sends a forged TLS record (bad MAC), or a record
/// longer than TLS allows, loses its link; the node stays up and serves others.
#[test]
fn forged_record_after_handshake_drops_only_that_link() {
    let node = tls_node(Duration::from_secs(2));
    let spare = TcpListener::bind((localhost(), 0)).unwrap();
    let port = spare.local_addr().unwrap().port();
    let mut rng = XorShift::new(0x7e57_0003);
    let mut forged = vec![0x17, 0x03, 0x03, 0x00, 0x40];
    forged.extend(rng.bytes(0x40));
    let mut oversized = vec![0x17, 0x03, 0x03, 0x48, 0x01];
    oversized.extend(rng.bytes(0x4801));
    for (what, record) in [("forged", forged), ("oversized", oversized)] {
        let cred = self_signed();
        let mut s = tls_join(node.addr(), &cred, cred.id, port);
        assert!(
            node.wait_for(|e| is_peer_up(e, cred.id)).is_some(),
            "{what}: the peer should come up first"
        );
        // Straight onto the socket, under the TLS layer.
        let _ = s.sock.write_all(&record);
        let down = node
            .wait_for(|e| is_peer_down(e, cred.id))
            .unwrap_or_else(|| panic!("{what}: link not dropped"));
        eprintln!("{what}: {}", down_reason(&down));
        assert!(
            tls_ends_within(&mut s, DEADLINE),
            "{what}: socket kept open"
        );
        assert!(node.is_running());
    }
    keeps_serving(&node);
}

/// `stop` returns promptly at both ends of a TLS link jammed by bulk traffic: the
/// receiver's application does not read its events, so its reader waits, TCP fills,
/// and the sender's writer blocks inside a send holding the session's ciphertext
/// lock. The blocked sender thread gets an error instead of hanging.
#[test]
fn stop_during_jammed_bulk_transfer_returns_promptly() {
    let _dog = watchdog("stop_during_jammed_bulk_transfer", WATCHDOG);
    let a = start_node(|c| c.auto_dial = false);
    let b = start_node(|c| {
        c.auto_dial = false;
        c.max_pending_events = 16;
    });
    link(&a, &b);
    let sent = Arc::new(AtomicUsize::new(0));
    let sender = {
        let node = Arc::clone(&a.node);
        let to = b.addr();
        let sent = Arc::clone(&sent);
        thread::spawn(move || {
            let text = "z".repeat(CHUNK);
            while node.send_data_to_peer(to, &text).is_ok() {
                sent.fetch_add(1, Ordering::Relaxed);
                if sent.load(Ordering::Relaxed) > 100_000 {
                    break;
                }
            }
        })
    };
    // Jammed: the sender stops making progress.
    let mut last = 0;
    assert!(
        eventually(DEADLINE, || {
            thread::sleep(Duration::from_millis(200));
            let now = sent.load(Ordering::Relaxed);
            let stuck = now > 0 && now == last;
            last = now;
            stuck
        }),
        "the link never jammed"
    );
    for (name, n) in [("sender", &a), ("receiver", &b)] {
        let started = Instant::now();
        n.stop();
        let took = started.elapsed();
        assert!(took < Duration::from_secs(5), "{name}'s stop took {took:?}");
    }
    let started = Instant::now();
    while !sender.is_finished() && started.elapsed() < DEADLINE {
        thread::sleep(Duration::from_millis(10));
    }
    assert!(sender.is_finished(), "the blocked sender never returned");
}

/// (2d) A closed network whose members are issued by an intermediate CA: each member
/// presents its certificate and the intermediate, the nodes trust only the root, and
/// they link. A member presenting its certificate without the intermediate is refused.
#[test]
fn closed_network_with_an_intermediate_ca() {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = make_ca("root CA");
    let mut p = params("intermediate CA");
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let inter = CertifiedIssuer::signed_by(p, ed25519_key(), &root).expect("intermediate");
    let chain = [inter.der().clone()];
    let a = closed_node_with(&inter, &chain, root.der(), dir.path());
    let b = closed_node_with(&inter, &chain, root.der(), dir.path());
    link(&a, &b);
    let lone = closed_node_with(&inter, &[], root.der(), dir.path());
    let before = failed(&a);
    assert!(lone.connect_to_peer(a.addr()).is_err());
    assert!(eventually(DEADLINE, || failed(&a) > before || failed(&lone) > 0));
    assert!(!a.is_linked_to(&lone));
}

/// A TCP relay on another port of 127.0.0.1 that forwards one connection to `to`
/// (both directions, each by its own thread), so a node can be made to dial itself
/// under another address.
fn relay(to: SocketAddr) -> SocketAddr {
    let listener = TcpListener::bind((localhost(), 0)).unwrap();
    let addr = listener.local_addr().unwrap();
    thread::spawn(move || {
        let Ok((a, _)) = listener.accept() else {
            return;
        };
        let Ok(b) = TcpStream::connect_timeout(&to, DEADLINE) else {
            return;
        };
        for s in [&a, &b] {
            s.set_read_timeout(Some(DEADLINE)).unwrap();
            s.set_write_timeout(Some(DEADLINE)).unwrap();
        }
        let pump = |mut from: TcpStream, mut to: TcpStream| {
            thread::spawn(move || {
                let mut buf = [0u8; 16 * 1024];
                while let Ok(n) = from.read(&mut buf) {
                    if n == 0 || to.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
                let _ = to.shutdown(Shutdown::Write);
            })
        };
        pump(a.try_clone().unwrap(), b.try_clone().unwrap());
        pump(b, a);
    });
    addr
}

/// A TLS node dialling itself under another address (through a relay, so the
/// address check before the dial cannot see it) meets its own certificate and id: TLS
/// completes, the JOIN carries our own id, and the dial fails as a self-dial, counted
/// as a failed handshake at neither end.
#[test]
fn self_dial_over_tls_is_recognised() {
    let node = tls_node(Duration::from_secs(2));
    let before = failed(&node);
    let via = relay(node.addr());
    match node.connect_to_peer(via) {
        Err(Error::SelfDial(_)) => {}
        other => panic!("expected SelfDial, got {other:?}"),
    }
    assert!(node.peers().is_empty());
    // Neither end (the dial, the accepted connection) counts it as a failure.
    assert!(eventually(DEADLINE, || node.info().connections == 0));
    assert_eq!(
        failed(&node),
        before,
        "a self-dial counted as a failed handshake"
    );
    keeps_serving(&node);
}

/// The id a node is known by is the one its certificate proves, computed here from
/// the spec independently of the library: the first 8 bytes, big-endian, of SHA-256
/// over the certificate's SubjectPublicKeyInfo (an Ed25519 key).
#[test]
fn node_id_is_the_hash_of_the_presented_key() {
    let node = tls_node(Duration::from_secs(2));
    let (s, r) = tls_connect(node.addr(), Some(&self_signed()));
    r.expect("TLS completes");
    let cert = s.conn.peer_certificates().expect("server certificate")[0].clone();
    // SubjectPublicKeyInfo of an Ed25519 key: the 12-byte prefix, then the 32 key
    // bytes; it sits verbatim in the certificate.
    let prefix = p2p_overlay::identity::ED25519_SPKI_PREFIX;
    let at = cert
        .as_ref()
        .windows(prefix.len())
        .position(|w| w == prefix)
        .expect("an Ed25519 SPKI in the certificate");
    let spki = &cert.as_ref()[at..at + prefix.len() + 32];
    let digest = ring::digest::digest(&ring::digest::SHA256, spki);
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest.as_ref()[..8]);
    assert_eq!(NodeId(u64::from_be_bytes(first)), node.id());
    assert_eq!(node_id_from_spki(spki), Some(node.id()));
}

/// Two TLS nodes dialling each other at the same moment (TLS makes the handshakes,
/// and so the race window, longer) end with one link, listed by both, that stays up.
#[test]
fn simultaneous_tls_dials_settle_on_one_link() {
    let _dog = watchdog("simultaneous_tls_dials", WATCHDOG);
    for round in 0..6 {
        let a = start_node(|c| c.auto_dial = false);
        let b = start_node(|c| c.auto_dial = false);
        let barrier = Arc::new(std::sync::Barrier::new(2));
        let dial = |from: &TestNode, to: SocketAddr| {
            let node = Arc::clone(&from.node);
            let barrier = Arc::clone(&barrier);
            thread::spawn(move || {
                barrier.wait();
                node.connect_to_peer(to)
            })
        };
        let da = dial(&a, b.addr());
        let db = dial(&b, a.addr());
        let (ra, rb) = (da.join().unwrap(), db.join().unwrap());
        assert!(
            ra.is_ok() || rb.is_ok(),
            "round {round}: both dials failed: {ra:?} / {rb:?}"
        );
        assert!(
            eventually(DEADLINE, || a.is_linked_to(&b) && b.is_linked_to(&a)),
            "round {round}: no link listed by both ({ra:?} / {rb:?})"
        );
        assert_eq!(a.peers().len(), 1, "round {round}");
        assert_eq!(b.peers().len(), 1, "round {round}");
        // Settled: whatever duplicate lost is gone, and the link that won stays.
        let _ = a.events_within(QUIET);
        let _ = b.pending_events();
        let later = a.events_within(Duration::from_millis(300));
        assert!(
            a.is_linked_to(&b) && b.is_linked_to(&a),
            "round {round}: the link went away: {later:?}"
        );
        assert!(
            !later.iter().any(|e| is_peer_down(e, b.id())),
            "round {round}: flapping: {later:?}"
        );
    }
}

/// (10b) 19 TLS nodes dial one seed at the same moment (19 TLS handshakes in
/// parallel on the seed, under its pending-handshake cap of 32): every dial succeeds.
#[test]
fn nineteen_simultaneous_tls_joins_to_one_seed() {
    let _dog = watchdog("nineteen_simultaneous_tls_joins", WATCHDOG);
    let seed = start_node(|c| c.auto_dial = false);
    let nodes = start_nodes(19, |c| c.auto_dial = false);
    let barrier = Arc::new(std::sync::Barrier::new(nodes.len()));
    let dials: Vec<_> = nodes
        .iter()
        .map(|n| {
            let node = Arc::clone(&n.node);
            let barrier = Arc::clone(&barrier);
            let to = seed.addr();
            thread::spawn(move || {
                barrier.wait();
                node.connect_to_peer(to)
            })
        })
        .collect();
    for (i, d) in dials.into_iter().enumerate() {
        let r = d.join().unwrap();
        assert!(r.is_ok(), "node {i}: {r:?}");
    }
    assert!(eventually(DEADLINE, || seed.peers().len() == 19));
    assert!(nodes.iter().all(|n| n.is_linked_to(&seed)));
    assert_eq!(failed(&seed), 0);
}
