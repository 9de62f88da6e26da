//! `AddrBook`: the bounded set of listen addresses a node knows, and when each may be
//! dialled next. The C++ `std::set<std::string>` of peers mixed "linked" and "known" and
//! never learned anything beyond the node it joined; here linked peers live in the
//! peer table and this book holds every address heard of, by peer exchange or use.
//!
//! Rules, all local to this module:
//! - Addresses that can never be a peer are refused: port 0, 0.0.0.0/::, multicast,
//!   the IPv4 broadcast address, and the node's own addresses.
//! - The book holds at most `cap` entries; when full, the entry with the most failures
//!   (then the longest unseen) makes room, but only for an address that is better.
//! - A failed dial backs off exponentially, 1 s doubling up to 60 s. An address that
//!   failed [`MAX_FAILURES`] times in a row (about four minutes of retries) is
//!   forgotten; if it comes back, its node will dial us or be gossiped again.

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant, SystemTime};

use crate::state::peer_cache::CachedAddr;

/// Consecutive failures after which an address is forgotten.
pub const MAX_FAILURES: u32 = 8;

/// First retry delay after a failed dial.
const BACKOFF_BASE: Duration = Duration::from_secs(1);

/// Longest retry delay.
const BACKOFF_CAP: Duration = Duration::from_secs(60);

/// What the node knows about one address.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KnownAddr {
    /// The listen address.
    pub addr: SocketAddr,
    /// When it was last heard of (peer exchange) or linked.
    pub last_seen: SystemTime,
    /// When a handshake with it last succeeded, if ever.
    pub last_success: Option<SystemTime>,
    /// Failed dials since the last success.
    pub failures: u32,
    /// Earliest time of the next dial (backoff).
    pub next_attempt: Instant,
}

/// Whether a node could listen on `addr` and be dialled there: false for port 0,
/// unspecified (0.0.0.0, ::), multicast and the IPv4 broadcast address.
pub fn is_dialable(addr: &SocketAddr) -> bool {
    if addr.port() == 0 {
        return false;
    }
    match addr.ip() {
        IpAddr::V4(ip) => !(ip.is_unspecified() || ip.is_multicast() || ip.is_broadcast()),
        IpAddr::V6(ip) => !(ip.is_unspecified() || ip.is_multicast()),
    }
}

/// The known addresses; see the module doc for the rules.
pub(crate) struct AddrBook {
    map: HashMap<SocketAddr, KnownAddr>,
    own: HashSet<SocketAddr>,
    cap: usize,
}

impl AddrBook {
    pub(crate) fn new(cap: usize) -> AddrBook {
        AddrBook {
            map: HashMap::new(),
            own: HashSet::new(),
            cap: cap.max(1),
        }
    }

    /// Marks `addr` as one of this node's own, so it is never stored or dialled.
    pub(crate) fn add_own(&mut self, addr: SocketAddr) {
        self.map.remove(&addr);
        self.own.insert(addr);
    }

    /// Stops treating `addr` as our own (an adopted observed address was replaced).
    pub(crate) fn remove_own(&mut self, addr: &SocketAddr) {
        self.own.remove(addr);
    }

    pub(crate) fn is_own(&self, addr: &SocketAddr) -> bool {
        self.own.contains(addr)
    }

    pub(crate) fn len(&self) -> usize {
        self.map.len()
    }

    /// Records that `addr` exists (heard of by peer exchange). Returns `true` if it is
    /// new to the book.
    pub(crate) fn learn(&mut self, addr: SocketAddr, now: Instant) -> bool {
        if !is_dialable(&addr) || self.own.contains(&addr) {
            return false;
        }
        if let Some(k) = self.map.get_mut(&addr) {
            k.last_seen = SystemTime::now();
            return false;
        }
        if self.map.len() >= self.cap && !self.evict_one() {
            return false;
        }
        self.map.insert(
            addr,
            KnownAddr {
                addr,
                last_seen: SystemTime::now(),
                last_success: None,
                failures: 0,
                next_attempt: now,
            },
        );
        true
    }

    /// Makes room for a fresh address by dropping one that has failed; a full book of
    /// healthy addresses keeps them (new gossip cannot push out proven peers).
    fn evict_one(&mut self) -> bool {
        let worst = self
            .map
            .values()
            .filter(|k| k.failures > 0)
            .max_by_key(|k| (k.failures, std::cmp::Reverse(k.last_seen)))
            .map(|k| k.addr);
        match worst {
            Some(a) => {
                self.map.remove(&a);
                true
            }
            None => false,
        }
    }

