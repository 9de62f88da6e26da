//! `Links`: the link manager. It owns the peer table and every open connection, and
//! holds the policy for what happens to a link from registration to close:
//! registering (the C++ `handleJoin`, which the original never called), queueing and
//! backpressure, telling the application (events), closing, and retiring duplicates.
//!
//! Protocols get a `&Links` and nothing more: they look links up, queue frames and
//! deliver events through it, and never see the node as a whole.
//!
//! Admission: every socket, accepted or dialled, holds a [`ConnSlot`] from accept (or
//! before its dial starts) until its connection thread ends, so `max_connections`
//! bounds threads and descriptors whatever the connection turns out to be (handshake,
//! link, retired duplicate, referral). Accepted sockets also hold a [`PendingSlot`]
//! for their handshake. `ConnSlot` is an atomic; pending handshakes are kept by
//! source group in `pending` (a leaf lock), so that when all are taken the oldest of
//! the most represented group can give way to a newcomer of a less represented one.
//!
//! Fairness when full (issue 10, item 3; the rules are in `state::eviction`): nothing
//! is refused for its source while a place is free. At `max_pending_handshakes`, a
//! newcomer from a less represented /24 (/48) evicts the oldest pending handshake of
//! the most represented group ([`Links::admit_pending`]); at a link cap, an inbound
//! newcomer from a less represented group evicts the youngest unprotected inbound link
//! of the most represented one (`PeerTable::insert`, closed with LEAVE and
//! `DownReason::Evicted` by [`Links::register`]).
//!
//! Duplicates are bounded: at most [`MAX_RETIRING_PER_NODE`] connections per node id
//! linger, and none lingers in the last `max_pending_handshakes` places of the
//! connection cap (those stay free for handshakes); a connection past those bounds
//! is closed at once ([`Register::Surplus`]).
//!
//! Locks: `registry` (the peer table, open connections, connection threads, dials in
//! progress, retiring duplicates). Every method takes it, copies or updates, and lets
//! it go before any socket call, blocking queue push or thread join. `pending` (the
//! pending handshakes by group) is a leaf: a few map operations, never with
//! `registry` (`counts` reads it before taking `registry`), the evicted socket shut
//! down after it is released. Each link's
//! `Outbox` has a lock of its own; nothing holds `registry` and an outbox lock
//! together. `pending_events` (the sizes of the events queued for the application,
//! see [`Links::deliver`]) is a leaf: held for a few arithmetic steps and the send on
//! the unbounded event channel (which never waits), never with another lock, never
//! across a wait.
//!
//! Budgets: each link's data queue is bounded by frames and by bytes (`queue_len`,
//! `queue_bytes`, in its `Outbox`), the event queue by events and by text bytes
//! (`max_pending_events`, `max_pending_event_bytes`, here).

