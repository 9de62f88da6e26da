//! `Node`: the public face of an overlay node, the Rust form of the C++ `Node` class
//! (`start`, `stop`, `connectToPeer`, `handleJoin`, `printPeers`, `removePeer`,
//! `sendDataToPeer`, `broadcastData`).
//!
//! `Node` is a handle; the state every thread shares lives in [`Shared`]:
//!
//! | field   | lock           | holds                                          |
//! |---------|----------------|------------------------------------------------|
//! | `table` | `Mutex`        | links, open sockets, connection threads, dials |
//! | `addrs` | `Mutex`        | known addresses and the node's own addresses   |
//! | `seen`  | `Mutex`        | broadcast ids already delivered                |
//! | `observed_ip` | `Mutex`  | the IP peers see this node at                  |
//! | `lazy`  | `Mutex`es inside | broadcast tree state (`lazy_push`)           |
//!
//! Lock order: there is none, because no code path holds two of these at once; each
//! guard is taken, used for a copy or an update, and dropped before the next lock, any
//! socket call or any blocking channel send. The C++ original held its one mutex while
//! connecting and while sending to every peer; that is exactly what this avoids.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{bounded, unbounded, Receiver, Sender};
use parking_lot::Mutex;

use crate::config::Config;
use crate::error::Error;
use crate::event::{Event, PeerInfo};
use crate::known_addrs::{is_dialable, AddrBook, KnownAddr};
use crate::lazy_push::{LazyPush, Reparent};
use crate::maintenance;
use crate::outbox::{Frame, Outbox, Push};
use crate::p2p_message::{
    Announcement, Broadcast, BroadcastId, Join, NodeId, P2PMessage, LEN_PREFIX, PROTOCOL_VERSION,
};
use crate::peer_cache;
use crate::peer_connection_factory::{spawn_named, PeerConnectionFactory};
use crate::peer_table::{Insert, Limits, Link, PeerTable, Retiring};
use crate::seen_cache::SeenCache;

/// Most addresses sent in one PEERS message.
const PEERS_PER_EXCHANGE: usize = 128;

/// How long a node waits before redialing a peer that said LEAVE (or that the user
/// disconnected): it is going away on purpose. A node that restarts dials us itself.
pub(crate) const LEAVE_REDIAL_DELAY: Duration = Duration::from_secs(60);

/// How long a connection that lost to a duplicate stays open for reading before we
/// half-close it: the peer may still be finishing the handshake of the winner, and
/// closing the loser first would make it report the link down and up again.
const DUPLICATE_LINGER: Duration = Duration::from_secs(1);

/// How long a relay waits for room in a neighbour's full queue before dropping it.
/// The relay's reader (and so what it forwards to others) waits meanwhile, but only
/// until the stall rule below recognises a peer that stopped reading.
const RELAY_WAIT: Duration = Duration::from_millis(200);

/// The longest a reader waits for the application to make room for one message
/// (never more than half the peer timeout); see [`Shared::deliver`].
const EVENT_WAIT: Duration = Duration::from_secs(1);

/// How long `stop` lets links close gracefully (LEAVE flushed, peer hangs up) before it
/// shuts every socket down.
const GRACEFUL_CLOSE: Duration = Duration::from_millis(300);

/// A running overlay node. Cheap to share between threads (`Send + Sync`); dropping it
/// stops it.
pub struct Node {
    shared: Arc<Shared>,
    events: Receiver<Event>,
    /// The acceptor and maintenance threads; `None` once stopped.
    threads: Mutex<Option<NodeThreads>>,
}

struct NodeThreads {
    acceptor: JoinHandle<()>,
    maintenance: JoinHandle<()>,
    /// Dropping it wakes the maintenance thread's `select!`.
    stop_maintenance: Sender<()>,
}

/// Counters and identity, for `info`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeInfo {
    /// This node's id.
    pub node_id: NodeId,
    /// The socket address the listener is bound to.
    pub local_addr: SocketAddr,
    /// The address this node believes peers know it by (advertise override, else the
    /// IP peers reported seeing, else the bind IP), with its listen port.
    pub advertised_addr: SocketAddr,
    /// The overlay's name.
    pub network: String,
    /// Live links.
    pub links: usize,
    /// Links the node dials towards.
    pub target_links: usize,
    /// Addresses in the address book.
    pub known_addrs: usize,
    /// Dials in progress.
    pub dialing: usize,
    /// Open sockets, including ones still in their handshake.
    pub connections: usize,
    /// Broadcasts delivered to the application (own ones excluded).
    pub broadcasts_delivered: u64,
    /// Broadcast copies dropped because they had been seen already.
    pub duplicates_dropped: u64,
    /// Broadcast frames queued for forwarding to neighbours (others' broadcasts, and
    /// broadcasts a neighbour asked for with GRAFT).
    pub frames_forwarded: u64,
    /// Every broadcast frame this node queued: its own broadcasts' copies plus
    /// `frames_forwarded`. Summed over an overlay, it equals deliveries plus
    /// duplicates once every copy has arrived.
    pub broadcast_frames_sent: u64,
    /// Broadcasts asked for with GRAFT because the tree did not bring them in time
    /// (a tree link or node failed, or the tree is still forming).
    pub grafts_sent: u64,
    /// Broadcast frames kept to answer GRAFTs (bounded: 4,096 frames, 16 MiB, 30 s).
    pub stored_broadcasts: usize,
    /// Peers dropped because their outbound queue stayed full.
    pub slow_peers_dropped: u64,
    /// Events dropped because the application did not consume them.
    pub events_dropped: u64,
    /// Broadcast ids in the seen-cache (bounded by `seen_cache_size`).
    pub seen_ids: usize,
    /// Accepted sockets closed at once because `max_pending_handshakes` were pending.
    pub refused_connections: u64,
    /// Handshakes refused for a link cap or an address held by a live peer.
    pub refused_links: u64,
    /// Connections closed during the handshake (timeout, bad or missing JOIN,
    /// wrong network or version, refusal).
    pub handshakes_failed: u64,
    /// Dials that failed to connect or to complete the handshake.
    pub dial_failures: u64,
    /// Accepted sockets in their handshake right now.
    pub pending_handshakes: usize,
    /// Frames ignored as the protocol says: unknown types, broadcasts whose hop
    /// count is out of range.
    pub frames_ignored: u64,
}

