//! TLS 1.3 on a link: the configs and certificate checks ([`TlsContext`]), and the
//! session a [`Stream`](super::Stream) shares between its reader, its writers and its
//! closer ([`Session`]).
//!
//! **Sharing one rustls connection between two threads.** rustls 0.23 cannot read and
//! write one connection from two threads, and a lock around a whole `StreamOwned`
//! deadlocks a blocking reader: its blocked `read` would hold the lock every writer
//! needs until the peer's next byte. So only rustls's in-memory state sits under a
//! lock, and the socket calls happen outside it:
//!
//! - reader: `recv` into its own ciphertext buffer (lock-free), then lock the state
//!   just long enough to hand rustls those bytes, process them, and copy out
//!   plaintext;
//! - writer: lock the state to encrypt the frame into a ciphertext buffer, unlock,
//!   then `send` the buffer. A second lock (`tx`) lets one writer of ciphertext at a
//!   time send, so records leave in the order they were encrypted.
//!
//! The outbox's direct send stays: [`Session::try_send`] encrypts the whole frame,
//! sends what the socket takes without blocking, and keeps the rest of the ciphertext
//! in `tx`, which the writer thread flushes first ([`Session::flush`]).
//!
//! **Who may connect.** Each side presents one certificate carrying its Ed25519
//! identity key, and verifies the other's in [`PeerVerifier`]: in an open network the
//! certificate must be self-signed, in a closed one it must chain to the network CA;
//! either way it must be valid now and hold an Ed25519 key, and the node id is the
//! hash of that key (`identity`). A dial that knows whom it expects checks the id
//! inside the verification, before anything else is sent. The JOIN's id is compared
//! to the proven one afterwards (`peer_connection`).

