//! Lazy push: broadcasts travel along a spanning tree instead of flooding every link,
//! in the manner of Plumtree (Leitão, Pereira, Rodrigues, "Epidemic Broadcast Trees",
//! SRDS 2007). The C++ original sent a broadcast to its direct peers only.
//!
//! Flooding sends every broadcast on every link, so each node receives it about as many
//! times as it has links, and on a small machine every copy costs a thread wakeup
//! (docs/BENCHMARKS.md). Here each link is *eager* or *lazy*:
//!
//! - a new broadcast is sent on eager links and only *announced* on lazy ones: their
//!   ids are collected and sent as one IHAVE per link every [`LAZY_INTERVAL`];
//! - a node that receives a copy it already has answers PRUNE for that copy's origin,
//!   and the sender then only announces that origin's broadcasts on that link. Each
//!   end decides only what it *receives* (with Plumtree's rule, where a duplicate
//!   makes both ends lazy, nodes lost their parent through their own duplicates:
//!   every broadcast waited for a GRAFT at 100 nodes), and each origin gets a tree of
//!   its own (one tree shared by all origins, pruned by all their duplicates, left
//!   nodes without a path for the others: p50 550 ms with 5 origins in 50 nodes).
//!   The links left sending an origin's broadcasts are the ones its copies arrive on
//!   first: a tree per origin;
//! - a node that is announced a broadcast it does not get within [`GRAFT_TIMEOUT`]
//!   sends GRAFT to the announcer, which sends the broadcast and makes the link eager
//!   again: the tree repairs itself when a link or node on it fails. While newer
//!   broadcasts of the same origin keep arriving, the tree is only lagging behind (a
//!   burst queues on the tree while announcements overtake it), and the node waits
//!   longer, up to [`GRAFT_PATIENCE`], instead of asking for copies already on
//!   their way;
//! - the tree is kept shallow. A duplicate that travelled fewer hops than the copy
//!   we took makes its sender our parent (we PRUNE the old parent instead of it). An
//!   announcement showing a neighbour two or more hops nearer the origin makes us
//!   GRAFT that neighbour (without ids: "send eagerly"); the old parent is pruned by
//!   the duplicate rule once both send, so no broadcast falls between the two.
//!   Without this the tree is whichever paths happened to be fastest while it
//!   formed, which on a busy machine are long chains (a copy's first arrival took up
//!   to 53 hops in a 100-node overlay four links across, measured).
//!
//! Every link starts eager, so a new overlay floods until its duplicates have pruned
//! it into a tree. Delivery stays exactly once (the seen cache), and reaches every node
//! of a connected overlay: if a tree link is lost, lazy neighbours still announce.
//!
//! This file holds the tree's state: what each link carries ([`LinkTree`]), the
//! broadcasts kept to answer GRAFTs, and the ones announced but missing. The handlers
//! that act on it, and the timed part the maintenance thread runs, are in the parent
//! module (`protocol/broadcast/mod.rs`).

use std::collections::hash_map::Entry;
use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use crate::p2p_message::{Announcement, BroadcastId, NodeId};

/// How long announcements are collected before they are sent: one IHAVE per lazy link
/// per interval, however many broadcasts it names. Announcements only matter when the
/// tree is broken, so they can wait; every frame costs the receiver a wakeup. At
/// 200 ms the announcements (and the path changes they trigger) doubled the 100-node
/// broadcast p99 (6-7 ms against 2.5-3.3 ms at 500 ms and 1 s, measured).
pub(crate) const LAZY_INTERVAL: Duration = Duration::from_millis(500);

/// How long a node waits, after an announcement of a broadcast it lacks, for the
/// tree to bring it before it asks the announcer (and then the next announcer).
pub(crate) const GRAFT_TIMEOUT: Duration = Duration::from_millis(50);

/// The longest a node keeps waiting for a missing broadcast because the tree is still
/// bringing that origin's broadcasts (see the module docs).
pub(crate) const GRAFT_PATIENCE: Duration = Duration::from_secs(1);

/// Origins whose latest arrival time is kept for that rule.
const PROGRESS_CAP: usize = 1024;

