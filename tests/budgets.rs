//! Byte budgets (issue 10, item 1): what one peer, or an application that stalls, can
//! make the node hold. The frame-count bounds alone let one peer that never reads pin
//! 1,024 relayed frames of up to 1 MiB, and a stalled application 16,384 events of
//! up to 1 MiB. Each test here drives the node over real sockets with a small budget
//! and checks the node's counters, its events and what the peer sees, never the wall
//! clock.

mod common;

use std::io::Write;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use common::*;
use p2p_overlay::{Config, DownReason, Event, P2PMessage};

const KIB: usize = 1024;
const MIB: usize = 1024 * 1024;

/// A peer that links and never reads, while a library origin's large broadcasts are
/// relayed through the node under test: its data queue fills by bytes long before
/// its 1,024 frames, so it is dropped as `QueueFull` and counted as a byte-budget
/// drop, and an honest peer on the same node gets every broadcast exactly once.
///
/// On the code before the budget (frames only) the non-reader was not dropped within
/// 400 broadcasts of 128 KiB (50 MiB relayed to it): its queue may hold 1,024 of
/// them, 128 MiB.
#[test]
fn non_reader_is_dropped_at_its_byte_budget_and_an_honest_peer_gets_everything() {
    let _watchdog = watchdog(
        "non_reader_is_dropped_at_its_byte_budget_and_an_honest_peer_gets_everything",
        WATCHDOG,
    );
    const MAX_BROADCASTS: usize = 400;
    const TEXT: usize = 128 * KIB;
    let node = start_plain_node(|c| {
        c.auto_dial = false;
        c.max_frame = (256 * KIB) as u32;
        c.queue_bytes = 256 * KIB;
        // Long enough that neither the stall rule nor the send timeout can act
        // within the test: only the byte budget can drop the non-reader.
        c.peer_timeout = Duration::from_secs(30);
    });
    let origin = start_plain_node(|c| c.auto_dial = false);
    let honest = start_plain_node(|c| c.auto_dial = false);
    link(&origin, &node);
    link(&honest, &node);
    let (raw, _) = RawPeer::join(node.addr(), &default_network());
    let raw_id = raw.id;
    assert!(eventually(DEADLINE, || node.peer_ids().contains(&raw_id)));

    let text = |i: usize| format!("{i:05} {}", "b".repeat(TEXT));
    let mut got = vec![0u32; MAX_BROADCASTS + 10];
    let mut broadcast_and_check = |i: usize| {
        origin.broadcast_data(&text(i)).expect("broadcast");
        let ev = honest.wait_for(|ev| match ev {
            Event::Broadcast { text, .. } => {
                let k: usize = text[..5].parse().expect("index");
                got[k] += 1;
                k == i
            }
            _ => false,
        });
        assert!(ev.is_some(), "the honest peer never got broadcast {i}");
        // The node's own application keeps up, so its event budget plays no part.
        let _ = node.pending_events();
    };
    let mut sent = 0;
    while node.info().counters.slow_peers_dropped == 0 && sent < MAX_BROADCASTS {
        broadcast_and_check(sent);
        sent += 1;
    }
    let info = node.info();
    eprintln!(
        "non-reader dropped after {sent} broadcasts ({} KiB relayed): {:?}",
        sent * TEXT / KIB,
        info.counters
    );
    assert_eq!(
        info.counters.slow_peers_dropped,
        1,
        "the non-reader was not dropped after {sent} broadcasts ({} MiB relayed to it)",
        sent * TEXT / MIB
    );
    assert_eq!(info.counters.queue_budget_drops, 1, "{:?}", info.counters);
    assert!(!node.peer_ids().contains(&raw_id));
    // The loop above kept the node's events drained: look there first.
    let down = node
        .history()
        .into_iter()
        .find(|ev| is_peer_down(ev, raw_id))
        .or_else(|| node.wait_for(|ev| is_peer_down(ev, raw_id)))
        .expect("PeerDown for the non-reader");
    assert!(
        matches!(
            down,
            Event::PeerDown {
                reason: DownReason::QueueFull,
                ..
            }
        ),
        "{down:?}"
    );

    // More after the drop; the honest peer got each broadcast exactly once.
    for _ in 0..10 {
        broadcast_and_check(sent);
        sent += 1;
    }
    for ev in honest.events_within(QUIET) {
        assert!(!matches!(ev, Event::Broadcast { .. }), "extra copy: {ev:?}");
    }
    assert!(got[..sent].iter().all(|&n| n == 1), "{:?}", &got[..sent]);
    assert!(honest.is_linked_to(&node) && origin.is_linked_to(&node));
    assert_eq!(node.info().counters.slow_peers_dropped, 1);
    let mut raw = raw;
    assert!(
        raw.closed_within(DEADLINE),
        "the non-reader's socket stayed open"
    );
}

