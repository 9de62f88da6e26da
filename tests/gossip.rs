//! What a node passes on in PEERS (peer exchange and referrals): only addresses it has
//! linked with, never ones it merely heard of, so one peer's made-up address list does
//! not spread through the overlay.

mod common;

use std::collections::HashSet;
use std::net::SocketAddr;

use common::*;
use p2p_overlay::P2PMessage;

/// 200 addresses on loopback that nobody listens on (port numbers far from the
/// ephemeral range the tests' own listeners use).
fn bogus() -> Vec<SocketAddr> {
    (0..200u16)
        .map(|i| SocketAddr::new(localhost(), 1000 + i))
        .collect()
}

/// Whether `node` holds as many of `lies` as one source may add (64 never-tried
/// entries per sender /24, `NEW_PER_SOURCE`), or all of them if fewer.
fn taken_in(node: &TestNode, lies: &[SocketAddr]) -> bool {
    let lies: HashSet<&SocketAddr> = lies.iter().collect();
    let known = node
        .known_addrs()
        .iter()
        .filter(|k| lies.contains(&k.addr))
        .count();
    known >= lies.len().min(64)
}

/// Waits for the next PEERS frame on `raw` and returns its addresses.
fn next_peers(raw: &mut RawPeer) -> HashSet<SocketAddr> {
    match raw.recv_until(|m| matches!(m, P2PMessage::Peers { .. })) {
        Some(P2PMessage::Peers { addrs }) => addrs.into_iter().map(|e| e.addr).collect(),
        other => panic!("expected PEERS, got {other:?}"),
    }
}

#[test]
fn heard_of_addresses_are_not_gossiped_on() {
    // No auto-dial: the bogus addresses stay "heard of", never tried, never failed.
    let a = start_plain_node(|c| c.auto_dial = false);
    let (mut liar, _) = RawPeer::join(a.addr(), &default_network());
    assert!(wait_for_event(&a.events, DEADLINE, |e| is_peer_up(e, liar.id)).is_some());
    let lies = bogus();
    liar.send(&P2PMessage::peers(lies.clone()));
    assert!(
        eventually(DEADLINE, || taken_in(&a, &lies)),
        "the node did not take in the list: {} known",
        a.known_addrs().len()
    );

    // A newcomer gets A's list at once: the liar (a live link) and nothing made up.
    let (mut newcomer, _) = RawPeer::join(a.addr(), &default_network());
    let told = next_peers(&mut newcomer);
    let spread: Vec<_> = lies.iter().filter(|l| told.contains(l)).collect();
    assert!(
        spread.is_empty(),
        "{} of {} made-up addresses were passed on: {spread:?}",
        spread.len(),
        lies.len()
    );
    assert!(
        told.contains(&liar.listen_addr()),
        "linked peers are still passed on: {told:?}"
    );
}

#[test]
fn referrals_at_the_link_cap_hand_out_no_heard_of_addresses() {
    let a = start_plain_node(|c| {
        c.auto_dial = false;
        c.target_links = 1;
        c.max_links = 1;
        c.max_inbound_links = 1;
    });
    let (mut liar, _) = RawPeer::join(a.addr(), &default_network());
    assert!(wait_for_event(&a.events, DEADLINE, |e| is_peer_up(e, liar.id)).is_some());
    let lies = bogus();
    liar.send(&P2PMessage::peers(lies.clone()));
    assert!(eventually(DEADLINE, || taken_in(&a, &lies)));

    // The node is full: a joiner is referred elsewhere with a PEERS list, then LEAVE.
    let (mut joiner, _) = RawPeer::join(a.addr(), &default_network());
    let told = next_peers(&mut joiner);
    assert!(
        lies.iter().all(|l| !told.contains(l)),
        "the referral named made-up addresses: {told:?}"
    );
    assert!(told.contains(&liar.listen_addr()), "{told:?}");
}
