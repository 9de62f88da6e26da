//! Nodes on loopback linking, discovering each other, exchanging direct messages and
//! broadcasts, resolving simultaneous dials, and stopping.

mod common;

use std::sync::Barrier;
use std::thread;

use common::*;
use p2p_overlay::{Direction, Error, Event, P2PMessage, PeerInfo};

#[test]
fn two_nodes_list_each_other_after_one_connects() {
    let a = start_node(|_| {});
    let b = start_node(|_| {});

    let info = b.connect_to_peer(a.addr()).expect("B joins A");
    assert_eq!(info.node_id, a.id());
    assert_eq!(info.addr, a.addr());
    assert_eq!(info.direction, Direction::Outbound);

    assert!(eventually(DEADLINE, || a.peers().len() == 1));
    let on_a = a.peers();
    assert_eq!(on_a[0].node_id, b.id());
    assert_eq!(on_a[0].addr, b.addr(), "A lists B's listen address");
    assert_eq!(on_a[0].direction, Direction::Inbound);

    let on_b = b.peers();
    assert_eq!(on_b.len(), 1);
    assert_eq!(on_b[0].node_id, a.id());
    assert_eq!(on_b[0].addr, a.addr());
    assert_eq!(on_b[0].direction, Direction::Outbound);

    // Both told their application.
    assert!(
        a.wait_for(|ev| is_peer_up(ev, b.id())).is_some(),
        "PeerUp(B) on A"
    );
    assert!(
        b.wait_for(|ev| is_peer_up(ev, a.id())).is_some(),
        "PeerUp(A) on B"
    );

    // Connecting again returns the existing link instead of making a second one.
    let again = b.connect_to_peer(a.addr()).expect("second connect");
    assert_eq!(again.node_id, a.id());
    assert_eq!(b.peers().len(), 1);
}

#[test]
fn third_node_is_discovered_by_peer_exchange() {
    let a = start_node(|_| {});
    let b = start_node(|_| {});
    let c = start_node(|_| {});
    link(&b, &a);

    // C only knows A; A's peer list tells it about B.
    c.connect_to_peer(a.addr()).expect("C joins A");

    assert!(
        eventually(DEADLINE, || b.peer_addrs().contains(&c.addr())),
        "B never linked to C; B's peers: {:?}",
        b.peers()
    );
    assert!(eventually(DEADLINE, || c.is_linked_to(&b)));
    assert!(c.is_linked_to(&a));
}

#[test]
fn direct_messages_flow_both_ways_verbatim() {
    let a = start_node(|_| {});
    let b = start_node(|_| {});
    link(&b, &a);

    let to_b = "  hello from A,   with  spaces\tand a tab  ";
    let to_a = "Grüße aus B — ünïcødé ✓ 日本語 🚀 ";
    a.send_data_to_peer(b.addr(), to_b).expect("A -> B");
    b.send_data_to_peer(a.addr(), to_a).expect("B -> A");

    let is_msg = |ev: &Event| matches!(ev, Event::Message { .. });
    let got = b.wait_for(is_msg).expect("B got no message");
    let sent = Event::Message {
        from_id: a.id(),
        from: a.addr(), // the sender's listen address, not its socket's port
        text: to_b.into(),
    };
    assert_eq!(got, sent);
    let got = a.wait_for(is_msg).expect("A got no message");
    let sent = Event::Message {
        from_id: b.id(),
        from: b.addr(),
        text: to_a.into(),
    };
    assert_eq!(got, sent);
}

