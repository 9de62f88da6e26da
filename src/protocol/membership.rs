//! Membership: who this node is to others and whom it knows. The JOIN rules, peer
//! exchange (PEERS), the address book and its file, what peers say our address is,
//! and which addresses to dial next. The C++ original advertised `localhost:<port>`,
//! never recorded a JOIN and never told anyone about anyone; each of those is here.
//!
//! It makes no dials itself: [`Membership::dial_plan`] says whom to dial, and the
//! maintenance thread dials (a PEERS message with new addresses wakes it).
//!
//! Against eclipse attempts (see `state::known_addrs`): a PEERS list counts against
//! its sender's network group, taken from the link's socket remote IP (not its JOIN,
//! which a peer chooses), so one peer or subnet adds at most `NEW_PER_SOURCE` new
//! addresses; the plan spends the dial budget of `Config::new_dials_per_sec` on new
//! addresses, takes sources in turn and prefers subnets without an outbound link.
//!
//! Locks: `book` (the address book) and `observed` (votes on our own IP), each taken
//! alone, except when an adopted IP changes: then `observed`, then `book`.

use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use crate::config::Config;
use crate::error::HandshakeError;
use crate::links::{Link, Links};
use crate::p2p_message::{Join, NodeId, P2PMessage, PeerEntry, PROTOCOL_VERSION};
use crate::state::known_addrs::{AddrBook, DialBudget, KnownAddr, Learned};
use crate::state::net::net_group;
use crate::state::observed::{usable, ObservedVotes};
use crate::state::peer_cache;
use crate::state::stats;

/// Most addresses sent in one PEERS message.
const PEERS_PER_EXCHANGE: usize = 128;

/// How long a node waits before redialing a peer that said LEAVE (or that the user
/// disconnected): it is going away on purpose. A node that restarts dials us itself.
const LEAVE_REDIAL_DELAY: Duration = Duration::from_secs(60);

/// Most (address, id) pairs [`VerifiedAddrs`] keeps.
const MAX_VERIFIED: usize = 1024;

/// Listen addresses proven to reach a node id: by an outbound link (we dialled the
/// address) or by a successful dial-back probe. An inbound JOIN claiming an address
/// found here with the same id needs no probe. One id per address (the last proven:
/// a node that restarts with a new key replaces its entry); at most
/// [`MAX_VERIFIED`], the oldest recorded goes first.
#[derive(Default)]
struct VerifiedAddrs {
    by_addr: HashMap<SocketAddr, NodeId>,
    /// Recording order, oldest first; may name addresses re-recorded since (skipped
    /// when they come up for removal).
    order: VecDeque<(SocketAddr, NodeId)>,
}

impl VerifiedAddrs {
    fn contains(&self, id: NodeId, addr: &SocketAddr) -> bool {
        self.by_addr.get(addr) == Some(&id)
    }

    fn record(&mut self, id: NodeId, addr: SocketAddr) {
        if self.contains(id, &addr) {
            return;
        }
        self.by_addr.insert(addr, id);
        self.order.push_back((addr, id));
        while self.by_addr.len() > MAX_VERIFIED || self.order.len() > 2 * MAX_VERIFIED {
            let Some((a, i)) = self.order.pop_front() else {
                break;
            };
            if self.by_addr.get(&a) == Some(&i) {
                self.by_addr.remove(&a);
            }
        }
    }
}

/// A JOIN that meets the rules of [`Membership::check_join`].
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum JoinCheck {
    /// A peer: go on with the handshake.
    Accept,
    /// Our own JOIN came back: we dialled ourselves.
    OwnId,
}

/// The membership protocol's state; see the module docs.
pub(crate) struct Membership {
    config: Arc<Config>,
    id: NodeId,
    local_addr: SocketAddr,
    /// Addresses that reach this node whatever peers say: the bind address (and its
    /// loopback forms when bound to 0.0.0.0) and `--advertise`.
    fixed_own: Vec<SocketAddr>,
    book: Mutex<AddrBook>,
    observed: Mutex<ObservedVotes>,
    /// Proven (address, id) pairs; taken alone, never with another lock.
    verified: Mutex<VerifiedAddrs>,
    /// A PEERS message brought new addresses: the maintenance thread dials at once.
    dial_wanted: AtomicBool,
}