/// Broadcasts kept to answer GRAFTs, by count and by bytes, for [`STORE_TTL`].
const STORE_FRAMES: usize = 4096;
const STORE_BYTES: usize = 16 << 20;
const STORE_TTL: Duration = Duration::from_secs(30);

/// Missing broadcasts tracked at once; announcements beyond it are ignored, so peers
/// announcing made-up ids cost bounded memory.
const MISSING_CAP: usize = 8192;

/// Missing broadcasts one peer may have first announced at once: a peer announcing
/// made-up ids fills its own share, not the table, so the others' announcements
/// (and tree repair) still work.
const MISSING_PER_PEER: usize = 1024;

/// Announcers remembered per missing broadcast.
const MAX_ANNOUNCERS: usize = 4;

/// A broadcast announced to us that we do not have yet.
struct Missing {
    /// When to ask the next announcer.
    ask_at: Instant,
    /// When it was first announced.
    since: Instant,
    /// The peer whose announcement created the entry, charged for it.
    owner: NodeId,
    announcers: VecDeque<NodeId>,
}

/// Missing broadcasts, and when each origin's latest new broadcast arrived.
#[derive(Default)]
struct Wanted {
    missing: HashMap<BroadcastId, Missing>,
    /// Entries per owner (see [`MISSING_PER_PEER`]).
    owned: HashMap<NodeId, usize>,
    progress: HashMap<NodeId, Instant>,
}

impl Wanted {
    fn remove(&mut self, id: &BroadcastId) {
        if let Some(m) = self.missing.remove(id) {
            release(&mut self.owned, m.owner);
        }
    }
}

/// One entry fewer charged to `owner`.
fn release(owned: &mut HashMap<NodeId, usize>, owner: NodeId) {
    if let Entry::Occupied(mut e) = owned.entry(owner) {
        *e.get_mut() -= 1;
        if *e.get() == 0 {
            e.remove();
        }
    }
}

/// What a node remembers of a broadcast it received.
struct Kept {
    /// The frame to send on GRAFT (hop count advanced); `None` where the hop limit
    /// stopped it.
    frame: Option<Arc<[u8]>>,
    /// Hops it arrived with (0: our own).
    hops: u8,
    /// The neighbour it came from, our parent in the tree for its origin.
    parent: Option<NodeId>,
}

impl Kept {
    fn len(&self) -> usize {
        self.frame.as_ref().map_or(0, |f| f.len())
    }
}

/// Recent broadcasts by id, oldest first, to answer GRAFTs and to compare paths.
#[derive(Default)]
struct Store {
    kept: HashMap<BroadcastId, Kept>,
    order: VecDeque<(BroadcastId, Instant)>,
    bytes: usize,
}

impl Store {
    fn insert(&mut self, id: BroadcastId, kept: Kept, now: Instant) {
        while let Some(&(old, at)) = self.order.front() {
            let full = self.order.len() >= STORE_FRAMES || self.bytes + kept.len() > STORE_BYTES;
            if !full && now.duration_since(at) < STORE_TTL {
                break;
            }
            self.order.pop_front();
            if let Some(k) = self.kept.remove(&old) {
                self.bytes -= k.len();
            }
        }
        self.bytes += kept.len();
        if let Some(k) = self.kept.insert(id, kept) {
            self.bytes -= k.len();
        } else {
            self.order.push_back((id, now));
        }
    }

    /// Whether `via` offers `id` in `hops` hops, at least `gain` fewer than our
    /// parent did.
    fn is_better_path(&self, id: &BroadcastId, via: NodeId, hops: u8, gain: u8) -> bool {
        self.kept.get(id).is_some_and(|k| {
            k.parent.is_some_and(|p| p != via) && hops.saturating_add(gain) <= k.hops
        })
    }

    /// If `via` offers `id` in `hops` hops, at least `gain` fewer than our parent
    /// did, makes `via` the parent and returns the old one.
    fn better_path(&mut self, id: &BroadcastId, via: NodeId, hops: u8, gain: u8) -> Option<NodeId> {
        if !self.is_better_path(id, via, hops, gain) {
            return None;
        }
        let k = self.kept.get_mut(id)?;
        let old = k.parent.replace(via)?;
        k.hops = hops;
        Some(old)
    }
}

