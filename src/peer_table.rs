//! `PeerTable`: the linked peers, each with the sending end of its outbound queue, plus
//! every open socket and connection thread so `stop()` can close and join them.
//!
//! This is the C++ `std::set<std::string> peers` grown into what it needed to be. It
//! does no I/O and never blocks: callers copy what they need out (an `Arc<Link>`, a
//! `Vec` of them), let the guard drop, then write. The one-link-per-pair rule lives in
//! [`PeerTable::insert`], where both ends of a connection apply it alike.

use std::collections::{HashMap, HashSet};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::event::{Direction, PeerInfo};
use crate::lazy_push::LinkTree;
use crate::outbox::Outbox;
use crate::p2p_message::NodeId;
use parking_lot::Mutex;

/// Marks an RTT that has not been measured yet.
const NO_RTT: u64 = u64::MAX;

/// A live link: identity, queue, and the counters the reader and the maintenance
/// thread update without taking the table lock.
pub(crate) struct Link {
    /// Unique per connection, so a closing duplicate never removes its replacement.
    pub conn_id: u64,
    pub node_id: NodeId,
    /// The peer's listen address.
    pub addr: SocketAddr,
    pub direction: Direction,
    /// Orders duplicate connections between the same pair; see [`PeerTable::insert`].
    pub dial_key: (NodeId, u16),
    /// Outbound frames and the socket's write side.
    pub outbox: Arc<Outbox>,
    /// A clone of the socket, only to `shutdown` it from another thread.
    pub stream: TcpStream,
    pub connected_at: Instant,
    /// Milliseconds since the node's epoch when a frame last arrived.
    pub last_seen_ms: AtomicU64,
    /// Milliseconds since the node's epoch when the last PING was queued.
    pub last_ping_ms: AtomicU64,
    /// Last measured round trip in microseconds, or `NO_RTT`.
    pub rtt_us: AtomicU64,
    /// Which origins' broadcasts this link carries, and what it announces next (see
    /// `lazy_push`).
    pub tree: Mutex<LinkTree>,
}

impl Link {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        conn_id: u64,
        node_id: NodeId,
        addr: SocketAddr,
        direction: Direction,
        dial_key: (NodeId, u16),
        outbox: Arc<Outbox>,
        stream: TcpStream,
        now_ms: u64,
    ) -> Link {
        Link {
            conn_id,
            node_id,
            addr,
            direction,
            dial_key,
            outbox,
            stream,
            connected_at: Instant::now(),
            last_seen_ms: AtomicU64::new(now_ms),
            last_ping_ms: AtomicU64::new(now_ms),
            rtt_us: AtomicU64::new(NO_RTT),
            tree: Mutex::new(LinkTree::default()),
        }
    }

    pub(crate) fn set_rtt(&self, rtt: Duration) {
        let us = u64::try_from(rtt.as_micros()).unwrap_or(NO_RTT - 1);
        self.rtt_us.store(us, Ordering::Relaxed);
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
        }
    }
}

/// A connection that lost the one-link-per-pair rule. It is no longer a link (nothing
/// new is queued on it), but its reader keeps delivering what the peer already sent
/// until the peer closes it, so a message sent during a simultaneous dial is never
/// lost. The maintenance thread enforces the two deadlines.
pub(crate) struct Retiring {
    pub conn_id: u64,
    pub stream: TcpStream,
    /// Its outbox, if it has a writer: at `half_close_at` the writer is told to flush
    /// and half-close, so nothing already queued is cut off.
    pub outbox: Option<Arc<Outbox>>,
    /// When to half-close it.
    pub half_close_at: Option<Instant>,
    /// When to shut it down whatever the peer does.
    pub give_up_at: Instant,
}

/// The link caps [`PeerTable::insert`] enforces.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Limits {
    /// Links of both directions.
    pub max_links: usize,
    /// Links the peer dialled.
    pub max_inbound: usize,
}

