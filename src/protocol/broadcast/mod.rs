//! The broadcast protocol: BROADCAST, IHAVE, GRAFT and PRUNE, and everything the
//! broadcast tree needs, in one place (docs/PROTOCOL.md 3.5, 3.5b). The C++
//! `broadcastData` sent to direct peers only; here a broadcast reaches every node of
//! a connected overlay exactly once, along a self-repairing tree per origin
//! ([`lazy_push`] explains the tree and holds its state).
//!
//! What it owns: the seen cache (exactly-once delivery) and, under the same lock,
//! each origin's replay window ([`ReplayGuard`]: a replayed broadcast stays a
//! duplicate after the seen cache forgot it), this node's sequence numbers, the
//! tree state ([`LazyPush`]) and each link's part in the trees ([`LinkTree`], by
//! connection id). A connection's entry is made when something first concerns it
//! and removed when its reader ends ([`BroadcastTree::link_down`]); an entry a
//! racing sender made again for a connection already gone is swept at the next tick
//! ([`BroadcastTree::sweep`]).
//!
//! Signatures ([`signature`]): every broadcast is signed by its origin, and a new one
//! is verified before it is remembered, delivered or forwarded. Verification comes
//! after the seen cache, the replay window and the rate limit, so a duplicate costs
//! no verification and a flood of forgeries costs its link's tokens first. A forged one is dropped and counted
//! (`broadcasts_forged`): never delivered, forwarded, stored or remembered, so the
//! origin's real broadcast of the same id is still new everywhere.
//!
//! Rate limit: a broadcast whose id is neither in the seen cache nor taken in its
//! origin's window is *new*, and only a new one takes a token from its link's
//! bucket (a duplicate is dropped anyway, at no further cost). One refused by the
//! bucket is dropped before anything remembers it, so the same broadcast by another
//! link is still new there (docs/PROTOCOL.md 3.5 "Limits").
//!
//! Locks: `seen` (the seen cache and the replay windows), `trees`, and the three
//! inside `LazyPush`, each taken alone, except that `sweep` holds `trees` while it
//! copies the live links (`trees` -> the link manager's `registry`; nothing takes
//! them the other way). No lock is held while a
//! frame is queued.

pub(crate) mod lazy_push;
pub(crate) mod signature;

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use crate::config::Config;
use crate::error::Error;
use crate::event::Event;
use crate::identity::Identity;
use crate::links::{Link, Links, Queued, RELAY_WAIT};
use crate::p2p_message::{
    Announcement, Broadcast, BroadcastId, ForgedReason, NodeId, P2PMessage, LEN_PREFIX,
    MAX_IDS_PER_MESSAGE, PUBLIC_KEY_LEN, SIGNATURE_LEN,
};
use crate::state::rate_limit::{RateLimiter, Verdict};
use crate::state::replay::{Replay, ReplayGuard};
use crate::state::seen_cache::SeenCache;
use crate::state::stats;
use crate::transport::outbox::{Frame, Push};
use lazy_push::{LazyPush, LinkTree, Reparent};

/// What the node already knows about a broadcast id.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Known {
    /// Neither the seen cache nor the replay window has it.
    New,
    /// In the seen cache.
    Seen,
    /// Forgotten by the seen cache, refused by its origin's replay window.
    Replay,
}

/// The seen cache and the replay windows, kept under one lock.
struct Seen {
    cache: SeenCache,
    replay: ReplayGuard,
}

impl Seen {
    fn knows(&self, id: &BroadcastId) -> Known {
        if self.cache.contains(id) {
            Known::Seen
        } else if self.replay.check(id.0, id.1) != Replay::Fresh {
            Known::Replay
        } else {
            Known::New
        }
    }

    /// Records a broadcast from another node; `false` if it was known already.
    fn insert(&mut self, id: BroadcastId, now: Instant, now_ms: u64) -> bool {
        self.cache.insert(id, now) && self.replay.take(id.0, id.1, now_ms)
    }
}

/// The first sequence number of a node run started at `now`: the time in Unix
/// microseconds (at least 1). A node keeps its id across restarts (its key file), so
/// numbers must keep rising across runs too: starting again at 1 made every node drop
/// a restarted node's broadcasts as replays until it passed its old highest number.
/// One run would have to broadcast more than a million times a second, or the clock
/// go back between runs, for a restart to reuse a number.
fn first_seq(now: std::time::SystemTime) -> u64 {
    let us = now
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX / 2))
        .unwrap_or(0);
    us.max(1)
}

