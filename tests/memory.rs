//! Memory under hostile length prefixes: a peer that announces a large frame and then
//! sends only a few bytes must cost the node about what it sent, not what it announced.
//!
//! Two measurements:
//! - in this process, with a counting global allocator: the largest single allocation
//!   and the growth of live heap bytes while 50 linked peers each announce a 1 MiB
//!   frame (catches a buffer *reserved* for the announced length, even untouched);
//! - a real `p2p-node` process: its resident memory (`VmRSS`) with 50 such peers
//!   (catches buffers that are *filled* for the announced length).
//!
//! The tests of this file share the allocator's counters, so they run one at a time.

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicIsize, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use common::*;
use p2p_overlay::p2p_message::{read_frame, DecodeError, DEFAULT_MAX_FRAME};

/// Counts live heap bytes and the largest single request.
struct Counting;

static LIVE: AtomicIsize = AtomicIsize::new(0);
static LARGEST: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = System.alloc(layout);
        if !p.is_null() {
            LIVE.fetch_add(layout.size() as isize, Ordering::Relaxed);
            LARGEST.fetch_max(layout.size(), Ordering::Relaxed);
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        System.dealloc(ptr, layout);
        LIVE.fetch_sub(layout.size() as isize, Ordering::Relaxed);
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        let p = System.alloc_zeroed(layout);
        if !p.is_null() {
            LIVE.fetch_add(layout.size() as isize, Ordering::Relaxed);
            LARGEST.fetch_max(layout.size(), Ordering::Relaxed);
        }
        p
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let p = System.realloc(ptr, layout, new_size);
        if !p.is_null() {
            LIVE.fetch_add(
                new_size as isize - layout.size() as isize,
                Ordering::Relaxed,
            );
            LARGEST.fetch_max(new_size, Ordering::Relaxed);
        }
        p
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// One test at a time: they read the same counters.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner())
}

/// Hostile peers that each connect, join, prove the link works, then announce a
/// `DATA` frame of `DEFAULT_MAX_FRAME` bytes and send only `sent` of them.
const PEERS: usize = 50;
const SENT: usize = 100;

fn announce_big_frame(raw: &mut RawPeer) {
    let mut bytes = DEFAULT_MAX_FRAME.to_be_bytes().to_vec();
    bytes.push(1); // DATA
    bytes.extend_from_slice(&[b'a'; SENT - 1]);
    raw.send_bytes(&bytes)
        .expect("send the start of a 1 MiB frame");
}

/// The largest allocation `read_frame` makes for a 1 MiB announcement followed by a
/// few bytes is its fixed reserve (64 KiB), not the announced length.
#[test]
fn read_frame_reserves_a_bounded_buffer_for_a_big_announcement() {
    let _watchdog = watchdog(
        "read_frame_reserves_a_bounded_buffer_for_a_big_announcement",
        WATCHDOG,
    );
    let _one = serial();
    let mut input = DEFAULT_MAX_FRAME.to_be_bytes().to_vec();
    input.push(1);
    input.extend_from_slice(&[b'z'; 10]);
    LARGEST.store(0, Ordering::SeqCst);
    let got = read_frame(&mut &input[..], DEFAULT_MAX_FRAME);
    let largest = LARGEST.load(Ordering::SeqCst);
    assert!(
        matches!(got, Err(DecodeError::Truncated { needed, got: 11 }) if needed == DEFAULT_MAX_FRAME as usize),
        "{got:?}"
    );
    assert!(
        largest <= 64 * 1024 + 4096,
        "read_frame allocated {largest} bytes for a frame that brought 11"
    );
}

