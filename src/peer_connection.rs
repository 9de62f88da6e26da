//! `PeerConnection`: one connection from handshake to close, the Rust form of the
//! C++ `PeerConnection` (a `Poco::Net::TCPServerConnection`).
//!
//! The C++ `run()` read one line, printed it and returned, closing the connection. Here
//! `run()` owns the connection's [`Stream`] for its whole life:
//!
//! 1. **Handshake.** TLS 1.3 first (unless the node runs `--plaintext`): each side's
//!    certificate proves its node id, and a dial that knows the id it expects checks
//!    it there. Then send our JOIN, read theirs, all within the handshake timeout;
//!    any other first frame, a JOIN whose id is not the proven one, a JOIN that
//!    breaks membership's rules, or our own node id (we dialled ourselves) ends the
//!    connection.
//!    A peer that dialled us only *claims* its listen address in its JOIN: unless
//!    that (address, id) pair is already proven, we dial the address back with a
//!    PROBE ([`probe`]) before registering. Success makes the link verified at that
//!    address; failure leaves it linked but unverified, known by its socket address
//!    (docs/PROTOCOL.md 3.1, "Verified listen addresses").
//! 2. **Register.** [`Links::register`](crate::links::Links::register) adds the link
//!    to the peer table, which keeps one link per pair of nodes; a losing duplicate
//!    is retired (or closed at once past the retiring bound), a connection refused
//!    for capacity is referred elsewhere.
//!
//! Every `PeerConnection` holds a `ConnSlot` (its place under `max_connections`)
//! for its whole life, whatever it becomes, and frees it when it is dropped.
//! 3. **Writer.** A second thread runs the link's outbox: it sends what callers
//!    queued, many frames per write (callers send directly when the link is idle).
//! 4. **Reader loop.** This thread reads frames and hands each to
//!    [`Protocols::dispatch`] until the peer leaves, the stream fails or closes, or a
//!    frame breaks the protocol; each closes the link with a typed reason.
//!
//! No lock is held across any socket call in this file.

use std::io::{self, Read};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::Sender;

use crate::error::{Error, HandshakeError};
use crate::event::{Direction, DownReason, Encryption, PeerInfo};
use crate::links::{ConnSlot, Link, LinkId, PendingSlot, Register};
use crate::p2p_message::{
    read_frame, read_frame_buffered, DecodeError, Join, NodeId, P2PMessage, MAX_JOIN_FRAME,
};
use crate::protocol::membership::JoinCheck;
use crate::protocol::{Flow, InboundLimits};
use crate::shared::Shared;
use crate::state::known_addrs::is_dialable;
use crate::transport::outbox::Outbox;
use crate::transport::thread::spawn_named;
use crate::transport::tls::{explain, explain_io, wrong_node, HandshakeFailure};
use crate::transport::{ReadHalf, Stream, WriteHalf};

/// Read buffer per link: one `read` call brings in hundreds of small frames. Pages
/// are only touched (and count as memory) once that much arrives at once.
const READ_BUF: usize = 64 * 1024;

/// How long a node at its link cap waits for a referred peer to hang up.
const REFER_DRAIN: Duration = Duration::from_secs(1);

/// Where a dial reports its outcome, for callers that wait for it (`connect_to_peer`).
pub(crate) type DialWaiter = Sender<Result<PeerInfo, Error>>;

/// A dial's claim on its address (taken in `Links`), and maybe a caller waiting for
/// the outcome.
pub(crate) struct Dial {
    pub(crate) addr: SocketAddr,
    /// The node id known to listen at `addr` (address book, peer cache): checked
    /// inside the TLS certificate verification, before our JOIN is sent.
    pub(crate) expect: Option<NodeId>,
    pub(crate) waiter: Option<DialWaiter>,
}

/// One connection, before and after its handshake.
pub(crate) struct PeerConnection {
    shared: Arc<Shared>,
    stream: Stream,
    conn_id: u64,
    /// The stream's remote address (an ephemeral port when the peer dialled us).
    remote: SocketAddr,
    direction: Direction,
    /// An accepted connection's place among the pending handshakes, freed when the
    /// handshake ends.
    pending: Option<PendingSlot>,
    /// For dials: what to report the outcome to; `None` once reported.
    dial: Option<Dial>,
    /// The connection's place under `max_connections`, freed when this value is
    /// dropped: at the end of `run`, after the stream is unregistered, or with the
    /// closure of a thread that could not be spawned.
    _slot: ConnSlot,
}