#[derive(Default)]
struct Stats {
    broadcasts_delivered: AtomicU64,
    duplicates_dropped: AtomicU64,
    frames_forwarded: AtomicU64,
    broadcast_frames_sent: AtomicU64,
    grafts_sent: AtomicU64,
    slow_peers_dropped: AtomicU64,
    events_dropped: AtomicU64,
    refused_connections: AtomicU64,
    refused_links: AtomicU64,
    handshakes_failed: AtomicU64,
    dial_failures: AtomicU64,
    frames_ignored: AtomicU64,
}

/// What [`Shared::queue_frame`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Queued {
    Yes,
    /// The queue was full: the peer was dropped as too slow.
    PeerDropped,
    /// The link is closing (its writer is gone); nothing to do.
    LinkClosing,
}

/// What `handle_join` decided for a connection that completed its handshake.
pub(crate) enum HandleJoin {
    Linked,
    /// Another connection to the same node wins; close this one.
    Duplicate(Arc<Link>),
    /// A link cap is reached: the peer is sent addresses to try instead.
    Full(String),
    Refused(String),
}

/// State shared by the node's threads. See the module doc for the locks.
pub(crate) struct Shared {
    pub(crate) config: Config,
    pub(crate) id: NodeId,
    pub(crate) local_addr: SocketAddr,
    running: AtomicBool,
    pub(crate) table: Mutex<PeerTable>,
    pub(crate) addrs: Mutex<AddrBook>,
    seen: Mutex<SeenCache>,
    observed_ip: Mutex<Option<IpAddr>>,
    events: Sender<Event>,
    /// Zero point of the millisecond and microsecond clocks stored in atomics.
    epoch: Instant,
    next_conn: AtomicU64,
    next_seq: AtomicU64,
    /// Accepted sockets still in their handshake (see `max_pending_handshakes`).
    pending_handshakes: std::sync::atomic::AtomicUsize,
    /// Eager and lazy push of broadcasts.
    pub(crate) lazy: LazyPush,
    stats: Stats,
}

impl Node {
    /// Binds `config.bind:config.port`, starts the acceptor and maintenance threads and
    /// returns at once (the C++ `Node(port)` followed by `start()`).
    ///
    /// Fails with `InvalidConfig` for out-of-range settings, `Bind` when the port is
    /// taken, `Thread` when the OS refuses a thread.
    pub fn start(config: Config) -> Result<Node, Error> {
        config.validate()?;
        let want = SocketAddr::new(config.bind, config.port);
        let listener =
            TcpListener::bind(want).map_err(|source| Error::Bind { addr: want, source })?;
        let local_addr = listener
            .local_addr()
            .map_err(|source| Error::Bind { addr: want, source })?;
        let (events_tx, events_rx) = unbounded();
        let mut addrs = AddrBook::new(config.max_known_addrs);
        for own in own_addrs(&config, local_addr) {
            addrs.add_own(own);
        }
        if let Some(path) = &config.peers_file {
            restore_peers_file(&mut addrs, path);
        }
        let (lazy, lazy_kick) = LazyPush::new();
        let shared = Arc::new(Shared {
            id: NodeId::random(),
            local_addr,
            running: AtomicBool::new(true),
            table: Mutex::new(PeerTable::default()),
            addrs: Mutex::new(addrs),
            seen: Mutex::new(SeenCache::new(
                config.seen_cache_size,
                config.seen_cache_ttl,
            )),
            observed_ip: Mutex::new(None),
            events: events_tx,
            epoch: Instant::now(),
            next_conn: AtomicU64::new(1),
            next_seq: AtomicU64::new(1),
            pending_handshakes: std::sync::atomic::AtomicUsize::new(0),
            lazy,
            stats: Stats::default(),
            config,
        });
        let stack = shared.config.thread_stack_size;
        let acceptor = {
            let shared = Arc::clone(&shared);
            spawn_named("accept".into(), stack, move || {
                accept_loop(shared, listener)
            })
            .map_err(Error::Thread)?
        };
        let (stop_maintenance, stop_rx) = bounded::<()>(0);
        let maintenance = {
            let shared = Arc::clone(&shared);
            spawn_named("maint".into(), stack, move || {
                maintenance::run(shared, stop_rx, lazy_kick)
            })
        };
        let maintenance = match maintenance {
            Ok(h) => h,
            Err(e) => {
                shared.running.store(false, Ordering::SeqCst);
                wake_acceptor(local_addr);
                let _ = acceptor.join();
                return Err(Error::Thread(e));
            }
        };
        log::info!("node {} listening on {local_addr}", shared.id);
        // Cached addresses are dialled at once, not on the first tick.
        shared.dial_more();
        Ok(Node {
            shared,
            events: events_rx,
            threads: Mutex::new(Some(NodeThreads {
                acceptor,
                maintenance,
                stop_maintenance,
            })),
        })
    }

    /// This node's random id.
    pub fn id(&self) -> NodeId {
        self.shared.id
    }

    /// The address the listener is bound to, with the real port when 0 was asked for.
    pub fn local_addr(&self) -> SocketAddr {
        self.shared.local_addr
    }

    /// The address peers are expected to list this node under.
    pub fn advertised_addr(&self) -> SocketAddr {
        self.shared.own_addr()
    }

    /// The node's events. Every clone shares one queue, so usually one consumer takes
    /// them all. Events pile up until someone receives them, up to
    /// `max_pending_events`; past that, readers wait for room, which slows the peers
    /// down, and drop (and count) a message only after a bounded wait.
    pub fn events(&self) -> Receiver<Event> {
        self.events.clone()
    }

