//! `ObservedVotes`: what peers say our IP is, and when to believe them.
//!
//! A peer's JOIN carries the IP it sees our connection come from. A node bound to
//! 0.0.0.0 needs that to name itself correctly in its broadcasts, but one peer must
//! not be able to rewrite it (before, the last JOIN won, even a refused one). So, in
//! the manner of libp2p identify's observed addresses and AutoNAT's confidence:
//!
//! - one vote per reporting *source IP* (the peer's socket address as we see it), the
//!   latest replacing the earlier one, so many connections from one host count once;
//! - at most [`MAX_SOURCES`] sources, the oldest forgotten first, so the table is
//!   bounded however many peers report;
//! - an IP is adopted only when at least [`QUORUM`] distinct sources report it, and
//!   of several such IPs the one with the most votes (ties: the one adopted before,
//!   else the smaller IP, so the outcome does not depend on hash order).
//!
//! The owner (membership) records only JOINs of connections that became links.

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;

/// Distinct sources that must agree before an observed IP is adopted.
pub(crate) const QUORUM: usize = 2;

/// Reporting sources remembered.
pub(crate) const MAX_SOURCES: usize = 64;

/// Votes on our own IP, by reporting source; see the module docs.
#[derive(Default)]
pub(crate) struct ObservedVotes {
    by_source: HashMap<IpAddr, IpAddr>,
    /// Sources, oldest vote first.
    order: VecDeque<IpAddr>,
    adopted: Option<IpAddr>,
}

impl ObservedVotes {
    /// Records that `source` sees us at `observed`. Returns the adopted IP when this
    /// vote changed it.
    pub(crate) fn record(&mut self, source: IpAddr, observed: IpAddr) -> Option<IpAddr> {
        if observed.is_unspecified() || observed.is_multicast() {
            return None;
        }
        if self.by_source.insert(source, observed).is_some() {
            self.order.retain(|s| *s != source);
        }
        self.order.push_back(source);
        while self.order.len() > MAX_SOURCES {
            if let Some(old) = self.order.pop_front() {
                self.by_source.remove(&old);
            }
        }
        let winner = self.winner();
        if winner.is_some() && winner != self.adopted {
            self.adopted = winner;
            return winner;
        }
        None
    }

    /// The IP we believe we are reached at, once enough sources agree.
    pub(crate) fn adopted(&self) -> Option<IpAddr> {
        self.adopted
    }

    fn winner(&self) -> Option<IpAddr> {
        let mut tally: HashMap<IpAddr, usize> = HashMap::new();
        for ip in self.by_source.values() {
            *tally.entry(*ip).or_default() += 1;
        }
        let best = tally
            .iter()
            .filter(|(_, n)| **n >= QUORUM)
            .map(|(ip, n)| (*n, Some(*ip) == self.adopted, std::cmp::Reverse(*ip)))
            .max()?;
        Some(best.2 .0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("ip")
    }

    #[test]
    fn one_source_never_decides() {
        let mut v = ObservedVotes::default();
        for _ in 0..100 {
            assert_eq!(v.record(ip("10.0.0.1"), ip("127.0.0.9")), None);
        }
        assert_eq!(v.adopted(), None);
    }

    #[test]
    fn two_sources_that_agree_decide_and_a_third_cannot_flip_it() {
        let mut v = ObservedVotes::default();
        assert_eq!(v.record(ip("10.0.0.1"), ip("192.0.2.7")), None);
        assert_eq!(
            v.record(ip("10.0.0.2"), ip("192.0.2.7")),
            Some(ip("192.0.2.7"))
        );
        assert_eq!(v.record(ip("10.0.0.3"), ip("192.0.2.8")), None);
        assert_eq!(v.adopted(), Some(ip("192.0.2.7")));
        // A tie keeps what was adopted.
        assert_eq!(v.record(ip("10.0.0.4"), ip("192.0.2.8")), None);
        assert_eq!(v.adopted(), Some(ip("192.0.2.7")));
        // A clear majority moves it (the node really moved).
        assert_eq!(
            v.record(ip("10.0.0.5"), ip("192.0.2.8")),
            Some(ip("192.0.2.8"))
        );
    }

    #[test]
    fn a_source_changing_its_vote_counts_once() {
        let mut v = ObservedVotes::default();
        v.record(ip("10.0.0.1"), ip("192.0.2.7"));
        v.record(ip("10.0.0.1"), ip("192.0.2.8"));
        assert_eq!(v.record(ip("10.0.0.2"), ip("192.0.2.7")), None);
        assert_eq!(v.adopted(), None);
    }

    #[test]
    fn unspecified_and_multicast_are_ignored_and_the_table_is_bounded() {
        let mut v = ObservedVotes::default();
        v.record(ip("10.0.0.1"), ip("0.0.0.0"));
        v.record(ip("10.0.0.2"), ip("0.0.0.0"));
        v.record(ip("10.0.0.3"), ip("224.0.0.1"));
        v.record(ip("10.0.0.4"), ip("224.0.0.1"));
        assert_eq!(v.adopted(), None);
        for i in 0..1000u32 {
            v.record(
                IpAddr::from((0x0a01_0000 + i).to_be_bytes()),
                ip("192.0.2.1"),
            );
        }
        assert!(v.by_source.len() <= MAX_SOURCES);
        assert_eq!(v.order.len(), v.by_source.len());
        assert_eq!(v.adopted(), Some(ip("192.0.2.1")));
    }
}
