//! `Event`, `PeerInfo`, `Direction`: what a node tells the program that embeds it.
//!
//! The C++ `PeerConnection::run` printed what it received with `std::cout`. A library
//! must not own stdout, so the node sends events on a channel instead, and the
//! `p2p-node` binary is just one consumer that prints them (`cli.rs`).

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
}

/// Something that happened on the overlay, in the order the node saw it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// A link completed its handshake.
    PeerUp(PeerInfo),
    /// A link closed.
    PeerDown {
        /// The peer's id.
        node_id: NodeId,
        /// The peer's listen address.
        addr: SocketAddr,
        /// Why: `"left"`, `"heartbeat timeout"`, `"connection closed"`, ...
        reason: String,
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
