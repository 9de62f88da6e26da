//! Abuse and load: idle sockets (slowloris), connection floods, handshaking floods
//! against the link caps, a peer that never reads, broadcast storms and the bounds of
//! the seen-cache. Every loop here is bounded in count and time.

mod common;

use std::collections::HashMap;
use std::io::{self, Read};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use common::*;
use p2p_overlay::{Config, Error, Event, NodeId, P2PMessage};

/// Whether a non-blocking socket has been closed by the other end (EOF or reset).
/// Data the node sent first (its JOIN) is read and discarded.
fn is_closed(s: &mut TcpStream) -> bool {
    let mut buf = [0u8; 1024];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return false,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(_) => return true,
        }
    }
}

/// Connects without sending anything; the socket is left non-blocking.
fn idle_socket(addr: SocketAddr) -> Option<TcpStream> {
    let s = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).ok()?;
    s.set_nonblocking(true).ok()?;
    Some(s)
}

/// Retries `connect_to_peer` until `node` and `target` list each other, for at most
/// `DEADLINE` (a refused attempt fails fast: the node closes refused sockets at once).
fn join_with_retries(node: &TestNode, target: &TestNode) -> usize {
    let deadline = Instant::now() + DEADLINE;
    let mut attempts = 0;
    while Instant::now() < deadline {
        attempts += 1;
        match node.connect_to_peer(target.addr()) {
            Ok(_) => {
                if eventually(Duration::from_secs(2), || {
                    node.is_linked_to(target) && target.is_linked_to(node)
                }) {
                    return attempts;
                }
            }
            Err(_) => thread::sleep(Duration::from_millis(20)), // pacing between tries
        }
    }
    panic!(
        "{} never joined {} in {attempts} attempts: {:?}",
        node.addr(),
        target.addr(),
        target.info()
    );
}

/// Slowloris: 200 sockets connect and never send, and an attacker keeps topping them
/// up as the node closes them. Sockets past the pending-handshake cap are closed at
/// once, the others after the handshake timeout; meanwhile a legitimate node joins.
#[test]
fn slowloris_sockets_are_closed_and_a_legit_node_still_joins() {
    let _watchdog = watchdog(
        "slowloris_sockets_are_closed_and_a_legit_node_still_joins",
        WATCHDOG,
    );
    const IDLE: usize = 200;
    let timeout = Duration::from_millis(500);
    let a = start_plain_node(|c| {
        c.handshake_timeout = timeout;
        c.auto_dial = false;
    });
    let cap = a
        .info()
        .pending_handshakes
        .max(Config::default().max_pending_handshakes);
    assert_eq!(cap, 32);

    // The attacker: keeps up to IDLE idle sockets open, replacing closed ones every
    // 250 ms, for at most 10 s or 5,000 sockets; counts how many it saw closed.
    let stop = Arc::new(AtomicBool::new(false));
    let attacker = {
        let stop = Arc::clone(&stop);
        let target = a.addr();
        thread::spawn(move || {
            let started = Instant::now();
            let mut open: Vec<TcpStream> = Vec::new();
            let (mut opened, mut closed) = (0usize, 0usize);
            while !stop.load(Ordering::Relaxed)
                && started.elapsed() < Duration::from_secs(10)
                && opened < 5000
            {
                while open.len() < IDLE && opened < 5000 {
                    match idle_socket(target) {
                        Some(s) => open.push(s),
                        None => break,
                    }
                    opened += 1;
                }
                let before = open.len();
                open.retain_mut(|s| !is_closed(s));
                closed += before - open.len();
                thread::sleep(Duration::from_millis(250));
            }
            (open, opened, closed)
        })
    };

    // Wait until the attack fills the pending slots, then join for real.
    assert!(
        eventually(DEADLINE, || a.info().counters.refused_connections > 0),
        "the attack never reached the cap: {:?}",
        a.info()
    );
    let b = start_plain_node(|c| c.auto_dial = false);
    let attempts = join_with_retries(&b, &a);
    let attack_running = !attacker.is_finished();
    stop.store(true, Ordering::Relaxed);
    let (mut still_open, opened, closed_seen) = attacker.join().expect("attacker thread");
    eprintln!(
        "legit node joined after {attempts} attempts; attacker opened {opened}, saw \
         {closed_seen} closed, {} open at the end; {:?}",
        still_open.len(),
        a.info()
    );
    assert!(
        attack_running,
        "the attack ended before the legit node joined"
    );
    assert!(opened >= IDLE);
    assert!(closed_seen > 0);

    // Every idle socket left is closed by the node within the deadline.
    assert!(
        eventually(DEADLINE, || {
            still_open.retain_mut(|s| !is_closed(s));
            still_open.is_empty()
        }),
        "{} idle sockets were never closed",
        still_open.len()
    );
    let info = a.info();
    assert!(info.counters.refused_connections > 0, "{info:?}");
    assert!(info.counters.handshakes_failed > 0, "{info:?}");
    assert!(
        eventually(DEADLINE, || {
            let i = a.info();
            i.pending_handshakes == 0 && i.connections == 1
        }),
        "{:?}",
        a.info()
    );
    // The legit link works.
    b.send_data_to_peer(a.addr(), "made it").expect("send");
    assert!(a.wait_for(|ev| is_message(ev, "made it")).is_some());
}

