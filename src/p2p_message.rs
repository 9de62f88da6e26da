//! The wire codec: `MessageType` and `P2PMessage`, the Rust form of the C++ `P2PMessage.h`.
//!
//! The C++ original sent one text line per TCP connection (`"1|hello\n"`), with no length
//! limit. Here every message is a length-prefixed binary frame on a persistent link:
//!
//! ```text
//!  0               4       5
//! +---------------+-------+------------------------------+
//! | length: u32   | type  | body (length - 1 bytes)      |
//! | big-endian    | u8    | layout depends on the type   |
//! +---------------+-------+------------------------------+
//! ```
//!
//! `length` counts the type byte and the body, never itself. It is checked against the
//! configured maximum *before* any buffer is allocated, so a peer cannot make a node
//! allocate what it asks for. `docs/PROTOCOL.md` gives every body layout byte by byte.
//!
//! Two levels, in the manner of smoltcp: [`read_frame`] turns a byte stream into one
//! bounded frame (type byte + body), and [`P2PMessage::decode`] turns a frame into a typed
//! message or a [`DecodeError`] saying exactly what was wrong. Nothing in this module
//! panics on peer input: every field is read through the bounds-checked `Body` cursor.

use std::fmt;
use std::io::{self, Read};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use byteorder::{BigEndian, ByteOrder, WriteBytesExt};

/// Version carried in every JOIN. A node closes links whose version differs, because
/// this protocol has no negotiation: both sides must parse each other's frames.
/// Version 3 added the origin's public key and signature to BROADCAST.
pub const PROTOCOL_VERSION: u16 = 3;

/// Bytes of an Ed25519 public key, as BROADCAST carries it. Defined here, with the
/// wire layout, and re-exported by `identity` (which imports this module, so this
/// one cannot import it).
pub const PUBLIC_KEY_LEN: usize = 32;

/// Bytes of an Ed25519 signature, as BROADCAST carries it.
pub const SIGNATURE_LEN: usize = 64;

/// What every broadcast signature signs first (NUL included), so a signature made
/// for a broadcast can never be taken for one over some other message of this or
/// another protocol that the same key signs (the TLS handshake, a later message
/// type), and a later layout gets a domain of its own.
pub const BROADCAST_SIGNING_DOMAIN: &[u8] = b"p2p-overlay broadcast v3\0";

/// Default cap on `length` (1 MiB). Large enough for any text a person types, small
/// enough that a hostile length prefix costs at most this much memory per connection.
pub const DEFAULT_MAX_FRAME: u32 = 1 << 20;

/// Largest frame accepted before the handshake completes. A JOIN is at most 121 bytes
/// (with the longest network name and two IPv6 addresses); the rest is room for
/// fields a later version may append. Until a peer has joined it gets no more memory
/// than this.
pub const MAX_JOIN_FRAME: u32 = 1024;

/// Bytes in the length prefix.
pub const LEN_PREFIX: usize = 4;

/// Longest network name a JOIN may carry, in bytes.
pub const MAX_NETWORK_NAME: usize = 64;

/// Most entries one IHAVE (17 bytes each) or GRAFT (16 bytes each) may carry; a
/// sender with more splits them over several frames.
pub const MAX_IDS_PER_MESSAGE: usize = 4096;

/// A broadcast's unique id: its origin and the origin's sequence number.
pub type BroadcastId = (NodeId, u64);

/// One IHAVE entry: a broadcast the sender has, and the hop count it arrived with
/// (0 for its own), so the receiver can tell whether the sender is nearer the origin
/// than its current parent in the broadcast tree.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Announcement {
    /// The broadcast.
    pub id: BroadcastId,
    /// Links it travelled to reach the sender.
    pub hops: u8,
}

/// Most entries one PEERS message may carry; a longer list is a decode error, so a
/// peer cannot flood the address book through one frame.
pub const MAX_PEERS_PER_MESSAGE: usize = 1000;

/// A node's random 64-bit identity, chosen at every start.
///
/// Links are keyed by id rather than address, so one node reached through two
/// addresses (or dialled by both sides at once) still ends up with one link, and a node
/// recognises itself when it dials its own address.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NodeId(pub u64);

impl NodeId {
    /// A fresh id from the standard library's randomly seeded hasher. It is not a
    /// secret (links are not authenticated yet), it only needs to differ between nodes.
    pub fn random() -> NodeId {
        use std::collections::hash_map::RandomState;
        use std::hash::{BuildHasher, Hasher};
        use std::sync::atomic::{AtomicU64, Ordering};
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let mut h = RandomState::new().build_hasher();
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        h.write_u128(nanos);
        h.write_u32(std::process::id());
        h.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
        NodeId(h.finish())
    }
}

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

impl fmt::Debug for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "NodeId({self})")
    }
}

/// The message kinds, one-to-one with the C++ `enum class MessageType` (JOIN, DATA,
/// PING, PONG, UNKNOWN) plus what a working overlay needs.
///
/// `Unknown(raw)` keeps the byte, so `u8 -> MessageType` never fails and the log can
/// say which type arrived; the C++ `UNKNOWN` carried no value.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum MessageType {
    /// Handshake, first frame in both directions.
    Join,
    /// A direct text message.
    Data,
    /// Heartbeat request carrying a nonce.
    Ping,
    /// Heartbeat answer echoing the nonce.
    Pong,
    /// Peer exchange: listen addresses the sender knows.
    Peers,
    /// Flooded text with an id, a hop count, the origin's address, and the origin's
    /// public key and signature.
    Broadcast,
    /// Graceful goodbye: the receiver drops the link at once.
    Leave,
    /// Lazy push: ids of broadcasts the sender has, for a link it does not send them
    /// on eagerly.
    IHave,
    /// Asks the receiver to send these broadcasts, and to send their origins'
    /// broadcasts eagerly from now on.
    Graft,
    /// Asks the receiver to stop sending one origin's broadcasts eagerly on this link.
    Prune,
    /// Dial-back check, first frame of a probe connection instead of JOIN.
    Probe,
    /// Any other byte.
    Unknown(u8),
}

