//! `AddrBook`: the bounded set of listen addresses a node knows, and when each may be
//! dialled next. The C++ `std::set<std::string>` of peers mixed "linked" and "known" and
//! never learned anything beyond the node it joined; here linked peers live in the
//! peer table and this book holds every address heard of, by peer exchange or use.
//!
//! The rules keep the ideas of Bitcoin Core's addrman (new and tried tables, per-source
//! limits) in one small map:
//! - Addresses that can never be a peer are refused: port 0, 0.0.0.0/::, multicast,
//!   the IPv4 broadcast address, and the node's own addresses.
//! - **New and tried.** An entry is *tried* once a handshake with it succeeded
//!   (`last_success` is set), else *new*. Tried entries are never pushed out by other
//!   addresses: they leave only when they failed [`MAX_FAILURES`] times in a row, or
//!   are forgotten on purpose. The book holds at most `cap` entries; when full, a
//!   heard-of address may only replace a new entry that has failed (the most failures,
//!   then the longest unseen), so a full book of healthy entries refuses newcomers. An
//!   address that linked, or that the user typed, may replace any new entry.
//! - **Per-source limit.** An address heard of in a PEERS list records the network
//!   group (`net_group` (`state/net.rs`): IPv4 /24, IPv6 /48) of the peer that sent it. At most
//!   [`NEW_PER_SOURCE`] new entries come from one group; more are ignored, so one peer
//!   (or one subnet of them) cannot fill the book. An entry stops counting once tried.
//!   Addresses the user typed and those from the peers file have no source and no limit.
//! - **Dial budget.** Dials of new entries (except those the user typed) spend tokens
//!   of a `DialBudget`, so a flood of bogus addresses costs a bounded number of dials
//!   a second; tried entries and user-typed ones are dialled whenever due.
//! - **Spread.** `AddrBook::dial_candidates` goes round-robin over source groups and
//!   prefers addresses whose /24 (/48) holds none of our outbound links; only when
//!   nothing else is due does it take the rest, so a loopback overlay (one /24) forms
//!   as before.
//! - **Ids.** An entry may carry the node id last proven at its address: by a link
//!   with a verified address (we dialled it, or a dial-back probe found the id
//!   there), or, for an entry with none yet, by a PEERS list of a verified peer. A
//!   dial of the address expects that id inside the TLS certificate check. A proven
//!   id replaces any other; a gossiped one never replaces one already there. After
//!   [`MAX_ID_MISSES`] dials in a row that found another node's certificate, the id
//!   is dropped (the node there got a new key), so the next dial learns the new one.
//! - A failed dial backs off exponentially, 1 s doubling up to 60 s. An address that
//!   failed [`MAX_FAILURES`] times in a row (about four minutes of retries) is
//!   forgotten; if it comes back, its node will dial us or be gossiped again.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant, SystemTime};

use crate::p2p_message::NodeId;
use crate::state::net::{is_unicast, net_group};
use crate::state::peer_cache::CachedAddr;

/// Consecutive failures after which an address is forgotten.
pub const MAX_FAILURES: u32 = 8;

/// Most new (never tried) entries learned from one source group (the /24 or /48 of the
/// peer that sent the PEERS list). 64 is half a PEERS exchange (128 addresses) and
/// eight times the default target link count: plenty for an honest peer's list of
/// its links, yet 16 sources are needed to fill the default 1,000-entry book.
pub const NEW_PER_SOURCE: usize = 64;

/// Dials in a row that found another node's certificate than the stored id, after
/// which the stored id is dropped: a node that restarted with a new key (its key
/// file deleted) on the same address is dialled without expectation again.
pub const MAX_ID_MISSES: u32 = 3;

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
    /// When a handshake with it last succeeded, if ever: set means *tried*.
    pub last_success: Option<SystemTime>,
    /// Failed dials since the last success.
    pub failures: u32,
    /// Earliest time of the next dial (backoff).
    pub next_attempt: Instant,
    /// The network group (`net_group` (`state/net.rs`)) of the peer whose PEERS list first named it;
    /// `None` if the user typed it, the peers file had it, or it linked with us first.
    pub source: Option<IpAddr>,
    /// The node id last proven at this address (see the module doc), which a dial
    /// expects in the peer's certificate; `None` when unknown.
    pub id: Option<NodeId>,
    /// Dials in a row whose certificate was for another node than `id`.
    pub(crate) id_misses: u32,
    /// The user typed it: never rate-limited.
    pub(crate) user: bool,
}

