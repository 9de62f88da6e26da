//! Faults: nodes that die without LEAVE (`kill -9`), freeze (SIGSTOP), come back on
//! the same address with a new id, or cannot be reached at all. Victims that must die
//! abruptly are `p2p-node` processes, killed by PID; everything else is a library node.

mod common;

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use common::*;
use p2p_overlay::{Config, Error, Event, NodeId, P2PMessage};

/// Heartbeat 100 ms, peer timeout 1 s (ten heartbeats: a busy 2-core machine does not
/// make a live peer look dead).
fn fast(c: &mut Config) {
    c.heartbeat_interval = Duration::from_millis(100);
    c.peer_timeout = Duration::from_secs(1);
}

/// The same settings for a `p2p-node` process.
const FAST_ARGS: [&str; 4] = ["--heartbeat-ms", "100", "--timeout-ms", "1000"];

/// Churn: 21 nodes join through random earlier ones; 7 of them (processes) are killed
/// with `kill -9`, 3 new nodes join. The survivors drop the dead, get back to their
/// target link count, and a broadcast reaches every live node exactly once.
#[test]
fn churn_survivors_drop_the_dead_relink_and_broadcast_reaches_all_once() {
    let _watchdog = watchdog(
        "churn_survivors_drop_the_dead_relink_and_broadcast_reaches_all_once",
        WATCHDOG,
    );
    churn(0x5eed_c4a2, Death::Kill9);
}