use std::fmt;
use std::io::{self, Read};
use std::net::{IpAddr, TcpStream};
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use parking_lot::Mutex;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::{ResolvesClientCert, Resumption};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::{ClientHello, NoServerSessionStorage, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::{
    CertificateError, ClientConfig, ClientConnection, Connection, DigitallySignedStruct,
    DistinguishedName, OtherError, ServerConfig, ServerConnection, SignatureScheme,
};

use crate::identity::{self, Identity, NetworkCa};
use crate::p2p_message::NodeId;

/// Ciphertext read per `recv`: one whole TLS record (16 KiB of plaintext plus its
/// header and tag).
const RX_CHUNK: usize = 16 * 1024 + 512;

/// Plaintext encrypted per lock: the writer sends in steps of this size, so one frame
/// of 1 MiB never needs 1 MiB of ciphertext at once.
const TX_STEP: usize = 64 * 1024;

/// The signature scheme of every handshake signature: Ed25519 keys only.
static TLS13_ALGS: WebPkiSupportedAlgorithms = WebPkiSupportedAlgorithms {
    all: &[webpki::ring::ED25519],
    mapping: &[(SignatureScheme::ED25519, &[webpki::ring::ED25519])],
};

/// What every TLS link of a node shares: its certificate and key, the trust rule,
/// and the server config (built once). Client configs are built per dial when the
/// dial expects a particular id.
pub(crate) struct TlsContext {
    provider: Arc<CryptoProvider>,
    key: Arc<CertifiedKey>,
    trust: Arc<Trust>,
    server: Arc<ServerConfig>,
    /// The client config for dials that expect no particular id.
    client_any: Arc<ClientConfig>,
}

/// Which certificates a node accepts.
enum Trust {
    /// Self-signed ones (open network).
    SelfSigned,
    /// Ones that chain to these anchors (closed network).
    Ca(Vec<rustls_pki_types::TrustAnchor<'static>>),
}

impl TlsContext {
    /// The context for a node with `identity`, in a closed network when `ca` is given.
    pub(crate) fn new(identity: &Identity, ca: Option<&NetworkCa>) -> Result<TlsContext, String> {
        let provider = Arc::new(provider());
        let signing = provider
            .key_provider
            .load_private_key(identity.private_key_der())
            .map_err(|e| format!("identity key: {e}"))?;
        let key = Arc::new(CertifiedKey::new(identity.certificate_chain(), signing));
        let trust = match ca {
            None => Trust::SelfSigned,
            Some(ca) => {
                let mut anchors = Vec::new();
                for c in ca.certificates() {
                    let a = webpki::anchor_from_trusted_cert(c)
                        .map_err(|e| format!("network CA certificate: {e:?}"))?;
                    anchors.push(a.to_owned());
                }
                Trust::Ca(anchors)
            }
        };
        let trust = Arc::new(trust);
        let verifier = Arc::new(PeerVerifier {
            trust: Arc::clone(&trust),
            expect: None,
        });
        let mut server = ServerConfig::builder_with_provider(Arc::clone(&provider))
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(|e| format!("TLS config: {e}"))?
            .with_client_cert_verifier(verifier)
            .with_cert_resolver(Arc::new(OurCert(Arc::clone(&key))));
        // Every handshake is a full one: no tickets, no session cache. A resumed
        // session would skip the certificates, and with them the proof of the id.
        server.send_tls13_tickets = 0;
        server.session_storage = Arc::new(NoServerSessionStorage {});
        let client_any = client_config(&provider, &trust, &key, None)?;
        Ok(TlsContext {
            provider,
            key,
            trust,
            server: Arc::new(server),
            client_any,
        })
    }

    /// A session for a connection we dialled to `ip`; `expect` is the id we know
    /// lives there, checked inside the certificate verification.
    pub(crate) fn client(&self, ip: IpAddr, expect: Option<NodeId>) -> Result<Session, String> {
        let config = match expect {
            None => Arc::clone(&self.client_any),
            Some(_) => client_config(&self.provider, &self.trust, &self.key, expect)?,
        };
        // An IP server name sends no SNI; the verifier ignores names anyway.
        let conn = ClientConnection::new(config, ServerName::IpAddress(ip.into()))
            .map_err(|e| format!("TLS client: {e}"))?;
        Ok(Session::new(Connection::Client(conn)))
    }

    /// A session for a connection a peer opened.
    pub(crate) fn server(&self) -> Result<Session, String> {
        let conn = ServerConnection::new(Arc::clone(&self.server))
            .map_err(|e| format!("TLS server: {e}"))?;
        Ok(Session::new(Connection::Server(conn)))
    }
}

fn client_config(
    provider: &Arc<CryptoProvider>,
    trust: &Arc<Trust>,
    key: &Arc<CertifiedKey>,
    expect: Option<NodeId>,
) -> Result<Arc<ClientConfig>, String> {
    let verifier = Arc::new(PeerVerifier {
        trust: Arc::clone(trust),
        expect,
    });
    let mut c = ClientConfig::builder_with_provider(Arc::clone(provider))
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| format!("TLS config: {e}"))?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_client_cert_resolver(Arc::new(OurCert(Arc::clone(key))));
    c.resumption = Resumption::disabled();
    Ok(Arc::new(c))
}

/// The ring provider with TLS 1.3 only (its three TLS 1.3 suites, X25519 first).
fn provider() -> CryptoProvider {
    let mut p = rustls::crypto::ring::default_provider();
    p.cipher_suites
        .retain(|s| s.version() == &rustls::version::TLS13);
    p
}

/// Presents our certificate, whatever the peer hints.
#[derive(Debug)]
struct OurCert(Arc<CertifiedKey>);

impl ResolvesClientCert for OurCert {
    fn resolve(&self, _: &[&[u8]], _: &[SignatureScheme]) -> Option<Arc<CertifiedKey>> {
        Some(Arc::clone(&self.0))
    }
    fn has_certs(&self) -> bool {
        true
    }
}

impl ResolvesServerCert for OurCert {
    fn resolve(&self, _: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(Arc::clone(&self.0))
    }
}

/// Checks a peer's certificate (both directions); see the module docs.
struct PeerVerifier {
    trust: Arc<Trust>,
    expect: Option<NodeId>,
}

impl fmt::Debug for PeerVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PeerVerifier")
            .field("expect", &self.expect)
            .finish()
    }
}

/// A certificate that is well formed and trusted, but for another node than the one
/// the dialler expected at that address.
#[derive(Debug)]
struct WrongNode {
    expected: NodeId,
    got: NodeId,
}

impl fmt::Display for WrongNode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "certificate is for node {}, expected node {}",
            self.got, self.expected
        )
    }
}

impl std::error::Error for WrongNode {}