impl From<u8> for MessageType {
    fn from(b: u8) -> MessageType {
        match b {
            0 => MessageType::Join,
            1 => MessageType::Data,
            2 => MessageType::Ping,
            3 => MessageType::Pong,
            4 => MessageType::Peers,
            5 => MessageType::Broadcast,
            6 => MessageType::Leave,
            7 => MessageType::IHave,
            8 => MessageType::Graft,
            9 => MessageType::Prune,
            10 => MessageType::Probe,
            other => MessageType::Unknown(other),
        }
    }
}

impl From<MessageType> for u8 {
    fn from(t: MessageType) -> u8 {
        match t {
            MessageType::Join => 0,
            MessageType::Data => 1,
            MessageType::Ping => 2,
            MessageType::Pong => 3,
            MessageType::Peers => 4,
            MessageType::Broadcast => 5,
            MessageType::Leave => 6,
            MessageType::IHave => 7,
            MessageType::Graft => 8,
            MessageType::Prune => 9,
            MessageType::Probe => 10,
            MessageType::Unknown(b) => b,
        }
    }
}

/// The handshake. Every connection starts with one JOIN in each direction; nothing else
/// is accepted before it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Join {
    /// Must equal [`PROTOCOL_VERSION`].
    pub version: u16,
    /// The sender's id.
    pub node_id: NodeId,
    /// The port the sender accepts connections on. Together with the IP the receiver
    /// sees on the socket this is the address the sender is listed and dialled by.
    pub listen_port: u16,
    /// Overlays with different names refuse each other, so two networks on one LAN
    /// cannot merge by accident.
    pub network: String,
    /// An IP that overrides the socket's source IP (`--advertise`), for nodes behind
    /// an address the receiver cannot see; `None` means "use the socket's IP".
    pub advertise: Option<IpAddr>,
    /// The receiver's IP as the sender sees it, so a node bound to 0.0.0.0 learns the
    /// address others know it by (used as the origin of its broadcasts).
    pub observed: Option<IpAddr>,
}

/// One PEERS entry: a listen address and the id of the node the sender found
/// there. On the wire the id is 8 bytes after the address, 0 for "unknown" (a node
/// id is the first 8 bytes of a SHA-256 hash: 0 is never a real one).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct PeerEntry {
    /// The node's listen address.
    pub addr: SocketAddr,
    /// The id the sender proved at `addr` (an outbound link, a dial-back probe, or
    /// a verified peer's PEERS), or `None`.
    pub id: Option<NodeId>,
}

impl From<SocketAddr> for PeerEntry {
    /// An entry without an id.
    fn from(addr: SocketAddr) -> PeerEntry {
        PeerEntry { addr, id: None }
    }
}

/// A flooded message: delivered once by every node, forwarded on every link but the one
/// it came in on.
///
/// Signed by its origin (docs/PROTOCOL.md 3.5 "Signatures"): `public_key` must hash to
/// `origin` and `signature` must be that key's signature of
/// [`signed_bytes`](Broadcast::signed_bytes). Without it any neighbour could claim any
/// origin's id and, by taking that origin's next sequence numbers first, get the real
/// broadcasts dropped as duplicates everywhere. The bytes to sign are built here, with
/// the layout; [`sign`](Broadcast::sign) and [`verify`](Broadcast::verify) are in
/// `protocol::broadcast::signature`, because they need `identity`, which imports this
/// module.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Broadcast {
    /// The id of the node that first sent it; with `seq` the message's unique id.
    pub origin: NodeId,
    /// Per-origin sequence number.
    pub seq: u64,
    /// Links travelled so far; a node does not forward a message whose hop count has
    /// reached its hop limit.
    pub hops: u8,
    /// The origin's listen address, for display: receivers several hops away have no
    /// link to the origin to look it up.
    pub origin_addr: SocketAddr,
    /// The origin's Ed25519 public key; its hash is the origin's id (`identity`).
    pub public_key: [u8; PUBLIC_KEY_LEN],
    /// The origin's signature of [`signed_bytes`](Broadcast::signed_bytes).
    pub signature: [u8; SIGNATURE_LEN],
    /// The text, verbatim.
    pub text: String,
}

impl Broadcast {
    /// The bytes the origin signs: [`BROADCAST_SIGNING_DOMAIN`], origin id (u64 BE),
    /// seq (u64 BE), the origin address exactly as on the wire (`addr`), then the
    /// text. Everything that identifies or shows the broadcast, so none of it can be
    /// changed on the way; not `hops`, which every relay changes, and not the key and
    /// signature themselves (the key is bound to `origin` by its hash instead). The
    /// text goes last with no length: every field before it has a fixed or
    /// self-delimiting size, so two different broadcasts never give the same bytes.
    pub fn signed_bytes(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(
            BROADCAST_SIGNING_DOMAIN.len()
                + 16
                + ip_len(Some(self.origin_addr.ip()))
                + 2
                + self.text.len(),
        );
        v.extend_from_slice(BROADCAST_SIGNING_DOMAIN);
        let _ = v.write_u64::<BigEndian>(self.origin.0);
        let _ = v.write_u64::<BigEndian>(self.seq);
        put_socket_addr(&mut v, &self.origin_addr);
        v.extend_from_slice(self.text.as_bytes());
        v
    }
}

/// Why a broadcast's signature was refused ([`Broadcast::verify`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ForgedReason {
    /// The public key does not hash to the origin id: someone else's key.
    KeyNotOrigin,
    /// The signature is not the key's signature of the signed bytes (made by another
    /// key, or a field was changed after signing).
    BadSignature,
}

impl fmt::Display for ForgedReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ForgedReason::KeyNotOrigin => write!(f, "public key is not the origin's"),
            ForgedReason::BadSignature => write!(f, "signature does not verify"),
        }
    }
}

