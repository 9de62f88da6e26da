//! Measurement 6: join convergence.
//!
//! `n` nodes are started unconnected (default config, 127.0.0.1). The clock starts,
//! then nodes 1..n each call `connect_to_peer(seed)` on node 0, one after the other
//! from this thread (each call returns when its handshake is done). Everything after
//! that is the overlay's own discovery: PEERS lists, auto-dial towards 8 links. The
//! figure is the time until every node has `min(target_links, N-1)` links and no dial
//! is in progress, polled every 20 ms.

use std::time::{Duration, Instant};

use p2p_overlay::Encryption;

use crate::overlay::{Convergence, Overlay};

pub struct JoinResult {
    pub enc: Encryption,
    pub nodes: usize,
    /// Time for the `connect_to_peer(seed)` calls alone.
    pub joins: Duration,
    pub convergence: Convergence,
    pub errors: Vec<String>,
}

pub fn join_through_seed(
    n: usize,
    timeout: Duration,
    enc: Encryption,
) -> Result<JoinResult, String> {
    let mut ov = Overlay::start(n, enc)?;
    let seed = ov.nodes[0].local_addr();
    let t0 = Instant::now();
    for i in 1..n {
        if let Err(e) = ov.nodes[i].connect_to_peer(seed) {
            ov.join_errors.push(format!("node {i}: {e}"));
        }
    }
    let joins = t0.elapsed();
    let convergence = ov.wait_connected(t0, t0 + timeout, false);
    let mut errors = std::mem::take(&mut ov.join_errors);
    if let Some(note) = ov.shutdown() {
        errors.push(note);
    }
    Ok(JoinResult {
        enc,
        nodes: n,
        joins,
        convergence,
        errors,
    })
}
