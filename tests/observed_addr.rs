//! The IP a node announces for itself, against peers that lie about where they see it.
//!
//! Every JOIN carries `observed`: the receiver's IP as the sender sees it. The rule:
//!
//! - a node bound to one IP announces that IP, whatever peers report;
//! - a node bound to 0.0.0.0 without `advertise` keeps one observation per link (a
//!   refused JOIN or a duplicate does not count; a closed link's vote is withdrawn),
//!   counts all links from one network group of the reporting socket's source IP
//!   (IPv4 /24) as one voice, and adopts an IP only once at least two groups report
//!   it. Until then it announces 127.0.0.1 (the loopback form of 0.0.0.0). Only the
//!   adopted IP becomes one of its own addresses;
//! - a node with `advertise` announces that address, whatever peers report.
//!
//! The hostile peers here are raw sockets bound to chosen loopback source IPs
//! (127.x.y.z all reach a loopback listener on Linux). Every "does not change" check
//! first waits for proof that the lying JOIN was processed (a `PeerUp` for it, or the
//! node's refusal), then asserts.

mod common;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use common::*;
use p2p_overlay::p2p_message::{Join, PROTOCOL_VERSION};
use p2p_overlay::{Config, Error, Event, P2PMessage};

/// Far longer than any wait here, so no heartbeat or handshake timeout closes a raw
/// peer (they never answer PINGs) while a test runs.
const LONG: Duration = Duration::from_secs(60);

/// How many times a test whose setup needs a fixed port retries with a new one when
/// another process took it meanwhile.
const PORT_ATTEMPTS: usize = 5;

fn ip(a: u8, b: u8, c: u8, d: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(a, b, c, d))
}

/// The node under test: no timeout fires during a test and it dials nothing by itself.
fn target(c: &mut Config) {
    plain(c);
    c.auto_dial = false;
    c.handshake_timeout = LONG;
    c.peer_timeout = LONG;
}

/// A node bound to 0.0.0.0 on an OS-chosen port.
fn start_unspecified(configure: impl FnOnce(&mut Config)) -> TestNode {
    let mut config = Config::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 0);
    target(&mut config);
    configure(&mut config);
    try_start_node(config).expect("node starts on 0.0.0.0")
}

/// The node's port on 127.0.0.1: where a node bound to 0.0.0.0 is dialled here, and
/// what it announces until it adopts an observed IP.
fn loopback(node: &TestNode) -> SocketAddr {
    SocketAddr::new(localhost(), node.local_addr().port())
}

/// Connects to `to` from source IP `src` and completes the handshake as a node of
/// `network` that claims to see the node at `observed`. Returns the peer and the
/// node's JOIN (read after ours is sent: both sides send JOIN first).
fn claim(to: SocketAddr, src: IpAddr, observed: IpAddr, network: &str) -> (RawPeer, Join) {
    let mut raw = RawPeer::connect_from(src, to);
    raw.send(&P2PMessage::Join(Join {
        version: PROTOCOL_VERSION,
        node_id: raw.id,
        listen_port: raw.listen_port(),
        network: network.to_string(),
        advertise: None,
        observed: Some(observed),
    }));
    match raw.recv() {
        Some(P2PMessage::Join(j)) => (raw, j),
        other => panic!("expected the node's JOIN, got {other:?}"),
    }
}

/// [`claim`] on the node's own network, then waits until the node registered the link
/// (`PeerUp`), and checks that the node saw the connection come from `src`.
fn claim_linked(node: &TestNode, to: SocketAddr, src: IpAddr, observed: IpAddr) -> RawPeer {
    let (raw, join) = claim(to, src, observed, &default_network());
    assert_eq!(join.node_id, node.id(), "another node answered at {to}");
    let up = node
        .wait_for(|ev| is_peer_up(ev, raw.id))
        .unwrap_or_else(|| panic!("no PeerUp for the raw peer from {src}"));
    let Event::PeerUp(info) = up else {
        unreachable!("is_peer_up matched")
    };
    assert_eq!(
        info.addr,
        raw.listen_addr(),
        "the node did not see the connection come from {src}"
    );
    raw
}

