//! Measurement 8: the cost of making a link, per encryption.
//!
//! - **Handshake time** ([`sequential`]): two library nodes, A (the listener) and B
//!   (the dialler), both with auto-dial off so neither dials anything by itself. One
//!   sample is one `b.connect_to_peer(a)`, timed until it returns: TCP connect, the
//!   TLS 1.3 handshake (certificates both ways, no resumption: the node's TLS
//!   configuration never resumes) and the JOIN exchange. After each sample, untimed,
//!   B closes the link with `remove_peer` (LEAVE) and the bench waits until neither
//!   node has a link or an open socket left, so every sample starts from the same
//!   idle pair and no sample can return an already existing link. The same pair
//!   serves every sample: starting a node (key generation, threads) is not part of a
//!   handshake, and the node keeps no per-peer state that makes a second dial
//!   cheaper (no TLS session cache; the address book only remembers the address).
//!   A few untimed dials warm up first.
//! - **Accept storm** ([`storm`]): one target node T takes `dials` dials as fast as
//!   several threads can make them. The dialling nodes are `dials` distinct library
//!   nodes (one link each: a node that is already linked to T would just return that
//!   link), started before the clock starts; `threads` threads each take every
//!   `threads`-th of them and call `connect_to_peer(T)` one after the other, so
//!   `threads` handshakes are in flight at any time. T's caps are raised for this
//!   measurement (`max_pending_handshakes` = dials, `max_links` and
//!   `max_inbound_links` = dials + 64, `max_connections` = 2 x dials + 256; the
//!   defaults are 32, 128, 64, 192), so the caps are not what is measured. The
//!   rate is completed handshakes (dials that returned a link, i.e. JOIN exchanges
//!   done) / time from the start signal until the last dial returned; failures are
//!   the dials that returned an error, with T's refusal and failure counters.
//!
//! Every dial is bounded by the node (connect timeout + handshake timeout + 1 s) and
//! both runs stop starting new dials past their time budget.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use p2p_overlay::{Encryption, Node};

use crate::support::{local_config, spawn, stop_all, Percentiles};

/// Untimed dials before the samples.
const WARMUP: usize = 5;

/// Longest wait for a closed link to be gone at both ends.
const TEARDOWN: Duration = Duration::from_secs(3);

pub struct HandshakeResult {
    pub enc: Encryption,
    /// Samples asked for.
    pub asked: usize,
    /// `connect_to_peer` times of the samples that linked.
    pub times: Vec<Duration>,
    /// Samples whose socket count had not dropped to 0 within [`TEARDOWN`] after the
    /// previous one (their links had gone; only a socket thread was still ending).
    pub slow_teardowns: usize,
    /// Why the run stopped early, or failed dials.
    pub errors: Vec<String>,
}

impl HandshakeResult {
    pub fn percentiles(&self) -> Option<Percentiles> {
        Percentiles::of(&self.times)
    }
}

/// A node for this section: the encryption asked for, nothing dialled by itself.
fn quiet_config(enc: Encryption) -> p2p_overlay::Config {
    let mut c = local_config(enc);
    c.auto_dial = false;
    c
}

/// Waits until neither node has a link and (softly) neither an open socket. `Err`
/// when a link is still up at the deadline; `Ok(false)` when only sockets were.
fn wait_idle(a: &Node, b: &Node, deadline: Instant) -> Result<bool, String> {
    loop {
        let (ia, ib) = (a.info(), b.info());
        let no_links = ia.links == 0 && ib.links == 0;
        if no_links && ia.connections == 0 && ib.connections == 0 {
            return Ok(true);
        }
        if Instant::now() >= deadline {
            return if no_links {
                Ok(false)
            } else {
                Err(format!(
                    "links still up {TEARDOWN:?} after remove_peer (A {}, B {})",
                    ia.links, ib.links
                ))
            };
        }
        std::thread::sleep(Duration::from_micros(200));
    }
}