impl KnownAddr {
    /// Whether a handshake with it ever succeeded.
    pub fn is_tried(&self) -> bool {
        self.last_success.is_some()
    }

    /// Whether a dial of it spends a token of the [`DialBudget`].
    fn rate_limited(&self) -> bool {
        !self.is_tried() && !self.user
    }

    /// The source group it counts against, while it is new.
    fn counted_source(&self) -> Option<IpAddr> {
        self.source.filter(|_| !self.is_tried())
    }
}

/// Whether a node could listen on `addr` and be dialled there: false for port 0,
/// unspecified (0.0.0.0, ::), multicast and the IPv4 broadcast address.
pub fn is_dialable(addr: &SocketAddr) -> bool {
    if addr.port() == 0 {
        return false;
    }
    is_unicast(addr.ip())
}

/// What [`AddrBook::learn_from`] did with an address.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Learned {
    /// A new entry.
    Added,
    /// Already known: only its `last_seen` was refreshed.
    Known,
    /// Its source group already has [`NEW_PER_SOURCE`] new entries.
    SourceFull,
    /// Undialable, our own, or the book is full of entries it may not replace.
    Refused,
}

/// A token bucket for dials of new addresses: `burst` tokens at most, refilled at
/// `per_sec`. It starts full, so a node's first round of dials is not held up.
#[derive(Clone, Debug)]
pub(crate) struct DialBudget {
    per_sec: f64,
    burst: f64,
    tokens: f64,
    refilled: Option<Instant>,
}

impl DialBudget {
    /// At least one token of burst, so new addresses are dialled at all.
    pub(crate) fn new(per_sec: f64, burst: usize) -> DialBudget {
        let burst = burst.max(1) as f64;
        DialBudget {
            per_sec: per_sec.max(0.0),
            burst,
            tokens: burst,
            refilled: None,
        }
    }

    fn refill(&mut self, now: Instant) {
        if let Some(at) = self.refilled {
            let dt = now.saturating_duration_since(at).as_secs_f64();
            self.tokens = (self.tokens + dt * self.per_sec).min(self.burst);
        }
        self.refilled = Some(now);
    }

    fn take(&mut self) -> bool {
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// Which entries a newcomer may replace when the book is full.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Room {
    /// Only a new entry that has failed: for addresses merely heard of.
    FailingNew,
    /// Any new entry (failing first): for addresses that linked or the user typed.
    AnyNew,
}

/// A dial candidate, copied out of the map.
struct Candidate {
    addr: SocketAddr,
    group: IpAddr,
    limited: bool,
}

/// The known addresses; see the module doc for the rules.
pub(crate) struct AddrBook {
    map: HashMap<SocketAddr, KnownAddr>,
    own: HashSet<SocketAddr>,
    cap: usize,
    /// New entries per source group (only groups with at least one).
    new_per_source: HashMap<IpAddr, usize>,
    budget: DialBudget,
    /// The source whose candidate was picked last: the next round starts after it.
    last_source: Option<Option<IpAddr>>,
}

impl AddrBook {
    pub(crate) fn new(cap: usize, budget: DialBudget) -> AddrBook {
        AddrBook {
            map: HashMap::new(),
            own: HashSet::new(),
            cap: cap.max(1),
            new_per_source: HashMap::new(),
            budget,
            last_source: None,
        }
    }

