//! `Event`, `PeerInfo`, `Direction`: what a node tells the program that embeds it.
//!
//! The C++ `PeerConnection::run` printed what it received with `std::cout`. A library
//! must not own stdout, so the node sends events on a channel instead, and the
//! `p2p-node` binary is just one consumer that prints them (`cli.rs`).

use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

use crate::p2p_message::NodeId;

/// Which side opened the TCP connection of a link.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Direction {
    /// The peer dialled us.
    Inbound,
    /// We dialled the peer.
    Outbound,
}

impl Direction {
    /// `"in"` or `"out"`, as `peers` prints it.
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::Inbound => "in",
            Direction::Outbound => "out",
        }
    }
}

/// How a link's bytes travel: what `peers` prints as `enc=`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Encryption {
    /// TLS 1.3, both ends authenticated by certificate; the node id is proven.
    Tls,
    /// Unencrypted (`--plaintext`): for debugging and comparison only; the node id is
    /// a claim.
    Plain,
}

impl Encryption {
    /// `"tls"` or `"plain"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Encryption::Tls => "tls",
            Encryption::Plain => "plain",
        }
    }
}

/// A snapshot of one link, copied out of the peer table so no lock is held while the
/// caller looks at it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerInfo {
    /// The peer's id.
    pub node_id: NodeId,
    /// The peer's listen address (socket IP or its advertised one, plus its listen
    /// port): what a user can dial, never the ephemeral source port.
    pub addr: SocketAddr,
    /// Who dialled.
    pub direction: Direction,
    /// The last heartbeat round trip, `None` until the first PONG.
    pub rtt: Option<Duration>,
    /// Time since the handshake completed.
    pub connected_for: Duration,
    /// How the link is carried. With [`Encryption::Tls`], `node_id` is the id proven
    /// by the peer's certificate.
    pub encryption: Encryption,
    /// Whether `addr` is proven to reach this peer: we dialled it, or (for a peer
    /// that dialled us) a dial-back PROBE found its id listening at the address its
    /// JOIN claims. When `false`, `addr` is the socket's remote address (the peer's
    /// ephemeral source port), not a listen address: nothing dials or gossips it.
    pub addr_verified: bool,
}

/// Something that happened on the overlay, in the order the node saw it. More kinds
/// may come (hence `non_exhaustive`): match with a `_` arm.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Event {
    /// A link completed its handshake.
    PeerUp(PeerInfo),
    /// A link closed.
    PeerDown {
        /// The peer's id.
        node_id: NodeId,
        /// The peer's listen address.
        addr: SocketAddr,
        /// Why; its `Display` is the text the binary prints.
        reason: DownReason,
    },
    /// A direct message from a linked peer.
    Message {
        /// The sender's id.
        from_id: NodeId,
        /// The sender's listen address.
        from: SocketAddr,
        /// The text, verbatim.
        text: String,
    },
    /// A broadcast, delivered once per node however many copies arrive.
    Broadcast {
        /// The origin's id.
        origin_id: NodeId,
        /// The origin's listen address as the origin announced it.
        origin: SocketAddr,
        /// Links the message travelled to get here (1 for a direct neighbour).
        hops: u8,
        /// The text, verbatim.
        text: String,
    },
}