use std::collections::{HashMap, HashSet, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{bounded, unbounded, Receiver, Sender};
use parking_lot::{Condvar, Mutex};

use crate::clock::Clock;
use crate::config::Config;
use crate::error::{Error, HandshakeError};
use crate::event::{Direction, DownReason, Encryption, Event, PeerInfo};
use crate::p2p_message::{NodeId, P2PMessage};
use crate::state::eviction::{self, PendingGroup};
use crate::state::net::net_group;
use crate::state::peer_table::{Insert, Limits, Peer, PeerTable};
use crate::state::stats::{self, Stats};
use crate::transport::outbox::{Frame, Limit, Outbox, Push};
use crate::transport::Closer;

/// How long a relay waits for room in a neighbour's full queue before dropping it.
/// The relay's reader (and so what it forwards to others) waits meanwhile, but only
/// until the stall rule recognises a peer that stopped reading.
pub(crate) const RELAY_WAIT: Duration = Duration::from_millis(200);

/// The longest a reader waits for the application to make room for one message
/// (never more than half the peer timeout); see [`Links::deliver`].
const EVENT_WAIT: Duration = Duration::from_secs(1);

/// How long a connection that lost to a duplicate stays open for reading before we
/// half-close it: the peer may still be finishing the handshake of the winner, and
/// closing the loser first would make it report the link down and up again.
const DUPLICATE_LINGER: Duration = Duration::from_secs(1);

/// How many connections of one node id may be retiring (lingering) at once. A
/// simultaneous dial leaves one; a connection to an already-linked node arriving
/// while this many are retiring is closed at once instead, so a peer that sends the
/// JOIN of a linked id again and again cannot pile up lingering threads.
pub(crate) const MAX_RETIRING_PER_NODE: usize = 2;

/// How long `stop` lets links close gracefully (LEAVE flushed, peer hangs up) before it
/// shuts every socket down.
const GRACEFUL_CLOSE: Duration = Duration::from_millis(300);

/// Marks an RTT that has not been measured yet.
const NO_RTT: u64 = u64::MAX;

/// A live link: identity, outbound queue, and the counters the reader and the
/// maintenance thread update without a lock.
pub(crate) struct Link {
    conn_id: u64,
    node_id: NodeId,
    /// The peer's listen address.
    addr: SocketAddr,
    /// The socket's remote IP: who sent what arrives here (a peer's JOIN may
    /// advertise another IP for `addr`).
    remote_ip: IpAddr,
    direction: Direction,
    /// The id of the node that dialled: orders duplicate connections.
    dialler: NodeId,
    /// TLS or plaintext.
    encryption: Encryption,
    /// Whether `addr` is proven to reach this peer (see [`LinkId::verified`]).
    verified: bool,
    /// Outbound frames and the stream's write half.
    outbox: Arc<Outbox>,
    /// Shuts the stream down from any thread.
    closer: Closer,
    connected_at: Instant,
    /// Milliseconds since the node's epoch when the link was made (eviction age).
    connected_ms: u64,
    /// The source group of `remote_ip` (`state::net::net_group`), for eviction.
    group: IpAddr,
    /// Milliseconds since the node's epoch when a frame last arrived.
    last_seen_ms: AtomicU64,
    /// Milliseconds since the node's epoch when the last PING was queued.
    last_ping_ms: AtomicU64,
    /// Last measured round trip in microseconds, or `NO_RTT`.
    rtt_us: AtomicU64,
}

/// Who a link is, as the handshake found it.
pub(crate) struct LinkId {
    pub conn_id: u64,
    pub node_id: NodeId,
    /// The peer's listen address.
    pub addr: SocketAddr,
    /// The socket's remote IP.
    pub remote_ip: IpAddr,
    pub direction: Direction,
    pub dialler: NodeId,
    pub encryption: Encryption,
    /// Whether `addr` is proven to reach the node `node_id`: we dialled it, or a
    /// dial-back PROBE found that id listening there (docs/PROTOCOL.md 3.1, "Verified listen addresses"). An
    /// unverified link's `addr` is the socket's remote address (ephemeral port): it
    /// is never gossiped, never stored in the address book, and never takes a listen
    /// address from another link.
    pub verified: bool,
}

impl Link {
    pub(crate) fn new(id: LinkId, outbox: Arc<Outbox>, closer: Closer, now_ms: u64) -> Link {
        Link {
            conn_id: id.conn_id,
            node_id: id.node_id,
            addr: id.addr,
            remote_ip: id.remote_ip,
            direction: id.direction,
            dialler: id.dialler,
            encryption: id.encryption,
            verified: id.verified,
            outbox,
            closer,
            connected_at: Instant::now(),
            connected_ms: now_ms,
            group: net_group(id.remote_ip),
            last_seen_ms: AtomicU64::new(now_ms),
            last_ping_ms: AtomicU64::new(now_ms),
            rtt_us: AtomicU64::new(NO_RTT),
        }
    }

    pub(crate) fn conn_id(&self) -> u64 {
        self.conn_id
    }

    pub(crate) fn node_id(&self) -> NodeId {
        self.node_id
    }

    /// The peer's listen address: what a user can dial.
    pub(crate) fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Whether [`addr`](Link::addr) is a proven listen address of this peer (see
    /// [`LinkId::verified`]).
    pub(crate) fn verified(&self) -> bool {
        self.verified
    }

    /// The socket's remote IP: the source of what arrives on this link, which the
    /// address book's per-source limit counts.
    pub(crate) fn remote_ip(&self) -> IpAddr {
        self.remote_ip
    }

    /// A frame arrived (or the reader was kept waiting by the application, which is
    /// not the peer's silence).
    pub(crate) fn heard_from(&self, now_ms: u64) {
        self.last_seen_ms.store(now_ms, Ordering::Relaxed);
    }

    /// Milliseconds since a frame last arrived.
    pub(crate) fn silent_ms(&self, now_ms: u64) -> u64 {
        now_ms.saturating_sub(self.last_seen_ms.load(Ordering::Relaxed))
    }

    /// Whether the link is due a PING (none for `interval_ms`); if so, records that
    /// one is sent now.
    pub(crate) fn ping_due(&self, now_ms: u64, interval_ms: u64) -> bool {
        if now_ms.saturating_sub(self.last_ping_ms.load(Ordering::Relaxed)) < interval_ms {
            return false;
        }
        self.last_ping_ms.store(now_ms, Ordering::Relaxed);
        true
    }

    pub(crate) fn set_rtt(&self, rtt: Duration) {
        let us = u64::try_from(rtt.as_micros()).unwrap_or(NO_RTT - 1);
        self.rtt_us.store(us, Ordering::Relaxed);
    }

    /// The writer thread's body; see [`Outbox::run_writer`].
    pub(crate) fn run_writer(&self) {
        self.outbox.run_writer()
    }

    /// Lets the writer send what is queued, half-close and stop.
    pub(crate) fn close_outbox(&self) {
        self.outbox.close()
    }

    pub(crate) fn info(&self) -> PeerInfo {
        let rtt = match self.rtt_us.load(Ordering::Relaxed) {
            NO_RTT => None,
            us => Some(Duration::from_micros(us)),
        };
        PeerInfo {
            node_id: self.node_id,
            addr: self.addr,
            direction: self.direction,
            rtt,
            connected_for: self.connected_at.elapsed(),
            encryption: self.encryption,
            addr_verified: self.verified,
        }
    }

    /// Queues LEAVE and closes, so the writer flushes what is queued, says goodbye and
    /// half-closes; a link whose queue is full is shut down instead.
    fn send_leave(&self) {
        if !self.outbox.leave(P2PMessage::Leave.encode()) {
            self.closer.shutdown();
        }
    }
}

impl Peer for Link {
    fn conn_id(&self) -> u64 {
        self.conn_id
    }
    fn node_id(&self) -> NodeId {
        self.node_id
    }
    fn addr(&self) -> SocketAddr {
        self.addr
    }
    fn verified(&self) -> bool {
        self.verified
    }
    fn direction(&self) -> Direction {
        self.direction
    }
    fn dialler(&self) -> NodeId {
        self.dialler
    }
    fn last_seen_ms(&self) -> u64 {
        self.last_seen_ms.load(Ordering::Relaxed)
    }
    fn group(&self) -> IpAddr {
        self.group
    }
    fn rtt_us(&self) -> u64 {
        self.rtt_us.load(Ordering::Relaxed)
    }
    fn connected_ms(&self) -> u64 {
        self.connected_ms
    }
}

/// What queueing a frame did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Queued {
    Yes,
    /// The queue was full: the peer was dropped as too slow.
    PeerDropped,
    /// The link is closing (its writer is gone); nothing to do.
    LinkClosing,
}

/// What [`Links::register`] decided for a connection that completed its handshake.
pub(crate) enum Register {
    /// The connection is the link to its node now. `new`: no link to that node
    /// existed (it replaced none of the same node), so `PeerUp` is due
    /// ([`Links::report_up`]) once the protocols have taken note.
    Linked {
        new: bool,
    },
    /// Another connection to the same node wins; this one is retired (its entry in
    /// `Registry.retiring` is already made).
    Duplicate(Arc<Link>),
    /// The node is linked already and no more of its connections may linger
    /// ([`MAX_RETIRING_PER_NODE`], or the connection cap is nearly full): this
    /// connection is closed at once, the existing link (given) stays.
    Surplus(Arc<Link>),
    Refused(HandshakeError),
}

/// What [`Links::claim_dial`] found.
pub(crate) enum DialClaim {
    /// The caller dials; it calls [`Links::end_dial`] when the dial is over.
    Mine,
    /// A dial is running already; the receiver disconnects when it ends.
    Busy(Receiver<()>),
}

/// An accepted connection's place among the pending handshakes; dropping it frees the
/// place (unless it was evicted, which freed it already).
pub(crate) struct PendingSlot {
    pending: Arc<Mutex<Pending>>,
    group: IpAddr,
    conn_id: u64,
}

impl Drop for PendingSlot {
    fn drop(&mut self) {
        // The entry (and its closer) is dropped after the guard, outside the lock.
        let _entry = self.pending.lock().remove(self.group, self.conn_id);
    }
}

/// Accepted sockets still in their handshake, by source group, oldest first: what
/// `max_pending_handshakes` counts and what its eviction rule
/// ([`eviction::pending_victim_group`]) looks at. A leaf lock of its own (the
/// acceptor takes it for a few map operations, never with `registry`).
#[derive(Default)]
struct Pending {
    /// Entries in `by_group`.
    total: usize,
    by_group: HashMap<IpAddr, VecDeque<PendingEntry>>,
}

struct PendingEntry {
    conn_id: u64,
    started: Instant,
    /// Shuts the socket down when the handshake is evicted.
    closer: Closer,
}

impl Pending {
    fn remove(&mut self, group: IpAddr, conn_id: u64) -> Option<PendingEntry> {
        let q = self.by_group.get_mut(&group)?;
        let entry = q
            .iter()
            .position(|e| e.conn_id == conn_id)
            .and_then(|i| q.remove(i));
        if q.is_empty() {
            self.by_group.remove(&group);
        }
        if entry.is_some() {
            self.total -= 1;
        }
        entry
    }

    /// Takes the oldest pending handshake of `group` out.
    fn pop_oldest(&mut self, group: IpAddr) -> Option<PendingEntry> {
        let q = self.by_group.get_mut(&group)?;
        let entry = q.pop_front();
        if q.is_empty() {
            self.by_group.remove(&group);
        }
        if entry.is_some() {
            self.total -= 1;
        }
        entry
    }

    fn groups(&self) -> Vec<PendingGroup> {
        self.by_group
            .iter()
            .filter_map(|(g, q)| {
                q.front().map(|e| PendingGroup {
                    group: *g,
                    pending: q.len(),
                    oldest: e.started,
                })
            })
            .collect()
    }
}

/// A socket's place under `max_connections`, held from accept (or from before the
/// dial starts) until its connection thread ends; dropping it frees the place. It is
/// owned by the thread's closure, so a thread that cannot be spawned frees it too,
/// exactly once.
pub(crate) struct ConnSlot {
    open: Arc<AtomicUsize>,
}

impl Drop for ConnSlot {
    fn drop(&mut self) {
        self.open.fetch_sub(1, Ordering::SeqCst);
    }
}

/// A connection that lost the one-link-per-pair rule. It is no longer a link (nothing
/// new is queued on it), but its reader keeps delivering what the peer already sent
/// until the peer closes it, so a message sent during a simultaneous dial is never
/// lost. An evicted link (LEAVE sent, writer closing) retires the same way, so a peer
/// that never hangs up is shut down at the give-up deadline. The maintenance thread
/// enforces the two deadlines.
struct Retiring {
    conn_id: u64,
    /// Whose duplicate it is, for [`MAX_RETIRING_PER_NODE`].
    node_id: NodeId,
    closer: Closer,
    /// Its outbox, if it has a writer: at `half_close_at` the writer is told to flush
    /// and half-close, so nothing already queued is cut off.
    outbox: Option<Arc<Outbox>>,
    /// When to half-close it.
    half_close_at: Option<Instant>,
    /// When to shut it down whatever the peer does.
    give_up_at: Instant,
}

/// Everything behind the one lock.
#[derive(Default)]
struct Registry {
    table: PeerTable<Link>,
    /// Every open connection, handshaking or linked, to shut it down on stop.
    conns: HashMap<u64, Closer>,
    /// Connection threads (each joins its own writer); reaped by maintenance.
    threads: Vec<JoinHandle<()>>,
    /// Addresses with a dial in progress, each with whoever waits for it to end.
    dialing: HashMap<SocketAddr, Vec<Sender<()>>>,
    /// Duplicate connections (and evicted links) being wound down.
    retiring: Vec<Retiring>,
}

/// The sizes of the queued events with long texts, oldest first, so the node knows how
/// many text bytes the application's queue holds although it never sees the
/// application receive.
///
/// The queue is FIFO: with `sent` events sent so far and `events.len()` still queued,
/// the first `sent - len` were received, so an entry whose sequence number is below
/// that is gone, and `bytes` is the sum of the rest. Only texts longer than
/// [`SMALL_EVENT`] are recorded, under the lock with their send; shorter ones take no
/// lock at all (the count bounds them: 16,384 x 256 B = 4 MiB at most), which keeps
/// the small-message hot path as cheap as before the byte budget (one lock per 64 B
/// message cost about 15% of link throughput, measured). A sequence number may be off
/// by the short sends in flight on other readers at that moment, so the count of bytes
/// is right give or take one message per reader.
#[derive(Default)]
struct PendingEvents {
    /// (sequence number, text bytes) of each queued long-text event, oldest first.
    sizes: VecDeque<(u64, u32)>,
    /// The sum of the sizes.
    bytes: usize,
}

/// Texts at most this long are not recorded in [`PendingEvents`]; see there.
const SMALL_EVENT: usize = 256;

/// Which bound of the event queue is reached.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum EventsFull {
    Count,
    Bytes,
}