/// When `e` is our verifier's refusal of a certificate for another node than the
/// expected one: `(got, expected)`. Lets the dialler tell "another key listens
/// there" (which counts against the stored id) from every other TLS failure.
pub(crate) fn wrong_node(e: &rustls::Error) -> Option<(NodeId, NodeId)> {
    match e {
        rustls::Error::InvalidCertificate(CertificateError::Other(OtherError(inner))) => inner
            .downcast_ref::<WrongNode>()
            .map(|w| (w.got, w.expected)),
        _ => None,
    }
}

/// A TLS failure as one log line. An alert is the peer's verdict on *our*
/// certificate (another network CA, an open node meeting a closed network, ...), which
/// rustls alone words as `received fatal alert: UnknownCA`: say whose verdict it is.
pub(crate) fn explain(e: &rustls::Error) -> String {
    match e {
        rustls::Error::AlertReceived(alert) => format!(
            "the peer refused the handshake (alert {alert:?}): it does not accept our \
             certificate (another network CA, or open and closed networks meeting)"
        ),
        e => e.to_string(),
    }
}

/// [`explain`] for a read error that carries TLS's verdict (a refusal of our
/// certificate arrives as an alert after a TLS 1.3 client thought the handshake done).
pub(crate) fn explain_io(e: &io::Error) -> String {
    match e.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>()) {
        Some(tls) => explain(tls),
        None => e.to_string(),
    }
}

/// A certificate whose key is not Ed25519 (no node id can come from it).
#[derive(Debug)]
struct NotEd25519;

impl fmt::Display for NotEd25519 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("certificate key is not Ed25519, so it carries no node id")
    }
}

impl std::error::Error for NotEd25519 {}

fn other(e: impl std::error::Error + Send + Sync + 'static) -> rustls::Error {
    rustls::Error::InvalidCertificate(CertificateError::Other(OtherError(Arc::new(e))))
}

impl PeerVerifier {
    fn check(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
        usage: webpki::KeyUsage,
    ) -> Result<NodeId, rustls::Error> {
        let ee = webpki::EndEntityCert::try_from(end_entity)
            .map_err(|_| rustls::Error::InvalidCertificate(CertificateError::BadEncoding))?;
        let own_anchor;
        let anchors: &[rustls_pki_types::TrustAnchor<'_>] = match &*self.trust {
            Trust::SelfSigned => {
                // The certificate is its own anchor: this checks its self-signature
                // and validity period. Intermediates make no sense here.
                if !intermediates.is_empty() {
                    return Err(rustls::Error::InvalidCertificate(
                        CertificateError::UnknownIssuer,
                    ));
                }
                own_anchor = [webpki::anchor_from_trusted_cert(end_entity).map_err(|_| {
                    rustls::Error::InvalidCertificate(CertificateError::BadEncoding)
                })?];
                &own_anchor
            }
            Trust::Ca(anchors) => anchors,
        };
        ee.verify_for_usage(
            webpki::ALL_VERIFICATION_ALGS,
            anchors,
            intermediates,
            now,
            usage,
            None,
            None,
        )
        .map_err(webpki_error)?;
        let spki = ee.subject_public_key_info();
        let id = identity::node_id_from_spki(spki.as_ref()).ok_or_else(|| other(NotEd25519))?;
        if let Some(expected) = self.expect {
            if expected != id {
                return Err(other(WrongNode { expected, got: id }));
            }
        }
        Ok(id)
    }
}

/// webpki's verdict as the rustls error that makes the right alert.
fn webpki_error(e: webpki::Error) -> rustls::Error {
    use webpki::Error as E;
    let c = match e {
        E::BadDer | E::BadDerTime => CertificateError::BadEncoding,
        E::CertNotValidYet { .. } => CertificateError::NotValidYet,
        E::CertExpired { .. } => CertificateError::Expired,
        E::UnknownIssuer => CertificateError::UnknownIssuer,
        E::InvalidSignatureForPublicKey => CertificateError::BadSignature,
        _ => return other(WebpkiError(format!("{e:?}"))),
    };
    rustls::Error::InvalidCertificate(c)
}

#[derive(Debug)]
struct WebpkiError(String);

impl fmt::Display for WebpkiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "certificate refused: {}", self.0)
    }
}

impl std::error::Error for WebpkiError {}

