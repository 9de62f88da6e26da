//! Helpers shared by the integration tests: nodes on loopback that stop when dropped,
//! bounded waits (never a bare sleep before an assertion), and a raw TCP peer that
//! speaks the wire protocol by hand.
//!
//! Every wait here is bounded by a deadline, so a broken node fails a test instead of
//! hanging it.

// Each test binary compiles this module and uses a different part of it.
#![allow(dead_code)]

use std::io::{self, Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::ops::Deref;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use crossbeam_channel::{bounded, Receiver, RecvTimeoutError};
use p2p_overlay::p2p_message::{read_frame, Broadcast, Join, DEFAULT_MAX_FRAME, PROTOCOL_VERSION};
use p2p_overlay::{Config, Event, Identity, Node, NodeId, P2PMessage};

/// How long any single wait may take before the test gives up. Generous, because two
/// cores run many tests at once; a passing test never waits this long.
pub const DEADLINE: Duration = Duration::from_secs(15);

/// How long to keep listening when checking that something does *not* happen (a second
/// copy of a broadcast, a spurious `PeerDown`).
pub const QUIET: Duration = Duration::from_millis(500);

/// The network name nodes use unless a test sets another.
pub fn default_network() -> String {
    Config::default().network
}

pub fn localhost() -> IpAddr {
    IpAddr::V4(Ipv4Addr::LOCALHOST)
}

/// A running node and its event queue. Derefs to [`Node`]; dropping it stops the node.
pub struct TestNode {
    /// Shared with the thread that runs `stop`, so a hanging stop cannot hang a test.
    pub node: Arc<Node>,
    pub events: Receiver<Event>,
    /// Every event the helpers below have taken off the queue, in order.
    history: Mutex<Vec<Event>>,
}

/// Starts a node on 127.0.0.1 with an OS-chosen port, after `configure` has adjusted
/// the default config.
pub fn start_node(configure: impl FnOnce(&mut Config)) -> TestNode {
    let mut config = Config::new(localhost(), 0);
    configure(&mut config);
    let node = Arc::new(Node::start(config).expect("node starts"));
    let events = node.events();
    TestNode {
        node,
        events,
        history: Mutex::new(Vec::new()),
    }
}

/// A `configure` for [`start_node`]: plaintext links, for tests that speak the wire
/// protocol by hand ([`RawPeer`]) or check what plaintext nodes do.
pub fn plain(c: &mut Config) {
    c.encryption = p2p_overlay::Encryption::Plain;
}

/// Starts `n` nodes with the same configuration.
pub fn start_nodes(n: usize, configure: impl Fn(&mut Config)) -> Vec<TestNode> {
    (0..n).map(|_| start_node(&configure)).collect()
}

/// Like [`start_node`], with plaintext links: for tests that talk to the node
/// through a [`RawPeer`], which writes frames on a bare TCP socket. The frame rules
/// above the transport are the same on TLS links (tests/tls.rs covers TLS itself).
#[allow(dead_code)]
pub fn start_plain_node(configure: impl FnOnce(&mut Config)) -> TestNode {
    start_node(|c| {
        c.encryption = p2p_overlay::Encryption::Plain;
        configure(c)
    })
}

/// Like [`start_nodes`], with plaintext links (see [`start_plain_node`]).
#[allow(dead_code)]
pub fn start_plain_nodes(n: usize, configure: impl Fn(&mut Config)) -> Vec<TestNode> {
    (0..n).map(|_| start_plain_node(&configure)).collect()
}

impl Deref for TestNode {
    type Target = Node;
    fn deref(&self) -> &Node {
        &self.node
    }
}

impl Drop for TestNode {
    fn drop(&mut self) {
        self.stop();
    }
}

impl TestNode {
    /// The listen address: what other nodes dial and list this node by.
    pub fn addr(&self) -> SocketAddr {
        self.node.local_addr()
    }

    /// [`Node::stop`], failing the test if it does not return within [`DEADLINE`]
    /// (instead of hanging it).
    pub fn stop(&self) {
        let node = Arc::clone(&self.node);
        let (done_tx, done_rx) = bounded(1);
        thread::spawn(move || {
            node.stop();
            let _ = done_tx.send(());
        });
        if done_rx.recv_timeout(DEADLINE).is_err() && !thread::panicking() {
            panic!("Node::stop did not return within {DEADLINE:?}");
        }
    }

    /// Listen addresses of the current links.
    pub fn peer_addrs(&self) -> Vec<SocketAddr> {
        self.peers().into_iter().map(|p| p.addr).collect()
    }

    /// Ids of the current links.
    pub fn peer_ids(&self) -> Vec<NodeId> {
        self.peers().into_iter().map(|p| p.node_id).collect()
    }

    /// Whether this node has a link to `other`, by both id and listen address.
    pub fn is_linked_to(&self, other: &TestNode) -> bool {
        self.peers()
            .iter()
            .any(|p| p.node_id == other.id() && p.addr == other.addr())
    }

    /// Consumes events until one matches, for at most [`DEADLINE`].
    pub fn wait_for(&self, mut pred: impl FnMut(&Event) -> bool) -> Option<Event> {
        wait_for_event(&self.events, DEADLINE, |ev| {
            self.record(ev);
            pred(ev)
        })
    }

    /// Every event that arrives within `window`.
    pub fn events_within(&self, window: Duration) -> Vec<Event> {
        let got = collect_events(&self.events, window);
        got.iter().for_each(|ev| self.record(ev));
        got
    }

    /// Every event already queued, without waiting.
    pub fn pending_events(&self) -> Vec<Event> {
        let got: Vec<Event> = self.events.try_iter().collect();
        got.iter().for_each(|ev| self.record(ev));
        got
    }

    /// Every event taken off the queue so far by `wait_for`, `events_within` and
    /// `pending_events`, in order.
    pub fn history(&self) -> Vec<Event> {
        self.history.lock().expect("history lock").clone()
    }

    fn record(&self, ev: &Event) {
        self.history.lock().expect("history lock").push(ev.clone());
    }
}

/// Links `from` to `to` with `connect_to_peer` and waits until both list each other.
pub fn link(from: &TestNode, to: &TestNode) {
    from.connect_to_peer(to.addr())
        .unwrap_or_else(|e| panic!("{} cannot connect to {}: {e}", from.addr(), to.addr()));
    assert!(
        eventually(DEADLINE, || from.is_linked_to(to) && to.is_linked_to(from)),
        "{} and {} never listed each other",
        from.addr(),
        to.addr()
    );
}

/// Polls `cond` every 10 ms until it holds (`true`) or `timeout` passes (`false`).
pub fn eventually(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Receives events until one matches `pred` (returned) or `timeout` passes (`None`).
/// Events that do not match are consumed.
pub fn wait_for_event(
    rx: &Receiver<Event>,
    timeout: Duration,
    mut pred: impl FnMut(&Event) -> bool,
) -> Option<Event> {
    let deadline = Instant::now() + timeout;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(ev) if pred(&ev) => return Some(ev),
            Ok(_) => continue,
            Err(RecvTimeoutError::Timeout) | Err(RecvTimeoutError::Disconnected) => return None,
        }
    }
}

