//! `ReplayGuard`: per origin, which broadcast sequence numbers were already taken, so
//! a replayed broadcast stays a duplicate long after the seen cache (16,384 ids,
//! 5 min) has forgotten its id. Like the IPsec and DTLS anti-replay windows, and
//! for the same reason: a cache of ids can be flushed by a flood of other ids, a
//! window per origin cannot.
//!
//! Each origin has an entry (docs/PROTOCOL.md 3.5 "Replay window"):
//!
//! - `highest`, the highest sequence number taken, and a bitmap of the
//!   [`WINDOW`] (1,024) numbers up to it: one taken inside the window is a replay.
//!   Copies arrive out of order through the tree (and GRAFT answers late), which the
//!   bitmap allows for.
//! - a *floor*: every number the origin had sent when we last looked, at least
//!   [`FLOOR_DELAY`] (60 s) ago. A copy below it is a replay, whatever the window
//!   says: a genuine copy is never that late (the tree hands it on at once, and a
//!   GRAFT is answered only from frames stored for 30 s). Between the floor and the
//!   window (an origin's broadcasts older than its last 1,024 but younger than 1 to
//!   2 minutes) only the seen cache protects.
//! - Numbers start at 1 per node run and only grow (PROTOCOL.md 3.5 "Sequence
//!   numbers"); a restarted node has a new id and so a new entry. All arithmetic is
//!   on `u64` without wraparound: a jump to near `u64::MAX` simply clears the
//!   bitmap.
//!
//! Bounded: at most `max_origins` entries (160 bytes of window each, about 220 with
//! the two maps); past it the origin whose window moved least recently is forgotten
//! (LRU). What eviction means: an evicted origin's old broadcasts are protected by
//! the seen cache alone again, so a peer that introduces `max_origins` fresh
//! origins (rate-limited, PROTOCOL.md 3.5 "Limits") can then replay an origin's
//! broadcasts once the seen cache has forgotten them too. Refusing new origins
//! instead would let the same flood leave every later origin unprotected, so LRU is
//! the lesser evil.
//!
//! Only broadcasts their origin signed reach the window (`protocol::broadcast`
//! verifies a new one before it takes its number), so a neighbour cannot move an
//! origin's window past its real broadcasts with a forged far-future number, nor
//! pre-empt its next ids; what it can still do is replay the origin's real
//! broadcasts, which is what the window refuses.
//!
//! Plain data, no lock, no clock: the caller passes the time in (ms).

use std::collections::{BTreeMap, HashMap};

use crate::p2p_message::NodeId;

/// Sequence numbers tracked below an origin's highest (a multiple of 64).
pub(crate) const WINDOW: u64 = 1024;

/// How old "the highest number seen" must be before everything up to it is below
/// the floor (ms).
pub(crate) const FLOOR_DELAY_MS: u64 = 60_000;

const WORDS: usize = (WINDOW / 64) as usize;

/// What the window says about one sequence number.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Replay {
    /// Never taken, as far as the window knows.
    Fresh,
    /// Taken already (inside the window).
    Taken,
    /// Below the floor, or below the window at a node that cannot tell: too old to be
    /// a genuine copy.
    TooOld,
}

/// One origin's window.
#[derive(Clone, Debug)]
struct Window {
    highest: u64,
    /// Bit `seq % WINDOW` is set when `seq` (within the window) was taken.
    bits: [u64; WORDS],
    /// Numbers below it are too old.
    floor: u64,
    /// `highest` as it was at `mark_ms`: the next floor.
    mark: u64,
    mark_ms: u64,
}

impl Window {
    fn new(now_ms: u64) -> Window {
        Window {
            highest: 0,
            bits: [0; WORDS],
            floor: 0,
            mark: 0,
            mark_ms: now_ms,
        }
    }

    fn check(&self, seq: u64) -> Replay {
        if seq < self.floor {
            return Replay::TooOld;
        }
        if seq > self.highest {
            return Replay::Fresh;
        }
        if self.highest - seq >= WINDOW {
            // Between the floor and the window: the seen cache decides.
            return Replay::Fresh;
        }
        let (w, b) = slot(seq);
        if self.bits[w] & (1 << b) != 0 {
            Replay::Taken
        } else {
            Replay::Fresh
        }
    }