/// Counts for `info`.
pub(crate) struct LinkCounts {
    pub links: usize,
    pub dialing: usize,
    pub connections: usize,
    pub pending_handshakes: usize,
}

impl Registry {
    /// Connections of `node_id` being retired.
    fn retiring_of(&self, node_id: NodeId) -> usize {
        self.retiring
            .iter()
            .filter(|r| r.node_id == node_id)
            .count()
    }
}

/// The link manager; see the module docs.
pub(crate) struct Links {
    config: Arc<Config>,
    clock: Clock,
    running: AtomicBool,
    registry: Mutex<Registry>,
    /// Signalled whenever a connection ends, for `stop`'s graceful wait.
    conn_ended: Condvar,
    events: Sender<Event>,
    /// What the application's queue holds, by size (see [`PendingEvents`]).
    pending_events: Mutex<PendingEvents>,
    /// Events handed to the application's queue so far (see [`PendingEvents`]).
    events_sent: AtomicU64,
    /// Wakes the maintenance thread (`bounded(1)`: one pending wake is enough).
    wake: Sender<()>,
    next_conn: AtomicU64,
    /// Accepted sockets still in their handshake, by source group (see
    /// `max_pending_handshakes`).
    pending: Arc<Mutex<Pending>>,
    /// Sockets holding a [`ConnSlot`] (see `max_connections`).
    open: Arc<AtomicUsize>,
    stats: Stats,
}

impl Links {
    /// The manager, the application's event queue and the maintenance thread's wake
    /// channel.
    pub(crate) fn new(config: Arc<Config>, clock: Clock) -> (Links, Receiver<Event>, Receiver<()>) {
        let (events, events_rx) = unbounded();
        let (wake, wake_rx) = bounded(1);
        let links = Links {
            config,
            clock,
            running: AtomicBool::new(true),
            registry: Mutex::new(Registry::default()),
            conn_ended: Condvar::new(),
            events,
            pending_events: Mutex::new(PendingEvents::default()),
            events_sent: AtomicU64::new(0),
            wake,
            next_conn: AtomicU64::new(1),
            pending: Arc::new(Mutex::new(Pending::default())),
            open: Arc::new(AtomicUsize::new(0)),
            stats: Stats::default(),
        };
        (links, events_rx, wake_rx)
    }

    pub(crate) fn config(&self) -> &Config {
        &self.config
    }

    pub(crate) fn clock(&self) -> Clock {
        self.clock
    }