/// The broadcast protocol's state; see the module docs.
pub(crate) struct BroadcastTree {
    id: NodeId,
    hop_limit: u8,
    max_frame: u32,
    seen: Mutex<Seen>,
    /// This node's next broadcast sequence number; the first is the start time in
    /// Unix microseconds ([`first_seq`]).
    next_seq: AtomicU64,
    lazy: LazyPush,
    /// Each link's part in the trees, by connection id.
    trees: Mutex<HashMap<u64, LinkTree>>,
}

impl BroadcastTree {
    pub(crate) fn new(config: &Config, id: NodeId) -> BroadcastTree {
        BroadcastTree {
            id,
            hop_limit: config.hop_limit,
            max_frame: config.max_frame,
            seen: Mutex::new(Seen {
                cache: SeenCache::new(config.seen_cache_size, config.seen_cache_ttl),
                replay: ReplayGuard::new(config.replay_origins),
            }),
            next_seq: AtomicU64::new(first_seq(std::time::SystemTime::now())),
            lazy: LazyPush::default(),
            trees: Mutex::new(HashMap::new()),
        }
    }

    /// Broadcast ids in the seen cache.
    pub(crate) fn seen_len(&self) -> usize {
        self.seen.lock().cache.len()
    }

    /// Origins with a replay window.
    pub(crate) fn replay_origins(&self) -> usize {
        self.seen.lock().replay.len()
    }

    /// Broadcast frames kept to answer GRAFTs.
    pub(crate) fn stored(&self) -> usize {
        self.lazy.stored()
    }

    /// Sends `text` to the overlay as this node's next broadcast, signed by
    /// `identity` (the node's, `Shared::identity`: its id is this tree's), naming
    /// `origin_addr` as where it comes from. The caller waits (up to the peer
    /// timeout) for room on a full link; a peer that stays stuck is dropped. Returns
    /// the number of neighbours it was sent or announced to.
    pub(crate) fn originate(
        &self,
        links: &Links,
        identity: &Identity,
        text: &str,
        origin_addr: SocketAddr,
    ) -> Result<usize, Error> {
        debug_assert_eq!(
            identity.node_id(),
            self.id,
            "signing with another node's key"
        );
        let mut b = Broadcast {
            origin: self.id,
            seq: self.next_seq.fetch_add(1, Ordering::Relaxed),
            hops: 1,
            origin_addr,
            public_key: [0; PUBLIC_KEY_LEN],
            signature: [0; SIGNATURE_LEN],
            text: text.to_string(),
        };
        // In plaintext mode too: the signature is what makes the origin id true,
        // whatever carries the frame.
        b.sign(identity);
        let id = (b.origin, b.seq);
        let msg = P2PMessage::Broadcast(b);
        let len = msg.encoded_len() - LEN_PREFIX;
        if len > self.max_frame as usize {
            return Err(Error::MessageTooLarge {
                len,
                max: self.max_frame,
            });
        }
        let frame: Arc<[u8]> = msg.encode().into();
        // Our own: arriving copies are dropped by origin, no replay window needed.
        self.seen.lock().cache.insert(id, Instant::now());
        self.lazy.have(id, Some(&frame), 0, None);
        let wait = links.config().peer_timeout;
        let (eager, lazy) = self.spread(links, id, 0, &frame, None, wait);
        Ok(eager + lazy)
    }