/// The same with victims frozen (SIGSTOP) instead: like a machine losing power, they
/// send no FIN and their sockets stay open (their kernel even accepts new
/// connections), so survivors find out only by the heartbeat timeout.
#[test]
fn churn_with_frozen_victims_survivors_recover_by_heartbeat_timeout() {
    let _watchdog = watchdog(
        "churn_with_frozen_victims_survivors_recover_by_heartbeat_timeout",
        WATCHDOG,
    );
    churn(0xfeed_0007, Death::Freeze);
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Death {
    Kill9,
    Freeze,
}

fn churn(seed: u64, death: Death) {
    const TOTAL: usize = 21;
    const VICTIMS: usize = 7;
    const TARGET: usize = 4;
    let lib = |c: &mut Config| {
        fast(c);
        c.target_links = TARGET;
        c.peer_exchange_interval = Duration::from_secs(1);
        // A dial to a frozen node connects (its kernel still accepts) and then waits
        // for a JOIN that never comes: this is how long it holds a dial slot.
        c.handshake_timeout = Duration::from_millis(500);
    };
    let mut rng = XorShift::new(seed);
    // Which of nodes 1..21 are victims (node 0 is the first library node).
    let mut victim_idx = HashSet::new();
    while victim_idx.len() < VICTIMS {
        victim_idx.insert(1 + rng.below(TOTAL - 1));
    }

    let mut libs: Vec<TestNode> = Vec::new();
    let mut victims: Vec<NodeProcess> = Vec::new();
    let mut addrs: Vec<SocketAddr> = Vec::new();
    libs.push(start_node(lib));
    addrs.push(libs[0].addr());
    for i in 1..TOTAL {
        let via = addrs[rng.below(addrs.len())];
        if victim_idx.contains(&i) {
            let port = via.port().to_string();
            let mut args = vec!["127.0.0.1", port.as_str(), "--target-links", "4"];
            args.extend_from_slice(&FAST_ARGS);
            let p = NodeProcess::start(&args);
            addrs.push(p.addr());
            victims.push(p);
        } else {
            let n = start_node(lib);
            n.connect_to_peer(via)
                .unwrap_or_else(|e| panic!("node {i} cannot join through {via}: {e}"));
            addrs.push(n.addr());
            libs.push(n);
        }
    }
    assert!(
        eventually(DEADLINE, || libs
            .iter()
            .all(|n| n.peers().len() >= TARGET - 1)),
        "the overlay never settled: {:?}",
        libs.iter().map(|n| n.peers().len()).collect::<Vec<_>>()
    );
    let victim_links: usize = libs
        .iter()
        .map(|n| {
            n.peers()
                .iter()
                .filter(|p| victims.iter().any(|v| v.id == p.node_id))
                .count()
        })
        .sum();
    assert!(victim_links > 0, "no survivor was linked to a victim");

    // No LEAVE either way: the survivors must find out by themselves.
    let dead: HashSet<SocketAddr> = victims.iter().map(|v| v.addr()).collect();
    let dead_ids: HashSet<NodeId> = victims.iter().map(|v| v.id).collect();
    let died = Instant::now();
    for v in victims.iter_mut() {
        match death {
            Death::Kill9 => v.kill9(),
            Death::Freeze => v.signal("STOP"), // the guard kills them at the end
        }
    }
    // Three newcomers join through random survivors.
    for _ in 0..3 {
        let via = libs[rng.below(libs.len())].addr();
        let n = start_node(lib);
        n.connect_to_peer(via).expect("a newcomer joins");
        libs.push(n);
    }

    // Every survivor gets back to its target link count.
    let want_links = TARGET;
    let settled = |libs: &[TestNode]| {
        libs.iter().all(|n| {
            let peers = n.peers();
            peers.len() >= want_links
                && !peers
                    .iter()
                    .any(|p| dead.contains(&p.addr) || dead_ids.contains(&p.node_id))
        })
    };
    assert!(
        eventually(Duration::from_secs(20), || settled(&libs)),
        "survivors did not recover: {:?}",
        libs.iter()
            .map(|n| (
                n.addr(),
                n.peer_addrs(),
                n.known_addrs()
                    .into_iter()
                    .filter(|k| k.failures > 0)
                    .map(|k| (k.addr, k.failures))
                    .collect::<Vec<_>>()
            ))
            .collect::<Vec<_>>()
    );

    eprintln!(
        "recovered {:?} after the deaths; links per node: {:?}",
        died.elapsed(),
        libs.iter().map(|n| n.peers().len()).collect::<Vec<_>>()
    );

    // A broadcast from one survivor reaches each of the 16 others exactly once.
    let origin = &libs[rng.below(libs.len())];
    let text = "after the churn";
    assert!(origin.broadcast_data(text).expect("broadcast") >= TARGET);
    let deadline = Instant::now() + DEADLINE; // one deadline for all of them
    for n in libs.iter().filter(|n| n.id() != origin.id()) {
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(
            wait_for_event(&n.events, left, |ev| is_broadcast_of(ev, text)).is_some(),
            "{} never got the broadcast; its peers: {:?}",
            n.addr(),
            n.peer_addrs()
        );
    }
    let mut extra = libs[0].events_within(QUIET);
    for n in &libs[1..] {
        extra.extend(n.pending_events());
    }
    extra.extend(origin.pending_events());
    let dups: Vec<&Event> = extra
        .iter()
        .filter(|ev| is_broadcast_of(ev, text))
        .collect();
    assert!(dups.is_empty(), "delivered twice: {dups:?}");
    assert!(
        !origin.history().iter().any(|ev| is_broadcast_of(ev, text)),
        "the origin delivered its own broadcast"
    );
}

/// A peer frozen with SIGSTOP sends nothing, not even a FIN: its peers drop it by the
/// heartbeat timeout, and keep serving the others.
#[test]
fn frozen_peer_is_dropped_by_heartbeat_timeout() {
    let _watchdog = watchdog("frozen_peer_is_dropped_by_heartbeat_timeout", WATCHDOG);
    let a = start_node(|c| {
        fast(c);
        c.auto_dial = false;
    });
    let good = start_node(|c| {
        fast(c);
        c.auto_dial = false;
    });
    link(&good, &a);
    let port = a.addr().port().to_string();
    let mut args = vec!["127.0.0.1", port.as_str(), "--no-auto-dial"];
    args.extend_from_slice(&FAST_ARGS);
    let frozen = NodeProcess::start(&args);
    assert!(
        eventually(DEADLINE, || a.peer_ids().contains(&frozen.id)),
        "the process never linked"
    );

    frozen.signal("STOP");
    let down = a
        .wait_for(|ev| is_peer_down(ev, frozen.id))
        .expect("the frozen peer was never dropped");
    assert_eq!(down_reason(&down), "heartbeat timeout", "{down:?}");
    assert!(!a.peer_ids().contains(&frozen.id));

    // The good peer was not affected.
    assert!(a.is_linked_to(&good));
    good.send_data_to_peer(a.addr(), "not frozen")
        .expect("send");
    assert!(a.wait_for(|ev| is_message(ev, "not frozen")).is_some());
    assert!(!a.history().iter().any(|ev| is_peer_down(ev, good.id())));
    frozen.signal("CONT"); // the guard kills it
}

/// Starts a library node on a given port, retrying while the port is still held (a
/// process being reaped, a socket being closed).
fn start_on_port(port: u16, configure: impl Fn(&mut Config)) -> TestNode {
    let deadline = Instant::now() + DEADLINE;
    loop {
        let mut config = Config::new(localhost(), port);
        configure(&mut config);
        match try_start_node(config) {
            Ok(node) => return node,
            Err(e) if Instant::now() < deadline => {
                eprintln!("port {port} not free yet: {e}");
                thread::sleep(Duration::from_millis(50));
            }
            Err(e) => panic!("cannot start a node on port {port}: {e}"),
        }
    }
}

/// A node that stops (LEAVE) and comes back on the same port with a new id is
/// accepted as a new peer when it dials back: the new id is listed, the old is gone.
#[test]
fn node_restarted_on_the_same_address_with_a_new_id_is_a_fresh_peer() {
    let _watchdog = watchdog(
        "node_restarted_on_the_same_address_with_a_new_id_is_a_fresh_peer",
        WATCHDOG,
    );
    let a = start_node(fast);
    let b = start_node(fast);
    link(&b, &a);
    let port = b.addr().port();
    let old_id = b.id();
    b.stop();
    let down = a
        .wait_for(|ev| is_peer_down(ev, old_id))
        .expect("A never saw B leave");
    assert_eq!(down_reason(&down), "left");
    drop(b);

    let b2 = start_on_port(port, fast);
    assert_ne!(b2.id(), old_id);
    assert_eq!(b2.addr(), SocketAddr::new(localhost(), port));
    // A defers redialing a node that left; the restarted node dials A itself.
    b2.connect_to_peer(a.addr()).expect("B2 joins A");
    assert!(
        eventually(DEADLINE, || a.is_linked_to(&b2) && b2.is_linked_to(&a)),
        "A never listed the restarted node: {:?}",
        a.peers()
    );
    let on_a = a.peers();
    assert_eq!(on_a.len(), 1, "{on_a:?}");
    assert_eq!(on_a[0].node_id, b2.id());
    assert!(a.wait_for(|ev| is_peer_up(ev, b2.id())).is_some());
    b2.send_data_to_peer(a.addr(), "I am back").expect("send");
    assert!(a.wait_for(|ev| is_message(ev, "I am back")).is_some());
}

/// A node killed with `kill -9` comes back on the same port as a new node (new id):
/// its peer, which saw the connection drop without LEAVE, redials the address by
/// itself and links the new node.
#[test]
fn node_killed_and_restarted_on_the_same_port_is_redialled_by_its_peer() {
    let _watchdog = watchdog(
        "node_killed_and_restarted_on_the_same_port_is_redialled_by_its_peer",
        WATCHDOG,
    );
    let a = start_node(fast); // auto-dial on
    let port = a.addr().port().to_string();
    let mut args = vec!["127.0.0.1", port.as_str(), "--no-auto-dial"];
    args.extend_from_slice(&FAST_ARGS);
    let mut victim = NodeProcess::start(&args);
    let old_id = victim.id;
    let addr = victim.addr();
    assert!(eventually(DEADLINE, || a.peer_ids().contains(&old_id)));
    victim.kill9();
    assert!(a.wait_for(|ev| is_peer_down(ev, old_id)).is_some());

    let b2 = start_on_port(addr.port(), |c| {
        fast(c);
        c.auto_dial = false;
    });
    assert!(
        eventually(Duration::from_secs(20), || a.is_linked_to(&b2)),
        "A never redialled {addr}: {:?}",
        a.known_addrs()
    );
    assert!(!a.peer_ids().contains(&old_id));
    assert_eq!(a.peers().len(), 1);
}

/// A JOIN from a new id that claims the listen address of a live link is refused
/// (counted in `refused_links`); once that link has been silent for two heartbeats it
/// is stale, and the newcomer replaces it.
#[test]
fn address_claim_is_refused_while_the_old_link_lives_then_replaces_it_when_stale() {
    let _watchdog = watchdog(
        "address_claim_is_refused_while_the_old_link_lives_then_replaces_it_when_stale",
        WATCHDOG,
    );
    let a = start_plain_node(|c| {
        c.heartbeat_interval = Duration::from_millis(200);
        c.peer_timeout = Duration::from_secs(30); // only staleness may end the old link
        c.auto_dial = false;
    });
    // The old node: a raw peer announcing its listen port P, kept alive by PINGs.
    // Its listen address must be verified (its dial-back answered) for it to hold P.
    let (raw, _) = RawPeer::join(a.addr(), &default_network());
    let old_id = raw.id;
    assert!(
        eventually(DEADLINE, || a
            .peers()
            .iter()
            .any(|p| p.node_id == old_id && p.addr_verified)),
        "the raw peer's address was never verified: {:?}",
        a.peers()
    );
    let (stream, listener) = raw.into_parts();
    let port = listener.local_addr().expect("addr").port();
    let alive = Arc::new(AtomicBool::new(true));
    let pinger = {
        let alive = Arc::clone(&alive);
        let mut s = stream.try_clone().expect("clone");
        thread::spawn(move || {
            use std::io::Write;
            let started = Instant::now();
            while alive.load(Ordering::Relaxed) && started.elapsed() < Duration::from_secs(30) {
                if s.write_all(&P2PMessage::Ping { nonce: 1 }.encode())
                    .is_err()
                {
                    break;
                }
                thread::sleep(Duration::from_millis(50));
            }
        })
    };
    drop(listener); // frees P for the new node; the old link stays open

    let b2 = start_on_port(port, |c| {
        c.auto_dial = false;
        c.encryption = p2p_overlay::Encryption::Plain;
    });
    for _ in 0..3 {
        let _ = b2.connect_to_peer(a.addr());
        assert!(
            eventually(DEADLINE, || !b2.is_linked_to(&a)),
            "B2 kept a link A refused: A {:?}, B2 {:?}",
            a.peers(),
            b2.peers()
        );
    }
    assert!(a.peer_ids().contains(&old_id), "a live link was pushed out");
    assert!(!a.peer_ids().contains(&b2.id()));
    assert!(a.info().counters.refused_links >= 3, "{:?}", a.info());

    // The old node goes silent: after two heartbeats its link is stale.
    alive.store(false, Ordering::Relaxed);
    pinger.join().expect("pinger");
    let deadline = Instant::now() + DEADLINE;
    while !a.peer_ids().contains(&b2.id()) {
        assert!(
            Instant::now() < deadline,
            "B2 never replaced the stale link"
        );
        let _ = b2.connect_to_peer(a.addr());
        eventually(Duration::from_millis(300), || {
            a.peer_ids().contains(&b2.id())
        });
    }
    let down = a
        .wait_for(|ev| is_peer_down(ev, old_id))
        .expect("no PeerDown for the stale link");
    assert!(down_reason(&down).contains("replaced"), "{down:?}");
    assert!(!a.peer_ids().contains(&old_id));
    let mut stream = stream;
    assert!(
        closed_within(&mut stream, DEADLINE),
        "the stale socket stayed open"
    );
}

#[test]
fn connect_to_a_port_nobody_listens_on_fails_with_connect_error() {
    let _watchdog = watchdog(
        "connect_to_a_port_nobody_listens_on_fails_with_connect_error",
        WATCHDOG,
    );
    let a = start_node(|c| c.auto_dial = false);
    let dead = SocketAddr::new(localhost(), free_port());
    match a.connect_to_peer(dead) {
        Err(Error::Connect { addr, .. }) => assert_eq!(addr, dead),
        other => panic!("expected Error::Connect, got {other:?}"),
    }
    assert_eq!(a.info().counters.dial_failures, 1);
    assert!(a.peers().is_empty());
    let k = a.known_addrs();
    let entry = k.iter().find(|k| k.addr == dead).expect("remembered");
    assert_eq!(entry.failures, 1);
    assert!(entry.last_success.is_none());
}

/// With auto-dial, a known dead address is retried with exponential backoff: the
/// delay before the next attempt doubles (1 s, 2 s, 4 s, ... up to 60 s).
#[test]
fn dead_address_is_retried_with_exponential_backoff() {
    let _watchdog = watchdog("dead_address_is_retried_with_exponential_backoff", WATCHDOG);
    let a = start_node(|c| c.heartbeat_interval = Duration::from_millis(100)); // auto-dial
    let dead = SocketAddr::new(localhost(), free_port());
    assert!(matches!(
        a.connect_to_peer(dead),
        Err(Error::Connect { .. })
    ));
    // failures -> next_attempt, as observed.
    let mut seen: HashMap<u32, Instant> = HashMap::new();
    let deadline = Instant::now() + DEADLINE;
    while !seen.contains_key(&3) {
        assert!(
            Instant::now() < deadline,
            "no third failure: {:?} {:?}",
            a.known_addrs(),
            a.info()
        );
        if let Some(k) = a.known_addrs().into_iter().find(|k| k.addr == dead) {
            seen.entry(k.failures).or_insert(k.next_attempt);
        }
        thread::sleep(Duration::from_millis(5)); // polling
    }
    // Attempt k+1 starts when attempt k is due (plus up to a maintenance tick and
    // scheduling), and fails at once, so next(k+1) - next(k) = delay(k+1) + a little.
    for (k, delay) in [(1u32, 2u64), (2, 4)] {
        let gap = seen[&(k + 1)].duration_since(seen[&k]);
        let want = Duration::from_secs(delay);
        assert!(
            gap >= want && gap < want + Duration::from_millis(2500),
            "after failure {} the next attempt came {gap:?} later, expected about {want:?}",
            k + 1
        );
    }
    assert!(a.info().counters.dial_failures >= 3, "{:?}", a.info());
    assert!(a.peers().is_empty());
}

/// A node below its target tries every due address once before retrying one that
/// failed. Frozen peers (or hosts that vanished without a reset) accept the TCP
/// connection and never answer, so each dial to one holds a dial slot for the whole
/// handshake timeout.
///
/// Setup: A (target 1 link, handshake timeout 1 s) has 4 frozen former peers and one
/// live address it has never linked. Regression test: candidates used to be sorted
/// most recently successful first, so the frozen former peers were retried (2-3
/// failures each, about 9 s) before the live address got its turn; fixed in da8c9c1
/// (fewest failures first).
#[test]
fn dialing_tries_untried_live_addresses_before_retrying_failing_ones() {
    let _watchdog = watchdog(
        "dialing_prefers_failing_former_peers_over_untried_live_addresses_bug",
        WATCHDOG,
    );
    let a = start_plain_node(|c| {
        fast(c);
        c.target_links = 1;
        c.handshake_timeout = Duration::from_secs(1);
    });
    let live = start_plain_node(|c| c.auto_dial = false);
    let port = a.addr().port().to_string();
    // Plaintext like `a`, which a raw peer talks to below.
    let mut args = vec!["127.0.0.1", port.as_str(), "--no-auto-dial", "--plaintext"];
    args.extend_from_slice(&FAST_ARGS);
    let frozen: Vec<NodeProcess> = (0..4).map(|_| NodeProcess::start(&args)).collect();
    assert!(eventually(DEADLINE, || frozen
        .iter()
        .all(|f| a.peer_ids().contains(&f.id))));
    // A learns the live node's address from a peer list (it has links enough, so it
    // does not dial it yet). The gossiping peer then goes away.
    {
        let (mut raw, _) = RawPeer::join(a.addr(), &default_network());
        raw.send(&P2PMessage::peers(vec![live.addr()]));
        assert!(raw.ping_pong(1));
        assert!(a.known_addrs().iter().any(|k| k.addr == live.addr()));
        let (stream, listener) = raw.into_parts();
        drop(listener); // its address now refuses connections at once
        drop(stream);
    }
    for f in &frozen {
        f.signal("STOP");
    }
    assert!(
        eventually(DEADLINE, || a.peers().is_empty()),
        "the frozen peers were not dropped"
    );
    let lost = Instant::now();
    let linked = eventually(DEADLINE, || a.is_linked_to(&live));
    let took = lost.elapsed();
    assert!(
        linked,
        "A never dialled the live address: {:?}",
        a.known_addrs()
    );
    // With one dial slot, each frozen address costs a handshake timeout to find out;
    // trying each once before the untried live one is fair. Trying one again first
    // is the starvation.
    let frozen_failures: Vec<(SocketAddr, u32)> = a
        .known_addrs()
        .into_iter()
        .filter(|k| frozen.iter().any(|f| f.addr() == k.addr))
        .map(|k| (k.addr, k.failures))
        .collect();
    eprintln!("linked the live node {took:?} after losing the frozen ones: {frozen_failures:?}");
    assert!(
        frozen_failures.iter().all(|(_, n)| *n <= 1),
        "A retried frozen addresses before dialing its untried live one ({took:?}): \
         {frozen_failures:?}"
    );
}
