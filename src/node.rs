//! `Node`: the public face of an overlay node, the Rust form of the C++ `Node` class
//! (`start`, `stop`, `connectToPeer`, `handleJoin`, `printPeers`, `removePeer`,
//! `sendDataToPeer`, `broadcastData`).
//!
//! `Node` is a handle. It owns the acceptor and maintenance threads; everything the
//! threads share is in [`Shared`] (the link manager and the protocols), and every
//! method here is a few calls into those. `handleJoin` became
//! `Links::register`, called by each connection when its handshake completes. The
//! C++ original held its one mutex while connecting and while sending to every peer;
//! here no lock is held across any of that (docs/ARCHITECTURE.md, "Locks").

use std::net::{SocketAddr, TcpListener, ToSocketAddrs};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use crossbeam_channel::{bounded, Receiver, Sender};
use parking_lot::Mutex;

use crate::clock::Clock;
use crate::config::Config;
use crate::error::{Error, HandshakeError};
use crate::event::{DownReason, Encryption, Event, PeerInfo};
use crate::identity::Identity;
use crate::links::{DialClaim, Links};
use crate::maintenance;
use crate::p2p_message::{NodeId, P2PMessage};
use crate::peer_connection::Dial;
use crate::peer_connection_factory::PeerConnectionFactory;
use crate::protocol::Protocols;
use crate::shared::Shared;
use crate::state::known_addrs::{is_dialable, KnownAddr};
use crate::state::stats::Counters;
use crate::transport::outbox::Frame;
use crate::transport::thread::spawn_named;
use crate::transport::tls::TlsContext;
use crate::transport::wake_listener;

/// A running overlay node. Cheap to share between threads (`Send + Sync`); dropping it
/// stops it.
pub struct Node {
    shared: Arc<Shared>,
    events: Receiver<Event>,
    /// The acceptor and maintenance threads; `None` once stopped.
    threads: Mutex<Option<NodeThreads>>,
}

struct NodeThreads {
    acceptor: JoinHandle<()>,
    maintenance: JoinHandle<()>,
    /// Dropping it wakes the maintenance thread's `select!`.
    stop_maintenance: Sender<()>,
}

/// Identity, gauges and counters, for `info` (and metrics).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct NodeInfo {
    /// This node's id.
    pub node_id: NodeId,
    /// The socket address the listener is bound to.
    pub local_addr: SocketAddr,
    /// The address this node believes peers know it by (advertise override, else the
    /// bind IP, else the IP enough peers agree they see, else loopback), with its
    /// listen port.
    pub advertised_addr: SocketAddr,
    /// The overlay's name.
    pub network: String,
    /// How this node's links travel (`Config::encryption`).
    pub encryption: Encryption,
    /// Whether only peers with a certificate from the network CA are accepted
    /// (`Config::network_ca`).
    pub closed_network: bool,
    /// Live links.
    pub links: usize,
    /// Links the node dials towards.
    pub target_links: usize,
    /// Addresses in the address book.
    pub known_addrs: usize,
    /// Dials in progress.
    pub dialing: usize,
    /// Open sockets, including ones still in their handshake (dials still
    /// connecting are not counted; they are under `max_connections` too).
    pub connections: usize,
    /// The cap on open sockets (`Config::max_connections`).
    pub max_connections: usize,
    /// Accepted sockets in their handshake right now.
    pub pending_handshakes: usize,
    /// Broadcast ids in the seen-cache (bounded by `seen_cache_size`).
    pub seen_ids: usize,
    /// Broadcast frames kept to answer GRAFTs (bounded: 4,096 frames, 16 MiB, 30 s).
    pub stored_broadcasts: usize,
    /// Origins with a replay window (bounded by `replay_origins`).
    pub replay_origins: usize,
    /// Every counter (see [`Counters::list`] for names and help texts).
    pub counters: Counters,
}

