//! `Error`: what the library API reports. The C++ original printed failures and
//! carried on; here every public operation says what went wrong and with which value,
//! so the CLI can print one clear line and an embedding program can decide.

use std::fmt;
use std::io;
use std::net::SocketAddr;

/// Errors of the [`Node`](crate::Node) API.
#[derive(Debug)]
pub enum Error {
    /// The listening socket could not be bound (port in use, no permission, ...).
    Bind {
        /// The address that was asked for.
        addr: SocketAddr,
        /// The OS error.
        source: io::Error,
    },
    /// A [`Config`](crate::Config) value is out of range.
    InvalidConfig(String),
    /// A peer address could not be parsed or resolved.
    BadAddress(String),
    /// The node has been stopped.
    NotRunning,
    /// The TCP connection to a peer could not be made.
    Connect {
        /// The address dialled.
        addr: SocketAddr,
        /// The OS error.
        source: io::Error,
    },
    /// The connection was made but the JOIN exchange failed.
    Handshake {
        /// The address dialled.
        addr: SocketAddr,
        /// Why it failed.
        reason: String,
    },
    /// The address turned out to be this node itself.
    SelfDial(SocketAddr),
    /// A message is larger than the frame limit allows.
    MessageTooLarge {
        /// Frame length the message needs.
        len: usize,
        /// Configured maximum frame length.
        max: u32,
    },
    /// The link's outbound queue stayed full: the peer is not reading, and was
    /// dropped.
    PeerTooSlow(SocketAddr),
    /// The link closed before the message could be queued.
    LinkClosed(SocketAddr),
    /// The OS refused to start a thread.
    Thread(io::Error),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Bind { addr, source } => write!(f, "cannot listen on {addr}: {source}"),
            Error::InvalidConfig(msg) => write!(f, "invalid configuration: {msg}"),
            Error::BadAddress(msg) => write!(f, "bad peer address: {msg}"),
            Error::NotRunning => write!(f, "the node is not running"),
            Error::Connect { addr, source } => write!(f, "cannot connect to {addr}: {source}"),
            Error::Handshake { addr, reason } => {
                write!(f, "handshake with {addr} failed: {reason}")
            }
            Error::SelfDial(addr) => write!(f, "{addr} is this node itself"),
            Error::MessageTooLarge { len, max } => {
                write!(f, "message needs a {len}-byte frame, the maximum is {max}")
            }
            Error::PeerTooSlow(addr) => {
                write!(f, "peer {addr} is not reading its messages and was dropped")
            }
            Error::LinkClosed(addr) => write!(f, "the link to {addr} closed"),
            Error::Thread(e) => write!(f, "cannot start a thread: {e}"),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Bind { source, .. } | Error::Connect { source, .. } => Some(source),
            Error::Thread(e) => Some(e),
            _ => None,
        }
    }
}