/// Broadcasts `text` from `nodes[origin]` and checks every other node delivers it
/// exactly once, with `hops` as `distance(origin, receiver)` says; the origin does not
/// deliver its own.
fn check_broadcast(
    nodes: &[TestNode],
    origin: usize,
    text: &str,
    distance: impl Fn(usize, usize) -> Option<u8>,
) {
    let sender = &nodes[origin];
    let sent = sender.broadcast_data(text).expect("broadcast");
    assert_eq!(sent, sender.peers().len(), "queued on every link");

    for (i, node) in nodes.iter().enumerate() {
        if i == origin {
            continue;
        }
        match node.wait_for(|ev| is_broadcast_of(ev, text)) {
            Some(Event::Broadcast {
                origin_id,
                origin: origin_addr,
                hops,
                ..
            }) => {
                assert_eq!(origin_id, sender.id(), "node {i}: origin id");
                assert_eq!(origin_addr, sender.addr(), "node {i}: origin address");
                if let Some(d) = distance(origin, i) {
                    assert_eq!(hops, d, "node {i}: hops from node {origin}");
                }
            }
            other => panic!("node {i} never delivered {text:?}: {other:?}"),
        }
    }

    // Everyone has delivered; no second copy may follow, and the origin gets none.
    // (One quiet window serves all nodes: their events queue up meanwhile.)
    nodes[0].events_within(QUIET);
    for (i, node) in nodes.iter().enumerate() {
        node.pending_events();
        let copies = node
            .history()
            .iter()
            .filter(|ev| is_broadcast_of(ev, text))
            .count();
        let once = usize::from(i != origin);
        assert_eq!(copies, once, "node {i} delivered {text:?} {copies} times");
    }
}

#[test]
fn broadcast_over_a_line_reaches_every_node_once_with_hop_counts() {
    // n0 - n1 - n2 - n3 - n4 - n5, and no other links.
    let line = start_nodes(6, |c| c.auto_dial = false);
    for i in 1..line.len() {
        link(&line[i], &line[i - 1]);
    }
    let last = line.len() - 1;
    let degree = |i: usize| if i == 0 || i == last { 1 } else { 2 };
    assert!(
        eventually(DEADLINE, || line
            .iter()
            .enumerate()
            .all(|(i, n)| n.peers().len() == degree(i))),
        "the line did not form"
    );
    let distance = |from: usize, to: usize| Some(from.abs_diff(to) as u8);

    check_broadcast(&line, 0, "from the end of the line", distance);
    check_broadcast(&line, 2, "from the middle", distance);

    for (i, node) in line.iter().enumerate() {
        let info = node.info();
        let expected = if i == 0 || i == 2 { 1 } else { 2 };
        assert_eq!(info.counters.broadcasts_delivered, expected, "node {i}");
        // A line has no second path: a copy sent back the way it came would show here.
        assert_eq!(
            info.counters.duplicates_dropped, 0,
            "node {i} saw a duplicate"
        );
    }
}

#[test]
fn broadcast_in_a_full_mesh_is_delivered_once_and_duplicates_dropped() {
    let mesh = start_nodes(5, |_| {});
    // Each newcomer joins n0 and discovers the others; wait for the full mesh before
    // the next one joins.
    for i in 1..mesh.len() {
        mesh[i].connect_to_peer(mesh[0].addr()).expect("join n0");
        assert!(
            eventually(DEADLINE, || mesh[..=i].iter().all(|n| n.peers().len() == i)),
            "no full mesh of {} nodes",
            i + 1
        );
    }

    // Every node is a direct neighbour of the origin, but a forwarded copy may win the
    // race, so hops is not checked.
    check_broadcast(&mesh, 0, "to the whole mesh", |_, _| None);

    let infos: Vec<_> = mesh.iter().map(|n| n.info()).collect();
    for (i, info) in infos.iter().enumerate().skip(1) {
        assert_eq!(info.counters.broadcasts_delivered, 1, "node {i}");
    }
    assert_eq!(
        infos[0].counters.broadcasts_delivered, 0,
        "the origin delivers nothing"
    );
    let dropped: u64 = infos.iter().map(|i| i.counters.duplicates_dropped).sum();
    let forwarded: u64 = infos.iter().map(|i| i.counters.frames_forwarded).sum();
    assert!(dropped > 0, "a mesh must produce duplicates to suppress");
    // Each of the 4 receivers delivered one copy; every other copy (4 direct + all
    // forwarded) must have been dropped.
    assert_eq!(
        dropped, forwarded,
        "copies received = 4 delivered + dropped"
    );
}

/// Two nodes that do not dial on their own, for the simultaneous-dial tests.
fn quiet_pair() -> (TestNode, TestNode) {
    let a = start_node(|c| c.auto_dial = false);
    let b = start_node(|c| c.auto_dial = false);
    (a, b)
}