/// 500 connection attempts at once: linked peers keep exchanging messages while the
/// sockets are open, and a new node joins once they are gone.
#[test]
fn connection_flood_does_not_disturb_linked_peers_and_the_node_recovers() {
    let _watchdog = watchdog(
        "connection_flood_does_not_disturb_linked_peers_and_the_node_recovers",
        WATCHDOG,
    );
    const FLOOD: usize = 500;
    let a = start_plain_node(|c| {
        c.handshake_timeout = Duration::from_secs(2);
        c.auto_dial = false;
    });
    let b = start_plain_node(|c| c.auto_dial = false);
    let c = start_plain_node(|c| c.auto_dial = false);
    link(&b, &a);
    link(&c, &a);

    let mut flood: Vec<TcpStream> = (0..FLOOD).filter_map(|_| idle_socket(a.addr())).collect();
    assert!(
        flood.len() >= FLOOD * 9 / 10,
        "only {} connected",
        flood.len()
    );
    assert!(
        eventually(DEADLINE, || a.info().counters.refused_connections > 0),
        "{:?}",
        a.info()
    );

    // While the flood sockets are open: direct messages and broadcasts still flow.
    b.send_data_to_peer(a.addr(), "during the flood")
        .expect("B -> A");
    assert!(a
        .wait_for(|ev| is_message(ev, "during the flood"))
        .is_some());
    a.send_data_to_peer(c.addr(), "A -> C during the flood")
        .expect("A -> C");
    assert!(c
        .wait_for(|ev| is_message(ev, "A -> C during the flood"))
        .is_some());
    assert_eq!(c.broadcast_data("flood broadcast").expect("broadcast"), 1);
    assert!(b
        .wait_for(|ev| is_broadcast_of(ev, "flood broadcast"))
        .is_some());

    // The flood stops; a new node joins (retrying while the admitted sockets close).
    let refused = a.info().counters.refused_connections;
    flood.clear();
    let d = start_plain_node(|c| c.auto_dial = false);
    join_with_retries(&d, &a);
    assert!(refused >= (FLOOD / 2) as u64, "refused only {refused}");

    // Nobody lost a link.
    for (n, other) in [(&b, &a), (&c, &a), (&a, &b)] {
        assert!(n.is_linked_to(other));
    }
    for n in [&a, &b, &c] {
        let downs: Vec<Event> = n
            .pending_events()
            .into_iter()
            .chain(n.history())
            .filter(|ev| matches!(ev, Event::PeerDown { .. }))
            .collect();
        assert!(downs.is_empty(), "{downs:?}");
    }
    assert!(
        eventually(DEADLINE, || a.info().connections == 3),
        "{:?}",
        a.info()
    );
}