    /// Delivers a broadcast that arrived on `from` once, and passes it on (eager links
    /// get it, lazy ones an announcement) while its hop count is below the limit. A
    /// copy we already had makes `from` lazy for its origin (PRUNE), unless it came by
    /// a shorter path than our parent's copy. A new broadcast takes a token from
    /// `limit`, `from`'s bucket; without one it is dropped, unremembered. A new one
    /// whose signature is not its origin's is dropped, unremembered, and counted.
    ///
    /// Returns whether delivering had to wait for the application, or the verdict of
    /// a refusing `limit` (already counted).
    pub(crate) fn on_broadcast(
        &self,
        links: &Links,
        b: Broadcast,
        from: &Link,
        limit: &mut RateLimiter,
    ) -> Result<bool, Verdict> {
        let st = links.stats();
        if b.hops == 0 || b.hops > self.hop_limit {
            links.count_ignored_frame(&format!(
                "dropping broadcast {}:{} with hop count {} (limit {})",
                b.origin, b.seq, b.hops, self.hop_limit
            ));
            return Ok(false);
        }
        let id = (b.origin, b.seq);
        let known = if b.origin == self.id {
            Known::Seen
        } else {
            self.seen.lock().knows(&id)
        };
        if known == Known::New {
            let verdict = limit.admit(|| links.clock().now_ms());
            if verdict != Verdict::Pass {
                let before = stats::add(&st.broadcasts_rate_limited, 1);
                if before == 0 {
                    log::warn!(
                        "{}: over its broadcast rate limit, dropping new broadcasts",
                        from.addr()
                    );
                }
                return Err(verdict);
            }
            // Only a new one is verified: a duplicate of an id we took was verified
            // when we took it (verification is per node, not per copy), and one the
            // replay window refuses is dropped anyway. Outside the `seen` lock: it is
            // the most expensive step of a broadcast (about 37 µs).
            if let Err(why) = b.verify() {
                self.forged(links, &b, from, why);
                return Ok(false);
            }
        }
        let now = Instant::now();
        let now_ms = now
            .saturating_duration_since(links.clock().epoch())
            .as_millis() as u64;
        if known != Known::New || !self.seen.lock().insert(id, now, now_ms) {
            if known == Known::Replay {
                stats::add(&st.replays_dropped, 1);
            }
            stats::add(&st.duplicates_dropped, 1);
            match self.lazy.shorter_copy(&id, from.node_id(), b.hops) {
                // A copy nearer the origin than our parent's: `from` is the parent now.
                Some(r) => self.reparent(links, r),
                None => self.prune(links, from, b.origin),
            }
            return Ok(false);
        }
        if b.hops >= self.hop_limit {
            self.lazy.have(id, None, b.hops, Some(from.node_id()));
        } else {
            let frame: Arc<[u8]> = P2PMessage::Broadcast(Broadcast {
                hops: b.hops + 1,
                ..b.clone()
            })
            .encode()
            .into();
            self.lazy
                .have(id, Some(&frame), b.hops, Some(from.node_id()));
            // Pass it on first, deliver after: the next hops' copies are on the wire
            // before this node's application gets its turn.
            let (eager, _) = self.spread(links, id, b.hops, &frame, Some(from), RELAY_WAIT);
            stats::add(&st.frames_forwarded, eager as u64);
        }
        stats::add(&st.broadcasts_delivered, 1);
        Ok(links.deliver(Event::Broadcast {
            origin_id: b.origin,
            origin: b.origin_addr,
            hops: b.hops,
            text: b.text,
        }))
    }

    /// Counts and logs a forged broadcast, which is then dropped: not delivered, not
    /// forwarded, not stored for GRAFT, and not in the seen cache or the replay
    /// window, so the real broadcast with its id is still new when it comes. The link
    /// stays up: a forgery shows that someone made it, not that this neighbour did
    /// (a relay of another implementation may pass one on unverified), and the rate
    /// limit already bounds how many a link can make us verify. Logged at warn for
    /// the first and every 1,000th, at debug otherwise, so a flood of forgeries
    /// cannot flood the log.
    fn forged(&self, links: &Links, b: &Broadcast, from: &Link, why: ForgedReason) {
        let before = stats::add(&links.stats().broadcasts_forged, 1);
        if before % 1000 == 0 {
            log::warn!(
                "{}: dropping forged broadcast {}:{} ({why}; {} forged so far)",
                from.addr(),
                b.origin,
                b.seq,
                before + 1
            );
        } else {
            log::debug!(
                "{}: dropping forged broadcast {}:{} ({why})",
                from.addr(),
                b.origin,
                b.seq
            );
        }
    }

