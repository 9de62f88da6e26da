//! Who makes room when a full node meets a newcomer: the fairness rules for pending
//! handshakes and inbound links (issue 10, item 3). Plain data in, a decision out; the
//! link manager applies it (`links.rs`) and these tests check it without sockets.
//!
//! The C++ had no such rule: its slots were first come, first served, so one source
//! that reconnects quickly (one IP, one /24) could hold all of them. Here nothing is
//! refused while a slot is free (every test and benchmark runs many honest nodes from
//! 127.0.0.1, one /24), but when the slots are full a newcomer from a *less
//! represented* source group (/24 for IPv4, /48 for IPv6, IPv4-mapped counted as
//! IPv4; see `state::net::net_group`) takes the place of one of the most represented
//! group. "Less represented" means the newcomer's group, counting the newcomer, would
//! still have fewer than the victim's group has now (at least two fewer before): then
//! no sequence of evictions can go back and forth between two groups (with plain
//! "fewer", groups of 32 and 31 links could swap a link on every join, and a node with
//! one inbound slot would give it to any other /24). Equals never evict equals: a
//! newcomer of the crowded group itself is refused as before.
//!
//! Inbound links follow Bitcoin Core's `AttemptToEvictConnection`, simplified:
//! protect the [`PROTECT_BY_RTT`] links with the lowest round trip (unmeasured counts
//! as the worst), then the [`PROTECT_BY_AGE`] longest connected, then one link (the
//! longest connected) of each of up to [`PROTECT_BY_GROUP`] distinct groups, the least
//! represented groups first. Protection never covers more than half of the inbound
//! links, so a small node (8 inbound slots) still has candidates. Of the rest, the
//! group with the most inbound links loses its youngest link, provided the newcomer's
//! group is less represented than that group (as above). Bitcoin's other protections (recent
//! transactions and blocks, keyed-hash group choice) have no counterpart here.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::Instant;

/// Inbound links protected for the lowest round trip.
pub(crate) const PROTECT_BY_RTT: usize = 4;
/// Inbound links protected for having been connected longest.
pub(crate) const PROTECT_BY_AGE: usize = 8;
/// Distinct source groups that keep one inbound link each.
pub(crate) const PROTECT_BY_GROUP: usize = 4;

/// An inbound link as the eviction rule sees it.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Candidate {
    pub conn_id: u64,
    /// Its source group (`state::net::net_group` of the socket's remote IP).
    pub group: IpAddr,
    /// Last measured round trip in microseconds; `u64::MAX` when not measured yet.
    pub rtt_us: u64,
    /// When it was linked, in milliseconds since the node's epoch (smaller is older).
    pub connected_ms: u64,
}

fn counts(groups: impl Iterator<Item = IpAddr>) -> HashMap<IpAddr, usize> {
    let mut m = HashMap::new();
    for g in groups {
        *m.entry(g).or_insert(0) += 1;
    }
    m
}

/// The inbound link (its `conn_id`) to close so that a newcomer from `newcomer` may
/// link, or `None`: the newcomer is refused. See the module doc for the rule.
pub(crate) fn inbound_victim(links: &[Candidate], newcomer: IpAddr) -> Option<u64> {
    let per_group = counts(links.iter().map(|c| c.group));
    let count = |g: &IpAddr| per_group.get(g).copied().unwrap_or(0);
    let mut budget = links.len() / 2;
    let mut rest: Vec<Candidate> = links.to_vec();

    // (a) Lowest round trip; ties (all unmeasured, say) go to the longer connected.
    rest.sort_by_key(|c| (c.rtt_us, c.connected_ms, c.conn_id));
    let n = PROTECT_BY_RTT.min(budget);
    rest.drain(..n.min(rest.len()));
    budget -= n.min(budget);

    // (b) Longest connected.
    rest.sort_by_key(|c| (c.connected_ms, c.conn_id));
    let n = PROTECT_BY_AGE.min(budget);
    rest.drain(..n.min(rest.len()));
    budget -= n.min(budget);

    // (c) Diversity: the longest connected link of each of a few groups, the least
    // represented groups first.
    rest.sort_by_key(|c| (count(&c.group), c.connected_ms, c.conn_id));
    let mut kept_groups = Vec::new();
    rest.retain(|c| {
        let protect =
            kept_groups.len() < PROTECT_BY_GROUP.min(budget) && !kept_groups.contains(&c.group);
        if protect {
            kept_groups.push(c.group);
        }
        !protect
    });

    // The most represented group among the rest (ties: the one with the youngest
    // link), and its youngest link.
    let youngest_of = |g: IpAddr| {
        rest.iter()
            .filter(|c| c.group == g)
            .max_by_key(|c| (c.connected_ms, c.conn_id))
            .copied()
    };
    let victim = rest
        .iter()
        .filter_map(|c| youngest_of(c.group))
        .max_by_key(|y| (count(&y.group), y.connected_ms, y.conn_id))?;
    less_represented(count(&newcomer), count(&victim.group)).then_some(victim.conn_id)
}

/// Whether a group of `mine` is less represented than one of `theirs` in the sense of
/// the module doc: even with the newcomer it would have fewer.
fn less_represented(mine: usize, theirs: usize) -> bool {
    mine + 1 < theirs
}

/// One source group's pending handshakes, as the pending rule sees them.
#[derive(Clone, Copy, Debug)]
pub(crate) struct PendingGroup {
    pub group: IpAddr,
    pub pending: usize,
    /// When its oldest pending handshake started.
    pub oldest: Instant,
}