/// Peers that complete the handshake are capped too: past `max_inbound_links` they
/// are refused (counted), which leaves the node room for its own dials, up to
/// `max_links` in all.
#[test]
fn inbound_cap_leaves_room_for_outbound_links_and_max_links_holds() {
    let _watchdog = watchdog(
        "inbound_cap_leaves_room_for_outbound_links_and_max_links_holds",
        WATCHDOG,
    );
    let a = start_plain_node(|c| {
        c.max_inbound_links = 4;
        c.max_links = 6;
        c.target_links = 2;
        c.auto_dial = false;
        c.peer_timeout = Duration::from_secs(60);
    });
    let mut joined = Vec::new();
    let mut refused = 0;
    for _ in 0..10 {
        let (mut raw, _) = RawPeer::join(a.addr(), &default_network());
        raw.send(&P2PMessage::Ping { nonce: 1 });
        // A linked peer gets its PONG; a refused one is referred elsewhere (PEERS, then
        // LEAVE) and hung up on.
        match raw.recv_until(|m| matches!(m, P2PMessage::Pong { .. } | P2PMessage::Leave)) {
            Some(P2PMessage::Pong { .. }) => joined.push(raw),
            Some(P2PMessage::Leave) => {
                assert!(raw.closed_within(DEADLINE), "refused but left open");
                refused += 1;
            }
            other => panic!("neither linked nor refused: {other:?}"),
        }
    }
    assert_eq!(joined.len(), 4, "inbound links past the cap");
    assert_eq!(refused, 6);
    assert_eq!(a.info().counters.refused_links, 6, "{:?}", a.info());

    // Outbound slots are still free: A dials two nodes...
    let x = start_plain_node(|c| c.auto_dial = false);
    let y = start_plain_node(|c| c.auto_dial = false);
    let z = start_plain_node(|c| c.auto_dial = false);
    a.connect_to_peer(x.addr()).expect("first outbound link");
    a.connect_to_peer(y.addr()).expect("second outbound link");
    assert_eq!(a.peers().len(), 6);
    // ...and a seventh link in all is refused.
    let e = a
        .connect_to_peer(z.addr())
        .expect_err("a link past max_links");
    assert!(matches!(e, Error::Handshake { .. }), "{e}");
    assert_eq!(a.peers().len(), 6);
    assert_eq!(a.info().counters.refused_links, 7);
    for raw in joined.iter_mut() {
        assert!(raw.ping_pong(2));
    }
}

/// A peer that completes the handshake, keeps sending (so it looks alive) but never
/// reads, while the node broadcasts 64 KiB frames: its queue fills and it is dropped
/// as too slow, and every broadcast still reaches the healthy peers.
#[test]
fn peer_that_never_reads_is_dropped_and_healthy_peers_get_every_broadcast() {
    let _watchdog = watchdog(
        "peer_that_never_reads_is_dropped_and_healthy_peers_get_every_broadcast",
        WATCHDOG,
    );
    const QUEUE: usize = 16;
    const MAX_BROADCASTS: usize = 600;
    let a = start_plain_node(|c| {
        c.queue_len = QUEUE;
        c.heartbeat_interval = Duration::from_millis(100);
        c.peer_timeout = Duration::from_secs(10);
        c.auto_dial = false;
    });
    let healthy: Vec<TestNode> = (0..3)
        .map(|_| start_plain_node(|c| c.auto_dial = false))
        .collect();
    for h in &healthy {
        link(h, &a);
    }
    let (stuck, _) = RawPeer::join(a.addr(), &default_network());
    let stuck_id = stuck.id;
    assert!(eventually(DEADLINE, || a.peer_ids().contains(&stuck_id)));

    // The stuck peer writes a PING every 50 ms (a sign of life) and never reads.
    let stop = Arc::new(AtomicBool::new(false));
    let pinger = {
        let stop = Arc::clone(&stop);
        let mut s = stuck.stream.try_clone().expect("clone");
        thread::spawn(move || {
            use std::io::Write;
            let started = Instant::now();
            let ping = P2PMessage::Ping { nonce: 1 }.encode();
            while !stop.load(Ordering::Relaxed) && started.elapsed() < Duration::from_secs(20) {
                if s.write_all(&ping).is_err() {
                    break;
                }
                thread::sleep(Duration::from_millis(50));
            }
        })
    };

    // Each broadcast is delivered by every healthy peer before the next one is sent,
    // so the healthy links never have more than a frame or two queued: only the
    // stuck peer's queue can fill. (An application broadcasting faster than its
    // peers read is another matter: see `app_broadcast_burst_...` below.)
    let text = |i: usize| format!("{i:05} {}", "x".repeat(64 * 1024));
    let mut got: Vec<Vec<u32>> = vec![Vec::new(); healthy.len()];
    let mut broadcast_and_check = |i: usize| {
        a.broadcast_data(&text(i)).expect("broadcast");
        for (h, got) in healthy.iter().zip(got.iter_mut()) {
            got.push(0);
            let ev = h.wait_for(|ev| {
                if let Event::Broadcast { text, .. } = ev {
                    let k: usize = text[..5].parse().expect("index");
                    got[k] += 1;
                    k == i
                } else {
                    false
                }
            });
            assert!(ev.is_some(), "{} never got broadcast {i}", h.addr());
        }
    };
    let mut sent = 0;
    let started = Instant::now();
    while a.info().counters.slow_peers_dropped == 0 && sent < MAX_BROADCASTS {
        broadcast_and_check(sent);
        sent += 1;
    }
    let elapsed = started.elapsed();
    let info = a.info();
    eprintln!("stuck peer dropped after {sent} broadcasts in {elapsed:?}: {info:?}");
    assert_eq!(info.counters.slow_peers_dropped, 1, "{info:?}");
    assert!(!a.peer_ids().contains(&stuck_id));
    let down = a
        .wait_for(|ev| is_peer_down(ev, stuck_id))
        .expect("PeerDown for the stuck peer");
    assert!(down_reason(&down).contains("queue full"), "{down:?}");

    // More after the drop; then check every healthy peer got each one exactly once.
    for _ in 0..10 {
        broadcast_and_check(sent);
        sent += 1;
    }
    for (h, got) in healthy.iter().zip(&got) {
        for ev in h.events_within(QUIET) {
            assert!(
                !matches!(ev, Event::Broadcast { .. }),
                "{} got an extra copy: {ev:?}",
                h.addr()
            );
        }
        assert_eq!(got.len(), sent);
        assert!(got.iter().all(|&n| n == 1), "{} got {got:?}", h.addr());
        assert!(h.is_linked_to(&a), "a healthy peer lost its link");
    }
    assert_eq!(
        a.info().counters.slow_peers_dropped,
        1,
        "a healthy peer was dropped"
    );

    // The stuck socket is closed: draining it ends in EOF or a reset.
    stop.store(true, Ordering::Relaxed);
    let mut stuck = stuck;
    assert!(
        stuck.closed_within(DEADLINE),
        "the stuck socket stayed open"
    );
    pinger.join().expect("pinger");
}

