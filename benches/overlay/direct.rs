//! Measurements 1-3: one linked pair of nodes, direct messages, against raw TCP.
//!
//! - **Link throughput** ([`link_throughput`]): node A calls `send_data_to_peer(B, text)`
//!   `count` times back to back; a thread consuming `b.events()` counts the
//!   `Event::Message`s. The time runs from A's first call to that thread taking the
//!   last message off B's event queue, so it includes A's queue, A's writer thread,
//!   the socket, B's reader thread (decode, UTF-8 check) and B's event channel. The
//!   same counts go through [`raw_tcp::throughput`] in the same run; each pair of
//!   runs is repeated and the median kept.
//! - **Round trip** ([`round_trip`]): A sends one message, a thread consuming B's
//!   events answers each `Event::Message` at once with `send_data_to_peer` back, and A
//!   waits for the answer on its own event queue. Compared with
//!   [`raw_tcp::PingPong`] of the same payload size, in alternating blocks.
//!
//! Both measurements take the encryptions to run (`encs`, plaintext first): the node
//! runs are done once per encryption, each with its own linked pair, interleaved with
//! the raw-TCP runs, which are done once and shared by every encryption's result.
//!
//! Every wait has a deadline; a run that times out reports how far it got.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::Receiver;

use p2p_overlay::{Encryption, Event, Node};

use crate::raw_tcp;
use crate::support::{local_config, median, payload, spawn, stop_all};

/// Two started nodes, A linked to B, with links of `enc`.
pub fn linked_pair(enc: Encryption) -> Result<(Arc<Node>, Arc<Node>), String> {
    let a = Node::start(local_config(enc)).map_err(|e| format!("start A: {e}"))?;
    let b = Node::start(local_config(enc)).map_err(|e| format!("start B: {e}"))?;
    a.connect_to_peer(b.local_addr())
        .map_err(|e| format!("connect A -> B: {e}"))?;
    Ok((Arc::new(a), Arc::new(b)))
}

/// The figures for one message size and encryption.
pub struct LinkResult {
    pub enc: Encryption,
    pub size: usize,
    pub count: usize,
    /// Median over the node runs that delivered every message; when none did, the
    /// median of the failed runs' rates up to their failure (`partial`).
    pub msgs_per_sec: f64,
    pub partial: bool,
    pub baseline_msgs_per_sec: f64,
    /// Every node run: messages/s (up to the failure for a failed run; NaN when
    /// nothing arrived) and whether it delivered every message.
    pub node_runs: Vec<(f64, bool)>,
    pub baseline_runs: Vec<f64>,
    /// What went wrong in failed runs (the raw-TCP runs' failures are recorded with
    /// the first encryption's result only, since the baseline is shared).
    pub errors: Vec<String>,
}

impl RttResult {
    /// The node's round trips over links of `enc` (empty if not measured).
    pub fn node_times(&self, enc: Encryption) -> &[Duration] {
        self.node
            .iter()
            .find(|(e, _)| *e == enc)
            .map_or(&[], |(_, t)| t.as_slice())
    }
}

impl LinkResult {
    /// Node runs that delivered every message.
    pub fn node_ok(&self) -> usize {
        self.node_runs.iter().filter(|(_, ok)| *ok).count()
    }

    pub fn ratio(&self) -> f64 {
        self.msgs_per_sec / self.baseline_msgs_per_sec
    }

    pub fn mb_per_sec(&self) -> f64 {
        self.msgs_per_sec * self.size as f64 / 1e6
    }

    pub fn baseline_mb_per_sec(&self) -> f64 {
        self.baseline_msgs_per_sec * self.size as f64 / 1e6
    }
}

/// Node and raw runs for one size, alternating, `reps` times each: in every
/// repetition one node run per encryption of `encs` (in that order), then one raw
/// run. Every node run uses a fresh linked pair, so a link dropped in one run cannot
/// affect the next. One result per encryption, all with the same baseline.
pub fn link_throughput(
    size: usize,
    count: usize,
    reps: usize,
    timeout: Duration,
    encs: &[Encryption],
) -> Vec<LinkResult> {
    let mut results: Vec<LinkResult> = encs
        .iter()
        .map(|&enc| LinkResult {
            enc,
            size,
            count,
            msgs_per_sec: f64::NAN,
            partial: false,
            baseline_msgs_per_sec: f64::NAN,
            node_runs: Vec::new(),
            baseline_runs: Vec::new(),
            errors: Vec::new(),
        })
        .collect();
    let mut baseline_runs = Vec::with_capacity(reps);
    let mut baseline_errors = Vec::new();
    for _ in 0..reps {
        for r in results.iter_mut() {
            let run = linked_pair(r.enc).map(|(a, b)| {
                let result = node_run(&a, &b, size, count, timeout);
                stop_all(vec![a, b], Duration::from_secs(10));
                result
            });
            match run {
                Ok(run) => {
                    r.node_runs.push((run.rate, run.error.is_none()));
                    r.errors.extend(run.error.map(|e| format!("node: {e}")));
                }
                Err(e) => {
                    r.node_runs.push((f64::NAN, false));
                    r.errors.push(format!("node: {e}"));
                }
            }
        }
        match raw_tcp::throughput(size, count, timeout) {
            Ok(d) => baseline_runs.push(count as f64 / d.as_secs_f64()),
            Err(e) => {
                baseline_runs.push(f64::NAN);
                baseline_errors.push(format!("raw tcp: {e}"));
            }
        }
    }
    if let Some(first) = results.first_mut() {
        first.errors.extend(baseline_errors);
    }
    for r in results.iter_mut() {
        let rates = |complete: bool| -> Vec<f64> {
            r.node_runs
                .iter()
                .filter(|(_, ok)| *ok == complete)
                .map(|(x, _)| *x)
                .collect()
        };
        let partial = r.node_ok() == 0;
        r.msgs_per_sec = median(&rates(!partial));
        r.partial = partial;
        r.baseline_runs = baseline_runs.clone();
        r.baseline_msgs_per_sec = median(&baseline_runs);
    }
    results
}