/// A peer that stops reading after the node queued it less than its budget: nothing
/// more is queued, so no queue fills, and the writer's send times out (twice the peer
/// timeout). The node drops it with the true reason, `NotReading`, and counts it;
/// an honest peer of the same node is not affected.
///
/// On the code before, the reader woken by the writer's shutdown reported
/// `connection closed by peer`, though the peer never closed anything.
#[test]
fn peer_that_stops_reading_is_reported_as_not_reading() {
    let _watchdog = watchdog(
        "peer_that_stops_reading_is_reported_as_not_reading",
        WATCHDOG,
    );
    // Far more than the kernel's socket buffers hold (4 MiB send buffer at most,
    // the peer's receive buffer untouched by reads), far less than the budget.
    const FRAMES: usize = 16;
    let node = start_plain_node(|c| {
        c.auto_dial = false;
        c.heartbeat_interval = Duration::from_millis(100);
        c.peer_timeout = Duration::from_millis(500);
        c.queue_bytes = 64 * MIB;
    });
    let honest = start_plain_node(|c| c.auto_dial = false);
    link(&honest, &node);
    let (raw, _) = RawPeer::join(node.addr(), &default_network());
    let raw_id = raw.id;
    assert!(eventually(DEADLINE, || node.peer_ids().contains(&raw_id)));

    // The peer shows signs of life (a PING every 50 ms) and never reads.
    let stop = Arc::new(AtomicBool::new(false));
    let pinger = {
        let stop = Arc::clone(&stop);
        let mut s = raw.stream.try_clone().expect("clone");
        thread::spawn(move || {
            let ping = P2PMessage::Ping { nonce: 7 }.encode();
            let deadline = Instant::now() + DEADLINE;
            while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
                if s.write_all(&ping).is_err() {
                    break;
                }
                thread::sleep(Duration::from_millis(50)); // pacing of the pings
            }
        })
    };
    let text = "n".repeat(1_000_000);
    for i in 0..FRAMES {
        if let Err(e) = node.send_data_to_peer(raw.listen_addr(), &text) {
            panic!("send {i} failed, the queue cannot be full yet: {e}");
        }
    }
    let down = node
        .wait_for(|ev| is_peer_down(ev, raw_id))
        .expect("PeerDown for the peer that stopped reading");
    assert!(
        matches!(
            down,
            Event::PeerDown {
                reason: DownReason::NotReading,
                ..
            }
        ),
        "{down:?} ({})",
        down_reason(&down)
    );
    assert_eq!(down_reason(&down), "peer stopped reading (send timed out)");
    let counters = node.info().counters;
    assert_eq!(counters.not_reading_drops, 1, "{counters:?}");
    assert_eq!(counters.slow_peers_dropped, 0, "{counters:?}");
    stop.store(true, Ordering::Relaxed);
    pinger.join().expect("pinger");

    assert!(honest.is_linked_to(&node) && node.is_linked_to(&honest));
    node.send_data_to_peer(honest.addr(), "still here")
        .expect("send to the honest peer");
    assert!(honest.wait_for(|ev| is_message(ev, "still here")).is_some());
}