/// An application that calls `broadcast_data` in a tight loop (64 KiB frames, default
/// queue) gets backpressure, and its healthy, reading peers are never dropped as "too
/// slow". Regression test: the node's own frames (PINGs, PONGs, forwarded broadcasts)
/// used to be queued with `try_send` on the same queue the application kept full, and
/// a full queue was taken for a stuck peer, so this dropped healthy peers in most runs
/// (fixed in da8c9c1: a control queue of its own; a full data queue means wait unless
/// the writer is stuck in a write).
///
/// The healthy peers' applications consume their events: since the event byte budget
/// (`max_pending_event_bytes`, 16 MiB), a node whose application takes nothing holds
/// 256 of these broadcasts, then reads one per bounded wait (1 s), and its peer is
/// then rightly too slow. (Before the budget they held all 6,000, 384 MiB each.)
#[test]
fn app_broadcast_burst_does_not_drop_healthy_peers() {
    let _watchdog = watchdog("app_broadcast_burst_does_not_drop_healthy_peers", WATCHDOG);
    let a = start_plain_node(|c| c.auto_dial = false); // default queue_len 1024
    let healthy: Vec<TestNode> = (0..3)
        .map(|_| start_plain_node(|c| c.auto_dial = false))
        .collect();
    for h in &healthy {
        link(h, &a);
    }
    let stop = Arc::new(AtomicBool::new(false));
    let drains: Vec<_> = healthy
        .iter()
        .map(|h| {
            let events = h.events.clone();
            let stop = Arc::clone(&stop);
            thread::spawn(move || {
                let deadline = Instant::now() + Duration::from_secs(120);
                while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
                    let _ = events.recv_timeout(Duration::from_millis(50));
                }
            })
        })
        .collect();
    let text = "x".repeat(64 * 1024);
    for _ in 0..6000 {
        a.broadcast_data(&text).expect("broadcast");
    }
    stop.store(true, Ordering::Relaxed);
    for d in drains {
        d.join().expect("drain");
    }
    let info = a.info();
    assert_eq!(
        info.counters.slow_peers_dropped, 0,
        "healthy peers dropped: {info:?}"
    );
    for h in &healthy {
        assert!(h.is_linked_to(&a));
    }
}

