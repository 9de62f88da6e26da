//! A JOIN's claimed listen address counts only once verified (docs/PROTOCOL.md 3.1, "Verified listen addresses"):
//! a peer that dials us is listed, gossiped and addressed at the address its JOIN
//! claims only after a dial-back PROBE found its id listening there; otherwise it is
//! known by its socket address, and the real owner of the claimed address keeps it.
//!
//! Real sockets on 127.0.0.1, ephemeral ports, every wait bounded.

mod common;

use common::*;
use p2p_overlay::p2p_message::{Join, PROTOCOL_VERSION};
use p2p_overlay::{Encryption, Event, NodeId, P2PMessage, PeerInfo};

/// B's link to node `id`, once it has one.
fn link_of(b: &TestNode, id: NodeId) -> Option<PeerInfo> {
    b.peers().into_iter().find(|p| p.node_id == id)
}

/// After the attacker's unverified link: the real owner V links to B and is listed
/// at its own address (no `AddressTaken`), and what B sends "to V's address" reaches
/// V.
fn owner_keeps_its_address(b: &TestNode, v: &TestNode) {
    v.connect_to_peer(b.addr())
        .unwrap_or_else(|e| panic!("the owner cannot link: {e}"));
    assert!(
        eventually(DEADLINE, || b.is_linked_to(v)),
        "B never listed V at its address: {:?}",
        b.peers()
    );
    let at_v = link_of(b, v.id()).expect("V's link");
    assert!(
        at_v.addr_verified,
        "the owner's address is verified: {at_v:?}"
    );
    b.send_data_to_peer(v.addr(), "to the owner")
        .expect("B sends to V's address");
    let got = v.wait_for(|ev| is_message(ev, "to the owner"));
    match got {
        Some(Event::Message { from_id, .. }) => assert_eq!(from_id, b.id()),
        other => panic!("V never got B's message: {other:?}"),
    }
}

/// Plaintext: a raw peer claims V's listen port in its JOIN. B probes V's address,
/// finds V's id there, and links the raw peer at its socket address, unverified.
#[test]
fn a_claimed_address_of_another_node_is_not_taken_plaintext() {
    let _w = watchdog("plaintext claim", WATCHDOG);
    let b = start_node(plain);
    let v = start_node(plain);
    let mut attacker = RawPeer::connect(b.addr());
    let claim = Join {
        version: PROTOCOL_VERSION,
        node_id: NodeId::random(),
        listen_port: v.addr().port(),
        network: default_network(),
        advertise: None,
        observed: None,
    };
    attacker.id = claim.node_id;
    attacker.send(&P2PMessage::Join(claim));
    assert!(matches!(attacker.recv(), Some(P2PMessage::Join(_))));
    let socket = attacker.stream.local_addr().expect("socket address");
    assert!(
        eventually(DEADLINE, || link_of(&b, attacker.id).is_some()),
        "B never linked the attacker"
    );
    let l = link_of(&b, attacker.id).expect("attacker's link");
    assert!(!l.addr_verified, "{l:?}");
    assert_eq!(
        l.addr, socket,
        "an unverified link is known by its socket address"
    );
    assert!(!b.peer_addrs().contains(&v.addr()));

    // Its DATA comes from its socket address, not V's.
    attacker.send(&P2PMessage::Data {
        text: "forged".into(),
    });
    match b.wait_for(|ev| is_message(ev, "forged")) {
        Some(Event::Message { from, from_id, .. }) => {
            assert_eq!(from, socket);
            assert_eq!(from_id, attacker.id);
        }
        other => panic!("B never delivered the DATA: {other:?}"),
    }
    // Neither address went into B's address book (nor, so, into its PEERS).
    assert!(b
        .known_addrs()
        .iter()
        .all(|k| k.addr != socket && k.addr != v.addr()));

    owner_keeps_its_address(&b, &v);
    // The attacker is still linked, still unverified.
    let l = link_of(&b, attacker.id).expect("attacker still linked");
    assert!(!l.addr_verified);
}