impl PeerConnection {
    /// A connection the peer opened.
    pub(crate) fn accepted(
        shared: Arc<Shared>,
        stream: Stream,
        conn_id: u64,
        remote: SocketAddr,
        slot: ConnSlot,
        pending: PendingSlot,
    ) -> PeerConnection {
        PeerConnection {
            shared,
            stream,
            conn_id,
            remote,
            direction: Direction::Inbound,
            pending: Some(pending),
            dial: None,
            _slot: slot,
        }
    }

    /// A connection we dialled to `dial.addr`.
    pub(crate) fn dialled(
        shared: Arc<Shared>,
        stream: Stream,
        conn_id: u64,
        slot: ConnSlot,
        dial: Dial,
    ) -> PeerConnection {
        PeerConnection {
            shared,
            stream,
            conn_id,
            remote: dial.addr,
            direction: Direction::Outbound,
            pending: None,
            dial: Some(dial),
            _slot: slot,
        }
    }

    /// Runs the connection to its end (the C++ `PeerConnection::run`). Always
    /// unregisters the stream and joins the writer before returning.
    pub(crate) fn run(mut self) {
        let handshake = self.handshake().map(|(join, deadline)| {
            let (addr, verified) = self.listen_addr(&join, deadline);
            (join, addr, verified)
        });
        self.pending = None;
        let links = &self.shared.links;
        match handshake {
            Ok((join, addr, verified)) => self.run_link(join, addr, verified),
            Err(e) => {
                match &e {
                    Error::SelfDial(_) => log::debug!("{}: {e}", self.remote),
                    Error::Handshake {
                        reason: HandshakeError::Probed,
                        ..
                    } => log::debug!("{}: {e}", self.remote),
                    _ if !links.is_running() => {}
                    _ => {
                        links.count_handshake_failure();
                        log::warn!("{}: {e}", self.remote);
                    }
                }
                self.finish_dial(Err(e));
            }
        }
        self.stream.shutdown();
        self.shared.links.remove_conn(self.conn_id);
    }

    /// Exchanges JOINs. Both sides send first, so neither waits for the other.
    /// Returns the peer's JOIN and the handshake's deadline (which bounds the probe).
    /// An inbound connection whose first frame is PROBE ends here with
    /// [`HandshakeError::Probed`]: the JOIN we sent was the answer.
    fn handshake(&mut self) -> Result<(Join, Instant), Error> {
        let addr = self.remote;
        let fail = |reason: HandshakeError| Error::Handshake { addr, reason };
        let links = &self.shared.links;
        if !links.is_running() {
            return Err(fail(HandshakeError::Stopping));
        }
        let timeout = links.config().handshake_timeout;
        let deadline = Instant::now() + timeout;
        self.stream.set_nodelay();
        self.secure(deadline).map_err(fail)?;
        let writer = self.stream.writer();
        writer
            .set_write_timeout(Some(timeout))
            .map_err(|e| fail(HandshakeError::Setup(e)))?;
        let membership = &self.shared.protocols.membership;
        let ours = membership.join_message(self.remote.ip());
        writer
            .send_all(&ours.encode())
            .map_err(|e| fail(HandshakeError::Send(e)))?;

        let mut reader = DeadlineReader {
            half: self.stream.reader(),
            deadline,
        };
        let max = MAX_JOIN_FRAME.min(links.config().max_frame);
        let frame = match read_join_frame(&mut reader, max, self.stream.is_tls()) {
            Ok(Some(f)) => f,
            Ok(None) => return Err(fail(HandshakeError::ClosedEarly)),
            Err(HandshakeError::Timeout { .. }) => {
                return Err(fail(HandshakeError::Timeout {
                    ms: timeout.as_millis(),
                }))
            }
            Err(e) => return Err(fail(e)),
        };
        let join = match P2PMessage::decode(&frame) {
            Ok(P2PMessage::Join(j)) => j,
            Ok(P2PMessage::Probe) if self.direction == Direction::Inbound => {
                return Err(fail(HandshakeError::Probed))
            }
            Ok(other) => return Err(fail(HandshakeError::NotJoin(other.message_type()))),
            Err(e) => return Err(fail(HandshakeError::BadFrame(e))),
        };
        if let Some(proven) = self.stream.peer_id() {
            if join.node_id != proven {
                return Err(fail(HandshakeError::IdMismatch {
                    claimed: join.node_id,
                    proven,
                }));
            }
        }
        match membership.check_join(&join).map_err(fail)? {
            JoinCheck::Accept => Ok((join, deadline)),
            JoinCheck::OwnId => {
                let addr = self.dial.as_ref().map_or(self.remote, |d| d.addr);
                Err(Error::SelfDial(addr))
            }
        }
    }

