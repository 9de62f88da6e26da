//! `PeerTable`: the linked peers by node id, and the one-link-per-pair rule.
//!
//! This is the C++ `std::set<std::string> peers` grown into what it needed to be. It
//! is plain data: no lock, no I/O, and it does not even know what a link is beyond
//! the [`Peer`] trait, so its rules are tested here without sockets. The link manager
//! (`links.rs`) keeps it behind its lock; callers copy what they need out (an
//! `Arc`, a `Vec` of them), let the guard drop, then write.

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use crate::event::Direction;
use crate::p2p_message::NodeId;
use crate::state::eviction::{self, Candidate};

/// What the table needs to know of a link to apply its rules.
pub(crate) trait Peer {
    /// Unique per connection, so a closing duplicate never removes its replacement.
    fn conn_id(&self) -> u64;
    fn node_id(&self) -> NodeId;
    /// The peer's listen address (its socket address when not verified).
    fn addr(&self) -> SocketAddr;
    /// Whether `addr` is proven to be the peer's (we dialled it, or a dial-back
    /// probe found the peer's id there).
    fn verified(&self) -> bool;
    fn direction(&self) -> Direction;
    /// The id of the node that dialled this connection: orders duplicate connections
    /// between the same pair; see [`PeerTable::insert`].
    fn dialler(&self) -> NodeId;
    /// Milliseconds since the node's epoch when a frame last arrived.
    fn last_seen_ms(&self) -> u64;
    /// The source group of the socket's remote IP (`state::net::net_group`), for
    /// the eviction rule.
    fn group(&self) -> IpAddr;
    /// Last measured round trip in microseconds, `u64::MAX` when not measured yet.
    fn rtt_us(&self) -> u64;
    /// Milliseconds since the node's epoch when the link was made.
    fn connected_ms(&self) -> u64;
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
pub(crate) enum Insert<L> {
    /// The new link is live. `replaced` are older links it superseded: a duplicate
    /// connection to the same node, or a stale entry for a node that restarted on the
    /// same address with a new id. `evicted` is the inbound link removed to make room
    /// for it (see [`eviction::inbound_victim`]); the caller closes it.
    Added {
        replaced: Vec<Arc<L>>,
        evicted: Option<Arc<L>>,
    },
    /// The pair already has a link that wins over the new connection; close the new one.
    Kept(Arc<L>),
    /// `max_links` (or, for an inbound link, `max_inbound_links`) reached, and no
    /// inbound link gives way to this one.
    Full,
    /// Another node holds this listen address and is alive (or the newcomer's address
    /// is unverified and anyone holds it); the newcomer is refused, so a JOIN that
    /// merely claims an address cannot push a peer out.
    AddressTaken,
}

/// Links by node id.
pub(crate) struct PeerTable<L> {
    links: HashMap<NodeId, Arc<L>>,
}

impl<L> Default for PeerTable<L> {
    fn default() -> Self {
        PeerTable {
            links: HashMap::new(),
        }
    }
}

impl<L: Peer> PeerTable<L> {
    /// Adds a link that finished its handshake, keeping one link per pair of nodes.
    ///
    /// When two connections join the same pair, each side keeps the one the node with
    /// the smaller id dialled, which both ends know alike, so both keep the *same*
    /// TCP connection whatever order their handshakes finished in. When the same node
    /// dialled both (a dial repeated, a restart), the link already in the table stays:
    /// nothing the peer chooses (such as its source port, which decided this before)
    /// lets a new connection displace a live link. A stale one goes with the heartbeat
    /// timeout, and the next connection takes its place.
    ///
    /// A link of another node id on the same listen address is replaced only when it
    /// has been silent since `stale_before_ms` (the node restarted with a new id and
    /// the old connection never closed); a live one keeps the address. A verified
    /// owner always wins over an unverified holder: a verified newcomer replaces an
    /// unverified link on its address, live or not, and an unverified newcomer never
    /// takes an address anyone holds.
    ///
    /// When a cap is reached and the newcomer is inbound, an inbound link of a more
    /// represented source group may give way ([`eviction::inbound_victim`]): it is
    /// removed and returned in `Added::evicted`. Nothing is evicted while the caps
    /// leave room.
    pub(crate) fn insert(
        &mut self,
        link: Arc<L>,
        limits: Limits,
        stale_before_ms: u64,
    ) -> Insert<L> {
        let mut replaced = Vec::new();
        let mut victim = None;
        if let Some(old) = self.links.get(&link.node_id()) {
            if old.dialler() <= link.dialler() {
                return Insert::Kept(Arc::clone(old));
            }
            replaced.push(Arc::clone(old));
        } else if self.links.len() >= limits.max_links
            || (link.direction() == Direction::Inbound
                && self.inbound_count() >= limits.max_inbound)
        {
            if link.direction() != Direction::Inbound {
                return Insert::Full;
            }
            match self.inbound_victim(link.group()) {
                Some(v) => victim = Some(v),
                None => return Insert::Full,
            }
        }
        let others: Vec<&Arc<L>> = self
            .links
            .values()
            .filter(|l| l.addr() == link.addr() && l.node_id() != link.node_id())
            .collect();
        if !others.is_empty() && !link.verified() {
            return Insert::AddressTaken;
        }
        if others
            .iter()
            .any(|l| l.verified() && l.last_seen_ms() >= stale_before_ms)
        {
            return Insert::AddressTaken;
        }
        let stale: Vec<NodeId> = others.iter().map(|l| l.node_id()).collect();
        for id in stale {
            if let Some(l) = self.links.remove(&id) {
                replaced.push(l);
            }
        }
        let evicted = victim.and_then(|v| self.links.remove(&v));
        self.links.insert(link.node_id(), link);
        Insert::Added { replaced, evicted }
    }