    pub(crate) fn stats(&self) -> &Stats {
        &self.stats
    }

    pub(crate) fn is_running(&self) -> bool {
        self.running.load(Ordering::SeqCst)
    }

    /// Marks the node as stopping.
    pub(crate) fn stop_running(&self) {
        self.running.store(false, Ordering::SeqCst);
    }

    pub(crate) fn next_conn_id(&self) -> u64 {
        self.next_conn.fetch_add(1, Ordering::Relaxed)
    }

    /// Asks the maintenance thread to run now (dials wanted, announcements due).
    pub(crate) fn wake_maintenance(&self) {
        let _ = self.wake.try_send(());
    }

    // --- events ---

    /// Hands an event to the application, or counts it as dropped when the application
    /// has let `max_pending_events` (or `max_pending_event_bytes` of text) pile up.
    /// Never blocks: for link state changes, which the maintenance thread and `stop`
    /// report too.
    pub(crate) fn emit(&self, ev: Event) {
        if self.try_send_event(ev).is_err() {
            self.drop_event();
        }
    }

    /// Hands a message that arrived on a link to the application. When the application
    /// is `max_pending_events` behind, or the queued messages' text reached
    /// `max_pending_event_bytes` (counted in `event_budget_waits`), the calling reader
    /// waits for room instead of dropping it: it stops reading, so TCP slows the
    /// sender down to the pace of the application. It waits at most [`EVENT_WAIT`]
    /// (half the peer timeout at most) per message, then drops it and counts it: an
    /// application that stopped consuming must not stop the node. An empty queue
    /// takes a message of any size.
    ///
    /// The wait is the one bounded back-off poll left in the crate, on purpose: room
    /// appears when the application receives, and nothing can signal that without
    /// changing `Node::events`' public type or preallocating the whole queue (a bounded
    /// crossbeam channel of 16,384 events is ~1.5 MiB per node, touched at creation;
    /// the idle node is 3.8 MiB). docs/ARCHITECTURE.md, "Queues".
    ///
    /// Returns whether it had to wait: the reader then counts its peer as heard from
    /// just now, since the silence was its own.
    pub(crate) fn deliver(&self, ev: Event) -> bool {
        let (mut ev, mut full) = match self.try_send_event(ev) {
            Ok(()) => return false,
            Err(back) => back,
        };
        let wait = (self.config.peer_timeout / 2).min(EVENT_WAIT);
        let deadline = Instant::now() + wait;
        let mut pause = Duration::from_micros(50);
        let mut counted = false;
        loop {
            if full == EventsFull::Bytes && !counted {
                counted = true;
                stats::add(&self.stats.event_budget_waits, 1);
            }
            if Instant::now() >= deadline || !self.is_running() {
                self.drop_event();
                return true;
            }
            std::thread::sleep(pause);
            pause = (pause * 2).min(Duration::from_millis(5));
            match self.try_send_event(ev) {
                Ok(()) => return true,
                Err((back, f)) => {
                    ev = back;
                    full = f;
                }
            }
        }
    }

    /// Queues `ev` for the application if both bounds leave room, or hands it back
    /// with the bound that is reached. Link events (no text) are bounded by the count
    /// alone; an empty queue takes a message of any size.
    fn try_send_event(&self, ev: Event) -> Result<(), (Event, EventsFull)> {
        if self.events.len() >= self.config.max_pending_events {
            return Err((ev, EventsFull::Count));
        }
        let size = text_bytes(&ev);
        if size <= SMALL_EVENT {
            self.events_sent.fetch_add(1, Ordering::Relaxed);
            let _ = self.events.send(ev);
            return Ok(());
        }
        let mut p = self.pending_events.lock();
        self.forget_received(&mut p);
        if p.bytes > 0 && p.bytes + size > self.config.max_pending_event_bytes {
            return Err((ev, EventsFull::Bytes));
        }
        let seq = self.events_sent.fetch_add(1, Ordering::Relaxed);
        p.sizes
            .push_back((seq, u32::try_from(size).unwrap_or(u32::MAX)));
        p.bytes += size;
        let _ = self.events.send(ev);
        Ok(())
    }

    /// Forgets the sizes of the events the application has received: the oldest,
    /// since the queue is FIFO. Amortised O(1): each size is popped once.
    fn forget_received(&self, p: &mut PendingEvents) {
        let sent = self.events_sent.load(Ordering::Relaxed);
        let received = sent.saturating_sub(self.events.len() as u64);
        while let Some(&(seq, size)) = p.sizes.front() {
            if seq >= received {
                break;
            }
            p.sizes.pop_front();
            p.bytes -= size as usize;
        }
    }

    fn drop_event(&self) {
        let n = stats::add(&self.stats.events_dropped, 1);
        if n % 10_000 == 0 {
            log::warn!(
                "event queue full: the application is not consuming events ({} dropped)",
                n + 1
            );
        }
    }

    // --- admission ---

    /// A place under `max_connections` for a socket, or `None` when the cap is
    /// reached. Does not count or log: see [`Links::admit_connection`] for accepted
    /// sockets; a dial that gets `None` is simply not started.
    pub(crate) fn conn_slot(&self) -> Option<ConnSlot> {
        let before = self.open.fetch_add(1, Ordering::SeqCst);
        let slot = ConnSlot {
            open: Arc::clone(&self.open),
        };
        // Past the cap the slot is dropped here, which undoes the increment.
        (before < self.config.max_connections).then_some(slot)
    }

    /// Whether a dial could get a [`ConnSlot`] now (the maintenance thread does not
    /// plan dials otherwise).
    pub(crate) fn has_free_slot(&self) -> bool {
        self.open.load(Ordering::SeqCst) < self.config.max_connections
    }

    /// A place under `max_connections` for an accepted socket; `None` (counted as
    /// `connections_refused_cap`, logged on the first and every 1000th) when the cap
    /// is reached: the caller closes the socket at once, before any byte.
    pub(crate) fn admit_connection(&self) -> Option<ConnSlot> {
        if let Some(slot) = self.conn_slot() {
            return Some(slot);
        }
        let n = stats::add(&self.stats.connections_refused_cap, 1);
        if n % 1000 == 0 {
            log::warn!(
                "{} connections open: refusing new connections ({} refused so far)",
                self.config.max_connections,
                n + 1
            );
        }
        None
    }

    /// Whether a connection that is past its handshake but not a link (a retired
    /// duplicate, a referral draining) may stay open a while: not when the open
    /// connections reach into the last `max_pending_handshakes` places of the cap,
    /// which are kept for handshakes.
    fn may_linger(&self) -> bool {
        let reserved = self.config.max_pending_handshakes;
        self.open.load(Ordering::SeqCst) + reserved < self.config.max_connections
    }

    /// See [`Links::may_linger`]: whether a referral may drain before it closes.
    pub(crate) fn may_drain_referral(&self) -> bool {
        self.may_linger()
    }

