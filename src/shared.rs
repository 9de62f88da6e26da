//! `Shared`: what every thread of a node holds, and nothing else. It is composition
//! only: the link manager ([`Links`]) and the protocols ([`Protocols`]), plus the two
//! facts fixed at start. Behaviour lives in those modules, not here.

use std::net::SocketAddr;

use crate::links::Links;
use crate::p2p_message::NodeId;
use crate::protocol::Protocols;

/// The node's shared state; see the module docs.
pub(crate) struct Shared {
    /// This node's id, chosen at start.
    pub(crate) id: NodeId,
    /// The address the listener is bound to.
    pub(crate) local_addr: SocketAddr,
    pub(crate) links: Links,
    pub(crate) protocols: Protocols,
}
