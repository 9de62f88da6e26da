//! Per-link rate limits and replay protection (docs/PROTOCOL.md 3.5 "Limits" and
//! "Replay window"), over real sockets:
//!
//! - a raw peer flooding distinct broadcasts gets at most its burst plus its rate
//!   through (the node is no amplifier), and is closed (`RateLimited`) if it keeps on;
//! - a raw peer flooding DATA gets the same treatment from the DATA bucket;
//! - replayed broadcasts stay duplicates after the seen cache has forgotten them;
//! - normal traffic under the default limits loses nothing: a 2,000-broadcast burst
//!   through a small overlay, and 100,000 direct messages over one link.
//!
//! No assertion on wall time: counts are compared with the limit over the elapsed
//! time the test measured, with generous slack, and every wait has a deadline.

mod common;

use std::collections::HashSet;
use std::io::Read;
use std::net::TcpStream;
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use common::*;
use p2p_overlay::{DownReason, Event, Identity, P2PMessage};

/// Reads and throws away whatever the node sends a raw peer (so its queue towards us
/// never fills), until the connection closes.
fn drain(stream: &TcpStream) -> thread::JoinHandle<()> {
    let mut s = stream.try_clone().expect("clone");
    s.set_read_timeout(None).expect("timeout");
    thread::spawn(move || {
        let mut buf = [0u8; 16 * 1024];
        while matches!(s.read(&mut buf), Ok(n) if n > 0) {}
    })
}

/// A BROADCAST frame from `origin`, signed with its key (the node verifies every new
/// one), relayed by `peer`.
fn broadcast_frame(origin: &Identity, seq: u64, peer: &RawPeer, text: &str) -> Vec<u8> {
    P2PMessage::Broadcast(signed_broadcast(origin, seq, 1, peer.listen_addr(), text)).encode()
}

/// A raw peer joined to `node`, with a thread draining what the node sends it, once
/// the node lists it as a link.
fn raw_link(node: &TestNode) -> (RawPeer, thread::JoinHandle<()>) {
    let (peer, _) = RawPeer::join(node.addr(), &default_network());
    let drainer = drain(&peer.stream);
    assert!(
        eventually(DEADLINE, || node.peer_ids().contains(&peer.id)),
        "the node never listed the raw peer"
    );
    (peer, drainer)
}

/// How many frames a bucket of `burst` refilled at `rate`/s may let through in
/// `elapsed`, plus slack: half a second more at the rate, and 10 frames.
fn allowance(rate: u64, burst: u64, elapsed: Duration) -> u64 {
    burst + (rate as f64 * (elapsed.as_secs_f64() + 0.5)) as u64 + 10
}

const RATE: u64 = 500;
const BURST: u64 = 1_000;