/// `samples` sequential handshakes of B to A (see the module doc), within `budget`.
pub fn sequential(enc: Encryption, samples: usize, budget: Duration) -> HandshakeResult {
    let mut r = HandshakeResult {
        enc,
        asked: samples,
        times: Vec::with_capacity(samples),
        slow_teardowns: 0,
        errors: Vec::new(),
    };
    let nodes =
        Node::start(quiet_config(enc)).and_then(|a| Ok((a, Node::start(quiet_config(enc))?)));
    let (a, b) = match nodes {
        Ok(p) => p,
        Err(e) => {
            r.errors.push(format!("cannot start the nodes: {e}"));
            return r;
        }
    };
    let (a, b) = (Arc::new(a), Arc::new(b));
    let to = a.local_addr();
    let deadline = Instant::now() + budget;
    let mut failures = Vec::new();
    for i in 0..WARMUP + samples {
        if Instant::now() >= deadline {
            r.errors.push(format!(
                "time budget {budget:?} over after {} of {samples} samples",
                r.times.len()
            ));
            break;
        }
        let t0 = Instant::now();
        let dialled = b.connect_to_peer(to);
        let took = t0.elapsed();
        match dialled {
            Ok(_) if i >= WARMUP => r.times.push(took),
            Ok(_) => {}
            Err(e) => failures.push(format!("dial #{i}: {e}")),
        }
        b.remove_peer(to);
        match wait_idle(&a, &b, Instant::now() + TEARDOWN) {
            Ok(true) => {}
            Ok(false) => r.slow_teardowns += 1,
            Err(e) => {
                r.errors.push(format!("after dial #{i}: {e}; run stopped"));
                break;
            }
        }
    }
    if let Some(note) = crate::summarize("failed", &failures) {
        r.errors.push(note);
    }
    let stuck = stop_all(vec![a, b], Duration::from_secs(10));
    if stuck > 0 {
        r.errors
            .push(format!("{stuck} nodes did not stop within 10 s"));
    }
    r
}

/// T's counters that say a connection was refused or failed.
#[derive(Clone, Copy, Debug, Default)]
pub struct Refusals {
    pub handshakes_failed: u64,
    pub refused_connections: u64,
    pub connections_refused_cap: u64,
    pub refused_links: u64,
    pub pending_evicted: u64,
    pub links_evicted: u64,
}

impl Refusals {
    fn of(n: &Node) -> Refusals {
        let c = n.info().counters;
        Refusals {
            handshakes_failed: c.handshakes_failed,
            refused_connections: c.refused_connections,
            connections_refused_cap: c.connections_refused_cap,
            refused_links: c.refused_links,
            pending_evicted: c.pending_evicted,
            links_evicted: c.links_evicted,
        }
    }

    fn since(self, b: Refusals) -> Refusals {
        Refusals {
            handshakes_failed: self.handshakes_failed - b.handshakes_failed,
            refused_connections: self.refused_connections - b.refused_connections,
            connections_refused_cap: self.connections_refused_cap - b.connections_refused_cap,
            refused_links: self.refused_links - b.refused_links,
            pending_evicted: self.pending_evicted - b.pending_evicted,
            links_evicted: self.links_evicted - b.links_evicted,
        }
    }

    pub fn total(&self) -> u64 {
        self.handshakes_failed
            + self.refused_connections
            + self.connections_refused_cap
            + self.refused_links
            + self.pending_evicted
            + self.links_evicted
    }
}

pub struct StormResult {
    pub enc: Encryption,
    pub dials: usize,
    pub threads: usize,
    /// Dials that returned a link (completed JOIN exchanges).
    pub ok: usize,
    /// Dials that returned an error.
    pub failed: usize,
    /// Dials never started because the time budget was over.
    pub not_started: usize,
    /// From the start signal to the last dial returning.
    pub elapsed: Duration,
    /// Time to start the dialling nodes (not part of the figure).
    pub setup: Duration,
    /// Links T had once the dials were done (should equal `ok`).
    pub target_links: usize,
    /// T's refusal and failure counters over the storm.
    pub refusals: Refusals,
    /// Per-dial times, for the tail.
    pub times: Vec<Duration>,
    pub errors: Vec<String>,
}

impl StormResult {
    pub fn per_sec(&self) -> f64 {
        self.ok as f64 / self.elapsed.as_secs_f64()
    }
}