impl Node {
    /// Binds `config.bind:config.port`, starts the acceptor and maintenance threads and
    /// returns at once (the C++ `Node(port)` followed by `start()`).
    ///
    /// Fails with `InvalidConfig` for out-of-range settings, `Bind` when the port is
    /// taken, `Thread` when the OS refuses a thread.
    pub fn start(config: Config) -> Result<Node, Error> {
        config.validate()?;
        let want = SocketAddr::new(config.bind, config.port);
        let listener =
            TcpListener::bind(want).map_err(|source| Error::Bind { addr: want, source })?;
        let local_addr = listener
            .local_addr()
            .map_err(|source| Error::Bind { addr: want, source })?;
        let identity = config.identity.clone().unwrap_or_else(Identity::generate);
        let tls = match config.encryption {
            Encryption::Tls => Some(
                TlsContext::new(&identity, config.network_ca.as_ref())
                    .map_err(Error::InvalidConfig)?,
            ),
            Encryption::Plain => None,
        };
        let config = Arc::new(config);
        let id = identity.node_id();
        let (links, events, wake) = Links::new(Arc::clone(&config), Clock::start());
        let shared = Arc::new(Shared {
            id,
            identity,
            tls,
            local_addr,
            links,
            protocols: Protocols::new(&config, id, local_addr),
        });
        let stack = config.thread_stack_size;
        let acceptor = {
            let factory = PeerConnectionFactory::new(Arc::clone(&shared));
            spawn_named("accept".into(), stack, move || {
                factory.run_acceptor(listener)
            })
            .map_err(Error::Thread)?
        };
        let (stop_maintenance, stop_rx) = bounded::<()>(0);
        let maintenance = {
            let shared = Arc::clone(&shared);
            spawn_named("maint".into(), stack, move || {
                maintenance::run(shared, stop_rx, wake)
            })
        };
        let maintenance = match maintenance {
            Ok(h) => h,
            Err(e) => {
                shared.links.stop_running();
                wake_listener(local_addr);
                let _ = acceptor.join();
                return Err(Error::Thread(e));
            }
        };
        log::info!("node {id} listening on {local_addr}");
        // Cached addresses are dialled at once, not on the first tick.
        maintenance::dial_more(&shared, &PeerConnectionFactory::new(Arc::clone(&shared)));
        Ok(Node {
            shared,
            events,
            threads: Mutex::new(Some(NodeThreads {
                acceptor,
                maintenance,
                stop_maintenance,
            })),
        })
    }

    /// This node's random id.
    pub fn id(&self) -> NodeId {
        self.shared.id
    }

    /// The address the listener is bound to, with the real port when 0 was asked for.
    pub fn local_addr(&self) -> SocketAddr {
        self.shared.local_addr
    }

    /// The address peers are expected to list this node under.
    pub fn advertised_addr(&self) -> SocketAddr {
        self.shared.protocols.membership.own_addr()
    }

    /// The node's events. Every clone shares one queue, so usually one consumer takes
    /// them all. Events pile up until someone receives them, up to
    /// `max_pending_events` events and `max_pending_event_bytes` of message text; past
    /// either, readers wait for room, which slows the peers down, and drop (and count)
    /// a message only after a bounded wait.
    pub fn events(&self) -> Receiver<Event> {
        self.events.clone()
    }

    /// Links to the node at `addr` (its listen address), or returns the existing link.
    /// Blocks until the handshake is done or failed: at most the connect timeout plus
    /// the handshake timeout. If a dial of `addr` is already running (the maintenance
    /// thread's), it waits for that one. The address is remembered and redialled if
    /// the link drops (the C++ `connectToPeer`). With `max_connections` sockets
    /// open it fails at once with `TooManyConnections` (the address is still
    /// remembered, so the node dials it once there is room).
    pub fn connect_to_peer(&self, addr: SocketAddr) -> Result<PeerInfo, Error> {
        let shared = &self.shared;
        let links = &shared.links;
        let membership = &shared.protocols.membership;
        if !links.is_running() {
            return Err(Error::NotRunning);
        }
        if !is_dialable(&addr) {
            return Err(Error::BadAddress(format!("{addr} cannot be dialled")));
        }
        if membership.is_own(&addr) {
            return Err(Error::SelfDial(addr));
        }
        if let Some(link) = links.by_addr(&addr) {
            return Ok(link.info());
        }
        membership.remember(addr);
        let config = links.config();
        // A dial ends within these (plus a referral's drain when the peer is full).
        let wait = config.connect_timeout + config.handshake_timeout + Duration::from_secs(1);
        match links.claim_dial(addr) {
            DialClaim::Mine => {
                let (tx, rx) = bounded(1);
                let factory = PeerConnectionFactory::new(Arc::clone(shared));
                factory.dial(Dial {
                    expect: membership.expected_id(&addr),
                    addr,
                    waiter: Some(tx),
                })?;
                rx.recv_timeout(wait).unwrap_or(Err(Error::Handshake {
                    addr,
                    reason: HandshakeError::NoAnswer,
                }))
            }
            DialClaim::Busy(done) => {
                // Disconnects when the other dial ends; its link is registered by then.
                let _ = done.recv_timeout(wait);
                match links.by_addr(&addr) {
                    Some(link) => Ok(link.info()),
                    None => Err(Error::Handshake {
                        addr,
                        reason: HandshakeError::ConcurrentDialFailed,
                    }),
                }
            }
        }
    }

    /// Sends `text` to the peer listening at `addr`, dialling it first if there is no
    /// link (the C++ `sendDataToPeer`). Returns once the message is queued on the link;
    /// if the queue stays full for the peer timeout, the peer is dropped and
    /// `PeerTooSlow` returned, so one stuck peer cannot hold the caller forever.
    pub fn send_data_to_peer(&self, addr: SocketAddr, text: &str) -> Result<(), Error> {
        let links = &self.shared.links;
        let max = links.config().max_frame;
        // A DATA frame is the type byte and the text.
        let len = 1 + text.len();
        if len > max as usize {
            return Err(Error::MessageTooLarge { len, max });
        }
        let frame = Frame::Owned(P2PMessage::encode_data(text));
        let link = match links.by_addr(&addr) {
            Some(l) => l,
            None => {
                let info = self.connect_to_peer(addr)?;
                links.get(info.node_id).ok_or(Error::LinkClosed(addr))?
            }
        };
        links.send_blocking(&link, frame)
    }