/// A raw peer links to A (linked to an honest B) and sends 50,000 distinct broadcasts
/// as fast as it can. A delivers and forwards at most burst + rate × elapsed of them,
/// counts the rest as rate-limited, and B gets no more than A forwarded. Then the peer
/// keeps going, and A closes it with `RateLimited`.
#[test]
fn a_broadcast_flood_is_limited_per_link_and_the_flooder_is_closed() {
    let _watchdog = watchdog(
        "a_broadcast_flood_is_limited_per_link_and_the_flooder_is_closed",
        WATCHDOG,
    );
    const SENT: u64 = 50_000;
    let a = start_plain_node(|c| {
        c.auto_dial = false;
        c.broadcast_rate = RATE;
        c.broadcast_burst = BURST;
        c.rate_limit_grace = Duration::from_secs(2);
    });
    let b = start_plain_node(|c| c.auto_dial = false);
    link(&b, &a);
    // Signed before the raw peer links: 50,000 signatures take seconds in a debug
    // build, and a link silent that long would time out before the flood.
    let origin = Identity::generate();
    let origin_addr = "127.0.0.1:9".parse().expect("addr");
    let mut flood = Vec::new();
    for seq in 1..=SENT {
        let b = signed_broadcast(&origin, seq, 1, origin_addr, &format!("flood {seq}"));
        flood.extend(P2PMessage::Broadcast(b).encode());
    }
    let (mut peer, drainer) = raw_link(&a);
    let t0 = Instant::now();
    // An error here means A closed us before the last bytes went out.
    let _ = peer.send_bytes(&flood);
    // A has handled every frame (delivered, or dropped by the limit), or closed us.
    let handled = |c: p2p_overlay::Counters| c.broadcasts_delivered + c.broadcasts_rate_limited;
    let done = eventually(DEADLINE, || {
        handled(a.info().counters) >= SENT || !a.peer_ids().contains(&peer.id)
    });
    let elapsed = t0.elapsed();
    assert!(done, "A never got through the flood: {:?}", a.info());
    let c = a.info().counters;
    let allowed = allowance(RATE, BURST, elapsed);
    assert!(
        c.broadcasts_delivered <= allowed,
        "A delivered {} of {SENT} in {elapsed:?}, allowance {allowed}: {c:?}",
        c.broadcasts_delivered
    );
    assert!(
        c.frames_forwarded <= allowed,
        "A forwarded {} in {elapsed:?}, allowance {allowed}",
        c.frames_forwarded
    );
    assert!(c.broadcasts_delivered >= BURST, "the burst passes: {c:?}");
    assert!(c.broadcasts_rate_limited > 0, "{c:?}");
    // B gets what A forwarded, and no more.
    let forwarded = c.frames_forwarded;
    assert!(eventually(DEADLINE, || {
        b.info().counters.broadcasts_delivered >= forwarded
    }));
    assert!(b.info().counters.broadcasts_delivered <= allowed);

    // Keep flooding with new broadcasts until A hangs up.
    let mut seq = SENT;
    let deadline = Instant::now() + DEADLINE;
    while Instant::now() < deadline && a.peer_ids().contains(&peer.id) {
        let mut more = Vec::new();
        for _ in 0..1_000 {
            seq += 1;
            more.extend(broadcast_frame(&origin, seq, &peer, "more"));
        }
        if peer.send_bytes(&more).is_err() {
            break;
        }
    }
    let down = a
        .wait_for(|ev| is_peer_down(ev, peer.id))
        .expect("A closed the flooder");
    assert!(
        matches!(
            down,
            Event::PeerDown {
                reason: DownReason::RateLimited,
                ..
            }
        ),
        "{down:?}"
    );
    assert_eq!(down_reason(&down), "too many messages (rate limit)");
    assert!(a.info().counters.links_rate_limited >= 1);
    let _ = peer.stream.shutdown(std::net::Shutdown::Both);
    drainer.join().expect("drainer");
    // B, the honest neighbour, is still linked.
    assert!(a.is_linked_to(&b) && b.is_linked_to(&a));
}

/// A raw peer sends 20,000 DATA frames as fast as it can to a node with a small DATA
/// limit: the application gets at most burst + rate × elapsed of them and the rest
/// are counted.
#[test]
fn a_data_flood_is_limited_per_link() {
    let _watchdog = watchdog("a_data_flood_is_limited_per_link", WATCHDOG);
    const SENT: u64 = 20_000;
    let a = start_plain_node(|c| {
        c.auto_dial = false;
        c.data_rate = RATE;
        c.data_burst = BURST;
    });
    let (mut peer, _drainer) = raw_link(&a);
    let mut flood = Vec::new();
    for i in 0..SENT {
        flood.extend(
            P2PMessage::Data {
                text: format!("data {i}"),
            }
            .encode(),
        );
    }
    let t0 = Instant::now();
    peer.send_bytes(&flood).expect("flood sent");
    let mut delivered = 0u64;
    let done = eventually(DEADLINE, || {
        delivered += a
            .pending_events()
            .iter()
            .filter(|ev| matches!(ev, Event::Message { .. }))
            .count() as u64;
        delivered + a.info().counters.data_rate_limited >= SENT
    });
    let elapsed = t0.elapsed();
    assert!(done, "A never got through the flood: {:?}", a.info());
    let allowed = allowance(RATE, BURST, elapsed);
    assert!(
        delivered <= allowed,
        "{delivered} of {SENT} delivered in {elapsed:?}, allowance {allowed}"
    );
    assert!(delivered >= BURST, "the burst passes: {delivered}");
    assert_eq!(a.info().counters.data_rate_limited, SENT - delivered);
}

