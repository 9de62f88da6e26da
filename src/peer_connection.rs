//! `PeerConnection`: one TCP connection from handshake to close, the Rust form of the
//! C++ `PeerConnection` (a `Poco::Net::TCPServerConnection`).
//!
//! The C++ `run()` read one line, printed it and returned, closing the connection. Here
//! `run()` owns the connection for its whole life:
//!
//! 1. **Handshake.** Send our JOIN, read theirs, both within the handshake timeout;
//!    any other first frame, a wrong version or network name, or our own node id
//!    (we dialled ourselves) ends the connection.
//! 2. **Register.** [`Shared::handle_join`] adds the link to the peer table, which
//!    keeps one link per pair of nodes; a losing duplicate is closed here.
//! 3. **Writer.** A second thread runs the link's [`Outbox`]: it sends what callers
//!    queued, many frames per write (callers send directly when the link is idle).
//! 4. **Reader loop.** This thread reads frames until the peer leaves, the socket
//!    fails or closes, or a frame breaks the protocol; each closes the link with a
//!    logged reason.
//!
//! No lock is held across any socket call in this file.

use std::io::{self, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::error::Error;
use crate::event::{Direction, Event};
use crate::node::{HandleJoin, Queued, Shared};
use crate::outbox::Outbox;
use crate::p2p_message::{
    read_frame, read_frame_buffered, DecodeError, Join, P2PMessage, MAX_JOIN_FRAME,
    PROTOCOL_VERSION,
};
use crate::peer_connection_factory::{spawn_named, DialWaiter};
use crate::peer_table::Link;

/// Read buffer per link: one `read` call brings in hundreds of small frames. Pages
/// are only touched (and count as memory) once that much arrives at once.
const READ_BUF: usize = 64 * 1024;

/// How long a node at its link cap waits for a referred peer to hang up.
const REFER_DRAIN: Duration = Duration::from_secs(1);

/// One connection, before and after its handshake.
pub(crate) struct PeerConnection {
    shared: Arc<Shared>,
    stream: TcpStream,
    conn_id: u64,
    /// The socket's remote address (an ephemeral port when the peer dialled us).
    remote: SocketAddr,
    direction: Direction,
    /// For dials: the address we dialled, for the address book's bookkeeping.
    dial_addr: Option<SocketAddr>,
    waiter: Option<DialWaiter>,
}

/// Why a connection ended, for the log and the `PeerDown` event.
enum Closed {
    /// A clean ending (LEAVE, EOF, local close): logged at info.
    Normal(String),
    /// The peer broke the protocol or the socket failed: logged as a warning.
    Fault(String),
}

impl PeerConnection {
    pub(crate) fn new(
        shared: Arc<Shared>,
        stream: TcpStream,
        conn_id: u64,
        remote: SocketAddr,
        direction: Direction,
        dial_addr: Option<SocketAddr>,
        waiter: Option<DialWaiter>,
    ) -> PeerConnection {
        PeerConnection {
            shared,
            stream,
            conn_id,
            remote,
            direction,
            dial_addr,
            waiter,
        }
    }

    /// Runs the connection to its end (the C++ `PeerConnection::run`). Always
    /// unregisters the socket and joins the writer before returning.
    pub(crate) fn run(mut self) {
        let handshake = self.handshake();
        if self.direction == Direction::Inbound {
            self.shared.end_pending();
        }
        match handshake {
            Ok(join) => self.run_link(join),
            Err(e) => {
                match &e {
                    Error::SelfDial(_) => log::debug!("{}: {e}", self.remote),
                    _ if !self.shared.is_running() => {}
                    _ => {
                        self.shared.count_handshake_failure();
                        log::warn!("{}: {e}", self.remote);
                    }
                }
                self.finish_dial(Err(e));
            }
        }
        let _ = self.stream.shutdown(Shutdown::Both);
        self.shared.table.lock().remove_conn(self.conn_id);
    }

    /// Exchanges JOINs. Both sides send first, so neither waits for the other.
    fn handshake(&mut self) -> Result<Join, Error> {
        let fail = |reason: String| Error::Handshake {
            addr: self.remote,
            reason,
        };
        if !self.shared.is_running() {
            return Err(fail("node is stopping".into()));
        }
        let cfg = &self.shared.config;
        let deadline = Instant::now() + cfg.handshake_timeout;
        let _ = self.stream.set_nodelay(true);
        self.stream
            .set_write_timeout(Some(cfg.handshake_timeout))
            .map_err(|e| fail(format!("cannot set timeout: {e}")))?;
        let ours = self.shared.join_message(self.remote.ip());
        self.stream
            .write_all(&ours.encode())
            .map_err(|e| fail(format!("cannot send JOIN: {e}")))?;

        let mut reader = DeadlineReader {
            stream: &self.stream,
            deadline,
        };
        let frame = match read_frame(&mut reader, MAX_JOIN_FRAME.min(cfg.max_frame)) {
            Ok(Some(f)) => f,
            Ok(None) => return Err(fail("closed before sending JOIN".into())),
            Err(DecodeError::Io(e)) if is_timeout(&e) => {
                return Err(fail(format!(
                    "no JOIN within {} ms",
                    cfg.handshake_timeout.as_millis()
                )))
            }
            Err(e) => return Err(fail(e.to_string())),
        };
        let join = match P2PMessage::decode(&frame) {
            Ok(P2PMessage::Join(j)) => j,
            Ok(other) => {
                return Err(fail(format!(
                    "expected JOIN, got {:?} first",
                    other.message_type()
                )))
            }
            Err(e) => return Err(fail(e.to_string())),
        };
        if join.version != PROTOCOL_VERSION {
            return Err(fail(format!(
                "protocol version {} (we speak {PROTOCOL_VERSION})",
                join.version
            )));
        }
        if join.network != cfg.network {
            return Err(fail(format!(
                "network {:?} (we are {:?})",
                join.network, cfg.network
            )));
        }
        if join.node_id == self.shared.id {
            return Err(Error::SelfDial(self.dial_addr.unwrap_or(self.remote)));
        }
        if join.listen_port == 0 {
            return Err(fail("listen port 0".into()));
        }
        Ok(join)
    }

    fn run_link(&mut self, join: Join) {
        let shared = Arc::clone(&self.shared);
        let ip = join.advertise.unwrap_or(self.remote.ip());
        let addr = SocketAddr::new(ip, join.listen_port);
        if let Some(observed) = join.observed {
            shared.set_observed_ip(observed);
        }
        let (stream_for_link, stream_for_writer, stream_for_reader) = match (
            self.stream.try_clone(),
            self.stream.try_clone(),
            self.stream.try_clone(),
        ) {
            (Ok(a), Ok(b), Ok(c)) => (a, b, c),
            _ => {
                self.finish_dial(Err(Error::Handshake {
                    addr,
                    reason: "cannot clone the socket".into(),
                }));
                return;
            }
        };
        // Both ends must compute the same key for this connection: the dialler's id
        // and the dialler's source port.
        let dial_key = match self.direction {
            Direction::Outbound => (shared.id, local_port(&self.stream)),
            Direction::Inbound => (join.node_id, self.remote.port()),
        };
        let outbox = Arc::new(Outbox::new(
            stream_for_writer,
            shared.config.queue_len,
            shared.epoch(),
        ));
        let link = Arc::new(Link::new(
            self.conn_id,
            join.node_id,
            addr,
            self.direction,
            dial_key,
            Arc::clone(&outbox),
            stream_for_link,
            shared.now_ms(),
        ));
        match shared.handle_join(Arc::clone(&link)) {
            HandleJoin::Linked => {}
            HandleJoin::Duplicate(existing) => {
                log::debug!("{addr}: duplicate connection, keeping the other one");
                self.finish_dial(Ok(existing.info()));
                // Deliver whatever the peer sent here before it saw the winner.
                shared.retire_duplicate(&link);
                self.read_loop(&link, stream_for_reader);
                return;
            }
            HandleJoin::Full(reason) => {
                log::info!("{addr}: link refused: {reason}");
                self.refer_elsewhere(addr);
                self.finish_dial(Err(Error::Handshake { addr, reason }));
                return;
            }
            HandleJoin::Refused(reason) => {
                log::warn!("{addr}: link refused: {reason}");
                self.finish_dial(Err(Error::Handshake { addr, reason }));
                return;
            }
        }
        let writer = spawn_named(format!("tx {addr}"), shared.config.thread_stack_size, {
            let outbox = Arc::clone(&outbox);
            move || outbox.run_writer()
        });
        let writer = match writer {
            Ok(h) => h,
            Err(e) => {
                log::error!("{addr}: cannot start the writer thread: {e}");
                shared.close_link(&link, "no writer thread");
                self.finish_dial(Err(Error::Thread(e)));
                return;
            }
        };
        self.finish_dial(Ok(link.info()));
        shared.send_peer_list(&link);

        let closed = self.read_loop(&link, stream_for_reader);
        let reason = match &closed {
            Closed::Normal(r) => {
                log::info!("{addr}: link closed: {r}");
                r.clone()
            }
            Closed::Fault(r) => {
                if shared.is_running() {
                    log::warn!("{addr}: closing link: {r}");
                }
                r.clone()
            }
        };
        shared.close_link(&link, &reason);
        // The writer stops once closed, or on the write error the shutdown causes.
        outbox.close();
        drop(link);
        if writer.join().is_err() {
            log::error!("{addr}: writer thread panicked");
        }
    }

    /// A node at its link cap still helps a joiner: it sends the addresses it knows and
    /// LEAVE (so the peer does not redial at once), half-closes, and reads until the
    /// peer hangs up (at most a second), so the goodbye is not lost to a reset.
    fn refer_elsewhere(&self, addr: SocketAddr) {
        let mut bytes = self.shared.peer_list(addr).encode();
        P2PMessage::Leave.encode_into(&mut bytes);
        if (&self.stream).write_all(&bytes).is_err() {
            return;
        }
        let _ = self.stream.shutdown(Shutdown::Write);
        let _ = self.stream.set_read_timeout(Some(REFER_DRAIN));
        let deadline = Instant::now() + REFER_DRAIN;
        let mut sink = [0u8; 4096];
        let mut s = &self.stream;
        while Instant::now() < deadline {
            match s.read(&mut sink) {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
        }
    }

    /// Reads frames until the link ends; returns why.
    fn read_loop(&self, link: &Arc<Link>, stream: TcpStream) -> Closed {
        let shared = &self.shared;
        // Heartbeats arrive every interval, so a read blocked far longer than the peer
        // timeout means the maintenance thread is not running; this is only a backstop.
        let _ = stream.set_read_timeout(Some(shared.config.peer_timeout * 4));
        // A peer that accepts no bytes for this long is dead or hostile; the writer's
        // error then closes the link.
        let _ = stream.set_write_timeout(Some(shared.config.peer_timeout * 2));
        let mut reader = BufReader::with_capacity(READ_BUF, stream);
        let mut frames: u32 = 0;
        loop {
            // The clock is read when a frame needs the socket, or every 64 frames
            // served from the buffer; not per frame.
            let from_socket = reader.buffer().is_empty();
            let frame = match read_frame_buffered(&mut reader, shared.config.max_frame) {
                Ok(Some(f)) => f,
                Ok(None) => return Closed::Normal("connection closed by peer".into()),
                Err(DecodeError::Io(e)) if !shared.is_running() => {
                    return Closed::Normal(format!("node stopping ({e})"))
                }
                Err(DecodeError::Io(e)) => return Closed::Fault(format!("read failed: {e}")),
                Err(e) => return Closed::Fault(e.to_string()),
            };
            frames = frames.wrapping_add(1);
            if from_socket || frames % 64 == 0 {
                link.last_seen_ms.store(shared.now_ms(), Ordering::Relaxed);
            }
            let msg = match P2PMessage::decode_owned(frame) {
                Ok(m) => m,
                Err(DecodeError::UnknownType(t)) => {
                    // Ignored, so a newer peer can add message types.
                    shared.count_ignored_frame(&format!(
                        "{}: ignoring frame of unknown type {t}",
                        link.addr
                    ));
                    continue;
                }
                Err(e) => return Closed::Fault(e.to_string()),
            };
            log::trace!("{}: received {:?}", link.addr, msg.message_type());
            let waited = match msg {
                P2PMessage::Join(_) => return Closed::Fault("second JOIN on a live link".into()),
                P2PMessage::Data { text } => shared.deliver(Event::Message {
                    from_id: link.node_id,
                    from: link.addr,
                    text,
                }),
                P2PMessage::Broadcast(b) => shared.handle_broadcast(b, link),
                P2PMessage::Ping { nonce } => {
                    let pong = P2PMessage::Pong { nonce }.encode();
                    if shared.queue_control(link, &pong) == Queued::PeerDropped {
                        return Closed::Fault("outbound queue full".into());
                    }
                    false
                }
                P2PMessage::Pong { nonce } => {
                    let now = shared.now_us();
                    if nonce <= now {
                        link.set_rtt(Duration::from_micros(now - nonce));
                    }
                    false
                }
                P2PMessage::Peers { addrs } => {
                    shared.learn_addrs(&addrs, link);
                    false
                }
                P2PMessage::IHave { ids } => {
                    shared.handle_ihave(&ids, link);
                    false
                }
                P2PMessage::Graft { ids } => {
                    shared.handle_graft(&ids, link);
                    false
                }
                P2PMessage::Prune { origin } => {
                    link.tree.lock().peer_pruned(origin);
                    false
                }
                P2PMessage::Leave => {
                    shared.defer_redial(&link.addr);
                    return Closed::Normal("left".into());
                }
            };
            if waited {
                // The application kept this reader waiting; the peer was not silent.
                link.last_seen_ms.store(shared.now_ms(), Ordering::Relaxed);
            }
        }
    }

    /// Reports the handshake outcome to a waiting `connect_to_peer` and updates the
    /// address book for dials.
    fn finish_dial(&mut self, result: Result<crate::PeerInfo, Error>) {
        if let Some(addr) = self.dial_addr {
            match &result {
                Err(Error::SelfDial(_)) => self.shared.mark_own_addr(addr),
                r => self.shared.dial_finished(addr, r.is_ok()),
            }
            // A second call must not count the dial twice.
            self.dial_addr = None;
        }
        if let Some(w) = self.waiter.take() {
            let _ = w.send(result);
        }
    }
}

/// A reader that fails with `TimedOut` once `deadline` passes, however the bytes trickle
/// in: a per-`read` timeout alone would let a peer sending one byte at a time hold the
/// handshake open forever.
struct DeadlineReader<'a> {
    stream: &'a TcpStream,
    deadline: Instant,
}

impl Read for DeadlineReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let left = self.deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "handshake deadline",
            ));
        }
        self.stream.set_read_timeout(Some(left))?;
        let mut s = self.stream;
        s.read(buf)
    }
}

fn is_timeout(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock
    )
}

fn local_port(stream: &TcpStream) -> u16 {
    stream.local_addr().map(|a| a.port()).unwrap_or(0)
}