    /// Runs the TLS handshake first, unless the node runs plaintext. A dial that knows
    /// the id at its address has the certificate checked against it.
    fn secure(&self, deadline: Instant) -> Result<(), HandshakeError> {
        let Some(tls) = &self.shared.tls else {
            return Ok(());
        };
        let session = match self.direction {
            Direction::Outbound => {
                let expect = self.dial.as_ref().and_then(|d| d.expect);
                tls.client(self.remote.ip(), expect)
            }
            Direction::Inbound => tls.server(),
        }
        .map_err(HandshakeError::TlsSetup)?;
        self.stream
            .start_tls(session, deadline)
            .map_err(|f| tls_failure(f, &self.shared))
    }

    /// The address the link is registered under, and whether it is verified.
    ///
    /// The JOIN claims `(advertise or socket IP, listen_port)`. That claim counts when
    /// it is already proven for this id: the address we dialled, or a pair in
    /// membership's verified cache. Otherwise we dial the claimed address back
    /// ([`probe`], within the handshake's deadline, holding no lock). When the probe
    /// fails, an outbound link keeps the address we dialled (proven by construction)
    /// and an inbound link is known by its socket address, unverified.
    fn listen_addr(&self, join: &Join, deadline: Instant) -> (SocketAddr, bool) {
        let membership = &self.shared.protocols.membership;
        let ip = join.advertise.unwrap_or(self.remote.ip());
        let claimed = SocketAddr::new(ip, join.listen_port);
        let id = join.node_id;
        if self.direction == Direction::Outbound && claimed == self.remote {
            membership.record_verified(id, claimed);
            return (claimed, true);
        }
        if membership.is_verified(id, &claimed) {
            return (claimed, true);
        }
        let outcome = if membership.is_own(&claimed) {
            Err("it is this node's own address".to_string())
        } else if !is_dialable(&claimed) {
            // A JOIN's `advertise` is the peer's word: 0.0.0.0, multicast or the
            // broadcast address is never dialled back (nor listed).
            Err("not an address a node can listen at".to_string())
        } else {
            probe(&self.shared, claimed, id, deadline)
        };
        match outcome {
            Ok(()) => {
                log::debug!("{}: node {id} verified at {claimed}", self.remote);
                membership.record_verified(id, claimed);
                (claimed, true)
            }
            Err(why) => {
                log::info!(
                    "{}: claimed listen address {claimed} of node {id} not verified: {why}",
                    self.remote
                );
                match self.direction {
                    Direction::Outbound => (self.remote, true),
                    Direction::Inbound => (self.remote, false),
                }
            }
        }
    }

