//! Measurements 4 and 5: flooding through an overlay formed by the normal join path.
//!
//! - **Latency** ([`latency`]): one origin broadcasts a 64-byte text, waits until every
//!   other node's consumer has taken it off its event queue, then sends the next one.
//!   The latency of one broadcast is from just before `broadcast_data` to the *last*
//!   node's delivery. Copies per delivery = broadcast frames every node queued
//!   (`info().counters.broadcast_frames_sent` summed, the origin's included) / deliveries; a
//!   spanning tree is 1.0, flooding about the mean link count. The duplicates the nodes
//!   dropped (`info().counters.duplicates_dropped`) are checked against that: copies sent =
//!   deliveries + duplicates dropped when nothing is lost. Before the next broadcast
//!   the bench waits until that balance holds (the flood's duplicate tail is over), so
//!   every broadcast starts on a quiet overlay.
//! - **Burst** ([`burst`]): one origin broadcasts `count` 1 KiB texts back to back
//!   (from its own thread; `broadcast_data` blocks when a link queue is full). Each
//!   node's deliveries are counted per sequence number, so loss and duplicates are
//!   exact. The rate is `count` / time until the slowest node delivered its last one.

use std::time::{Duration, Instant};

use p2p_overlay::Encryption;

use crate::overlay::{broadcast_text, Counters, Overlay};
use crate::support::{spawn, Percentiles};

/// Run ids carried in the broadcast texts, so late copies of one run are never
/// counted in another.
const RUN_WARMUP: u32 = 0;
const RUN_LATENCY: u32 = 1;
const RUN_BURST: u32 = 2;
const RUN_MULTI_WARMUP: u32 = 3;
const RUN_MULTI: u32 = 4;

pub struct LatencyResult {
    /// The overlay's links.
    pub enc: Encryption,
    pub nodes: usize,
    /// Nodes that took turns broadcasting.
    pub origins: usize,
    /// Broadcasts sent (warm-up excluded).
    pub sent: usize,
    /// Latency of every broadcast that reached every node in time.
    pub times: Vec<Duration>,
    /// Time until the last copy of each broadcast (duplicates included) had been
    /// received somewhere: when the flood was over (polled every 0.5 ms).
    pub flood_done: Vec<Duration>,
    /// Broadcasts that had not reached every node within the per-message timeout.
    pub incomplete: usize,
    /// Deliveries counted by the consumers.
    pub deliveries: u64,
    /// Most links any timed copy travelled before delivery.
    pub max_hops: u8,
    /// The same message delivered twice by one node (must be 0).
    pub double_deliveries: u64,
    pub counters: Counters,
}

impl LatencyResult {
    pub fn percentiles(&self) -> Option<Percentiles> {
        Percentiles::of(&self.times)
    }

    pub fn copies_per_delivery(&self) -> f64 {
        self.counters.broadcast_frames_sent as f64 / self.deliveries as f64
    }

    pub fn duplicates_per_delivery(&self) -> f64 {
        self.counters.duplicates_dropped as f64 / self.deliveries as f64
    }
}