/// The peer's CertificateVerify signature, made with its identity key: Ed25519 only.
/// One function for both directions (the two verifier traits ask the same).
fn verify_handshake_signature(
    message: &[u8],
    cert: &CertificateDer<'_>,
    dss: &DigitallySignedStruct,
) -> Result<HandshakeSignatureValid, rustls::Error> {
    rustls::crypto::verify_tls13_signature(message, cert, dss, &TLS13_ALGS)
}

/// The configs offer TLS 1.3 only, so rustls never asks for a TLS 1.2 signature;
/// should it, the answer is no.
fn refuse_tls12() -> Result<HandshakeSignatureValid, rustls::Error> {
    Err(rustls::Error::PeerIncompatible(
        rustls::PeerIncompatible::Tls13RequiredForQuic,
    ))
}

impl ServerCertVerifier for PeerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        self.check(
            end_entity,
            intermediates,
            now,
            webpki::KeyUsage::server_auth(),
        )
        .map(|_| ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _: &[u8],
        _: &CertificateDer<'_>,
        _: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        refuse_tls12()
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_handshake_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        vec![SignatureScheme::ED25519]
    }
}

impl ClientCertVerifier for PeerVerifier {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        self.check(
            end_entity,
            intermediates,
            now,
            webpki::KeyUsage::client_auth(),
        )
        .map(|_| ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _: &[u8],
        _: &CertificateDer<'_>,
        _: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        refuse_tls12()
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_handshake_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        vec![SignatureScheme::ED25519]
    }

    fn client_auth_mandatory(&self) -> bool {
        true
    }
}

/// Why a TLS handshake did not complete.
#[derive(Debug)]
pub(crate) enum HandshakeFailure {
    /// Not done by the deadline.
    Timeout,
    /// The peer hung up first.
    Closed,
    /// The peer's first bytes are not a TLS record: it speaks plaintext.
    NotTls,
    /// A socket call failed.
    Io(io::Error),
    /// TLS refused it (certificate, alert, bad record).
    Tls(rustls::Error),
}

/// One connection's TLS state; see the module docs for how it is shared.
pub(crate) struct Session {
    state: Mutex<Connection>,
    /// Ciphertext received and not yet handed to rustls. Only the reading thread
    /// locks it (the handshake, then the reader loop), so it never waits.
    rx: Mutex<Rx>,
    /// Ciphertext encrypted and not yet sent. Held by whoever sends ciphertext.
    tx: Mutex<Vec<u8>>,
    /// The id the peer's certificate proved, once the handshake is done.
    peer_id: OnceLock<NodeId>,
}

#[derive(Default)]
struct Rx {
    buf: Vec<u8>,
    start: usize,
    end: usize,
    /// The socket reported its end.
    eof: bool,
    /// rustls was told of the end.
    eof_fed: bool,
    /// Whether the first byte from the peer has been looked at.
    first_seen: bool,
}

/// What went wrong handing ciphertext to rustls.
enum Feed {
    Io(io::Error),
    Tls(rustls::Error),
}

impl From<Feed> for io::Error {
    fn from(f: Feed) -> io::Error {
        match f {
            Feed::Io(e) => e,
            Feed::Tls(e) => io::Error::new(io::ErrorKind::InvalidData, e),
        }
    }
}

impl Session {
    fn new(conn: Connection) -> Session {
        Session {
            state: Mutex::new(conn),
            rx: Mutex::new(Rx::default()),
            tx: Mutex::new(Vec::new()),
            peer_id: OnceLock::new(),
        }
    }

    /// The id the peer's certificate proved (after [`Session::handshake`]).
    pub(crate) fn peer_id(&self) -> Option<NodeId> {
        self.peer_id.get().copied()
    }