    /// A handshake with `addr` succeeded.
    pub(crate) fn mark_success(&mut self, addr: SocketAddr, now: Instant) {
        self.learn(addr, now);
        if let Some(k) = self.map.get_mut(&addr) {
            let t = SystemTime::now();
            k.last_seen = t;
            k.last_success = Some(t);
            k.failures = 0;
            k.next_attempt = now;
        }
    }

    /// A dial of `addr` failed: back off, or forget an address that keeps failing.
    pub(crate) fn mark_failure(&mut self, addr: SocketAddr, now: Instant) {
        let Some(k) = self.map.get_mut(&addr) else {
            return;
        };
        k.failures = k.failures.saturating_add(1);
        if k.failures >= MAX_FAILURES {
            self.map.remove(&addr);
            return;
        }
        let shift = (k.failures - 1).min(16);
        let delay = BACKOFF_BASE.saturating_mul(1 << shift).min(BACKOFF_CAP);
        k.next_attempt = now + delay;
    }

    /// Holds off dialing `addr` until `until`: the peer said LEAVE, or the user
    /// disconnected it, so an immediate redial would be wrong.
    pub(crate) fn defer(&mut self, addr: &SocketAddr, until: Instant) {
        if let Some(k) = self.map.get_mut(addr) {
            k.next_attempt = k.next_attempt.max(until);
        }
    }

    /// Removes an address (a user's `forget`, or a peer that said it is leaving).
    pub(crate) fn remove(&mut self, addr: &SocketAddr) -> bool {
        self.map.remove(addr).is_some()
    }

    /// Up to `n` addresses due for a dial and not in `skip`: fewest failures first (an
    /// address that worked once but fails now must not starve untried ones), then
    /// most recently successful, then most recently heard of.
    pub(crate) fn dial_candidates(
        &self,
        now: Instant,
        skip: &HashSet<SocketAddr>,
        n: usize,
    ) -> Vec<SocketAddr> {
        let mut due: Vec<&KnownAddr> = self
            .map
            .values()
            .filter(|k| k.next_attempt <= now && !skip.contains(&k.addr))
            .collect();
        due.sort_by_key(|k| {
            (
                k.failures,
                std::cmp::Reverse(k.last_success),
                std::cmp::Reverse(k.last_seen),
            )
        });
        due.into_iter().take(n).map(|k| k.addr).collect()
    }

    /// Up to `n` addresses worth telling a peer about: ones this node has linked with
    /// (a handshake succeeded, now or in a run the peers file remembers) and that are
    /// not failing now. An address only heard of is never passed on: otherwise one
    /// peer's made-up list would spread through the overlay (and into referrals).
    pub(crate) fn healthy(&self, n: usize) -> Vec<SocketAddr> {
        self.map
            .values()
            .filter(|k| k.failures == 0 && k.last_success.is_some())
            .take(n)
            .map(|k| k.addr)
            .collect()
    }

    /// Adds addresses read from the peers file, keeping their history, all due for a
    /// dial now. Own and undialable addresses are skipped; the cap still holds.
    /// Returns how many were added.
    pub(crate) fn restore(&mut self, cached: &[CachedAddr], now: Instant) -> usize {
        let mut added = 0;
        for c in cached {
            if self.map.len() >= self.cap {
                break;
            }
            if !self.learn(c.addr, now) {
                continue;
            }
            if let Some(k) = self.map.get_mut(&c.addr) {
                k.last_seen = c.last_seen.unwrap_or(k.last_seen);
                k.last_success = c.last_success;
                k.failures = c.failures.min(MAX_FAILURES - 1);
                added += 1;
            }
        }
        added
    }

    /// Every entry in the form the peers file stores, most recently successful first.
    pub(crate) fn to_cache(&self) -> Vec<CachedAddr> {
        let mut v: Vec<CachedAddr> = self
            .map
            .values()
            .map(|k| CachedAddr {
                addr: k.addr,
                last_seen: Some(k.last_seen),
                last_success: k.last_success,
                failures: k.failures,
            })
            .collect();
        v.sort_by_key(|c| (std::cmp::Reverse(c.last_success), c.addr));
        v
    }

