//! `Config`: every tunable of a node in one place, with its default and why.
//!
//! The C++ original had one setting, the port, passed to `Node(port)`. Everything else
//! here exists because a working overlay needs a bound or a timer for it. Values are
//! checked once, in [`Config::validate`], when the node starts, never deep inside the
//! code that uses them.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use crate::error::Error;
use crate::event::Encryption;
use crate::identity::{Identity, NetworkCa};
use crate::p2p_message::{DEFAULT_MAX_FRAME, MAX_NETWORK_NAME};

/// Settings for [`Node::start`](crate::Node::start).
#[derive(Debug, Clone)]
pub struct Config {
    /// IP to listen on. Defaults to 0.0.0.0 (every interface), because a node exists to
    /// be reached by others on the LAN; tests use 127.0.0.1.
    pub bind: IpAddr,
    /// TCP port to listen on. Defaults to 0: the OS picks one, which
    /// [`Node::local_addr`](crate::Node::local_addr) reports.
    pub port: u16,
    /// Address announced to peers instead of the socket's source IP and the listen
    /// port, for a node behind an address its peers cannot see. Defaults to `None`.
    pub advertise: Option<SocketAddr>,
    /// Name of the overlay; nodes with different names refuse each other. Defaults to
    /// `"p2p-overlay"`. At most 64 bytes.
    pub network: String,
    /// How many links the node dials towards; small networks become a full mesh.
    /// Defaults to 8. Inbound links beyond it are accepted up to `max_links`.
    pub target_links: usize,
    /// Hard cap on links of both directions; a handshake past it is refused.
    /// Defaults to 128.
    pub max_links: usize,
    /// Cap on links the peer dialled. Defaults to 64, half of `max_links`, so a flood
    /// of inbound peers cannot take the slots this node needs for its own dials.
    /// When it is reached, a newcomer from a less represented source group (/24,
    /// /48) makes the youngest unprotected inbound link of the most represented group
    /// leave (`DownReason::Evicted`, counted as `links_evicted`; the rule is in
    /// `state/eviction.rs` and docs/PROTOCOL.md 3.5a); a newcomer of the crowded group
    /// itself is refused.
    pub max_inbound_links: usize,
    /// Cap on accepted connections still in their handshake. Past it, a new socket is
    /// closed at once (and counted), so idle or slow connections cannot pile up
    /// threads, unless its source group (/24, /48), counting the new socket, would
    /// still have fewer pending handshakes than the group with the most: then the oldest of that group is closed instead
    /// (counted as `pending_evicted`), so one source cannot hold every place.
    /// Defaults to 32; a real handshake takes one round trip.
    pub max_pending_handshakes: usize,
    /// Cap on open sockets of both directions, whatever state they are in: in their
    /// handshake, linked, retired duplicates, referrals, dials still connecting. Each
    /// costs a thread (two when linked) and a descriptor, from accept (or from
    /// before the dial starts) until its thread ends. Past it, an accepted socket is
    /// closed at once, before any byte (counted as `connections_refused_cap`), and a
    /// dial is not started (`Error::TooManyConnections`; the dial plan waits for the
    /// next tick).
    ///
    /// Defaults to 192, that is `max_links` (128) plus `max_pending_handshakes` (32)
    /// plus 32 for duplicates being retired and referrals draining. A plain value
    /// rather than one derived at start, so what `info` shows is what was set; set it
    /// yourself when you change those two. A connection that is past its handshake
    /// but not a link does not linger in the last `max_pending_handshakes` places (it
    /// is closed at once instead), so as long as `max_connections` is at least
    /// `max_links + max_pending_handshakes`, links never squeeze out handshakes.
    /// Must be above `max_pending_handshakes`.
    pub max_connections: usize,
    /// Whether the node dials addresses it learns by peer exchange. Defaults to `true`;
    /// turning it off leaves only explicit `connect_to_peer` calls (tests use it to
    /// build a fixed topology).
    pub auto_dial: bool,
    /// How often each link is pinged. Defaults to 1 s.
    pub heartbeat_interval: Duration,
    /// A link silent for this long is dropped. Defaults to 3 s: three missed
    /// heartbeats.
    pub peer_timeout: Duration,
    /// A connection must complete the JOIN exchange within this time. Defaults to 5 s.
    pub handshake_timeout: Duration,
    /// TCP connect timeout for dials. Defaults to 3 s.
    pub connect_timeout: Duration,
    /// Largest frame accepted or sent (length prefix value). Defaults to 1 MiB.
    pub max_frame: u32,
    /// Frames a link may have queued for its writer; a peer whose queue is full is too
    /// slow and is dropped. Defaults to 1024. `queue_bytes` bounds the same queue by
    /// bytes.
    pub queue_len: usize,
    /// Bytes of data frames a link may have queued for its writer (the unsent rest of
    /// a partial send included), a bound next to `queue_len`: reaching either one is
    /// "full", with the same waiting and dropping rules. Defaults to 4 MiB: room for a
    /// burst of a few hundred frames of 1-16 KiB, or dozens of 64 KiB ones, and far
    /// below what 1,024 frames of up to `max_frame` let one peer that stops reading
    /// pin (1 GiB at 1 MiB frames). An empty queue always takes one frame, so a frame
    /// larger than the free room waits for the queue to drain instead of never
    /// fitting. At least `max_frame`.
    pub queue_bytes: usize,
    /// A broadcast that has travelled this many links is delivered but not forwarded.
    /// Defaults to 255, the most the field holds: the seen cache already stops loops,
    /// and the path a copy first arrives by can be far longer than the overlay is
    /// wide (53 hops in a 100-node overlay four links across, measured), so a lower
    /// limit stops copies some nodes have no other way to get.
    pub hop_limit: u8,
    /// Broadcast ids remembered for duplicate suppression. Defaults to 16,384.
    pub seen_cache_size: usize,
    /// How long a broadcast id is remembered. Defaults to 5 minutes.
    pub seen_cache_ttl: Duration,
    /// Origins whose replay window is kept (PROTOCOL.md 3.5 "Replay window"): per
    /// origin, the last 1,024 sequence numbers taken and a floor, so a replayed
    /// broadcast stays a duplicate after the seen cache forgot it. Past the cap the
    /// least recently used origin is forgotten (its old broadcasts are then protected
    /// by the seen cache alone). Defaults to 4,096: far more origins than an overlay
    /// of this design has, about 200 bytes each (under 1 MiB when full).
    pub replay_origins: usize,
    /// New broadcasts one link may bring per second (sustained): BROADCAST frames
    /// whose id this node has not seen, whether the peer is their origin or relays
    /// them. Duplicates cost nothing: they are dropped anyway. Over the limit a
    /// broadcast is dropped (not delivered, not forwarded, and not remembered as seen,
    /// so its copy by another link still gets through) and counted
    /// (`broadcasts_rate_limited`). 0: unlimited. Defaults to 1,000/s, with
    /// `broadcast_burst`: the overlay benchmarks stay under it (the burst bench's
    /// 2,000 back-to-back broadcasts fit the burst alone), while a peer can no longer
    /// make the overlay relay 200,000 broadcasts in 1.4 s.
    pub broadcast_rate: u64,
    /// New broadcasts one link may bring at once, above the sustained rate (the
    /// bucket's size; it starts full). Defaults to 10,000: five times the burst
    /// bench's 2,000 from one origin, and each broadcast is new on only one of a
    /// node's links.
    pub broadcast_burst: u64,
    /// DATA frames one link may bring per second (sustained); over the limit they are
    /// dropped and counted (`data_rate_limited`). 0: unlimited. DATA is not relayed,
    /// so it amplifies nothing, and a full event queue already slows its sender to the
    /// application's pace; this only bounds the reader time a peer can take. Defaults
    /// to 1,000,000/s with `data_burst`, above what the link bench sends (2,000,000
    /// frames of 64 B at about 5 M/s: 0.4 s, inside the burst alone).
    pub data_rate: u64,
    /// DATA frames one link may bring at once, above the sustained rate. Defaults to
    /// 2,000,000 (see `data_rate`).
    pub data_burst: u64,
    /// How long a link may keep sending over one of its limits before it is closed
    /// (`DownReason::RateLimited`): from the first dropped frame, for as long as
    /// frames keep being dropped with less than a second between two drops. A burst
    /// that overflows for a shorter time only loses its excess. Defaults to 5 s.
    pub rate_limit_grace: Duration,
    /// Known addresses kept for dialing. Defaults to 1,000. At most
    /// [`NEW_PER_SOURCE`](crate::known_addrs::NEW_PER_SOURCE) (64) never-tried
    /// entries come from one source's /24 (/48), and addresses this node has linked
    /// with are never pushed out by newcomers.
    pub max_known_addrs: usize,
    /// Dials per second of addresses never tried (heard of in PEERS lists, or from the
    /// peers file without a success), with a burst of `target_links`. Defaults to 2.
    /// Addresses that linked before and the ones the user dials are never limited. A
    /// flood of bogus addresses then costs at most `target_links` dials at once and 2 a
    /// second after (the old node made 28); an honest join is not slowed, because a
    /// joiner needs at most `target_links` new addresses and the burst covers them
    /// (a refused or failed one is replaced within half a second). 0 leaves only the
    /// burst, refilled never.
    pub new_dials_per_sec: u32,
    /// How often every link is sent the current address list again, so that nodes
    /// that joined later are learned. Defaults to 30 s.
    pub peer_exchange_interval: Duration,
    /// Events kept for the application. Past it, a link's reader waits (up to 1 s, at
    /// most half the peer timeout, per message) for the application to catch up,
    /// which slows the sending peer; then it drops the message and counts it.
    /// Defaults to 16,384: since a full queue slows the sender instead of losing
    /// messages, a short one is enough, and it keeps the events in cache (64-byte
    /// link throughput 0.196-0.199 of raw TCP against 0.14-0.18 at 100,000, measured).
    pub max_pending_events: usize,
    /// Bytes of message text (`Event::Message`, `Event::Broadcast`) kept for the
    /// application, a bound next to `max_pending_events` with the same rules: past it
    /// a reader waits for room (so TCP slows the sender), then drops the message and
    /// counts it. Defaults to 16 MiB: thousands of ordinary messages, or 16 of 1 MiB,
    /// where 16,384 events of 1 MiB could have held 16 GiB for an application that
    /// stalled. An empty queue always takes one message. At least `max_frame`.
    pub max_pending_event_bytes: usize,
    /// File the known addresses are saved to and restored from, so a restarted node
    /// rejoins by itself (format: `peer_cache`). Defaults to `None` (no file): the
    /// library writes nothing unless asked; the `p2p-node` binary picks a path per port.
    pub peers_file: Option<PathBuf>,
    /// How often the peers file is rewritten while running (it is also written on
    /// `stop`). Defaults to 30 s.
    pub peers_file_interval: Duration,
    /// Stack size of every thread the node starts. Defaults to 256 KiB: the threads
    /// only decode frames and move buffers, and only touched pages cost memory.
    pub thread_stack_size: usize,
    /// The node's key pair, which its id is derived from. Defaults to `None`: a fresh
    /// key for this run (the `p2p-node` binary keeps one per port in a file).
    pub identity: Option<Identity>,
    /// TLS 1.3 on every link (the default), or plaintext (`--plaintext`, for
    /// debugging and comparison). Broadcasts are signed either way.
    pub encryption: Encryption,
    /// A closed network: only peers whose certificate chains to this CA are accepted,
    /// in both directions. Needs TLS and an identity whose certificate the CA issued
    /// ([`Identity::with_certificate_file`]). Defaults to `None` (open network: any
    /// node with a self-signed certificate for its key).
    pub network_ca: Option<NetworkCa>,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            bind: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            port: 0,
            advertise: None,
            network: "p2p-overlay".to_string(),
            target_links: 8,
            max_links: 128,
            max_inbound_links: 64,
            max_pending_handshakes: 32,
            max_connections: 192,
            auto_dial: true,
            heartbeat_interval: Duration::from_secs(1),
            peer_timeout: Duration::from_secs(3),
            handshake_timeout: Duration::from_secs(5),
            connect_timeout: Duration::from_secs(3),
            max_frame: DEFAULT_MAX_FRAME,
            queue_len: 1024,
            queue_bytes: 4 << 20,
            hop_limit: u8::MAX,
            seen_cache_size: 16_384,
            seen_cache_ttl: Duration::from_secs(300),
            replay_origins: 4096,
            broadcast_rate: 1_000,
            broadcast_burst: 10_000,
            data_rate: 1_000_000,
            data_burst: 2_000_000,
            rate_limit_grace: Duration::from_secs(5),
            max_known_addrs: 1000,
            new_dials_per_sec: 2,
            peer_exchange_interval: Duration::from_secs(30),
            max_pending_events: 16_384,
            max_pending_event_bytes: 16 << 20,
            peers_file: None,
            peers_file_interval: Duration::from_secs(30),
            thread_stack_size: 256 * 1024,
            identity: None,
            encryption: Encryption::Tls,
            network_ca: None,
        }
    }
}

