//! `Error`: what the library API reports. The C++ original printed failures and
//! carried on; here every public operation says what went wrong and with which value,
//! so the CLI can print one clear line and an embedding program can decide.

use std::fmt;
use std::io;
use std::net::SocketAddr;

use crate::identity::IdentityError;
use crate::p2p_message::{DecodeError, MessageType, NodeId, PROTOCOL_VERSION};

/// Errors of the [`Node`](crate::Node) API. More may come: match with a `_` arm.
#[derive(Debug)]
#[non_exhaustive]
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
    /// The connection was made but the JOIN exchange failed or was refused.
    Handshake {
        /// The address dialled.
        addr: SocketAddr,
        /// Why it failed.
        reason: HandshakeError,
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
    /// `max_connections` sockets are open (accepted and dialled, in any state), so
    /// no dial was started. Nothing was sent; the address is not marked as failing.
    /// Retry once connections have closed.
    TooManyConnections {
        /// `Config::max_connections`.
        max: usize,
    },
    /// The identity key, certificate or network CA file is missing, unreadable or
    /// wrong.
    Identity(IdentityError),
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
            Error::TooManyConnections { max } => write!(
                f,
                "{max} connections open, the most this node allows: dial not started"
            ),
            Error::Identity(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Bind { source, .. } | Error::Connect { source, .. } => Some(source),
            Error::Thread(e) => Some(e),
            Error::Handshake { reason, .. } => Some(reason),
            Error::Identity(e) => Some(e),
            _ => None,
        }
    }
}

/// Why a connection did not become a link. Each `Display` names the value involved.
#[derive(Debug)]
#[non_exhaustive]
pub enum HandshakeError {
    /// This node is stopping.
    Stopping,
    /// The socket could not be set up (timeouts).
    Setup(io::Error),
    /// Our JOIN could not be sent.
    Send(io::Error),
    /// The peer closed the connection before its JOIN arrived.
    ClosedEarly,
    /// No complete JOIN within the handshake timeout (milliseconds).
    Timeout {
        /// The handshake timeout, in milliseconds.
        ms: u128,
    },
    /// The first frame could not be read or decoded.
    BadFrame(DecodeError),
    /// The first frame was a valid message, but not JOIN.
    NotJoin(MessageType),
    /// The peer speaks another protocol version.
    Version {
        /// The version in its JOIN.
        theirs: u16,
    },
    /// The peer belongs to another overlay.
    Network {
        /// The network name in its JOIN.
        theirs: String,
        /// Ours.
        ours: String,
    },
    /// The JOIN's listen port is 0: nobody could dial the peer back.
    ListenPortZero,
    /// This node has all the links it allows; the peer was referred elsewhere.
    LinkLimit {
        /// `max_links`.
        max_links: usize,
        /// `max_inbound_links`.
        max_inbound: usize,
    },
    /// Another node that is alive is linked under the listen address the peer claims.
    AddressTaken(SocketAddr),
    /// `connect_to_peer` got no outcome within the connect plus handshake timeout.
    NoAnswer,
    /// Another dial of the same address was already running, and it did not end in a
    /// link.
    ConcurrentDialFailed,
    /// The TLS handshake failed: a certificate refused (ours or theirs: not
    /// self-signed or not from the network CA, expired, another node than expected,
    /// not Ed25519), an alert, or a record that is not TLS. The text is rustls's.
    Tls(String),
    /// The TLS handshake did not complete within the handshake timeout (milliseconds).
    TlsTimeout {
        /// The handshake timeout, in milliseconds.
        ms: u128,
    },
    /// This node runs TLS and the peer spoke plaintext (its first bytes were no TLS
    /// record).
    PeerPlaintext,
    /// This node runs plaintext (`--plaintext`) and the peer spoke TLS.
    PeerTls,
    /// The JOIN claims another node id than the one the peer's certificate proves.
    IdMismatch {
        /// The id in the JOIN.
        claimed: NodeId,
        /// The id of the certificate's key.
        proven: NodeId,
    },
    /// The TLS session could not be set up on our side.
    TlsSetup(String),
    /// The dial expected node `expected` at the address (address book, peer cache,
    /// PEERS) and the certificate there is for node `got`: checked inside the TLS
    /// certificate verification, before any JOIN is sent.
    WrongNode {
        /// The id the certificate proves.
        got: NodeId,
        /// The id the dial expected.
        expected: NodeId,
    },
    /// The connection was a dial-back PROBE (its first frame), answered by the JOIN
    /// we sent: a check of our id at our listen address, not a failure.
    Probed,
}