/// In process: 50 linked peers announcing 1 MiB each. No single allocation near
/// 1 MiB is made, and the live heap grows by a few MiB, not 50.
#[test]
fn announced_but_unsent_frames_cost_what_was_sent_in_process() {
    let _watchdog = watchdog(
        "announced_but_unsent_frames_cost_what_was_sent_in_process",
        WATCHDOG,
    );
    let _one = serial();
    let a = start_plain_node(|c| {
        c.handshake_timeout = Duration::from_secs(60);
        c.peer_timeout = Duration::from_secs(60);
        c.auto_dial = false;
    });
    let good = start_plain_node(|c| c.auto_dial = false);
    link(&good, &a);

    let mut peers: Vec<RawPeer> = (0..PEERS)
        .map(|_| RawPeer::join(a.addr(), &default_network()).0)
        .collect();
    assert!(
        eventually(DEADLINE, || a.peers().len() == PEERS + 1),
        "links: {}",
        a.peers().len()
    );
    for (i, p) in peers.iter_mut().enumerate() {
        assert!(p.ping_pong(i as u64), "link {i} does not work");
    }
    let base = LIVE.load(Ordering::SeqCst);
    LARGEST.store(0, Ordering::SeqCst);

    for p in peers.iter_mut() {
        announce_big_frame(p);
    }
    // Watch the heap for a while: the readers handle the announcements within
    // milliseconds; the window only makes the measurement cover them.
    let mut peak = base;
    let until = Instant::now() + Duration::from_millis(1500);
    while Instant::now() < until {
        peak = peak.max(LIVE.load(Ordering::SeqCst));
        std::thread::sleep(Duration::from_millis(5));
    }
    let largest = LARGEST.load(Ordering::SeqCst);
    let growth = peak - base;
    eprintln!("heap growth {growth} bytes, largest allocation {largest} bytes");
    assert!(
        largest < 256 * 1024,
        "an allocation of {largest} bytes for frames that brought {SENT} bytes each"
    );
    assert!(
        growth < 16 << 20,
        "live heap grew by {growth} bytes for {PEERS} announced 1 MiB frames"
    );

    // Every hostile link is still up (an unfinished frame is not an error yet), and
    // the node still serves its good peer.
    assert_eq!(a.peers().len(), PEERS + 1);
    good.send_data_to_peer(a.addr(), "still here")
        .expect("send");
    assert!(a.wait_for(|ev| is_message(ev, "still here")).is_some());
    drop(peers);
    assert!(eventually(DEADLINE, || a.peers().len() == 1));
}

/// A real `p2p-node`: its resident memory with 50 joined peers each announcing a
/// 1 MiB frame stays far below 50 MiB of growth.
#[test]
fn announced_but_unsent_frames_cost_what_was_sent_in_a_p2p_node_process() {
    let _watchdog = watchdog(
        "announced_but_unsent_frames_cost_what_was_sent_in_a_p2p_node_process",
        WATCHDOG,
    );
    let _one = serial();
    // Plaintext: the raw peers below write bare frames.
    let node = NodeProcess::start(&["--timeout-ms", "60000", "--no-auto-dial", "--plaintext"]);
    let mut peers: Vec<RawPeer> = (0..PEERS)
        .map(|_| RawPeer::join(node.addr(), &default_network()).0)
        .collect();
    for (i, p) in peers.iter_mut().enumerate() {
        assert!(p.ping_pong(i as u64), "link {i} does not work");
    }
    let base = rss_kib(node.pid()).expect("read VmRSS");
    for p in peers.iter_mut() {
        announce_big_frame(p);
    }
    let mut peak = base;
    let until = Instant::now() + Duration::from_millis(1500);
    while Instant::now() < until {
        peak = peak.max(rss_kib(node.pid()).expect("read VmRSS"));
        std::thread::sleep(Duration::from_millis(20));
    }
    let growth_kib = peak.saturating_sub(base);
    eprintln!("p2p-node VmRSS {base} KiB -> peak {peak} KiB (+{growth_kib} KiB)");
    assert!(
        growth_kib < 24 * 1024,
        "VmRSS grew by {growth_kib} KiB for {PEERS} announced 1 MiB frames"
    );
    // The node is alive and still answers every one of them.
    for (i, p) in peers.iter_mut().take(3).enumerate() {
        // The node is inside a DATA frame on these links: finish it first.
        let rest = DEFAULT_MAX_FRAME as usize - SENT;
        let _ = p.send_bytes(&vec![b'a'; rest]);
        assert!(p.ping_pong(1000 + i as u64), "link {i} stopped working");
    }
    let mut fresh = RawPeer::join(node.addr(), &default_network()).0;
    assert!(fresh.ping_pong(1), "the node stopped accepting");
}