/// `warmup` untimed broadcasts from each of `origins`, then `count` timed ones, each
/// of `size` bytes, one at a time, the origins taking turns. A broadcast not
/// everywhere after `per_msg` is counted as incomplete and the next one is sent.
pub fn latency(
    ov: &Overlay,
    origins: &[usize],
    count: usize,
    warmup: usize,
    size: usize,
    per_msg: Duration,
) -> LatencyResult {
    let (run_warmup, run) = match origins.len() {
        1 => (RUN_WARMUP, RUN_LATENCY),
        _ => (RUN_MULTI_WARMUP, RUN_MULTI),
    };
    let others = ov.len() - 1;
    let mut seq = 0;
    for &origin in origins {
        for _ in 0..warmup {
            let _ = ov.nodes[origin].broadcast_data(&broadcast_text(run_warmup, seq, size));
            wait_for_all(ov, run_warmup, seq, others, Instant::now() + per_msg);
            seq += 1;
        }
    }
    std::thread::sleep(Duration::from_millis(100)); // let warm-up duplicates settle
    ov.drain();
    let before = ov.counters();
    let mut r = LatencyResult {
        enc: ov.enc,
        nodes: ov.len(),
        origins: origins.len(),
        sent: count,
        times: Vec::with_capacity(count),
        flood_done: Vec::with_capacity(count),
        incomplete: 0,
        deliveries: 0,
        max_hops: 0,
        double_deliveries: 0,
        counters: Counters::default(),
    };
    for seq in 0..count as u64 {
        let node = &ov.nodes[origins[seq as usize % origins.len()]];
        let text = broadcast_text(run, seq, size);
        let t0 = Instant::now();
        match node.broadcast_data(&text) {
            Ok(_) => {}
            Err(e) => eprintln!("  broadcast #{seq} failed: {e}"),
        }
        let w = wait_for_all(ov, run, seq, others, t0 + per_msg);
        r.deliveries += w.delivered as u64;
        r.max_hops = r.max_hops.max(w.max_hops);
        r.double_deliveries += w.doubles;
        match w.last {
            Some(last) if w.delivered == others => r.times.push(last - t0),
            _ => r.incomplete += 1,
        }
        if let Some(quiet) = wait_quiet(ov, before, t0 + per_msg) {
            r.flood_done.push(quiet - t0);
        }
    }
    // Copies still in flight are forwarded and dropped as duplicates within a few ms.
    std::thread::sleep(Duration::from_millis(300));
    for d in ov.deliveries.try_iter() {
        if d.run == run {
            r.deliveries += 1; // late deliveries of incomplete broadcasts
        }
    }
    r.counters = ov.counters().since(before);
    r
}

/// Waits until every copy sent so far has arrived somewhere (copies queued by the
/// origin and forwarders = deliveries + duplicates dropped), so the next broadcast
/// does not compete with the duplicate tail of this one. Returns when that held, or
/// `None` at the deadline (a copy was lost, e.g. with a dropped link).
fn wait_quiet(ov: &Overlay, before: Counters, deadline: Instant) -> Option<Instant> {
    loop {
        let c = ov.counters().since(before);
        if c.broadcast_frames_sent == c.broadcasts_delivered + c.duplicates_dropped {
            return Some(Instant::now());
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_micros(500));
    }
}

struct Wait {
    delivered: usize,
    max_hops: u8,
    doubles: u64,
    last: Option<Instant>,
}

/// Collects deliveries of `(run, seq)` until `expect` distinct nodes have it or the
/// deadline passes. Deliveries of other messages are dropped (late ones).
fn wait_for_all(ov: &Overlay, run: u32, seq: u64, expect: usize, deadline: Instant) -> Wait {
    let mut seen = vec![false; ov.len()];
    let mut w = Wait {
        delivered: 0,
        max_hops: 0,
        doubles: 0,
        last: None,
    };
    while w.delivered < expect {
        let Ok(d) = ov.deliveries.recv_deadline(deadline) else {
            break;
        };
        if d.run != run || d.seq != seq {
            continue;
        }
        if std::mem::replace(&mut seen[d.node], true) {
            w.doubles += 1;
        } else {
            w.delivered += 1;
            w.max_hops = w.max_hops.max(d.hops);
            w.last = Some(w.last.map_or(d.at, |l| l.max(d.at)));
        }
    }
    w
}