    /// Marks `addr` as one of this node's own, so it is never stored or dialled.
    pub(crate) fn add_own(&mut self, addr: SocketAddr) {
        self.take(&addr);
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

    /// Records that `addr` exists, with no source limit (the peers file, or a link).
    /// Returns `true` if it is new to the book.
    pub(crate) fn learn(&mut self, addr: SocketAddr, now: Instant) -> bool {
        self.insert(addr, None, Room::FailingNew, now) == Learned::Added
    }

    /// Records `addr` from a PEERS list sent by a peer at `source` (its socket's
    /// remote IP), within that group's [`NEW_PER_SOURCE`].
    /// `id` is the id the peer names for it (only a verified peer's is passed): kept
    /// if the entry has none yet, never replacing one.
    pub(crate) fn learn_from(
        &mut self,
        addr: SocketAddr,
        id: Option<NodeId>,
        source: IpAddr,
        now: Instant,
    ) -> Learned {
        let learned = self.insert(addr, Some(net_group(source)), Room::FailingNew, now);
        if let (Some(id), Some(k)) = (id, self.map.get_mut(&addr)) {
            if k.id.is_none() {
                k.id = Some(id);
            }
        }
        learned
    }

    /// The id a dial of `addr` expects, if one is stored.
    pub(crate) fn expected_id(&self, addr: &SocketAddr) -> Option<NodeId> {
        self.map.get(addr).and_then(|k| k.id)
    }

    /// A dial of `addr` found another node's certificate than the stored id: after
    /// [`MAX_ID_MISSES`] in a row the id is dropped. The failure itself is
    /// [`mark_failure`](AddrBook::mark_failure)'s.
    pub(crate) fn mark_wrong_id(&mut self, addr: &SocketAddr) {
        if let Some(k) = self.map.get_mut(addr) {
            k.id_misses = k.id_misses.saturating_add(1);
            if k.id_misses >= MAX_ID_MISSES {
                k.id = None;
                k.id_misses = 0;
            }
        }
    }

    /// Records an address the user typed: no source limit, never rate-limited, and it
    /// may replace any new entry in a full book.
    pub(crate) fn remember(&mut self, addr: SocketAddr, now: Instant) {
        self.insert(addr, None, Room::AnyNew, now);
        if let Some(k) = self.map.get_mut(&addr) {
            k.user = true;
        }
    }

    fn insert(
        &mut self,
        addr: SocketAddr,
        source: Option<IpAddr>,
        room: Room,
        now: Instant,
    ) -> Learned {
        if !is_dialable(&addr) || self.own.contains(&addr) {
            return Learned::Refused;
        }
        if let Some(k) = self.map.get_mut(&addr) {
            k.last_seen = SystemTime::now();
            return Learned::Known;
        }
        if let Some(g) = source {
            if self.new_per_source.get(&g).copied().unwrap_or(0) >= NEW_PER_SOURCE {
                return Learned::SourceFull;
            }
        }
        if self.map.len() >= self.cap && !self.evict_one(room) {
            return Learned::Refused;
        }
        if let Some(g) = source {
            *self.new_per_source.entry(g).or_insert(0) += 1;
        }
        self.map.insert(
            addr,
            KnownAddr {
                addr,
                last_seen: SystemTime::now(),
                last_success: None,
                failures: 0,
                next_attempt: now,
                source,
                id: None,
                id_misses: 0,
                user: false,
            },
        );
        Learned::Added
    }

    /// Removes an entry, keeping the per-source counts right.
    fn take(&mut self, addr: &SocketAddr) -> Option<KnownAddr> {
        let k = self.map.remove(addr)?;
        if let Some(g) = k.counted_source() {
            self.uncount(g);
        }
        Some(k)
    }

    fn uncount(&mut self, group: IpAddr) {
        if let Some(n) = self.new_per_source.get_mut(&group) {
            *n -= 1;
            if *n == 0 {
                self.new_per_source.remove(&group);
            }
        }
    }

    /// Makes room by dropping a new entry: one that has failed (the most failures,
    /// then the longest unseen), or with [`Room::AnyNew`] the longest unseen new one.
    /// Tried entries are never dropped here, and user-typed ones only for another
    /// user-typed or linked address. Returns `false` if nothing may go.
    fn evict_one(&mut self, room: Room) -> bool {
        let worst = self
            .map
            .values()
            .filter(|k| !k.is_tried())
            .filter(|k| match room {
                Room::FailingNew => k.failures > 0 && !k.user,
                Room::AnyNew => true,
            })
            .max_by_key(|k| (k.failures, !k.user, std::cmp::Reverse(k.last_seen)))
            .map(|k| k.addr);
        match worst {
            Some(a) => {
                self.take(&a);
                true
            }
            None => false,
        }
    }

    /// A handshake with `addr` succeeded: it is tried now, and stops counting against
    /// its source. An address that linked may replace any new entry in a full book.
    /// `id` is the node proven there; it replaces any stored id.
    pub(crate) fn mark_success(&mut self, addr: SocketAddr, id: Option<NodeId>, now: Instant) {
        self.insert(addr, None, Room::AnyNew, now);
        let Some(k) = self.map.get_mut(&addr) else {
            return;
        };
        let counted = k.counted_source();
        let t = SystemTime::now();
        k.last_seen = t;
        k.last_success = Some(t);
        k.failures = 0;
        k.next_attempt = now;
        if id.is_some() {
            k.id = id;
            k.id_misses = 0;
        }
        if let Some(g) = counted {
            self.uncount(g);
        }
    }

    /// A dial of `addr` failed: back off, or forget an address that keeps failing.
    pub(crate) fn mark_failure(&mut self, addr: SocketAddr, now: Instant) {
        let Some(k) = self.map.get_mut(&addr) else {
            return;
        };
        k.failures = k.failures.saturating_add(1);
        if k.failures >= MAX_FAILURES {
            self.take(&addr);
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
        self.take(addr).is_some()
    }

    /// Up to `n` addresses to dial now, not in `skip` and not backing off. Each
    /// source (a group, or "none" for the user and the peers file) takes its turn in
    /// round-robin order, continuing after the source served last time, so one
    /// source's addresses cannot take every dial. Within a source: fewest failures
    /// first (an address that worked once but fails now must not starve untried
    /// ones), then tried before new, then most recently heard of. A first pass takes
    /// only addresses whose group is not in `outbound` (the groups of our outbound
    /// links and dials) nor picked already; a second pass takes the rest, so one /24
    /// never stops an overlay from forming. A new entry the user did not type is
    /// taken only if the dial budget has a token, which it spends.
    pub(crate) fn dial_candidates(
        &mut self,
        now: Instant,
        skip: &HashSet<SocketAddr>,
        outbound: &HashSet<IpAddr>,
        n: usize,
    ) -> Vec<SocketAddr> {
        if n == 0 {
            return Vec::new();
        }
        self.budget.refill(now);
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
                k.addr,
            )
        });
        let mut queues: BTreeMap<Option<IpAddr>, VecDeque<Candidate>> = BTreeMap::new();
        for k in due {
            queues.entry(k.source).or_default().push_back(Candidate {
                addr: k.addr,
                group: net_group(k.addr.ip()),
                limited: k.rate_limited(),
            });
        }
        // Sources in turn order: after the one served last, wrapping around.
        let mut order: Vec<Option<IpAddr>> = queues.keys().copied().collect();
        if let Some(last) = self.last_source {
            let start = order.partition_point(|s| *s <= last);
            order.rotate_left(start);
        }
        let mut taken_groups: HashSet<IpAddr> = outbound.clone();
        let mut picked = Vec::new();
        for diverse_only in [true, false] {
            loop {
                let mut progress = false;
                for source in &order {
                    if picked.len() >= n {
                        return picked;
                    }
                    let Some(q) = queues.get_mut(source) else {
                        continue;
                    };
                    let tokens = self.budget.tokens >= 1.0;
                    let pos = q.iter().position(|c| {
                        (!diverse_only || !taken_groups.contains(&c.group))
                            && (!c.limited || tokens)
                    });
                    let Some(c) = pos.and_then(|p| q.remove(p)) else {
                        continue;
                    };
                    if c.limited {
                        self.budget.take();
                    }
                    taken_groups.insert(c.group);
                    picked.push(c.addr);
                    self.last_source = Some(*source);
                    progress = true;
                }
                if !progress {
                    break;
                }
            }
        }
        picked
    }

