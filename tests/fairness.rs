//! One source must not take every slot (issue 10, item 3). A full node makes room by
//! eviction, never by refusing while slots are free: the oldest pending handshake of
//! the most represented source group gives way to a newcomer of a less represented
//! one, and so does the youngest unprotected inbound link of the most represented
//! group. Attackers connect from 127.0.1.x, the honest joiner from 127.0.2.1 (another
//! /24); honest nodes that all share 127.0.0.1 never evict each other. Every wait is
//! bounded, every socket is closed at the end of its test.

mod common;

use std::io::Read;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use common::*;
use p2p_overlay::{Event, P2PMessage};

/// How long the honest joiner may take in these tests: well under the suite's 20 s.
const JOIN_WITHIN: Duration = Duration::from_secs(8);

fn attacker_ip(i: usize) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(127, 0, 1, 1 + (i % 200) as u8))
}

fn honest_ip() -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(127, 0, 2, 1))
}

/// Connects from `src`, sends a valid JOIN and reads the node's JOIN.
fn join_from(src: IpAddr, addr: SocketAddr) -> RawPeer {
    let mut p = RawPeer::connect_from(src, addr);
    p.send(&p.join_msg(&default_network()));
    match p.recv() {
        Some(P2PMessage::Join(_)) => p,
        other => panic!("expected the node's JOIN, got {other:?}"),
    }
}

fn is_linked(node: &TestNode, peer: &RawPeer) -> bool {
    node.peers().iter().any(|p| p.node_id == peer.id)
}

/// (a) Eight raw peers from one /24 hold every inbound slot; an honest peer from
/// another /24 is linked, not referred, and one attacker link goes with `Evicted`.
#[test]
fn full_inbound_slots_evict_the_crowded_group_for_a_newcomer() {
    let node = start_plain_node(|c| {
        c.max_inbound_links = 8;
        c.max_links = 16;
        c.target_links = 1;
        c.auto_dial = false;
        // Raw peers do not answer PINGs: keep their links up for the whole test.
        c.heartbeat_interval = Duration::from_secs(10);
        c.peer_timeout = Duration::from_secs(30);
    });
    let mut attackers = Vec::new();
    for i in 0..8 {
        let p = join_from(attacker_ip(i), node.addr());
        attackers.push(p);
    }
    assert!(
        eventually(DEADLINE, || node.info().links == 8),
        "attackers hold every inbound slot: {:?}",
        node.info()
    );

    let mut honest = join_from(honest_ip(), node.addr());
    let linked = eventually(JOIN_WITHIN, || is_linked(&node, &honest));
    let info = node.info();
    assert!(linked, "the honest newcomer was not linked: {info:?}");
    assert_eq!(info.counters.links_evicted, 1, "{info:?}");
    assert_eq!(info.counters.refused_links, 0, "{info:?}");
    assert_eq!(info.links, 8, "{info:?}");
    let down = node
        .wait_for(|e| matches!(e, Event::PeerDown { .. }))
        .expect("one attacker link is reported down");
    assert_eq!(down_reason(&down), "evicted for a more diverse peer");
    let Event::PeerDown { node_id, .. } = down else {
        unreachable!()
    };
    // The victim was an attacker, and it was told politely (LEAVE, then a close).
    let victim = attackers
        .iter_mut()
        .find(|a| a.id == node_id)
        .expect("the victim is an attacker");
    assert!(
        victim
            .recv_until(|m| matches!(m, P2PMessage::Leave))
            .is_some(),
        "the victim gets a LEAVE"
    );
    assert!(victim.closed_within(DEADLINE), "and is closed after it");
    // The honest link works.
    assert!(honest.ping_pong(7), "the newcomer's link is served");
    drop(attackers);
    drop(honest);
}