    /// The node id of the inbound link that gives way to a newcomer from `group`.
    fn inbound_victim(&self, group: IpAddr) -> Option<NodeId> {
        let inbound: Vec<&Arc<L>> = self
            .links
            .values()
            .filter(|l| l.direction() == Direction::Inbound)
            .collect();
        let candidates: Vec<Candidate> = inbound
            .iter()
            .map(|l| Candidate {
                conn_id: l.conn_id(),
                group: l.group(),
                rtt_us: l.rtt_us(),
                connected_ms: l.connected_ms(),
            })
            .collect();
        let conn_id = eviction::inbound_victim(&candidates, group)?;
        inbound
            .iter()
            .find(|l| l.conn_id() == conn_id)
            .map(|l| l.node_id())
    }

    fn inbound_count(&self) -> usize {
        self.links
            .values()
            .filter(|l| l.direction() == Direction::Inbound)
            .count()
    }

    /// Removes the link of `node_id` if it is still connection `conn_id`.
    pub(crate) fn remove(&mut self, node_id: NodeId, conn_id: u64) -> Option<Arc<L>> {
        match self.links.get(&node_id) {
            Some(l) if l.conn_id() == conn_id => self.links.remove(&node_id),
            _ => None,
        }
    }

    /// Removes and returns every link (node shutdown).
    pub(crate) fn drain(&mut self) -> Vec<Arc<L>> {
        self.links.drain().map(|(_, l)| l).collect()
    }

    pub(crate) fn get(&self, node_id: NodeId) -> Option<Arc<L>> {
        self.links.get(&node_id).cloned()
    }

    pub(crate) fn by_addr(&self, addr: &SocketAddr) -> Option<Arc<L>> {
        self.links.values().find(|l| l.addr() == *addr).cloned()
    }

    pub(crate) fn links(&self) -> Vec<Arc<L>> {
        self.links.values().cloned().collect()
    }

    pub(crate) fn len(&self) -> usize {
        self.links.len()
    }

