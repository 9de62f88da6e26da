//! Heartbeat: PING/PONG on every link, its round trip, and dropping a link that has
//! gone silent. The C++ original declared PING and PONG and never sent either, so it
//! never noticed a dead peer.
//!
//! The state it works on lives in each `Link` as atomics (last frame, last PING,
//! last round trip), because the reader touches it on every frame and must not take
//! a lock for that. A PING carries the sender's clock in microseconds; the PONG
//! echoes it, so the round trip needs no table of outstanding nonces.

use std::time::Duration;

use crate::event::DownReason;
use crate::links::{Link, Links, Queued};
use crate::p2p_message::P2PMessage;

/// Answers a PING. Fails when the peer has left thousands of our frames unread.
pub(crate) fn on_ping(links: &Links, link: &Link, nonce: u64) -> Result<(), DownReason> {
    let pong = P2PMessage::Pong { nonce }.encode();
    match links.queue_control(link, &pong) {
        Queued::PeerDropped => Err(DownReason::QueueFull),
        Queued::Yes | Queued::LinkClosing => Ok(()),
    }
}

/// A PONG for one of our PINGs: its nonce is our clock when we sent it. A nonce from
/// the future (a confused or lying peer) is ignored.
pub(crate) fn on_pong(links: &Links, link: &Link, nonce: u64) {
    let now = links.clock().now_us();
    if nonce <= now {
        link.set_rtt(Duration::from_micros(now - nonce));
    }
}

/// Pings links that are due (one PING per heartbeat interval) and drops links that
/// have been silent for the peer timeout. Run by the maintenance thread.
pub(crate) fn tick(links: &Links) {
    let config = links.config();
    let now_ms = links.clock().now_ms();
    let interval_ms = config.heartbeat_interval.as_millis() as u64;
    let timeout_ms = config.peer_timeout.as_millis() as u64;
    let mut ping: Option<Vec<u8>> = None;
    for link in links.links() {
        let silent = link.silent_ms(now_ms);
        if silent > timeout_ms {
            log::warn!("{}: silent for {silent} ms, dropping the peer", link.addr());
            links.close(&link, DownReason::HeartbeatTimeout);
            continue;
        }
        if link.ping_due(now_ms, interval_ms) {
            let frame = ping.get_or_insert_with(|| {
                P2PMessage::Ping {
                    nonce: links.clock().now_us(),
                }
                .encode()
            });
            links.queue_control(&link, frame);
        }
    }
}
