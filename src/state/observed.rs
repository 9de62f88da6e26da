//! `ObservedVotes`: what linked peers say our IP is, and when to believe them.
//!
//! A peer's JOIN carries the IP it sees our connection come from. A node bound to
//! 0.0.0.0 needs that to name itself correctly in its broadcasts, but one peer must
//! not be able to rewrite it (before, the last JOIN won, even a refused one). So, in
//! the manner of libp2p identify's observed addresses and AutoNAT's confidence:
//!
//! - one vote per *link*, withdrawn when the link closes, so the votes are what the
//!   current neighbours see and their number is bounded by the link cap;
//! - links from one network group (the reporter's source IP: IPv4 /24, IPv6 /48, an
//!   IPv4-mapped IPv6 address counted as its IPv4 form) count as one reporter, with
//!   that group's latest vote, so one host (or one subnet) is one voice however many
//!   connections or addresses it uses;
//! - an IP is adopted only when at least [`QUORUM`] groups report it, and of several
//!   such IPs the one with the most groups (ties: the one adopted already, else the
//!   smaller IP, so the outcome does not depend on arrival order). Once adopted it
//!   stays until another IP has strictly more groups, even if its voters leave.
//!
//! The owner (membership) records only JOINs of connections that became links, and
//! only usable IPs ([`usable`]).

use std::collections::HashMap;
use std::net::IpAddr;

use crate::state::net::{canonical, is_unicast, net_group};

/// Distinct network groups that must agree before an observed IP is adopted.
pub(crate) const QUORUM: usize = 2;

/// Votes kept at most (one per link; links are capped far below this anyway).
pub(crate) const MAX_VOTES: usize = 1024;

/// Whether `ip` could be our address for a listener of `bind`'s family: unicast, and
/// IPv4 for an IPv4 listener (an IPv6 listener on `::` takes both).
pub(crate) fn usable(ip: IpAddr, bind: IpAddr) -> bool {
    let ip = canonical(ip);
    is_unicast(ip) && (bind.is_ipv6() || ip.is_ipv4())
}

struct Vote {
    group: IpAddr,
    ip: IpAddr,
    /// Order of arrival: a group's latest vote counts.
    seq: u64,
}

/// Votes on our own IP, one per link; see the module docs.
#[derive(Default)]
pub(crate) struct ObservedVotes {
    by_link: HashMap<u64, Vote>,
    next_seq: u64,
    adopted: Option<IpAddr>,
}

impl ObservedVotes {
    /// Records that the link `conn_id`, whose socket comes from `source`, sees us at
    /// `observed`. Returns the adopted IP when this vote changed it.
    pub(crate) fn record(
        &mut self,
        conn_id: u64,
        source: IpAddr,
        observed: IpAddr,
    ) -> Option<IpAddr> {
        if self.by_link.len() >= MAX_VOTES && !self.by_link.contains_key(&conn_id) {
            return None;
        }
        self.next_seq += 1;
        self.by_link.insert(
            conn_id,
            Vote {
                group: net_group(source),
                ip: canonical(observed),
                seq: self.next_seq,
            },
        );
        let winner = self.winner();
        if winner.is_some() && winner != self.adopted {
            self.adopted = winner;
            return winner;
        }
        None
    }

    /// The link `conn_id` closed: its vote no longer counts.
    pub(crate) fn withdraw(&mut self, conn_id: u64) {
        self.by_link.remove(&conn_id);
    }

    /// The IP we believe we are reached at, once enough groups agreed.
    pub(crate) fn adopted(&self) -> Option<IpAddr> {
        self.adopted
    }