/// One node run: the rate, and why it did not deliver everything.
struct NodeRun {
    /// Messages delivered / time to the last delivery (NaN if none arrived).
    rate: f64,
    error: Option<String>,
}

/// A throughput run in which nothing arrives for this long has stalled.
const STALL: Duration = Duration::from_secs(5);

/// One timed transfer of `count` messages from A to B through the node API.
fn node_run(a: &Node, b: &Node, size: usize, count: usize, timeout: Duration) -> NodeRun {
    let events = b.events();
    while events.try_recv().is_ok() {} // PeerUp and leftovers
    let dropped_before = b.info().counters.events_dropped;
    let deadline = Instant::now() + timeout;
    let consumer = spawn("link-rx", move || {
        let (mut got, mut last) = (0, None);
        while got < count {
            // Nothing for STALL (e.g. B dropped events its queue had no room for)
            // ends the run early instead of waiting for the whole timeout. The clock
            // is read only when the queue is empty and for every 1024th message, so the
            // consumer's own clock reads do not weigh on the figure.
            let next = match events.try_recv() {
                Ok(ev) => Ok(ev),
                Err(_) => events.recv_deadline(deadline.min(Instant::now() + STALL)),
            };
            match next {
                Ok(Event::Message { text, .. }) if text.len() == size => {
                    got += 1;
                    // Every 1024th too, for the partial rate of a run that fails.
                    if got == count || got % 1024 == 0 {
                        last = Some(Instant::now());
                    }
                }
                Ok(Event::PeerDown { reason, .. }) => {
                    return (
                        got,
                        last,
                        Some(format!("B saw the link go down ({reason})")),
                    )
                }
                Ok(_) => {}
                Err(_) if Instant::now() < deadline => {
                    return (got, last, Some(format!("nothing arrived for {STALL:?}")))
                }
                Err(_) => return (got, last, Some(format!("timed out after {timeout:?}"))),
            }
        }
        (got, last, None)
    });
    let text = payload("m", size);
    let to = b.local_addr();
    let start = Instant::now();
    let mut send_error = None;
    for i in 0..count {
        if let Err(e) = a.send_data_to_peer(to, &text) {
            send_error = Some(format!("send #{i} failed: {e}"));
            break;
        }
        if i % 1024 == 0 && Instant::now() > deadline {
            send_error = Some(format!("only {i} sent before the deadline"));
            break;
        }
    }
    let Ok((got, last, why)) = consumer.join() else {
        return NodeRun {
            rate: f64::NAN,
            error: Some("consumer panicked".into()),
        };
    };
    let rate = last.map_or(f64::NAN, |t| got as f64 / (t - start).as_secs_f64());
    let error = why.map(|why| {
        format!(
            "{why}: {got}/{count} delivered in {:.2} s{}{}",
            last.map_or(0.0, |t| (t - start).as_secs_f64()),
            match b.info().counters.events_dropped - dropped_before {
                0 => String::new(),
                n => format!(", {n} events dropped by B"),
            },
            send_error.map(|e| format!(", {e}")).unwrap_or_default()
        )
    });
    NodeRun { rate, error }
}

/// Round-trip times through the node (once per encryption) and through raw TCP.
pub struct RttResult {
    pub size: usize,
    /// One entry per encryption measured, in the order asked for.
    pub node: Vec<(Encryption, Vec<Duration>)>,
    pub baseline: Vec<Duration>,
    /// Raw TCP with a reader thread and a channel on each side (the architecture's
    /// floor, see `raw_tcp::ThreadedPingPong`).
    pub floor: Vec<Duration>,
    pub errors: Vec<String>,
}