    /// Counts accepted connection `conn_id` from `remote` as a pending handshake.
    ///
    /// When `max_pending_handshakes` are pending already, the newcomer may take the
    /// place of the oldest pending handshake of the most represented source group
    /// (/24, /48), if its own group is less represented, i.e. would still have fewer
    /// pending with the newcomer ([`eviction::pending_victim_group`]):
    /// that socket is shut down (its handshake fails at once) and counted in
    /// `pending_evicted`. Otherwise `None`, counted in `refused_connections`: the
    /// caller closes the socket. Never waits: a few map operations under the leaf
    /// lock `pending`, the shutdown after it.
    pub(crate) fn admit_pending(
        &self,
        remote: IpAddr,
        conn_id: u64,
        closer: Closer,
    ) -> Option<PendingSlot> {
        let group = net_group(remote);
        let admitted = {
            let mut p = self.pending.lock();
            let victim = if p.total < self.config.max_pending_handshakes {
                Ok(None)
            } else {
                match eviction::pending_victim_group(&p.groups(), group) {
                    Some(g) => Ok(p.pop_oldest(g)),
                    None => Err(()),
                }
            };
            if victim.is_ok() {
                p.by_group
                    .entry(group)
                    .or_default()
                    .push_back(PendingEntry {
                        conn_id,
                        started: Instant::now(),
                        closer,
                    });
                p.total += 1;
            }
            victim
        };
        match admitted {
            Ok(victim) => {
                if let Some(v) = victim {
                    let n = stats::add(&self.stats.pending_evicted, 1);
                    if n % 1000 == 0 {
                        log::warn!(
                            "{} handshakes pending: closed the oldest of the most represented \
                             group for {remote} ({} evicted so far)",
                            self.config.max_pending_handshakes,
                            n + 1
                        );
                    }
                    v.closer.shutdown();
                }
                Some(PendingSlot {
                    pending: Arc::clone(&self.pending),
                    group,
                    conn_id,
                })
            }
            Err(()) => {
                let n = stats::add(&self.stats.refused_connections, 1);
                if n % 1000 == 0 {
                    log::warn!(
                        "{} handshakes pending: refusing new connections ({} refused so far)",
                        self.config.max_pending_handshakes,
                        n + 1
                    );
                }
                None
            }
        }
    }

    /// Counts a frame the protocol says to ignore (unknown type, hop count out of
    /// range). The first and every 1000th is logged, so a peer cannot flood the log.
    pub(crate) fn count_ignored_frame(&self, why: &str) {
        let n = stats::add(&self.stats.frames_ignored, 1);
        if n % 1000 == 0 {
            log::warn!("{why} ({} frames ignored so far)", n + 1);
        }
    }

    /// A handshake failed (timeout, bad JOIN, refusal).
    pub(crate) fn count_handshake_failure(&self) {
        stats::add(&self.stats.handshakes_failed, 1);
    }

    /// Registers a link that completed its handshake, keeping one link per pair of
    /// nodes (see `PeerTable::insert`). Reports `PeerDown` for a stale link of another
    /// node it replaced; `PeerUp` is the caller's to report ([`Links::report_up`]).
    pub(crate) fn register(&self, link: Arc<Link>) -> Register {
        if !self.is_running() {
            return Register::Refused(HandshakeError::Stopping);
        }
        // A link silent for two of our heartbeat intervals may belong to a node that
        // is gone.
        let stale_ms = 2 * self.config.heartbeat_interval.as_millis() as u64;
        let stale_before = self.clock.now_ms().saturating_sub(stale_ms);
        let limits = Limits {
            max_links: self.config.max_links,
            max_inbound: self.config.max_inbound_links,
        };
        let may_linger = self.may_linger();
        // One critical section: the check against the retiring bound, the insert and
        // the retiring entry it needs, so concurrent duplicates cannot all pass.
        let outcome = {
            let mut r = self.registry.lock();
            if let Some(existing) = r.table.get(link.node_id) {
                if !may_linger || r.retiring_of(link.node_id) >= MAX_RETIRING_PER_NODE {
                    drop(r);
                    return self.surplus(&link, existing);
                }
            }
            let outcome = r.table.insert(Arc::clone(&link), limits, stale_before);
            match &outcome {
                Insert::Kept(_) => self.push_retiring(&mut r, &link, None),
                Insert::Added { replaced, evicted } => {
                    for old in replaced.iter().filter(|o| o.node_id == link.node_id) {
                        self.push_retiring(&mut r, old, Some(Arc::clone(&old.outbox)));
                    }
                    // An evicted link is out of the table, so no heartbeat watches
                    // it: the retiring deadlines bound how long it may stay open
                    // after its LEAVE (a peer that never hangs up is shut down).
                    if let Some(v) = evicted {
                        self.push_retiring(&mut r, v, None);
                    }
                }
                _ => {}
            }
            outcome
        };
        match outcome {
            Insert::Added { replaced, evicted } => {
                if let Some(victim) = evicted {
                    self.evict(&victim, &link);
                }
                let mut same_node = false;
                for old in replaced {
                    if old.node_id == link.node_id {
                        same_node = true;
                    } else {
                        old.closer.shutdown();
                        log::info!(
                            "{}: node {} replaced by node {} on the same address",
                            old.addr,
                            old.node_id,
                            link.node_id
                        );
                        self.emit_peer_down(&old, DownReason::Replaced);
                    }
                }
                Register::Linked { new: !same_node }
            }
            Insert::Kept(existing) => Register::Duplicate(existing),
            Insert::Full => {
                stats::add(&self.stats.refused_links, 1);
                Register::Refused(HandshakeError::LinkLimit {
                    max_links: self.config.max_links,
                    max_inbound: self.config.max_inbound_links,
                })
            }
            Insert::AddressTaken => {
                stats::add(&self.stats.refused_links, 1);
                Register::Refused(HandshakeError::AddressTaken(link.addr))
            }
        }
    }

    /// Closes an inbound link that gave way to `newcomer` (already out of the table,
    /// and retiring, so it is shut down if the peer never hangs up): LEAVE, then a
    /// half-close, and `PeerDown` with [`DownReason::Evicted`]. Its reader then ends
    /// and finds nothing more to report.
    fn evict(&self, victim: &Link, newcomer: &Link) {
        let n = stats::add(&self.stats.links_evicted, 1);
        let msg = format!(
            "{} ({}): inbound links full, evicted for {} from a less represented group              ({} evicted so far)",
            victim.addr,
            victim.remote_ip,
            newcomer.remote_ip,
            n + 1
        );
        if n % 100 == 0 {
            log::warn!("{msg}");
        } else {
            log::info!("{msg}");
        }
        self.emit_peer_down(victim, DownReason::Evicted);
        victim.send_leave();
    }

