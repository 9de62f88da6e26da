//! Hostile input from raw sockets: garbage, wrong protocols, frames at and past every
//! limit, protocol violations after the handshake, and peer lists and broadcasts
//! crafted to mislead. For each one the node does what docs/PROTOCOL.md says (closes
//! the connection, or ignores the frame and keeps the link), counts it in `info()`,
//! and keeps serving its other peers.
//!
//! Every node here runs with long handshake and peer timeouts, so a connection that
//! closes within the test's deadline was closed because of what it sent, not because
//! it went quiet.

mod common;

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use common::*;
use p2p_overlay::p2p_message::{
    Broadcast, Join, DEFAULT_MAX_FRAME, MAX_JOIN_FRAME, MAX_PEERS_PER_MESSAGE, PROTOCOL_VERSION,
};
use p2p_overlay::{Config, Event, NodeId, P2PMessage};

/// Far longer than any wait here: a timeout can never explain a close we observe.
const LONG: Duration = Duration::from_secs(60);

/// The node under attack: no timeout fires during a test, no automatic dials (so the
/// counters only move because of the hostile peer).
fn hostile_target(c: &mut Config) {
    c.handshake_timeout = LONG;
    c.peer_timeout = LONG;
    c.auto_dial = false;
}

/// A node under attack plus a well-behaved node linked to it, which must keep being
/// served whatever the hostile peers do.
struct Fixture {
    a: TestNode,
    good: TestNode,
}

fn fixture(configure: impl FnOnce(&mut Config)) -> Fixture {
    let a = start_plain_node(|c| {
        hostile_target(c);
        configure(c);
    });
    let good = start_plain_node(|c| c.auto_dial = false);
    link(&good, &a);
    Fixture { a, good }
}

static SERIAL: AtomicU64 = AtomicU64::new(0);

impl Fixture {
    /// A raw peer that completed the handshake and that the node lists as a link.
    fn joined(&self) -> RawPeer {
        let (raw, join) = RawPeer::join(self.a.addr(), &default_network());
        assert_eq!(join.node_id, self.a.id());
        assert!(
            eventually(DEADLINE, || self.a.peer_ids().contains(&raw.id)),
            "the node never listed the raw peer"
        );
        raw
    }

    /// The well-behaved peer and the node still exchange direct messages both ways and
    /// the node still delivers the good peer's broadcasts.
    fn assert_still_serving(&self) {
        let n = SERIAL.fetch_add(1, Ordering::Relaxed);
        let (a, good) = (&self.a, &self.good);
        assert!(a.is_linked_to(good) && good.is_linked_to(a), "link lost");
        let up = format!("still serving {n} (good -> A)");
        good.send_data_to_peer(a.addr(), &up).expect("good -> A");
        assert!(
            a.wait_for(|ev| is_message(ev, &up)).is_some(),
            "A stopped delivering the good peer's messages"
        );
        let down = format!("still serving {n} (A -> good)");
        a.send_data_to_peer(good.addr(), &down).expect("A -> good");
        assert!(
            good.wait_for(|ev| is_message(ev, &down)).is_some(),
            "A stopped sending to the good peer"
        );
        let b = format!("still serving {n} (broadcast)");
        assert_eq!(good.broadcast_data(&b).expect("broadcast"), 1);
        assert!(a.wait_for(|ev| is_broadcast_of(ev, &b)).is_some());
    }

    /// A connection that has not joined sends `bytes`: the node must hang up within the
    /// deadline (long before its handshake timeout), count a failed handshake, hold no
    /// socket for it afterwards, and go on serving.
    fn refuses_before_join(&self, bytes: &[u8]) {
        let before = self.a.info();
        let mut raw = RawPeer::connect(self.a.addr());
        let _ = raw.send_bytes(bytes); // the node may hang up before we finish
        assert!(
            raw.closed_within(DEADLINE),
            "the node kept the connection open"
        );
        assert!(
            eventually(DEADLINE, || self.a.info().counters.handshakes_failed
                == before.counters.handshakes_failed + 1),
            "handshakes_failed did not count it: {:?}",
            self.a.info()
        );
        assert!(
            eventually(DEADLINE, || {
                let i = self.a.info();
                i.pending_handshakes == 0 && i.connections == 1
            }),
            "a socket was left behind: {:?}",
            self.a.info()
        );
        assert_eq!(self.a.peers().len(), 1, "{:?}", self.a.peers());
        self.assert_still_serving();
    }