/// TLS: the attacker is a real node whose JOIN claims V's address (`advertise`). The
/// probe's TLS handshake expects the attacker's id and finds V's certificate.
#[test]
fn a_claimed_address_of_another_node_is_not_taken_tls() {
    let _w = watchdog("tls claim", WATCHDOG);
    let b = start_node(|_| {});
    let v = start_node(|_| {});
    let v_addr = v.addr();
    let m = start_node(|c| c.advertise = Some(v_addr));
    m.connect_to_peer(b.addr()).expect("the attacker links");
    assert!(
        eventually(DEADLINE, || link_of(&b, m.id()).is_some()),
        "B never linked the attacker"
    );
    let l = link_of(&b, m.id()).expect("attacker's link");
    assert_eq!(l.encryption, Encryption::Tls);
    assert!(!l.addr_verified, "{l:?}");
    assert_ne!(l.addr, v_addr);
    assert_ne!(
        l.addr,
        m.addr(),
        "B knows only the attacker's socket address"
    );

    m.send_data_to_peer(b.addr(), "forged")
        .expect("attacker sends");
    match b.wait_for(|ev| is_message(ev, "forged")) {
        Some(Event::Message { from, from_id, .. }) => {
            assert_eq!(from_id, m.id());
            assert_eq!(from, l.addr);
            assert_ne!(from, v_addr);
        }
        other => panic!("B never delivered the DATA: {other:?}"),
    }
    assert!(b
        .known_addrs()
        .iter()
        .all(|k| k.addr != l.addr && k.addr != v_addr));

    owner_keeps_its_address(&b, &v);
}

/// An honest node that dials us is verified by the probe and listed at its listen
/// address, on both ends, well within the handshake timeout.
#[test]
fn honest_inbound_links_are_verified_tls() {
    let _w = watchdog("honest inbound", WATCHDOG);
    let a = start_node(|_| {});
    let b = start_node(|_| {});
    let started = std::time::Instant::now();
    link(&a, &b);
    assert!(
        started.elapsed() < std::time::Duration::from_secs(4),
        "verification took {:?}",
        started.elapsed()
    );
    let at_b = link_of(&b, a.id()).expect("A at B");
    assert!(at_b.addr_verified && at_b.addr == a.addr(), "{at_b:?}");
    let at_a = link_of(&a, b.id()).expect("B at A");
    assert!(at_a.addr_verified && at_a.addr == b.addr(), "{at_a:?}");
    // A verified inbound address is recorded like a dialled one.
    assert!(
        eventually(DEADLINE, || b
            .known_addrs()
            .iter()
            .any(|k| k.addr == a.addr())),
        "B never recorded A's verified address"
    );
}

/// A plaintext raw peer (with its probe answerer) is verified the same way.
#[test]
fn honest_inbound_links_are_verified_plaintext() {
    let _w = watchdog("honest inbound plain", WATCHDOG);
    let b = start_node(plain);
    let (peer, _) = RawPeer::join(b.addr(), &default_network());
    let want = peer.listen_addr();
    assert!(
        eventually(DEADLINE, || link_of(&b, peer.id)
            .is_some_and(|l| l.addr_verified && l.addr == want)),
        "B never verified the raw peer: {:?}",
        b.peers()
    );
}

/// A JOIN that advertises an IP no node can listen at (unspecified, multicast,
/// broadcast) is never dialled back: the peer is listed under its socket address,
/// unverified, and the bogus address goes nowhere (not into `known` either).
#[test]
fn an_advertised_address_no_node_can_listen_at_is_never_probed() {
    let _w = watchdog("undialable advertise", WATCHDOG);
    let b = start_node(plain);
    for ip in ["0.0.0.0", "224.0.0.1", "255.255.255.255"] {
        let probe = RawPeer::connect(b.addr());
        let join = Join {
            version: PROTOCOL_VERSION,
            node_id: probe.id,
            listen_port: probe.listen_port(),
            network: default_network(),
            advertise: Some(ip.parse().expect("ip")),
            observed: None,
        };
        drop(probe);
        let (peer, _) = RawPeer::join_with(b.addr(), join);
        assert!(
            eventually(DEADLINE, || link_of(&b, peer.id).is_some()),
            "{ip}: no link at all: {:?}",
            b.peers()
        );
        let link = link_of(&b, peer.id).expect("linked");
        assert!(!link.addr_verified, "{ip}: {link:?}");
        assert_eq!(link.addr.ip(), localhost(), "{ip}: {link:?}");
        assert!(
            b.known_addrs()
                .iter()
                .all(|k| k.addr.ip().to_string() != ip),
            "{ip} learned: {:?}",
            b.known_addrs()
        );
    }
}