    /// The verified listen addresses of the links: what may be gossiped, and what
    /// needs no dial. An unverified link's socket address is neither.
    pub(crate) fn linked_addrs(&self) -> HashSet<SocketAddr> {
        self.links
            .values()
            .filter(|l| l.verified())
            .map(|l| l.addr())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A link as the table sees it: no socket needed.
    struct Fake {
        conn_id: u64,
        node_id: NodeId,
        addr: SocketAddr,
        direction: Direction,
        dialler: NodeId,
        last_seen_ms: u64,
        group: IpAddr,
        connected_ms: u64,
        verified: bool,
    }

    impl Peer for Fake {
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
            self.last_seen_ms
        }
        fn group(&self) -> IpAddr {
            self.group
        }
        fn rtt_us(&self) -> u64 {
            u64::MAX
        }
        fn connected_ms(&self) -> u64 {
            self.connected_ms
        }
    }

    fn lim(max_links: usize) -> Limits {
        Limits {
            max_links,
            max_inbound: max_links,
        }
    }

    fn link(conn_id: u64, node: u64, addr: &str, dialler: u64) -> Arc<Fake> {
        let addr: SocketAddr = addr.parse().expect("addr");
        Arc::new(Fake {
            conn_id,
            node_id: NodeId(node),
            addr,
            direction: Direction::Inbound,
            dialler: NodeId(dialler),
            last_seen_ms: 0,
            group: crate::state::net::net_group(addr.ip()),
            connected_ms: conn_id,
            verified: true,
        })
    }

    fn unverified(conn_id: u64, node: u64, addr: &str) -> Arc<Fake> {
        let mut l = link(conn_id, node, addr, node);
        if let Some(f) = Arc::get_mut(&mut l) {
            f.verified = false;
        }
        l
    }

    #[test]
    fn a_verified_owner_always_wins_over_an_unverified_holder() {
        let mut t = PeerTable::default();
        // An unverified link never takes an address anyone holds.
        let owner = link(1, 7, "127.0.0.1:9000", 7);
        assert!(matches!(t.insert(owner, lim(8), 0), Insert::Added { .. }));
        let claim = unverified(2, 8, "127.0.0.1:9000");
        assert!(matches!(t.insert(claim, lim(8), 0), Insert::AddressTaken));
        // A verified newcomer replaces a live unverified link on its address.
        let mut t = PeerTable::default();
        let claim = unverified(3, 8, "127.0.0.1:9001");
        assert!(matches!(t.insert(claim, lim(8), 0), Insert::Added { .. }));
        assert!(t.linked_addrs().is_empty(), "unverified: not gossiped");
        let owner = link(4, 7, "127.0.0.1:9001", 7);
        match t.insert(owner, lim(8), 0) {
            Insert::Added { replaced, .. } => {
                assert_eq!(replaced.len(), 1);
                assert_eq!(replaced[0].conn_id, 3);
            }
            _ => panic!("the verified owner must win"),
        }
        assert_eq!(t.len(), 1);
    }

    #[test]
    fn duplicate_connection_keeps_the_smaller_diallers_in_any_order() {
        let a = || link(1, 7, "127.0.0.1:9000", 3);
        let b = || link(2, 7, "127.0.0.1:9000", 7);
        // a first, then b: b loses.
        let mut t = PeerTable::default();
        assert!(matches!(t.insert(a(), lim(8), 0), Insert::Added { .. }));
        assert!(matches!(t.insert(b(), lim(8), 0), Insert::Kept(l) if l.conn_id == 1));
        // b first, then a: a replaces b.
        let mut t = PeerTable::default();
        assert!(matches!(t.insert(b(), lim(8), 0), Insert::Added { .. }));
        match t.insert(a(), lim(8), 0) {
            Insert::Added { replaced, .. } => {
                assert_eq!(replaced.len(), 1);
                assert_eq!(replaced[0].conn_id, 2);
            }
            _ => panic!("a should replace b"),
        }
        assert_eq!(t.len(), 1);
        assert_eq!(t.get(NodeId(7)).map(|l| l.conn_id), Some(1));
    }