    /// Counts and logs (rate-limited) a connection to a linked node that may not
    /// linger; the caller closes it.
    fn surplus(&self, link: &Link, existing: Arc<Link>) -> Register {
        let n = stats::add(&self.stats.duplicates_closed, 1);
        if n % 1000 == 0 {
            log::warn!(
                "{}: another connection for linked node {}, closed at once ({} so far)",
                link.addr,
                link.node_id,
                n + 1
            );
        }
        Register::Surplus(existing)
    }

    /// Reports a new link to the application (`PeerUp`).
    pub(crate) fn report_up(&self, link: &Link) {
        log::info!(
            "link up: {} ({}, {})",
            link.addr,
            link.node_id,
            link.direction.as_str()
        );
        self.emit(Event::PeerUp(link.info()));
    }

    // --- lookups ---

    pub(crate) fn get(&self, node_id: NodeId) -> Option<Arc<Link>> {
        self.registry.lock().table.get(node_id)
    }

    pub(crate) fn by_addr(&self, addr: &SocketAddr) -> Option<Arc<Link>> {
        self.registry.lock().table.by_addr(addr)
    }

    /// A copy of every live link, to send to outside the lock.
    pub(crate) fn links(&self) -> Vec<Arc<Link>> {
        self.registry.lock().table.links()
    }

    /// Listen addresses of live links and addresses being dialled: no new dial there.
    pub(crate) fn busy_addrs(&self) -> (usize, HashSet<SocketAddr>) {
        let r = self.registry.lock();
        let mut busy = r.table.linked_addrs();
        busy.extend(r.dialing.keys().copied());
        (r.table.len() + r.dialing.len(), busy)
    }

    /// Listen addresses of outbound links and of dials in progress (which become
    /// outbound links): the address book prefers other subnets.
    pub(crate) fn outbound_addrs(&self) -> Vec<SocketAddr> {
        let r = self.registry.lock();
        let mut v: Vec<SocketAddr> = r
            .table
            .links()
            .iter()
            .filter(|l| l.direction == Direction::Outbound)
            .map(|l| l.addr)
            .collect();
        v.extend(r.dialing.keys().copied());
        v
    }

    /// Verified listen addresses of the live links, with their node ids: what
    /// PEERS may name.
    pub(crate) fn linked_peers(&self) -> Vec<(SocketAddr, NodeId)> {
        self.registry
            .lock()
            .table
            .links()
            .iter()
            .filter(|l| l.verified)
            .map(|l| (l.addr, l.node_id))
            .collect()
    }

    pub(crate) fn counts(&self) -> LinkCounts {
        let pending_handshakes = self.pending.lock().total;
        let r = self.registry.lock();
        LinkCounts {
            links: r.table.len(),
            dialing: r.dialing.len(),
            connections: r.conns.len(),
            pending_handshakes,
        }
    }

    // --- closing ---

    /// Removes `link` from the table (if it is still the current link to that node),
    /// reports `PeerDown`, and shuts the stream so both its threads end.
    pub(crate) fn close(&self, link: &Link, reason: DownReason) {
        self.unlink(link, reason);
        link.closer.shutdown();
    }

    /// Closes `link` politely: LEAVE, then a half-close once it is written.
    pub(crate) fn leave(&self, link: &Link, reason: DownReason) {
        self.unlink(link, reason);
        link.send_leave();
    }

    /// Removes `link` from the table if it is still the current link to its node, and
    /// reports `PeerDown` only then (a retired duplicate ending is no news).
    fn unlink(&self, link: &Link, reason: DownReason) {
        let removed = self
            .registry
            .lock()
            .table
            .remove(link.node_id, link.conn_id);
        if removed.is_some() {
            self.emit_peer_down(link, reason);
        }
    }

    fn emit_peer_down(&self, link: &Link, reason: DownReason) {
        self.emit(Event::PeerDown {
            node_id: link.node_id,
            addr: link.addr,
            reason,
        });
    }

    /// Winds a connection down (a new one that lost to the existing link, or a link
    /// replaced by a new one to the same node): it is read until the peer closes it,
    /// and half-closed by us after [`DUPLICATE_LINGER`]. The linger gives the peer
    /// time to finish the winning handshake before it sees this connection end;
    /// otherwise it would report the link down and up again. Whatever happens, the
    /// connection is shut after the handshake timeout more. Called under the lock by
    /// `register`, which has checked [`MAX_RETIRING_PER_NODE`].
    fn push_retiring(&self, r: &mut Registry, link: &Link, outbox: Option<Arc<Outbox>>) {
        // A connection whose thread already ended (and unregistered it) needs no
        // winding down; an entry would only keep its descriptor open until give-up.
        if !r.conns.contains_key(&link.conn_id) {
            return;
        }
        let half_close_at = Instant::now() + DUPLICATE_LINGER;
        r.retiring.push(Retiring {
            conn_id: link.conn_id,
            node_id: link.node_id,
            closer: link.closer.clone(),
            outbox,
            half_close_at: Some(half_close_at),
            give_up_at: half_close_at + self.config.handshake_timeout,
        });
    }

    /// Half-closes or shuts down retiring connections whose deadlines passed.
    pub(crate) fn tend_retiring(&self, now: Instant) {
        let mut half = Vec::new();
        let mut shut = Vec::new();
        let mut flush = Vec::new();
        self.registry.lock().retiring.retain_mut(|r| {
            if r.give_up_at <= now {
                shut.push(r.closer.clone());
                return false;
            }
            if r.half_close_at.is_some_and(|t| t <= now) {
                r.half_close_at = None;
                match r.outbox.take() {
                    // A writer that is still sending is left to the give-up deadline
                    // rather than cut off mid-queue.
                    Some(outbox) => flush.push(outbox),
                    None => half.push(r.closer.clone()),
                }
            }
            true
        });
        for outbox in flush {
            outbox.close();
        }
        for c in half {
            c.half_close();
        }
        for c in shut {
            c.shutdown();
        }
    }

    // --- queueing ---

    /// Queues a frame the node's own threads forward (relayed broadcasts, GRAFT
    /// answers), waiting at most [`RELAY_WAIT`] for room.
    pub(crate) fn relay(&self, link: &Link, frame: Arc<[u8]>) -> Queued {
        self.queue_data(link, Frame::Shared(frame), RELAY_WAIT)
    }