/// The group whose oldest pending handshake gives way to a newcomer from `newcomer`
/// when every pending slot is taken, or `None`: the newcomer is refused. The group
/// with the most pending handshakes (ties: the one whose oldest is oldest) loses,
/// provided the newcomer's group is less represented (see the module doc).
pub(crate) fn pending_victim_group(groups: &[PendingGroup], newcomer: IpAddr) -> Option<IpAddr> {
    let top = groups
        .iter()
        .max_by(|a, b| a.pending.cmp(&b.pending).then(b.oldest.cmp(&a.oldest)))?;
    let mine = groups
        .iter()
        .find(|g| g.group == newcomer)
        .map_or(0, |g| g.pending);
    less_represented(mine, top.pending).then_some(top.group)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("ip")
    }

    fn cand(conn_id: u64, group: &str, rtt_us: u64, connected_ms: u64) -> Candidate {
        Candidate {
            conn_id,
            group: ip(group),
            rtt_us,
            connected_ms,
        }
    }

    #[test]
    fn crowded_group_loses_its_youngest_link_to_a_newcomer() {
        // Eight links of one group, unmeasured, linked at 10, 20, ..., 80 ms.
        let links: Vec<_> = (1..=8)
            .map(|i| cand(i, "10.1.1.0", u64::MAX, i * 10))
            .collect();
        assert_eq!(inbound_victim(&links, ip("10.2.2.0")), Some(8));
        // A newcomer of the same group is refused: equals never evict equals.
        assert_eq!(inbound_victim(&links, ip("10.1.1.0")), None);
    }

    #[test]
    fn protection_covers_low_rtt_old_and_diverse_links() {
        // 64 links: 40 of group A (youngest), 20 of group B, 4 single-link groups.
        let mut links = Vec::new();
        let mut id = 0;
        let mut push = |links: &mut Vec<Candidate>, g: &str, rtt: u64, at: u64| {
            id += 1;
            links.push(cand(id, g, rtt, at));
        };
        for i in 0..20 {
            push(&mut links, "10.0.2.0", 5_000, 100 + i);
        }
        for i in 0..4 {
            push(&mut links, &format!("10.0.{}.0", 10 + i), 9_000, 200 + i);
        }
        for i in 0..40 {
            // The 4 lowest round trips of all, and the youngest links.
            let rtt = if i < 4 { 10 } else { 7_000 };
            push(&mut links, "10.0.1.0", rtt, 1_000 + i);
        }
        // Group A (40) loses its youngest link, id 64.
        assert_eq!(inbound_victim(&links, ip("10.9.9.0")), Some(64));
        // Only group A links: its 4 fast ones are protected, so the youngest slow one
        // goes, never a fast one.
        let a: Vec<_> = links
            .iter()
            .copied()
            .filter(|c| c.group == ip("10.0.1.0"))
            .collect();
        let v = inbound_victim(&a, ip("10.9.9.0")).expect("a victim");
        assert!(a.iter().any(|c| c.conn_id == v && c.rtt_us == 7_000));
        // A newcomer from group B (20 links, 21 with it) is still less represented.
        assert!(inbound_victim(&links, ip("10.0.2.0")).is_some());
    }

    #[test]
    fn newcomer_needs_fewer_links_than_the_victims_group() {
        // Two groups of 4: nobody is more represented than a newcomer of either.
        let mut links: Vec<_> = (1..=4).map(|i| cand(i, "10.0.1.0", 50, i)).collect();
        links.extend((5..=8).map(|i| cand(i, "10.0.2.0", 50, i)));
        assert_eq!(inbound_victim(&links, ip("10.0.1.0")), None);
        assert!(inbound_victim(&links, ip("10.0.3.0")).is_some());
        // Groups of 4 and 3: a newcomer of the 3 would make it 4, so no swap (which
        // the other group could then undo).
        let mut links: Vec<_> = (1..=4).map(|i| cand(i, "10.0.1.0", 50, i)).collect();
        links.extend((5..=7).map(|i| cand(i, "10.0.2.0", 50, i)));
        assert_eq!(inbound_victim(&links, ip("10.0.2.0")), None);
        // One inbound slot: another /24 does not take it (0 + 1 is not below 1).
        assert_eq!(
            inbound_victim(&[cand(1, "10.0.1.0", 50, 1)], ip("10.0.2.0")),
            None
        );
    }

    #[test]
    fn no_links_no_victim() {
        assert_eq!(inbound_victim(&[], ip("10.0.1.0")), None);
    }

    #[test]
    fn pending_rule_takes_from_the_most_represented_group() {
        let t0 = Instant::now();
        let g = |group: &str, pending, secs| PendingGroup {
            group: ip(group),
            pending,
            oldest: t0 + Duration::from_secs(secs),
        };
        let groups = [g("10.0.1.0", 3, 5), g("10.0.2.0", 1, 0)];
        assert_eq!(
            pending_victim_group(&groups, ip("10.0.9.0")),
            Some(ip("10.0.1.0"))
        );
        assert_eq!(
            pending_victim_group(&groups, ip("10.0.2.0")),
            Some(ip("10.0.1.0"))
        );
        assert_eq!(pending_victim_group(&groups, ip("10.0.1.0")), None);
        // 2 + 1 is not below 3.
        let groups = [g("10.0.1.0", 3, 5), g("10.0.2.0", 2, 0)];
        assert_eq!(pending_victim_group(&groups, ip("10.0.2.0")), None);
        // One group only (127.0.0.1 in every test): never.
        assert_eq!(
            pending_victim_group(&[g("127.0.0.0", 32, 0)], ip("127.0.0.0")),
            None
        );
        // A tie goes to the group whose oldest is oldest.
        let tie = [g("10.0.1.0", 2, 5), g("10.0.2.0", 2, 1)];
        assert_eq!(
            pending_victim_group(&tie, ip("10.0.3.0")),
            Some(ip("10.0.2.0"))
        );
    }
}
