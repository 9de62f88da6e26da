//! `SeenCache`: broadcast ids already delivered, so each node delivers a flooded message
//! once however many neighbours forward it. The C++ original had no broadcast beyond
//! its direct peers, so it needed none.
//!
//! Bounded twice: by count (the oldest id goes first) and by age (ids older than the
//! TTL are dropped on the next insert). The hop limit bounds how long a copy can
//! circulate, so an id that has aged out will not come back.

use std::collections::{HashSet, VecDeque};
use std::time::{Duration, Instant};

use crate::p2p_message::NodeId;

/// A broadcast's unique id: origin and the origin's sequence number.
pub(crate) type MessageId = (NodeId, u64);

/// Remembered broadcast ids, oldest first.
pub(crate) struct SeenCache {
    set: HashSet<MessageId>,
    order: VecDeque<(MessageId, Instant)>,
    cap: usize,
    ttl: Duration,
}

impl SeenCache {
    pub(crate) fn new(cap: usize, ttl: Duration) -> SeenCache {
        SeenCache {
            set: HashSet::new(),
            order: VecDeque::new(),
            cap: cap.max(1),
            ttl,
        }
    }

    /// Records `id`; `true` if it was not seen before (deliver and forward it).
    pub(crate) fn insert(&mut self, id: MessageId, now: Instant) -> bool {
        while let Some(&(old, at)) = self.order.front() {
            if self.order.len() < self.cap && now.duration_since(at) < self.ttl {
                break;
            }
            self.order.pop_front();
            self.set.remove(&old);
        }
        if !self.set.insert(id) {
            return false;
        }
        self.order.push_back((id, now));
        true
    }

    /// Whether `id` was seen (and has not aged out).
    pub(crate) fn contains(&self, id: &MessageId) -> bool {
        self.set.contains(id)
    }

    pub(crate) fn len(&self) -> usize {
        self.set.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn duplicates_are_refused() {
        let mut c = SeenCache::new(10, Duration::from_secs(60));
        let now = Instant::now();
        assert!(c.insert((NodeId(1), 1), now));
        assert!(!c.insert((NodeId(1), 1), now));
        assert!(c.insert((NodeId(2), 1), now));
    }

    #[test]
    fn bounded_by_count() {
        let mut c = SeenCache::new(3, Duration::from_secs(60));
        let now = Instant::now();
        for seq in 0..10 {
            assert!(c.insert((NodeId(1), seq), now));
            assert!(c.len() <= 3);
        }
        // The oldest were evicted, the newest are still known.
        assert!(!c.insert((NodeId(1), 9), now));
        assert!(c.insert((NodeId(1), 0), now));
    }

    #[test]
    fn bounded_by_age() {
        let mut c = SeenCache::new(100, Duration::from_secs(10));
        let t0 = Instant::now();
        assert!(c.insert((NodeId(1), 1), t0));
        let later = t0 + Duration::from_secs(11);
        assert!(c.insert((NodeId(1), 2), later));
        assert_eq!(c.len(), 1);
        assert!(c.insert((NodeId(1), 1), later));
    }
}