    /// Up to `n` addresses worth telling a peer about: ones this node has linked with
    /// (a handshake succeeded, now or in a run the peers file remembers) and that are
    /// not failing now. An address only heard of is never passed on: otherwise one
    /// peer's made-up list would spread through the overlay (and into referrals).
    pub(crate) fn healthy(&self, n: usize) -> Vec<(SocketAddr, Option<NodeId>)> {
        self.map
            .values()
            .filter(|k| k.failures == 0 && k.last_success.is_some())
            .take(n)
            .map(|k| (k.addr, k.id))
            .collect()
    }

    /// Adds addresses read from the peers file, keeping their history, all due for a
    /// dial now. Own and undialable addresses are skipped; the cap still holds, and
    /// there is no source limit (the file is our own). Returns how many were added.
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
                k.id = c.id;
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
                id: k.id,
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

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("test ip")
    }

    /// A book whose dial budget never runs out in these tests.
    fn book(cap: usize) -> AddrBook {
        AddrBook::new(cap, DialBudget::new(1000.0, 1000))
    }

    fn due(b: &mut AddrBook, now: Instant, n: usize) -> Vec<SocketAddr> {
        b.dial_candidates(now, &HashSet::new(), &HashSet::new(), n)
    }

    #[test]
    fn one_source_group_adds_at_most_new_per_source() {
        let mut b = book(1000);
        let now = Instant::now();
        let mut added = 0;
        for i in 0..200u16 {
            // Two hosts of one /24 share the limit.
            let src = if i % 2 == 0 {
                ip("10.9.9.1")
            } else {
                ip("10.9.9.2")
            };
            match b.learn_from(SocketAddr::new(ip("10.0.0.1"), 1000 + i), None, src, now) {
                Learned::Added => added += 1,
                Learned::SourceFull => {}
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(added, NEW_PER_SOURCE);
        // Another group, the user and the peers file are not limited by it.
        assert_eq!(
            b.learn_from(a("10.0.0.2:1"), None, ip("10.9.8.1"), now),
            Learned::Added
        );
        b.remember(a("10.0.0.3:1"), now);
        assert!(b.learn(a("10.0.0.4:1"), now));
        assert_eq!(b.len(), NEW_PER_SOURCE + 3);
        // A tried entry stops counting: room for one more from the full group.
        b.mark_success(a("10.0.0.1:1000"), None, now);
        assert_eq!(
            b.learn_from(a("10.0.0.5:1"), None, ip("10.9.9.3"), now),
            Learned::Added
        );
        assert_eq!(
            b.learn_from(a("10.0.0.6:1"), None, ip("10.9.9.3"), now),
            Learned::SourceFull
        );
        // So does a removed one.
        b.remove(&a("10.0.0.1:1002"));
        assert_eq!(
            b.learn_from(a("10.0.0.6:1"), None, ip("10.9.9.3"), now),
            Learned::Added
        );
    }

    #[test]
    fn new_entries_never_push_out_tried_ones_even_failing() {
        let mut b = book(3);
        let now = Instant::now();
        b.mark_success(a("10.0.0.1:1"), None, now);
        b.mark_success(a("10.0.0.2:1"), None, now);
        b.mark_failure(a("10.0.0.1:1"), now);
        b.mark_failure(a("10.0.0.1:1"), now);
        b.learn_from(a("10.1.0.1:1"), None, ip("10.7.0.1"), now);
        b.mark_failure(a("10.1.0.1:1"), now);
        // The failing new entry makes room once; then only tried ones are left to
        // fail, and they stay.
        assert_eq!(
            b.learn_from(a("10.1.0.2:1"), None, ip("10.7.0.1"), now),
            Learned::Added
        );
        b.mark_failure(a("10.1.0.2:1"), now);
        for i in 3..50u16 {
            let _ = b.learn_from(
                SocketAddr::new(ip("10.1.0.9"), i),
                None,
                ip("10.7.1.1"),
                now,
            );
        }
        let addrs: HashSet<_> = b.entries().into_iter().map(|k| k.addr).collect();
        assert!(addrs.contains(&a("10.0.0.1:1")), "{addrs:?}");
        assert!(addrs.contains(&a("10.0.0.2:1")), "{addrs:?}");
        assert_eq!(b.len(), 3);
        // A tried entry still goes after MAX_FAILURES.
        for _ in 2..MAX_FAILURES {
            b.mark_failure(a("10.0.0.1:1"), now);
        }
        assert!(!b.entries().iter().any(|k| k.addr == a("10.0.0.1:1")));
    }

    #[test]
    fn a_link_or_the_user_may_replace_a_healthy_new_entry() {
        let mut b = book(2);
        let now = Instant::now();
        b.learn_from(a("10.1.0.1:1"), None, ip("10.7.0.1"), now);
        b.learn_from(a("10.1.0.2:1"), None, ip("10.7.0.1"), now);
        assert_eq!(
            b.learn_from(a("10.1.0.3:1"), None, ip("10.7.0.1"), now),
            Learned::Refused
        );
        b.mark_success(a("10.0.0.1:1"), None, now);
        b.remember(a("10.0.0.2:1"), now);
        let addrs: HashSet<_> = b.entries().into_iter().map(|k| k.addr).collect();
        assert_eq!(
            addrs,
            [a("10.0.0.1:1"), a("10.0.0.2:1")].into_iter().collect()
        );
    }

    #[test]
    fn new_dials_spend_the_budget_tried_and_user_ones_do_not() {
        let mut b = AddrBook::new(100, DialBudget::new(2.0, 3));
        let now = Instant::now();
        for i in 0..20u8 {
            b.learn_from(
                SocketAddr::new(ip("10.1.0.1"), 100 + u16::from(i)),
                None,
                ip("10.7.0.1"),
                now,
            );
        }
        b.mark_success(a("10.0.0.1:1"), None, now);
        b.remember(a("10.0.0.2:1"), now);
        let first = due(&mut b, now, 10);
        assert_eq!(
            first.len(),
            5,
            "burst 3 plus the tried and the typed: {first:?}"
        );
        assert!(first.contains(&a("10.0.0.1:1")) && first.contains(&a("10.0.0.2:1")));
        assert!(
            due(&mut b, now, 10).len() == 2,
            "no tokens left for new ones"
        );
        let later = now + Duration::from_millis(500);
        let skip: HashSet<_> = [a("10.0.0.1:1"), a("10.0.0.2:1")].into_iter().collect();
        assert_eq!(
            b.dial_candidates(later, &skip, &HashSet::new(), 10).len(),
            1,
            "2 a second: one token in half a second"
        );
    }

    #[test]
    fn sources_take_turns() {
        let mut b = AddrBook::new(1000, DialBudget::new(0.0, 1));
        let now = Instant::now();
        for i in 0..50u16 {
            b.learn_from(
                SocketAddr::new(ip("10.1.0.1"), 100 + i),
                None,
                ip("10.7.0.1"),
                now,
            );
        }
        b.learn_from(a("10.2.0.1:1"), None, ip("10.8.0.1"), now);
        let first = due(&mut b, now, 1);
        // The one token went to one source; the next turn is the other's.
        b.budget = DialBudget::new(0.0, 1);
        let second = due(&mut b, now, 1);
        let picked: HashSet<_> = first.iter().chain(second.iter()).copied().collect();
        assert!(picked.contains(&a("10.2.0.1:1")), "{picked:?}");
        assert_eq!(picked.len(), 2);
    }

    #[test]
    fn other_subnets_first_then_the_rest() {
        let mut b = book(10);
        let now = Instant::now();
        b.mark_success(a("10.0.0.1:1"), None, now);
        b.mark_success(a("10.0.0.2:1"), None, now);
        b.mark_success(a("10.5.0.1:1"), None, now);
        let outbound: HashSet<_> = [ip("10.0.0.0")].into_iter().collect();
        let c = b.dial_candidates(now, &HashSet::new(), &outbound, 1);
        assert_eq!(c, vec![a("10.5.0.1:1")]);
        // Nothing else due: the preferred-against subnet is still dialled.
        let c = b.dial_candidates(now, &HashSet::new(), &outbound, 3);
        assert_eq!(c.len(), 3);
        assert_eq!(c[0], a("10.5.0.1:1"));
        // Within one round, two picks avoid sharing a /24 while others are due.
        let mut b = book(10);
        b.mark_success(a("10.3.0.1:1"), None, now);
        b.mark_success(a("10.3.0.2:1"), None, now);
        b.mark_success(a("10.4.0.1:1"), None, now);
        let c: HashSet<_> = due(&mut b, now, 2).into_iter().collect();
        assert!(c.contains(&a("10.4.0.1:1")), "{c:?}");
    }

    #[test]
    fn refuses_undialable_and_own() {
        let mut b = book(10);
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
        let mut b = book(10);
        let now = Instant::now();
        b.learn(a("10.0.0.1:1"), now); // heard of only
        b.mark_success(a("10.0.0.2:1"), None, now); // linked
        b.mark_success(a("10.0.0.3:1"), None, now);
        b.mark_failure(a("10.0.0.3:1"), now); // linked once, failing now
        assert_eq!(b.healthy(10), vec![(a("10.0.0.2:1"), None)]);
    }

    #[test]
    fn bounded_and_healthy_entries_are_kept() {
        let mut b = book(2);
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
        let mut b = book(10);
        let now = Instant::now();
        let x = a("10.0.0.1:1");
        b.learn(x, now);
        b.mark_failure(x, now);
        assert!(b
            .dial_candidates(now, &HashSet::new(), &HashSet::new(), 5)
            .is_empty());
        let later = now + Duration::from_secs(1);
        assert_eq!(
            b.dial_candidates(later, &HashSet::new(), &HashSet::new(), 5),
            vec![x]
        );
        b.mark_failure(x, now);
        assert!(b
            .dial_candidates(later, &HashSet::new(), &HashSet::new(), 5)
            .is_empty());
        for _ in 2..MAX_FAILURES {
            b.mark_failure(x, now);
        }
        assert_eq!(b.len(), 0, "an address that keeps failing is forgotten");
    }

    #[test]
    fn restore_respects_cap_own_and_history() {
        let mut b = book(2);
        let now = Instant::now();
        b.add_own(a("127.0.0.1:9000"));
        let t = SystemTime::UNIX_EPOCH + Duration::from_secs(1000);
        let cached = |s: &str, f: u32| CachedAddr {
            addr: a(s),
            last_seen: Some(t),
            last_success: Some(t),
            failures: f,
            id: None,
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
        let mut b = book(10);
        let now = Instant::now();
        let x = a("10.0.0.1:1");
        b.mark_success(x, None, now);
        b.defer(&x, now + Duration::from_secs(30));
        assert!(b
            .dial_candidates(now, &HashSet::new(), &HashSet::new(), 5)
            .is_empty());
        let later = now + Duration::from_secs(31);
        assert_eq!(
            b.dial_candidates(later, &HashSet::new(), &HashSet::new(), 5),
            vec![x]
        );
    }

    #[test]
    fn successful_addresses_come_first() {
        let mut b = book(10);
        let now = Instant::now();
        b.learn(a("10.0.0.1:1"), now);
        b.mark_success(a("10.0.0.2:1"), None, now);
        let c = b.dial_candidates(now, &HashSet::new(), &HashSet::new(), 5);
        assert_eq!(c[0], a("10.0.0.2:1"));
        let skip: HashSet<_> = [a("10.0.0.2:1")].into_iter().collect();
        assert_eq!(
            b.dial_candidates(now, &skip, &HashSet::new(), 5),
            vec![a("10.0.0.1:1")]
        );
    }

    #[test]
    fn ids_proven_replace_gossiped_stay_and_wrong_ids_are_dropped() {
        let mut b = book(10);
        let now = Instant::now();
        let x = a("10.0.0.1:1");
        // Gossip gives an id to an entry without one, never replaces one.
        b.learn_from(x, Some(NodeId(1)), ip("10.9.0.1"), now);
        assert_eq!(b.expected_id(&x), Some(NodeId(1)));
        b.learn_from(x, Some(NodeId(2)), ip("10.9.0.2"), now);
        assert_eq!(b.expected_id(&x), Some(NodeId(1)));
        // A proven id replaces it.
        b.mark_success(x, Some(NodeId(3)), now);
        assert_eq!(b.expected_id(&x), Some(NodeId(3)));
        b.mark_success(x, None, now);
        assert_eq!(b.expected_id(&x), Some(NodeId(3)));
        // Another key there: dropped after MAX_ID_MISSES wrong-id dials.
        for _ in 1..MAX_ID_MISSES {
            b.mark_wrong_id(&x);
            assert_eq!(b.expected_id(&x), Some(NodeId(3)));
        }
        b.mark_wrong_id(&x);
        assert_eq!(b.expected_id(&x), None);
        // Saved and restored with the entry.
        b.mark_success(x, Some(NodeId(4)), now);
        let mut c = book(10);
        c.restore(&b.to_cache(), now);
        assert_eq!(c.expected_id(&x), Some(NodeId(4)));
    }
}
