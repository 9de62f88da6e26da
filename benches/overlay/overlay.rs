//! Many nodes in this process, formed through the normal join and discovery path, and
//! a record of who delivered which broadcast when.
//!
//! Every node runs with the default [`Config`](p2p_overlay::Config) on 127.0.0.1
//! (target 8 links, auto-dial on), every node of one overlay with the same
//! [`Encryption`]. Each node gets one consumer thread that takes its
//! events, timestamps every `Event::Broadcast` the moment it is taken off the queue,
//! and forwards `(node, run, seq, instant)` to one collector channel; the text of
//! every bench broadcast starts with `b<run>:<seq>` so deliveries can be counted per
//! message and per node.
//!
//! "Connected" ([`Overlay::wait_connected`]) means every node has at least
//! `min(target_links, N-1)` links and none is still dialling; for the broadcast runs
//! it may also mean the link set has not changed for one second and the link graph is
//! connected (that is all flooding needs).

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{unbounded, Receiver};
use p2p_overlay::{Encryption, Event, Node};

use crate::support::{local_config, spawn, stop_all, Rng};

/// One node took one bench broadcast off its event queue.
#[derive(Clone, Copy, Debug)]
pub struct Delivery {
    pub node: usize,
    pub run: u32,
    pub seq: u64,
    /// Links the copy travelled (the tree depth of this node for this broadcast).
    pub hops: u8,
    pub at: Instant,
}

/// The text of bench broadcast `seq` of run `run`, `size` bytes long.
pub fn broadcast_text(run: u32, seq: u64, size: usize) -> String {
    crate::support::payload(&format!("b{run}:{seq}"), size)
}

fn parse_text(text: &str) -> Option<(u32, u64)> {
    let tag = text.strip_prefix('b')?.split(' ').next()?;
    let (run, seq) = tag.split_once(':')?;
    Some((run.parse().ok()?, seq.parse().ok()?))
}

/// Sums of every node's counters.
#[derive(Clone, Copy, Debug, Default)]
pub struct Counters {
    pub frames_forwarded: u64,
    /// Every broadcast frame queued, the origins' own copies included.
    pub broadcast_frames_sent: u64,
    /// Broadcasts asked for because the tree did not bring them in time.
    pub grafts_sent: u64,
    pub duplicates_dropped: u64,
    pub broadcasts_delivered: u64,
    pub slow_peers_dropped: u64,
    pub events_dropped: u64,
}

impl Counters {
    pub fn since(self, before: Counters) -> Counters {
        Counters {
            frames_forwarded: self.frames_forwarded - before.frames_forwarded,
            broadcast_frames_sent: self.broadcast_frames_sent - before.broadcast_frames_sent,
            grafts_sent: self.grafts_sent - before.grafts_sent,
            duplicates_dropped: self.duplicates_dropped - before.duplicates_dropped,
            broadcasts_delivered: self.broadcasts_delivered - before.broadcasts_delivered,
            slow_peers_dropped: self.slow_peers_dropped - before.slow_peers_dropped,
            events_dropped: self.events_dropped - before.events_dropped,
        }
    }
}

/// How an overlay looked when [`Overlay::wait_connected`] returned.
#[derive(Clone, Debug)]
pub struct Convergence {
    /// Time from the call (or the given start) until the condition held, or until
    /// the deadline.
    pub elapsed: Duration,
    /// Every node had `min(target, N-1)` links and none was dialling.
    pub at_target: bool,
    /// The link graph was connected.
    pub connected: bool,
    /// Nodes below `min(target, N-1)` links at the end.
    pub below_target: usize,
    pub min_links: usize,
    pub max_links: usize,
    pub mean_links: f64,
}

impl Convergence {
    pub fn describe(&self) -> String {
        format!(
            "{} after {:.2} s: links min {} / mean {:.1} / max {}, {} below target, graph {}",
            if self.at_target {
                "every node at target"
            } else if self.connected {
                "stable and connected"
            } else {
                "NOT converged"
            },
            self.elapsed.as_secs_f64(),
            self.min_links,
            self.mean_links,
            self.max_links,
            self.below_target,
            if self.connected {
                "connected"
            } else {
                "NOT connected"
            },
        )
    }
}

/// Nodes of one overlay plus their event consumers.
pub struct Overlay {
    pub nodes: Vec<Arc<Node>>,
    pub deliveries: Receiver<Delivery>,
    /// `connect_to_peer` calls that failed while forming the overlay.
    pub join_errors: Vec<String>,
    /// How every link of this overlay travels.
    pub enc: Encryption,
    index: HashMap<SocketAddr, usize>,
    stop: Arc<AtomicBool>,
    consumers: Vec<JoinHandle<()>>,
}

impl Overlay {
    /// Starts `n` unconnected nodes and their consumers.
    pub fn start(n: usize, enc: Encryption) -> Result<Overlay, String> {
        let (tx, rx) = unbounded();
        let stop = Arc::new(AtomicBool::new(false));
        let mut ov = Overlay {
            nodes: Vec::with_capacity(n),
            deliveries: rx,
            join_errors: Vec::new(),
            enc,
            index: HashMap::new(),
            stop: Arc::clone(&stop),
            consumers: Vec::with_capacity(n),
        };
        for i in 0..n {
            let node = Node::start(local_config(enc)).map_err(|e| format!("node {i}: {e}"))?;
            ov.index.insert(node.local_addr(), i);
            let (events, tx, stop) = (node.events(), tx.clone(), Arc::clone(&stop));
            ov.consumers.push(spawn("consumer", move || {
                while !stop.load(Ordering::Relaxed) {
                    match events.recv_timeout(Duration::from_millis(100)) {
                        Ok(Event::Broadcast { text, hops, .. }) => {
                            let at = Instant::now();
                            if let Some((run, seq)) = parse_text(&text) {
                                let _ = tx.send(Delivery {
                                    node: i,
                                    run,
                                    seq,
                                    hops,
                                    at,
                                });
                            }
                        }
                        Ok(_) => {}
                        Err(e) if e.is_disconnected() => break,
                        Err(_) => {}
                    }
                }
            }));
            ov.nodes.push(Arc::new(node));
        }
        Ok(ov)
    }