/// An application that consumes its events more slowly than a peer sends slows that
/// peer down instead of losing messages: the reader waits for room in the event queue
/// (so TCP pushes back), and every message arrives, in order, none dropped.
#[test]
fn slow_application_slows_the_sender_and_loses_nothing() {
    let _watchdog = watchdog(
        "slow_application_slows_the_sender_and_loses_nothing",
        WATCHDOG,
    );
    let a = start_plain_node(|c| c.auto_dial = false);
    let b = start_plain_node(|c| {
        c.auto_dial = false;
        c.max_pending_events = 50;
    });
    link(&a, &b);
    let _ = b.pending_events(); // PeerUp
    const N: usize = 2000;
    let sender = {
        let node = Arc::clone(&a.node);
        let to = b.addr();
        thread::spawn(move || {
            for i in 0..N {
                node.send_data_to_peer(to, &format!("m{i}"))?;
            }
            Ok::<(), Error>(())
        })
    };
    // Consume slowly: a pause every 100 messages keeps the queue at its bound.
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut got = Vec::with_capacity(N);
    let mut max_seen = 0;
    while got.len() < N && Instant::now() < deadline {
        max_seen = max_seen.max(b.events.len());
        match b.events.recv_timeout(Duration::from_secs(5)) {
            Ok(Event::Message { text, .. }) => got.push(text),
            Ok(_) => {}
            Err(_) => break,
        }
        if got.len() % 100 == 0 {
            thread::sleep(Duration::from_millis(20));
        }
    }
    sender
        .join()
        .expect("sender thread")
        .expect("every send succeeds");
    assert_eq!(got.len(), N, "delivered {} of {N}", got.len());
    for (i, text) in got.iter().enumerate() {
        assert_eq!(text, &format!("m{i}"), "message {i} out of order");
    }
    assert!(
        max_seen >= 40,
        "the queue never filled (max {max_seen}): nothing was tested"
    );
    assert_eq!(b.info().counters.events_dropped, 0);
    assert!(
        a.is_linked_to(&b) && b.is_linked_to(&a),
        "the link survived"
    );
}

/// An application that stops consuming does not stop the node: a reader waits a
/// bounded time per message, then drops it and counts it, and keeps serving the link,
/// so heartbeats continue and messages flow again once the application reads.
#[test]
fn application_that_stops_reading_loses_counted_messages_but_keeps_its_links() {
    let _watchdog = watchdog(
        "application_that_stops_reading_loses_counted_messages_but_keeps_its_links",
        WATCHDOG,
    );
    let fast = |c: &mut Config| {
        c.auto_dial = false;
        c.heartbeat_interval = Duration::from_millis(100);
        c.peer_timeout = Duration::from_millis(600);
    };
    let a = start_plain_node(fast);
    let b = start_plain_node(|c| {
        fast(c);
        c.max_pending_events = 10;
    });
    link(&a, &b);
    // B's application reads nothing while A sends 40 messages: 10 fit, and each of
    // the rest waits up to 300 ms (half the peer timeout) before it is dropped.
    for i in 0..40 {
        a.send_data_to_peer(b.addr(), &format!("m{i}"))
            .expect("send");
    }
    assert!(
        eventually(Duration::from_secs(30), || b.info().counters.events_dropped
            >= 30),
        "dropped: {}",
        b.info().counters.events_dropped
    );
    assert!(
        a.is_linked_to(&b) && b.is_linked_to(&a),
        "the link survived"
    );
    // The application reads again: new messages arrive.
    let _ = b.pending_events();
    a.send_data_to_peer(b.addr(), "after").expect("send");
    assert!(b.wait_for(|ev| is_message(ev, "after")).is_some());
}