    /// A linked raw peer sends `bytes`: the node must close the link within the
    /// deadline, report it with a reason naming the fault, deliver nothing from it, and
    /// go on serving.
    fn closes_link_on(&self, bytes: &[u8], reason_contains: &str) {
        let mut raw = self.joined();
        let _ = raw.send_bytes(bytes);
        assert!(raw.closed_within(DEADLINE), "the node kept the link open");
        let down = self
            .a
            .wait_for(|ev| is_peer_down(ev, raw.id))
            .expect("no PeerDown for the hostile peer");
        assert!(
            down_reason(&down).contains(reason_contains),
            "closed for another reason than {reason_contains:?}: {down:?}"
        );
        assert!(!self.a.peer_ids().contains(&raw.id));
        let delivered: Vec<Event> = self
            .a
            .history()
            .into_iter()
            .filter(|ev| match ev {
                Event::Message { from_id, .. } => *from_id == raw.id,
                Event::Broadcast { origin_id, .. } => *origin_id == raw.id,
                _ => false,
            })
            .collect();
        assert!(delivered.is_empty(), "delivered: {delivered:?}");
        self.assert_still_serving();
    }
}

fn join_body(version: u16, id: u64, port: u16, network: &str) -> Join {
    Join {
        version,
        node_id: NodeId(id),
        listen_port: port,
        network: network.to_string(),
        advertise: None,
        observed: None,
    }
}

// ---------------------------------------------------------------------------------
// Before the handshake
// ---------------------------------------------------------------------------------

#[test]
fn random_bytes_before_join_close_the_connection() {
    let _watchdog = watchdog("random_bytes_before_join_close_the_connection", WATCHDOG);
    let f = fixture(|_| {});
    // 4 KiB per seed: more than any frame allowed before the handshake (1 KiB), so
    // whatever length the bytes start with, the node has enough to decide.
    for seed in 1..=8u64 {
        let junk = XorShift::new(seed).bytes(4096);
        f.refuses_before_join(&junk);
    }
}