impl Membership {
    /// The state of a node listening at `local_addr`, with the peers file (if any)
    /// read into the address book.
    pub(crate) fn new(config: Arc<Config>, id: NodeId, local_addr: SocketAddr) -> Membership {
        // The burst covers a join: at most `target_links` new addresses at once.
        let budget = DialBudget::new(f64::from(config.new_dials_per_sec), config.target_links);
        let mut book = AddrBook::new(config.max_known_addrs, budget);
        let fixed_own = fixed_own_addrs(&config, local_addr);
        for own in &fixed_own {
            book.add_own(*own);
        }
        if let Some(path) = &config.peers_file {
            restore_peers_file(&mut book, path);
        }
        Membership {
            config,
            id,
            local_addr,
            fixed_own,
            book: Mutex::new(book),
            observed: Mutex::new(ObservedVotes::default()),
            verified: Mutex::new(VerifiedAddrs::default()),
            dial_wanted: AtomicBool::new(false),
        }
    }

    /// Our JOIN for a connection whose other end is at `remote_ip`.
    pub(crate) fn join_message(&self, remote_ip: IpAddr) -> P2PMessage {
        let port = match self.config.advertise {
            Some(a) => a.port(),
            None => self.local_addr.port(),
        };
        // A node bound to one IP can only be reached there, whatever source IP its
        // outgoing connections happen to use, so it announces that IP.
        let bound = Some(self.local_addr.ip()).filter(|ip| !ip.is_unspecified());
        P2PMessage::Join(Join {
            version: PROTOCOL_VERSION,
            node_id: self.id,
            listen_port: port,
            network: self.config.network.clone(),
            advertise: self.config.advertise.map(|a| a.ip()).or(bound),
            observed: Some(remote_ip),
        })
    }

    /// The JOIN rules, in order: our protocol version, our network, not our own id
    /// (then we dialled ourselves: [`JoinCheck::OwnId`], not a refusal), a listen
    /// port.
    pub(crate) fn check_join(&self, join: &Join) -> Result<JoinCheck, HandshakeError> {
        if join.version != PROTOCOL_VERSION {
            return Err(HandshakeError::Version {
                theirs: join.version,
            });
        }
        if join.network != self.config.network {
            return Err(HandshakeError::Network {
                theirs: join.network.clone(),
                ours: self.config.network.clone(),
            });
        }
        if join.node_id == self.id {
            return Ok(JoinCheck::OwnId);
        }
        if join.listen_port == 0 {
            return Err(HandshakeError::ListenPortZero);
        }
        Ok(JoinCheck::Accept)
    }

    /// The address peers know this node by: `--advertise`, else the bind IP, else (bound
    /// to 0.0.0.0) the IP enough peers agree they see us at, else loopback.
    pub(crate) fn own_addr(&self) -> SocketAddr {
        if let Some(a) = self.config.advertise {
            return a;
        }
        let ip = self.local_addr.ip();
        if !ip.is_unspecified() {
            return self.local_addr;
        }
        let ip = self
            .observed
            .lock()
            .adopted()
            .unwrap_or_else(|| loopback_of(ip));
        SocketAddr::new(ip, self.local_addr.port())
    }

    /// Whether `addr` was proven to reach node `id` (see [`VerifiedAddrs`]).
    pub(crate) fn is_verified(&self, id: NodeId, addr: &SocketAddr) -> bool {
        self.verified.lock().contains(id, addr)
    }

    /// `addr` was proven to reach node `id`: we dialled it and got that id, or a
    /// dial-back probe found that id there.
    pub(crate) fn record_verified(&self, id: NodeId, addr: SocketAddr) {
        self.verified.lock().record(id, addr);
    }

    /// Whether `addr` reaches this node itself.
    pub(crate) fn is_own(&self, addr: &SocketAddr) -> bool {
        *addr == self.local_addr || self.book.lock().is_own(addr)
    }

    /// A link was registered: its address (when verified) proved good, and its JOIN's view of our IP
    /// is its vote. Runs before `PeerUp` is reported, so an application reacting to
    /// `PeerUp` (say, `forget_addr`) sees the address book already updated.
    pub(crate) fn link_registered(
        &self,
        links: &Links,
        link: &Link,
        source: IpAddr,
        observed: Option<IpAddr>,
    ) {
        // An unverified link's address is its socket's: nothing to dial or store.
        if link.verified() {
            self.book
                .lock()
                .mark_success(link.addr(), Some(link.node_id()), Instant::now());
        }
        if let Some(ip) = observed {
            self.observe(links, link.conn_id(), source, ip);
        }
    }

    /// A connection's reader ended: a link's vote on our IP is withdrawn.
    pub(crate) fn link_down(&self, conn_id: u64) {
        self.observed.lock().withdraw(conn_id);
    }