    fn winner(&self) -> Option<IpAddr> {
        // Each group's latest vote.
        let mut latest: HashMap<IpAddr, &Vote> = HashMap::new();
        for v in self.by_link.values() {
            let e = latest.entry(v.group).or_insert(v);
            if v.seq > e.seq {
                *e = v;
            }
        }
        let mut tally: HashMap<IpAddr, usize> = HashMap::new();
        for v in latest.values() {
            *tally.entry(v.ip).or_default() += 1;
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
    fn one_group_never_decides() {
        let mut v = ObservedVotes::default();
        for conn in 0..100 {
            // Many links, many addresses, one /24.
            let source = IpAddr::from([10, 0, 0, (conn % 250) as u8]);
            assert_eq!(v.record(conn, source, ip("192.0.2.9")), None);
        }
        assert_eq!(v.adopted(), None);
    }

    #[test]
    fn two_groups_that_agree_decide_and_a_third_cannot_flip_it() {
        let mut v = ObservedVotes::default();
        assert_eq!(v.record(1, ip("10.0.1.1"), ip("192.0.2.7")), None);
        assert_eq!(
            v.record(2, ip("10.0.2.1"), ip("192.0.2.7")),
            Some(ip("192.0.2.7"))
        );
        assert_eq!(v.record(3, ip("10.0.3.1"), ip("192.0.2.8")), None);
        assert_eq!(v.adopted(), Some(ip("192.0.2.7")));
        // A tie keeps what was adopted.
        assert_eq!(v.record(4, ip("10.0.4.1"), ip("192.0.2.8")), None);
        assert_eq!(v.adopted(), Some(ip("192.0.2.7")));
        // A clear majority moves it (the node really moved).
        assert_eq!(
            v.record(5, ip("10.0.5.1"), ip("192.0.2.8")),
            Some(ip("192.0.2.8"))
        );
    }

    #[test]
    fn a_group_changing_its_vote_counts_once() {
        let mut v = ObservedVotes::default();
        v.record(1, ip("10.0.1.1"), ip("192.0.2.7"));
        v.record(2, ip("10.0.1.2"), ip("192.0.2.8"));
        assert_eq!(
            v.record(3, ip("10.0.2.1"), ip("192.0.2.7")),
            None,
            "10.0.1/24 said .8 last"
        );
        assert_eq!(v.adopted(), None);
    }

    #[test]
    fn a_mapped_ipv6_source_is_its_ipv4_group() {
        let mut v = ObservedVotes::default();
        v.record(1, ip("127.0.0.2"), ip("192.0.2.77"));
        assert_eq!(
            v.record(2, ip("::ffff:127.0.0.2"), ip("::ffff:192.0.2.77")),
            None
        );
        assert_eq!(v.adopted(), None);
    }

    #[test]
    fn withdrawn_votes_stop_counting_but_an_adoption_stays() {
        let mut v = ObservedVotes::default();
        v.record(1, ip("10.0.1.1"), ip("192.0.2.7"));
        v.withdraw(1);
        assert_eq!(v.record(2, ip("10.0.2.1"), ip("192.0.2.7")), None);
        assert_eq!(
            v.record(3, ip("10.0.3.1"), ip("192.0.2.7")),
            Some(ip("192.0.2.7"))
        );
        v.withdraw(2);
        v.withdraw(3);
        assert_eq!(v.adopted(), Some(ip("192.0.2.7")));
    }

    #[test]
    fn usable_ips_are_unicast_of_the_listeners_family_and_votes_are_bounded() {
        let v4 = ip("0.0.0.0");
        let v6 = ip("::");
        assert!(usable(ip("192.0.2.1"), v4));
        assert!(usable(ip("127.0.0.1"), v4));
        assert!(usable(ip("::ffff:192.0.2.1"), v4));
        assert!(!usable(ip("2001:db8::1"), v4));
        assert!(usable(ip("2001:db8::1"), v6));
        assert!(usable(ip("192.0.2.1"), v6));
        for bad in ["0.0.0.0", "224.0.0.1", "255.255.255.255", "::", "ff02::1"] {
            assert!(!usable(ip(bad), v6), "{bad}");
        }
        let mut v = ObservedVotes::default();
        for conn in 0..(MAX_VOTES as u64 + 100) {
            v.record(
                conn,
                IpAddr::from((0x0a00_0000 + (conn << 8) as u32).to_be_bytes()),
                ip("192.0.2.1"),
            );
        }
        assert_eq!(v.by_link.len(), MAX_VOTES);
        assert_eq!(v.adopted(), Some(ip("192.0.2.1")));
    }
}