/// The accept storm (see the module doc): `dials` nodes dial T from `threads`
/// threads, within `budget`.
pub fn storm(enc: Encryption, dials: usize, threads: usize, budget: Duration) -> StormResult {
    let mut r = StormResult {
        enc,
        dials,
        threads,
        ok: 0,
        failed: 0,
        not_started: 0,
        elapsed: Duration::ZERO,
        setup: Duration::ZERO,
        target_links: 0,
        refusals: Refusals::default(),
        times: Vec::with_capacity(dials),
        errors: Vec::new(),
    };
    let mut tc = quiet_config(enc);
    tc.max_pending_handshakes = dials.max(32);
    tc.max_links = dials + 64;
    tc.max_inbound_links = dials + 64;
    tc.max_connections = 2 * dials + 256;
    let target = match Node::start(tc) {
        Ok(t) => Arc::new(t),
        Err(e) => {
            r.errors.push(format!("cannot start the target: {e}"));
            return r;
        }
    };
    let to: SocketAddr = target.local_addr();
    let t_setup = Instant::now();
    let mut dialers: Vec<Arc<Node>> = Vec::with_capacity(dials);
    for i in 0..dials {
        match Node::start(quiet_config(enc)) {
            Ok(n) => dialers.push(Arc::new(n)),
            Err(e) => {
                r.errors
                    .push(format!("dialling node {i}: {e}; storm with {i}"));
                break;
            }
        }
    }
    r.setup = t_setup.elapsed();
    let events = target.events();
    let threads = threads.clamp(1, dials.max(1));
    let before = Refusals::of(&target);
    let go = Arc::new(Barrier::new(threads + 1));
    let over = Arc::new(AtomicBool::new(false));
    let mut workers = Vec::with_capacity(threads);
    for t in 0..threads {
        let mine: Vec<Arc<Node>> = dialers.iter().skip(t).step_by(threads).cloned().collect();
        let (go, over) = (Arc::clone(&go), Arc::clone(&over));
        workers.push(spawn("storm-dial", move || {
            go.wait();
            let mut out = Vec::with_capacity(mine.len());
            for n in &mine {
                if over.load(Ordering::Relaxed) {
                    break;
                }
                let t0 = Instant::now();
                let res = n.connect_to_peer(to).map(|_| ()).map_err(|e| e.to_string());
                out.push((res, t0.elapsed(), Instant::now()));
            }
            (mine.len(), out)
        }));
    }
    go.wait();
    let start = Instant::now();
    let deadline = start + budget;
    // The watchdog thread of this section: no new dial past the budget.
    let timer = {
        let over = Arc::clone(&over);
        spawn("storm-budget", move || {
            while Instant::now() < deadline && !over.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(20));
            }
            over.store(true, Ordering::Relaxed);
        })
    };
    let mut last = start;
    let mut failures = Vec::new();
    for w in workers {
        match w.join() {
            Ok((assigned, out)) => {
                r.not_started += assigned - out.len();
                for (res, took, at) in out {
                    last = last.max(at);
                    match res {
                        Ok(()) => {
                            r.ok += 1;
                            r.times.push(took);
                        }
                        Err(e) => {
                            r.failed += 1;
                            failures.push(e);
                        }
                    }
                }
            }
            Err(_) => r.errors.push("a dialling thread panicked".into()),
        }
    }
    over.store(true, Ordering::Relaxed);
    let _ = timer.join();
    r.elapsed = last - start;
    if r.not_started > 0 {
        r.errors.push(format!(
            "time budget {budget:?} over: {} dials not started",
            r.not_started
        ));
    }
    // T registers a link when its side of the JOIN exchange is done, which can be a
    // moment after the dialler's returned.
    let settle = Instant::now() + Duration::from_secs(2);
    loop {
        r.target_links = target.info().links;
        if r.target_links >= r.ok || Instant::now() >= settle {
            break;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    r.refusals = Refusals::of(&target).since(before);
    while events.try_recv().is_ok() {}
    if let Some(note) = crate::summarize("dial failed", &failures) {
        r.errors.push(note);
    }
    dialers.push(target);
    let n = dialers.len();
    let stuck = stop_all(dialers, Duration::from_secs(30));
    if stuck > 0 {
        r.errors
            .push(format!("{stuck} of {n} nodes did not stop within 30 s"));
    }
    r
}