/// `node` broadcasts `text`; returns the origin address in the copy `raw` (a linked
/// raw peer: every link starts eager, so it gets the broadcast itself) receives.
fn origin_seen_by(raw: &mut RawPeer, node: &TestNode, text: &str) -> SocketAddr {
    assert!(node.broadcast_data(text).expect("broadcast") >= 1);
    match raw.recv_until(|m| matches!(m, P2PMessage::Broadcast(b) if b.text == text)) {
        Some(P2PMessage::Broadcast(b)) => b.origin_addr,
        other => panic!("the raw peer never received {text:?}: {other:?}"),
    }
}

/// A node bound to 127.0.0.1:P plus a real node bound to 127.0.0.2 on the same port P,
/// retried with new ports if 127.0.0.2:P is taken.
fn bound_node_and_twin() -> (TestNode, TestNode) {
    for _ in 0..PORT_ATTEMPTS {
        let a = start_node(target);
        let mut twin = Config::new(ip(127, 0, 0, 2), a.addr().port());
        plain(&mut twin);
        twin.auto_dial = false;
        match try_start_node(twin) {
            Ok(twin) => return (a, twin),
            Err(Error::Bind { .. }) => continue,
            Err(e) => panic!("the twin node did not start: {e}"),
        }
    }
    panic!("127.0.0.2 had no free port matching 127.0.0.1's in {PORT_ATTEMPTS} attempts");
}

#[test]
fn bound_node_ignores_observations() {
    let _watchdog = watchdog("bound_node_ignores_observations", WATCHDOG);
    let (a, twin) = bound_node_and_twin();
    let p = a.addr().port();
    assert_eq!(a.addr(), SocketAddr::new(localhost(), p));
    let honest = start_node(|c| {
        plain(c);
        c.auto_dial = false;
    });
    link(&honest, &a);

    // Two liars from distinct source IPs (enough for an unspecified-bind node to
    // adopt) say A is at 127.0.0.2, where the twin really listens on A's port.
    let liar = ip(127, 0, 0, 2);
    let _l1 = claim_linked(&a, a.addr(), ip(127, 0, 3, 3), liar);
    let _l2 = claim_linked(&a, a.addr(), ip(127, 0, 4, 4), liar);

    // Every symptom is collected, so a failure shows them all.
    let mut wrong = Vec::new();
    if a.advertised_addr() != a.addr() {
        wrong.push(format!("advertised_addr is {}", a.advertised_addr()));
    }
    if a.info().advertised_addr != a.addr() {
        wrong.push(format!(
            "info().advertised_addr is {}",
            a.info().advertised_addr
        ));
    }
    assert_eq!(a.broadcast_data("from A").expect("broadcast"), 3);
    match honest.wait_for(|ev| is_broadcast_of(ev, "from A")) {
        Some(Event::Broadcast { origin, .. }) if origin != a.addr() => {
            wrong.push(format!("its broadcast came from {origin}"))
        }
        Some(_) => {}
        None => wrong.push("its broadcast never reached the honest node".into()),
    }
    let twin_addr = SocketAddr::new(liar, p);
    assert_eq!(twin.addr(), twin_addr);
    match a.connect_to_peer(twin_addr) {
        Ok(info) if info.node_id == twin.id() => {}
        Ok(info) => wrong.push(format!("{twin_addr} linked another node: {info:?}")),
        Err(e) => wrong.push(format!("connect_to_peer({twin_addr}): {e} ({e:?})")),
    }
    assert!(
        wrong.is_empty(),
        "a node bound to {} took two peers' word that it is at {liar}: {}",
        a.addr(),
        wrong.join("; ")
    );
    assert!(eventually(DEADLINE, || a.is_linked_to(&twin) && twin.is_linked_to(&a)));
}

#[test]
fn many_connections_from_one_source_ip_count_once() {
    let _watchdog = watchdog("many_connections_from_one_source_ip_count_once", WATCHDOG);
    let a = start_unspecified(|_| {});
    let home = loopback(&a);
    assert_eq!(a.advertised_addr(), home);

    let claimed = ip(127, 0, 0, 9);
    let mut liars: Vec<RawPeer> = (0..5)
        .map(|_| claim_linked(&a, home, localhost(), claimed))
        .collect();
    assert_eq!(a.peers().len(), 5, "{:?}", a.peers());

    assert_eq!(
        a.advertised_addr(),
        home,
        "five connections from one source IP (127.0.0.1) made the node adopt {claimed}"
    );
    assert_eq!(a.info().advertised_addr, home);
    assert_eq!(origin_seen_by(&mut liars[0], &a, "one source"), home);
}