/// What [`PeerTable::insert`] decided.
pub(crate) enum Insert {
    /// The new link is live. `replaced` are older links it superseded: a duplicate
    /// connection to the same node, or a stale entry for a node that restarted on the
    /// same address with a new id.
    Added { replaced: Vec<Arc<Link>> },
    /// The pair already has a link that wins over the new connection; close the new one.
    Kept(Arc<Link>),
    /// `max_links` (or, for an inbound link, `max_inbound_links`) reached.
    Full,
    /// Another node holds this listen address and is alive; the newcomer is refused,
    /// so a JOIN that merely claims an address cannot push a live peer out.
    AddressTaken,
}

/// Links by node id, open sockets by connection id, and connection threads.
#[derive(Default)]
pub(crate) struct PeerTable {
    links: HashMap<NodeId, Arc<Link>>,
    /// Every open connection, handshaking or linked, to shut it down on stop.
    conns: HashMap<u64, TcpStream>,
    /// Connection threads (each joins its own writer); reaped by maintenance.
    threads: Vec<JoinHandle<()>>,
    /// Addresses with a dial in progress, so one address is dialled once at a time.
    dialing: HashSet<SocketAddr>,
    /// Duplicate connections being wound down.
    retiring: Vec<Retiring>,
}

impl PeerTable {
    /// Adds a link that finished its handshake, keeping one link per pair of nodes.
    ///
    /// When two connections join the same pair (both dialled at once, or a dial
    /// repeated), each side keeps the one with the smaller `dial_key`, the dialler's
    /// id and source port, which both ends know alike, so both keep the *same* TCP
    /// connection whatever order their handshakes finished in.
    ///
    /// A link of another node id on the same listen address is replaced only when it
    /// has been silent since `stale_before_ms` (the node restarted with a new id and
    /// the old connection never closed); a live one keeps the address.
    pub(crate) fn insert(
        &mut self,
        link: Arc<Link>,
        limits: Limits,
        stale_before_ms: u64,
    ) -> Insert {
        let mut replaced = Vec::new();
        if let Some(old) = self.links.get(&link.node_id) {
            if old.dial_key <= link.dial_key {
                return Insert::Kept(Arc::clone(old));
            }
            replaced.push(Arc::clone(old));
        } else if self.links.len() >= limits.max_links
            || (link.direction == Direction::Inbound && self.inbound_count() >= limits.max_inbound)
        {
            return Insert::Full;
        }
        let others: Vec<&Arc<Link>> = self
            .links
            .values()
            .filter(|l| l.addr == link.addr && l.node_id != link.node_id)
            .collect();
        if others
            .iter()
            .any(|l| l.last_seen_ms.load(Ordering::Relaxed) >= stale_before_ms)
        {
            return Insert::AddressTaken;
        }
        let stale: Vec<NodeId> = others.iter().map(|l| l.node_id).collect();
        for id in stale {
            if let Some(l) = self.links.remove(&id) {
                replaced.push(l);
            }
        }
        self.links.insert(link.node_id, link);
        Insert::Added { replaced }
    }

    fn inbound_count(&self) -> usize {
        self.links
            .values()
            .filter(|l| l.direction == Direction::Inbound)
            .count()
    }

    /// Removes the link of `node_id` if it is still connection `conn_id`.
    pub(crate) fn remove(&mut self, node_id: NodeId, conn_id: u64) -> Option<Arc<Link>> {
        match self.links.get(&node_id) {
            Some(l) if l.conn_id == conn_id => self.links.remove(&node_id),
            _ => None,
        }
    }

    /// Removes and returns every link (node shutdown).
    pub(crate) fn drain_links(&mut self) -> Vec<Arc<Link>> {
        self.links.drain().map(|(_, l)| l).collect()
    }

    pub(crate) fn get(&self, node_id: NodeId) -> Option<Arc<Link>> {
        self.links.get(&node_id).cloned()
    }