    /// Links to the node at `addr` (its listen address), or returns the existing link.
    /// Blocks until the handshake is done or failed: at most the connect timeout plus
    /// the handshake timeout. The address is remembered and redialled if the link
    /// drops (the C++ `connectToPeer`).
    pub fn connect_to_peer(&self, addr: SocketAddr) -> Result<PeerInfo, Error> {
        let shared = &self.shared;
        if !shared.is_running() {
            return Err(Error::NotRunning);
        }
        if !is_dialable(&addr) {
            return Err(Error::BadAddress(format!("{addr} cannot be dialled")));
        }
        if addr == shared.local_addr || shared.addrs.lock().is_own(&addr) {
            return Err(Error::SelfDial(addr));
        }
        let existing = shared.table.lock().by_addr(&addr);
        if let Some(link) = existing {
            return Ok(link.info());
        }
        shared.addrs.lock().learn(addr, Instant::now());
        let wait = shared.config.connect_timeout + shared.config.handshake_timeout;
        let (tx, rx) = bounded(1);
        match PeerConnectionFactory::new(Arc::clone(shared)).dial(addr, Some(tx)) {
            Ok(()) => match rx.recv_timeout(wait + Duration::from_secs(1)) {
                Ok(result) => result,
                Err(_) => Err(Error::Handshake {
                    addr,
                    reason: "no answer in time".into(),
                }),
            },
            // Someone else (maintenance) is dialling it: wait for that dial's link.
            Err(Error::Handshake { .. }) => {
                let deadline = Instant::now() + wait;
                while Instant::now() < deadline {
                    let link = shared.table.lock().by_addr(&addr);
                    if let Some(link) = link {
                        return Ok(link.info());
                    }
                    if !shared.table.lock().dialing().contains(&addr) {
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(10));
                }
                Err(Error::Handshake {
                    addr,
                    reason: "the concurrent dial did not produce a link".into(),
                })
            }
            Err(e) => Err(e),
        }
    }

    /// Sends `text` to the peer listening at `addr`, dialling it first if there is no
    /// link (the C++ `sendDataToPeer`). Returns once the message is queued on the link;
    /// if the queue stays full for the peer timeout, the peer is dropped and
    /// `PeerTooSlow` returned, so one stuck peer cannot hold the caller forever.
    pub fn send_data_to_peer(&self, addr: SocketAddr, text: &str) -> Result<(), Error> {
        self.shared.check_frame_len(1 + text.len())?;
        let frame = Frame::Owned(P2PMessage::encode_data(text));
        let link = self.shared.table.lock().by_addr(&addr);
        let link = match link {
            Some(l) => l,
            None => {
                let info = self.connect_to_peer(addr)?;
                let link = self.shared.table.lock().get(info.node_id);
                link.ok_or(Error::LinkClosed(addr))?
            }
        };
        self.shared.send_blocking(&link, frame)
    }

    /// Sends `text` to every node of the overlay (the C++ `broadcastData`, which only
    /// reached direct peers), along the broadcast tree (see the `lazy_push` module).
    /// Returns the number of neighbours it was sent or announced to; 0 means no node
    /// will receive it.
    pub fn broadcast_data(&self, text: &str) -> Result<usize, Error> {
        let shared = &self.shared;
        if !shared.is_running() {
            return Err(Error::NotRunning);
        }
        let b = Broadcast {
            origin: shared.id,
            seq: shared.next_seq.fetch_add(1, Ordering::Relaxed),
            hops: 1,
            origin_addr: shared.own_addr(),
            text: text.to_string(),
        };
        let id = (b.origin, b.seq);
        shared.seen.lock().insert(id, Instant::now());
        let frame = shared.checked_frame(&P2PMessage::Broadcast(b))?;
        shared.lazy.have(id, Some(&frame), 0, None);
        // The application waits (up to the peer timeout) for room on a full link, and
        // the peer is dropped if it stays stuck; see `spread`.
        let (eager, lazy) = shared.spread(id, 0, &frame, None, shared.config.peer_timeout);
        Ok(eager + lazy)
    }

    /// The live links (the C++ `printPeers`, minus the printing).
    pub fn peers(&self) -> Vec<PeerInfo> {
        let links = self.shared.table.lock().links();
        let mut v: Vec<PeerInfo> = links.iter().map(|l| l.info()).collect();
        v.sort_by_key(|p| p.addr);
        v
    }

    /// Every address in the address book.
    pub fn known_addrs(&self) -> Vec<KnownAddr> {
        self.shared.addrs.lock().entries()
    }

    /// Removes `addr` from the address book so it is not dialled again (a live link to
    /// it stays up). Returns `false` if it was not known.
    pub fn forget_addr(&self, addr: SocketAddr) -> bool {
        self.shared.addrs.lock().remove(&addr)
    }

    /// Closes the link to the peer at `addr`, sending it LEAVE first (the C++
    /// `removePeer`). Returns `false` if there was no such link. The address stays
    /// known, so automatic dialing may link it again later.
    pub fn remove_peer(&self, addr: SocketAddr) -> bool {
        let link = self.shared.table.lock().by_addr(&addr);
        match link {
            Some(link) => {
                self.shared.leave_link(&link, "removed locally");
                self.shared.defer_redial(&link.addr);
                true
            }
            None => false,
        }
    }

    /// Identity and counters.
    pub fn info(&self) -> NodeInfo {
        let s = &self.shared;
        let (links, dialing, connections) = {
            let t = s.table.lock();
            (t.len(), t.dialing().len(), t.conn_count())
        };
        let known_addrs = s.addrs.lock().len();
        let seen_ids = s.seen.lock().len();
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        NodeInfo {
            node_id: s.id,
            local_addr: s.local_addr,
            advertised_addr: s.own_addr(),
            network: s.config.network.clone(),
            links,
            target_links: s.config.target_links,
            known_addrs,
            dialing,
            connections,
            broadcasts_delivered: load(&s.stats.broadcasts_delivered),
            duplicates_dropped: load(&s.stats.duplicates_dropped),
            frames_forwarded: load(&s.stats.frames_forwarded),
            broadcast_frames_sent: load(&s.stats.broadcast_frames_sent),
            grafts_sent: load(&s.stats.grafts_sent),
            stored_broadcasts: s.lazy.stored(),
            slow_peers_dropped: load(&s.stats.slow_peers_dropped),
            events_dropped: load(&s.stats.events_dropped),
            seen_ids,
            refused_connections: load(&s.stats.refused_connections),
            refused_links: load(&s.stats.refused_links),
            handshakes_failed: load(&s.stats.handshakes_failed),
            dial_failures: load(&s.stats.dial_failures),
            frames_ignored: load(&s.stats.frames_ignored),
            pending_handshakes: s.pending_handshakes.load(Ordering::Relaxed),
        }
    }