/// Every event that arrives within `window` (returns early only if the channel closes).
pub fn collect_events(rx: &Receiver<Event>, window: Duration) -> Vec<Event> {
    let deadline = Instant::now() + window;
    let mut got = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(ev) => got.push(ev),
            Err(_) => return got,
        }
    }
}

pub fn is_peer_down(ev: &Event, id: NodeId) -> bool {
    matches!(ev, Event::PeerDown { node_id, .. } if *node_id == id)
}

pub fn is_peer_up(ev: &Event, id: NodeId) -> bool {
    matches!(ev, Event::PeerUp(p) if p.node_id == id)
}

pub fn is_message(ev: &Event, text: &str) -> bool {
    matches!(ev, Event::Message { text: t, .. } if t == text)
}

pub fn is_broadcast_of(ev: &Event, text: &str) -> bool {
    matches!(ev, Event::Broadcast { text: t, .. } if t == text)
}

/// The reason of a `PeerDown` event.
pub fn down_reason(ev: &Event) -> String {
    match ev {
        Event::PeerDown { reason, .. } => reason.to_string(),
        other => panic!("expected PeerDown, got {other:?}"),
    }
}

/// A hand-driven peer: a plain TCP socket that sends and reads frames, so tests can
/// behave in ways a real node never would (stay silent, skip the JOIN, ...).
pub struct RawPeer {
    /// The id our JOIN announces: `identity.node_id()` unless a test chose another
    /// ([`join_with`](RawPeer::join_with)).
    pub id: NodeId,
    /// Our key, which signs the broadcasts we originate ([`broadcast`](RawPeer::broadcast)).
    pub identity: Identity,
    pub stream: TcpStream,
    /// Held open so the listen port announced in our JOIN belongs to us. It answers
    /// only dial-back probes (see [`ProbeAnswerer`]): a node that dials it for a link
    /// just waits for a JOIN that never comes.
    listener: TcpListener,
    answerer: ProbeAnswerer,
}