/// `warmup` untimed round trips on each path, then `n` timed ones on each, in
/// `blocks` alternating blocks (node over each of `encs`, raw, threaded raw, node,
/// ...) so that every path sees the same background load on a shared machine.
pub fn round_trip(
    size: usize,
    n: usize,
    warmup: usize,
    blocks: usize,
    timeout: Duration,
    encs: &[Encryption],
) -> RttResult {
    let mut r = RttResult {
        size,
        node: encs.iter().map(|&e| (e, Vec::with_capacity(n))).collect(),
        baseline: Vec::with_capacity(n),
        floor: Vec::with_capacity(n),
        errors: Vec::new(),
    };
    let mut floor = match raw_tcp::ThreadedPingPong::start(size, timeout) {
        Ok(p) => Some(p),
        Err(e) => {
            r.errors.push(format!("threaded tcp: {e}"));
            None
        }
    };
    let mut nodes: Vec<Option<NodePingPong>> = encs
        .iter()
        .map(|&enc| match NodePingPong::start(size, timeout, enc) {
            Ok(p) => Some(p),
            Err(e) => {
                r.errors.push(format!("node {}: {e}", enc.as_str()));
                None
            }
        })
        .collect();
    let mut raw = match raw_tcp::PingPong::start(size, timeout) {
        Ok(p) => Some(p),
        Err(e) => {
            r.errors.push(format!("raw tcp: {e}"));
            None
        }
    };
    let per_block = n.div_ceil(blocks.max(1));
    for block in 0..=blocks {
        // Block 0 is the warm-up of both paths.
        let k = if block == 0 { warmup } else { per_block };
        for (slot, (enc, times)) in nodes.iter_mut().zip(r.node.iter_mut()) {
            let Some(p) = slot.as_mut() else { continue };
            match p.trips(k) {
                Ok(t) if block > 0 => times.extend(t),
                Ok(_) => {}
                Err((t, e)) => {
                    times.extend(t);
                    r.errors.push(format!("node {}: {e}", enc.as_str()));
                    *slot = None;
                }
            }
        }
        if let Some(p) = raw.as_mut() {
            match p.trips(k) {
                Ok(t) if block > 0 => r.baseline.extend(t),
                Ok(_) => {}
                Err(e) => {
                    r.errors.push(format!("raw tcp: {e}"));
                    raw = None;
                }
            }
        }
        if let Some(p) = floor.as_mut() {
            match p.trips(k, timeout) {
                Ok(t) if block > 0 => r.floor.extend(t),
                Ok(_) => {}
                Err(e) => {
                    r.errors.push(format!("threaded tcp: {e}"));
                    floor = None;
                }
            }
        }
    }
    for (p, enc) in nodes.into_iter().zip(encs) {
        if let Some(e) = p.and_then(NodePingPong::finish) {
            r.errors.push(format!("node {}: {e}", enc.as_str()));
        }
    }
    r
}

/// Two linked nodes; a thread consuming B's events answers every message at once.
struct NodePingPong {
    a: Arc<Node>,
    b: Arc<Node>,
    events: Receiver<Event>,
    stop: Arc<AtomicBool>,
    echo: JoinHandle<Result<(), String>>,
    text: String,
    timeout: Duration,
}

type Partial = (Vec<Duration>, String);

impl NodePingPong {
    fn start(size: usize, timeout: Duration, enc: Encryption) -> Result<NodePingPong, String> {
        let (a, b) = linked_pair(enc)?;
        let stop = Arc::new(AtomicBool::new(false));
        let echo = {
            let (b, stop) = (Arc::clone(&b), Arc::clone(&stop));
            let events = b.events();
            spawn("echo", move || {
                while !stop.load(Ordering::Relaxed) {
                    match events.recv_timeout(Duration::from_millis(50)) {
                        Ok(Event::Message { from, text, .. }) => {
                            if let Err(e) = b.send_data_to_peer(from, &text) {
                                return Err(format!("echo failed: {e}"));
                            }
                        }
                        Ok(_) => {}
                        Err(e) if e.is_disconnected() => return Ok(()),
                        Err(_) => {}
                    }
                }
                Ok(())
            })
        };
        let events = a.events();
        while events.try_recv().is_ok() {} // PeerUp
        Ok(NodePingPong {
            a,
            b,
            events,
            stop,
            echo,
            text: payload("ping", size),
            timeout,
        })
    }

    /// `n` timed round trips; on failure, the times so far and why.
    fn trips(&mut self, n: usize) -> Result<Vec<Duration>, Partial> {
        let to = self.b.local_addr();
        let deadline = Instant::now() + self.timeout;
        let mut times = Vec::with_capacity(n);
        for i in 0..n {
            let t0 = Instant::now();
            if let Err(e) = self.a.send_data_to_peer(to, &self.text) {
                return Err((times, format!("send #{i} failed: {e}")));
            }
            loop {
                match self.events.recv_deadline(deadline) {
                    Ok(Event::Message { .. }) => break,
                    Ok(_) => {}
                    Err(_) => {
                        let why = format!("no answer to #{i} within {:?}", self.timeout);
                        return Err((times, why));
                    }
                }
            }
            times.push(t0.elapsed());
        }
        Ok(times)
    }

    /// Stops the echo thread and both nodes; returns the echo's failure, if any.
    fn finish(self) -> Option<String> {
        self.stop.store(true, Ordering::Relaxed);
        let echo = self.echo.join();
        stop_all(vec![self.a, self.b], Duration::from_secs(10));
        match echo {
            Ok(Ok(())) => None,
            Ok(Err(e)) => Some(e),
            Err(_) => Some("echo thread panicked".into()),
        }
    }
}
