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
//! The maintenance thread runs [`due`] whenever the next flush or graft is due;
//! reader threads wake it through a `bounded(1)` channel when they schedule one.

use std::collections::hash_map::Entry;
use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};
use parking_lot::Mutex;

use crate::node::{Queued, Shared};
use crate::p2p_message::{Announcement, BroadcastId, NodeId, P2PMessage, MAX_IDS_PER_MESSAGE};
use crate::peer_table::Link;

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
}

fn insert_bounded(set: &mut HashSet<NodeId>, origin: NodeId) -> bool {
    if set.len() >= ORIGINS_PER_LINK && !set.contains(&origin) {
        set.clear();
    }
    set.insert(origin)
}

/// The node's lazy-push state; see the module docs.
pub(crate) struct LazyPush {
    store: Mutex<Store>,
    wanted: Mutex<Wanted>,
    /// When announcements are next sent; `None` while none wait.
    flush_at: Mutex<Option<Instant>>,
    kick: Sender<()>,
}

impl LazyPush {
    /// The state, and the receiver the maintenance thread waits on.
    pub(crate) fn new() -> (LazyPush, Receiver<()>) {
        let (kick, rx) = crossbeam_channel::bounded(1);
        let lazy = LazyPush {
            store: Mutex::new(Store::default()),
            wanted: Mutex::new(Wanted::default()),
            flush_at: Mutex::new(None),
            kick,
        };
        (lazy, rx)
    }

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

    /// Queues an announcement of `id` (which arrived here in `hops` hops) on a lazy
    /// link; it goes out with the next flush.
    pub(crate) fn announce(&self, tree: &mut LinkTree, id: BroadcastId, hops: u8) {
        tree.announce.push(Announcement { id, hops });
        let mut at = self.flush_at.lock();
        if at.is_none() {
            *at = Some(Instant::now() + LAZY_INTERVAL);
            let _ = self.kick.try_send(());
        }
    }

    /// Handles an IHAVE; `have[i]` says whether we already have `ids[i]`. Ids we lack
    /// are asked for after [`GRAFT_TIMEOUT`] unless the tree brings them first.
    /// Returns, one per origin, the ids we have for which the announcer is two or
    /// more hops nearer the origin than our parent: worth grafting.
    pub(crate) fn announced(
        &self,
        from: &Link,
        ids: &[Announcement],
        have: &[bool],
    ) -> Vec<BroadcastId> {
        let mut nearer: Vec<BroadcastId> = Vec::new();
        {
            let store = self.store.lock();
            for (a, _) in ids.iter().zip(have).filter(|(_, &have)| have) {
                if !nearer.iter().any(|n| n.0 == a.id.0)
                    && store.is_better_path(&a.id, from.node_id, a.hops.saturating_add(1), 2)
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
            let mine = owned.get(&from.node_id).copied().unwrap_or(0);
            match missing.entry(id) {
                Entry::Occupied(mut e) => {
                    let m = e.get_mut();
                    if m.announcers.len() < MAX_ANNOUNCERS && !m.announcers.contains(&from.node_id)
                    {
                        m.announcers.push_back(from.node_id);
                    }
                }
                Entry::Vacant(e) if len < MISSING_CAP && mine < MISSING_PER_PEER => {
                    e.insert(Missing {
                        ask_at,
                        since: now,
                        owner: from.node_id,
                        announcers: VecDeque::from([from.node_id]),
                    });
                    *owned.entry(from.node_id).or_default() += 1;
                    added = true;
                }
                Entry::Vacant(_) => {}
            }
        }
        drop(wanted);
        if added {
            let _ = self.kick.try_send(());
        }
        nearer
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
}

/// Sends the announcements and GRAFTs that are due; returns when the next ones are.
/// Run by the maintenance thread.
pub(crate) fn due(shared: &Shared, now: Instant) -> Option<Instant> {
    let lazy = &shared.lazy;
    let flush_now = {
        let mut at = lazy.flush_at.lock();
        let due = at.is_some_and(|t| t <= now);
        if due {
            *at = None;
        }
        due
    };
    if flush_now {
        flush(shared);
    }
    let next_flush = *lazy.flush_at.lock();
    let next_graft = graft_due(shared, now);
    [next_flush, next_graft].into_iter().flatten().min()
}

/// Sends every lazy link the ids collected for it.
fn flush(shared: &Shared) {
    let links = shared.table.lock().links();
    for link in links {
        let ids = std::mem::take(&mut link.tree.lock().announce);
        send_chunked(shared, &link, &ids, |ids| P2PMessage::IHave { ids });
    }
}

/// Asks an announcer for each broadcast that is still missing after its timeout (which
/// also has it send that origin's broadcasts again). Returns when the next ask is due.
fn graft_due(shared: &Shared, now: Instant) -> Option<Instant> {
    let mut asks: HashMap<NodeId, Vec<BroadcastId>> = HashMap::new();
    let mut next: Option<Instant> = None;
    {
        let mut wanted = shared.lazy.wanted.lock();
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
    }
    for (peer, ids) in asks {
        let Some(link) = shared.table.lock().get(peer) else {
            continue;
        };
        {
            let mut tree = link.tree.lock();
            for id in &ids {
                tree.graft(id.0);
            }
        }
        let asked = send_chunked(shared, &link, &ids, |ids| P2PMessage::Graft { ids });
        shared.count_grafts(asked);
    }
    next
}

/// Queues `items` on `link` as control frames of at most [`MAX_IDS_PER_MESSAGE`]
/// entries each; returns how many entries were queued (it stops at a refusal).
fn send_chunked<T: Clone>(
    shared: &Shared,
    link: &Link,
    items: &[T],
    message: impl Fn(Vec<T>) -> P2PMessage,
) -> usize {
    let mut queued = 0;
    for chunk in items.chunks(MAX_IDS_PER_MESSAGE) {
        if shared.queue_control(link, &message(chunk.to_vec()).encode()) != Queued::Yes {
            break;
        }
        queued += chunk.len();
    }
    queued
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
