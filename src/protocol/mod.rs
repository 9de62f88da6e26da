//! The protocols a link speaks once its handshake is done, and the one entry point
//! the reader hands every frame to ([`Protocols::dispatch`]).
//!
//! | message | handled by |
//! |---|---|
//! | DATA | here: delivered to the application |
//! | PING, PONG | [`heartbeat`] |
//! | PEERS, LEAVE | [`membership`] |
//! | BROADCAST, IHAVE, GRAFT, PRUNE | [`broadcast`] |
//! | JOIN | only in the handshake (`peer_connection`); a second one closes the link |
//!
//! Protocols decide and queue frames; they get a `&Links` and the link a frame came
//! on, never the node. They start no threads and make no dials: membership says whom
//! to dial, the maintenance thread dials. A new message type touches
//! `p2p_message.rs`, one protocol file, and one arm below.
//!
//! Rate limits (docs/PROTOCOL.md 3.5 "Limits"): each connection's reader keeps an
//! [`InboundLimits`] of its own (plain data, no lock: nobody else touches it) and
//! passes it to [`Protocols::dispatch`]. DATA takes a token here, a new broadcast in
//! [`broadcast`]; a link that stays over a limit for `Config::rate_limit_grace` is
//! closed with [`DownReason::RateLimited`].

pub(crate) mod broadcast;
pub(crate) mod heartbeat;
pub(crate) mod membership;

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Instant;

use crate::config::Config;
use crate::event::{DownReason, Event};
use crate::links::{Link, Links};
use crate::p2p_message::{NodeId, P2PMessage};
use crate::state::rate_limit::{RateLimiter, Verdict};
use crate::state::stats;
use broadcast::BroadcastTree;
use membership::Membership;

/// Every protocol's state.
pub(crate) struct Protocols {
    pub(crate) membership: Membership,
    pub(crate) broadcast: BroadcastTree,
}

/// What the reader does after a frame.
pub(crate) enum Flow {
    /// Read on.
    Continue,
    /// Read on; delivering had to wait for the application, so the peer's silence
    /// meanwhile was ours, not its.
    Waited,
    /// Close the link.
    Close(DownReason),
}

/// What one connection may bring: its token buckets for new broadcasts and for DATA.
/// Owned by the connection's reader, made when it starts reading.
pub(crate) struct InboundLimits {
    broadcasts: RateLimiter,
    data: RateLimiter,
}

impl InboundLimits {
    pub(crate) fn new(config: &Config, now_ms: u64) -> InboundLimits {
        let grace = u64::try_from(config.rate_limit_grace.as_millis()).unwrap_or(u64::MAX);
        InboundLimits {
            broadcasts: RateLimiter::new(
                config.broadcast_rate,
                config.broadcast_burst,
                grace,
                now_ms,
            ),
            data: RateLimiter::new(config.data_rate, config.data_burst, grace, now_ms),
        }
    }
}

impl Protocols {
    pub(crate) fn new(config: &Arc<Config>, id: NodeId, local_addr: SocketAddr) -> Protocols {
        Protocols {
            membership: Membership::new(Arc::clone(config), id, local_addr),
            broadcast: BroadcastTree::new(config, id),
        }
    }

    /// Hands one decoded frame that arrived on `link` to its protocol; `limits` are
    /// that connection's.
    pub(crate) fn dispatch(
        &self,
        links: &Links,
        link: &Link,
        limits: &mut InboundLimits,
        msg: P2PMessage,
    ) -> Flow {
        let waited = match msg {
            P2PMessage::Join(_) => return Flow::Close(DownReason::SecondJoin),
            // Only ever the first frame of a probe connection.
            P2PMessage::Probe => {
                return Flow::Close(DownReason::BadFrame("PROBE on a live link".into()))
            }
            P2PMessage::Data { text } => {
                let verdict = limits.data.admit(|| links.clock().now_ms());
                if verdict != Verdict::Pass {
                    stats::add(&links.stats().data_rate_limited, 1);
                    return over_limit(links, verdict);
                }
                links.deliver(Event::Message {
                    from_id: link.node_id(),
                    from: link.addr(),
                    text,
                })
            }
            P2PMessage::Broadcast(b) => {
                match self
                    .broadcast
                    .on_broadcast(links, b, link, &mut limits.broadcasts)
                {
                    Ok(waited) => waited,
                    Err(verdict) => return over_limit(links, verdict),
                }
            }
            P2PMessage::Ping { nonce } => match heartbeat::on_ping(links, link, nonce) {
                Ok(()) => false,
                Err(reason) => return Flow::Close(reason),
            },
            P2PMessage::Pong { nonce } => {
                heartbeat::on_pong(links, link, nonce);
                false
            }
            P2PMessage::Peers { addrs } => {
                self.membership.on_peers(links, &addrs, link);
                false
            }
            P2PMessage::IHave { ids } => {
                self.broadcast.on_ihave(links, &ids, link);
                false
            }
            P2PMessage::Graft { ids } => {
                self.broadcast.on_graft(links, &ids, link);
                false
            }
            P2PMessage::Prune { origin } => {
                self.broadcast.on_prune(link, origin);
                false
            }
            P2PMessage::Leave => {
                self.membership.defer_redial(&link.addr());
                return Flow::Close(DownReason::Left);
            }
        };
        if waited {
            Flow::Waited
        } else {
            Flow::Continue
        }
    }

    /// A connection was registered as a link: `source` is its socket's remote IP,
    /// `observed` what its JOIN says our IP is. Runs before `PeerUp` is reported.
    pub(crate) fn link_registered(
        &self,
        links: &Links,
        link: &Link,
        source: IpAddr,
        observed: Option<IpAddr>,
    ) {
        self.membership
            .link_registered(links, link, source, observed);
    }

    /// A link is ready to carry frames (its writer runs): it gets our address list.
    pub(crate) fn link_up(&self, links: &Links, link: &Link) {
        self.membership.send_peer_list(links, link);
    }

    /// A connection that had been registered or retired ended: what the protocols
    /// kept for it goes.
    pub(crate) fn link_down(&self, conn_id: u64) {
        self.membership.link_down(conn_id);
        self.broadcast.link_down(conn_id);
    }

    /// The timed work of the protocols, run by the maintenance thread at every tick:
    /// heartbeats and the periodic peer exchange. Returns nothing to dial: that is
    /// [`Membership::dial_plan`].
    pub(crate) fn tick(&self, links: &Links, exchange: bool) {
        heartbeat::tick(links);
        self.broadcast.sweep(links);
        if exchange {
            self.membership.exchange(links);
        }
    }

    /// Announcements and GRAFTs that are due; returns when the next are.
    pub(crate) fn due(&self, links: &Links, now: Instant) -> Option<Instant> {
        self.broadcast.due(links, now)
    }
}

/// What the reader does with a frame its limit refused (already counted): read on,
/// or close a link that stayed over the limit for the grace time.
fn over_limit(links: &Links, verdict: Verdict) -> Flow {
    match verdict {
        Verdict::Abusive => {
            stats::add(&links.stats().links_rate_limited, 1);
            Flow::Close(DownReason::RateLimited)
        }
        Verdict::Pass | Verdict::Drop => Flow::Continue,
    }
}