#[test]
fn refused_joins_do_not_vote() {
    let _watchdog = watchdog("refused_joins_do_not_vote", WATCHDOG);
    // One inbound link at most: the second joiner is refused for the cap.
    let a = start_unspecified(|c| c.max_inbound_links = 1);
    let home = loopback(&a);
    let claimed = ip(127, 0, 0, 9);

    // Accepted: one vote, from 127.0.3.3.
    let mut accepted = claim_linked(&a, home, ip(127, 0, 3, 3), claimed);

    // Refused for the link cap after a complete handshake, from 127.0.2.2: the node
    // refers it elsewhere (PEERS, LEAVE) and hangs up.
    let (mut over_cap, join) = claim(home, ip(127, 0, 2, 2), claimed, &default_network());
    assert_eq!(join.node_id, a.id());
    assert!(
        over_cap
            .recv_until(|m| matches!(m, P2PMessage::Leave))
            .is_some(),
        "the node did not refuse the peer over its link cap"
    );
    assert!(
        over_cap.closed_within(DEADLINE),
        "the refused link stayed open"
    );
    assert!(
        eventually(DEADLINE, || a.info().counters.refused_links == 1),
        "{:?}",
        a.info()
    );

    // Refused for another network name, from 127.0.4.4.
    let (mut other_net, _) = claim(home, ip(127, 0, 4, 4), claimed, "another-network");
    assert!(other_net.closed_within(DEADLINE), "a foreign JOIN was kept");
    assert!(
        eventually(DEADLINE, || a.info().counters.handshakes_failed == 1),
        "{:?}",
        a.info()
    );

    assert_eq!(a.peer_ids(), [accepted.id], "only the first peer is linked");
    let ups: Vec<Event> = a
        .pending_events()
        .into_iter()
        .filter(|ev| matches!(ev, Event::PeerUp(_)))
        .collect();
    assert!(ups.is_empty(), "a refused JOIN was linked: {ups:?}");
    assert_eq!(
        a.advertised_addr(),
        home,
        "one accepted JOIN plus refused ones made the node adopt {claimed}"
    );
    assert_eq!(origin_seen_by(&mut accepted, &a, "refused"), home);
}

#[test]
fn two_distinct_sources_agreeing_are_adopted_and_a_third_cannot_move_it() {
    let _watchdog = watchdog(
        "two_distinct_sources_agreeing_are_adopted_and_a_third_cannot_move_it",
        WATCHDOG,
    );
    let a = start_unspecified(|_| {});
    let home = loopback(&a);
    let p = home.port();
    let seen = SocketAddr::new(ip(127, 0, 0, 7), p);

    let mut first = claim_linked(&a, home, ip(127, 0, 2, 2), seen.ip());
    let _second = claim_linked(&a, home, ip(127, 0, 3, 3), seen.ip());
    assert!(
        eventually(DEADLINE, || a.advertised_addr() == seen),
        "two source IPs reported {seen}, the node still announces {}",
        a.advertised_addr()
    );
    assert_eq!(a.info().advertised_addr, seen);
    assert_eq!(origin_seen_by(&mut first, &a, "adopted"), seen);

    // One more peer, from a third source IP, reports another IP: one vote, no change.
    let _third = claim_linked(&a, home, ip(127, 0, 4, 4), ip(127, 0, 0, 8));
    assert_eq!(
        a.advertised_addr(),
        seen,
        "a single peer from 127.0.4.4 moved the adopted address"
    );
    assert_eq!(origin_seen_by(&mut first, &a, "still adopted"), seen);
}