/// Answers the dial-back PROBE a plaintext node sends to the listen address a JOIN
/// claims, with a JOIN of the raw peer's current id, so raw peers are verified like
/// real nodes. Any other first frame (a real dial's JOIN, a TLS ClientHello) gets
/// nothing: that connection is held open, silent, until the peer is dropped.
struct ProbeAnswerer {
    /// The id the answer carries: the raw peer's, kept current by `join_msg`.
    id: Arc<AtomicU64>,
    /// The listener's address, to wake the blocked accept when dropped.
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<thread::JoinHandle<()>>,
}

impl ProbeAnswerer {
    fn start(listener: &TcpListener, id: NodeId) -> io::Result<ProbeAnswerer> {
        // A blocking accept (woken by a connection of our own when dropped): a probe
        // is answered at once, as a real node would, not after a polling interval.
        let listener = listener.try_clone()?;
        let addr = listener.local_addr()?;
        let id = Arc::new(AtomicU64::new(id.0));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = thread::spawn({
            let (id, stop) = (Arc::clone(&id), Arc::clone(&stop));
            move || {
                let mut held = Vec::new();
                while !stop.load(Ordering::Relaxed) {
                    let Ok((mut s, _)) = listener.accept() else {
                        thread::sleep(Duration::from_millis(5));
                        continue;
                    };
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
                    match read_frame(&mut s, DEFAULT_MAX_FRAME) {
                        Ok(Some(f)) if f == [10] => {
                            let join = P2PMessage::Join(Join {
                                version: PROTOCOL_VERSION,
                                node_id: NodeId(id.load(Ordering::Relaxed)),
                                listen_port: addr.port(),
                                network: default_network(),
                                advertise: None,
                                observed: None,
                            });
                            let _ = s.write_all(&join.encode());
                        }
                        _ => held.push(s),
                    }
                }
            }
        });
        Ok(ProbeAnswerer {
            id,
            addr,
            stop,
            thread: Some(thread),
        })
    }
}

impl Drop for ProbeAnswerer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        // Wakes the accept; if the connect fails the thread is left blocked (and
        // keeps the port) rather than hanging the test in `join`.
        if TcpStream::connect_timeout(&self.addr, Duration::from_secs(1)).is_ok() {
            if let Some(t) = self.thread.take() {
                let _ = t.join();
            }
        }
    }
}

impl RawPeer {
    /// Opens a TCP connection to `addr` without sending anything.
    pub fn connect(addr: SocketAddr) -> RawPeer {
        RawPeer::try_connect(addr).unwrap_or_else(|e| panic!("raw connect to {addr}: {e}"))
    }