    /// Sends a broadcast frame on every eager link and announces it on every lazy one,
    /// except the link it came in on and a link to its origin (by node id). `hops` is
    /// how far it travelled to reach us (0: our own). Returns (links sent on, links
    /// announced on).
    ///
    /// Every link with room gets its copy first; only then does the caller wait, up to
    /// `wait`, on links whose queue is full, so one stuck peer delays nobody else's
    /// copy (and is dropped if it stays stuck).
    fn spread(
        &self,
        links: &Links,
        id: BroadcastId,
        hops: u8,
        frame: &Arc<[u8]>,
        from: Option<&Link>,
        wait: Duration,
    ) -> (usize, usize) {
        let all = links.links();
        let mut eager = Vec::with_capacity(all.len());
        let mut announced = 0;
        {
            let mut trees = self.trees.lock();
            for link in all {
                if from.is_some_and(|f| f.conn_id() == link.conn_id()) || link.node_id() == id.0 {
                    continue;
                }
                let tree = trees.entry(link.conn_id()).or_default();
                if tree.sends(id.0) {
                    eager.push(link);
                } else {
                    tree.announce(Announcement { id, hops });
                    announced += 1;
                }
            }
        }
        if announced > 0 && self.lazy.schedule_flush() {
            links.wake_maintenance();
        }
        let mut sent = 0;
        let mut full = Vec::new();
        for link in eager {
            match links.try_queue(&link, Frame::Shared(Arc::clone(frame))) {
                Push::Queued => sent += 1,
                Push::Full => full.push(link),
                Push::Closed => {}
            }
        }
        for link in &full {
            let copy = Frame::Shared(Arc::clone(frame));
            if links.queue_data(link, copy, wait) == Queued::Yes {
                sent += 1;
            }
        }
        stats::add(&links.stats().broadcast_frames_sent, sent as u64);
        (sent, announced)
    }

    /// Answers a GRAFT: we send the named broadcasts' origins on this link eagerly
    /// again, starting with the broadcasts it names that we still have (ids we no
    /// longer have, or never had, are skipped).
    pub(crate) fn on_graft(&self, links: &Links, ids: &[BroadcastId], from: &Link) {
        {
            let mut trees = self.trees.lock();
            let tree = trees.entry(from.conn_id()).or_default();
            for id in ids {
                tree.peer_grafted(id.0);
            }
        }
        let st = links.stats();
        for frame in self.lazy.frames(ids) {
            if links.relay(from, frame) != Queued::Yes {
                break;
            }
            stats::add(&st.frames_forwarded, 1);
            stats::add(&st.broadcast_frames_sent, 1);
        }
    }

    /// Handles an IHAVE: missing broadcasts are scheduled for a GRAFT, and a neighbour
    /// that is clearly nearer an origin than our parent is grafted for it at once.
    pub(crate) fn on_ihave(&self, links: &Links, ids: &[Announcement], from: &Link) {
        let have: Vec<bool> = {
            let seen = self.seen.lock();
            // A replay counts as had: announcing one fetches nothing.
            ids.iter()
                .map(|a| seen.knows(&a.id) != Known::New)
                .collect()
        };
        let (mut nearer, scheduled) = self.lazy.announced(from.node_id(), ids, &have);
        if scheduled {
            links.wake_maintenance();
        }
        // Only origins we had pruned there: the others already come as copies.
        {
            let mut trees = self.trees.lock();
            let tree = trees.entry(from.conn_id()).or_default();
            nearer.retain(|id| tree.graft(id.0));
        }
        if !nearer.is_empty() {
            log::debug!(
                "broadcast tree: {} is nearer {} origin(s), grafting",
                from.addr(),
                nearer.len()
            );
            // The peer answers with those broadcasts (duplicates here) and sends their
            // origins eagerly from then on; the duplicate rule then prunes the longer
            // path.
            links.queue_control(from, &P2PMessage::Graft { ids: nearer }.encode());
        }
    }

    /// The peer asks us to only announce `origin`'s broadcasts on this link.
    pub(crate) fn on_prune(&self, from: &Link, origin: NodeId) {
        self.trees
            .lock()
            .entry(from.conn_id())
            .or_default()
            .peer_pruned(origin);
    }

    /// The connection `conn_id` ended: its part in the trees goes with it.
    pub(crate) fn link_down(&self, conn_id: u64) {
        self.trees.lock().remove(&conn_id);
    }