    /// Whether `stop` has not been called yet.
    pub fn is_running(&self) -> bool {
        self.shared.is_running()
    }

    /// Sends LEAVE on every link, closes every socket and joins every thread the node
    /// started. Idempotent; returns within about half a second plus the time a
    /// thread needs to notice its socket closed.
    pub fn stop(&self) {
        let Some(threads) = self.threads.lock().take() else {
            return;
        };
        let shared = &self.shared;
        shared.running.store(false, Ordering::SeqCst);
        log::info!("node {} stopping", shared.id);

        drop(threads.stop_maintenance);
        if threads.maintenance.join().is_err() {
            log::error!("maintenance thread panicked");
        }
        wake_acceptor(shared.local_addr);
        if threads.acceptor.join().is_err() {
            log::error!("acceptor thread panicked");
        }

        let links = shared.table.lock().drain_links();
        for link in &links {
            send_leave(link);
            shared.emit_peer_down(link, "node stopped");
        }
        drop(links);
        // Duplicates being wound down are half-closed now rather than after their
        // linger, so the graceful wait below is not spent waiting for them.
        let retiring = shared.table.lock().drain_retiring();
        for r in retiring {
            match r.outbox {
                Some(outbox) => outbox.close(),
                None => {
                    let _ = r.stream.shutdown(std::net::Shutdown::Write);
                }
            }
        }

        let deadline = Instant::now() + GRACEFUL_CLOSE;
        while Instant::now() < deadline && shared.table.lock().threads_running() > 0 {
            std::thread::sleep(Duration::from_millis(5));
        }
        let streams = shared.table.lock().conn_streams();
        for s in streams {
            let _ = s.shutdown(std::net::Shutdown::Both);
        }
        loop {
            let handles = shared.table.lock().take_threads(true);
            if handles.is_empty() {
                break;
            }
            for h in handles {
                if h.join().is_err() {
                    log::error!("a connection thread panicked");
                }
            }
        }
        shared.save_peers_file();
        log::info!("node {} stopped", shared.id);
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Queues LEAVE on `link` and closes it, so its writer flushes what is queued, says
/// goodbye and half-closes; a link whose queue is full is shut down instead.
fn send_leave(link: &Link) {
    if !link.outbox.leave(P2PMessage::Leave.encode()) {
        let _ = link.stream.shutdown(std::net::Shutdown::Both);
    }
}

/// Parses `host:port` (a name is resolved), for the CLI and embedders that hold
/// addresses as text. An IPv4 result is preferred, since that is what `peers` lists on
/// a typical LAN.
pub fn resolve_peer_addr(s: &str) -> Result<SocketAddr, Error> {
    if let Ok(a) = s.parse::<SocketAddr>() {
        return Ok(a);
    }
    if !s.contains(':') {
        return Err(Error::BadAddress(format!("{s:?} has no port (host:port)")));
    }
    let addrs: Vec<SocketAddr> = s
        .to_socket_addrs()
        .map_err(|e| Error::BadAddress(format!("cannot resolve {s:?}: {e}")))?
        .collect();
    addrs
        .iter()
        .find(|a| a.is_ipv4())
        .or(addrs.first())
        .copied()
        .ok_or_else(|| Error::BadAddress(format!("{s:?} resolves to no address")))
}

/// Loads the peers file into the address book. Nothing here stops the node: a
/// missing or unusable file is a warning, and the node starts with an empty book.
fn restore_peers_file(book: &mut AddrBook, path: &std::path::Path) {
    match peer_cache::load(path) {
        Ok(loaded) => {
            for (line, why) in &loaded.skipped {
                log::warn!("{}:{line}: skipped: {why}", path.display());
            }
            let n = book.restore(&loaded.addrs, Instant::now());
            log::info!("restored {n} addresses from {}", path.display());
        }
        Err(e) => log::warn!("{e}; starting without cached peers"),
    }
}

/// Addresses that reach this node itself, so it never stores or dials them.
fn own_addrs(config: &Config, local: SocketAddr) -> Vec<SocketAddr> {
    let port = local.port();
    let mut v = vec![local];
    if local.ip().is_unspecified() {
        v.push(SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port));
        v.push(SocketAddr::new(IpAddr::V6(Ipv6Addr::LOCALHOST), port));
    }
    if let Some(a) = config.advertise {
        v.push(a);
    }
    v
}

/// Where to connect to reach our own listener (an unspecified bind IP is reached on
/// loopback).
fn wake_addr(local: SocketAddr) -> SocketAddr {
    match local.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => (Ipv4Addr::LOCALHOST, local.port()).into(),
        IpAddr::V6(ip) if ip.is_unspecified() => (Ipv6Addr::LOCALHOST, local.port()).into(),
        _ => local,
    }
}

/// Unblocks `accept()` by connecting to ourselves, after `running` was cleared.
fn wake_acceptor(local: SocketAddr) {
    let _ = TcpStream::connect_timeout(&wake_addr(local), Duration::from_secs(1));
}