    /// Runs the handshake to its end or `deadline`. Sends rustls's alert before
    /// returning a TLS failure, so the peer learns why.
    pub(crate) fn handshake(
        &self,
        sock: &TcpStream,
        deadline: Instant,
    ) -> Result<(), HandshakeFailure> {
        let mut rx = self.rx.lock();
        let mut not_tls = false;
        loop {
            self.send_pending(sock, deadline)
                .map_err(HandshakeFailure::Io)?;
            if !self.state.lock().is_handshaking() {
                break;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(HandshakeFailure::Timeout);
            }
            sock.set_read_timeout(Some(left))
                .map_err(HandshakeFailure::Io)?;
            match fill(sock, &mut rx) {
                Ok(()) => {}
                Err(e) if is_timeout(&e) => return Err(HandshakeFailure::Timeout),
                Err(e) => return Err(HandshakeFailure::Io(e)),
            }
            if !rx.first_seen && rx.start < rx.end {
                rx.first_seen = true;
                // Alert, handshake, application data, change cipher spec: what a
                // TLS peer's first record can be. A plaintext frame starts with its
                // length's high byte, 0x00.
                not_tls = !(0x14..=0x17).contains(&rx.buf[rx.start]);
            }
            let fed = {
                let mut st = self.state.lock();
                feed(&mut st, &mut rx)
            };
            match fed {
                Ok(()) => {}
                Err(Feed::Io(e)) => return Err(HandshakeFailure::Io(e)),
                Err(Feed::Tls(e)) => {
                    let _ = self.send_pending(sock, deadline);
                    return Err(if not_tls {
                        HandshakeFailure::NotTls
                    } else {
                        HandshakeFailure::Tls(e)
                    });
                }
            }
            if rx.eof && rx.start == rx.end && self.state.lock().is_handshaking() {
                return Err(if not_tls {
                    HandshakeFailure::NotTls
                } else {
                    HandshakeFailure::Closed
                });
            }
        }
        let id = self
            .state
            .lock()
            .peer_certificates()
            .and_then(|c| c.first())
            .and_then(|c| identity::spki_of_certificate(c).ok())
            .and_then(|spki| identity::node_id_from_spki(&spki));
        match id {
            Some(id) => {
                let _ = self.peer_id.set(id);
                Ok(())
            }
            // The verifier accepted no certificate without an id; this is a backstop.
            None => Err(HandshakeFailure::Tls(
                rustls::Error::NoCertificatesPresented,
            )),
        }
    }

    /// Sends whatever rustls has queued (handshake messages, alerts), blocking up to
    /// `deadline`.
    fn send_pending(&self, sock: &TcpStream, deadline: Instant) -> io::Result<()> {
        let mut tx = self.tx.lock();
        drain(&mut self.state.lock(), &mut tx)?;
        if tx.is_empty() {
            return Ok(());
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(io::ErrorKind::TimedOut.into());
        }
        sock.set_write_timeout(Some(left))?;
        let r = super::send_all_raw(sock, &tx);
        tx.clear();
        r
    }

    /// Reads plaintext: `Ok(0)` at the end of the stream (close_notify, or the TCP end
    /// without it: frames carry their own length, so a cut is seen as a truncated
    /// frame either way).
    pub(crate) fn read(&self, sock: &TcpStream, out: &mut [u8]) -> io::Result<usize> {
        let mut rx = self.rx.lock();
        loop {
            {
                let mut st = self.state.lock();
                feed(&mut st, &mut rx)?;
                match st.reader().read(out) {
                    Ok(n) => return Ok(n),
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(0),
                    Err(e) => return Err(e),
                }
                if rx.eof_fed {
                    return Ok(0);
                }
            }
            fill(sock, &mut rx)?;
        }
    }

    /// Encrypts and sends all of `buf`, blocking (up to the socket's write timeout).
    pub(crate) fn send_all(&self, sock: &TcpStream, buf: &[u8]) -> io::Result<()> {
        let mut tx = self.tx.lock();
        send_tx(sock, &mut tx)?;
        let mut rest = buf;
        loop {
            {
                let mut st = self.state.lock();
                let step = rest.len().min(TX_STEP);
                encrypt(&mut st, &rest[..step], &mut tx)?;
                rest = &rest[step..];
            }
            send_tx(sock, &mut tx)?;
            if rest.is_empty() {
                break;
            }
        }
        if tx.capacity() > 4 * TX_STEP {
            *tx = Vec::new();
        }
        Ok(())
    }

    /// Encrypts all of `buf` and sends what the socket takes without blocking; the
    /// rest of the ciphertext waits in `tx` for [`Session::flush`]. Returns `buf.len()`
    /// once encrypted, 0 when another sender holds the socket or earlier ciphertext
    /// is still unsent (the caller then queues the frame).
    pub(crate) fn try_send(
        &self,
        buf: &[u8],
        send: impl Fn(&[u8]) -> io::Result<usize>,
    ) -> io::Result<usize> {
        let Some(mut tx) = self.tx.try_lock() else {
            return Ok(0);
        };
        if !tx.is_empty() {
            let n = send(&tx)?;
            tx.drain(..n);
            if !tx.is_empty() {
                return Ok(0);
            }
        }
        encrypt(&mut self.state.lock(), buf, &mut tx)?;
        // A failed send leaves the ciphertext for the writer thread, which meets the
        // same error: the frame counts as taken either way.
        let n = send(&tx).unwrap_or(0);
        tx.drain(..n);
        Ok(buf.len())
    }