pub struct BurstResult {
    /// The overlay's links.
    pub enc: Encryption,
    pub nodes: usize,
    pub msgs: usize,
    /// Every node delivered every message before the deadline.
    pub complete: bool,
    /// Time from the first `broadcast_data` call to the slowest node's last delivery
    /// (when incomplete: to the last delivery anywhere).
    pub slowest: Duration,
    /// Time the origin spent in `broadcast_data` calls.
    pub send_time: Duration,
    /// Messages a node never delivered, summed over nodes.
    pub lost: u64,
    /// Extra deliveries of a message a node had already delivered, summed over nodes.
    pub duplicates: u64,
    /// Fewest messages any node delivered.
    pub min_delivered: usize,
    pub send_errors: usize,
    pub counters: Counters,
    /// Live link ends before and after.
    pub links_before: usize,
    pub links_after: usize,
}

impl BurstResult {
    /// Messages per second at the slowest node: `msgs / slowest` when complete, else
    /// the fewest messages any node delivered over the time deliveries went on.
    pub fn msgs_per_sec_slowest(&self) -> f64 {
        self.min_delivered as f64 / self.slowest.as_secs_f64()
    }
}

/// `count` broadcasts of `size` bytes from node `origin`, back to back. Waits until
/// every node has them all, `timeout` passes, or nothing arrives for `idle`.
pub fn burst(
    ov: &Overlay,
    origin: usize,
    count: usize,
    size: usize,
    timeout: Duration,
    idle: Duration,
) -> BurstResult {
    ov.drain();
    let n = ov.len();
    let before = ov.counters();
    let links_before = ov.link_ends();
    let texts: Vec<String> = (0..count as u64)
        .map(|seq| broadcast_text(RUN_BURST, seq, size))
        .collect();
    let node = std::sync::Arc::clone(&ov.nodes[origin]);
    let t0 = Instant::now();
    let sender = spawn("burst-origin", move || {
        let errors = texts
            .iter()
            .filter(|t| node.broadcast_data(t).is_err())
            .count();
        (errors, t0.elapsed())
    });

    let mut counts = vec![vec![0u16; count]; n];
    let mut distinct = vec![0usize; n];
    let mut last_at = vec![t0; n];
    let mut complete_nodes = 1; // the origin delivers nothing to itself
    let deadline = t0 + timeout;
    while complete_nodes < n {
        let wait_until = deadline.min(Instant::now() + idle);
        let Ok(d) = ov.deliveries.recv_deadline(wait_until) else {
            break;
        };
        if d.run != RUN_BURST || d.seq as usize >= count || d.node == origin {
            continue;
        }
        let c = &mut counts[d.node][d.seq as usize];
        *c = c.saturating_add(1);
        if *c == 1 {
            distinct[d.node] += 1;
            last_at[d.node] = last_at[d.node].max(d.at);
            if distinct[d.node] == count {
                complete_nodes += 1;
            }
        }
    }
    let end = Instant::now();
    let (send_errors, send_time) = sender.join().unwrap_or((count, end - t0));
    // Late duplicates show up within a moment; count them too.
    std::thread::sleep(Duration::from_millis(300));
    for d in ov.deliveries.try_iter() {
        if d.run == RUN_BURST && (d.seq as usize) < count && d.node != origin {
            let c = &mut counts[d.node][d.seq as usize];
            *c = c.saturating_add(1);
        }
    }
    let mut lost = 0;
    let mut duplicates = 0;
    for (i, per_node) in counts.iter().enumerate() {
        if i == origin {
            continue;
        }
        for &c in per_node {
            if c == 0 {
                lost += 1;
            } else {
                duplicates += u64::from(c - 1);
            }
        }
    }
    let others = (0..n).filter(|&i| i != origin);
    let complete = complete_nodes == n;
    BurstResult {
        enc: ov.enc,
        nodes: n,
        msgs: count,
        complete,
        slowest: others.clone().map(|i| last_at[i]).max().unwrap_or(t0) - t0,
        send_time,
        lost,
        duplicates,
        min_delivered: others.map(|i| distinct[i]).min().unwrap_or(0),
        send_errors,
        counters: ov.counters().since(before),
        links_before,
        links_after: ov.link_ends(),
    }
}
