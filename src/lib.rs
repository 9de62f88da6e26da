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
//! | `PeerConnectionFactory`      | `PeerConnectionFactory` (`peer_connection_factory.rs`) |
//! | `PeerConnection::run`        | `PeerConnection::run` (`peer_connection.rs`)      |
//! | `P2PMessage`, `MessageType`  | [`P2PMessage`], [`MessageType`] (`p2p_message.rs`) |
//! | `main.cpp`                   | `src/main.rs` + `src/cli.rs` (binary only)        |
//!
//! The command language and the output lines (`src/cli.rs`) belong to the `p2p-node`
//! binary, not to this library's API: the library never prints, it hands out data and
//! [`Event`]s.
//!
//! What the C++ lacked has modules of its own: the peer table (`peer_table.rs`), the
//! address book ([`known_addrs`]) and its file ([`peer_cache`]), the broadcast
//! seen-cache (`seen_cache.rs`), the
//! heartbeat and dial loop (`maintenance.rs`), [`Config`], [`Error`], [`Event`].
//! `docs/ARCHITECTURE.md` has the threads, locks and every deliberate difference;
//! `docs/PROTOCOL.md` the wire format.
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
pub use event::{Direction, DownReason, Event, PeerInfo};
pub use node::{resolve_peer_addr, Node, NodeInfo};
pub use p2p_message::{MessageType, NodeId, P2PMessage};
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