    /// Like [`connect`](RawPeer::connect), returning the error instead of panicking.
    pub fn try_connect(addr: SocketAddr) -> io::Result<RawPeer> {
        let stream = TcpStream::connect_timeout(&addr, DEADLINE)?;
        stream.set_read_timeout(Some(DEADLINE))?;
        stream.set_write_timeout(Some(DEADLINE))?;
        let identity = Identity::generate();
        let id = identity.node_id();
        let listener = TcpListener::bind((localhost(), 0))?;
        let answerer = ProbeAnswerer::start(&listener, id)?;
        Ok(RawPeer {
            id,
            identity,
            stream,
            listener,
            answerer,
        })
    }

    /// Connects and completes the handshake as a well-behaved node of `network` would:
    /// sends a valid JOIN and reads the node's JOIN, which it returns.
    pub fn join(addr: SocketAddr, network: &str) -> (RawPeer, Join) {
        let mut peer = RawPeer::connect(addr);
        peer.send(&peer.join_msg(network));
        match peer.recv() {
            Some(P2PMessage::Join(j)) => (peer, j),
            other => panic!("expected the node's JOIN, got {other:?}"),
        }
    }

    /// The port our JOIN announces.
    pub fn listen_port(&self) -> u16 {
        self.listener.local_addr().expect("listener addr").port()
    }

    /// Our listen address, as a node lists us (127.0.0.1, or the source IP of
    /// [`connect_from`](RawPeer::connect_from)).
    pub fn listen_addr(&self) -> SocketAddr {
        self.listener.local_addr().expect("listener addr")
    }

    /// A valid JOIN for `network` with our id and listen port.
    pub fn join_msg(&self, network: &str) -> P2PMessage {
        self.answerer.id.store(self.id.0, Ordering::Relaxed);
        P2PMessage::Join(Join {
            version: PROTOCOL_VERSION,
            node_id: self.id,
            listen_port: self.listen_port(),
            network: network.to_string(),
            advertise: None,
            observed: None,
        })
    }

    /// A BROADCAST with us as its origin, signed with our key, as a node would send
    /// it (origin address: our listen address).
    pub fn broadcast(&self, seq: u64, hops: u8, text: &str) -> P2PMessage {
        P2PMessage::Broadcast(signed_broadcast(
            &self.identity,
            seq,
            hops,
            self.listen_addr(),
            text,
        ))
    }

    pub fn send(&mut self, msg: &P2PMessage) {
        self.stream.write_all(&msg.encode()).expect("raw send");
    }

    /// Reads the next frame, waiting at most [`DEADLINE`]. `None` if the node closed
    /// the connection (or the read failed).
    pub fn recv(&mut self) -> Option<P2PMessage> {
        self.stream
            .set_read_timeout(Some(DEADLINE))
            .expect("timeout");
        match read_frame(&mut self.stream, DEFAULT_MAX_FRAME) {
            Ok(Some(frame)) => Some(P2PMessage::decode(&frame).expect("node sends valid frames")),
            _ => None,
        }
    }

    /// Reads frames until one matches `pred`, for at most [`DEADLINE`].
    pub fn recv_until(&mut self, mut pred: impl FnMut(&P2PMessage) -> bool) -> Option<P2PMessage> {
        let deadline = Instant::now() + DEADLINE;
        while Instant::now() < deadline {
            match self.recv() {
                Some(m) if pred(&m) => return Some(m),
                Some(_) => continue,
                None => return None,
            }
        }
        None
    }

    /// Reads and discards whatever arrives until the node closes the connection
    /// (`true`: end of stream or reset) or `timeout` passes with it still open
    /// (`false`).
    pub fn closed_within(&mut self, timeout: Duration) -> bool {
        closed_within(&mut self.stream, timeout)
    }
}

/// See [`RawPeer::closed_within`].
pub fn closed_within(stream: &mut TcpStream, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    let mut buf = [0u8; 4096];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return false;
        }
        stream.set_read_timeout(Some(left)).expect("timeout");
        match stream.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                return false
            }
            Err(_) => return true, // reset: closed as well
        }
    }
}