    fn run_link(&mut self, join: Join, addr: SocketAddr, verified: bool) {
        let direction = self.direction;
        let shared = Arc::clone(&self.shared);
        let links = &shared.links;
        let protocols = &shared.protocols;
        // Both ends know alike who dialled (see `PeerTable::insert`).
        let dialler = match direction {
            Direction::Outbound => shared.id,
            Direction::Inbound => join.node_id,
        };
        let encryption = if self.stream.is_tls() {
            Encryption::Tls
        } else {
            Encryption::Plain
        };
        let outbox = Arc::new(Outbox::new(
            self.stream.writer(),
            links.config().queue_len,
            links.config().queue_bytes,
            links.clock().epoch(),
        ));
        let id = LinkId {
            conn_id: self.conn_id,
            node_id: join.node_id,
            addr,
            remote_ip: self.remote.ip(),
            direction,
            dialler,
            encryption,
            verified,
        };
        let link = Arc::new(Link::new(
            id,
            outbox,
            self.stream.closer(),
            links.clock().now_ms(),
        ));
        match links.register(Arc::clone(&link)) {
            Register::Linked { new } => {
                protocols.link_registered(links, &link, self.remote.ip(), join.observed);
                if new {
                    links.report_up(&link);
                }
            }
            Register::Duplicate(existing) => {
                log::debug!("{addr}: duplicate connection, keeping the other one");
                self.finish_dial(Ok(existing.info()));
                // Retiring already (`register` made the entry). Deliver whatever the
                // peer sent here before it saw the winner.
                self.read_loop(&link);
                protocols.link_down(self.conn_id);
                return;
            }
            Register::Surplus(existing) => {
                // Closed at once by `run`: no linger, no reading.
                log::debug!("{addr}: surplus connection to a linked node, closing it");
                self.finish_dial(Ok(existing.info()));
                return;
            }
            Register::Refused(reason @ HandshakeError::LinkLimit { .. }) => {
                log::info!("{addr}: link refused: {reason}");
                self.refer_elsewhere(addr);
                self.finish_dial(Err(Error::Handshake { addr, reason }));
                return;
            }
            Register::Refused(reason) => {
                log::warn!("{addr}: link refused: {reason}");
                self.finish_dial(Err(Error::Handshake { addr, reason }));
                return;
            }
        }
        let writer = spawn_named(format!("tx {addr}"), links.config().thread_stack_size, {
            let link = Arc::clone(&link);
            move || link.run_writer()
        });
        let writer = match writer {
            Ok(h) => h,
            Err(e) => {
                log::error!("{addr}: cannot start the writer thread: {e}");
                links.close(&link, DownReason::NoWriterThread);
                protocols.link_down(self.conn_id);
                self.finish_dial(Err(Error::Thread(e)));
                return;
            }
        };
        self.finish_dial(Ok(link.info()));
        protocols.link_up(links, &link);

        let reason = links.reader_ended(&link, self.read_loop(&link));
        if reason.is_clean() {
            log::info!("{addr}: link closed: {reason}");
        } else if links.is_running() {
            log::warn!("{addr}: closing link: {reason}");
        }
        links.close(&link, reason);
        protocols.link_down(self.conn_id);
        // The writer stops once closed, or on the write error the shutdown causes.
        link.close_outbox();
        drop(link);
        if writer.join().is_err() {
            log::error!("{addr}: writer thread panicked");
        }
    }