impl fmt::Display for HandshakeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HandshakeError::Stopping => f.write_str("node is stopping"),
            HandshakeError::Setup(e) => write!(f, "cannot set timeout: {e}"),
            HandshakeError::Send(e) => write!(f, "cannot send JOIN: {e}"),
            HandshakeError::ClosedEarly => f.write_str("closed before sending JOIN"),
            HandshakeError::Timeout { ms } => write!(f, "no JOIN within {ms} ms"),
            HandshakeError::BadFrame(e) => write!(f, "{e}"),
            HandshakeError::NotJoin(t) => write!(f, "expected JOIN, got {t:?} first"),
            HandshakeError::Version { theirs } => {
                write!(f, "protocol version {theirs} (we speak {PROTOCOL_VERSION})")
            }
            HandshakeError::Network { theirs, ours } => {
                write!(f, "network {theirs:?} (we are {ours:?})")
            }
            HandshakeError::ListenPortZero => f.write_str("listen port 0"),
            HandshakeError::LinkLimit {
                max_links,
                max_inbound,
            } => write!(
                f,
                "link limit reached ({max_links} links, at most {max_inbound} inbound)"
            ),
            HandshakeError::AddressTaken(addr) => {
                write!(f, "{addr} is linked to another node that is alive")
            }
            HandshakeError::NoAnswer => f.write_str("no answer in time"),
            HandshakeError::ConcurrentDialFailed => {
                f.write_str("the concurrent dial did not produce a link")
            }
            HandshakeError::Tls(e) => write!(f, "TLS handshake refused: {e}"),
            HandshakeError::TlsTimeout { ms } => {
                write!(f, "TLS handshake not done within {ms} ms")
            }
            HandshakeError::PeerPlaintext => f.write_str(
                "peer speaks plaintext, this node TLS: start both with or both without \
                 --plaintext",
            ),
            HandshakeError::PeerTls => f.write_str(
                "peer speaks TLS, this node runs --plaintext: start both with or both \
                 without --plaintext",
            ),
            HandshakeError::IdMismatch { claimed, proven } => write!(
                f,
                "JOIN claims node id {claimed} but the certificate proves {proven}"
            ),
            HandshakeError::TlsSetup(e) => write!(f, "cannot set up TLS: {e}"),
            HandshakeError::Probed => f.write_str("dial-back probe answered"),
            HandshakeError::WrongNode { got, expected } => {
                write!(f, "certificate is for node {got}, expected node {expected}")
            }
        }
    }
}

impl std::error::Error for HandshakeError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            HandshakeError::Setup(e) | HandshakeError::Send(e) => Some(e),
            HandshakeError::BadFrame(e) => Some(e),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn handshake_errors_name_the_value_involved() {
        let cases: Vec<(HandshakeError, &str)> = vec![
            (HandshakeError::Stopping, "node is stopping"),
            (HandshakeError::ClosedEarly, "closed before sending JOIN"),
            (
                HandshakeError::Timeout { ms: 5000 },
                "no JOIN within 5000 ms",
            ),
            (
                HandshakeError::NotJoin(MessageType::Data),
                "expected JOIN, got Data first",
            ),
            (
                HandshakeError::Version { theirs: 1 },
                "protocol version 1 (we speak 3)",
            ),
            (
                HandshakeError::Network {
                    theirs: "b".into(),
                    ours: "a".into(),
                },
                "network \"b\" (we are \"a\")",
            ),
            (HandshakeError::ListenPortZero, "listen port 0"),
            (
                HandshakeError::LinkLimit {
                    max_links: 128,
                    max_inbound: 64,
                },
                "link limit reached (128 links, at most 64 inbound)",
            ),
            (
                HandshakeError::AddressTaken("127.0.0.1:9000".parse().expect("addr")),
                "127.0.0.1:9000 is linked to another node that is alive",
            ),
            (HandshakeError::NoAnswer, "no answer in time"),
            (
                HandshakeError::ConcurrentDialFailed,
                "the concurrent dial did not produce a link",
            ),
        ];
        for (e, text) in cases {
            assert_eq!(e.to_string(), text);
        }
        let e = Error::Handshake {
            addr: "127.0.0.1:1".parse().expect("addr"),
            reason: HandshakeError::ListenPortZero,
        };
        assert_eq!(
            e.to_string(),
            "handshake with 127.0.0.1:1 failed: listen port 0"
        );
        assert!(std::error::Error::source(&e).is_some());
        assert_eq!(
            Error::TooManyConnections { max: 192 }.to_string(),
            "192 connections open, the most this node allows: dial not started"
        );
    }
}