/// Silent sockets from 127.0.1.x that reconnect as soon as they are closed; bounded
/// in sockets, reconnects and time. Returns how many connections it opened.
fn slowloris(addr: SocketAddr, stop: Arc<AtomicBool>) -> thread::JoinHandle<usize> {
    thread::spawn(move || {
        const SOCKETS: usize = 8;
        const MAX_CONNECTS: usize = 5_000;
        let started = Instant::now();
        let mut opened = 0;
        let connect = |i: usize| -> Option<TcpStream> {
            let p = RawPeer::try_connect_from(attacker_ip(i), addr).ok()?;
            let (s, _listener) = p.into_parts();
            s.set_read_timeout(Some(Duration::from_millis(5))).ok()?;
            Some(s)
        };
        let mut socks: Vec<Option<TcpStream>> = (0..SOCKETS).map(|_| None).collect();
        let mut buf = [0u8; 256];
        while !stop.load(Ordering::Relaxed)
            && started.elapsed() < Duration::from_secs(15)
            && opened < MAX_CONNECTS
        {
            for (i, slot) in socks.iter_mut().enumerate() {
                let closed = match slot {
                    None => true,
                    // Read (and discard the node's JOIN); an end or an error is a close.
                    Some(s) => match s.read(&mut buf) {
                        Ok(0) => true,
                        Ok(_) => false,
                        Err(e) => !matches!(
                            e.kind(),
                            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                        ),
                    },
                };
                if closed {
                    *slot = connect(i);
                    opened += 1;
                }
            }
        }
        opened
    })
}

/// (b) Slowloris: four pending-handshake slots held by silent reconnecting sockets of
/// one /24; an honest joiner from another /24 still completes its handshake.
#[test]
fn slowloris_group_cannot_hold_every_pending_handshake() {
    let node = start_plain_node(|c| {
        c.max_pending_handshakes = 4;
        c.auto_dial = false;
        // Longer than the test: the silent sockets never time out on their own.
        c.handshake_timeout = Duration::from_secs(30);
    });
    let stop = Arc::new(AtomicBool::new(false));
    let flood = slowloris(node.addr(), Arc::clone(&stop));
    assert!(
        eventually(DEADLINE, || {
            let i = node.info();
            i.pending_handshakes == 4 && i.counters.refused_connections > 0
        }),
        "the flood holds every pending slot: {:?}",
        node.info()
    );

    // One attempt, as a real joiner's dial would be.
    let mut honest = RawPeer::connect_from(honest_ip(), node.addr());
    honest.send(&honest.join_msg(&default_network()));
    let got = honest.recv();
    assert!(
        matches!(got, Some(P2PMessage::Join(_))),
        "the honest joiner's handshake: {got:?}, {:?}",
        node.info()
    );
    let linked = eventually(JOIN_WITHIN, || is_linked(&node, &honest));
    stop.store(true, Ordering::Relaxed);
    let opened = flood.join().expect("flood thread");
    let info = node.info();
    assert!(linked, "the honest joiner was not linked: {info:?}");
    assert!(info.counters.pending_evicted >= 1, "{info:?}");
    assert!(opened > 4, "the flood reconnected ({opened} connections)");
    assert!(honest.ping_pong(3), "the newcomer's link is served");
    drop(honest);
}

/// (c) Guard: 30 honest nodes, all from 127.0.0.1 (one /24), join one seed at once
/// with the default caps. All link, nobody is evicted: equals never evict equals.
#[test]
fn honest_nodes_of_one_group_join_without_eviction() {
    let seed = start_plain_node(|c| c.auto_dial = false);
    let joiners = start_plain_nodes(30, |c| c.auto_dial = false);
    let seed_addr = seed.addr();
    let handles: Vec<_> = joiners
        .iter()
        .map(|j| {
            let node = Arc::clone(&j.node);
            thread::spawn(move || node.connect_to_peer(seed_addr).is_ok())
        })
        .collect();
    let connected = handles
        .into_iter()
        .map(|h| h.join().unwrap_or(false))
        .filter(|ok| *ok)
        .count();
    assert_eq!(connected, 30, "every connect_to_peer succeeds");
    assert!(
        eventually(DEADLINE, || seed.info().links == 30),
        "every joiner is linked: {:?}",
        seed.info()
    );
    assert!(joiners.iter().all(|j| j.is_linked_to(&seed)));
    let info = seed.info();
    assert_eq!(info.counters.links_evicted, 0, "{info:?}");
    assert_eq!(info.counters.pending_evicted, 0, "{info:?}");
}
