//! The maintenance thread: heartbeats, dead-peer detection, periodic peer exchange,
//! dialing towards the target link count, saving the peers file, and reaping finished
//! connection threads.
//! The C++ original had only a thread that printed the peer set every 1000 s.
//!
//! It wakes every quarter heartbeat interval (between 10 and 250 ms), so a silent peer
//! is dropped at most that long after its timeout, and in between whenever lazy push
//! has announcements or GRAFTs due (`lazy_push::due`; readers kick it when they
//! schedule one). It waits with `select!` on the kick and on a shutdown channel, so
//! `Node::stop` wakes it at once.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{select, Receiver};

use crate::lazy_push;
use crate::node::Shared;
use crate::p2p_message::P2PMessage;

/// Runs until `stop` is closed.
pub(crate) fn run(shared: Arc<Shared>, stop: Receiver<()>, lazy_kick: Receiver<()>) {
    let period = (shared.config.heartbeat_interval / 4)
        .clamp(Duration::from_millis(10), Duration::from_millis(250));
    let mut next_tick = Instant::now() + period;
    let mut next_lazy: Option<Instant> = None;
    let mut last_exchange = Instant::now();
    let mut last_save = Instant::now();
    loop {
        let wake = next_lazy.map_or(next_tick, |l| l.min(next_tick));
        select! {
            recv(stop) -> _ => break,
            recv(lazy_kick) -> _ => {}
            default(wake.saturating_duration_since(Instant::now())) => {}
        }
        if !shared.is_running() {
            break;
        }
        let now = Instant::now();
        next_lazy = lazy_push::due(&shared, now);
        if now < next_tick {
            continue;
        }
        next_tick = now + period;
        heartbeat(&shared);
        if last_exchange.elapsed() >= shared.config.peer_exchange_interval {
            last_exchange = Instant::now();
            // Bound first: a `for` over `lock().links()` would hold the guard for the
            // whole loop, and `send_peer_list` takes the same lock.
            let links = shared.table.lock().links();
            for link in links {
                shared.send_peer_list(&link);
            }
        }
        if last_save.elapsed() >= shared.config.peers_file_interval {
            last_save = Instant::now();
            shared.save_peers_file();
        }
        shared.dial_more();
        let (half, shut) = shared.table.lock().due_retiring(Instant::now());
        for s in half {
            let _ = s.shutdown(std::net::Shutdown::Write);
        }
        for s in shut {
            let _ = s.shutdown(std::net::Shutdown::Both);
        }
        let finished = shared.table.lock().take_threads(false);
        for h in finished {
            if h.join().is_err() {
                log::error!("a connection thread panicked");
            }
        }
    }
}

/// Pings links that are due and drops links that have been silent too long.
fn heartbeat(shared: &Shared) {
    let now_ms = shared.now_ms();
    let interval_ms = shared.config.heartbeat_interval.as_millis() as u64;
    let timeout_ms = shared.config.peer_timeout.as_millis() as u64;
    let links = shared.table.lock().links();
    let mut ping: Option<Vec<u8>> = None;
    for link in links {
        let silent = now_ms.saturating_sub(link.last_seen_ms.load(Ordering::Relaxed));
        if silent > timeout_ms {
            log::warn!("{}: silent for {silent} ms, dropping the peer", link.addr);
            shared.close_link(&link, "heartbeat timeout");
            continue;
        }
        if now_ms.saturating_sub(link.last_ping_ms.load(Ordering::Relaxed)) >= interval_ms {
            link.last_ping_ms.store(now_ms, Ordering::Relaxed);
            let frame = ping.get_or_insert_with(|| {
                P2PMessage::Ping {
                    nonce: shared.now_us(),
                }
                .encode()
            });
            shared.queue_control(&link, frame);
        }
    }
}