    pub(crate) fn by_addr(&self, addr: &SocketAddr) -> Option<Arc<Link>> {
        self.links.values().find(|l| l.addr == *addr).cloned()
    }

    pub(crate) fn links(&self) -> Vec<Arc<Link>> {
        self.links.values().cloned().collect()
    }

    pub(crate) fn len(&self) -> usize {
        self.links.len()
    }

    pub(crate) fn linked_addrs(&self) -> HashSet<SocketAddr> {
        self.links.values().map(|l| l.addr).collect()
    }

    pub(crate) fn add_conn(&mut self, conn_id: u64, stream: TcpStream) {
        self.conns.insert(conn_id, stream);
    }

    pub(crate) fn remove_conn(&mut self, conn_id: u64) {
        self.conns.remove(&conn_id);
        self.retiring.retain(|r| r.conn_id != conn_id);
    }

    pub(crate) fn add_retiring(&mut self, r: Retiring) {
        self.retiring.push(r);
    }

    /// Takes every retiring connection (node shutdown).
    pub(crate) fn drain_retiring(&mut self) -> Vec<Retiring> {
        std::mem::take(&mut self.retiring)
    }

    /// Sockets whose retirement deadlines passed: `(to half-close, to shut down)`.
    pub(crate) fn due_retiring(&mut self, now: Instant) -> (Vec<TcpStream>, Vec<TcpStream>) {
        let mut half = Vec::new();
        let mut shut = Vec::new();
        self.retiring.retain_mut(|r| {
            if r.give_up_at <= now {
                if let Ok(s) = r.stream.try_clone() {
                    shut.push(s);
                }
                return false;
            }
            if r.half_close_at.is_some_and(|t| t <= now) {
                r.half_close_at = None;
                match r.outbox.take() {
                    // A writer that is still sending is left to the give-up deadline
                    // rather than cut off mid-queue.
                    Some(outbox) => outbox.close(),
                    None => {
                        if let Ok(s) = r.stream.try_clone() {
                            half.push(s);
                        }
                    }
                }
            }
            true
        });
        (half, shut)
    }

    pub(crate) fn conn_count(&self) -> usize {
        self.conns.len()
    }

    /// Clones of every open socket, to shut them down outside the lock.
    pub(crate) fn conn_streams(&self) -> Vec<TcpStream> {
        self.conns
            .values()
            .filter_map(|s| s.try_clone().ok())
            .collect()
    }

    pub(crate) fn add_thread(&mut self, h: JoinHandle<()>) {
        self.threads.push(h);
    }

    /// Takes the handles of threads that have finished (to join them outside the
    /// lock); with `all`, takes every handle.
    pub(crate) fn take_threads(&mut self, all: bool) -> Vec<JoinHandle<()>> {
        if all {
            return std::mem::take(&mut self.threads);
        }
        let (done, running) = std::mem::take(&mut self.threads)
            .into_iter()
            .partition(|h| h.is_finished());
        self.threads = running;
        done
    }

    pub(crate) fn threads_running(&self) -> usize {
        self.threads.iter().filter(|h| !h.is_finished()).count()
    }

    /// Claims `addr` for a dial; `false` if one is already in progress.
    pub(crate) fn start_dial(&mut self, addr: SocketAddr) -> bool {
        self.dialing.insert(addr)
    }

    pub(crate) fn end_dial(&mut self, addr: &SocketAddr) {
        self.dialing.remove(addr);
    }