/// Five nodes in a full mesh, each broadcasting 200 messages at once: every node
/// delivers each of the other nodes' 800 messages exactly once.
#[test]
fn broadcast_storm_in_a_mesh_delivers_each_message_exactly_once() {
    let _watchdog = watchdog(
        "broadcast_storm_in_a_mesh_delivers_each_message_exactly_once",
        WATCHDOG,
    );
    const NODES: usize = 5;
    const EACH: usize = 200;
    let nodes: Vec<Arc<TestNode>> = (0..NODES)
        .map(|_| Arc::new(start_plain_node(|c| c.auto_dial = false)))
        .collect();
    for i in 0..NODES {
        for j in i + 1..NODES {
            link(&nodes[i], &nodes[j]);
        }
    }
    let senders: Vec<_> = nodes
        .iter()
        .enumerate()
        .map(|(i, n)| {
            let n = Arc::clone(n);
            thread::spawn(move || {
                for k in 0..EACH {
                    n.broadcast_data(&format!("storm {i} {k}"))
                        .expect("broadcast");
                }
            })
        })
        .collect();
    for s in senders {
        s.join().expect("sender");
    }
    let want = (NODES - 1) * EACH;
    for (i, n) in nodes.iter().enumerate() {
        let mut count: HashMap<(NodeId, String), usize> = HashMap::new();
        let deadline = Instant::now() + DEADLINE;
        while count.len() < want && Instant::now() < deadline {
            let left = deadline.saturating_duration_since(Instant::now());
            if let Ok(Event::Broadcast {
                origin_id, text, ..
            }) = n.events.recv_timeout(left)
            {
                *count.entry((origin_id, text)).or_default() += 1;
            }
        }
        assert_eq!(
            count.len(),
            want,
            "node {i} delivered {} of {want}",
            count.len()
        );
        // Late duplicates would arrive right behind: listen a little longer.
        for ev in n.events_within(QUIET) {
            if let Event::Broadcast {
                origin_id, text, ..
            } = ev
            {
                *count.entry((origin_id, text)).or_default() += 1;
            }
        }
        let dup: Vec<_> = count.iter().filter(|(_, &c)| c != 1).collect();
        assert!(dup.is_empty(), "node {i} delivered duplicates: {dup:?}");
        assert!(
            !count.keys().any(|(o, _)| *o == n.id()),
            "node {i} delivered its own broadcast"
        );
        let info = n.info();
        assert_eq!(info.counters.broadcasts_delivered, want as u64, "{info:?}");
        assert!(
            info.counters.duplicates_dropped > 0,
            "a mesh has redundant paths: {info:?}"
        );
    }
}

/// With a seen-cache of 64 ids, 300 broadcasts never make it hold more than 64, and
/// every one is still delivered (a line has no duplicate paths).
#[test]
fn small_seen_cache_stays_within_its_size() {
    let _watchdog = watchdog("small_seen_cache_stays_within_its_size", WATCHDOG);
    const SIZE: usize = 64;
    let small = |c: &mut Config| {
        c.seen_cache_size = SIZE;
        c.auto_dial = false;
    };
    let a = start_plain_node(small);
    let b = start_plain_node(small);
    link(&b, &a);
    let mut max_seen = 0;
    for k in 0..300 {
        b.broadcast_data(&format!("cache {k}")).expect("broadcast");
        max_seen = max_seen.max(a.info().seen_ids).max(b.info().seen_ids);
    }
    let mut delivered = 0;
    while delivered < 300 {
        match a.wait_for(|ev| matches!(ev, Event::Broadcast { .. })) {
            Some(_) => delivered += 1,
            None => panic!("only {delivered} of 300 delivered"),
        }
        max_seen = max_seen.max(a.info().seen_ids);
    }
    assert!(max_seen <= SIZE, "seen_ids reached {max_seen}");
    assert_eq!(a.info().seen_ids, SIZE);
    assert_eq!(a.info().counters.broadcasts_delivered, 300);
}

/// With a short time-to-live, remembered ids expire: after the TTL the next broadcast
/// finds the old ids gone (the cache is trimmed when an id is added).
#[test]
fn seen_cache_ids_expire_after_the_ttl() {
    let _watchdog = watchdog("seen_cache_ids_expire_after_the_ttl", WATCHDOG);
    let ttl = Duration::from_millis(300);
    let a = start_plain_node(|c| {
        c.seen_cache_ttl = ttl;
        c.auto_dial = false;
    });
    let b = start_plain_node(|c| c.auto_dial = false);
    link(&b, &a);
    for k in 0..50 {
        b.broadcast_data(&format!("ttl {k}")).expect("broadcast");
    }
    assert!(a.wait_for(|ev| is_broadcast_of(ev, "ttl 49")).is_some());
    let full = a.info().seen_ids;
    assert!(full >= 40, "seen_ids {full}"); // some may have expired already
                                            // One broadcast every 100 ms: once the TTL has passed since the burst, the cache
                                            // holds only the last few ticks.
    let deadline = Instant::now() + DEADLINE;
    let mut tick = 0;
    loop {
        tick += 1;
        let t = format!("tick {tick}");
        b.broadcast_data(&t).expect("broadcast");
        assert!(a.wait_for(|ev| is_broadcast_of(ev, &t)).is_some());
        if a.info().seen_ids < 10 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the seen-cache never shrank: {:?}",
            a.info()
        );
        thread::sleep(Duration::from_millis(100)); // pacing between ticks
    }
    assert!(tick >= 2, "expired before the TTL could pass");
}