/// A better parent found for some origin: `to` replaces `from`.
pub(crate) struct Reparent {
    pub(crate) origin: NodeId,
    pub(crate) from: NodeId,
    pub(crate) to: NodeId,
}

/// Origins one link remembers in each set of [`LinkTree`]; past it the set starts
/// over (that origin's broadcasts are sent again until duplicates prune them), so
/// a peer cannot grow it without bound.
const ORIGINS_PER_LINK: usize = 4096;

/// One link's part in the broadcast trees.
#[derive(Default)]
pub(crate) struct LinkTree {
    /// Origins whose broadcasts we only announce here: the peer sent PRUNE for them.
    lazy_for: HashSet<NodeId>,
    /// Origins we sent PRUNE for (and no GRAFT since).
    pruned_for: HashSet<NodeId>,
    /// Announcements for the next IHAVE.
    announce: Vec<Announcement>,
}

impl LinkTree {
    /// Whether `origin`'s broadcasts go on this link as copies.
    pub(crate) fn sends(&self, origin: NodeId) -> bool {
        !self.lazy_for.contains(&origin)
    }

    /// The peer sent PRUNE for `origin`.
    pub(crate) fn peer_pruned(&mut self, origin: NodeId) {
        insert_bounded(&mut self.lazy_for, origin);
    }

    /// The peer sent GRAFT for a broadcast of `origin`.
    pub(crate) fn peer_grafted(&mut self, origin: NodeId) {
        self.lazy_for.remove(&origin);
    }

    /// Records that we prune `origin` here; false if we already had.
    pub(crate) fn prune(&mut self, origin: NodeId) -> bool {
        insert_bounded(&mut self.pruned_for, origin)
    }

    /// Records that we graft `origin` here; false if it was not pruned.
    pub(crate) fn graft(&mut self, origin: NodeId) -> bool {
        self.pruned_for.remove(&origin)
    }

    /// Queues an announcement for the next IHAVE on this link.
    pub(crate) fn announce(&mut self, a: Announcement) {
        self.announce.push(a);
    }

    /// The announcements collected since the last IHAVE.
    pub(crate) fn take_announcements(&mut self) -> Vec<Announcement> {
        std::mem::take(&mut self.announce)
    }
}

fn insert_bounded(set: &mut HashSet<NodeId>, origin: NodeId) -> bool {
    if set.len() >= ORIGINS_PER_LINK && !set.contains(&origin) {
        set.clear();
    }
    set.insert(origin)
}

/// The node's lazy-push state; see the module docs. Three locks, never two held at
/// once: each method takes one, updates, and lets it go.
#[derive(Default)]
pub(crate) struct LazyPush {
    store: Mutex<Store>,
    wanted: Mutex<Wanted>,
    /// When announcements are next sent; `None` while none wait.
    flush_at: Mutex<Option<Instant>>,
}

/// GRAFTs that are due, by the peer to ask, and when the next ones are.
pub(crate) struct DueGrafts {
    pub asks: HashMap<NodeId, Vec<BroadcastId>>,
    pub next: Option<Instant>,
}

impl LazyPush {
    /// Notes that `id` arrived `hops` hops from its origin via `parent` (`None`: our
    /// own): it is no longer missing, and its origin's broadcasts are flowing. `frame`
    /// (hop count already advanced) is kept to answer GRAFTs; `None` when the hop
    /// limit stops it here.
    pub(crate) fn have(
        &self,
        id: BroadcastId,
        frame: Option<&Arc<[u8]>>,
        hops: u8,
        parent: Option<NodeId>,
    ) {
        let now = Instant::now();
        {
            let mut w = self.wanted.lock();
            w.remove(&id);
            if w.progress.len() >= PROGRESS_CAP && !w.progress.contains_key(&id.0) {
                w.progress.clear();
            }
            w.progress.insert(id.0, now);
        }
        let kept = Kept {
            frame: frame.cloned(),
            hops,
            parent,
        };
        self.store.lock().insert(id, kept, now);
    }