    /// `n` nodes where node `i` joins through a random earlier node (seeded, so every
    /// run builds the same sequence of choices).
    pub fn form_random(n: usize, seed: u64, enc: Encryption) -> Result<Overlay, String> {
        let mut ov = Overlay::start(n, enc)?;
        let mut rng = Rng::new(seed);
        for i in 1..n {
            let via = ov.nodes[rng.below(i)].local_addr();
            if let Err(e) = ov.nodes[i].connect_to_peer(via) {
                ov.join_errors.push(format!("node {i} -> {via}: {e}"));
            }
        }
        Ok(ov)
    }

    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Links each node should reach: `min(target_links, N-1)`.
    pub fn goal(&self) -> usize {
        let target = self.nodes.first().map_or(0, |n| n.info().target_links);
        target.min(self.len().saturating_sub(1))
    }

    /// Every node's neighbours, as indexes.
    fn adjacency(&self) -> Vec<Vec<usize>> {
        self.nodes
            .iter()
            .map(|n| {
                n.peers()
                    .iter()
                    .filter_map(|p| self.index.get(&p.addr).copied())
                    .collect()
            })
            .collect()
    }

    /// Polls every 20 ms until every node has `goal()` links and none is dialling, or
    /// (with `accept_stable`) the link set has been unchanged for a second and the
    /// graph is connected, or `deadline`. `start` is where `elapsed` counts from.
    pub fn wait_connected(
        &self,
        start: Instant,
        deadline: Instant,
        accept_stable: bool,
    ) -> Convergence {
        let goal = self.goal();
        let mut last_edges: Option<HashSet<(usize, usize)>> = None;
        let mut stable_since = Instant::now();
        loop {
            let adj = self.adjacency();
            let dialing: usize = self.nodes.iter().map(|n| n.info().dialing).sum();
            let links: Vec<usize> = adj.iter().map(Vec::len).collect();
            let below = links.iter().filter(|&&l| l < goal).count();
            let connected = is_connected(&adj);
            let edges: HashSet<(usize, usize)> = adj
                .iter()
                .enumerate()
                .flat_map(|(i, v)| v.iter().map(move |&j| (i.min(j), i.max(j))))
                .collect();
            if last_edges.as_ref() != Some(&edges) {
                stable_since = Instant::now();
                last_edges = Some(edges);
            }
            let at_target = below == 0 && dialing == 0;
            let stable = accept_stable
                && connected
                && dialing == 0
                && stable_since.elapsed() >= Duration::from_secs(1);
            let now = Instant::now();
            if at_target || stable || now >= deadline {
                return Convergence {
                    elapsed: if at_target || !stable {
                        now - start
                    } else {
                        stable_since.max(start) - start
                    },
                    at_target,
                    connected,
                    below_target: below,
                    min_links: links.iter().copied().min().unwrap_or(0),
                    max_links: links.iter().copied().max().unwrap_or(0),
                    mean_links: links.iter().sum::<usize>() as f64 / links.len().max(1) as f64,
                };
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn counters(&self) -> Counters {
        let mut c = Counters::default();
        for n in &self.nodes {
            let i = n.info();
            c.frames_forwarded += i.counters.frames_forwarded;
            c.broadcast_frames_sent += i.counters.broadcast_frames_sent;
            c.grafts_sent += i.counters.grafts_sent;
            c.duplicates_dropped += i.counters.duplicates_dropped;
            c.broadcasts_delivered += i.counters.broadcasts_delivered;
            c.slow_peers_dropped += i.counters.slow_peers_dropped;
            c.events_dropped += i.counters.events_dropped;
        }
        c
    }

    /// Total live links (each counted at both ends).
    pub fn link_ends(&self) -> usize {
        self.nodes.iter().map(|n| n.info().links).sum()
    }

    /// Takes every delivery already collected off the channel (leftovers of an
    /// earlier run).
    pub fn drain(&self) {
        while self.deliveries.try_recv().is_ok() {}
    }

    /// Stops every node (in parallel, bounded) and the consumers; returns a note when
    /// something did not stop in time.
    pub fn shutdown(self) -> Option<String> {
        let n = self.nodes.len();
        let stuck = stop_all(self.nodes, Duration::from_secs(20));
        self.stop.store(true, Ordering::Relaxed);
        for c in self.consumers {
            let _ = c.join();
        }
        (stuck > 0).then(|| format!("{stuck} of {n} nodes did not stop within 20 s"))
    }
}

fn is_connected(adj: &[Vec<usize>]) -> bool {
    if adj.is_empty() {
        return true;
    }
    let mut seen = vec![false; adj.len()];
    let mut stack = vec![0];
    seen[0] = true;
    while let Some(i) = stack.pop() {
        for &j in &adj[i] {
            if !seen[j] {
                seen[j] = true;
                stack.push(j);
            }
        }
    }
    seen.iter().all(|&s| s)
}
