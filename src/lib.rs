//! A small decentralized peer-to-peer overlay: nodes join through any known node,
//! discover the rest of the network, exchange direct messages and broadcast to every
//! node, with no central server.
//!
//! This crate is a readable Rust port of a C++/Poco program (`P2P_Node`), class for
//! class, that works the way the original only claimed to:
//!
//! | C++                          | Rust                                              |
//! |------------------------------|---------------------------------------------------|
//! | `Node`                       | [`Node`] (`node.rs`)                              |
//! | `Node::handleJoin`           | `Links::register` (`links.rs`), called by each connection |
//! | `PeerConnectionFactory`      | `PeerConnectionFactory` (`peer_connection_factory.rs`) |
//! | `PeerConnection::run`        | `PeerConnection::run` (`peer_connection.rs`)      |
//! | `P2PMessage`, `MessageType`  | [`P2PMessage`], [`MessageType`] (`p2p_message.rs`) |
//! | `main.cpp`                   | `src/main.rs` + `src/cli.rs` (binary only)        |
//!
//! The command language and the output lines (`src/cli.rs`) belong to the `p2p-node`
//! binary, not to this library's API: the library never prints, it hands out data and
//! [`Event`]s.
//!
//! # Layers
//!
//! Imports only go down this list; no file imports one above it (checked by
//! `../shared/tools/module_cycles.py`: no cycles).
//!
//! ```text
//!  node.rs                     the public face: Node, NodeInfo
//!    |
//!  maintenance.rs              thread `maint`: ticks, timed protocol work, dials
//!    |
//!  peer_connection_factory.rs  acceptor loop, dials: a stream -> a connection thread
//!    |
//!  peer_connection.rs          one connection: handshake, register, reader loop
//!    |
//!  shared.rs                   Shared { links, protocols }: composition only
//!    |
//!  protocol/                   mod.rs: Protocols, the one dispatch entry point
//!    |                           membership.rs   JOIN rules, PEERS, address book, own address
//!    |                           heartbeat.rs    PING/PONG, silent links
//!    |                           broadcast/      BROADCAST, IHAVE, GRAFT, PRUNE: the tree
//!  links.rs                    Links: the link manager (table, queueing, events, closing)
//!    |
//!  state/                      plain data, no locks, no sockets: peer_table, eviction,
//!    |                         known_addrs, peer_cache, seen_cache, replay, rate_limit,
//!    |                         observed, net, stats (the counters)
//!  transport/                  Stream and its halves (every byte), outbox, spawn_named
//!
//!  ground, importable from any layer: p2p_message, config, error, event, clock
//! ```
//!
//! A new message type touches `p2p_message.rs` and one protocol file; a new kind of
//! stream (TLS, a relayed circuit) touches `transport/` and the handshake's upgrade
//! step. `docs/ARCHITECTURE.md` has the threads, locks, queues and every deliberate
//! difference from the C++; `docs/PROTOCOL.md` the wire format.
//!
//! # Example
//!
//! Two nodes on loopback, one joining the other, exchanging a direct message:
//!
//! ```
//! use std::time::Duration;
//! use p2p_overlay::{Config, Event, Node};
//!
//! # fn main() -> Result<(), p2p_overlay::Error> {
//! let localhost = "127.0.0.1".parse().unwrap();
//! let a = Node::start(Config::new(localhost, 0))?;
//! let b = Node::start(Config::new(localhost, 0))?;
//!
//! b.connect_to_peer(a.local_addr())?;
//! b.send_data_to_peer(a.local_addr(), "Hello from Node B!")?;
//!
//! let events = a.events();
//! loop {
//!     match events.recv_timeout(Duration::from_secs(10)).expect("an event") {
//!         Event::Message { from, text, .. } => {
//!             assert_eq!(from, b.local_addr());
//!             assert_eq!(text, "Hello from Node B!");
//!             break;
//!         }
//!         _ => continue, // PeerUp comes first
//!     }
//! }
//! a.stop();
//! b.stop();
//! # Ok(())
//! # }
//! ```

#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod clock;
mod config;
mod error;
mod event;
pub mod identity;
mod links;
mod maintenance;
mod node;
pub mod p2p_message;
mod peer_connection;
mod peer_connection_factory;
mod protocol;
mod shared;
mod state;
mod transport;

pub use config::Config;
pub use error::{Error, HandshakeError};
pub use event::{Direction, DownReason, Encryption, Event, PeerInfo};
pub use identity::{Identity, IdentityError, NetworkCa};
pub use node::{resolve_peer_addr, Node, NodeInfo};
pub use p2p_message::{MessageType, NodeId, P2PMessage, PeerEntry};
pub use state::known_addrs::{self, KnownAddr};
pub use state::peer_cache;
pub use state::stats::{Counter, Counters};

#[cfg(test)]
mod tests {
    use super::*;

    fn assert_send_sync<T: Send + Sync>() {}

    #[test]
    fn public_types_are_send_and_sync() {
        assert_send_sync::<Node>();
        assert_send_sync::<Event>();
        assert_send_sync::<Error>();
        assert_send_sync::<Config>();
    }
}