// -------------------------------------------------------------------------------------
// Helpers for the hostile-input, abuse and fault suites (tests/hostile.rs, abuse.rs,
// faults.rs, memory.rs). Added, not changed: the helpers above are used as they are.
// -------------------------------------------------------------------------------------

impl RawPeer {
    /// Writes raw bytes. Returns the error instead of panicking: a node that refuses
    /// the bytes may have closed the connection (or reset it) before we finish.
    pub fn send_bytes(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.stream.write_all(bytes)?;
        self.stream.flush()
    }

    /// Connects and completes the handshake with a hand-made JOIN (any listen port,
    /// id, ...), returning the node's JOIN.
    pub fn join_with(addr: SocketAddr, join: Join) -> (RawPeer, Join) {
        let mut peer = RawPeer::connect(addr);
        peer.id = join.node_id;
        peer.answerer.id.store(join.node_id.0, Ordering::Relaxed);
        peer.send(&P2PMessage::Join(join));
        match peer.recv() {
            Some(P2PMessage::Join(j)) => (peer, j),
            other => panic!("expected the node's JOIN, got {other:?}"),
        }
    }

    /// Splits the peer into its connection and its listener, e.g. to free the listen
    /// port (drop the listener) while the link stays open.
    pub fn into_parts(self) -> (TcpStream, TcpListener) {
        let RawPeer {
            stream,
            listener,
            answerer,
            ..
        } = self;
        drop(answerer);
        (stream, listener)
    }

    /// Sends a PING and reads frames until the matching PONG: proof that the node
    /// still reads this link and still writes to it. `false` if the link closed.
    pub fn ping_pong(&mut self, nonce: u64) -> bool {
        if self
            .send_bytes(&P2PMessage::Ping { nonce }.encode())
            .is_err()
        {
            return false;
        }
        self.recv_until(|m| matches!(m, P2PMessage::Pong { nonce: n } if *n == nonce))
            .is_some()
    }
}

impl RawPeer {
    /// Like [`connect`](RawPeer::connect), but from source IP `src` (any 127.x.y.z
    /// reaches a loopback listener on Linux), so the node sees the connection come from
    /// `src`. The listener our JOIN announces is bound on `src` too.
    pub fn connect_from(src: IpAddr, addr: SocketAddr) -> RawPeer {
        RawPeer::try_connect_from(src, addr)
            .unwrap_or_else(|e| panic!("raw connect from {src} to {addr}: {e}"))
    }

    /// Like [`connect_from`](RawPeer::connect_from), returning the error instead of
    /// panicking.
    pub fn try_connect_from(src: IpAddr, addr: SocketAddr) -> io::Result<RawPeer> {
        use socket2::{Domain, Protocol, Socket, Type};
        let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
        socket.bind(&SocketAddr::new(src, 0).into())?;
        socket.connect_timeout(&addr.into(), DEADLINE)?;
        let stream = TcpStream::from(socket);
        stream.set_read_timeout(Some(DEADLINE))?;
        stream.set_write_timeout(Some(DEADLINE))?;
        let identity = Identity::generate();
        let id = identity.node_id();
        let listener = TcpListener::bind((src, 0))?;
        let answerer = ProbeAnswerer::start(&listener, id)?;
        Ok(RawPeer {
            id,
            identity,
            stream,
            listener,
            answerer,
        })
    }
}

/// A broadcast from `origin` (its id and its key), signed, as the origin's node
/// makes it. Change a field afterwards to make a forgery.
pub fn signed_broadcast(
    origin: &Identity,
    seq: u64,
    hops: u8,
    origin_addr: SocketAddr,
    text: &str,
) -> Broadcast {
    let mut b = Broadcast {
        origin: origin.node_id(),
        seq,
        hops,
        origin_addr,
        public_key: [0; 32],
        signature: [0; 64],
        text: text.to_string(),
    };
    b.sign(origin);
    b
}