    /// A node at its link cap still helps a joiner: it sends the addresses it knows and
    /// LEAVE (so the peer does not redial at once), half-closes, and reads until the
    /// peer hangs up (at most a second), so the goodbye is not lost to a reset. When
    /// the connection cap is nearly full (`Links::may_drain_referral`) it does not
    /// wait: the places left are kept for handshakes.
    fn refer_elsewhere(&self, addr: SocketAddr) {
        let shared = &self.shared;
        let mut bytes = shared
            .protocols
            .membership
            .peer_list(&shared.links, addr)
            .encode();
        P2PMessage::Leave.encode_into(&mut bytes);
        let writer: WriteHalf = self.stream.writer();
        if writer.send_all(&bytes).is_err() {
            return;
        }
        writer.shutdown(std::net::Shutdown::Write);
        if !shared.links.may_drain_referral() {
            return;
        }
        let mut reader = self.stream.reader();
        let _ = reader.set_read_timeout(Some(REFER_DRAIN));
        let deadline = Instant::now() + REFER_DRAIN;
        let mut sink = [0u8; 4096];
        while Instant::now() < deadline {
            match reader.read(&mut sink) {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
        }
    }

    /// Reads frames and hands them to the protocols until the link ends; returns why.
    fn read_loop(&self, link: &Link) -> DownReason {
        let shared = &self.shared;
        let links = &shared.links;
        let config = links.config();
        let half = self.stream.reader();
        // Heartbeats arrive every interval, so a read blocked far longer than the peer
        // timeout means the maintenance thread is not running; this is only a backstop.
        let _ = half.set_read_timeout(Some(config.peer_timeout * 4));
        // A peer that accepts no bytes for this long is dead or hostile; the writer's
        // error then closes the link.
        let _ = self
            .stream
            .writer()
            .set_write_timeout(Some(config.peer_timeout * 2));
        let mut reader = half.buffered(READ_BUF);
        // This connection's rate limits: only this thread touches them.
        let mut limits = InboundLimits::new(config, links.clock().now_ms());
        let mut frames: u32 = 0;
        loop {
            // The clock is read when a frame needs the socket, or every 64 frames
            // served from the buffer; not per frame.
            let from_socket = reader.is_drained();
            let frame = match read_frame_buffered(&mut reader, config.max_frame) {
                Ok(Some(f)) => f,
                Ok(None) => return DownReason::ClosedByPeer,
                Err(DecodeError::Io(e)) if !links.is_running() => {
                    return DownReason::Stopping(e.to_string())
                }
                Err(DecodeError::Io(e)) => return DownReason::ReadFailed(e.to_string()),
                Err(e) => return DownReason::BadFrame(e.to_string()),
            };
            frames = frames.wrapping_add(1);
            if from_socket || frames % 64 == 0 {
                link.heard_from(links.clock().now_ms());
            }
            let msg = match P2PMessage::decode_owned(frame) {
                Ok(m) => m,
                Err(DecodeError::UnknownType(t)) => {
                    // Ignored, so a newer peer can add message types.
                    links.count_ignored_frame(&format!(
                        "{}: ignoring frame of unknown type {t}",
                        link.addr()
                    ));
                    continue;
                }
                Err(e) => return DownReason::BadFrame(e.to_string()),
            };
            log::trace!("{}: received {:?}", link.addr(), msg.message_type());
            match shared.protocols.dispatch(links, link, &mut limits, msg) {
                Flow::Continue => {}
                // The application kept this reader waiting; the peer was not silent.
                Flow::Waited => link.heard_from(links.clock().now_ms()),
                Flow::Close(reason) => return reason,
            }
        }
    }

    /// Reports the handshake outcome to a waiting `connect_to_peer` and updates the
    /// address book and the dial registry for dials. Runs once.
    fn finish_dial(&mut self, result: Result<PeerInfo, Error>) {
        let Some(Dial { addr, waiter, .. }) = self.dial.take() else {
            return;
        };
        let shared = &self.shared;
        let membership = &shared.protocols.membership;
        match &result {
            Err(Error::SelfDial(_)) => membership.found_self(addr),
            r => {
                let wrong_id = matches!(
                    r,
                    Err(Error::Handshake {
                        reason: HandshakeError::WrongNode { .. },
                        ..
                    })
                );
                membership.dial_finished(&shared.links, addr, r.is_ok(), wrong_id)
            }
        }
        shared.links.end_dial(&addr);
        if let Some(w) = waiter {
            let _ = w.send(result);
        }
    }
}

/// The dial-back check: opens a connection to `addr`, runs TLS expecting the
/// certificate of node `expect` (plaintext nodes skip TLS), sends PROBE instead of
/// JOIN, and reads the JOIN the node there sends first; `Ok` when its id is
/// `expect`. Everything is bounded by `deadline` (the connect also by the connect
/// timeout). The connection is registered with `Links` while it runs, so a stopping
/// node closes it, and holds no connection slot: it lives inside the handshake of
/// the connection that asked for it. Runs on that connection's thread, no lock held.
fn probe(
    shared: &Shared,
    addr: SocketAddr,
    expect: NodeId,
    deadline: Instant,
) -> Result<(), String> {
    let links = &shared.links;
    let left = deadline.saturating_duration_since(Instant::now());
    let timeout = links.config().connect_timeout.min(left);
    if timeout.is_zero() {
        return Err("no time left in the handshake".into());
    }
    let stream = Stream::connect(addr, timeout).map_err(|e| format!("cannot connect: {e}"))?;
    let conn_id = links.next_conn_id();
    links.add_conn(conn_id, stream.closer());
    let result = probe_on(shared, &stream, addr, expect, deadline);
    stream.shutdown();
    links.remove_conn(conn_id);
    result
}

fn probe_on(
    shared: &Shared,
    stream: &Stream,
    addr: SocketAddr,
    expect: NodeId,
    deadline: Instant,
) -> Result<(), String> {
    stream.set_nodelay();
    if let Some(tls) = &shared.tls {
        let session = tls.client(addr.ip(), Some(expect))?;
        stream
            .start_tls(session, deadline)
            .map_err(|f| tls_failure(f, shared).to_string())?;
    }
    let left = deadline.saturating_duration_since(Instant::now());
    if left.is_zero() {
        return Err("no time left in the handshake".into());
    }
    let writer = stream.writer();
    writer
        .set_write_timeout(Some(left))
        .map_err(|e| format!("cannot set timeout: {e}"))?;
    writer
        .send_all(&P2PMessage::Probe.encode())
        .map_err(|e| format!("cannot send PROBE: {e}"))?;
    let mut reader = DeadlineReader {
        half: stream.reader(),
        deadline,
    };
    let max = MAX_JOIN_FRAME.min(shared.links.config().max_frame);
    let frame = match read_join_frame(&mut reader, max, stream.is_tls()) {
        Ok(Some(f)) => f,
        Ok(None) => return Err("closed before sending JOIN".into()),
        Err(HandshakeError::Timeout { .. }) => return Err("no JOIN before the deadline".into()),
        Err(e) => return Err(e.to_string()),
    };
    match P2PMessage::decode(&frame) {
        Ok(P2PMessage::Join(j)) if j.node_id == expect => Ok(()),
        Ok(P2PMessage::Join(j)) => Err(format!("node {} listens there", j.node_id)),
        Ok(other) => Err(format!("expected JOIN, got {:?}", other.message_type())),
        Err(e) => Err(e.to_string()),
    }
}

/// Why a TLS handshake failed, as the handshake error a link's or a probe's log line
/// names.
fn tls_failure(f: HandshakeFailure, shared: &Shared) -> HandshakeError {
    match f {
        HandshakeFailure::Timeout => HandshakeError::TlsTimeout {
            ms: shared.links.config().handshake_timeout.as_millis(),
        },
        HandshakeFailure::Closed => HandshakeError::ClosedEarly,
        HandshakeFailure::NotTls => HandshakeError::PeerPlaintext,
        HandshakeFailure::Io(e) => HandshakeError::Send(e),
        HandshakeFailure::Tls(e) => match wrong_node(&e) {
            Some((got, expected)) => HandshakeError::WrongNode { got, expected },
            None => HandshakeError::Tls(explain(&e)),
        },
    }
}

/// Reads the peer's first frame, its JOIN. A plaintext node that gets a TLS record
/// instead (a ClientHello, or the alert a TLS node answers a plaintext JOIN with)
/// says so at once rather than reading it as a huge length.
fn read_join_frame<R: Read>(
    reader: &mut R,
    max: u32,
    tls: bool,
) -> Result<Option<Vec<u8>>, HandshakeError> {
    let mut head = [0u8; 3];
    let mut got = 0;
    while got < head.len() {
        match reader.read(&mut head[got..]) {
            Ok(0) if got == 0 => return Ok(None),
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(frame_error(DecodeError::Io(e), tls)),
        }
    }
    // A TLS record: content type 0x15 (alert) or 0x16 (handshake), version 3.x.
    if !tls && got >= 2 && matches!(head[0], 0x15 | 0x16) && head[1] == 0x03 {
        return Err(HandshakeError::PeerTls);
    }
    let mut chained = (&head[..got]).chain(reader);
    match read_frame(&mut chained, max) {
        Ok(f) => Ok(f),
        Err(e) => Err(frame_error(e, tls)),
    }
}

/// Why reading the JOIN failed. On TLS an `InvalidData` read error is TLS's verdict
/// (a refused certificate arrives as the peer's alert after our side thought the
/// handshake done: TLS 1.3 clients finish first).
fn frame_error(e: DecodeError, tls: bool) -> HandshakeError {
    match e {
        DecodeError::Io(e) if is_timeout(&e) => HandshakeError::Timeout { ms: 0 },
        DecodeError::Io(e) if tls && e.kind() == io::ErrorKind::InvalidData => {
            HandshakeError::Tls(explain_io(&e))
        }
        e => HandshakeError::BadFrame(e),
    }
}

/// A reader that fails with `TimedOut` once `deadline` passes, however the bytes trickle
/// in: a per-`read` timeout alone would let a peer sending one byte at a time hold the
/// handshake open forever.
struct DeadlineReader {
    half: ReadHalf,
    deadline: Instant,
}

impl Read for DeadlineReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let left = self.deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "handshake deadline",
            ));
        }
        self.half.set_read_timeout(Some(left))?;
        self.half.read(buf)
    }
}

fn is_timeout(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock
    )
}