#[test]
fn http_request_closes_the_connection() {
    let _watchdog = watchdog("http_request_closes_the_connection", WATCHDOG);
    let f = fixture(|_| {});
    f.refuses_before_join(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Agent: test\r\n\r\n");
    // A short one too: "GET " alone is a (huge) length prefix.
    f.refuses_before_join(b"GET ");
}

#[test]
fn zero_length_frame_before_join_closes_the_connection() {
    let _watchdog = watchdog(
        "zero_length_frame_before_join_closes_the_connection",
        WATCHDOG,
    );
    let f = fixture(|_| {});
    f.refuses_before_join(&[0, 0, 0, 0]);
}

#[test]
fn length_ffffffff_before_join_closes_the_connection() {
    let _watchdog = watchdog(
        "length_ffffffff_before_join_closes_the_connection",
        WATCHDOG,
    );
    let f = fixture(|_| {});
    f.refuses_before_join(&[0xFF, 0xFF, 0xFF, 0xFF]);
}

#[test]
fn frame_over_the_join_limit_is_refused_but_a_join_at_the_limit_is_accepted() {
    let _watchdog = watchdog(
        "frame_over_the_join_limit_is_refused_but_a_join_at_the_limit_is_accepted",
        WATCHDOG,
    );
    let f = fixture(|_| {});
    // MAX_JOIN_FRAME + 1: refused from the length alone (nothing more is sent).
    f.refuses_before_join(&(MAX_JOIN_FRAME + 1).to_be_bytes());

    // A JOIN padded to exactly MAX_JOIN_FRAME (a JOIN may carry trailing bytes for
    // later versions) is a valid handshake.
    let mut raw = RawPeer::connect(f.a.addr());
    let join = match raw.join_msg(&default_network()) {
        P2PMessage::Join(j) => P2PMessage::Join(j),
        _ => unreachable!(),
    };
    let mut frame = join.encode();
    frame.resize(4 + MAX_JOIN_FRAME as usize, 0xAB);
    frame[..4].copy_from_slice(&MAX_JOIN_FRAME.to_be_bytes());
    raw.send_bytes(&frame).expect("send a 1 KiB JOIN");
    assert!(
        matches!(raw.recv(), Some(P2PMessage::Join(j)) if j.node_id == f.a.id()),
        "no JOIN back"
    );
    assert!(
        eventually(DEADLINE, || f.a.peer_ids().contains(&raw.id)),
        "a JOIN of exactly MAX_JOIN_FRAME bytes was not accepted"
    );
    assert!(raw.ping_pong(7), "the link does not work");
    f.assert_still_serving();
}

#[test]
fn truncated_frame_then_close_before_join_is_a_failed_handshake() {
    let _watchdog = watchdog(
        "truncated_frame_then_close_before_join_is_a_failed_handshake",
        WATCHDOG,
    );
    let f = fixture(|_| {});
    // Half a length prefix, then FIN.
    let mut raw = RawPeer::connect(f.a.addr());
    raw.send_bytes(&[0, 0]).expect("send");
    raw.stream
        .shutdown(std::net::Shutdown::Write)
        .expect("half-close");
    assert!(raw.closed_within(DEADLINE));
    // A JOIN cut in the middle, then FIN.
    let join = raw.join_msg(&default_network()).encode();
    let mut raw2 = RawPeer::connect(f.a.addr());
    raw2.send_bytes(&join[..join.len() / 2]).expect("send");
    raw2.stream
        .shutdown(std::net::Shutdown::Write)
        .expect("half-close");
    assert!(raw2.closed_within(DEADLINE));
    assert!(
        eventually(DEADLINE, || f.a.info().counters.handshakes_failed == 2),
        "{:?}",
        f.a.info()
    );
    assert!(eventually(DEADLINE, || f.a.info().connections == 1));
    f.assert_still_serving();
}

#[test]
fn join_trickled_byte_by_byte_is_cut_at_the_handshake_deadline() {
    let _watchdog = watchdog(
        "join_trickled_byte_by_byte_is_cut_at_the_handshake_deadline",
        WATCHDOG,
    );
    // The deadline covers the whole JOIN, not each read: one byte every 50 ms keeps
    // every read short, and the node still hangs up at its handshake timeout.
    let a = start_plain_node(|c| {
        c.handshake_timeout = Duration::from_millis(500);
        c.auto_dial = false;
    });
    let mut raw = RawPeer::connect(a.addr());
    let mut join = raw.join_msg(&default_network()).encode();
    join.resize(4 + MAX_JOIN_FRAME as usize, 0); // a 1 KiB JOIN: 51 s at this pace
    join[..4].copy_from_slice(&MAX_JOIN_FRAME.to_be_bytes());
    let started = std::time::Instant::now();
    let mut closed = false;
    for b in &join {
        if raw.send_bytes(&[*b]).is_err() {
            closed = true;
            break;
        }
        if started.elapsed() > DEADLINE {
            break;
        }
        std::thread::sleep(Duration::from_millis(50)); // the trickle's pace
    }
    assert!(
        closed || raw.closed_within(DEADLINE),
        "the trickling peer was never cut off"
    );
    assert!(
        started.elapsed() < DEADLINE,
        "cut off only after {:?}",
        started.elapsed()
    );
    assert!(eventually(DEADLINE, || a.info().counters.handshakes_failed == 1));
    assert!(eventually(DEADLINE, || a.info().connections == 0));
    assert!(a.peers().is_empty());
}

#[test]
fn join_with_wrong_network_is_refused() {
    let _watchdog = watchdog("join_with_wrong_network_is_refused", WATCHDOG);
    let f = fixture(|_| {});
    let port = free_port();
    let wrong = join_body(PROTOCOL_VERSION, 1, port, "not-our-overlay");
    f.refuses_before_join(&P2PMessage::Join(wrong).encode());
    // A prefix of the right name is another name too.
    let prefix = &default_network()[..3];
    let wrong = join_body(PROTOCOL_VERSION, 2, port, prefix);
    f.refuses_before_join(&P2PMessage::Join(wrong).encode());
}

#[test]
fn join_with_wrong_version_is_refused() {
    let _watchdog = watchdog("join_with_wrong_version_is_refused", WATCHDOG);
    let f = fixture(|_| {});
    let port = free_port();
    for version in [0, PROTOCOL_VERSION + 1, u16::MAX] {
        let j = join_body(version, 3, port, &default_network());
        f.refuses_before_join(&P2PMessage::Join(j).encode());
    }
}

#[test]
fn join_with_listen_port_0_or_a_too_long_network_name_is_refused() {
    let _watchdog = watchdog(
        "join_with_listen_port_0_or_a_too_long_network_name_is_refused",
        WATCHDOG,
    );
    let f = fixture(|_| {});
    let j = join_body(PROTOCOL_VERSION, 4, 0, &default_network());
    f.refuses_before_join(&P2PMessage::Join(j).encode());
    // Network name length byte 65 (> 64): malformed.
    let mut body = vec![0, 1];
    body.extend_from_slice(&5u64.to_be_bytes());
    body.extend_from_slice(&9000u16.to_be_bytes());
    body.push(65);
    body.extend_from_slice(&[b'x'; 65]);
    body.extend_from_slice(&[0, 0]);
    f.refuses_before_join(&raw_frame(0, &body));
}

#[test]
fn join_claiming_the_nodes_own_id_is_refused() {
    let _watchdog = watchdog("join_claiming_the_nodes_own_id_is_refused", WATCHDOG);
    let f = fixture(|_| {});
    let port = free_port();
    let j = join_body(PROTOCOL_VERSION, f.a.id().0, port, &default_network());
    // Seen from the node this is "I dialled myself", which is not counted as a failed
    // handshake; only check that the connection is closed and nothing is linked.
    let mut raw = RawPeer::connect(f.a.addr());
    let _ = raw.send_bytes(&P2PMessage::Join(j).encode());
    assert!(raw.closed_within(DEADLINE));
    assert!(eventually(DEADLINE, || f.a.info().connections == 1));
    assert_eq!(f.a.peers().len(), 1);
    f.assert_still_serving();
}

#[test]
fn valid_frame_other_than_join_first_is_refused() {
    let _watchdog = watchdog("valid_frame_other_than_join_first_is_refused", WATCHDOG);
    let f = fixture(|_| {});
    f.refuses_before_join(&P2PMessage::Ping { nonce: 1 }.encode());
    f.refuses_before_join(&P2PMessage::Leave.encode());
    // Unknown types are ignored on a link, but not in place of the JOIN.
    f.refuses_before_join(&raw_frame(99, b"future"));
}

// ---------------------------------------------------------------------------------
// After the handshake: malformed frames close the link
// ---------------------------------------------------------------------------------

#[test]
fn random_bytes_after_join_close_the_link() {
    let _watchdog = watchdog("random_bytes_after_join_close_the_link", WATCHDOG);
    let f = fixture(|_| {});
    // Fixed seeds whose first length prefix is far above 1 MiB, so the node decides
    // on the spot (checked here, so a change of generator cannot make the test wait).
    let mut tried = 0;
    for seed in 100..200u64 {
        let junk = XorShift::new(seed).bytes(8192);
        let len = u32::from_be_bytes([junk[0], junk[1], junk[2], junk[3]]);
        if len <= DEFAULT_MAX_FRAME {
            continue;
        }
        f.closes_link_on(&junk, "exceeds the maximum");
        tried += 1;
        if tried == 4 {
            break;
        }
    }
    assert_eq!(tried, 4);
}

#[test]
fn zero_length_frame_after_join_closes_the_link() {
    let _watchdog = watchdog("zero_length_frame_after_join_closes_the_link", WATCHDOG);
    let f = fixture(|_| {});
    f.closes_link_on(&[0, 0, 0, 0], "empty frame");
}

#[test]
fn length_ffffffff_after_join_closes_the_link() {
    let _watchdog = watchdog("length_ffffffff_after_join_closes_the_link", WATCHDOG);
    let f = fixture(|_| {});
    f.closes_link_on(
        &[0xFF; 4],
        "frame length 4294967295 exceeds the maximum 1048576",
    );
}

#[test]
fn frame_of_max_frame_plus_one_after_join_closes_the_link() {
    let _watchdog = watchdog(
        "frame_of_max_frame_plus_one_after_join_closes_the_link",
        WATCHDOG,
    );
    // The default limit: refused from the length prefix alone, before any body.
    let f = fixture(|_| {});
    f.closes_link_on(
        &(DEFAULT_MAX_FRAME + 1).to_be_bytes(),
        "frame length 1048577 exceeds the maximum 1048576",
    );
}

#[test]
fn configured_max_frame_is_enforced_exactly() {
    let _watchdog = watchdog("configured_max_frame_is_enforced_exactly", WATCHDOG);
    const MAX: u32 = 4096;
    let f = fixture(|c| c.max_frame = MAX);
    // A DATA frame of exactly MAX bytes (type + body) is delivered...
    let mut raw = f.joined();
    let text = "x".repeat(MAX as usize - 1);
    raw.send_bytes(&raw_frame(1, text.as_bytes()))
        .expect("send");
    assert!(
        f.a.wait_for(|ev| is_message(ev, &text)).is_some(),
        "a frame of exactly max_frame bytes was not delivered"
    );
    assert!(raw.ping_pong(1), "the link closed");
    // ...one byte more closes the link.
    let text = "y".repeat(MAX as usize);
    f.closes_link_on(
        &raw_frame(1, text.as_bytes()),
        "frame length 4097 exceeds the maximum 4096",
    );
}

#[test]
fn truncated_frame_then_close_after_join_is_reported_as_truncated() {
    let _watchdog = watchdog(
        "truncated_frame_then_close_after_join_is_reported_as_truncated",
        WATCHDOG,
    );
    let f = fixture(|_| {});
    let mut raw = f.joined();
    // A DATA frame announcing 100 bytes, 10 sent, then FIN.
    let mut bytes = 100u32.to_be_bytes().to_vec();
    bytes.push(1);
    bytes.extend_from_slice(b"123456789");
    raw.send_bytes(&bytes).expect("send");
    raw.stream
        .shutdown(std::net::Shutdown::Write)
        .expect("half-close");
    assert!(raw.closed_within(DEADLINE));
    let down =
        f.a.wait_for(|ev| is_peer_down(ev, raw.id))
            .expect("no PeerDown");
    assert!(
        down_reason(&down).contains("truncated"),
        "a cut frame was taken for a clean close: {down:?}"
    );
    assert!(!f.a.history().iter().any(|ev| is_message(ev, "123456789")));
    f.assert_still_serving();
}

#[test]
fn second_join_on_a_live_link_closes_it() {
    let _watchdog = watchdog("second_join_on_a_live_link_closes_it", WATCHDOG);
    let f = fixture(|_| {});
    let again = P2PMessage::Join(join_body(
        PROTOCOL_VERSION,
        77,
        free_port(),
        &default_network(),
    ))
    .encode();
    f.closes_link_on(&again, "second JOIN");
}

#[test]
fn data_with_invalid_utf8_closes_the_link() {
    let _watchdog = watchdog("data_with_invalid_utf8_closes_the_link", WATCHDOG);
    let f = fixture(|_| {});
    f.closes_link_on(&raw_frame(1, &[b'o', b'k', 0xFF, 0xFE]), "UTF-8");
    // A lone UTF-8 lead byte at the end, and an overlong encoding.
    f.closes_link_on(&raw_frame(1, &[b'a', 0xC3]), "UTF-8");
    f.closes_link_on(&raw_frame(1, &[0xC0, 0xAF]), "UTF-8");
}

#[test]
fn broadcast_with_invalid_utf8_closes_the_link_and_is_not_forwarded() {
    let _watchdog = watchdog(
        "broadcast_with_invalid_utf8_closes_the_link_and_is_not_forwarded",
        WATCHDOG,
    );
    let f = fixture(|_| {});
    let mut b = P2PMessage::Broadcast(Broadcast {
        origin: NodeId(0xBAD),
        seq: 1,
        hops: 1,
        origin_addr: "127.0.0.1:9".parse().expect("addr"),
        public_key: [0; 32],
        signature: [0; 64],
        text: "bad".into(),
    })
    .encode();
    let last = b.len() - 1;
    b[last] = 0xFF;
    f.closes_link_on(&b, "UTF-8");
    let forwarded =
        f.good.history().into_iter().any(
            |ev| matches!(ev, Event::Broadcast { origin_id, .. } if origin_id == NodeId(0xBAD)),
        );
    assert!(!forwarded, "a malformed broadcast was forwarded");
}

#[test]
fn malformed_fixed_layouts_close_the_link() {
    let _watchdog = watchdog("malformed_fixed_layouts_close_the_link", WATCHDOG);
    let f = fixture(|_| {});
    // PING with a byte too many and a byte too few.
    f.closes_link_on(&raw_frame(2, &[0; 9]), "trailing bytes");
    f.closes_link_on(&raw_frame(2, &[0; 7]), "truncated");
    // LEAVE with a body.
    f.closes_link_on(&raw_frame(6, &[1]), "trailing bytes");
    // PEERS with an address family tag of 5, and a "none" address where one is needed.
    f.closes_link_on(
        &raw_frame(4, &[0, 1, 5, 127, 0, 0, 1, 0, 80]),
        "address family",
    );
    f.closes_link_on(&raw_frame(4, &[0, 1, 0, 0, 80]), "address family");
    // PEERS announcing 3 entries and carrying 1.
    f.closes_link_on(&raw_frame(4, &[0, 3, 4, 127, 0, 0, 1, 0, 80]), "truncated");
}

// ---------------------------------------------------------------------------------
// After the handshake: frames the protocol says to ignore
// ---------------------------------------------------------------------------------

#[test]
fn unknown_frame_types_are_ignored_and_the_link_stays_up() {
    let _watchdog = watchdog(
        "unknown_frame_types_are_ignored_and_the_link_stays_up",
        WATCHDOG,
    );
    let f = fixture(|_| {});
    let mut raw = f.joined();
    let before = f.a.info().counters.frames_ignored;
    raw.send_bytes(&raw_frame(11, b"")).expect("send");
    raw.send_bytes(&raw_frame(200, b"from a future version"))
        .expect("send");
    // A large unknown frame: its body is skipped, and the stream stays in step.
    raw.send_bytes(&raw_frame(255, &vec![0xEE; 200 * 1024]))
        .expect("send");
    raw.send(&P2PMessage::Data {
        text: "after the unknown frames".into(),
    });
    assert!(
        f.a.wait_for(|ev| is_message(ev, "after the unknown frames"))
            .is_some(),
        "the frame after the unknown ones was lost"
    );
    assert_eq!(
        f.a.info().counters.frames_ignored,
        before + 3,
        "{:?}",
        f.a.info()
    );
    assert!(f.a.peer_ids().contains(&raw.id), "the link was closed");
    assert!(raw.ping_pong(42), "the link does not answer");
    f.assert_still_serving();
}

fn broadcast_from(raw: &RawPeer, seq: u64, hops: u8, text: &str) -> P2PMessage {
    raw.broadcast(seq, hops, text)
}

#[test]
fn broadcasts_with_hop_count_0_or_above_the_limit_are_dropped() {
    let _watchdog = watchdog(
        "broadcasts_with_hop_count_0_or_above_the_limit_are_dropped",
        WATCHDOG,
    );
    // The default limit is 255, the field's maximum; a lower one is configured so
    // that "above the limit" exists.
    let limit = 16;
    let f = fixture(|c| c.hop_limit = limit);
    let mut raw = f.joined();
    let before = f.a.info().counters.frames_ignored;

    raw.send(&broadcast_from(&raw, 1, 0, "zero hops"));
    raw.send(&broadcast_from(&raw, 2, limit + 1, "too many hops"));
    raw.send(&broadcast_from(&raw, 3, u8::MAX, "max hops"));
    // A valid one last: frames on one link are handled in order, so once it is
    // delivered (and forwarded), the ones before it have been dealt with.
    raw.send(&broadcast_from(&raw, 4, 1, "valid"));

    assert!(f.a.wait_for(|ev| is_broadcast_of(ev, "valid")).is_some());
    assert!(
        f.good.wait_for(|ev| is_broadcast_of(ev, "valid")).is_some(),
        "the valid broadcast was not forwarded"
    );
    for node in [&f.a, &f.good] {
        let bad: Vec<Event> = node
            .history()
            .into_iter()
            .filter(|ev| matches!(ev, Event::Broadcast { text, .. } if text != "valid"))
            .collect();
        assert!(bad.is_empty(), "delivered or forwarded: {bad:?}");
    }
    assert_eq!(
        f.a.info().counters.frames_ignored,
        before + 3,
        "{:?}",
        f.a.info()
    );
    assert!(f.a.peer_ids().contains(&raw.id), "the link was closed");
    assert!(raw.ping_pong(5));
    f.assert_still_serving();
}

#[test]
fn broadcast_at_the_hop_limit_is_delivered_but_not_forwarded() {
    let _watchdog = watchdog(
        "broadcast_at_the_hop_limit_is_delivered_but_not_forwarded",
        WATCHDOG,
    );
    let limit = 16;
    let f = fixture(|c| c.hop_limit = limit);
    let mut raw = f.joined();
    raw.send(&broadcast_from(&raw, 1, limit, "last hop"));
    raw.send(&broadcast_from(&raw, 2, limit - 1, "one hop left"));
    raw.send(&broadcast_from(&raw, 3, 1, "barrier"));

    for text in ["last hop", "one hop left", "barrier"] {
        assert!(
            f.a.wait_for(|ev| is_broadcast_of(ev, text)).is_some(),
            "{text:?} not delivered"
        );
    }
    assert!(f
        .good
        .wait_for(|ev| is_broadcast_of(ev, "barrier"))
        .is_some());
    let got: Vec<(String, u8)> = f
        .good
        .history()
        .into_iter()
        .filter_map(|ev| match ev {
            Event::Broadcast { text, hops, .. } => Some((text, hops)),
            _ => None,
        })
        .collect();
    assert!(
        got.contains(&("one hop left".to_string(), limit)),
        "{got:?}"
    );
    assert!(
        !got.iter().any(|(t, _)| t == "last hop"),
        "forwarded past the hop limit: {got:?}"
    );
    assert_eq!(f.a.info().counters.frames_ignored, 0);
    assert!(raw.ping_pong(6));
}

#[test]
fn replayed_and_self_originated_broadcasts_are_dropped_as_duplicates() {
    let _watchdog = watchdog(
        "replayed_and_self_originated_broadcasts_are_dropped_as_duplicates",
        WATCHDOG,
    );
    let f = fixture(|_| {});
    let mut raw = f.joined();
    raw.send(&broadcast_from(&raw, 1, 1, "once"));
    raw.send(&broadcast_from(&raw, 1, 2, "once")); // same id again
    raw.send(&P2PMessage::Broadcast(Broadcast {
        origin: f.a.id(), // claims to come from the node itself
        seq: 1,
        hops: 3,
        origin_addr: f.a.addr(),
        public_key: [0; 32],
        signature: [0; 64],
        text: "spoofed".into(),
    }));
    raw.send(&broadcast_from(&raw, 2, 1, "barrier"));
    assert!(f.a.wait_for(|ev| is_broadcast_of(ev, "barrier")).is_some());
    let texts: Vec<String> =
        f.a.history()
            .into_iter()
            .filter_map(|ev| match ev {
                Event::Broadcast { text, .. } => Some(text),
                _ => None,
            })
            .collect();
    assert_eq!(texts, ["once", "barrier"]);
    assert_eq!(
        f.a.info().counters.duplicates_dropped,
        2,
        "{:?}",
        f.a.info()
    );
    assert!(raw.ping_pong(8));
}

// ---------------------------------------------------------------------------------
// Peer lists
// ---------------------------------------------------------------------------------

#[test]
fn peer_list_over_1000_entries_closes_the_link_and_teaches_nothing() {
    let _watchdog = watchdog(
        "peer_list_over_1000_entries_closes_the_link_and_teaches_nothing",
        WATCHDOG,
    );
    let f = fixture(|_| {});
    // Loopback addresses only, on ports nobody uses (the node must not dial them
    // anyway: auto-dial is off and the list is refused whole).
    let addrs: Vec<SocketAddr> = (0..=MAX_PEERS_PER_MESSAGE as u16)
        .map(|i| SocketAddr::new(IpAddr::from([127, 0, 0, 2]), 20_000 + i))
        .collect();
    assert_eq!(addrs.len(), 1001);
    let known_before = f.a.known_addrs().len();
    f.closes_link_on(
        &P2PMessage::peers(addrs).encode(),
        "peer list of 1001 entries exceeds the maximum 1000",
    );
    assert!(
        f.a.known_addrs().len() <= known_before + 1,
        "learned from a refused list: {}",
        f.a.known_addrs().len()
    );
    assert!(!f
        .a
        .known_addrs()
        .iter()
        .any(|k| k.addr.ip() == IpAddr::from([127, 0, 0, 2])));
}

#[test]
fn peer_list_of_exactly_1000_entries_is_accepted_and_the_book_stays_capped() {
    let _watchdog = watchdog(
        "peer_list_of_exactly_1000_entries_is_accepted_and_the_book_stays_capped",
        WATCHDOG,
    );
    let f = fixture(|_| {});
    let mut raw = f.joined();
    let addrs: Vec<SocketAddr> = (0..MAX_PEERS_PER_MESSAGE as u16)
        .map(|i| SocketAddr::new(IpAddr::from([127, 0, 0, 3]), 20_000 + i))
        .collect();
    raw.send(&P2PMessage::peers(addrs));
    assert!(raw.ping_pong(9), "a 1000-entry list closed the link");
    // One source adds at most NEW_PER_SOURCE (64) never-tried addresses.
    let known = f.a.known_addrs().len();
    assert!(known < 100, "one source filled the book: {known}");
    assert!(f.a.info().counters.addrs_ignored >= 900);
    // Full lists from 20 sources (each its own /24) fill the book to its cap, never
    // past it.
    let cap = Config::default().max_known_addrs;
    let mut sources = Vec::new();
    for x in 0..20u8 {
        let src = IpAddr::from([127, 0, 30 + x, 1]);
        let mut p = RawPeer::connect_from(src, f.a.addr());
        p.send(&p.join_msg(&default_network()));
        assert!(matches!(p.recv(), Some(P2PMessage::Join(_))));
        let more: Vec<SocketAddr> = (0..MAX_PEERS_PER_MESSAGE as u16)
            .map(|i| SocketAddr::new(IpAddr::from([127, 0, 60 + x, 4]), 20_000 + i))
            .collect();
        p.send(&P2PMessage::peers(more));
        assert!(
            p.ping_pong(10 + u64::from(x)),
            "a 1000-entry list closed the link"
        );
        assert!(f.a.known_addrs().len() <= cap);
        sources.push(p);
    }
    assert_eq!(f.a.known_addrs().len(), cap);
    assert_eq!(
        f.a.info().counters.dial_failures,
        0,
        "auto-dial is off: nothing dialled"
    );
    f.assert_still_serving();
}

#[test]
fn absurd_peer_entries_are_never_learned_or_dialled() {
    let _watchdog = watchdog("absurd_peer_entries_are_never_learned_or_dialled", WATCHDOG);
    // This node dials what it learns, so the test also shows none of these is dialled.
    let f = fixture(|c| c.auto_dial = true);
    // The control: a real node, which the node must learn and link.
    let control = start_plain_node(|c| c.auto_dial = false);
    let mut raw = f.joined();
    let own = f.a.addr();
    let absurd: Vec<SocketAddr> = [
        "127.0.0.1:0",          // port 0
        "0.0.0.0:9000",         // unspecified
        "[::]:9000",            // unspecified v6
        "224.0.0.1:9000",       // multicast
        "[ff02::1]:9000",       // multicast v6
        "255.255.255.255:9000", // broadcast
    ]
    .iter()
    .map(|s| s.parse().expect("addr"))
    .chain([own, f.a.advertised_addr()])
    .collect();
    let mut list = absurd.clone();
    list.push(control.addr());
    raw.send(&P2PMessage::peers(list));

    assert!(
        eventually(DEADLINE, || f.a.is_linked_to(&control)),
        "the valid entry was not dialled: the list was not processed"
    );
    assert!(raw.ping_pong(11), "the list closed the link");
    let known: Vec<SocketAddr> = f.a.known_addrs().iter().map(|k| k.addr).collect();
    for a in &absurd {
        assert!(
            !known.contains(a),
            "{a} entered the address book: {known:?}"
        );
    }
    let info = f.a.info();
    assert_eq!(
        info.counters.dial_failures, 0,
        "something was dialled and failed: {info:?}"
    );
    assert!(!f.a.peer_ids().contains(&f.a.id()), "linked to itself");
    assert_eq!(f.a.peers().len(), 3, "{:?}", f.a.peers()); // good, raw, control
    f.assert_still_serving();
}