    /// Marks `seq` taken; `false` if the window says it is a replay.
    fn take(&mut self, seq: u64, now_ms: u64) -> bool {
        if now_ms.saturating_sub(self.mark_ms) >= FLOOR_DELAY_MS {
            self.floor = self.floor.max(self.mark.saturating_add(1));
            self.mark = self.highest;
            self.mark_ms = now_ms;
        }
        if self.check(seq) != Replay::Fresh {
            return false;
        }
        if seq > self.highest {
            let ahead = seq - self.highest;
            if ahead >= WINDOW {
                self.bits = [0; WORDS];
            } else {
                // Clear the slots of the numbers the window moves past.
                for s in self.highest + 1..=seq {
                    let (w, b) = slot(s);
                    self.bits[w] &= !(1 << b);
                }
            }
            self.highest = seq;
        }
        if self.highest - seq < WINDOW {
            let (w, b) = slot(seq);
            self.bits[w] |= 1 << b;
        }
        true
    }
}

fn slot(seq: u64) -> (usize, u32) {
    let i = seq % WINDOW;
    ((i / 64) as usize, (i % 64) as u32)
}

/// Every origin's window, bounded; see the module docs.
pub(crate) struct ReplayGuard {
    max_origins: usize,
    /// Origin -> (its window, its LRU stamp).
    windows: HashMap<NodeId, (Window, u64)>,
    /// LRU stamp -> origin, oldest first.
    order: BTreeMap<u64, NodeId>,
    next_stamp: u64,
}

impl ReplayGuard {
    /// A guard for at most `max_origins` origins (at least 1).
    pub(crate) fn new(max_origins: usize) -> ReplayGuard {
        ReplayGuard {
            max_origins: max_origins.max(1),
            windows: HashMap::new(),
            order: BTreeMap::new(),
            next_stamp: 0,
        }
    }

    /// What the window of `origin` says about `seq`, without taking it.
    pub(crate) fn check(&self, origin: NodeId, seq: u64) -> Replay {
        match self.windows.get(&origin) {
            Some((w, _)) => w.check(seq),
            None => Replay::Fresh,
        }
    }

    /// Takes `seq` for `origin`; `false` if it is a replay. A new origin may evict
    /// the least recently used one.
    pub(crate) fn take(&mut self, origin: NodeId, seq: u64, now_ms: u64) -> bool {
        if !self.windows.contains_key(&origin) && self.windows.len() >= self.max_origins {
            if let Some((_, old)) = self.order.pop_first() {
                self.windows.remove(&old);
            }
        }
        let stamp = self.next_stamp;
        self.next_stamp += 1;
        let (window, old_stamp) = self
            .windows
            .entry(origin)
            .or_insert_with(|| (Window::new(now_ms), stamp));
        if !window.take(seq, now_ms) {
            return false;
        }
        self.order.remove(old_stamp);
        *old_stamp = stamp;
        self.order.insert(stamp, origin);
        true
    }