    /// Forgets tree state of connections that are no longer links (a `spread` or a
    /// GRAFT round that raced with `link_down` can make an entry again). The live links
    /// are read while `trees` is held, so a link registered meanwhile cannot lose the
    /// state its reader records. Run by the maintenance thread every tick.
    pub(crate) fn sweep(&self, links: &Links) {
        let mut trees = self.trees.lock();
        if trees.is_empty() {
            return;
        }
        let live: HashSet<u64> = links.links().iter().map(|l| l.conn_id()).collect();
        trees.retain(|conn, _| live.contains(conn));
    }

    /// Asks `link`'s peer to announce `origin`'s broadcasts instead of sending them
    /// (once, until we graft them again).
    fn prune(&self, links: &Links, link: &Link, origin: NodeId) {
        let first = self
            .trees
            .lock()
            .entry(link.conn_id())
            .or_default()
            .prune(origin);
        if first {
            links.queue_control(link, &P2PMessage::Prune { origin }.encode());
        }
    }

    /// Makes `r.to` (which just sent us a copy: it sends eagerly) our parent in
    /// `r.origin`'s tree instead of `r.from`, which is pruned for that origin.
    fn reparent(&self, links: &Links, r: Reparent) {
        log::debug!("broadcast tree: parent {} replaces {}", r.to, r.from);
        if let Some(from) = links.get(r.from) {
            self.prune(links, &from, r.origin);
        }
    }

    /// Sends the announcements and GRAFTs that are due; returns when the next ones
    /// are. Run by the maintenance thread.
    pub(crate) fn due(&self, links: &Links, now: Instant) -> Option<Instant> {
        if self.lazy.take_flush_due(now) {
            self.flush(links);
        }
        let next_flush = self.lazy.next_flush();
        let next_graft = self.graft_due(links, now);
        [next_flush, next_graft].into_iter().flatten().min()
    }

    /// Sends every lazy link the ids collected for it.
    fn flush(&self, links: &Links) {
        let live = links.links();
        let batches: Vec<(Arc<Link>, Vec<Announcement>)> = {
            let mut trees = self.trees.lock();
            live.into_iter()
                .filter_map(|l| {
                    let batch = trees.get_mut(&l.conn_id())?.take_announcements();
                    Some((l, batch))
                })
                .collect()
        };
        for (link, ids) in batches {
            send_chunked(links, &link, &ids, |ids| P2PMessage::IHave { ids });
        }
    }

    /// Asks an announcer for each broadcast that is still missing after its timeout.
    fn graft_due(&self, links: &Links, now: Instant) -> Option<Instant> {
        let due = self.lazy.take_due_grafts(now);
        for (peer, ids) in due.asks {
            let Some(link) = links.get(peer) else {
                continue;
            };
            {
                let mut trees = self.trees.lock();
                let tree = trees.entry(link.conn_id()).or_default();
                for id in &ids {
                    tree.graft(id.0);
                }
            }
            let asked = send_chunked(links, &link, &ids, |ids| P2PMessage::Graft { ids });
            stats::add(&links.stats().grafts_sent, asked as u64);
        }
        due.next
    }
}

/// Queues `items` on `link` as control frames of at most [`MAX_IDS_PER_MESSAGE`]
/// entries each; returns how many entries were queued (it stops at a refusal).
fn send_chunked<T: Clone>(
    links: &Links,
    link: &Link,
    items: &[T],
    message: impl Fn(Vec<T>) -> P2PMessage,
) -> usize {
    let mut queued = 0;
    for chunk in items.chunks(MAX_IDS_PER_MESSAGE) {
        if links.queue_control(link, &message(chunk.to_vec()).encode()) != Queued::Yes {
            break;
        }
        queued += chunk.len();
    }
    queued
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_seq_is_the_start_time_in_microseconds_so_a_restart_counts_on() {
        use std::time::{Duration, UNIX_EPOCH};
        assert_eq!(first_seq(UNIX_EPOCH), 1);
        assert_eq!(first_seq(UNIX_EPOCH + Duration::from_secs(2)), 2_000_000);
        let before = first_seq(UNIX_EPOCH + Duration::from_secs(1_800_000_000));
        let after = first_seq(UNIX_EPOCH + Duration::from_secs(1_800_000_001));
        assert!(after >= before + 1_000_000);
    }
}