/// An application that stalls while a raw peer sends 48 DATA frames of 1 MB: the
/// node's reader stops at the event byte budget (2 MiB: two messages), so TCP closes
/// the window on the sender; each message past the budget is dropped and counted
/// only after the bounded wait, and the queue never holds more than the budget. Once
/// the application reads again, everything the peer still sends flows.
///
/// On the code before (events bounded by count only, 16,384) the reader never waited:
/// all 48 MB were queued for the application.
#[test]
fn stalled_application_stops_the_reader_at_the_event_byte_budget() {
    let _watchdog = watchdog(
        "stalled_application_stops_the_reader_at_the_event_byte_budget",
        WATCHDOG,
    );
    // More than the kernel can buffer between the two sockets (the sender's 4 MiB
    // send buffer and the node's receive buffer, at most 32 MiB here), so the sender
    // must block while the node does not read.
    const FRAMES: usize = 48;
    const TEXT: usize = 1_000_000;
    let node = start_plain_node(|c| {
        c.auto_dial = false;
        c.max_pending_event_bytes = 2 * MIB;
        // The bounded wait is then its longest, 1 s, and heartbeats cannot interfere.
        c.peer_timeout = Duration::from_secs(4);
    });
    let (raw, _) = RawPeer::join(node.addr(), &default_network());
    let raw_id = raw.id;
    assert!(node.wait_for(|ev| is_peer_up(ev, raw_id)).is_some());

    let written = Arc::new(AtomicU64::new(0));
    let sender = {
        let written = Arc::clone(&written);
        let mut s = raw.stream.try_clone().expect("clone");
        thread::spawn(move || {
            for i in 0..FRAMES {
                let text = format!("{i:05} {}", "s".repeat(TEXT - 6));
                let frame = P2PMessage::Data { text }.encode();
                for piece in frame.chunks(64 * KIB) {
                    s.write_all(piece)?;
                    written.fetch_add(piece.len() as u64, Ordering::Relaxed);
                }
            }
            Ok::<(), std::io::Error>(())
        })
    };

    // The reader reaches the budget and waits.
    assert!(
        eventually(DEADLINE, || node.info().counters.event_budget_waits >= 1),
        "the reader never waited for the application: {} events queued, {:?}",
        node.events.len(),
        node.info().counters
    );
    // Dropped only after the bounded wait: the first drop comes, and meanwhile the
    // queue holds what fits the budget and nothing more.
    assert!(
        eventually(DEADLINE, || {
            let c = node.info().counters;
            assert!(c.events_dropped <= c.event_budget_waits, "{c:?}");
            assert!(
                node.events.len() <= 2,
                "{} events queued",
                node.events.len()
            );
            c.events_dropped >= 1
        }),
        "no message was dropped after the bounded wait: {:?}",
        node.info().counters
    );
    assert_eq!(node.events.len(), 2, "two 1 MB messages fit 2 MiB");
    // The node stopped reading, so the sender is blocked with most of its data.
    assert!(
        !sender.is_finished(),
        "the sender wrote all {FRAMES} MB ({} bytes): nothing pushed back",
        written.load(Ordering::Relaxed)
    );
    eprintln!(
        "sender blocked after {} of {} bytes: {:?}",
        written.load(Ordering::Relaxed),
        FRAMES * (TEXT + 5),
        node.info().counters
    );

    // The application reads again: the rest flows, each message delivered or (for
    // those dropped while it stalled) counted.
    let mut delivered = 0u64;
    let deadline = Instant::now() + DEADLINE;
    loop {
        let dropped = node.info().counters.events_dropped;
        if sender.is_finished() && delivered + dropped == FRAMES as u64 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{delivered} delivered + {dropped} dropped of {FRAMES}"
        );
        if let Ok(Event::Message { text, .. }) = node.events.recv_timeout(Duration::from_millis(50))
        {
            assert_eq!(text.len(), TEXT);
            delivered += 1;
        }
    }
    sender
        .join()
        .expect("sender")
        .expect("every write succeeds");
    let dropped = node.info().counters.events_dropped;
    assert!(
        delivered >= 2 && dropped >= 1,
        "{delivered} delivered, {dropped} dropped"
    );
    assert!(node.peer_ids().contains(&raw_id), "the link survived");
    let mut raw = raw;
    raw.send(&P2PMessage::Data {
        text: "after".into(),
    });
    assert!(node.wait_for(|ev| is_message(ev, "after")).is_some());
}

/// The defaults the budgets document, and that the config refuses a budget a single
/// maximum frame would not fit.
#[test]
fn budget_defaults_and_validation() {
    let c = Config::default();
    assert_eq!(c.queue_bytes, 4 * MIB);
    assert_eq!(c.max_pending_event_bytes, 16 * MIB);
    let mut small = Config::default();
    small.queue_bytes = small.max_frame as usize - 1;
    assert!(small.validate().is_err());
}
