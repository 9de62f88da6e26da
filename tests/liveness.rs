//! Links end when a peer goes silent (heartbeat timeout) or says LEAVE, and only then.

mod common;

use std::time::{Duration, Instant};

use common::*;
use p2p_overlay::{Config, P2PMessage};

/// Silence after which a node with [`fast_heartbeat`] drops a peer.
const FAST_TIMEOUT: Duration = Duration::from_secs(1);

/// Fast heartbeats, so a silent peer is detected in a second. (The timeout is ten
/// heartbeats, so a busy test machine does not make live peers look dead.)
fn fast_heartbeat(c: &mut Config) {
    c.heartbeat_interval = Duration::from_millis(100);
    c.peer_timeout = FAST_TIMEOUT;
}

/// A peer timeout far longer than any wait in these tests: only LEAVE can explain a
/// link going down.
fn no_timeout(c: &mut Config) {
    c.peer_timeout = Duration::from_secs(30);
}

#[test]
fn silent_peer_is_dropped_after_heartbeat_timeout() {
    let a = start_plain_node(|c| {
        fast_heartbeat(c);
        c.auto_dial = false;
    });
    let c = start_plain_node(|_| {});
    link(&c, &a);

    // A raw peer completes the handshake, then never answers anything.
    let joined = Instant::now();
    let (mut silent, _) = RawPeer::join(a.addr(), &default_network());
    assert!(
        eventually(DEADLINE, || a.peer_ids().contains(&silent.id)),
        "A never linked the raw peer"
    );
    // A does ask: it pings the peer.
    assert!(
        silent
            .recv_until(|m| matches!(m, P2PMessage::Ping { .. }))
            .is_some(),
        "A never pinged the raw peer"
    );

    let down = a
        .wait_for(|ev| is_peer_down(ev, silent.id))
        .expect("the silent peer is never dropped");
    assert!(
        down_reason(&down).contains("timeout"),
        "dropped for another reason: {down:?}"
    );
    assert!(
        joined.elapsed() >= FAST_TIMEOUT,
        "dropped before the peer timeout"
    );
    assert!(!a.peer_ids().contains(&silent.id));
    assert!(silent.closed_within(DEADLINE), "A left the socket open");

    // C answers its pings: it stays linked for several timeouts, and A still serves it.
    let later = a.events_within(2 * FAST_TIMEOUT);
    assert!(
        !later.iter().any(|ev| is_peer_down(ev, c.id())),
        "A dropped a live peer: {later:?}"
    );
    assert!(a.is_linked_to(&c) && c.is_linked_to(&a));
    c.send_data_to_peer(a.addr(), "still here").expect("C -> A");
    assert!(a.wait_for(|ev| is_message(ev, "still here")).is_some());
    a.send_data_to_peer(c.addr(), "so am I").expect("A -> C");
    assert!(c.wait_for(|ev| is_message(ev, "so am I")).is_some());
}

#[test]
fn stopped_node_is_dropped_at_once_by_leave() {
    let a = start_node(no_timeout);
    let b = start_node(no_timeout);
    link(&b, &a);

    b.stop();

    // Well inside the 30 s timeout: only B's LEAVE can explain it.
    let down = a
        .wait_for(|ev| is_peer_down(ev, b.id()))
        .expect("A never dropped the stopped node");
    assert_eq!(down_reason(&down), "left");
    assert!(a.peers().is_empty());
    // B's own application heard its link go down too.
    let own = b
        .wait_for(|ev| is_peer_down(ev, a.id()))
        .expect("B's PeerDown");
    assert_eq!(down_reason(&own), "node stopped");
}

#[test]
fn remove_peer_sends_leave() {
    let a = start_node(|c| {
        plain(c);
        no_timeout(c);
        c.auto_dial = false;
    });
    let b = start_node(|c| {
        plain(c);
        no_timeout(c);
        c.auto_dial = false;
    });
    link(&b, &a);

    assert!(a.remove_peer(b.addr()));

    let local = a
        .wait_for(|ev| is_peer_down(ev, b.id()))
        .expect("A's PeerDown");
    assert_eq!(down_reason(&local), "removed locally");
    let remote = b
        .wait_for(|ev| is_peer_down(ev, a.id()))
        .expect("B's PeerDown");
    assert_eq!(down_reason(&remote), "left");
    assert!(eventually(DEADLINE, || a.peers().is_empty() && b.peers().is_empty()));

    assert!(!a.remove_peer(b.addr()), "no link left to remove");
    // Both nodes still work: they can link again.
    link(&a, &b);
}

/// Regression: the periodic peer exchange once deadlocked the maintenance thread (a
/// `for` loop over `table.lock().links()` kept the guard while sending, and sending
/// takes the same lock). With a short interval the node must keep sending PEERS.
#[test]
fn periodic_peer_exchange_keeps_running() {
    let a = start_plain_node(|c| {
        c.peer_exchange_interval = Duration::from_millis(50);
        c.auto_dial = false;
    });
    let (mut raw, _) = RawPeer::join(a.addr(), &default_network());
    // The PEERS right after the handshake, then periodic ones.
    for i in 0..4 {
        assert!(
            raw.recv_until(|m| matches!(m, P2PMessage::Peers { .. }))
                .is_some(),
            "PEERS number {i} never came"
        );
    }
    assert!(raw.ping_pong(7), "the node stopped answering");
    assert_eq!(a.peers().len(), 1);
}