/// A frame with an arbitrary type byte and body: length prefix (type + body), type,
/// body. Lets tests send what `P2PMessage::encode` never produces.
pub fn raw_frame(kind: u8, body: &[u8]) -> Vec<u8> {
    let len = u32::try_from(body.len() + 1).expect("frame fits a u32 length");
    let mut v = Vec::with_capacity(body.len() + 5);
    v.extend_from_slice(&len.to_be_bytes());
    v.push(kind);
    v.extend_from_slice(body);
    v
}

/// A small deterministic PRNG (xorshift64*), so "random" inputs are the same at every
/// run and a failure can be replayed from its seed.
pub struct XorShift(u64);

impl XorShift {
    pub fn new(seed: u64) -> XorShift {
        XorShift(seed.max(1))
    }

    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// A number in `0..n` (`n > 0`).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }

    pub fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next_u64() as u8).collect()
    }
}

/// A port that was free a moment ago on 127.0.0.1 (nobody listens on it now).
pub fn free_port() -> u16 {
    let l = TcpListener::bind((localhost(), 0)).expect("bind a free port");
    l.local_addr().expect("addr").port()
}

/// Resident memory of a process in KiB (`VmRSS` in `/proc/<pid>/status`), if readable.
pub fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// Path of the `p2p-node` binary Cargo built for these tests.
pub const NODE_BIN: &str = env!("CARGO_BIN_EXE_p2p-node");

/// A running `p2p-node` process on 127.0.0.1, owned by the test: dropping it kills it
/// by its PID (SIGCONT first, in case the test froze it) and reaps it, pass or fail.
/// Its stdout is read on a thread (so it never blocks on a full pipe) and kept.
pub struct NodeProcess {
    child: Option<std::process::Child>,
    pub id: NodeId,
    pub port: u16,
    stdout: Arc<Mutex<Vec<String>>>,
    /// Holds `XDG_STATE_HOME`, so nothing is ever written outside a temporary folder.
    _state: tempfile::TempDir,
}

impl NodeProcess {
    /// Starts `p2p-node 0 <extra...> --bind 127.0.0.1 --no-peers-file` and reads its
    /// first line (`node <id> listening on 127.0.0.1:<port>`) within [`DEADLINE`].
    pub fn start(extra: &[&str]) -> NodeProcess {
        let state = tempfile::tempdir().expect("temporary state folder");
        let mut args = vec!["0"];
        args.extend_from_slice(extra);
        args.extend_from_slice(&["--bind", "127.0.0.1", "--no-peers-file"]);
        let mut child = std::process::Command::new(NODE_BIN)
            .args(&args)
            .env_remove("RUST_LOG")
            .env("XDG_STATE_HOME", state.path())
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("spawn p2p-node");
        let out = child.stdout.take().expect("stdout piped");
        let stdout = Arc::new(Mutex::new(Vec::new()));
        let (first_tx, first_rx) = bounded(1);
        {
            let stdout = Arc::clone(&stdout);
            thread::spawn(move || {
                use std::io::BufRead;
                let mut first = Some(first_tx);
                for line in io::BufReader::new(out).lines() {
                    let Ok(line) = line else { break };
                    if let Some(tx) = first.take() {
                        let _ = tx.send(line.clone());
                    }
                    stdout.lock().expect("stdout lock").push(line);
                }
            });
        }
        register_child(child.id());
        let mut proc = NodeProcess {
            child: Some(child),
            id: NodeId(0),
            port: 0,
            stdout,
            _state: state,
        };
        let first = first_rx
            .recv_timeout(DEADLINE)
            .unwrap_or_else(|_| panic!("p2p-node {args:?} printed no first line"));
        let parsed = first.strip_prefix("node ").and_then(|rest| {
            let (id, rest) = rest.split_once(' ')?;
            let port = rest.strip_prefix("listening on 127.0.0.1:")?.parse().ok()?;
            Some((u64::from_str_radix(id, 16).ok()?, port))
        });
        let (id, port) = parsed.unwrap_or_else(|| panic!("bad first line {first:?}"));
        proc.id = NodeId(id);
        proc.port = port;
        proc
    }