/// One decoded frame. The C++ `struct P2PMessage { type; content; }` kept every payload
/// as a string; here each type has its own typed fields, and
/// [`message_type`](P2PMessage::message_type) gives the C++ `type`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum P2PMessage {
    /// Handshake.
    Join(Join),
    /// A direct text message; the sender is the peer on the other end of the link.
    Data {
        /// The text, verbatim (UTF-8).
        text: String,
    },
    /// Heartbeat request.
    Ping {
        /// Echoed in the PONG; the sender uses it to compute the round trip time.
        nonce: u64,
    },
    /// Heartbeat answer.
    Pong {
        /// The nonce of the PING being answered.
        nonce: u64,
    },
    /// Peer exchange.
    Peers {
        /// Listen addresses of nodes the sender knows, each with the node id the
        /// sender proved there (if it knows one), so a dial can check it in TLS.
        addrs: Vec<PeerEntry>,
    },
    /// A flooded message.
    Broadcast(Broadcast),
    /// The sender is shutting down.
    Leave,
    /// Broadcasts the sender has, announced instead of sent (lazy push).
    IHave {
        /// At most [`MAX_IDS_PER_MESSAGE`].
        ids: Vec<Announcement>,
    },
    /// The sender misses these broadcasts (or found a shorter path to their origin
    /// through the receiver): send them, and send their origins' broadcasts eagerly
    /// on this link from now on.
    Graft {
        /// At most [`MAX_IDS_PER_MESSAGE`].
        ids: Vec<BroadcastId>,
    },
    /// The sender got a duplicate of a broadcast from `origin` on this link: announce
    /// that origin's broadcasts here instead of sending them. Per origin, because each
    /// origin's broadcasts need a tree of their own: one shared tree, pruned by every
    /// origin's duplicates, left nodes without a path for the others (p50 550 ms with
    /// 5 origins in 50 nodes, measured).
    Prune {
        /// The origin whose broadcasts are to be announced only.
        origin: NodeId,
    },
    /// Sent instead of JOIN as the first frame of a dial-back check: a node that got
    /// a JOIN claiming a listen address dials that address to learn whether the node
    /// listening there holds the claimed id. The probed node sends its JOIN first (as
    /// on every connection), which is the answer, and closes when it reads PROBE.
    /// Empty body.
    Probe,
}

/// Every way a frame can be wrong. The `Display` text names the number involved, because
/// it goes straight into the log line that explains why a link was closed.
#[derive(Debug)]
pub enum DecodeError {
    /// The length prefix was 0: a frame must at least carry its type byte.
    Empty,
    /// The length prefix exceeds the configured maximum; nothing was allocated.
    TooLarge {
        /// Declared length.
        len: u32,
        /// Configured maximum.
        max: u32,
    },
    /// A type byte this version does not know.
    UnknownType(u8),
    /// The input ended inside a frame or a field.
    Truncated {
        /// Bytes the frame or field needed.
        needed: usize,
        /// Bytes that were there.
        got: usize,
    },
    /// Bytes left over after the last field of a fixed-layout body.
    TrailingBytes {
        /// The type of the frame.
        kind: MessageType,
        /// How many bytes were left.
        extra: usize,
    },
    /// Text that is not valid UTF-8.
    BadUtf8,
    /// An address family tag other than 4 or 6 (or 0 where "none" is allowed).
    BadAddressFamily(u8),
    /// A PEERS list longer than [`MAX_PEERS_PER_MESSAGE`].
    TooManyPeers(usize),
    /// A JOIN network name longer than [`MAX_NETWORK_NAME`].
    NetworkNameTooLong(usize),
    /// An IHAVE or GRAFT list longer than [`MAX_IDS_PER_MESSAGE`].
    TooManyIds(usize),
    /// The socket failed (including a read timeout).
    Io(io::Error),
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DecodeError::Empty => write!(f, "empty frame (length 0)"),
            DecodeError::TooLarge { len, max } => {
                write!(f, "frame length {len} exceeds the maximum {max}")
            }
            DecodeError::UnknownType(t) => write!(f, "unknown message type {t}"),
            DecodeError::Truncated { needed, got } => {
                write!(f, "truncated input: needed {needed} bytes, got {got}")
            }
            DecodeError::TrailingBytes { kind, extra } => {
                write!(f, "{extra} unexpected trailing bytes in a {kind:?} frame")
            }
            DecodeError::BadUtf8 => write!(f, "text is not valid UTF-8"),
            DecodeError::BadAddressFamily(t) => write!(f, "bad address family tag {t}"),
            DecodeError::TooManyPeers(n) => write!(
                f,
                "peer list of {n} entries exceeds the maximum {MAX_PEERS_PER_MESSAGE}"
            ),
            DecodeError::NetworkNameTooLong(n) => write!(
                f,
                "network name of {n} bytes exceeds the maximum {MAX_NETWORK_NAME}"
            ),
            DecodeError::TooManyIds(n) => write!(
                f,
                "id list of {n} entries exceeds the maximum {MAX_IDS_PER_MESSAGE}"
            ),
            DecodeError::Io(e) => write!(f, "i/o error: {e}"),
        }
    }
}

impl std::error::Error for DecodeError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            DecodeError::Io(e) => Some(e),
            _ => None,
        }
    }
}

impl From<io::Error> for DecodeError {
    fn from(e: io::Error) -> DecodeError {
        DecodeError::Io(e)
    }
}

/// Reads one frame (type byte + body) from a stream.
///
/// Returns `Ok(None)` on a clean end of stream *between* frames (the peer closed), and
/// `Truncated` when the stream ends inside one. The length is checked against
/// `max_frame` before the body buffer is allocated. Blocks until a whole frame is in,
/// or the reader's timeout fires (`Io`).
pub fn read_frame<R: Read>(mut r: R, max_frame: u32) -> Result<Option<Vec<u8>>, DecodeError> {
    let mut head = [0u8; LEN_PREFIX];
    let got = read_full(&mut r, &mut head)?;
    if got == 0 {
        return Ok(None);
    }
    if got < LEN_PREFIX {
        return Err(DecodeError::Truncated {
            needed: LEN_PREFIX,
            got,
        });
    }
    let len = BigEndian::read_u32(&head);
    if len == 0 {
        return Err(DecodeError::Empty);
    }
    if len > max_frame {
        return Err(DecodeError::TooLarge {
            len,
            max: max_frame,
        });
    }
    let len = len as usize;
    if len <= RESERVE_AT_ONCE {
        let mut frame = vec![0u8; len];
        let got = read_full(&mut r, &mut frame)?;
        if got < len {
            return Err(DecodeError::Truncated { needed: len, got });
        }
        return Ok(Some(frame));
    }
    // A larger body grows as its bytes arrive, so a peer that announces a big frame
    // and then trickles costs what it sent, not what it announced.
    let mut frame = Vec::with_capacity(RESERVE_AT_ONCE);
    let got = r.take(len as u64).read_to_end(&mut frame)?;
    if got < len {
        return Err(DecodeError::Truncated { needed: len, got });
    }
    Ok(Some(frame))
}