/// An origin's broadcasts 1..=50 are delivered; 200 broadcasts of other origins then
/// overflow a 16-id seen cache; a second raw peer replays the 50. None is delivered
/// again, and the replay window counts them.
#[test]
fn replayed_broadcasts_stay_duplicates_after_the_seen_cache_forgot_them() {
    let _watchdog = watchdog(
        "replayed_broadcasts_stay_duplicates_after_the_seen_cache_forgot_them",
        WATCHDOG,
    );
    const N: u64 = 50;
    let a = start_plain_node(|c| {
        c.auto_dial = false;
        c.seen_cache_size = 16;
    });
    let (mut first, _d1) = raw_link(&a);
    let origin = Identity::generate();
    let originals: Vec<u8> = (1..=N)
        .flat_map(|seq| broadcast_frame(&origin, seq, &first, &format!("original {seq}")))
        .collect();
    first.send_bytes(&originals).expect("sent");
    let mut got = 0;
    while got < N {
        a.wait_for(
            |ev| matches!(ev, Event::Broadcast { origin_id, .. } if *origin_id == origin.node_id()),
        )
        .unwrap_or_else(|| panic!("only {got} of {N} originals delivered"));
        got += 1;
    }
    // Other origins' broadcasts push every original out of the seen cache.
    let others: Vec<u8> = (0..200u64)
        .flat_map(|k| broadcast_frame(&Identity::generate(), 1, &first, &format!("other {k}")))
        .collect();
    first.send_bytes(&others).expect("sent");
    assert!(a.wait_for(|ev| is_broadcast_of(ev, "other 199")).is_some());
    assert!(a.info().seen_ids <= 16, "{:?}", a.info());

    // Replayed by another peer, then a marker: once the marker is delivered, every
    // replay before it on that connection has been handled.
    let (mut second, _d2) = raw_link(&a);
    let mut replay: Vec<u8> = (1..=N)
        .flat_map(|seq| broadcast_frame(&origin, seq, &second, &format!("original {seq}")))
        .collect();
    replay.extend(broadcast_frame(&Identity::generate(), 1, &second, "marker"));
    let before = a.info().counters;
    second.send_bytes(&replay).expect("sent");
    let mut replayed = 0;
    a.wait_for(|ev| {
        if matches!(ev, Event::Broadcast { origin_id, .. } if *origin_id == origin.node_id()) {
            replayed += 1;
        }
        is_broadcast_of(ev, "marker")
    })
    .expect("marker delivered");
    assert_eq!(replayed, 0, "replays delivered again");
    let after = a.info().counters;
    assert_eq!(after.broadcasts_delivered - before.broadcasts_delivered, 1);
    assert_eq!(after.replays_dropped - before.replays_dropped, N);
    assert_eq!(a.info().replay_origins, 202);
}

/// Default limits: 2,000 broadcasts of 1 KiB back to back from one origin through a
/// ring of four nodes all arrive, none rate-limited.
#[test]
fn a_broadcast_burst_is_not_limited_by_default() {
    let _watchdog = watchdog("a_broadcast_burst_is_not_limited_by_default", WATCHDOG);
    const COUNT: usize = 2_000;
    let nodes = start_plain_nodes(4, |c| c.auto_dial = false);
    for i in 0..nodes.len() {
        link(&nodes[i], &nodes[(i + 1) % nodes.len()]);
    }
    let pad = "x".repeat(1024);
    let origin = Arc::clone(&nodes[0].node);
    let sender = thread::spawn(move || {
        for k in 0..COUNT {
            origin
                .broadcast_data(&format!("{k} {pad}"))
                .expect("broadcast");
        }
    });
    for n in &nodes[1..] {
        let mut got = HashSet::new();
        while got.len() < COUNT {
            match n.wait_for(|ev| matches!(ev, Event::Broadcast { .. })) {
                Some(Event::Broadcast { text, .. }) => {
                    assert!(got.insert(text), "delivered twice");
                }
                _ => panic!("{}: {} of {COUNT} delivered", n.addr(), got.len()),
            }
        }
    }
    sender.join().expect("sender");
    for n in &nodes {
        let c = n.info().counters;
        assert_eq!(c.broadcasts_rate_limited, 0, "{c:?}");
        assert_eq!(c.links_rate_limited, 0, "{c:?}");
    }
}

/// Default limits: 100,000 direct messages sent as fast as possible over one link all
/// arrive, in order, none rate-limited.
#[test]
fn direct_messages_over_one_link_are_not_limited_by_default() {
    let _watchdog = watchdog(
        "direct_messages_over_one_link_are_not_limited_by_default",
        WATCHDOG,
    );
    const COUNT: u64 = 100_000;
    let a = start_plain_node(|c| c.auto_dial = false);
    let b = start_plain_node(|c| c.auto_dial = false);
    link(&a, &b);
    let sender = Arc::clone(&a.node);
    let to = b.addr();
    let sending = thread::spawn(move || {
        for i in 0..COUNT {
            sender.send_data_to_peer(to, &i.to_string()).expect("send");
        }
    });
    let mut next = 0u64;
    while next < COUNT {
        match b.wait_for(|ev| matches!(ev, Event::Message { .. })) {
            Some(Event::Message { text, .. }) => {
                assert_eq!(text, next.to_string(), "lost or reordered");
                next += 1;
            }
            _ => panic!("{next} of {COUNT} delivered: {:?}", b.info()),
        }
    }
    sending.join().expect("sender");
    assert_eq!(b.info().counters.data_rate_limited, 0);
}