/// Why a link went down. `Display` gives the text `peer down: <addr> (<reason>)` prints
/// (docs/PROTOCOL.md lists them all); match on the variant, not the text.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum DownReason {
    /// The peer said LEAVE: it is going away on purpose.
    Left,
    /// Nothing arrived for the peer timeout.
    HeartbeatTimeout,
    /// The peer closed the connection between two frames.
    ClosedByPeer,
    /// This node stopped.
    NodeStopped,
    /// The application closed the link (`Node::remove_peer`, `disconnect`).
    RemovedLocally,
    /// The peer stopped reading: its outbound queue stayed full.
    QueueFull,
    /// The peer stopped reading: one send to it made no progress for the write
    /// timeout (twice the peer timeout), though its queue was not full.
    NotReading,
    /// Another node completed a handshake with the same listen address after this one
    /// had gone silent (the node there restarted with a new id).
    Replaced,
    /// The inbound slots were full and this link, the youngest unprotected one of the
    /// most represented source group, made room for a newcomer of a less represented
    /// group.
    Evicted,
    /// Reading the socket failed (reset, timeout); the OS error text.
    ReadFailed(String),
    /// The peer sent a frame that breaks the protocol; what was wrong with it.
    BadFrame(String),
    /// The peer sent a second JOIN on a live link.
    SecondJoin,
    /// The peer kept sending broadcasts or direct messages over its rate limit for
    /// longer than `Config::rate_limit_grace`.
    RateLimited,
    /// The OS refused the link's writer thread.
    NoWriterThread,
    /// The socket failed while this node was stopping; the OS error text.
    Stopping(String),
}

impl DownReason {
    /// Whether the link ended the normal way (logged at info) rather than by a fault
    /// of the peer or the socket (logged as a warning).
    pub fn is_clean(&self) -> bool {
        matches!(
            self,
            DownReason::Left
                | DownReason::ClosedByPeer
                | DownReason::NodeStopped
                | DownReason::RemovedLocally
                | DownReason::Stopping(_)
        )
    }
}

impl fmt::Display for DownReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DownReason::Left => f.write_str("left"),
            DownReason::HeartbeatTimeout => f.write_str("heartbeat timeout"),
            DownReason::ClosedByPeer => f.write_str("connection closed by peer"),
            DownReason::NodeStopped => f.write_str("node stopped"),
            DownReason::RemovedLocally => f.write_str("removed locally"),
            DownReason::QueueFull => f.write_str("outbound queue full"),
            DownReason::NotReading => f.write_str("peer stopped reading (send timed out)"),
            DownReason::Replaced => f.write_str("replaced by a new node on the same address"),
            DownReason::Evicted => f.write_str("evicted for a more diverse peer"),
            DownReason::ReadFailed(e) => write!(f, "read failed: {e}"),
            DownReason::BadFrame(e) => f.write_str(e),
            DownReason::SecondJoin => f.write_str("second JOIN on a live link"),
            DownReason::RateLimited => f.write_str("too many messages (rate limit)"),
            DownReason::NoWriterThread => f.write_str("no writer thread"),
            DownReason::Stopping(e) => write!(f, "node stopping ({e})"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn down_reasons_print_the_documented_texts() {
        let cases = [
            (DownReason::Left, "left"),
            (DownReason::HeartbeatTimeout, "heartbeat timeout"),
            (DownReason::ClosedByPeer, "connection closed by peer"),
            (DownReason::NodeStopped, "node stopped"),
            (DownReason::RemovedLocally, "removed locally"),
            (DownReason::QueueFull, "outbound queue full"),
            (
                DownReason::NotReading,
                "peer stopped reading (send timed out)",
            ),
            (
                DownReason::Replaced,
                "replaced by a new node on the same address",
            ),
            (DownReason::Evicted, "evicted for a more diverse peer"),
            (
                DownReason::ReadFailed("connection reset".into()),
                "read failed: connection reset",
            ),
            (
                DownReason::BadFrame("frame length 0".into()),
                "frame length 0",
            ),
            (DownReason::SecondJoin, "second JOIN on a live link"),
            (DownReason::RateLimited, "too many messages (rate limit)"),
            (DownReason::NoWriterThread, "no writer thread"),
            (
                DownReason::Stopping("reset".into()),
                "node stopping (reset)",
            ),
        ];
        for (reason, text) in cases {
            assert_eq!(reason.to_string(), text);
        }
        assert!(DownReason::Left.is_clean());
        assert!(!DownReason::QueueFull.is_clean());
        assert!(!DownReason::RateLimited.is_clean());
        assert!(!DownReason::NotReading.is_clean());
    }
}