    /// Records what the link `conn_id` from `source` sees our IP as; see
    /// `state::observed`. Only a node bound to 0.0.0.0 (or ::) without `--advertise`
    /// listens: any other knows its address.
    fn observe(&self, links: &Links, conn_id: u64, source: IpAddr, observed: IpAddr) {
        let bind = self.local_addr.ip();
        if self.config.advertise.is_some() || !bind.is_unspecified() || !usable(observed, bind) {
            return;
        }
        stats::add(&links.stats().observations, 1);
        let port = self.local_addr.port();
        let adopted = {
            // Lock order: `observed`, then `book`, so two adoptions at once reach the
            // own-address set in the order they were decided.
            let mut votes = self.observed.lock();
            let before = votes.adopted();
            let adopted = votes.record(conn_id, source, observed);
            if let Some(ip) = adopted {
                let mut book = self.book.lock();
                if let Some(old) = before.map(|ip| SocketAddr::new(ip, port)) {
                    if !self.fixed_own.contains(&old) {
                        book.remove_own(&old);
                    }
                }
                book.add_own(SocketAddr::new(ip, port));
            }
            adopted
        };
        if let Some(ip) = adopted {
            log::info!("peers agree this node is reached at {ip}");
        }
    }

    /// Sends `link` the addresses we know.
    pub(crate) fn send_peer_list(&self, links: &Links, link: &Link) {
        let frame = self.peer_list(links, link.addr()).encode();
        links.queue_control(link, &frame);
    }

    /// Sends every link the current address list (the periodic exchange), so nodes
    /// that joined later are learned.
    pub(crate) fn exchange(&self, links: &Links) {
        for link in links.links() {
            self.send_peer_list(links, &link);
        }
    }

    /// The PEERS message for the node at `to`: our links with verified addresses
    /// first, then healthy known addresses, at most [`PEERS_PER_EXCHANGE`], never `to`
    /// itself, each with the id proven there when we know it.
    pub(crate) fn peer_list(&self, links: &Links, to: SocketAddr) -> P2PMessage {
        let mut addrs: Vec<PeerEntry> = links
            .linked_peers()
            .into_iter()
            .filter(|(a, _)| *a != to)
            .map(|(addr, id)| PeerEntry { addr, id: Some(id) })
            .collect();
        if addrs.len() < PEERS_PER_EXCHANGE {
            let more = self.book.lock().healthy(PEERS_PER_EXCHANGE);
            for (addr, id) in more {
                if addrs.len() >= PEERS_PER_EXCHANGE {
                    break;
                }
                if addr != to && !addrs.iter().any(|e| e.addr == addr) {
                    addrs.push(PeerEntry { addr, id });
                }
            }
        }
        addrs.truncate(PEERS_PER_EXCHANGE);
        P2PMessage::Peers { addrs }
    }

    /// Adds addresses from a peer's PEERS message, within the per-source limit of the
    /// link's remote IP (see `state::known_addrs`); new ones wake the dialer. The ids
    /// in it are kept (for entries without one) only when the sender's own address
    /// is verified: an unverified peer could name any id for any address.
    pub(crate) fn on_peers(&self, links: &Links, addrs: &[PeerEntry], from: &Link) {
        let now = Instant::now();
        let source = from.remote_ip();
        let trusted = from.verified();
        let (mut new, mut ignored) = (0, 0);
        {
            let mut book = self.book.lock();
            for e in addrs {
                let id = e.id.filter(|_| trusted);
                match book.learn_from(e.addr, id, source, now) {
                    Learned::Added => new += 1,
                    Learned::SourceFull => ignored += 1,
                    Learned::Known | Learned::Refused => {}
                }
            }
        }
        if ignored > 0 {
            stats::add(&links.stats().addrs_ignored, ignored);
        }
        log::debug!(
            "{}: peer list of {} addresses, {new} new, {ignored} ignored (source {source} \
             has enough)",
            from.addr(),
            addrs.len()
        );
        if new > 0 {
            self.dial_wanted.store(true, Ordering::Relaxed);
            links.wake_maintenance();
        }
    }

    /// The peer at `addr` said LEAVE, or the user disconnected it: no redial for a
    /// while (see [`LEAVE_REDIAL_DELAY`]).
    pub(crate) fn defer_redial(&self, addr: &SocketAddr) {
        let until = Instant::now() + LEAVE_REDIAL_DELAY;
        self.book.lock().defer(addr, until);
    }

    /// Whether new addresses arrived since the last call.
    pub(crate) fn take_dial_wanted(&self) -> bool {
        self.dial_wanted.swap(false, Ordering::Relaxed)
    }

