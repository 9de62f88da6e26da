//! The maintenance thread (`maint`): the node's timed work, and where the node dials
//! on its own (besides [`dial_more`]'s first round, which `Node::start` runs at once
//! so cached addresses do not wait for the first tick). The C++ original had only a
//! thread that printed the peer set every 1000 s.
//!
//! It waits with `select!` on one wake channel, a shutdown channel and a timeout, so
//! `Node::stop` wakes it at once and protocols can ask for it:
//! - every tick (a quarter heartbeat interval, between 10 and 250 ms): heartbeats and
//!   silent-link drops, the periodic peer exchange and peer-cache save, dials towards
//!   the target link count, retiring duplicates, reaping finished threads;
//! - whenever woken (a PEERS message brought new addresses, announcements were
//!   queued, a GRAFT was scheduled) and whenever announcements or GRAFTs are due:
//!   the broadcast tree's timed part, and dials if new addresses arrived.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{select, Receiver};

use crate::error::Error;
use crate::links::DialClaim;
use crate::peer_connection::Dial;
use crate::peer_connection_factory::PeerConnectionFactory;
use crate::shared::Shared;

/// Runs until `stop` is closed.
pub(crate) fn run(shared: Arc<Shared>, stop: Receiver<()>, wake: Receiver<()>) {
    let factory = PeerConnectionFactory::new(Arc::clone(&shared));
    let links = &shared.links;
    let protocols = &shared.protocols;
    let config = links.config();
    let period = (config.heartbeat_interval / 4)
        .clamp(Duration::from_millis(10), Duration::from_millis(250));
    let mut next_tick = Instant::now() + period;
    let mut next_due: Option<Instant> = None;
    let mut last_exchange = Instant::now();
    let mut last_save = Instant::now();
    loop {
        let at = next_due.map_or(next_tick, |d| d.min(next_tick));
        select! {
            recv(stop) -> _ => break,
            recv(wake) -> _ => {}
            default(at.saturating_duration_since(Instant::now())) => {}
        }
        if !links.is_running() {
            break;
        }
        let now = Instant::now();
        next_due = protocols.due(links, now);
        let dial_wanted = protocols.membership.take_dial_wanted();
        if now < next_tick {
            if dial_wanted {
                dial_more(&shared, &factory);
            }
            continue;
        }
        next_tick = now + period;
        let exchange = last_exchange.elapsed() >= config.peer_exchange_interval;
        if exchange {
            last_exchange = Instant::now();
        }
        protocols.tick(links, exchange);
        if last_save.elapsed() >= config.peers_file_interval {
            last_save = Instant::now();
            protocols.membership.save_peers_file();
        }
        // After the heartbeat, so a link it just dropped is replaced in this tick.
        dial_more(&shared, &factory);
        links.tend_retiring(Instant::now());
        links.reap_threads();
    }
}

/// Starts dials towards `target_links`, as membership plans them. With
/// `max_connections` sockets open it plans nothing, and it stops at the first dial
/// that finds the cap reached: a dial not started is no failure of the address (no
/// backoff), and the next tick looks again, so nothing spins.
pub(crate) fn dial_more(shared: &Arc<Shared>, factory: &PeerConnectionFactory) {
    let links = &shared.links;
    if !links.has_free_slot() {
        return;
    }
    for addr in shared.protocols.membership.dial_plan(links) {
        if let DialClaim::Busy(_) = links.claim_dial(addr) {
            continue;
        }
        log::debug!("dialing {addr}");
        match factory.dial(Dial {
            addr,
            expect: shared.protocols.membership.expected_id(&addr),
            waiter: None,
        }) {
            Ok(()) => {}
            Err(e @ Error::TooManyConnections { .. }) => {
                log::debug!("dial {addr} not started: {e}");
                break;
            }
            Err(e) => log::debug!("dial {addr} not started: {e}"),
        }
    }
}