    /// Whether ciphertext from [`Session::try_send`] is waiting to be sent.
    pub(crate) fn has_unsent(&self) -> bool {
        self.tx.try_lock().is_some_and(|t| !t.is_empty())
    }

    /// Sends the ciphertext [`Session::try_send`] left, blocking.
    pub(crate) fn flush(&self, sock: &TcpStream) -> io::Result<()> {
        send_tx(sock, &mut self.tx.lock())
    }

    /// Queues close_notify and sends it if the socket takes it at once and no other
    /// sender holds it; best effort (the reader treats a bare TCP end alike).
    pub(crate) fn close_notify(&self, send: impl Fn(&[u8]) -> io::Result<usize>) {
        let Some(mut tx) = self.tx.try_lock() else {
            return;
        };
        let mut st = self.state.lock();
        if st.is_handshaking() {
            return;
        }
        st.send_close_notify();
        let _ = drain(&mut st, &mut tx);
        drop(st);
        if let Ok(n) = send(&tx) {
            tx.drain(..n);
        }
    }
}

/// Sends the ciphertext in `tx` (the caller holds the `tx` lock, its right to send),
/// blocking up to the socket's write timeout, and empties it once sent.
fn send_tx(sock: &TcpStream, tx: &mut Vec<u8>) -> io::Result<()> {
    if !tx.is_empty() {
        super::send_all_raw(sock, tx)?;
        tx.clear();
    }
    Ok(())
}

/// Hands rustls the buffered ciphertext until plaintext is ready or nothing is left.
fn feed(st: &mut Connection, rx: &mut Rx) -> Result<(), Feed> {
    loop {
        let io = st.process_new_packets().map_err(Feed::Tls)?;
        if io.plaintext_bytes_to_read() > 0 || io.peer_has_closed() {
            return Ok(());
        }
        if rx.start == rx.end {
            if rx.eof && !rx.eof_fed {
                rx.eof_fed = true;
                st.read_tls(&mut io::empty()).map_err(Feed::Io)?;
                continue;
            }
            return Ok(());
        }
        let mut s = &rx.buf[rx.start..rx.end];
        let n = st.read_tls(&mut s).map_err(Feed::Io)?;
        if n == 0 {
            return Ok(());
        }
        rx.start += n;
    }
}

/// One `recv` into the reader's ciphertext buffer (no state lock held).
fn fill(sock: &TcpStream, rx: &mut Rx) -> io::Result<()> {
    if rx.eof {
        return Ok(());
    }
    if rx.start == rx.end {
        rx.start = 0;
        rx.end = 0;
    }
    if rx.buf.is_empty() {
        rx.buf = vec![0; RX_CHUNK];
    }
    if rx.end == rx.buf.len() {
        rx.buf.copy_within(rx.start..rx.end, 0);
        rx.end -= rx.start;
        rx.start = 0;
    }
    let mut s: &TcpStream = sock;
    loop {
        match s.read(&mut rx.buf[rx.end..]) {
            Ok(0) => {
                rx.eof = true;
                return Ok(());
            }
            Ok(n) => {
                rx.end += n;
                return Ok(());
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}

/// Encrypts all of `buf` into `tx` (with anything rustls queued before it).
fn encrypt(st: &mut Connection, mut buf: &[u8], tx: &mut Vec<u8>) -> io::Result<()> {
    use std::io::Write;
    drain(st, tx)?;
    while !buf.is_empty() {
        let n = st.writer().write(buf)?;
        if n == 0 {
            return Err(io::ErrorKind::WriteZero.into());
        }
        buf = &buf[n..];
        drain(st, tx)?;
    }
    Ok(())
}

/// Moves every queued TLS record into `tx`.
fn drain(st: &mut Connection, tx: &mut Vec<u8>) -> io::Result<()> {
    while st.wants_write() {
        st.write_tls(tx)?;
    }
    Ok(())
}

fn is_timeout(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock
    )
}