    #[test]
    fn a_second_connection_from_the_same_dialler_never_displaces_the_live_one() {
        // Before, the lower source port won, and the peer picks its source port.
        let first = link(1, 7, "127.0.0.1:9000", 7);
        let mut t = PeerTable::default();
        assert!(matches!(t.insert(first, lim(8), 0), Insert::Added { .. }));
        for conn in 2..5 {
            let again = link(conn, 7, "127.0.0.1:9000", 7);
            assert!(matches!(t.insert(again, lim(8), 0), Insert::Kept(l) if l.conn_id == 1));
        }
        assert_eq!(t.get(NodeId(7)).map(|l| l.conn_id), Some(1));
    }

    #[test]
    fn new_node_on_same_address_replaces_stale_entry() {
        let mut t = PeerTable::default();
        assert!(matches!(
            t.insert(link(1, 7, "127.0.0.1:9000", 7), lim(8), 0),
            Insert::Added { .. }
        ));
        // Node 7 was last heard of at 0 ms; with "stale before 0" it still counts as
        // alive and keeps its address against a newcomer's claim.
        assert!(matches!(
            t.insert(link(2, 8, "127.0.0.1:9000", 8), lim(8), 0),
            Insert::AddressTaken
        ));
        // Silent since before 1 ms: stale, replaced.
        match t.insert(link(2, 8, "127.0.0.1:9000", 8), lim(8), 1) {
            Insert::Added { replaced, .. } => assert_eq!(replaced[0].node_id, NodeId(7)),
            _ => panic!("stale entry should be replaced"),
        }
        assert_eq!(t.len(), 1);
        assert!(t.get(NodeId(7)).is_none());
    }

    #[test]
    fn removal_only_by_current_connection() {
        let mut t = PeerTable::default();
        t.insert(link(1, 7, "127.0.0.1:9000", 7), lim(8), 0);
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
        t.insert(link(1, 1, "127.0.0.1:1", 1), limits, 0);
        assert!(matches!(
            t.insert(link(2, 2, "127.0.0.1:2", 2), limits, 0),
            Insert::Full
        ));
    }

    #[test]
    fn full_inbound_cap_evicts_from_a_crowded_group_only() {
        let mut t = PeerTable::default();
        let limits = Limits {
            max_links: 16,
            max_inbound: 4,
        };
        for i in 1..=4 {
            let addr = format!("10.0.1.{i}:1");
            assert!(matches!(
                t.insert(link(i, i, &addr, i), limits, 0),
                Insert::Added { evicted: None, .. }
            ));
        }
        // Same /24 as the four: refused, nobody evicted.
        assert!(matches!(
            t.insert(link(5, 5, "10.0.1.9:1", 5), limits, 0),
            Insert::Full
        ));
        assert_eq!(t.len(), 4);
        // Another /24: the youngest unprotected link (conn 4) gives way.
        match t.insert(link(6, 6, "10.0.2.1:1", 6), limits, 0) {
            Insert::Added {
                evicted: Some(v), ..
            } => assert_eq!(v.conn_id, 4),
            _ => panic!("a link of the crowded group should be evicted"),
        }
        assert_eq!(t.len(), 4);
        assert!(t.get(NodeId(4)).is_none());
        assert!(t.get(NodeId(6)).is_some());
    }

    #[test]
    fn max_links_is_enforced() {
        let mut t = PeerTable::default();
        t.insert(link(1, 1, "127.0.0.1:1", 1), lim(1), 0);
        assert!(matches!(
            t.insert(link(2, 2, "127.0.0.1:2", 2), lim(1), 0),
            Insert::Full
        ));
    }
}
