//! Signed broadcasts (docs/PROTOCOL.md 3.5 "Signatures"), over real sockets.
//!
//! The attack this defeats was real: a peer that knew an origin's id sent 50
//! broadcasts "from" it with seq 1-50; every node delivered them as that origin's,
//! and the origin's next real broadcasts were then dropped everywhere as
//! duplicates. Here a raw peer joined to B learns A's last sequence number from a
//! broadcast B forwards, and sends forgeries of three kinds for A's next 50 numbers;
//! neither B nor C (linked to B) delivers any, B counts them all in
//! `broadcasts_forged` and remembers none of them, and A's next three real
//! broadcasts (the numbers the forgeries took) are delivered at B and C exactly once.
//!
//! Raw peers speak plaintext TCP, so the nodes they talk to run
//! `Encryption::Plain` (and so do the nodes linked to those: a plaintext node and a
//! TLS node cannot link). The relay test uses the default, TLS.

mod common;

use std::collections::HashMap;
use std::io::Read;
use std::net::TcpStream;
use std::thread;

use common::*;
use p2p_overlay::{Encryption, Event, Identity, NodeId, P2PMessage};

/// Reads and throws away whatever the node sends a raw peer, so its queue towards us
/// never fills, until the connection closes.
fn drain(stream: &TcpStream) -> thread::JoinHandle<()> {
    let mut s = stream.try_clone().expect("clone");
    s.set_read_timeout(None).expect("timeout");
    thread::spawn(move || {
        let mut buf = [0u8; 16 * 1024];
        while matches!(s.read(&mut buf), Ok(n) if n > 0) {}
    })
}

/// How many times each text of `origin`'s broadcasts was delivered, among `events`.
fn deliveries(events: &[Event], origin: NodeId) -> HashMap<String, usize> {
    let mut n = HashMap::new();
    for ev in events {
        if let Event::Broadcast {
            origin_id, text, ..
        } = ev
        {
            if *origin_id == origin {
                *n.entry(text.clone()).or_insert(0) += 1;
            }
        }
    }
    n
}

/// Waits until `node` has delivered every text of `texts` (from `origin`), then a
/// quiet window more, and returns how often each of `origin`'s texts was delivered
/// over the node's whole history.
fn delivered_after_quiet(
    node: &TestNode,
    origin: NodeId,
    texts: &[&str],
) -> HashMap<String, usize> {
    for text in texts {
        let got = deliveries(&node.history(), origin);
        if got.contains_key(*text) {
            continue;
        }
        assert!(
            node.wait_for(|ev| matches!(
                ev,
                Event::Broadcast { origin_id, text: t, .. } if *origin_id == origin && t == text
            ))
            .is_some(),
            "{} never delivered {text:?}",
            node.addr()
        );
    }
    node.events_within(QUIET);
    deliveries(&node.history(), origin)
}

