//! `PeerConnectionFactory`: turns a socket, accepted or dialled, into a running
//! [`PeerConnection`] on a thread of its own. It mirrors the C++
//! `PeerConnectionFactory`, a `Poco::Net::TCPServerConnectionFactory` whose
//! `createConnection` wrapped each accepted socket.
//!
//! Differences from the C++, and why:
//! - Poco ran connections on a pool of 16 threads with a 64-slot queue, so an idle
//!   connection could starve everyone else (the observed "80 held" of 500 idle
//!   sockets). Here each connection gets its own named thread with a small, set stack,
//!   and the handshake timeout bounds how long a silent socket holds it.
//! - The same factory also dials: an outbound connection runs exactly the same code as
//!   an inbound one, because both ends of a link speak the same protocol.
//! - Every socket is registered in the peer table before its thread starts, so
//!   `Node::stop` can shut it down, and every thread handle is kept there to be joined.

use std::io;
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::thread::{self, JoinHandle};

use crossbeam_channel::Sender;

use crate::error::Error;
use crate::event::{Direction, PeerInfo};
use crate::node::Shared;
use crate::peer_connection::PeerConnection;

/// Where a dial reports its outcome, for callers that wait for it (`connect_to_peer`).
pub(crate) type DialWaiter = Sender<Result<PeerInfo, Error>>;

/// Starts a thread with a name (shown by `top -H`, debuggers and panic messages) and the
/// node's configured stack size, returning the OS's refusal instead of panicking.
pub(crate) fn spawn_named<F, T>(name: String, stack_size: usize, f: F) -> io::Result<JoinHandle<T>>
where
    F: FnOnce() -> T + Send + 'static,
    T: Send + 'static,
{
    thread::Builder::new()
        .name(name)
        .stack_size(stack_size)
        .spawn(f)
}

/// Creates connection threads for one node.
pub(crate) struct PeerConnectionFactory {
    shared: Arc<Shared>,
}

impl PeerConnectionFactory {
    pub(crate) fn new(shared: Arc<Shared>) -> PeerConnectionFactory {
        PeerConnectionFactory { shared }
    }

    /// Runs an accepted socket (the C++ `createConnection`). A socket that cannot get a
    /// thread is closed and the refusal is logged.
    /// The caller has counted the socket as a pending handshake
    /// (`Shared::admit_pending`); the connection ends that count.
    pub(crate) fn create_connection(&self, stream: TcpStream, remote: SocketAddr) {
        let name = format!("rx {remote}");
        if let Err(e) = self.start(stream, remote, Direction::Inbound, None, None, name) {
            self.shared.end_pending();
            log::error!("cannot start a connection thread for {remote}: {e}");
        }
    }

    /// Dials `addr` on a new thread, which then runs the connection. The outcome of the
    /// handshake goes to `waiter` if there is one. Returns at once; refuses only when a
    /// dial of `addr` is already in progress or no thread can be started.
    pub(crate) fn dial(&self, addr: SocketAddr, waiter: Option<DialWaiter>) -> Result<(), Error> {
        if !self.shared.table.lock().start_dial(addr) {
            return Err(Error::Handshake {
                addr,
                reason: "a dial to this address is already in progress".into(),
            });
        }
        let shared = Arc::clone(&self.shared);
        let spawned = spawn_named(
            format!("dial {addr}"),
            self.shared.config.thread_stack_size,
            move || {
                let timeout = shared.config.connect_timeout;
                match TcpStream::connect_timeout(&addr, timeout) {
                    Ok(stream) => {
                        let conn_id = shared.next_conn_id();
                        match stream.try_clone() {
                            Ok(clone) => shared.table.lock().add_conn(conn_id, clone),
                            Err(e) => log::debug!("cannot clone socket to {addr}: {e}"),
                        }
                        let conn = PeerConnection::new(
                            shared,
                            stream,
                            conn_id,
                            addr,
                            Direction::Outbound,
                            Some(addr),
                            waiter,
                        );
                        conn.run();
                    }
                    Err(source) => {
                        log::debug!("dial {addr} failed: {source}");
                        shared.dial_finished(addr, false);
                        if let Some(w) = waiter {
                            let _ = w.send(Err(Error::Connect { addr, source }));
                        }
                    }
                }
            },
        );
        match spawned {
            Ok(handle) => {
                self.shared.table.lock().add_thread(handle);
                Ok(())
            }
            Err(e) => {
                self.shared.table.lock().end_dial(&addr);
                Err(Error::Thread(e))
            }
        }
    }

    fn start(
        &self,
        stream: TcpStream,
        remote: SocketAddr,
        direction: Direction,
        dial_addr: Option<SocketAddr>,
        waiter: Option<DialWaiter>,
        name: String,
    ) -> io::Result<()> {
        let conn_id = self.shared.next_conn_id();
        let clone = stream.try_clone()?;
        self.shared.table.lock().add_conn(conn_id, clone);
        let conn = PeerConnection::new(
            Arc::clone(&self.shared),
            stream,
            conn_id,
            remote,
            direction,
            dial_addr,
            waiter,
        );
        match spawn_named(name, self.shared.config.thread_stack_size, move || {
            conn.run()
        }) {
            Ok(handle) => {
                self.shared.table.lock().add_thread(handle);
                Ok(())
            }
            Err(e) => {
                // The closure (and with it the socket) was dropped by the failed spawn.
                self.shared.table.lock().remove_conn(conn_id);
                Err(e)
            }
        }
    }
}
