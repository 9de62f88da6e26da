//! `PeerConnectionFactory`: turns a socket, accepted or dialled, into a running
//! [`PeerConnection`] on a thread of its own. It mirrors the C++
//! `PeerConnectionFactory`, a `Poco::Net::TCPServerConnectionFactory` whose
//! `createConnection` wrapped each accepted socket, and the acceptor loop of Poco's
//! `TCPServer` that fed it.
//!
//! Differences from the C++, and why:
//! - Poco ran connections on a pool of 16 threads with a 64-slot queue, so an idle
//!   connection could starve everyone else (the observed "80 held" of 500 idle
//!   sockets). Here each connection gets its own named thread with a small, set stack,
//!   the handshake timeout bounds how long a silent socket holds it, and at most
//!   `max_pending_handshakes` accepted sockets wait for their JOIN at once.
//! - Every socket, accepted or dialled, holds a `ConnSlot` from accept (or from
//!   before its dial thread starts) until its thread ends: at most `max_connections`
//!   sockets (and their threads) exist at once, whatever they turn into. An accepted
//!   socket over the cap is closed at once, before any byte; a dial over it is not
//!   started (`Error::TooManyConnections`).
//! - The same factory also dials: an outbound connection runs exactly the same code as
//!   an inbound one, because both ends of a link speak the same protocol.
//! - Every stream is registered with the link manager as soon as it exists (an
//!   accepted one before its thread starts, a dialled one by its thread right after
//!   the connect), so `Node::stop` can shut it down, and every thread handle is kept
//!   there to be joined.

use std::io;
use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;
use std::time::Duration;

use crate::error::Error;
use crate::links::{ConnSlot, PendingSlot};
use crate::peer_connection::{Dial, PeerConnection};
use crate::shared::Shared;
use crate::transport::thread::spawn_named;
use crate::transport::Stream;

/// Creates connection threads for one node.
pub(crate) struct PeerConnectionFactory {
    shared: Arc<Shared>,
}

impl PeerConnectionFactory {
    pub(crate) fn new(shared: Arc<Shared>) -> PeerConnectionFactory {
        PeerConnectionFactory { shared }
    }

    /// The acceptor thread's body: hands every accepted socket to
    /// [`PeerConnectionFactory::create_connection`] until the node stops (then
    /// `transport::wake_listener` makes `accept` return).
    pub(crate) fn run_acceptor(&self, listener: TcpListener) {
        let links = &self.shared.links;
        for socket in listener.incoming() {
            if !links.is_running() {
                break;
            }
            match socket {
                Ok(s) => {
                    // Refused sockets are dropped, i.e. closed, right here, before any
                    // byte: first the connection cap, then the pending-handshake cap
                    // (which may evict a pending handshake of a crowded source group
                    // instead, see `Links::admit_pending`).
                    let Some(slot) = links.admit_connection() else {
                        continue;
                    };
                    let remote = match s.peer_addr() {
                        Ok(remote) => remote,
                        Err(e) => {
                            log::debug!("accepted socket has no peer address: {e}");
                            continue;
                        }
                    };
                    let stream = Stream::tcp(s);
                    let conn_id = links.next_conn_id();
                    let Some(pending) = links.admit_pending(remote.ip(), conn_id, stream.closer())
                    else {
                        continue;
                    };
                    self.create_connection(stream, remote, conn_id, slot, pending);
                }
                Err(e) => {
                    // Out of file descriptors and similar: back off instead of spinning.
                    log::warn!("accept failed: {e}");
                    std::thread::sleep(Duration::from_millis(50));
                }
            }
        }
    }

    /// Runs an accepted stream (the C++ `createConnection`). A stream that cannot get a
    /// thread is closed (its slots freed with it) and the refusal is logged.
    pub(crate) fn create_connection(
        &self,
        stream: Stream,
        remote: SocketAddr,
        conn_id: u64,
        slot: ConnSlot,
        pending: PendingSlot,
    ) {
        let shared = &self.shared;
        shared.links.add_conn(conn_id, stream.closer());
        let conn =
            PeerConnection::accepted(Arc::clone(shared), stream, conn_id, remote, slot, pending);
        if let Err(e) = self.spawn(format!("rx {remote}"), conn_id, move || conn.run()) {
            log::error!("cannot start a connection thread for {remote}: {e}");
        }
    }

    /// Dials `dial.addr` on a new thread, which then runs the connection; its outcome
    /// goes to `dial.waiter`. The caller has claimed the address
    /// (`Links::claim_dial`); the connection releases it. Returns at once; fails
    /// (and releases the claim) when `max_connections` sockets are open
    /// (`TooManyConnections`: the dial is not started) or no thread can be started.
    pub(crate) fn dial(&self, dial: Dial) -> Result<(), Error> {
        let addr = dial.addr;
        let Some(slot) = self.shared.links.conn_slot() else {
            self.shared.links.end_dial(&addr);
            return Err(Error::TooManyConnections {
                max: self.shared.links.config().max_connections,
            });
        };
        let shared = Arc::clone(&self.shared);
        let spawned = spawn_named(
            format!("dial {addr}"),
            self.shared.links.config().thread_stack_size,
            move || {
                let links = &shared.links;
                match Stream::connect(addr, links.config().connect_timeout) {
                    Ok(stream) => {
                        let conn_id = links.next_conn_id();
                        links.add_conn(conn_id, stream.closer());
                        PeerConnection::dialled(Arc::clone(&shared), stream, conn_id, slot, dial)
                            .run();
                    }
                    Err(source) => {
                        drop(slot);
                        log::debug!("dial {addr} failed: {source}");
                        shared
                            .protocols
                            .membership
                            .dial_finished(links, addr, false, false);
                        links.end_dial(&addr);
                        if let Some(w) = dial.waiter {
                            let _ = w.send(Err(Error::Connect { addr, source }));
                        }
                    }
                }
            },
        );
        match spawned {
            Ok(handle) => {
                self.shared.links.add_thread(handle);
                Ok(())
            }
            Err(e) => {
                self.shared.links.end_dial(&addr);
                Err(Error::Thread(e))
            }
        }
    }

    fn spawn(
        &self,
        name: String,
        conn_id: u64,
        f: impl FnOnce() + Send + 'static,
    ) -> io::Result<()> {
        let links = &self.shared.links;
        match spawn_named(name, links.config().thread_stack_size, f) {
            Ok(handle) => {
                links.add_thread(handle);
                Ok(())
            }
            Err(e) => {
                // The closure (and with it the stream and its slots) was dropped by
                // the failed spawn.
                links.remove_conn(conn_id);
                Err(e)
            }
        }
    }
}