#[test]
fn fifty_forged_broadcasts_are_dropped_and_the_origins_real_ones_still_arrive() {
    let _watchdog = watchdog(
        "fifty_forged_broadcasts_are_dropped_and_the_origins_real_ones_still_arrive",
        WATCHDOG,
    );
    const N: u64 = 50;
    let id_a = Identity::generate();
    let plain = |c: &mut p2p_overlay::Config| {
        c.encryption = Encryption::Plain;
        c.auto_dial = false;
    };
    let a = start_node(|c| {
        plain(c);
        c.identity = Some(id_a.clone());
    });
    let b = start_node(plain);
    let c = start_node(plain);
    link(&a, &b);
    link(&c, &b);
    assert_eq!(a.id(), id_a.node_id());

    let (mut raw, _) = RawPeer::join(b.addr(), &default_network());
    assert!(
        eventually(DEADLINE, || b.peer_ids().contains(&raw.id)),
        "B never listed the raw peer"
    );
    // The attacker learns A's current sequence number the way a neighbour would: from
    // A's last broadcast, which B forwards to it. The forgeries take A's next ones.
    assert!(a.broadcast_data("first").expect("broadcast") > 0);
    let last =
        match raw.recv_until(|m| matches!(m, P2PMessage::Broadcast(bc) if bc.origin == a.id())) {
            Some(P2PMessage::Broadcast(bc)) => bc.seq,
            other => panic!("the raw peer never got A's broadcast: {other:?}"),
        };
    let _drainer = drain(&raw.stream);
    let attacker = raw.identity.clone();
    let a_addr = a.advertised_addr();

    let mut frames = Vec::new();
    for seq in last + 1..=last + N {
        // (a) A's id and key, a garbage signature.
        let mut garbage = signed_broadcast(&id_a, seq, 1, a_addr, &format!("garbage {seq}"));
        garbage.signature = [seq as u8; 64];
        // (b) A's id, signed (validly) with the attacker's own key.
        let mut own_key = signed_broadcast(&attacker, seq, 1, a_addr, &format!("own key {seq}"));
        own_key.origin = a.id();
        own_key.signature = attacker.sign(&own_key.signed_bytes());
        // (c) A's real broadcast (exactly the bytes A would sign for its seq), its text
        // changed on the way.
        let mut altered = signed_broadcast(&id_a, seq, 1, a_addr, &format!("real {seq}"));
        altered.text = format!("altered {seq}");
        for b in [garbage, own_key, altered] {
            frames.extend(P2PMessage::Broadcast(b).encode());
        }
    }
    // A valid broadcast of the raw peer's own last: frames on one link are handled in
    // order, so once B delivers it, every forgery before it has been dealt with.
    frames.extend(raw.broadcast(1, 1, "marker").encode());
    raw.send_bytes(&frames).expect("sent");

    for node in [&b, &c] {
        assert!(
            node.wait_for(|ev| is_broadcast_of(ev, "marker")).is_some(),
            "{} never delivered the marker",
            node.addr()
        );
    }
    let forged = b.info().counters.broadcasts_forged;
    assert_eq!(forged, 3 * N, "{:?}", b.info().counters);
    for node in [&b, &c] {
        let mut from_a = deliveries(&node.history(), a.id());
        assert_eq!(from_a.remove("first"), Some(1), "A's real broadcast");
        assert!(from_a.is_empty(), "forgeries delivered: {from_a:?}");
    }
    // None reached C (B forwarded none), and A got none of its own back.
    assert_eq!(c.info().counters.broadcasts_forged, 0);
    assert_eq!(a.info().counters.broadcasts_forged, 0);
    // B remembers A's "first" and the marker only: no forgery is in its seen cache,
    // its replay windows or its GRAFT store.
    let info = b.info();
    assert_eq!(info.seen_ids, 2, "{info:?}");
    assert_eq!(info.replay_origins, 2, "{info:?}");
    assert_eq!(info.stored_broadcasts, 2, "{info:?}");
    // Forgeries do not close the link.
    assert!(b.peer_ids().contains(&raw.id), "B closed the raw peer");

    // A's real broadcasts, its next three numbers: the ids the forgeries tried to take.
    let texts = ["real 1", "real 2", "real 3"];
    for text in texts {
        assert!(a.broadcast_data(text).expect("broadcast") > 0);
    }
    for node in [&b, &c] {
        let got = delivered_after_quiet(node, a.id(), &texts);
        let want: HashMap<String, usize> = std::iter::once("first")
            .chain(texts)
            .map(|t| (t.to_string(), 1))
            .collect();
        assert_eq!(got, want, "at {}", node.addr());
    }
    // Still no forgery anywhere but the ones the raw peer sent.
    assert_eq!(b.info().counters.broadcasts_forged, 3 * N);
    assert_eq!(c.info().counters.broadcasts_forged, 0);
}

#[test]
fn a_forged_copy_after_the_real_one_is_a_duplicate_and_a_real_one_relayed_by_a_raw_peer_is_delivered(
) {
    let _watchdog = watchdog(
        "a_forged_copy_after_the_real_one_is_a_duplicate_and_a_real_one_relayed_by_a_raw_peer_is_delivered",
        WATCHDOG,
    );
    let b = start_node(|c| {
        c.encryption = Encryption::Plain;
        c.auto_dial = false;
    });
    let (mut raw, _) = RawPeer::join(b.addr(), &default_network());
    let _drainer = drain(&raw.stream);
    assert!(eventually(DEADLINE, || b.peer_ids().contains(&raw.id)));
    // Some other node's broadcast, relayed by the raw peer with a changed hop count:
    // hops are not signed, so it verifies.
    let origin = Identity::generate();
    let addr = "192.0.2.7:9000".parse().expect("addr");
    let real = signed_broadcast(&origin, 1, 4, addr, "relayed");
    raw.send(&P2PMessage::Broadcast(real.clone()));
    // The same id again with another text: a duplicate of a verified id, dropped as
    // one (verification is per node, not per copy), never delivered.
    let mut copy = real;
    copy.text = "changed copy".into();
    copy.hops = 5;
    raw.send(&P2PMessage::Broadcast(copy));
    raw.send(&raw.broadcast(1, 1, "marker"));
    assert!(b.wait_for(|ev| is_broadcast_of(ev, "marker")).is_some());
    let got = deliveries(&b.history(), origin.node_id());
    assert_eq!(got, HashMap::from([("relayed".to_string(), 1)]));
    let hops = b.history().into_iter().find_map(|ev| match ev {
        Event::Broadcast { text, hops, .. } if text == "relayed" => Some(hops),
        _ => None,
    });
    assert_eq!(hops, Some(4));
    let counters = b.info().counters;
    assert_eq!(counters.broadcasts_forged, 0, "{counters:?}");
    assert_eq!(counters.duplicates_dropped, 1, "{counters:?}");
}