/// As [`read_frame`], for a buffered reader: a frame already whole in the buffer is
/// copied out in one go (no zeroed buffer, no read loop), which is how most small
/// frames arrive on a busy link. Anything else takes the [`read_frame`] path.
pub fn read_frame_buffered<R: io::BufRead>(
    r: &mut R,
    max_frame: u32,
) -> Result<Option<Vec<u8>>, DecodeError> {
    let filled = loop {
        match r.fill_buf() {
            Ok(b) => break b.len(),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e.into()),
        }
    };
    if filled == 0 {
        return Ok(None);
    }
    // Not empty: this returns the same buffer without reading.
    let buf = r.fill_buf()?;
    if buf.len() > LEN_PREFIX {
        let len = BigEndian::read_u32(buf) as usize;
        if len > 0 && len <= max_frame as usize && buf.len() >= LEN_PREFIX + len {
            let frame = buf[LEN_PREFIX..LEN_PREFIX + len].to_vec();
            r.consume(LEN_PREFIX + len);
            return Ok(Some(frame));
        }
    }
    read_frame(r, max_frame)
}

/// Largest body buffer [`read_frame`] reserves before the bytes are there.
const RESERVE_AT_ONCE: usize = 64 * 1024;

/// Fills `buf` unless the stream ends first; returns how many bytes arrived. Unlike
/// `read_exact` it reports the count, which the `Truncated` error carries.
fn read_full<R: Read>(r: &mut R, buf: &mut [u8]) -> io::Result<usize> {
    let mut got = 0;
    while got < buf.len() {
        match r.read(&mut buf[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(got)
}

impl P2PMessage {
    /// The C++ `type` field of this message.
    pub fn message_type(&self) -> MessageType {
        match self {
            P2PMessage::Join(_) => MessageType::Join,
            P2PMessage::Data { .. } => MessageType::Data,
            P2PMessage::Ping { .. } => MessageType::Ping,
            P2PMessage::Pong { .. } => MessageType::Pong,
            P2PMessage::Peers { .. } => MessageType::Peers,
            P2PMessage::Broadcast(_) => MessageType::Broadcast,
            P2PMessage::Leave => MessageType::Leave,
            P2PMessage::IHave { .. } => MessageType::IHave,
            P2PMessage::Graft { .. } => MessageType::Graft,
            P2PMessage::Prune { .. } => MessageType::Prune,
            P2PMessage::Probe => MessageType::Probe,
        }
    }

    /// A PEERS message naming `addrs` without node ids (tools, tests; a node's own
    /// lists carry the ids it knows).
    pub fn peers(addrs: impl IntoIterator<Item = SocketAddr>) -> P2PMessage {
        P2PMessage::Peers {
            addrs: addrs.into_iter().map(PeerEntry::from).collect(),
        }
    }

    /// The whole frame, length prefix included, ready to write to a socket
    /// (the C++ `serialize()`).
    pub fn encode(&self) -> Vec<u8> {
        let mut buf = Vec::with_capacity(self.encoded_len());
        self.encode_into(&mut buf);
        buf
    }

    /// Appends the whole frame to `buf`, so a writer can batch several frames.
    pub fn encode_into(&self, buf: &mut Vec<u8>) {
        let start = buf.len();
        buf.extend_from_slice(&[0; LEN_PREFIX]);
        buf.push(self.message_type().into());
        // Writing into a Vec cannot fail, so the io::Results below are always Ok.
        match self {
            P2PMessage::Join(j) => {
                let _ = buf.write_u16::<BigEndian>(j.version);
                let _ = buf.write_u64::<BigEndian>(j.node_id.0);
                let _ = buf.write_u16::<BigEndian>(j.listen_port);
                put_str8(buf, &j.network);
                put_ip(buf, j.advertise.as_ref());
                put_ip(buf, j.observed.as_ref());
            }
            P2PMessage::Data { text } => buf.extend_from_slice(text.as_bytes()),
            P2PMessage::Ping { nonce } | P2PMessage::Pong { nonce } => {
                let _ = buf.write_u64::<BigEndian>(*nonce);
            }
            P2PMessage::Peers { addrs } => {
                let _ = buf.write_u16::<BigEndian>(addrs.len().min(u16::MAX as usize) as u16);
                for e in addrs.iter().take(u16::MAX as usize) {
                    put_socket_addr(buf, &e.addr);
                    let _ = buf.write_u64::<BigEndian>(e.id.map_or(0, |id| id.0));
                }
            }
            P2PMessage::Broadcast(b) => {
                let _ = buf.write_u64::<BigEndian>(b.origin.0);
                let _ = buf.write_u64::<BigEndian>(b.seq);
                buf.push(b.hops);
                put_socket_addr(buf, &b.origin_addr);
                buf.extend_from_slice(&b.public_key);
                buf.extend_from_slice(&b.signature);
                buf.extend_from_slice(b.text.as_bytes());
            }
            P2PMessage::IHave { ids } => {
                let n = ids.len().min(MAX_IDS_PER_MESSAGE);
                let _ = buf.write_u16::<BigEndian>(n as u16);
                for a in ids.iter().take(n) {
                    let _ = buf.write_u64::<BigEndian>(a.id.0 .0);
                    let _ = buf.write_u64::<BigEndian>(a.id.1);
                    buf.push(a.hops);
                }
            }
            P2PMessage::Graft { ids } => {
                let n = ids.len().min(MAX_IDS_PER_MESSAGE);
                let _ = buf.write_u16::<BigEndian>(n as u16);
                for (origin, seq) in ids.iter().take(n) {
                    let _ = buf.write_u64::<BigEndian>(origin.0);
                    let _ = buf.write_u64::<BigEndian>(*seq);
                }
            }
            P2PMessage::Prune { origin } => {
                let _ = buf.write_u64::<BigEndian>(origin.0);
            }
            P2PMessage::Leave | P2PMessage::Probe => {}
        }
        let len = (buf.len() - start - LEN_PREFIX) as u32;
        BigEndian::write_u32(&mut buf[start..start + LEN_PREFIX], len);
    }

    /// The DATA frame for `text`, exactly what `P2PMessage::Data { text }.encode()`
    /// gives, without first copying the text into a `String`: the send path of every
    /// direct message.
    pub fn encode_data(text: &str) -> Vec<u8> {
        let mut buf = Vec::with_capacity(LEN_PREFIX + 1 + text.len());
        let _ = buf.write_u32::<BigEndian>((1 + text.len()) as u32);
        buf.push(MessageType::Data.into());
        buf.extend_from_slice(text.as_bytes());
        buf
    }

    /// Size of [`encode`](P2PMessage::encode)'s output, prefix included; senders compare
    /// `encoded_len() - 4` with the maximum frame size before queueing.
    pub fn encoded_len(&self) -> usize {
        let body = match self {
            P2PMessage::Join(j) => {
                2 + 8 + 2 + 1 + j.network.len() + ip_len(j.advertise) + ip_len(j.observed)
            }
            P2PMessage::Data { text } => text.len(),
            P2PMessage::Ping { .. } | P2PMessage::Pong { .. } => 8,
            P2PMessage::Peers { addrs } => {
                2 + addrs
                    .iter()
                    .take(u16::MAX as usize)
                    .map(|e| ip_len(Some(e.addr.ip())) + 2 + 8)
                    .sum::<usize>()
            }
            P2PMessage::Broadcast(b) => {
                8 + 8
                    + 1
                    + ip_len(Some(b.origin_addr.ip()))
                    + 2
                    + PUBLIC_KEY_LEN
                    + SIGNATURE_LEN
                    + b.text.len()
            }
            P2PMessage::IHave { ids } => 2 + 17 * ids.len().min(MAX_IDS_PER_MESSAGE),
            P2PMessage::Graft { ids } => 2 + 16 * ids.len().min(MAX_IDS_PER_MESSAGE),
            P2PMessage::Prune { .. } => 8,
            P2PMessage::Leave | P2PMessage::Probe => 0,
        };
        LEN_PREFIX + 1 + body
    }

    /// As [`decode`](P2PMessage::decode), taking the buffer: a DATA frame's text
    /// reuses it instead of being copied, which is most of the cost of a small
    /// message.
    pub fn decode_owned(mut frame: Vec<u8>) -> Result<P2PMessage, DecodeError> {
        if frame.first() == Some(&u8::from(MessageType::Data)) {
            frame.remove(0);
            let text = String::from_utf8(frame).map_err(|_| DecodeError::BadUtf8)?;
            return Ok(P2PMessage::Data { text });
        }
        P2PMessage::decode(&frame)
    }

    /// Decodes one frame as returned by [`read_frame`]: type byte first, no length
    /// prefix (the C++ `deserialize`). Never panics; every malformed input is a
    /// [`DecodeError`].
    pub fn decode(frame: &[u8]) -> Result<P2PMessage, DecodeError> {
        let mut b = Body::new(frame);
        let kind = MessageType::from(b.u8()?);
        let msg = match kind {
            MessageType::Join => {
                let version = b.u16()?;
                let node_id = NodeId(b.u64()?);
                let listen_port = b.u16()?;
                let name_len = b.u8()? as usize;
                if name_len > MAX_NETWORK_NAME {
                    return Err(DecodeError::NetworkNameTooLong(name_len));
                }
                let network = utf8(b.take(name_len)?)?;
                let advertise = b.ip()?;
                let observed = b.ip()?;
                // Later versions may append fields; version 1 ignores them.
                return Ok(P2PMessage::Join(Join {
                    version,
                    node_id,
                    listen_port,
                    network,
                    advertise,
                    observed,
                }));
            }
            MessageType::Data => P2PMessage::Data {
                text: utf8(b.rest())?,
            },
            MessageType::Ping => P2PMessage::Ping { nonce: b.u64()? },
            MessageType::Pong => P2PMessage::Pong { nonce: b.u64()? },
            MessageType::Peers => {
                let n = b.u16()? as usize;
                if n > MAX_PEERS_PER_MESSAGE {
                    return Err(DecodeError::TooManyPeers(n));
                }
                let mut addrs = Vec::with_capacity(n); // n <= MAX_PEERS_PER_MESSAGE
                for _ in 0..n {
                    let addr = b.socket_addr()?;
                    let id = Some(NodeId(b.u64()?)).filter(|id| id.0 != 0);
                    addrs.push(PeerEntry { addr, id });
                }
                P2PMessage::Peers { addrs }
            }
            MessageType::Broadcast => {
                let origin = NodeId(b.u64()?);
                let seq = b.u64()?;
                let hops = b.u8()?;
                let origin_addr = b.socket_addr()?;
                let public_key = b.array::<PUBLIC_KEY_LEN>()?;
                let signature = b.array::<SIGNATURE_LEN>()?;
                let text = utf8(b.rest())?;
                P2PMessage::Broadcast(Broadcast {
                    origin,
                    seq,
                    hops,
                    origin_addr,
                    public_key,
                    signature,
                    text,
                })
            }
            MessageType::Leave => P2PMessage::Leave,
            MessageType::Probe => P2PMessage::Probe,
            MessageType::IHave => {
                let n = id_count(&mut b, 17)?;
                let mut ids = Vec::with_capacity(n);
                for _ in 0..n {
                    let id = (NodeId(b.u64()?), b.u64()?);
                    ids.push(Announcement { id, hops: b.u8()? });
                }
                P2PMessage::IHave { ids }
            }
            MessageType::Graft => {
                let n = id_count(&mut b, 16)?;
                let mut ids = Vec::with_capacity(n);
                for _ in 0..n {
                    ids.push((NodeId(b.u64()?), b.u64()?));
                }
                P2PMessage::Graft { ids }
            }
            MessageType::Prune => P2PMessage::Prune {
                origin: NodeId(b.u64()?),
            },
            MessageType::Unknown(t) => return Err(DecodeError::UnknownType(t)),
        };
        if b.remaining() > 0 {
            return Err(DecodeError::TrailingBytes {
                kind,
                extra: b.remaining(),
            });
        }
        Ok(msg)
    }
}

/// The u16 entry count that starts an IHAVE or GRAFT body, checked against the
/// maximum and against the bytes actually there (`entry` bytes each) before the
/// caller reserves anything.
fn id_count(b: &mut Body<'_>, entry: usize) -> Result<usize, DecodeError> {
    let n = b.u16()? as usize;
    if n > MAX_IDS_PER_MESSAGE {
        return Err(DecodeError::TooManyIds(n));
    }
    if b.remaining() < entry * n {
        return Err(DecodeError::Truncated {
            needed: entry * n,
            got: b.remaining(),
        });
    }
    Ok(n)
}

const FAMILY_NONE: u8 = 0;
const FAMILY_V4: u8 = 4;
const FAMILY_V6: u8 = 6;

fn ip_len(ip: Option<IpAddr>) -> usize {
    match ip {
        None => 1,
        Some(IpAddr::V4(_)) => 1 + 4,
        Some(IpAddr::V6(_)) => 1 + 16,
    }
}

fn put_ip(buf: &mut Vec<u8>, ip: Option<&IpAddr>) {
    match ip {
        None => buf.push(FAMILY_NONE),
        Some(IpAddr::V4(v4)) => {
            buf.push(FAMILY_V4);
            buf.extend_from_slice(&v4.octets());
        }
        Some(IpAddr::V6(v6)) => {
            buf.push(FAMILY_V6);
            buf.extend_from_slice(&v6.octets());
        }
    }
}

fn put_socket_addr(buf: &mut Vec<u8>, a: &SocketAddr) {
    put_ip(buf, Some(&a.ip()));
    let _ = buf.write_u16::<BigEndian>(a.port());
}

/// Network names longer than a u8 length are cut at a character boundary; `Config`
/// refuses them earlier, this only keeps `encode` total.
fn put_str8(buf: &mut Vec<u8>, s: &str) {
    let mut end = s.len().min(MAX_NETWORK_NAME);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    buf.push(end as u8);
    buf.extend_from_slice(&s.as_bytes()[..end]);
}

fn utf8(bytes: &[u8]) -> Result<String, DecodeError> {
    std::str::from_utf8(bytes)
        .map(str::to_owned)
        .map_err(|_| DecodeError::BadUtf8)
}

/// A bounds-checked cursor over a frame. Every accessor returns `Truncated` instead of
/// indexing past the end, so the decoder needs no slicing of its own.
struct Body<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Body<'a> {
    fn new(buf: &'a [u8]) -> Body<'a> {
        Body { buf, pos: 0 }
    }

    fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        let rest = &self.buf[self.pos..];
        match rest.get(..n) {
            Some(s) => {
                self.pos += n;
                Ok(s)
            }
            None => Err(DecodeError::Truncated {
                needed: n,
                got: rest.len(),
            }),
        }
    }

    fn rest(&mut self) -> &'a [u8] {
        let rest = &self.buf[self.pos..];
        self.pos = self.buf.len();
        rest
    }

    fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.take(1)?[0])
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], DecodeError> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.take(N)?);
        Ok(a)
    }

    fn u16(&mut self) -> Result<u16, DecodeError> {
        Ok(BigEndian::read_u16(self.take(2)?))
    }

    fn u64(&mut self) -> Result<u64, DecodeError> {
        Ok(BigEndian::read_u64(self.take(8)?))
    }

    fn ip(&mut self) -> Result<Option<IpAddr>, DecodeError> {
        match self.u8()? {
            FAMILY_NONE => Ok(None),
            FAMILY_V4 => {
                let o = self.take(4)?;
                Ok(Some(IpAddr::V4(Ipv4Addr::new(o[0], o[1], o[2], o[3]))))
            }
            FAMILY_V6 => {
                let mut o = [0u8; 16];
                o.copy_from_slice(self.take(16)?);
                Ok(Some(IpAddr::V6(Ipv6Addr::from(o))))
            }
            other => Err(DecodeError::BadAddressFamily(other)),
        }
    }

    fn socket_addr(&mut self) -> Result<SocketAddr, DecodeError> {
        match self.ip()? {
            Some(ip) => Ok(SocketAddr::new(ip, self.u16()?)),
            None => Err(DecodeError::BadAddressFamily(FAMILY_NONE)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(s: &str) -> SocketAddr {
        s.parse().expect("test address")
    }

    fn all_messages() -> Vec<P2PMessage> {
        vec![
            P2PMessage::Join(Join {
                version: PROTOCOL_VERSION,
                node_id: NodeId(0x0102_0304_0506_0708),
                listen_port: 9000,
                network: "lan".into(),
                advertise: Some("10.0.0.7".parse().expect("ip")),
                observed: Some("::1".parse().expect("ip")),
            }),
            P2PMessage::Join(Join {
                version: PROTOCOL_VERSION,
                node_id: NodeId(7),
                listen_port: 1,
                network: String::new(),
                advertise: None,
                observed: None,
            }),
            P2PMessage::Data {
                text: "Hello from Node B! ünïcødé".into(),
            },
            P2PMessage::Data {
                text: String::new(),
            },
            P2PMessage::Ping { nonce: u64::MAX },
            P2PMessage::Pong { nonce: 42 },
            P2PMessage::Peers {
                addrs: vec![
                    addr("127.0.0.1:9000").into(),
                    PeerEntry {
                        addr: addr("[::1]:9001"),
                        id: Some(NodeId(0x0102)),
                    },
                ],
            },
            P2PMessage::Peers { addrs: vec![] },
            P2PMessage::Broadcast(Broadcast {
                origin: NodeId(9),
                seq: 3,
                hops: 2,
                origin_addr: addr("192.168.1.2:9000"),
                public_key: [0x11; PUBLIC_KEY_LEN],
                signature: [0x22; SIGNATURE_LEN],
                text: "to everyone".into(),
            }),
            P2PMessage::Leave,
            P2PMessage::IHave {
                ids: vec![
                    Announcement {
                        id: (NodeId(1), 2),
                        hops: 0,
                    },
                    Announcement {
                        id: (NodeId(u64::MAX), u64::MAX),
                        hops: 255,
                    },
                ],
            },
            P2PMessage::IHave { ids: vec![] },
            P2PMessage::Graft {
                ids: vec![(NodeId(3), 4)],
            },
            P2PMessage::Prune {
                origin: NodeId(0xABCD),
            },
            P2PMessage::Probe,
        ]
    }

    fn decode_stream(bytes: &[u8]) -> Result<P2PMessage, DecodeError> {
        let mut r = bytes;
        let frame = read_frame(&mut r, DEFAULT_MAX_FRAME)?.expect("a frame");
        P2PMessage::decode(&frame)
    }

    #[test]
    fn every_type_round_trips() {
        for m in all_messages() {
            let bytes = m.encode();
            assert_eq!(bytes.len(), m.encoded_len(), "{m:?}");
            assert_eq!(decode_stream(&bytes).expect("decodes"), m);
        }
    }

    #[test]
    fn encode_data_agrees_with_encode() {
        for text in ["", "hi", "ünïcødé and spaces  "] {
            let m = P2PMessage::Data { text: text.into() };
            assert_eq!(P2PMessage::encode_data(text), m.encode());
        }
    }

    #[test]
    fn decode_owned_agrees_with_decode() {
        for m in all_messages() {
            let frame = m.encode()[LEN_PREFIX..].to_vec();
            assert_eq!(P2PMessage::decode_owned(frame).expect("decodes"), m);
        }
        assert!(matches!(
            P2PMessage::decode_owned(vec![1, 0xFF]),
            Err(DecodeError::BadUtf8)
        ));
    }

    #[test]
    fn message_type_byte_round_trips() {
        for b in 0..=255u8 {
            assert_eq!(u8::from(MessageType::from(b)), b);
        }
        assert_eq!(MessageType::from(10), MessageType::Probe);
        assert_eq!(MessageType::from(11), MessageType::Unknown(11));
    }

    #[test]
    fn golden_ihave_frame() {
        let bytes = P2PMessage::IHave {
            ids: vec![Announcement {
                id: (NodeId(1), 2),
                hops: 3,
            }],
        }
        .encode();
        let mut want = vec![0, 0, 0, 20, 7, 0, 1];
        want.extend_from_slice(&1u64.to_be_bytes());
        want.extend_from_slice(&2u64.to_be_bytes());
        want.push(3);
        assert_eq!(bytes, want);
        assert_eq!(
            P2PMessage::Prune {
                origin: NodeId(0x0102)
            }
            .encode(),
            [0, 0, 0, 9, 9, 0, 0, 0, 0, 0, 0, 1, 2]
        );
    }

    #[test]
    fn id_lists_are_bounded_before_anything_is_reserved() {
        let mut frame = vec![8u8];
        frame.extend_from_slice(&(MAX_IDS_PER_MESSAGE as u16 + 1).to_be_bytes());
        assert!(matches!(
            P2PMessage::decode(&frame),
            Err(DecodeError::TooManyIds(n)) if n == MAX_IDS_PER_MESSAGE + 1
        ));
        // A count the bytes do not back is truncated, not a big allocation.
        let mut frame = vec![7u8];
        frame.extend_from_slice(&4000u16.to_be_bytes());
        frame.extend_from_slice(&[0; 16]);
        assert!(matches!(
            P2PMessage::decode(&frame),
            Err(DecodeError::Truncated {
                needed: 68000,
                got: 16
            })
        ));
        // More ids than fit are cut at the maximum by the encoder.
        let ids: Vec<BroadcastId> = (0..MAX_IDS_PER_MESSAGE as u64 + 5)
            .map(|n| (NodeId(n), n))
            .collect();
        let m = P2PMessage::Graft { ids };
        let frame = m.encode();
        assert_eq!(frame.len(), m.encoded_len());
        match P2PMessage::decode(&frame[LEN_PREFIX..]) {
            Ok(P2PMessage::Graft { ids }) => assert_eq!(ids.len(), MAX_IDS_PER_MESSAGE),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn golden_data_frame() {
        let bytes = P2PMessage::Data { text: "hi".into() }.encode();
        assert_eq!(bytes, [0, 0, 0, 3, 1, b'h', b'i']);
    }

    #[test]
    fn golden_ping_and_leave() {
        assert_eq!(
            P2PMessage::Ping { nonce: 0x0102 }.encode(),
            [0, 0, 0, 9, 2, 0, 0, 0, 0, 0, 0, 1, 2]
        );
        assert_eq!(P2PMessage::Leave.encode(), [0, 0, 0, 1, 6]);
        assert_eq!(P2PMessage::Probe.encode(), [0, 0, 0, 1, 10]);
    }

    #[test]
    fn golden_join_frame() {
        let j = P2PMessage::Join(Join {
            version: 3,
            node_id: NodeId(0xAB),
            listen_port: 9000,
            network: "n".into(),
            advertise: None,
            observed: Some("127.0.0.1".parse().expect("ip")),
        });
        #[rustfmt::skip]
        let want = [
            0, 0, 0, 21,                  // length: type + 20 body bytes
            0,                            // JOIN
            0, 3,                         // version
            0, 0, 0, 0, 0, 0, 0, 0xAB,    // node id
            0x23, 0x28,                   // listen port 9000
            1, b'n',                      // network name
            0,                            // advertise: none
            4, 127, 0, 0, 1,              // observed: 127.0.0.1
        ];
        assert_eq!(j.encode(), want);
    }

    #[test]
    fn golden_peers_and_broadcast() {
        let p = P2PMessage::Peers {
            addrs: vec![PeerEntry {
                addr: addr("10.1.2.3:80"),
                id: Some(NodeId(0xAB)),
            }],
        };
        #[rustfmt::skip]
        let want = [
            0, 0, 0, 18, 4,
            0, 1,                      // one entry
            4, 10, 1, 2, 3, 0, 80,     // 10.1.2.3:80
            0, 0, 0, 0, 0, 0, 0, 0xAB, // its node id
        ];
        assert_eq!(p.encode(), want);
        // No id known: 8 zero bytes, decoded as `None`.
        let p = P2PMessage::Peers {
            addrs: vec![addr("10.1.2.3:80").into()],
        };
        assert_eq!(
            p.encode(),
            [0, 0, 0, 18, 4, 0, 1, 4, 10, 1, 2, 3, 0, 80, 0, 0, 0, 0, 0, 0, 0, 0]
        );
        assert_eq!(P2PMessage::decode(&p.encode()[4..]).expect("decodes"), p);
        // docs/PROTOCOL.md section 6.
        let p = P2PMessage::Peers {
            addrs: vec![
                addr("127.0.0.1:9000").into(),
                PeerEntry {
                    addr: addr("[::1]:9001"),
                    id: Some(NodeId(0x0102)),
                },
            ],
        };
        let mut want = vec![0, 0, 0, 0x2d, 4, 0, 2, 4, 127, 0, 0, 1, 0x23, 0x28];
        want.extend_from_slice(&[0; 8]);
        want.push(6);
        want.extend_from_slice(&[0; 15]);
        want.extend_from_slice(&[1, 0x23, 0x29, 0, 0, 0, 0, 0, 0, 1, 2]);
        assert_eq!(p.encode(), want);
        // Key and signature are placeholders here (the layout does not check them);
        // protocol/broadcast/signature.rs tests real ones.
        let key: [u8; PUBLIC_KEY_LEN] = std::array::from_fn(|i| i as u8);
        let sig: [u8; SIGNATURE_LEN] = std::array::from_fn(|i| 0x80 | i as u8);
        let b = P2PMessage::Broadcast(Broadcast {
            origin: NodeId(1),
            seq: 2,
            hops: 3,
            origin_addr: addr("1.2.3.4:5"),
            public_key: key,
            signature: sig,
            text: "x".into(),
        });
        #[rustfmt::skip]
        let mut want = vec![
            0, 0, 0, 122, 5,         // length: type + 121 body bytes; BROADCAST
            0, 0, 0, 0, 0, 0, 0, 1,  // origin
            0, 0, 0, 0, 0, 0, 0, 2,  // seq
            3,                       // hops
            4, 1, 2, 3, 4, 0, 5,     // origin address
        ];
        want.extend_from_slice(&key); // public key, 00 01 .. 1f
        want.extend_from_slice(&sig); // signature, 80 81 .. bf
        want.push(b'x'); // text
        assert_eq!(b.encode(), want);
    }

    #[test]
    fn clean_eof_between_frames_is_none() {
        let mut r: &[u8] = &[];
        assert!(read_frame(&mut r, 100).expect("no error").is_none());
    }

    #[test]
    fn short_header_is_truncated() {
        let mut r: &[u8] = &[0, 0];
        match read_frame(&mut r, 100) {
            Err(DecodeError::Truncated { needed: 4, got: 2 }) => {}
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn zero_length_is_empty() {
        let mut r: &[u8] = &[0, 0, 0, 0];
        assert!(matches!(read_frame(&mut r, 100), Err(DecodeError::Empty)));
    }

    #[test]
    fn length_over_limit_is_refused_before_reading_body() {
        let mut r: &[u8] = &[0xFF, 0xFF, 0xFF, 0xFF];
        match read_frame(&mut r, DEFAULT_MAX_FRAME) {
            Err(DecodeError::TooLarge { len, max }) => {
                assert_eq!(len, u32::MAX);
                assert_eq!(max, DEFAULT_MAX_FRAME);
            }
            other => panic!("unexpected {other:?}"),
        }
        let mut r: &[u8] = &[0, 0, 0, 101, 1];
        assert!(matches!(
            read_frame(&mut r, 100),
            Err(DecodeError::TooLarge { len: 101, max: 100 })
        ));
    }

    #[test]
    fn truncated_body() {
        let mut r: &[u8] = &[0, 0, 0, 5, 1, b'a'];
        assert!(matches!(
            read_frame(&mut r, 100),
            Err(DecodeError::Truncated { needed: 5, got: 2 })
        ));
        // A frame that is whole but whose field is cut short.
        assert!(matches!(
            P2PMessage::decode(&[2, 0, 0, 0]),
            Err(DecodeError::Truncated { needed: 8, got: 3 })
        ));
    }

    #[test]
    fn unknown_type() {
        assert!(matches!(
            decode_stream(&[0, 0, 0, 2, 200, 0]),
            Err(DecodeError::UnknownType(200))
        ));
    }

    #[test]
    fn bad_utf8_in_data_and_broadcast() {
        assert!(matches!(
            P2PMessage::decode(&[1, 0xFF, 0xFE]),
            Err(DecodeError::BadUtf8)
        ));
        let mut b = P2PMessage::Broadcast(Broadcast {
            origin: NodeId(1),
            seq: 1,
            hops: 0,
            origin_addr: addr("1.2.3.4:5"),
            public_key: [0; PUBLIC_KEY_LEN],
            signature: [0; SIGNATURE_LEN],
            text: String::new(),
        })
        .encode();
        b.push(0xC3); // a lone UTF-8 lead byte after the (empty) text
        let frame = &b[LEN_PREFIX..];
        assert!(matches!(
            P2PMessage::decode(frame),
            Err(DecodeError::BadUtf8)
        ));
    }

    #[test]
    fn trailing_bytes_after_fixed_body() {
        assert!(matches!(
            P2PMessage::decode(&[6, 0]),
            Err(DecodeError::TrailingBytes {
                kind: MessageType::Leave,
                extra: 1
            })
        ));
    }

    #[test]
    fn bad_address_family() {
        assert!(matches!(
            P2PMessage::decode(&[4, 0, 1, 5, 1, 2, 3, 4, 0, 1]),
            Err(DecodeError::BadAddressFamily(5))
        ));
        // "none" is not allowed where a full address is required.
        assert!(matches!(
            P2PMessage::decode(&[4, 0, 1, 0]),
            Err(DecodeError::BadAddressFamily(0))
        ));
    }

    #[test]
    fn too_many_peers() {
        assert!(matches!(
            P2PMessage::decode(&[4, 0xFF, 0xFF]),
            Err(DecodeError::TooManyPeers(65535))
        ));
    }

    #[test]
    fn network_name_too_long() {
        let mut f = vec![0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 1, 0, 1, 200];
        f.extend(std::iter::repeat(b'x').take(200));
        assert!(matches!(
            P2PMessage::decode(&f),
            Err(DecodeError::NetworkNameTooLong(200))
        ));
    }

    #[test]
    fn decode_of_every_prefix_never_panics() {
        for m in all_messages() {
            let bytes = m.encode();
            let frame = &bytes[LEN_PREFIX..];
            for cut in 0..frame.len() {
                let _ = P2PMessage::decode(&frame[..cut]);
            }
        }
    }

    #[test]
    fn node_ids_differ() {
        let a = NodeId::random();
        let b = NodeId::random();
        assert_ne!(a, b);
        assert_eq!(format!("{}", NodeId(0xab)), "00000000000000ab");
    }
}