    /// Origins with a window.
    pub(crate) fn len(&self) -> usize {
        self.windows.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: NodeId = NodeId(1);

    #[test]
    fn window_table() {
        use Replay::*;
        // (sequence numbers taken first, number checked, expected)
        let far = u64::MAX - 3;
        let cases: &[(&[u64], u64, Replay)] = &[
            (&[], 1, Fresh),
            (&[1], 1, Taken),
            (&[1], 2, Fresh),
            (&[5], 3, Fresh), // out of order, inside the window
            (&[5, 3], 3, Taken),
            (&[2000], 2000 - WINDOW + 1, Fresh), // lowest slot of the window
            (&[2000, 2000 - WINDOW + 1], 2000 - WINDOW + 1, Taken),
            (&[2000], 2000 - WINDOW, Fresh), // below the window, above the floor
            (&[1, 2000], 1, Fresh),          // slot reused: 1 is out of the window
            (&[10, 10 + WINDOW], 10, Fresh), // same slot, a window apart
            (&[10, 10 + WINDOW], 10 + WINDOW, Taken),
            (&[3, far], far, Taken), // far-future jump, no overflow
            (&[3, far], 3, Fresh),   // the old window is gone
            (&[3, far], far - 1, Fresh),
            (&[u64::MAX], u64::MAX, Taken),
            (&[u64::MAX], 0, Fresh),
            (&[0], 0, Taken),
        ];
        for (taken, seq, want) in cases {
            let mut g = ReplayGuard::new(8);
            for s in *taken {
                g.take(A, *s, 0);
            }
            assert_eq!(g.check(A, *seq), *want, "took {taken:?}, checked {seq}");
            assert_eq!(
                g.take(A, *seq, 0),
                *want == Fresh,
                "took {taken:?}, took {seq}"
            );
        }
    }

    #[test]
    fn out_of_order_arrivals_are_each_taken_once() {
        let mut g = ReplayGuard::new(8);
        let order: Vec<u64> = (1..=WINDOW).rev().chain(WINDOW + 1..=2 * WINDOW).collect();
        for s in &order {
            assert!(g.take(A, *s, 0), "{s}");
        }
        for s in WINDOW + 1..=2 * WINDOW {
            assert!(!g.take(A, s, 0), "replayed {s}");
        }
    }

    #[test]
    fn a_moving_window_clears_the_slots_it_passes() {
        let mut g = ReplayGuard::new(8);
        for s in 1..=3 * WINDOW {
            assert!(g.take(A, s, 0), "{s}");
            assert!(!g.take(A, s, 0), "{s} twice");
        }
        // Skipped numbers stay fresh inside the window.
        let mut g = ReplayGuard::new(8);
        for s in (2..=3 * WINDOW).step_by(2) {
            assert!(g.take(A, s, 0));
        }
        assert!(g.take(A, 3 * WINDOW - 1, 0));
    }

    #[test]
    fn numbers_below_the_floor_are_too_old() {
        let mut g = ReplayGuard::new(8);
        for s in 1..=100 {
            assert!(g.take(A, s, 0));
        }
        // 3,000 is taken below the window but above the floor: the seen cache decides.
        assert!(g.take(A, 5_000, 1_000));
        assert_eq!(g.check(A, 3_000), Replay::Fresh);
        // A minute after the window was made, its first mark (nothing taken yet)
        // becomes the floor: nothing is too old so far.
        assert!(g.take(A, 5_001, FLOOR_DELAY_MS));
        assert_eq!(g.check(A, 50), Replay::Fresh);
        // Another minute on, the mark taken then (highest 5,000) does.
        assert!(g.take(A, 5_002, 2 * FLOOR_DELAY_MS));
        assert_eq!(g.check(A, 50), Replay::TooOld);
        assert_eq!(g.check(A, 3_000), Replay::TooOld);
        assert_eq!(g.check(A, 5_000), Replay::TooOld);
        assert_eq!(g.check(A, 5_001), Replay::Taken);
        assert!(!g.take(A, 3_000, 2 * FLOOR_DELAY_MS));
        assert!(g.take(A, 5_003, 2 * FLOOR_DELAY_MS));
    }

    #[test]
    fn origins_are_bounded_and_the_least_recently_used_goes() {
        let mut g = ReplayGuard::new(3);
        for o in 1..=3 {
            assert!(g.take(NodeId(o), 1, 0));
        }
        assert!(g.take(NodeId(1), 2, 0)); // 1 is used again: 2 is now the oldest
        assert!(g.take(NodeId(4), 1, 0));
        assert_eq!(g.len(), 3);
        assert_eq!(g.check(NodeId(2), 1), Replay::Fresh, "2 was evicted");
        assert_eq!(g.check(NodeId(1), 1), Replay::Taken);
        assert_eq!(g.check(NodeId(3), 1), Replay::Taken);
        assert_eq!(g.check(NodeId(4), 1), Replay::Taken);
    }

    #[test]
    fn a_refused_replay_does_not_refresh_its_origin() {
        let mut g = ReplayGuard::new(2);
        assert!(g.take(NodeId(1), 1, 0));
        assert!(g.take(NodeId(2), 1, 0));
        assert!(!g.take(NodeId(1), 1, 0));
        assert!(g.take(NodeId(3), 1, 0));
        assert_eq!(g.check(NodeId(1), 1), Replay::Fresh, "1 was the oldest");
    }

    proptest::proptest! {
        /// Against a model (every number taken, and the highest): within one floor
        /// period a number is refused exactly when it was taken and is still inside
        /// the window, whatever the order, the gaps and the far-future jumps.
        #[test]
        fn the_window_matches_its_model(
            ops in proptest::collection::vec(
                proptest::prop_oneof![
                    8 => 0u64..3 * WINDOW,
                    1 => (u64::MAX - 2 * WINDOW)..=u64::MAX,
                ],
                1..400,
            )
        ) {
            let mut g = ReplayGuard::new(4);
            let mut taken = std::collections::HashSet::new();
            let mut highest = 0u64;
            for seq in ops {
                let refused = taken.contains(&seq) && highest - seq < WINDOW;
                proptest::prop_assert_eq!(g.take(A, seq, 0), !refused, "seq {}", seq);
                taken.insert(seq);
                highest = highest.max(seq);
            }
        }
    }
}