    /// Sends `text` to every node of the overlay (the C++ `broadcastData`, which only
    /// reached direct peers), along the broadcast tree (`protocol/broadcast`). Returns
    /// the number of neighbours it was sent or announced to; 0 means no node will
    /// receive it.
    pub fn broadcast_data(&self, text: &str) -> Result<usize, Error> {
        let shared = &self.shared;
        if !shared.links.is_running() {
            return Err(Error::NotRunning);
        }
        let origin = shared.protocols.membership.own_addr();
        shared
            .protocols
            .broadcast
            .originate(&shared.links, &shared.identity, text, origin)
    }

    /// The live links (the C++ `printPeers`, minus the printing).
    pub fn peers(&self) -> Vec<PeerInfo> {
        let mut v: Vec<PeerInfo> = self.shared.links.links().iter().map(|l| l.info()).collect();
        v.sort_by_key(|p| p.addr);
        v
    }

    /// Every address in the address book.
    pub fn known_addrs(&self) -> Vec<KnownAddr> {
        self.shared.protocols.membership.known()
    }

    /// Removes `addr` from the address book so it is not dialled again (a live link to
    /// it stays up). Returns `false` if it was not known.
    pub fn forget_addr(&self, addr: SocketAddr) -> bool {
        self.shared.protocols.membership.forget(&addr)
    }

    /// Closes the link to the peer at `addr`, sending it LEAVE first (the C++
    /// `removePeer`). Returns `false` if there was no such link. The address stays
    /// known, so automatic dialing may link it again later (after a minute).
    pub fn remove_peer(&self, addr: SocketAddr) -> bool {
        let links = &self.shared.links;
        match links.by_addr(&addr) {
            Some(link) => {
                links.leave(&link, DownReason::RemovedLocally);
                self.shared.protocols.membership.defer_redial(&link.addr());
                true
            }
            None => false,
        }
    }

    /// Identity, gauges and counters.
    pub fn info(&self) -> NodeInfo {
        let s = &self.shared;
        let counts = s.links.counts();
        let config = s.links.config();
        NodeInfo {
            node_id: s.id,
            local_addr: s.local_addr,
            advertised_addr: s.protocols.membership.own_addr(),
            network: config.network.clone(),
            encryption: config.encryption,
            closed_network: config.network_ca.is_some(),
            links: counts.links,
            target_links: config.target_links,
            known_addrs: s.protocols.membership.known_len(),
            dialing: counts.dialing,
            connections: counts.connections,
            max_connections: config.max_connections,
            pending_handshakes: counts.pending_handshakes,
            seen_ids: s.protocols.broadcast.seen_len(),
            stored_broadcasts: s.protocols.broadcast.stored(),
            replay_origins: s.protocols.broadcast.replay_origins(),
            counters: s.links.stats().snapshot(),
        }
    }

    /// Whether `stop` has not been called yet.
    pub fn is_running(&self) -> bool {
        self.shared.links.is_running()
    }

    /// Sends LEAVE on every link, closes every socket and joins every thread the node
    /// started. Idempotent; returns within about half a second plus the time a
    /// thread needs to notice its socket closed, except that a dial still inside its
    /// TCP connect is waited for (at most `connect_timeout`).
    pub fn stop(&self) {
        let Some(threads) = self.threads.lock().take() else {
            return;
        };
        let shared = &self.shared;
        shared.links.stop_running();
        log::info!("node {} stopping", shared.id);

        drop(threads.stop_maintenance);
        if threads.maintenance.join().is_err() {
            log::error!("maintenance thread panicked");
        }
        wake_listener(shared.local_addr);
        if threads.acceptor.join().is_err() {
            log::error!("acceptor thread panicked");
        }
        shared.links.shut_down();
        shared.protocols.membership.save_peers_file();
        log::info!("node {} stopped", shared.id);
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Parses `host:port` (a name is resolved), for the CLI and embedders that hold
/// addresses as text. An IPv4 result is preferred, since that is what `peers` lists on
/// a typical LAN.
pub fn resolve_peer_addr(s: &str) -> Result<SocketAddr, Error> {
    if let Ok(a) = s.parse::<SocketAddr>() {
        return Ok(a);
    }
    if !s.contains(':') {
        return Err(Error::BadAddress(format!("{s:?} has no port (host:port)")));
    }
    let addrs: Vec<SocketAddr> = s
        .to_socket_addrs()
        .map_err(|e| Error::BadAddress(format!("cannot resolve {s:?}: {e}")))?
        .collect();
    addrs
        .iter()
        .find(|a| a.is_ipv4())
        .or(addrs.first())
        .copied()
        .ok_or_else(|| Error::BadAddress(format!("{s:?} resolves to no address")))
}