/// `a` and `b` call `connect_to_peer` on each other at the same moment, from two
/// threads; each thread then runs `then(me, other)`. Returns both connect results.
fn dial_each_other(
    a: &TestNode,
    b: &TestNode,
    then: impl Fn(&TestNode, &TestNode) + Sync,
) -> (Result<PeerInfo, Error>, Result<PeerInfo, Error>) {
    let start = Barrier::new(2);
    let dial = |me: &TestNode, other: &TestNode| {
        start.wait();
        let result = me.connect_to_peer(other.addr());
        then(me, other);
        result
    };
    thread::scope(|s| {
        let ha = s.spawn(|| dial(a, b));
        let hb = s.spawn(|| dial(b, a));
        (ha.join().expect("thread"), hb.join().expect("thread"))
    })
}

#[test]
fn simultaneous_dials_leave_exactly_one_link() {
    // Each round has a good chance that both connections reach the handshake; enough
    // rounds make a wrong tie-break show up in practically every run.
    for round in 0..20 {
        let (a, b) = quiet_pair();
        let (ra, rb) = dial_each_other(&a, &b, |_, _| {});
        let ra = ra.unwrap_or_else(|e| panic!("round {round}: A -> B failed: {e}"));
        let rb = rb.unwrap_or_else(|e| panic!("round {round}: B -> A failed: {e}"));
        assert_eq!(ra.node_id, b.id());
        assert_eq!(rb.node_id, a.id());

        // Stable: one link and one open socket on each side (the loser is closed).
        let settled = || {
            a.peers().len() == 1
                && b.peers().len() == 1
                && a.info().connections == 1
                && b.info().connections == 1
        };
        assert!(
            eventually(DEADLINE, settled),
            "round {round}: A peers {:?} ({} sockets), B peers {:?} ({} sockets)",
            a.peers(),
            a.info().connections,
            b.peers(),
            b.info().connections
        );
        let (pa, pb) = (a.peers().remove(0), b.peers().remove(0));
        assert_eq!((pa.node_id, pa.addr), (b.id(), b.addr()), "round {round}");
        assert_eq!((pb.node_id, pb.addr), (a.id(), a.addr()), "round {round}");
        // The same TCP connection is outbound on one end and inbound on the other;
        // two different survivors would both be outbound.
        assert_ne!(
            pa.direction, pb.direction,
            "round {round}: A and B kept different connections"
        );

        // The link carries messages both ways...
        a.send_data_to_peer(b.addr(), "ping from A")
            .expect("A -> B");
        b.send_data_to_peer(a.addr(), "ping from B")
            .expect("B -> A");
        assert!(
            b.wait_for(|ev| is_message(ev, "ping from A")).is_some(),
            "round {round}"
        );
        assert!(
            a.wait_for(|ev| is_message(ev, "ping from B")).is_some(),
            "round {round}"
        );
        let settled_at = [a.history().len(), b.history().len()];

        // ...and stays up. A losing duplicate may have flapped the link before it
        // settled (PeerUp, PeerDown, PeerUp), but never after, and the events add up
        // to exactly one link.
        a.events_within(QUIET / 2);
        b.pending_events();
        for ((name, node, other), mark) in [("A", &a, b.id()), ("B", &b, a.id())]
            .into_iter()
            .zip(settled_at)
        {
            let seen = node.history();
            let ups = seen.iter().filter(|ev| is_peer_up(ev, other)).count();
            let downs = seen.iter().filter(|ev| is_peer_down(ev, other)).count();
            assert_eq!(ups, downs + 1, "round {round}: {name}'s events: {seen:?}");
            assert!(
                !seen[mark..].iter().any(|ev| is_peer_down(ev, other)),
                "round {round}: {name} lost the surviving link: {seen:?}"
            );
        }
        assert_eq!(a.peers().len(), 1);
        assert_eq!(b.peers().len(), 1);
    }
}

#[test]
fn messages_sent_right_after_simultaneous_dials_arrive() {
    let text = |n: &TestNode| format!("right after dialing, from {}", n.addr());
    for round in 0..100 {
        let (a, b) = quiet_pair();
        let (ra, rb) = dial_each_other(&a, &b, |me, other| {
            me.send_data_to_peer(other.addr(), &text(me))
                .expect("send right after connect");
        });
        ra.expect("A -> B");
        rb.expect("B -> A");

        // Both sends returned Ok on a link both connects reported as up.
        for (to, from) in [(&b, &a), (&a, &b)] {
            assert!(
                to.wait_for(|ev| is_message(ev, &text(from))).is_some(),
                "round {round}: {} never got the message from {}; it saw {:?}",
                to.addr(),
                from.addr(),
                to.history()
            );
        }
    }
}

