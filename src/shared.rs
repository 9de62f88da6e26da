//! `Shared`: what every thread of a node holds, and nothing else. It is composition
//! only: the link manager ([`Links`]) and the protocols ([`Protocols`]), plus the facts
//! fixed at start (id, identity, TLS configs, bound address). Behaviour lives in those modules, not here.

use std::net::SocketAddr;

use crate::identity::Identity;
use crate::links::Links;
use crate::p2p_message::NodeId;
use crate::protocol::Protocols;
use crate::transport::tls::TlsContext;

/// The node's shared state; see the module docs.
pub(crate) struct Shared {
    /// This node's id: `identity.node_id()`.
    pub(crate) id: NodeId,
    /// The key pair the id comes from; signs our broadcasts.
    pub(crate) identity: Identity,
    /// Certificates and configs for TLS links; `None` when the node runs plaintext.
    pub(crate) tls: Option<TlsContext>,
    /// The address the listener is bound to.
    pub(crate) local_addr: SocketAddr,
    pub(crate) links: Links,
    pub(crate) protocols: Protocols,
}