    /// A duplicate of `id` came from `via` in `hops` hops: if that beats our parent's
    /// path, `via` becomes the parent (returned with the old one).
    pub(crate) fn shorter_copy(&self, id: &BroadcastId, via: NodeId, hops: u8) -> Option<Reparent> {
        let from = self.store.lock().better_path(id, via, hops, 1)?;
        Some(Reparent {
            origin: id.0,
            from,
            to: via,
        })
    }

    /// Announcements were queued on some link: the next flush is due in
    /// [`LAZY_INTERVAL`] unless one is scheduled already. Returns whether this call
    /// scheduled it (the maintenance thread then needs waking).
    pub(crate) fn schedule_flush(&self) -> bool {
        let mut at = self.flush_at.lock();
        if at.is_some() {
            return false;
        }
        *at = Some(Instant::now() + LAZY_INTERVAL);
        true
    }

    /// Whether the flush is due at `now`; if so it is unscheduled.
    pub(crate) fn take_flush_due(&self, now: Instant) -> bool {
        let mut at = self.flush_at.lock();
        let due = at.is_some_and(|t| t <= now);
        if due {
            *at = None;
        }
        due
    }

    /// When the next flush is due, if one is scheduled.
    pub(crate) fn next_flush(&self) -> Option<Instant> {
        *self.flush_at.lock()
    }

    /// Handles an IHAVE from `from`; `have[i]` says whether we already have `ids[i]`.
    /// Ids we lack are asked for after [`GRAFT_TIMEOUT`] unless the tree brings them
    /// first (the second value: whether such an ask was scheduled, so maintenance
    /// needs waking). Returns, one per origin, the ids we have for which the announcer
    /// is two or more hops nearer the origin than our parent: worth grafting.
    pub(crate) fn announced(
        &self,
        from: NodeId,
        ids: &[Announcement],
        have: &[bool],
    ) -> (Vec<BroadcastId>, bool) {
        let mut nearer: Vec<BroadcastId> = Vec::new();
        {
            let store = self.store.lock();
            for (a, _) in ids.iter().zip(have).filter(|(_, &have)| have) {
                if !nearer.iter().any(|n| n.0 == a.id.0)
                    && store.is_better_path(&a.id, from, a.hops.saturating_add(1), 2)
                {
                    nearer.push(a.id);
                }
            }
        }
        let now = Instant::now();
        let ask_at = now + GRAFT_TIMEOUT;
        let mut added = false;
        let mut wanted = self.wanted.lock();
        let Wanted { missing, owned, .. } = &mut *wanted;
        for (&Announcement { id, .. }, _) in ids.iter().zip(have).filter(|(_, &have)| !have) {
            let len = missing.len();
            let mine = owned.get(&from).copied().unwrap_or(0);
            match missing.entry(id) {
                Entry::Occupied(mut e) => {
                    let m = e.get_mut();
                    if m.announcers.len() < MAX_ANNOUNCERS && !m.announcers.contains(&from) {
                        m.announcers.push_back(from);
                    }
                }
                Entry::Vacant(e) if len < MISSING_CAP && mine < MISSING_PER_PEER => {
                    e.insert(Missing {
                        ask_at,
                        since: now,
                        owner: from,
                        announcers: VecDeque::from([from]),
                    });
                    *owned.entry(from).or_default() += 1;
                    added = true;
                }
                Entry::Vacant(_) => {}
            }
        }
        (nearer, added)
    }

    /// The frames of `ids` we still have, for a GRAFT.
    pub(crate) fn frames(&self, ids: &[BroadcastId]) -> Vec<Arc<[u8]>> {
        let store = self.store.lock();
        ids.iter()
            .filter_map(|id| store.kept.get(id)?.frame.clone())
            .collect()
    }

    /// Broadcasts remembered (bounded: [`STORE_FRAMES`], [`STORE_BYTES`]).
    pub(crate) fn stored(&self) -> usize {
        self.store.lock().kept.len()
    }