    /// Queues a data frame only if there is room right now (`Push::Full` otherwise,
    /// and the peer is not dropped): for sending one frame to many links, where every
    /// link with room gets its copy before anyone waits.
    pub(crate) fn try_queue(&self, link: &Link, frame: Frame) -> Push {
        link.outbox.push_data(frame, Duration::ZERO, Duration::MAX)
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
    pub(crate) fn queue_data(&self, link: &Link, frame: Frame, max_wait: Duration) -> Queued {
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

    /// Queues a control frame (PING, PONG, PEERS, IHAVE, GRAFT, PRUNE) on its own
    /// queue. Full means the peer has left thousands of them unread: it is dropped.
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
    pub(crate) fn send_blocking(&self, link: &Link, frame: Frame) -> Result<(), Error> {
        match self.queue_data(link, frame, self.config.peer_timeout) {
            Queued::Yes => Ok(()),
            Queued::PeerDropped => Err(Error::PeerTooSlow(link.addr)),
            Queued::LinkClosing => Err(Error::LinkClosed(link.addr)),
        }
    }

    fn drop_slow_peer(&self, link: &Link) {
        let (frames, bytes) = link.outbox.backlog();
        match link.outbox.full_by() {
            Some(Limit::Bytes) => {
                stats::add(&self.stats.queue_budget_drops, 1);
                log::warn!(
                    "{}: outbound queue over its byte budget ({bytes} of {} bytes, {frames} \
                     frames queued), dropping the peer",
                    link.addr,
                    link.outbox.byte_budget()
                );
            }
            Some(Limit::Control) => {
                log::warn!("{}: control queue full, dropping the peer", link.addr)
            }
            Some(Limit::Frames) | None => log::warn!(
                "{}: outbound queue full ({frames} of {} frames, {bytes} bytes queued), \
                 dropping the peer",
                link.addr,
                self.config.queue_len
            ),
        }
        stats::add(&self.stats.slow_peers_dropped, 1);
        self.close(link, DownReason::QueueFull);
    }

    /// The reason a link's reader ended with, corrected for what its writer saw. A
    /// writer whose send made no progress for the write timeout shuts the stream
    /// down, and the reader then sees the end of the stream (or a read error), which
    /// would blame the peer for closing. The peer stopped reading: `NotReading`,
    /// counted in `not_reading_drops`.
    pub(crate) fn reader_ended(&self, link: &Link, reason: DownReason) -> DownReason {
        let blames_the_socket =
            matches!(reason, DownReason::ClosedByPeer | DownReason::ReadFailed(_));
        if blames_the_socket && link.outbox.send_timed_out() {
            stats::add(&self.stats.not_reading_drops, 1);
            return DownReason::NotReading;
        }
        reason
    }

    // --- connections, threads, dials ---

    /// Registers an open connection so `stop` can shut it down.
    pub(crate) fn add_conn(&self, conn_id: u64, closer: Closer) {
        self.registry.lock().conns.insert(conn_id, closer);
    }

    /// A connection ended: forget it (and its retirement, if it was a duplicate).
    pub(crate) fn remove_conn(&self, conn_id: u64) {
        {
            let mut r = self.registry.lock();
            r.conns.remove(&conn_id);
            r.retiring.retain(|x| x.conn_id != conn_id);
        }
        self.conn_ended.notify_all();
    }

    /// Keeps a connection thread's handle, to be joined by maintenance or `stop`.
    pub(crate) fn add_thread(&self, h: JoinHandle<()>) {
        self.registry.lock().threads.push(h);
    }

    /// Joins connection threads that have finished.
    pub(crate) fn reap_threads(&self) {
        let done: Vec<JoinHandle<()>> = {
            let mut r = self.registry.lock();
            let (done, running) = std::mem::take(&mut r.threads)
                .into_iter()
                .partition(|h| h.is_finished());
            r.threads = running;
            done
        };
        join_all(done);
    }

    /// Claims `addr` for a dial, or hands out a way to wait for the dial running.
    pub(crate) fn claim_dial(&self, addr: SocketAddr) -> DialClaim {
        let mut r = self.registry.lock();
        match r.dialing.get_mut(&addr) {
            Some(waiters) => {
                let (tx, rx) = bounded(0);
                waiters.push(tx);
                DialClaim::Busy(rx)
            }
            None => {
                r.dialing.insert(addr, Vec::new());
                DialClaim::Mine
            }
        }
    }

    /// The dial of `addr` is over (its link is registered, or it failed): whoever
    /// waits for it wakes.
    pub(crate) fn end_dial(&self, addr: &SocketAddr) {
        // Dropping the senders disconnects the waiters' receivers.
        let waiters = self.registry.lock().dialing.remove(addr);
        drop(waiters);
    }

    // --- stop ---

    /// The links' part of `Node::stop`, once the acceptor and maintenance threads are
    /// gone: LEAVE on every link, duplicates half-closed, a short wait for links to
    /// close gracefully, then every socket shut and every connection thread joined.
    pub(crate) fn shut_down(&self) {
        let links = self.registry.lock().table.drain();
        for link in &links {
            link.send_leave();
            self.emit_peer_down(link, DownReason::NodeStopped);
        }
        drop(links);
        // Duplicates being wound down are half-closed now rather than after their
        // linger, so the graceful wait below is not spent waiting for them.
        let retiring = std::mem::take(&mut self.registry.lock().retiring);
        for r in retiring {
            match r.outbox {
                Some(outbox) => outbox.close(),
                None => r.closer.half_close(),
            }
        }
        let deadline = Instant::now() + GRACEFUL_CLOSE;
        {
            let mut r = self.registry.lock();
            while !r.conns.is_empty() {
                if self.conn_ended.wait_until(&mut r, deadline).timed_out() {
                    break;
                }
            }
        }
        let open: Vec<Closer> = self.registry.lock().conns.values().cloned().collect();
        for c in open {
            c.shutdown();
        }
        loop {
            let handles = std::mem::take(&mut self.registry.lock().threads);
            if handles.is_empty() {
                break;
            }
            join_all(handles);
        }
    }
}

/// Bytes of text an event holds: what the event byte budget counts.
fn text_bytes(ev: &Event) -> usize {
    match ev {
        Event::Message { text, .. } | Event::Broadcast { text, .. } => text.len(),
        _ => 0,
    }
}

fn join_all(handles: Vec<JoinHandle<()>>) {
    for h in handles {
        if h.join().is_err() {
            log::error!("a connection thread panicked");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn links_with_cap(max_connections: usize, max_pending_handshakes: usize) -> Links {
        let config = Config {
            max_connections,
            max_pending_handshakes,
            ..Config::default()
        };
        Links::new(Arc::new(config), Clock::start()).0
    }

    #[test]
    fn conn_slots_are_capped_and_each_is_freed_once_on_drop() {
        let links = links_with_cap(3, 1);
        let a = links.admit_connection().expect("first");
        let b = links.conn_slot().expect("second (a dial)");
        let c = links.admit_connection().expect("third");
        assert!(!links.has_free_slot());
        assert!(links.conn_slot().is_none(), "a dial past the cap");
        assert!(links.admit_connection().is_none(), "an accept past the cap");
        assert_eq!(links.stats().snapshot().connections_refused_cap, 1);
        // A refused attempt took no place: freeing one makes exactly one free.
        drop(b);
        assert!(links.has_free_slot());
        let d = links.conn_slot().expect("the freed place");
        assert!(links.conn_slot().is_none());
        drop((a, c, d));
        assert_eq!(links.open.load(Ordering::SeqCst), 0);
    }

    #[test]
    fn nothing_lingers_in_the_places_kept_for_handshakes() {
        // Cap 4, 2 kept for handshakes: lingering is allowed while fewer than 2
        // places are taken.
        let links = links_with_cap(4, 2);
        let first = links.conn_slot().expect("slot");
        assert!(links.may_linger());
        let second = links.conn_slot().expect("slot");
        assert!(!links.may_linger());
        drop(second);
        assert!(links.may_linger());
        drop(first);
    }

    use crate::p2p_message::NodeId;

    fn links(configure: impl FnOnce(&mut Config)) -> (Links, Receiver<Event>) {
        let mut config = Config::default();
        configure(&mut config);
        let (links, events, _wake) = Links::new(Arc::new(config), Clock::start());
        (links, events)
    }

    fn message(len: usize) -> Event {
        Event::Message {
            from_id: NodeId(1),
            from: "127.0.0.1:9000".parse().expect("addr"),
            text: "m".repeat(len),
        }
    }

    fn peer_up() -> Event {
        Event::PeerUp(PeerInfo {
            node_id: NodeId(2),
            addr: "127.0.0.1:9001".parse().expect("addr"),
            direction: Direction::Inbound,
            rtt: None,
            connected_for: Duration::ZERO,
            encryption: Encryption::Tls,
            addr_verified: true,
        })
    }

    impl Links {
        /// Text bytes the queue holds, after forgetting what was received.
        fn queued_event_bytes(&self) -> (usize, usize) {
            let mut p = self.pending_events.lock();
            self.forget_received(&mut p);
            assert_eq!(
                p.bytes,
                p.sizes.iter().map(|&(_, s)| s as usize).sum::<usize>()
            );
            (self.events.len(), p.bytes)
        }

        fn dropped(&self) -> u64 {
            self.stats.events_dropped.load(Ordering::Relaxed)
        }
    }

    #[test]
    fn event_bytes_follow_what_the_application_receives() {
        let (links, rx) = links(|c| c.max_pending_event_bytes = 1000);
        links.emit(peer_up());
        links.emit(message(400));
        links.emit(message(400));
        assert_eq!(links.queued_event_bytes(), (3, 800));
        // 1,200 bytes would be over the budget: dropped and counted.
        links.emit(message(400));
        assert_eq!(links.dropped(), 1);
        // A link event has no text: only the count bounds it.
        links.emit(peer_up());
        assert_eq!(links.queued_event_bytes(), (4, 800));
        // The application receives the oldest two (PeerUp, 400 bytes): room for 400.
        assert!(matches!(rx.try_recv(), Ok(Event::PeerUp(_))));
        assert!(matches!(rx.try_recv(), Ok(Event::Message { .. })));
        assert_eq!(links.queued_event_bytes(), (2, 400));
        links.emit(message(600));
        assert_eq!(links.queued_event_bytes(), (3, 1000));
        assert_eq!(links.dropped(), 1);
        // Everything received: nothing is held.
        while rx.try_recv().is_ok() {}
        assert_eq!(links.queued_event_bytes(), (0, 0));
    }

    #[test]
    fn an_empty_event_queue_takes_a_message_larger_than_the_budget() {
        let (links, rx) = links(|c| c.max_pending_event_bytes = 1000);
        links.emit(message(5000));
        assert_eq!(links.dropped(), 0);
        links.emit(message(300));
        assert_eq!(links.dropped(), 1, "the budget is used up");
        assert!(rx.try_recv().is_ok());
        links.emit(message(300));
        assert_eq!(links.dropped(), 1);
        assert_eq!(links.queued_event_bytes(), (1, 300));
    }

    #[test]
    fn short_texts_take_no_byte_accounting_and_long_ones_are_trimmed_in_order() {
        let (links, rx) = links(|c| c.max_pending_event_bytes = 1000);
        for _ in 0..100 {
            links.emit(message(SMALL_EVENT)); // short: counted by number only
        }
        links.emit(message(600));
        assert_eq!(links.queued_event_bytes(), (101, 600));
        for _ in 0..100 {
            assert!(rx.try_recv().is_ok());
        }
        // The long one is still queued: the short ones received before it do not
        // trim it.
        assert_eq!(links.queued_event_bytes(), (1, 600));
        links.emit(message(600));
        assert_eq!(links.dropped(), 1, "600 + 600 is over the budget");
        assert!(rx.try_recv().is_ok());
        assert_eq!(links.queued_event_bytes(), (0, 0));
    }

    #[test]
    fn the_event_count_still_bounds_the_queue_and_its_sizes() {
        let (links, _rx) = links(|c| c.max_pending_events = 3);
        for _ in 0..10 {
            links.emit(peer_up());
        }
        assert_eq!(links.dropped(), 7);
        assert_eq!(links.queued_event_bytes(), (3, 0));
    }

    #[test]
    fn deliver_over_the_byte_budget_waits_then_drops_and_counts() {
        // Half of 100 ms: the bounded wait is 50 ms.
        let (links, rx) = links(|c| {
            c.max_pending_event_bytes = 1000;
            c.peer_timeout = Duration::from_millis(100);
        });
        assert!(!links.deliver(message(900)), "room: no wait");
        assert!(links.deliver(message(300)), "over the budget: it waited");
        assert_eq!(links.dropped(), 1);
        assert_eq!(links.stats.event_budget_waits.load(Ordering::Relaxed), 1);
        assert_eq!(links.queued_event_bytes(), (1, 900));
        // Once the application has received, a message is delivered without a wait.
        assert!(rx.try_recv().is_ok());
        assert!(!links.deliver(message(1000)));
        assert_eq!(links.dropped(), 1);
    }

    #[test]
    fn deliver_over_the_byte_budget_is_delivered_when_the_application_receives() {
        let (links, rx) = links(|c| {
            c.max_pending_event_bytes = 1000;
            c.peer_timeout = Duration::from_secs(20); // the wait: 1 s at most
        });
        links.deliver(message(1000));
        let consumer = std::thread::spawn(move || {
            // Takes the first message (at once, or while deliver waits), then the
            // second, which deliver could only queue after the first was taken.
            let first = rx.recv_timeout(Duration::from_secs(10));
            let second = rx.recv_timeout(Duration::from_secs(10));
            (first.is_ok(), second.is_ok())
        });
        links.deliver(message(1000));
        assert_eq!(consumer.join().expect("consumer"), (true, true));
        assert_eq!(links.dropped(), 0);
    }
}