    /// A copy of every entry, for `known` and `info`.
    pub(crate) fn entries(&self) -> Vec<KnownAddr> {
        let mut v: Vec<KnownAddr> = self.map.values().cloned().collect();
        v.sort_by_key(|k| k.addr);
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn a(s: &str) -> SocketAddr {
        s.parse().expect("test address")
    }

    #[test]
    fn refuses_undialable_and_own() {
        let mut b = AddrBook::new(10);
        let now = Instant::now();
        b.add_own(a("127.0.0.1:9000"));
        for bad in [
            "127.0.0.1:0",
            "0.0.0.0:9000",
            "[::]:9000",
            "224.0.0.1:9000",
            "255.255.255.255:9000",
            "[ff02::1]:9000",
            "127.0.0.1:9000",
        ] {
            assert!(!b.learn(a(bad), now), "{bad} was accepted");
        }
        assert!(b.learn(a("127.0.0.1:9001"), now));
        assert!(
            !b.learn(a("127.0.0.1:9001"), now),
            "duplicate counted as new"
        );
        assert_eq!(b.len(), 1);
    }

    #[test]
    fn only_linked_addresses_that_are_not_failing_are_passed_on() {
        let mut b = AddrBook::new(10);
        let now = Instant::now();
        b.learn(a("10.0.0.1:1"), now); // heard of only
        b.mark_success(a("10.0.0.2:1"), now); // linked
        b.mark_success(a("10.0.0.3:1"), now);
        b.mark_failure(a("10.0.0.3:1"), now); // linked once, failing now
        assert_eq!(b.healthy(10), vec![a("10.0.0.2:1")]);
    }

    #[test]
    fn bounded_and_healthy_entries_are_kept() {
        let mut b = AddrBook::new(2);
        let now = Instant::now();
        assert!(b.learn(a("10.0.0.1:1"), now));
        assert!(b.learn(a("10.0.0.2:1"), now));
        assert!(
            !b.learn(a("10.0.0.3:1"), now),
            "full book of healthy entries"
        );
        b.mark_failure(a("10.0.0.1:1"), now);
        assert!(b.learn(a("10.0.0.3:1"), now), "a failing entry makes room");
        assert_eq!(b.len(), 2);
        let addrs: HashSet<_> = b.entries().into_iter().map(|k| k.addr).collect();
        assert!(!addrs.contains(&a("10.0.0.1:1")));
    }

    #[test]
    fn backoff_and_forgetting() {
        let mut b = AddrBook::new(10);
        let now = Instant::now();
        let x = a("10.0.0.1:1");
        b.learn(x, now);
        b.mark_failure(x, now);
        assert!(b.dial_candidates(now, &HashSet::new(), 5).is_empty());
        let later = now + Duration::from_secs(1);
        assert_eq!(b.dial_candidates(later, &HashSet::new(), 5), vec![x]);
        b.mark_failure(x, now);
        assert!(b.dial_candidates(later, &HashSet::new(), 5).is_empty());
        for _ in 2..MAX_FAILURES {
            b.mark_failure(x, now);
        }
        assert_eq!(b.len(), 0, "an address that keeps failing is forgotten");
    }

    #[test]
    fn restore_respects_cap_own_and_history() {
        let mut b = AddrBook::new(2);
        let now = Instant::now();
        b.add_own(a("127.0.0.1:9000"));
        let t = SystemTime::UNIX_EPOCH + Duration::from_secs(1000);
        let cached = |s: &str, f: u32| CachedAddr {
            addr: a(s),
            last_seen: Some(t),
            last_success: Some(t),
            failures: f,
        };
        let n = b.restore(
            &[
                cached("127.0.0.1:9000", 0),
                cached("0.0.0.0:1", 0),
                cached("10.0.0.1:1", 2),
                cached("10.0.0.2:1", 0),
                cached("10.0.0.3:1", 0),
            ],
            now,
        );
        assert_eq!(n, 2);
        assert_eq!(b.len(), 2);
        let out = b.to_cache();
        assert_eq!(out[0].last_success, Some(t));
        assert!(out
            .iter()
            .any(|c| c.addr == a("10.0.0.1:1") && c.failures == 2));
        assert!(out.iter().all(|c| c.addr != a("127.0.0.1:9000")));
    }

    #[test]
    fn defer_holds_off_a_dial() {
        let mut b = AddrBook::new(10);
        let now = Instant::now();
        let x = a("10.0.0.1:1");
        b.mark_success(x, now);
        b.defer(&x, now + Duration::from_secs(30));
        assert!(b.dial_candidates(now, &HashSet::new(), 5).is_empty());
        let later = now + Duration::from_secs(31);
        assert_eq!(b.dial_candidates(later, &HashSet::new(), 5), vec![x]);
    }

    #[test]
    fn successful_addresses_come_first() {
        let mut b = AddrBook::new(10);
        let now = Instant::now();
        b.learn(a("10.0.0.1:1"), now);
        b.mark_success(a("10.0.0.2:1"), now);
        let c = b.dial_candidates(now, &HashSet::new(), 5);
        assert_eq!(c[0], a("10.0.0.2:1"));
        let skip: HashSet<_> = [a("10.0.0.2:1")].into_iter().collect();
        assert_eq!(b.dial_candidates(now, &skip, 5), vec![a("10.0.0.1:1")]);
    }
}