    /// Picks, for each broadcast still missing after its timeout, the next announcer
    /// to ask (asking it also has it send that origin's broadcasts again), and says
    /// when the next ask is due. Entries whose announcers were all asked are dropped.
    pub(crate) fn take_due_grafts(&self, now: Instant) -> DueGrafts {
        let mut asks: HashMap<NodeId, Vec<BroadcastId>> = HashMap::new();
        let mut next: Option<Instant> = None;
        let mut wanted = self.wanted.lock();
        let Wanted {
            missing,
            owned,
            progress,
        } = &mut *wanted;
        missing.retain(|id, m| {
            if m.ask_at <= now && now.duration_since(m.since) < GRAFT_PATIENCE {
                // The origin's broadcasts are still arriving: the tree lags, wait.
                if let Some(&last) = progress.get(&id.0) {
                    if now.duration_since(last) < GRAFT_TIMEOUT {
                        m.ask_at = last + GRAFT_TIMEOUT;
                    }
                }
            }
            if m.ask_at > now {
                next = Some(next.map_or(m.ask_at, |n| n.min(m.ask_at)));
                return true;
            }
            let Some(peer) = m.announcers.pop_front() else {
                release(owned, m.owner);
                return false;
            };
            log::debug!(
                "broadcast {}:{} missing {} ms after its announcement: asking {peer}",
                id.0,
                id.1,
                now.duration_since(m.since).as_millis()
            );
            asks.entry(peer).or_default().push(*id);
            m.ask_at = now + GRAFT_TIMEOUT;
            next = Some(next.map_or(m.ask_at, |n| n.min(m.ask_at)));
            true
        });
        DueGrafts { asks, next }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: u64) -> BroadcastId {
        (NodeId(1), n)
    }

    fn kept(len: usize, hops: u8, parent: u64) -> Kept {
        Kept {
            frame: Some(Arc::from(vec![0u8; len])),
            hops,
            parent: Some(NodeId(parent)),
        }
    }

    #[test]
    fn store_is_bounded_by_count_and_forgets_oldest_first() {
        let mut s = Store::default();
        let now = Instant::now();
        for n in 0..(STORE_FRAMES as u64 + 10) {
            s.insert(id(n), kept(10, 1, 2), now);
        }
        assert_eq!(s.kept.len(), STORE_FRAMES);
        assert!(!s.kept.contains_key(&id(9)));
        assert!(s.kept.contains_key(&id(10)));
        assert_eq!(s.bytes, STORE_FRAMES * 10);
    }

    #[test]
    fn store_is_bounded_by_bytes_and_age() {
        let mut s = Store::default();
        let now = Instant::now();
        let big = STORE_BYTES / 4 + 1;
        for n in 0..8 {
            s.insert(id(n), kept(big, 1, 2), now);
        }
        assert!(s.bytes <= STORE_BYTES);
        assert_eq!(s.kept.len(), 3);
        s.insert(id(100), kept(1, 1, 2), now + STORE_TTL);
        assert_eq!(s.kept.len(), 1, "everything older than the TTL is gone");
        assert_eq!(s.bytes, 1);
    }

    #[test]
    fn a_path_shorter_by_the_gain_replaces_the_parent_once() {
        let mut s = Store::default();
        s.insert(id(1), kept(1, 9, 7), Instant::now());
        assert_eq!(
            s.better_path(&id(1), NodeId(8), 8, 2),
            None,
            "one hop is not enough"
        );
        assert_eq!(s.better_path(&id(1), NodeId(8), 7, 2), Some(NodeId(7)));
        assert_eq!(
            s.better_path(&id(1), NodeId(9), 6, 2),
            None,
            "7 is the path now"
        );
        assert_eq!(
            s.better_path(&id(1), NodeId(8), 1, 2),
            None,
            "already the parent"
        );
        assert_eq!(s.better_path(&id(2), NodeId(8), 1, 2), None, "unknown id");
        // Our own broadcasts have no parent to replace.
        s.insert(
            id(3),
            Kept {
                frame: None,
                hops: 0,
                parent: None,
            },
            Instant::now(),
        );
        assert_eq!(s.better_path(&id(3), NodeId(8), 0, 0), None);
    }
}