/// PROBE as the first frame: the node answers with its JOIN (sent first, as on every
/// connection) and closes, quietly: no link, no handshake failure counted.
#[test]
fn probe_first_frame_is_answered_and_closed_quietly() {
    let _w = watchdog("probe first", WATCHDOG);
    let n = start_node(plain);
    let mut raw = RawPeer::connect(n.addr());
    raw.send(&P2PMessage::Probe);
    match raw.recv() {
        Some(P2PMessage::Join(j)) => assert_eq!(j.node_id, n.id()),
        other => panic!("expected the node's JOIN, got {other:?}"),
    }
    assert!(
        raw.closed_within(DEADLINE),
        "the probe connection stayed open"
    );
    assert!(n.peers().is_empty());
    assert_eq!(n.info().counters.handshakes_failed, 0);
}

/// PROBE on a live link is a protocol violation: the link closes.
#[test]
fn probe_on_a_live_link_closes_it() {
    let _w = watchdog("probe on link", WATCHDOG);
    let n = start_node(plain);
    let (mut raw, _) = RawPeer::join(n.addr(), &default_network());
    assert!(eventually(DEADLINE, || link_of(&n, raw.id).is_some()));
    raw.send(&P2PMessage::Probe);
    assert!(raw.closed_within(DEADLINE), "PROBE on a link left it open");
}

/// A peer cache naming an id for an address where another key now listens: the dial
/// is refused inside the TLS certificate check, with the verifier's text, before any
/// JOIN. After `MAX_ID_MISSES` such dials the stored id is dropped and the address
/// links again, now recording the id proven there.
#[test]
fn a_cached_id_is_checked_in_tls_and_dropped_after_repeated_misses() {
    let _w = watchdog("cached id", WATCHDOG);
    let x = start_node(|c| c.auto_dial = false);
    let stale = NodeId(0x0123_4567_89ab_cdef);
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("peers.txt");
    std::fs::write(
        &file,
        format!(
            "{}\n{} seen=- success=- failures=0 id={stale}\n",
            p2p_overlay::peer_cache::HEADER,
            x.addr()
        ),
    )
    .expect("write the peer cache");
    let n = start_node(|c| {
        c.auto_dial = false;
        c.peers_file = Some(file.clone());
    });
    let entry = |n: &TestNode| n.known_addrs().into_iter().find(|k| k.addr == x.addr());
    assert_eq!(entry(&n).and_then(|k| k.id), Some(stale));
    let want = format!("certificate is for node {}, expected node {stale}", x.id());
    for _ in 0..p2p_overlay::known_addrs::MAX_ID_MISSES {
        match n.connect_to_peer(x.addr()) {
            Err(e) => assert!(e.to_string().contains(&want), "{e}"),
            Ok(p) => panic!("linked despite the wrong id: {p:?}"),
        }
    }
    assert!(n.peers().is_empty());
    assert!(
        x.peers().is_empty(),
        "no JOIN reached the node with the new key"
    );
    assert_eq!(
        entry(&n).and_then(|k| k.id),
        None,
        "the stale id was dropped"
    );
    let p = n
        .connect_to_peer(x.addr())
        .expect("links without the stale id");
    assert_eq!(p.node_id, x.id());
    assert_eq!(entry(&n).and_then(|k| k.id), Some(x.id()));
}

/// PEERS carry the ids the sender proved: a node that hears of A from B (a verified
/// link) stores A's id with the address, and its dial of A expects it.
#[test]
fn peers_carry_proven_ids() {
    let _w = watchdog("peers ids", WATCHDOG);
    let a = start_node(|c| c.auto_dial = false);
    let b = start_node(|c| c.auto_dial = false);
    link(&a, &b);
    let d = start_node(|c| c.auto_dial = false);
    link(&d, &b);
    assert!(
        eventually(DEADLINE, || d
            .known_addrs()
            .iter()
            .any(|k| k.addr == a.addr() && k.id == Some(a.id()))),
        "D never stored A's id from B's PEERS: {:?}",
        d.known_addrs()
    );
}