/// The acceptor thread: hands every accepted socket to the factory (the C++
/// `Poco::Net::TCPServer`).
fn accept_loop(shared: Arc<Shared>, listener: TcpListener) {
    let factory = PeerConnectionFactory::new(Arc::clone(&shared));
    for stream in listener.incoming() {
        if !shared.is_running() {
            break;
        }
        match stream {
            Ok(s) => {
                // Refused sockets are dropped, i.e. closed, right here.
                if !shared.admit_pending() {
                    continue;
                }
                match s.peer_addr() {
                    Ok(remote) => factory.create_connection(s, remote),
                    Err(e) => {
                        shared.end_pending();
                        log::debug!("accepted socket has no peer address: {e}");
                    }
                }
            }
            Err(e) => {
                // Out of file descriptors and similar: back off instead of spinning.
                log::warn!("accept failed: {e}");
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }
}

impl Shared {
    pub(crate) fn is_running(&self) -> bool {
        self.running.load(Ordering::SeqCst)
    }

    pub(crate) fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    pub(crate) fn now_us(&self) -> u64 {
        self.epoch.elapsed().as_micros() as u64
    }

    pub(crate) fn epoch(&self) -> Instant {
        self.epoch
    }

    pub(crate) fn next_conn_id(&self) -> u64 {
        self.next_conn.fetch_add(1, Ordering::Relaxed)
    }

    /// Our JOIN for a connection whose other end is at `remote_ip`.
    pub(crate) fn join_message(&self, remote_ip: IpAddr) -> P2PMessage {
        let port = match self.config.advertise {
            Some(a) => a.port(),
            None => self.local_addr.port(),
        };
        // A node bound to one IP can only be reached there, whatever source IP its
        // outgoing connections happen to use, so it announces that IP.
        let bound = Some(self.local_addr.ip()).filter(|ip| !ip.is_unspecified());
        P2PMessage::Join(Join {
            version: PROTOCOL_VERSION,
            node_id: self.id,
            listen_port: port,
            network: self.config.network.clone(),
            advertise: self.config.advertise.map(|a| a.ip()).or(bound),
            observed: Some(remote_ip),
        })
    }

    /// A peer told us the IP it sees us at; it names our broadcasts' origin.
    pub(crate) fn set_observed_ip(&self, ip: IpAddr) {
        if ip.is_unspecified() || self.config.advertise.is_some() {
            return;
        }
        *self.observed_ip.lock() = Some(ip);
        self.addrs
            .lock()
            .add_own(SocketAddr::new(ip, self.local_addr.port()));
    }

    /// The address peers know this node by.
    pub(crate) fn own_addr(&self) -> SocketAddr {
        if let Some(a) = self.config.advertise {
            return a;
        }
        let observed = *self.observed_ip.lock();
        let ip = observed.unwrap_or(wake_addr(self.local_addr).ip());
        SocketAddr::new(ip, self.local_addr.port())
    }

    /// Encodes `msg` once, refusing it if it exceeds the frame limit.
    fn checked_frame(&self, msg: &P2PMessage) -> Result<Arc<[u8]>, Error> {
        self.check_frame_len(msg.encoded_len() - LEN_PREFIX)?;
        Ok(msg.encode().into())
    }

    /// Refuses a frame (length prefix value `len`) above the frame limit.
    fn check_frame_len(&self, len: usize) -> Result<(), Error> {
        if len > self.config.max_frame as usize {
            return Err(Error::MessageTooLarge {
                len,
                max: self.config.max_frame,
            });
        }
        Ok(())
    }

    /// Hands an event to the application, or counts it as dropped when the application
    /// has let `max_pending_events` pile up. Never blocks: for link state changes,
    /// which the maintenance thread and `stop` report too.
    pub(crate) fn emit(&self, ev: Event) {
        if self.events.len() >= self.config.max_pending_events {
            self.drop_event();
            return;
        }
        let _ = self.events.send(ev);
    }

    /// Hands a message that arrived on a link to the application. When the application
    /// is `max_pending_events` behind, the calling reader waits for room instead of
    /// dropping it: it stops reading, so TCP slows the sender down to the pace of the
    /// application. It waits at most [`EVENT_WAIT`] per message, then drops it and
    /// counts it: an application that stopped consuming must not stop the node.
    ///
    /// Returns whether it had to wait: the reader then counts its peer as heard from
    /// just now, since the silence was its own.
    pub(crate) fn deliver(&self, ev: Event) -> bool {
        let full = || self.events.len() >= self.config.max_pending_events;
        let waited = full();
        if waited {
            let deadline = Instant::now() + self.event_wait();
            let mut pause = Duration::from_micros(50);
            while full() {
                if Instant::now() >= deadline || !self.is_running() {
                    self.drop_event();
                    return true;
                }
                std::thread::sleep(pause);
                pause = (pause * 2).min(Duration::from_millis(5));
            }
        }
        let _ = self.events.send(ev);
        waited
    }

    /// Half the peer timeout: a reader waiting this long per message still reads often
    /// enough that its own peer is not taken for dead.
    fn event_wait(&self) -> Duration {
        (self.config.peer_timeout / 2).min(EVENT_WAIT)
    }

    fn drop_event(&self) {
        let n = self.stats.events_dropped.fetch_add(1, Ordering::Relaxed);
        if n % 10_000 == 0 {
            log::warn!(
                "event queue full: the application is not consuming events ({} dropped)",
                n + 1
            );
        }
    }

    /// Registers a link that completed its handshake (the C++ `handleJoin`, which the
    /// original never called).
    pub(crate) fn handle_join(&self, link: Arc<Link>) -> HandleJoin {
        if !self.is_running() {
            return HandleJoin::Refused("node is stopping".into());
        }
        // A link silent for two heartbeats may belong to a node that is gone.
        let stale_ms = 2 * self.config.heartbeat_interval.as_millis() as u64;
        let stale_before = self.now_ms().saturating_sub(stale_ms);
        let outcome = self
            .table
            .lock()
            .insert(Arc::clone(&link), self.limits(), stale_before);
        match outcome {
            Insert::Added { replaced } => {
                let mut same_node = false;
                for old in replaced {
                    if old.node_id == link.node_id {
                        same_node = true;
                        self.retire_replaced(&old);
                    } else {
                        let _ = old.stream.shutdown(std::net::Shutdown::Both);
                        log::info!(
                            "{}: node {} replaced by node {} on the same address",
                            old.addr,
                            old.node_id,
                            link.node_id
                        );
                        self.emit_peer_down(&old, "replaced by a new node on the same address");
                    }
                }
                self.addrs.lock().mark_success(link.addr, Instant::now());
                if !same_node {
                    log::info!(
                        "link up: {} ({}, {})",
                        link.addr,
                        link.node_id,
                        link.direction.as_str()
                    );
                    self.emit(Event::PeerUp(link.info()));
                }
                HandleJoin::Linked
            }
            Insert::Kept(existing) => HandleJoin::Duplicate(existing),
            Insert::Full => {
                self.stats.refused_links.fetch_add(1, Ordering::Relaxed);
                HandleJoin::Full(format!(
                    "link limit reached ({} links, at most {} inbound)",
                    self.config.max_links, self.config.max_inbound_links
                ))
            }
            Insert::AddressTaken => {
                self.stats.refused_links.fetch_add(1, Ordering::Relaxed);
                HandleJoin::Refused(format!(
                    "{} is linked to another node that is alive",
                    link.addr
                ))
            }
        }
    }

    fn limits(&self) -> Limits {
        Limits {
            max_links: self.config.max_links,
            max_inbound: self.config.max_inbound_links,
        }
    }

    /// Counts an accepted socket as a pending handshake; `false` (and counted as
    /// refused) when `max_pending_handshakes` are pending already.
    pub(crate) fn admit_pending(&self) -> bool {
        let before = self.pending_handshakes.fetch_add(1, Ordering::SeqCst);
        if before < self.config.max_pending_handshakes {
            return true;
        }
        self.pending_handshakes.fetch_sub(1, Ordering::SeqCst);
        let n = self
            .stats
            .refused_connections
            .fetch_add(1, Ordering::Relaxed);
        if n % 1000 == 0 {
            log::warn!(
                "{} handshakes pending: refusing new connections ({} refused so far)",
                self.config.max_pending_handshakes,
                n + 1
            );
        }
        false
    }

    /// An admitted connection finished its handshake, or failed it.
    pub(crate) fn end_pending(&self) {
        self.pending_handshakes.fetch_sub(1, Ordering::SeqCst);
    }

    /// Counts a frame the protocol says to ignore (unknown type, hop count out of
    /// range). The first and every 1000th is logged, so a peer cannot flood the log.
    pub(crate) fn count_ignored_frame(&self, why: &str) {
        let n = self.stats.frames_ignored.fetch_add(1, Ordering::Relaxed);
        if n % 1000 == 0 {
            log::warn!("{why} ({} frames ignored so far)", n + 1);
        }
    }

    /// A handshake failed (timeout, bad JOIN, refusal).
    pub(crate) fn count_handshake_failure(&self) {
        self.stats.handshakes_failed.fetch_add(1, Ordering::Relaxed);
    }

    /// Winds down a link that a better duplicate connection to the same node replaced.
    /// After [`DUPLICATE_LINGER`] its writer flushes what was queued (a sender may
    /// have picked the link just before it was replaced) and half-closes; until the
    /// peer closes too, its reader goes on delivering.
    fn retire_replaced(&self, old: &Link) {
        self.add_retiring(old, Some(Arc::clone(&old.outbox)));
    }

    /// Winds down a new connection that lost to the existing link: it is read until the
    /// peer closes it, and half-closed by us after [`DUPLICATE_LINGER`].
    pub(crate) fn retire_duplicate(&self, conn: &Link) {
        self.add_retiring(conn, None);
    }

    /// The linger gives the peer time to finish the winning handshake before it sees
    /// this connection end; otherwise it would report the link down and up again.
    /// Whatever happens, the connection is shut after the handshake timeout more.
    fn add_retiring(&self, link: &Link, outbox: Option<Arc<Outbox>>) {
        let Ok(stream) = link.stream.try_clone() else {
            let _ = link.stream.shutdown(std::net::Shutdown::Both);
            return;
        };
        let half_close_at = Instant::now() + DUPLICATE_LINGER;
        self.table.lock().add_retiring(Retiring {
            conn_id: link.conn_id,
            stream,
            outbox,
            half_close_at: Some(half_close_at),
            give_up_at: half_close_at + self.config.handshake_timeout,
        });
    }

    /// Removes `link` from the table (if it is still the current link to that node),
    /// reports `PeerDown`, and shuts the socket so both its threads end.
    pub(crate) fn close_link(&self, link: &Link, reason: &str) {
        self.unlink(link, reason);
        let _ = link.stream.shutdown(std::net::Shutdown::Both);
    }

    /// Closes `link` politely: LEAVE, then a half-close once it is written.
    pub(crate) fn leave_link(&self, link: &Link, reason: &str) {
        self.unlink(link, reason);
        send_leave(link);
    }

    /// Removes `link` from the table if it is still the current link to its node, and
    /// reports `PeerDown` only then (a retired duplicate ending is no news).
    fn unlink(&self, link: &Link, reason: &str) {
        let removed = self.table.lock().remove(link.node_id, link.conn_id);
        if removed.is_some() {
            self.emit_peer_down(link, reason);
        }
    }

    fn emit_peer_down(&self, link: &Link, reason: &str) {
        self.emit(Event::PeerDown {
            node_id: link.node_id,
            addr: link.addr,
            reason: reason.to_string(),
        });
    }

    /// Queues a data frame for the node's own threads (forwarded broadcasts), waiting
    /// at most [`RELAY_WAIT`] for room; see [`Shared::queue_with_backpressure`].
    pub(crate) fn queue_frame(&self, link: &Link, frame: Arc<[u8]>) -> Queued {
        self.queue_with_backpressure(link, Frame::Shared(frame), RELAY_WAIT)
    }

    /// Queues a data frame on `link`. A full queue is one of two things:
    /// - the peer is reading, just not as fast as frames come (a burst, a busy
    ///   machine): wait up to `max_wait` for room, which slows the sender down the way
    ///   TCP would;
    /// - the peer stopped reading: its writer has been stuck inside one write for the
    ///   peer timeout (on a loaded machine a reading peer can pause for a second or
    ///   two; one that accepts nothing for the peer timeout is as good as gone).
    ///   Then the peer is dropped at once, without waiting, so it delays nobody.
    ///
    /// A peer whose queue stays full for all of `max_wait` is dropped too.
    fn queue_with_backpressure(&self, link: &Link, frame: Frame, max_wait: Duration) -> Queued {
        match link
            .outbox
            .push_data(frame, max_wait, self.config.peer_timeout)
        {
            Push::Queued => Queued::Yes,
            Push::Closed => Queued::LinkClosing,
            Push::Full => {
                self.drop_slow_peer(link);
                Queued::PeerDropped
            }
        }
    }

    /// Queues a control frame (PING, PONG, PEERS) on its own queue. Full means the peer
    /// has left thousands of them unread: it is dropped.
    pub(crate) fn queue_control(&self, link: &Link, frame: &[u8]) -> Queued {
        match link.outbox.push_control(frame) {
            Push::Queued => Queued::Yes,
            Push::Full => {
                self.drop_slow_peer(link);
                Queued::PeerDropped
            }
            Push::Closed => Queued::LinkClosing,
        }
    }

    /// Queues a frame for the application, waiting up to the peer timeout for room:
    /// backpressure for a caller sending faster than the link carries, but a peer
    /// that stays stuck is dropped.
    fn send_blocking(&self, link: &Link, frame: Frame) -> Result<(), Error> {
        match self.queue_with_backpressure(link, frame, self.config.peer_timeout) {
            Queued::Yes => Ok(()),
            Queued::PeerDropped => Err(Error::PeerTooSlow(link.addr)),
            Queued::LinkClosing => Err(Error::LinkClosed(link.addr)),
        }
    }

    fn drop_slow_peer(&self, link: &Link) {
        log::warn!(
            "{}: outbound queue full ({} frames), dropping the peer",
            link.addr,
            self.config.queue_len
        );
        self.stats
            .slow_peers_dropped
            .fetch_add(1, Ordering::Relaxed);
        self.close_link(link, "outbound queue full");
    }

    /// Sends `link` the addresses we know: our other links first, then healthy known
    /// addresses.
    pub(crate) fn send_peer_list(&self, link: &Link) {
        let frame = self.peer_list(link.addr).encode();
        self.queue_control(link, &frame);
    }

    /// The PEERS message for the node at `to`: our links first, then healthy known
    /// addresses, at most [`PEERS_PER_EXCHANGE`], never `to` itself.
    pub(crate) fn peer_list(&self, to: SocketAddr) -> P2PMessage {
        let mut addrs: Vec<SocketAddr> = {
            let t = self.table.lock();
            t.linked_addrs().into_iter().filter(|a| *a != to).collect()
        };
        if addrs.len() < PEERS_PER_EXCHANGE {
            let more = self.addrs.lock().healthy(PEERS_PER_EXCHANGE);
            for a in more {
                if addrs.len() >= PEERS_PER_EXCHANGE {
                    break;
                }
                if a != to && !addrs.contains(&a) {
                    addrs.push(a);
                }
            }
        }
        addrs.truncate(PEERS_PER_EXCHANGE);
        P2PMessage::Peers { addrs }
    }

    /// Adds addresses from a peer's PEERS message, then dials if links are missing.
    pub(crate) fn learn_addrs(self: &Arc<Self>, addrs: &[SocketAddr], from: &Link) {
        let now = Instant::now();
        let new = {
            let mut book = self.addrs.lock();
            addrs.iter().filter(|a| book.learn(**a, now)).count()
        };
        log::debug!(
            "{}: peer list of {} addresses, {new} new",
            from.addr,
            addrs.len()
        );
        if new > 0 {
            self.dial_more();
        }
    }

    /// Starts dials towards `target_links` from the address book.
    pub(crate) fn dial_more(self: &Arc<Self>) {
        if !self.config.auto_dial || !self.is_running() {
            return;
        }
        let (need, skip) = {
            let t = self.table.lock();
            let busy = t.len() + t.dialing().len();
            let need = self.config.target_links.saturating_sub(busy);
            if need == 0 {
                return;
            }
            let mut skip = t.linked_addrs();
            skip.extend(t.dialing().iter().copied());
            (need, skip)
        };
        let candidates = self
            .addrs
            .lock()
            .dial_candidates(Instant::now(), &skip, need);
        for addr in candidates {
            log::debug!("dialing {addr}");
            if let Err(e) = PeerConnectionFactory::new(Arc::clone(self)).dial(addr, None) {
                log::debug!("dial {addr} not started: {e}");
            }
        }
    }

    /// Bookkeeping at the end of a dial.
    pub(crate) fn dial_finished(&self, addr: SocketAddr, ok: bool) {
        self.table.lock().end_dial(&addr);
        let mut book = self.addrs.lock();
        // Success was recorded when the link was registered (`handle_join`); doing it
        // again here would re-add an address the user forgot in between.
        if !ok {
            self.stats.dial_failures.fetch_add(1, Ordering::Relaxed);
            book.mark_failure(addr, Instant::now());
        }
    }

    /// Writes the address book to the peers file, if there is one. A failure is a
    /// warning; the node runs on and tries again at the next interval.
    pub(crate) fn save_peers_file(&self) {
        let Some(path) = &self.config.peers_file else {
            return;
        };
        let entries = self.addrs.lock().to_cache();
        match peer_cache::save(path, &entries) {
            Ok(()) => log::debug!("saved {} addresses to {}", entries.len(), path.display()),
            Err(e) => log::warn!("cannot write peer cache {}: {e}", path.display()),
        }
    }

    /// Keeps maintenance from redialing `addr` at once (see [`LEAVE_REDIAL_DELAY`]).
    pub(crate) fn defer_redial(&self, addr: &SocketAddr) {
        let until = Instant::now() + LEAVE_REDIAL_DELAY;
        self.addrs.lock().defer(addr, until);
    }

    /// A dial reached this node itself: never dial that address again.
    pub(crate) fn mark_own_addr(&self, addr: SocketAddr) {
        self.table.lock().end_dial(&addr);
        self.addrs.lock().add_own(addr);
    }

    /// Delivers a broadcast that arrived on `from` once, and passes it on (eager links
    /// get it, lazy ones an announcement) while its hop count is below the limit. A
    /// copy we already had makes `from` lazy at both ends (PRUNE).
    ///
    /// Returns whether delivering had to wait for the application (see `deliver`).
    pub(crate) fn handle_broadcast(&self, b: Broadcast, from: &Link) -> bool {
        if b.hops == 0 || b.hops > self.config.hop_limit {
            self.count_ignored_frame(&format!(
                "dropping broadcast {}:{} with hop count {} (limit {})",
                b.origin, b.seq, b.hops, self.config.hop_limit
            ));
            return false;
        }
        let id = (b.origin, b.seq);
        if b.origin == self.id || !self.seen.lock().insert(id, Instant::now()) {
            self.stats
                .duplicates_dropped
                .fetch_add(1, Ordering::Relaxed);
            match self.lazy.shorter_copy(&id, from.node_id, b.hops) {
                // A copy nearer the origin than our parent's: `from` is the parent now.
                Some(r) => self.reparent(r),
                None => self.prune(from, b.origin),
            }
            return false;
        }
        if b.hops >= self.config.hop_limit {
            self.lazy.have(id, None, b.hops, Some(from.node_id));
        } else {
            let frame: Arc<[u8]> = P2PMessage::Broadcast(Broadcast {
                hops: b.hops + 1,
                ..b.clone()
            })
            .encode()
            .into();
            self.lazy.have(id, Some(&frame), b.hops, Some(from.node_id));
            // Pass it on first, deliver after: the next hops' copies are on the wire
            // before this node's application gets its turn.
            let (eager, _) = self.spread(id, b.hops, &frame, Some(from), RELAY_WAIT);
            self.stats
                .frames_forwarded
                .fetch_add(eager as u64, Ordering::Relaxed);
        }
        self.stats
            .broadcasts_delivered
            .fetch_add(1, Ordering::Relaxed);
        self.deliver(Event::Broadcast {
            origin_id: b.origin,
            origin: b.origin_addr,
            hops: b.hops,
            text: b.text,
        })
    }

    /// Sends a broadcast frame on every eager link and announces it on every lazy one,
    /// except the link it came in on and a link to its origin. `hops` is how far it
    /// travelled to reach us (0: our own). Returns (links sent on, links announced on).
    ///
    /// Every link with room gets its copy first; only then does the caller wait, up to
    /// `wait`, on links whose queue is full, so one stuck peer delays nobody else's
    /// copy (and is dropped if it stays stuck).
    fn spread(
        &self,
        id: BroadcastId,
        hops: u8,
        frame: &Arc<[u8]>,
        from: Option<&Link>,
        wait: Duration,
    ) -> (usize, usize) {
        let links = self.table.lock().links();
        let (mut sent, mut announced) = (0, 0);
        let mut full = Vec::new();
        for link in links {
            if from.is_some_and(|f| f.conn_id == link.conn_id) || link.node_id == id.0 {
                continue;
            }
            {
                let mut tree = link.tree.lock();
                if !tree.sends(id.0) {
                    self.lazy.announce(&mut tree, id, hops);
                    announced += 1;
                    continue;
                }
            }
            let copy = Frame::Shared(Arc::clone(frame));
            match link.outbox.push_data(copy, Duration::ZERO, Duration::MAX) {
                Push::Queued => sent += 1,
                Push::Full => full.push(link),
                Push::Closed => {}
            }
        }
        for link in &full {
            let copy = Frame::Shared(Arc::clone(frame));
            if self.queue_with_backpressure(link, copy, wait) == Queued::Yes {
                sent += 1;
            }
        }
        self.stats
            .broadcast_frames_sent
            .fetch_add(sent as u64, Ordering::Relaxed);
        (sent, announced)
    }

    /// Answers a GRAFT: we send the named broadcasts' origins on this link eagerly
    /// again, starting with the broadcasts it names that we still have.
    pub(crate) fn handle_graft(&self, ids: &[BroadcastId], from: &Link) {
        {
            let mut tree = from.tree.lock();
            for id in ids {
                tree.peer_grafted(id.0);
            }
        }
        for frame in self.lazy.frames(ids) {
            if self.queue_frame(from, frame) == Queued::Yes {
                self.stats.frames_forwarded.fetch_add(1, Ordering::Relaxed);
                self.stats
                    .broadcast_frames_sent
                    .fetch_add(1, Ordering::Relaxed);
            } else {
                break;
            }
        }
    }

    /// Handles an IHAVE: see [`LazyPush::announced`].
    pub(crate) fn handle_ihave(&self, ids: &[Announcement], from: &Link) {
        let have: Vec<bool> = {
            let seen = self.seen.lock();
            ids.iter().map(|a| seen.contains(&a.id)).collect()
        };
        let mut nearer = self.lazy.announced(from, ids, &have);
        // Only origins we had pruned there: the others already come as copies.
        {
            let mut tree = from.tree.lock();
            nearer.retain(|id| tree.graft(id.0));
        }
        if !nearer.is_empty() {
            log::debug!(
                "broadcast tree: {} is nearer {} origin(s), grafting",
                from.addr,
                nearer.len()
            );
            // The peer answers with those broadcasts (duplicates here) and sends their
            // origins eagerly from then on; the duplicate rule then prunes the longer
            // path.
            self.queue_control(from, &P2PMessage::Graft { ids: nearer }.encode());
        }
    }

    /// Asks `link`'s peer to announce `origin`'s broadcasts instead of sending them
    /// (once, until we graft them again).
    fn prune(&self, link: &Link, origin: NodeId) {
        if link.tree.lock().prune(origin) {
            self.queue_control(link, &P2PMessage::Prune { origin }.encode());
        }
    }

    /// Makes `r.to` (which just sent us a copy: it sends eagerly) our parent in
    /// `r.origin`'s tree instead of `r.from`, which is pruned for that origin.
    fn reparent(&self, r: Reparent) {
        log::debug!("broadcast tree: parent {} replaces {}", r.to, r.from);
        let from = self.table.lock().get(r.from);
        if let Some(from) = from {
            self.prune(&from, r.origin);
        }
    }

    pub(crate) fn count_grafts(&self, n: usize) {
        self.stats
            .grafts_sent
            .fetch_add(n as u64, Ordering::Relaxed);
    }
}