    /// The node id a dial of `addr` expects in the TLS certificate, if the address
    /// book has one (see `state::known_addrs`).
    pub(crate) fn expected_id(&self, addr: &SocketAddr) -> Option<NodeId> {
        self.book.lock().expected_id(addr)
    }

    /// Addresses to dial now to reach `target_links`: never one that is linked or
    /// being dialled, never one in backoff; new addresses within the dial budget,
    /// round-robin over sources, other subnets than our outbound links' first (see
    /// `AddrBook::dial_candidates`). Empty without `auto_dial`.
    pub(crate) fn dial_plan(&self, links: &Links) -> Vec<SocketAddr> {
        if !self.config.auto_dial || !links.is_running() {
            return Vec::new();
        }
        let (busy, skip) = links.busy_addrs();
        let need = self.config.target_links.saturating_sub(busy);
        if need == 0 {
            return Vec::new();
        }
        let outbound = links
            .outbound_addrs()
            .into_iter()
            .map(|a| net_group(a.ip()))
            .collect();
        self.book
            .lock()
            .dial_candidates(Instant::now(), &skip, &outbound, need)
    }

    /// Remembers an address the application dials, so it is redialled if the link
    /// drops: no source limit, no dial budget.
    pub(crate) fn remember(&self, addr: SocketAddr) {
        self.book.lock().remember(addr, Instant::now());
    }

    /// Bookkeeping at the end of a dial. Success was recorded when the link came up
    /// (`link_registered`); doing it again here would re-add an address the user forgot in
    /// between.
    /// `wrong_id`: the certificate there was for another node than the stored id
    /// (counted towards dropping that id, see `AddrBook::mark_wrong_id`).
    pub(crate) fn dial_finished(&self, links: &Links, addr: SocketAddr, ok: bool, wrong_id: bool) {
        if !ok {
            stats::add(&links.stats().dial_failures, 1);
            let mut book = self.book.lock();
            if wrong_id {
                book.mark_wrong_id(&addr);
            }
            book.mark_failure(addr, Instant::now());
        }
    }

    /// A dial reached this node itself: never dial that address again.
    pub(crate) fn found_self(&self, addr: SocketAddr) {
        self.book.lock().add_own(addr);
    }

    /// Every address in the address book.
    pub(crate) fn known(&self) -> Vec<KnownAddr> {
        self.book.lock().entries()
    }

    pub(crate) fn known_len(&self) -> usize {
        self.book.lock().len()
    }

    /// Removes `addr` from the address book; `false` if it was not there.
    pub(crate) fn forget(&self, addr: &SocketAddr) -> bool {
        self.book.lock().remove(addr)
    }

    /// Writes the address book to the peers file, if there is one. A failure is a
    /// warning; the node runs on and tries again at the next interval.
    pub(crate) fn save_peers_file(&self) {
        let Some(path) = &self.config.peers_file else {
            return;
        };
        let entries = self.book.lock().to_cache();
        match peer_cache::save(path, &entries) {
            Ok(()) => log::debug!("saved {} addresses to {}", entries.len(), path.display()),
            Err(e) => log::warn!("cannot write peer cache {}: {e}", path.display()),
        }
    }
}

/// Loads the peers file into the address book. Nothing here stops the node: no file
/// yet is the normal first start (info), an unusable file is a warning, and either
/// way the node starts with an empty book.
fn restore_peers_file(book: &mut AddrBook, path: &Path) {
    match peer_cache::load(path) {
        Ok(loaded) => {
            for (line, why) in &loaded.skipped {
                log::warn!("{}:{line}: skipped: {why}", path.display());
            }
            let n = book.restore(&loaded.addrs, Instant::now());
            log::info!("restored {n} addresses from {}", path.display());
        }
        Err(e @ peer_cache::CacheError::Missing(_)) => log::info!("{e}: first start"),
        Err(e) => log::warn!("{e}; starting without cached peers"),
    }
}

/// Addresses that reach this node whatever peers say, so it never stores or dials
/// them.
fn fixed_own_addrs(config: &Config, local: SocketAddr) -> Vec<SocketAddr> {
    let port = local.port();
    let mut v = vec![local];
    if local.ip().is_unspecified() {
        v.push(SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port));
        v.push(SocketAddr::new(IpAddr::V6(Ipv6Addr::LOCALHOST), port));
    }
    if let Some(a) = config.advertise {
        v.push(a);
    }
    v
}

/// The loopback address of `ip`'s family.
fn loopback_of(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::LOCALHOST),
    }
}