    pub(crate) fn dialing(&self) -> &HashSet<SocketAddr> {
        &self.dialing
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    fn lim(max_links: usize) -> Limits {
        Limits {
            max_links,
            max_inbound: max_links,
        }
    }

    /// A real connected socket, because a `Link` keeps one for `shutdown`.
    fn socket() -> TcpStream {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind");
        let s = TcpStream::connect(l.local_addr().expect("addr")).expect("connect");
        let _ = l.accept().expect("accept");
        s
    }

    fn link(conn_id: u64, node: u64, addr: &str, key: (u64, u16)) -> Arc<Link> {
        let socket = socket();
        let outbox = Arc::new(Outbox::new(
            socket.try_clone().expect("clone"),
            1,
            Instant::now(),
        ));
        Arc::new(Link::new(
            conn_id,
            NodeId(node),
            addr.parse().expect("addr"),
            Direction::Inbound,
            (NodeId(key.0), key.1),
            outbox,
            socket,
            0,
        ))
    }

    #[test]
    fn duplicate_connection_keeps_smaller_dial_key_in_any_order() {
        let a = || link(1, 7, "127.0.0.1:9000", (3, 5000));
        let b = || link(2, 7, "127.0.0.1:9000", (7, 4000));
        // a first, then b: b loses.
        let mut t = PeerTable::default();
        assert!(matches!(t.insert(a(), lim(8), 0), Insert::Added { .. }));
        assert!(matches!(t.insert(b(), lim(8), 0), Insert::Kept(l) if l.conn_id == 1));
        // b first, then a: a replaces b.
        let mut t = PeerTable::default();
        assert!(matches!(t.insert(b(), lim(8), 0), Insert::Added { .. }));
        match t.insert(a(), lim(8), 0) {
            Insert::Added { replaced } => {
                assert_eq!(replaced.len(), 1);
                assert_eq!(replaced[0].conn_id, 2);
            }
            _ => panic!("a should replace b"),
        }
        assert_eq!(t.len(), 1);
        assert_eq!(t.get(NodeId(7)).map(|l| l.conn_id), Some(1));
    }

    #[test]
    fn new_node_on_same_address_replaces_stale_entry() {
        let mut t = PeerTable::default();
        assert!(matches!(
            t.insert(link(1, 7, "127.0.0.1:9000", (7, 1)), lim(8), 0),
            Insert::Added { .. }
        ));
        // Node 7 was last heard of at 0 ms; with "stale before 0" it still counts as
        // alive and keeps its address against a newcomer's claim.
        assert!(matches!(
            t.insert(link(2, 8, "127.0.0.1:9000", (8, 1)), lim(8), 0),
            Insert::AddressTaken
        ));
        // Silent since before 1 ms: stale, replaced.
        match t.insert(link(2, 8, "127.0.0.1:9000", (8, 1)), lim(8), 1) {
            Insert::Added { replaced } => assert_eq!(replaced[0].node_id, NodeId(7)),
            _ => panic!("stale entry should be replaced"),
        }
        assert_eq!(t.len(), 1);
        assert!(t.get(NodeId(7)).is_none());
    }

    #[test]
    fn removal_only_by_current_connection() {
        let mut t = PeerTable::default();
        t.insert(link(1, 7, "127.0.0.1:9000", (7, 1)), lim(8), 0);
        assert!(
            t.remove(NodeId(7), 99).is_none(),
            "old duplicate must not remove"
        );
        assert!(t.remove(NodeId(7), 1).is_some());
        assert_eq!(t.len(), 0);
    }

    #[test]
    fn inbound_cap_leaves_room_for_outbound() {
        let mut t = PeerTable::default();
        let limits = Limits {
            max_links: 8,
            max_inbound: 1,
        };
        t.insert(link(1, 1, "127.0.0.1:1", (1, 1)), limits, 0);
        assert!(matches!(
            t.insert(link(2, 2, "127.0.0.1:2", (2, 1)), limits, 0),
            Insert::Full
        ));
    }

    #[test]
    fn max_links_is_enforced() {
        let mut t = PeerTable::default();
        t.insert(link(1, 1, "127.0.0.1:1", (1, 1)), lim(1), 0);
        assert!(matches!(
            t.insert(link(2, 2, "127.0.0.1:2", (2, 1)), lim(1), 0),
            Insert::Full
        ));
    }
}