/// Smallest frame limit that still fits a JOIN with the longest network name.
const MIN_MAX_FRAME: u32 = 256;

/// Largest burst a rate limit accepts (its bucket counts millionths of a token in a
/// `u64`).
const MAX_BURST: u64 = 1_000_000_000_000;

/// Smallest stack that comfortably runs the logger and the decoder.
const MIN_STACK: usize = 64 * 1024;

impl Config {
    /// A default config listening on `bind:port`.
    pub fn new(bind: IpAddr, port: u16) -> Config {
        Config {
            bind,
            port,
            ..Config::default()
        }
    }

    /// Refuses combinations that cannot work, with a message naming the field.
    pub fn validate(&self) -> Result<(), Error> {
        let bad = |msg: String| Err(Error::InvalidConfig(msg));
        if self.network_ca.is_some() {
            if self.encryption != Encryption::Tls {
                return bad("a closed network (network CA) needs TLS, not plaintext".into());
            }
            if !self
                .identity
                .as_ref()
                .is_some_and(Identity::has_issued_certificate)
            {
                return bad(
                    "a closed network (network CA) needs an identity with a certificate \
                     the CA issued (--cert and --key)"
                        .into(),
                );
            }
        }
        if self.network.len() > MAX_NETWORK_NAME {
            return bad(format!(
                "network name is {} bytes, at most {MAX_NETWORK_NAME} allowed",
                self.network.len()
            ));
        }
        if self.heartbeat_interval.is_zero() {
            return bad("heartbeat interval must be above 0".into());
        }
        if self.peer_timeout <= self.heartbeat_interval {
            return bad(format!(
                "peer timeout ({:?}) must be longer than the heartbeat interval ({:?})",
                self.peer_timeout, self.heartbeat_interval
            ));
        }
        if self.handshake_timeout.is_zero() || self.connect_timeout.is_zero() {
            return bad("handshake and connect timeouts must be above 0".into());
        }
        if self.max_frame < MIN_MAX_FRAME {
            return bad(format!(
                "max frame {} is below the minimum {MIN_MAX_FRAME}",
                self.max_frame
            ));
        }
        if self.queue_len == 0
            || self.max_links == 0
            || self.max_inbound_links == 0
            || self.max_pending_handshakes == 0
        {
            return bad(
                "queue length, max links, max inbound links and max pending handshakes \
                 must be above 0"
                    .into(),
            );
        }
        if self.max_connections <= self.max_pending_handshakes {
            return bad(format!(
                "max connections ({}) must exceed max pending handshakes ({})",
                self.max_connections, self.max_pending_handshakes
            ));
        }
        if self.queue_bytes < self.max_frame as usize {
            return bad(format!(
                "queue bytes ({}) must be at least max frame ({}), so one frame always fits",
                self.queue_bytes, self.max_frame
            ));
        }
        if self.max_pending_events == 0 {
            return bad("max pending events must be above 0".into());
        }
        if self.max_pending_event_bytes < self.max_frame as usize {
            return bad(format!(
                "max pending event bytes ({}) must be at least max frame ({}), so one \
                 message always fits",
                self.max_pending_event_bytes, self.max_frame
            ));
        }
        if self.target_links > self.max_links {
            return bad(format!(
                "target links ({}) cannot exceed max links ({})",
                self.target_links, self.max_links
            ));
        }
        if self.peers_file_interval.is_zero() {
            return bad("peers file interval must be above 0".into());
        }
        if self.seen_cache_size == 0 || self.max_known_addrs == 0 {
            return bad("seen cache size and max known addresses must be above 0".into());
        }
        if self.replay_origins == 0 {
            return bad("replay origins must be above 0".into());
        }
        for (what, rate, burst) in [
            ("broadcast", self.broadcast_rate, self.broadcast_burst),
            ("data", self.data_rate, self.data_burst),
        ] {
            if rate > 0 && !(1..=MAX_BURST).contains(&burst) {
                return bad(format!(
                    "{what} burst {burst} must be 1 to {MAX_BURST} when the {what} rate \
                     is limited (rate {rate}; 0 is unlimited)"
                ));
            }
            if rate > MAX_BURST {
                return bad(format!(
                    "{what} rate {rate} is above {MAX_BURST} (0 is unlimited)"
                ));
            }
        }
        if self.rate_limit_grace.is_zero() {
            return bad("rate limit grace must be above 0".into());
        }
        if self.thread_stack_size < MIN_STACK {
            return bad(format!(
                "thread stack size {} is below the minimum {MIN_STACK}",
                self.thread_stack_size
            ));
        }
        if let Some(a) = self.advertise {
            if a.port() == 0 || a.ip().is_unspecified() {
                return bad(format!("advertise address {a} is not dialable"));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_is_valid() {
        Config::default()
            .validate()
            .expect("default config is valid");
        let c = Config::default();
        assert_eq!(
            c.max_connections,
            c.max_links + c.max_pending_handshakes + 32,
            "the documented derivation of the default"
        );
    }

    #[test]
    fn rate_zero_is_unlimited_whatever_the_burst() {
        let c = Config {
            broadcast_rate: 0,
            broadcast_burst: 0,
            data_rate: 0,
            data_burst: 0,
            ..Config::default()
        };
        c.validate().expect("0 means unlimited");
    }

    #[test]
    fn silly_values_are_refused() {
        type Change = Box<dyn Fn(&mut Config)>;
        let cases: Vec<(&str, Change)> = vec![
            ("network", Box::new(|c| c.network = "x".repeat(65))),
            (
                "heartbeat",
                Box::new(|c| c.heartbeat_interval = Duration::ZERO),
            ),
            (
                "peer timeout",
                Box::new(|c| c.peer_timeout = c.heartbeat_interval),
            ),
            ("max frame", Box::new(|c| c.max_frame = 10)),
            ("queue length", Box::new(|c| c.queue_len = 0)),
            (
                "max connections",
                Box::new(|c| c.max_connections = c.max_pending_handshakes),
            ),
            (
                "queue bytes",
                Box::new(|c| c.queue_bytes = c.max_frame as usize - 1),
            ),
            ("pending events", Box::new(|c| c.max_pending_events = 0)),
            (
                "pending event bytes",
                Box::new(|c| c.max_pending_event_bytes = c.max_frame as usize - 1),
            ),
            (
                "target links",
                Box::new(|c| c.target_links = c.max_links + 1),
            ),
            ("stack", Box::new(|c| c.thread_stack_size = 1024)),
            ("replay origins", Box::new(|c| c.replay_origins = 0)),
            ("broadcast burst", Box::new(|c| c.broadcast_burst = 0)),
            ("data burst", Box::new(|c| c.data_burst = MAX_BURST + 1)),
            ("data rate", Box::new(|c| c.data_rate = u64::MAX)),
            ("grace", Box::new(|c| c.rate_limit_grace = Duration::ZERO)),
            (
                "advertise",
                Box::new(|c| c.advertise = Some("0.0.0.0:9000".parse().expect("addr"))),
            ),
        ];
        for (what, change) in cases {
            let mut c = Config::default();
            change(&mut c);
            let e = c.validate().expect_err(what);
            assert!(matches!(e, Error::InvalidConfig(_)), "{what}: {e}");
        }
    }
}