#[test]
fn sources_in_one_subnet_count_as_one() {
    let _watchdog = watchdog("sources_in_one_subnet_count_as_one", WATCHDOG);
    let a = start_unspecified(|_| {});
    let home = loopback(&a);
    let claimed = ip(127, 0, 0, 9);
    // Three addresses of one /24 (one host, or one subnet) all agree: one voice.
    let _r: Vec<RawPeer> = [2, 3, 4]
        .iter()
        .map(|&d| claim_linked(&a, home, ip(127, 0, 5, d), claimed))
        .collect();
    assert_eq!(
        a.advertised_addr(),
        home,
        "three addresses of 127.0.5.0/24 made the node adopt {claimed}"
    );
}

#[test]
fn advertised_address_ignores_observations() {
    let _watchdog = watchdog("advertised_address_ignores_observations", WATCHDOG);
    // `advertise` carries the listen port, so the port is chosen before the start.
    let mut started = None;
    for _ in 0..PORT_ATTEMPTS {
        let port = free_port();
        let advertised = SocketAddr::new(ip(127, 0, 0, 5), port);
        let mut config = Config::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), port);
        target(&mut config);
        config.advertise = Some(advertised);
        match try_start_node(config) {
            Ok(node) => {
                started = Some((node, advertised));
                break;
            }
            Err(Error::Bind { .. }) => continue,
            Err(e) => panic!("the node did not start: {e}"),
        }
    }
    let (a, advertised) =
        started.unwrap_or_else(|| panic!("no free port in {PORT_ATTEMPTS} attempts"));
    let home = loopback(&a);
    assert_eq!(a.advertised_addr(), advertised);

    let claimed = ip(127, 0, 0, 7);
    let mut first = claim_linked(&a, home, ip(127, 0, 2, 2), claimed);
    let (second, join) = claim(home, ip(127, 0, 3, 3), claimed, &default_network());
    assert!(a.wait_for(|ev| is_peer_up(ev, second.id)).is_some());
    assert_eq!(join.advertise, Some(advertised.ip()), "{join:?}");
    assert_eq!(join.listen_port, advertised.port(), "{join:?}");

    assert_eq!(
        a.advertised_addr(),
        advertised,
        "two source IPs reporting {claimed} overrode advertise"
    );
    assert_eq!(a.info().advertised_addr, advertised);
    assert_eq!(origin_seen_by(&mut first, &a, "advertised"), advertised);
}

#[test]
fn flood_of_different_observations_from_one_source_changes_nothing() {
    let _watchdog = watchdog(
        "flood_of_different_observations_from_one_source_changes_nothing",
        WATCHDOG,
    );
    let a = start_unspecified(|_| {});
    let home = loopback(&a);

    // 200 linked connections from 127.0.0.1, one at a time, each claiming another
    // 127.0.1.x. Each is closed once the node has registered it, and the next starts
    // once the node has dropped the link: the next raw peer's listener may get the
    // same port, and the node refuses a second live link to one address.
    for x in 1..=200u8 {
        let raw = claim_linked(&a, home, localhost(), ip(127, 0, 1, x));
        let id = raw.id;
        drop(raw);
        assert!(
            a.wait_for(|ev| is_peer_down(ev, id)).is_some(),
            "no PeerDown for flood connection {x}"
        );
    }
    assert_eq!(
        a.advertised_addr(),
        home,
        "200 JOINs from one source IP moved the advertised address"
    );

    // A real node at one of the claimed IPs is an ordinary peer, not "this node".
    let mut config = Config::new(ip(127, 0, 1, 5), 0);
    plain(&mut config);
    config.auto_dial = false;
    let other = try_start_node(config).expect("node starts on 127.0.1.5");
    let info = a
        .connect_to_peer(other.addr())
        .unwrap_or_else(|e| panic!("connect_to_peer({}): {e} ({e:?})", other.addr()));
    assert_eq!(info.node_id, other.id());

    // The flood did not lock honest reports out: two other source IPs that agree are
    // still adopted.
    let seen = SocketAddr::new(ip(127, 0, 0, 7), home.port());
    let _r2 = claim_linked(&a, home, ip(127, 0, 2, 2), seen.ip());
    let _r3 = claim_linked(&a, home, ip(127, 0, 3, 3), seen.ip());
    assert!(
        eventually(DEADLINE, || a.advertised_addr() == seen),
        "after the flood, two source IPs reporting {seen} were not adopted: {}",
        a.advertised_addr()
    );
}