    /// The listen address peers list it under.
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::new(localhost(), self.port)
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(|c| c.id()).unwrap_or(0)
    }

    /// Every stdout line so far.
    pub fn stdout(&self) -> Vec<String> {
        self.stdout.lock().expect("stdout lock").clone()
    }

    /// Writes one command line to its standard input (ignored if it already exited).
    pub fn send_line(&mut self, line: &str) {
        if let Some(stdin) = self.child.as_mut().and_then(|c| c.stdin.as_mut()) {
            let _ = stdin.write_all(format!("{line}\n").as_bytes());
            let _ = stdin.flush();
        }
    }

    /// Sends `signal` (`STOP`, `CONT`, `KILL`, ...) to this process only, by PID.
    pub fn signal(&self, signal: &str) {
        let pid = self.pid();
        if pid == 0 {
            return;
        }
        let st = std::process::Command::new("kill")
            .args([format!("-{signal}"), pid.to_string()])
            .stdin(std::process::Stdio::null())
            .status()
            .expect("run kill");
        assert!(st.success(), "kill -{signal} {pid} failed: {st}");
    }

    /// `kill -9` by PID and reap: the node dies without sending LEAVE.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill(); // SIGKILL to this PID
            let _ = child.wait();
            unregister_child(child.id());
        }
    }
}

impl Drop for NodeProcess {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // A stopped process dies from SIGKILL too; SIGCONT is only politeness.
            let _ = std::process::Command::new("kill")
                .args(["-CONT".to_string(), child.id().to_string()])
                .stdin(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .status();
            let _ = child.kill();
            let _ = child.wait();
            unregister_child(child.id());
        }
    }
}

/// Starts a node with exactly `config` (any port, e.g. one a stopped node used),
/// returning the start error instead of panicking.
pub fn try_start_node(config: Config) -> Result<TestNode, p2p_overlay::Error> {
    let node = Arc::new(Node::start(config)?);
    let events = node.events();
    Ok(TestNode {
        node,
        events,
        history: Mutex::new(Vec::new()),
    })
}

/// PIDs of the running [`NodeProcess`]es, so a [`watchdog`] that ends the test binary
/// can kill them first.
static CHILD_PIDS: Mutex<Vec<u32>> = Mutex::new(Vec::new());

fn register_child(pid: u32) {
    CHILD_PIDS
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .push(pid);
}

fn unregister_child(pid: u32) {
    CHILD_PIDS
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .retain(|p| *p != pid);
}

/// Ends the whole test binary (exit status 101) if it is still alive `limit` after
/// being armed, unless dropped first. Bounded waits cannot save a test from a node
/// that deadlocks: `peers()` or `info()` then block on the node's lock forever, and
/// so would the test. The watchdog turns that hang into a failure, after killing the
/// `p2p-node` processes the tests started (by PID).
pub struct Watchdog {
    _disarm: crossbeam_channel::Sender<()>,
}

pub fn watchdog(what: &str, limit: Duration) -> Watchdog {
    let (tx, rx) = bounded::<()>(0);
    let what = what.to_string();
    thread::spawn(move || {
        if let Err(RecvTimeoutError::Timeout) = rx.recv_timeout(limit) {
            // Straight to stderr: the test harness would capture `eprintln!`.
            let _ = writeln!(
                io::stderr(),
                "watchdog: {what} still running after {limit:?}; a node is probably \
                 deadlocked. Killing the test's processes and ending the test binary."
            );
            let pids = CHILD_PIDS.lock().unwrap_or_else(|e| e.into_inner()).clone();
            for pid in pids {
                let _ = std::process::Command::new("kill")
                    .args(["-9".to_string(), pid.to_string()])
                    .status();
            }
            std::process::exit(101);
        }
    });
    Watchdog { _disarm: tx }
}

/// The [`watchdog`] limit the hostile, abuse, fault and memory tests arm: far beyond
/// what a passing test takes (seconds), beyond what a failing one takes to report.
pub const WATCHDOG: Duration = Duration::from_secs(240);