#[test]
fn signed_broadcasts_are_relayed_through_a_middle_node_and_delivered_once_everywhere() {
    let _watchdog = watchdog(
        "signed_broadcasts_are_relayed_through_a_middle_node_and_delivered_once_everywhere",
        WATCHDOG,
    );
    // Default encryption (TLS): the signature is the same above either transport.
    let nodes = start_nodes(3, |c| c.auto_dial = false);
    let (a, b, c) = (&nodes[0], &nodes[1], &nodes[2]);
    link(a, b);
    link(c, b);
    let texts = ["one", "two", "three", "four", "five"];
    for text in texts {
        a.broadcast_data(text).expect("broadcast");
    }
    for node in [b, c] {
        let got = delivered_after_quiet(node, a.id(), &texts);
        let want: HashMap<String, usize> = texts.iter().map(|t| (t.to_string(), 1)).collect();
        assert_eq!(got, want, "at {}", node.addr());
    }
    // C got them through B, two hops from A.
    let c_hops: Vec<u8> = c
        .history()
        .into_iter()
        .filter_map(|ev| match ev {
            Event::Broadcast { hops, .. } => Some(hops),
            _ => None,
        })
        .collect();
    assert_eq!(c_hops, [2; 5]);
    for node in &nodes {
        assert_eq!(node.info().counters.broadcasts_forged, 0);
    }
}

#[test]
fn a_forged_answer_to_a_graft_is_dropped_and_the_real_broadcast_is_still_new() {
    let _watchdog = watchdog(
        "a_forged_answer_to_a_graft_is_dropped_and_the_real_broadcast_is_still_new",
        WATCHDOG,
    );
    let b = start_node(|c| {
        c.encryption = Encryption::Plain;
        c.auto_dial = false;
    });
    let (mut raw, _) = RawPeer::join(b.addr(), &default_network());
    assert!(eventually(DEADLINE, || b.peer_ids().contains(&raw.id)));
    let origin = Identity::generate();
    let addr = "192.0.2.7:9000".parse().expect("addr");
    // The raw peer announces origin's broadcast 1; B, missing it, asks for it.
    raw.send(&P2PMessage::IHave {
        ids: vec![p2p_overlay::p2p_message::Announcement {
            id: (origin.node_id(), 1),
            hops: 1,
        }],
    });
    let graft = raw.recv_until(|m| matches!(m, P2PMessage::Graft { .. }));
    match graft {
        Some(P2PMessage::Graft { ids }) => assert_eq!(ids, [(origin.node_id(), 1)]),
        other => panic!("no GRAFT: {other:?}"),
    }
    // It answers with a forgery: the origin's id, the raw peer's key.
    let mut forged = signed_broadcast(&raw.identity, 1, 2, addr, "forged answer");
    forged.origin = origin.node_id();
    forged.signature = raw.identity.sign(&forged.signed_bytes());
    raw.send(&P2PMessage::Broadcast(forged));
    raw.send(&raw.broadcast(1, 1, "marker"));
    assert!(b.wait_for(|ev| is_broadcast_of(ev, "marker")).is_some());
    assert_eq!(b.info().counters.broadcasts_forged, 1);
    assert!(deliveries(&b.history(), origin.node_id()).is_empty());
    // The real broadcast 1 is still new at B.
    raw.send(&P2PMessage::Broadcast(signed_broadcast(
        &origin,
        1,
        2,
        addr,
        "real answer",
    )));
    let got = delivered_after_quiet(&b, origin.node_id(), &["real answer"]);
    assert_eq!(got, HashMap::from([("real answer".to_string(), 1)]));
    assert_eq!(b.info().counters.broadcasts_forged, 1);
}