#[test]
fn simultaneous_dials_report_one_peer_up_and_no_peer_down() {
    for round in 0..20 {
        let (a, b) = quiet_pair();
        let (ra, rb) = dial_each_other(&a, &b, |_, _| {});
        ra.expect("A -> B");
        rb.expect("B -> A");
        assert!(eventually(DEADLINE, || a.info().connections == 1
            && b.info().connections == 1));

        for (name, node, other) in [("A", &a, b.id()), ("B", &b, a.id())] {
            let seen = node.events_within(QUIET / 2);
            let ups = seen.iter().filter(|ev| is_peer_up(ev, other)).count();
            let downs = seen.iter().filter(|ev| is_peer_down(ev, other)).count();
            assert_eq!(
                (ups, downs),
                (1, 0),
                "round {round}: {name} saw the one link flap: {seen:?}"
            );
        }
    }
}

#[test]
fn stop_closes_everything_and_is_idempotent() {
    let a = start_node(|_| {});
    let b = start_node(|_| {});
    link(&b, &a);
    let a_addr = a.addr();

    a.stop();
    a.stop(); // a second stop is a no-op

    assert!(!a.is_running());
    assert!(a.peers().is_empty());
    let info = a.info();
    assert_eq!((info.links, info.connections), (0, 0), "{info:?}");
    assert!(matches!(
        a.connect_to_peer(b.addr()),
        Err(Error::NotRunning)
    ));
    assert!(matches!(
        a.broadcast_data("too late"),
        Err(Error::NotRunning)
    ));

    // The listener is gone: a connection is refused, or (if the OS already gave the
    // port to someone else) it is at least not answered by the stopped node.
    if let Ok(mut raw) = RawPeer::try_connect(a_addr) {
        if let Some(P2PMessage::Join(j)) = raw.recv() {
            assert_ne!(j.node_id, a.id(), "the stopped node still answers");
        }
    }

    // B was told, and A's application heard that its link went down.
    assert!(b.wait_for(|ev| is_peer_down(ev, a.id())).is_some());
    assert!(a.wait_for(|ev| is_peer_down(ev, b.id())).is_some());
    assert!(eventually(DEADLINE, || b.peers().is_empty()));
}

/// A node at its inbound cap still refers a joiner to the overlay: it sends the
/// addresses it knows and LEAVE, and the joiner links to those instead.
#[test]
fn full_node_refers_joiners_elsewhere() {
    let seed = start_node(|c| c.max_inbound_links = 1);
    let b = start_node(|_| {});
    link(&b, &seed);
    let c = start_node(|_| {});
    // Whatever connect reports (the short-lived link or an error), C must end up in
    // the overlay through the address the seed gave it.
    let _ = c.connect_to_peer(seed.addr());
    assert!(
        eventually(DEADLINE, || c.is_linked_to(&b)),
        "C never linked to B; C knows {:?}",
        c.known_addrs()
    );
    assert_eq!(seed.peers().len(), 1, "the cap held");
    assert!(seed.info().counters.refused_links >= 1);
}

/// `PeerUp` comes after the node took note of the link: the peer's address is in the
/// address book as a success by then, in both directions, so an application that
/// reacts to `PeerUp` (say, with `forget_addr`) acts on a settled book.
#[test]
fn peer_up_comes_after_the_address_book_recorded_the_link() {
    for _ in 0..20 {
        let a = start_node(|c| {
            plain(c);
            c.auto_dial = false;
        });
        let (raw, _) = RawPeer::join(a.addr(), &default_network());
        let up = wait_for_event(&a.events, DEADLINE, |e| is_peer_up(e, raw.id));
        assert!(up.is_some(), "no PeerUp for the raw peer");
        let known = a.known_addrs();
        let entry = known.iter().find(|k| k.addr == raw.listen_addr());
        assert!(
            entry.is_some_and(|k| k.last_success.is_some()),
            "at PeerUp the address book had {entry:?} for {}",
            raw.listen_addr()
        );
    }
}
