//! What a node refuses: itself, other networks, and sockets that do not open with a
//! valid JOIN in time.

mod common;

use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, Instant};

use common::*;
use p2p_overlay::p2p_message::{Join, PROTOCOL_VERSION};
use p2p_overlay::{Error, Event, P2PMessage};

/// `addr` written as an IPv4-mapped IPv6 address: another address that reaches the
/// same listener, which the node cannot know is its own until it hears its own JOIN.
fn mapped(addr: SocketAddr) -> SocketAddr {
    let IpAddr::V4(ip) = addr.ip() else {
        panic!("{addr} is not IPv4")
    };
    SocketAddr::new(IpAddr::V6(ip.to_ipv6_mapped()), addr.port())
}

/// Whether this machine's IPv6 stack reaches IPv4 listeners through mapped addresses.
fn mapped_addresses_work() -> bool {
    let l = TcpListener::bind((localhost(), 0)).expect("bind");
    let target = mapped(l.local_addr().expect("addr"));
    TcpStream::connect_timeout(&target, Duration::from_secs(2)).is_ok()
}

#[test]
fn node_refuses_to_dial_itself() {
    let a = start_plain_node(|_| {});

    let e = a.connect_to_peer(a.addr()).expect_err("dialled itself");
    assert!(matches!(e, Error::SelfDial(_)), "{e}");

    if mapped_addresses_work() {
        // Not recognisable by address: the node finds out from its own JOIN.
        let e = a
            .connect_to_peer(mapped(a.addr()))
            .expect_err("dialled itself through an IPv4-mapped address");
        assert!(matches!(e, Error::SelfDial(_)), "{e}");
        // Now it is known to be our own and refused at once.
        let e = a.connect_to_peer(mapped(a.addr())).expect_err("again");
        assert!(matches!(e, Error::SelfDial(_)), "{e}");
    } else {
        eprintln!("IPv4-mapped IPv6 addresses unavailable; skipping that part");
    }

    assert!(a.peers().is_empty());
    let events = a.events_within(QUIET);
    assert!(
        !events.iter().any(|ev| is_peer_up(ev, a.id())),
        "{events:?}"
    );
}

#[test]
fn gossip_about_its_own_address_never_links_a_node_to_itself() {
    let a = start_plain_node(|_| {});
    let b = start_plain_node(|_| {});

    // A raw peer tells B about A, and about B itself under two names.
    let (mut gossip, _) = RawPeer::join(b.addr(), &default_network());
    let own_alias = mapped(b.addr());
    gossip.send(&P2PMessage::peers(vec![b.addr(), own_alias, a.addr()]));

    // B dials A, the address it learned...
    assert!(
        eventually(DEADLINE, || b.is_linked_to(&a)),
        "B never linked to A; B's peers: {:?}",
        b.peers()
    );
    // ...and, if the alias is reachable, dials itself once, recognises its own JOIN and
    // forgets the address for good.
    if mapped_addresses_work() {
        assert!(
            eventually(DEADLINE, || !b
                .known_addrs()
                .iter()
                .any(|k| k.addr == own_alias)),
            "B still holds its own alias: {:?}",
            b.known_addrs()
        );
    }

    // Never linked to itself, never told its application so.
    let seen = b.events_within(QUIET);
    for node in [&a, &b] {
        assert!(!node.peer_ids().contains(&node.id()), "{:?}", node.peers());
        assert!(!node.peer_addrs().contains(&node.addr()));
    }
    assert!(!b.known_addrs().iter().any(|k| k.addr == b.addr()));
    assert!(!seen.iter().any(|ev| is_peer_up(ev, b.id())), "{seen:?}");
    assert!(!b.history().iter().any(|ev| is_peer_up(ev, b.id())));
}

#[test]
fn data_before_join_is_refused() {
    // A long handshake timeout: only the protocol violation can explain the close.
    let a = start_plain_node(|c| c.handshake_timeout = Duration::from_secs(30));

    let mut raw = RawPeer::connect(a.addr());
    raw.send(&P2PMessage::Data {
        text: "hello?".into(),
    });

    // The node opens with its own JOIN, then hangs up.
    assert!(
        matches!(raw.recv(), Some(P2PMessage::Join(j)) if j.node_id == a.id()),
        "the node did not send its JOIN first"
    );
    assert!(raw.closed_within(DEADLINE), "the connection stayed open");
    assert!(a.peers().is_empty());
    assert!(eventually(DEADLINE, || a.info().connections == 0));
}

#[test]
fn join_with_another_protocol_version_is_refused() {
    let a = start_plain_node(|c| c.handshake_timeout = Duration::from_secs(30));

    let mut raw = RawPeer::connect(a.addr());
    let mut join = match raw.join_msg(&default_network()) {
        P2PMessage::Join(j) => j,
        _ => unreachable!(),
    };
    join.version = PROTOCOL_VERSION + 1;
    raw.send(&P2PMessage::Join(join));

    assert!(raw.closed_within(DEADLINE), "the connection stayed open");
    assert!(a.peers().is_empty());
}

#[test]
fn nodes_of_different_networks_refuse_each_other() {
    let a = start_plain_node(|c| c.network = "alpha".into());
    let b = start_plain_node(|c| c.network = "beta".into());

    let e = b
        .connect_to_peer(a.addr())
        .expect_err("linked across networks");
    assert!(matches!(e, Error::Handshake { .. }), "{e}");

    // A refused its end too: no link, no PeerUp, and the socket is gone.
    assert!(eventually(DEADLINE, || a.info().connections == 0));
    assert!(a.peers().is_empty() && b.peers().is_empty());
    let events = a.events_within(QUIET);
    assert!(
        !events.iter().any(|ev| matches!(ev, Event::PeerUp(_))),
        "{events:?}"
    );

    // A raw peer of the wrong network is hung up on as well.
    let mut raw = RawPeer::connect(a.addr());
    let wrong = Join {
        version: PROTOCOL_VERSION,
        node_id: raw.id,
        listen_port: raw.listen_port(),
        network: "beta".into(),
        advertise: None,
        observed: None,
    };
    raw.send(&P2PMessage::Join(wrong));
    assert!(raw.closed_within(DEADLINE), "the connection stayed open");
    assert!(a.peers().is_empty());
}

#[test]
fn socket_that_never_sends_join_is_closed_after_handshake_timeout() {
    let timeout = Duration::from_millis(300);
    let a = start_plain_node(|c| c.handshake_timeout = timeout);

    let connected = Instant::now();
    let mut raw = RawPeer::connect(a.addr());
    assert!(
        raw.closed_within(DEADLINE),
        "the node kept a silent socket open"
    );
    assert!(connected.elapsed() >= timeout, "closed before the timeout");
    assert!(eventually(DEADLINE, || a.info().connections == 0));

    // The node still accepts well-behaved peers afterwards.
    let b = start_plain_node(|_| {});
    link(&b, &a);
}
