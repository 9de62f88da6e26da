//! The transport boundary: [`Stream`], the one type every byte of a connection goes
//! through, and the pieces that move bytes (the [`outbox`], the thread helper).
//!
//! Everything above this module sees a `Stream` and its halves, never a `TcpStream`:
//! the handshake writes JOIN through a [`WriteHalf`], the reader loop reads through a
//! [`ReadHalf`], the outbox sends through its own `WriteHalf`, and the peer table
//! keeps a [`Closer`] to shut a link down from another thread. The C++ original (and
//! this crate before) cloned the socket up to four times per connection instead;
//! here the halves share one descriptor, so a connection costs one.
//!
//! A stream is a TCP socket, and after [`Stream::start_tls`] a TLS 1.3 session over
//! it ([`tls`]), with the same halves: the protocols above do not change. For TLS the
//! halves keep only the session state under a lock and do the socket I/O outside it
//! (a blocked reader must never hold what a writer needs).
//!
//! This module imports nothing from the layers above it.

pub(crate) mod outbox;
pub(crate) mod thread;
pub(crate) mod tls;

use std::io::{self, BufRead, BufReader, Read};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, Shutdown, SocketAddr, TcpStream};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use socket2::SockRef;

use crate::p2p_message::NodeId;
use tls::{HandshakeFailure, Session};

/// A connection's byte stream, owned by its connection; see the module docs.
pub(crate) struct Stream {
    inner: Arc<Inner>,
}

/// What a stream runs over: a socket, and a TLS session on it once one is started.
struct Inner {
    sock: TcpStream,
    tls: OnceLock<Session>,
}

impl Stream {
    /// A stream over an accepted or dialled TCP socket.
    pub(crate) fn tcp(socket: TcpStream) -> Stream {
        Stream {
            inner: Arc::new(Inner {
                sock: socket,
                tls: OnceLock::new(),
            }),
        }
    }

    /// Runs a TLS handshake over the socket (before anything else was sent on it);
    /// from then on every byte through the halves is encrypted.
    pub(crate) fn start_tls(
        &self,
        session: Session,
        deadline: Instant,
    ) -> Result<(), HandshakeFailure> {
        if self.inner.tls.set(session).is_err() {
            return Err(HandshakeFailure::Io(io::Error::other(
                "TLS already started",
            )));
        }
        match self.inner.tls.get() {
            Some(s) => s.handshake(&self.inner.sock, deadline),
            None => Err(HandshakeFailure::Io(io::Error::other("no TLS session"))),
        }
    }

    /// The node id the peer's certificate proved; `None` on a plaintext stream.
    pub(crate) fn peer_id(&self) -> Option<NodeId> {
        self.inner.tls.get().and_then(Session::peer_id)
    }

    /// Whether the stream runs TLS.
    pub(crate) fn is_tls(&self) -> bool {
        self.inner.tls.get().is_some()
    }

    /// Dials `addr`, giving up after `timeout`.
    pub(crate) fn connect(addr: SocketAddr, timeout: Duration) -> io::Result<Stream> {
        TcpStream::connect_timeout(&addr, timeout).map(Stream::tcp)
    }

    /// Small frames (PING, a short DATA) go out at once instead of waiting for an ACK.
    pub(crate) fn set_nodelay(&self) {
        let _ = self.inner.sock.set_nodelay(true);
    }

    /// The reading side, for the handshake and then the reader loop.
    pub(crate) fn reader(&self) -> ReadHalf {
        ReadHalf {
            inner: Arc::clone(&self.inner),
        }
    }

    /// The writing side, for the handshake and then the link's outbox.
    pub(crate) fn writer(&self) -> WriteHalf {
        WriteHalf {
            inner: Arc::clone(&self.inner),
        }
    }

    /// A handle that can only shut the stream down, for the peer table and `stop`.
    pub(crate) fn closer(&self) -> Closer {
        Closer {
            inner: Arc::clone(&self.inner),
        }
    }

    /// Shuts both directions down: both halves' blocked calls return.
    pub(crate) fn shutdown(&self) {
        self.inner.shutdown(Shutdown::Both);
    }
}

impl Inner {
    fn shutdown(&self, how: Shutdown) {
        if how == Shutdown::Write {
            if let Some(t) = self.tls.get() {
                t.close_notify(|b| try_send_raw(&self.sock, b));
            }
        }
        let _ = self.sock.shutdown(how);
    }
}

/// The reading side of a [`Stream`].
pub(crate) struct ReadHalf {
    inner: Arc<Inner>,
}

impl ReadHalf {
    /// Bounds each blocking `read` (`None`: wait forever).
    pub(crate) fn set_read_timeout(&self, t: Option<Duration>) -> io::Result<()> {
        self.inner.sock.set_read_timeout(t)
    }
}

impl Read for ReadHalf {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self.inner.tls.get() {
            Some(t) => t.read(&self.inner.sock, buf),
            None => {
                let mut s: &TcpStream = &self.inner.sock;
                s.read(buf)
            }
        }
    }
}

impl ReadHalf {
    /// A buffered reader over this half, with room for `capacity` bytes per read.
    ///
    /// The buffer is filled straight from the socket, so its pages cost memory only
    /// as data arrives: an idle link's 64 KiB buffer stays almost untouched. (A
    /// `BufReader` over `ReadHalf` itself would zero the whole buffer first, because
    /// only std's own stream types can read into uninitialised memory on stable
    /// Rust: +52 KiB resident per link, measured.)
    ///
    /// A TLS stream gets a plaintext buffer of at most [`TLS_PLAIN_BUF`]: its
    /// reader already keeps a ciphertext buffer of one record, and a buffer that is
    /// not `std`'s own is zeroed whole on first use, so every KiB here is resident
    /// per link (16 KiB put a TLS link at 102 KiB). Frames longer than the buffer
    /// are read past it into their own allocation.
    pub(crate) fn buffered(&self, capacity: usize) -> BufferedReader<'_> {
        match self.inner.tls.get() {
            None => BufferedReader::Tcp(BufReader::with_capacity(capacity, &self.inner.sock)),
            Some(_) => BufferedReader::Tls(BufReader::with_capacity(
                capacity.min(TLS_PLAIN_BUF),
                ReadHalf {
                    inner: Arc::clone(&self.inner),
                },
            )),
        }
    }
}

/// Plaintext buffer of a TLS stream's reader loop (see [`ReadHalf::buffered`]).
const TLS_PLAIN_BUF: usize = 8 * 1024;

/// What [`ReadHalf::buffered`] returns: the reader loop's view of the stream.
pub(crate) enum BufferedReader<'a> {
    Tcp(BufReader<&'a TcpStream>),
    Tls(BufReader<ReadHalf>),
}

impl BufferedReader<'_> {
    /// Whether the next frame needs a socket read (nothing buffered).
    pub(crate) fn is_drained(&self) -> bool {
        match self {
            BufferedReader::Tcp(b) => b.buffer().is_empty(),
            BufferedReader::Tls(b) => b.buffer().is_empty(),
        }
    }
}

impl Read for BufferedReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            BufferedReader::Tcp(b) => b.read(buf),
            BufferedReader::Tls(b) => b.read(buf),
        }
    }
}

impl BufRead for BufferedReader<'_> {
    fn fill_buf(&mut self) -> io::Result<&[u8]> {
        match self {
            BufferedReader::Tcp(b) => b.fill_buf(),
            BufferedReader::Tls(b) => b.fill_buf(),
        }
    }

    fn consume(&mut self, n: usize) {
        match self {
            BufferedReader::Tcp(b) => b.consume(n),
            BufferedReader::Tls(b) => b.consume(n),
        }
    }
}

/// The writing side of a [`Stream`]. Sends never raise SIGPIPE.
pub(crate) struct WriteHalf {
    inner: Arc<Inner>,
}

impl WriteHalf {
    /// Bounds each blocking send (`None`: wait forever).
    pub(crate) fn set_write_timeout(&self, t: Option<Duration>) -> io::Result<()> {
        self.inner.sock.set_write_timeout(t)
    }

    /// Sends all of `buf`, blocking as long as the peer does not read (up to the write
    /// timeout).
    pub(crate) fn send_all(&self, buf: &[u8]) -> io::Result<()> {
        match self.inner.tls.get() {
            Some(t) => t.send_all(&self.inner.sock, buf),
            None => send_all_raw(&self.inner.sock, buf),
        }
    }

    /// Whether a direct send left ciphertext behind (TLS only) that
    /// [`WriteHalf::flush`] must send.
    pub(crate) fn has_unsent(&self) -> bool {
        self.inner.tls.get().is_some_and(Session::has_unsent)
    }

    /// Sends what a direct send left behind, blocking (nothing on plain TCP).
    pub(crate) fn flush(&self) -> io::Result<()> {
        match self.inner.tls.get() {
            Some(t) => t.flush(&self.inner.sock),
            None => Ok(()),
        }
    }

    /// Whether [`WriteHalf::try_send`] can send without blocking on this platform.
    pub(crate) fn can_try_send(&self) -> bool {
        DIRECT_FLAGS.is_some()
    }

    /// Sends what the socket takes at once, never blocking: `Ok(0)` when it takes
    /// nothing (its buffer is full), or when [`WriteHalf::can_try_send`] is false.
    ///
    /// On TLS the frame is encrypted whole, so it is either taken whole (`buf.len()`,
    /// the ciphertext the socket did not take waits for [`WriteHalf::flush`]) or not
    /// at all.
    pub(crate) fn try_send(&self, buf: &[u8]) -> io::Result<usize> {
        if DIRECT_FLAGS.is_none() {
            return Ok(0);
        }
        match self.inner.tls.get() {
            Some(t) => t.try_send(buf, |b| try_send_raw(&self.inner.sock, b)),
            None => try_send_raw(&self.inner.sock, buf),
        }
    }

    /// Shuts down our sending direction (`Write`: the peer reads what was sent, then
    /// the end) or both.
    pub(crate) fn shutdown(&self, how: Shutdown) {
        self.inner.shutdown(how);
    }
}

/// Sends all of `buf` on the socket itself, blocking up to its write timeout.
fn send_all_raw(sock: &TcpStream, mut buf: &[u8]) -> io::Result<()> {
    while !buf.is_empty() {
        match SockRef::from(sock).send_with_flags(buf, SEND_FLAGS) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => buf = &buf[n..],
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Sends what the socket takes at once without blocking (0 when its buffer is full,
/// or where the platform cannot send without blocking).
fn try_send_raw(sock: &TcpStream, buf: &[u8]) -> io::Result<usize> {
    let Some(flags) = DIRECT_FLAGS else {
        return Ok(0);
    };
    loop {
        match SockRef::from(sock).send_with_flags(buf, flags) {
            Ok(n) => return Ok(n),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(0),
            Err(e) => return Err(e),
        }
    }
}

/// A handle that shuts a [`Stream`] down from another thread (the peer table's, the
/// retiring list's, `stop`'s). It holds the descriptor open, so it is dropped with
/// the connection's registration.
#[derive(Clone)]
pub(crate) struct Closer {
    inner: Arc<Inner>,
}

impl Closer {
    /// Shuts down both directions: the reader and writer of the stream wake and end.
    pub(crate) fn shutdown(&self) {
        self.inner.shutdown(Shutdown::Both);
    }

    /// Shuts down our sending direction only: the peer reads what was sent, then EOF.
    pub(crate) fn half_close(&self) {
        self.inner.shutdown(Shutdown::Write);
    }
}

/// Unblocks a thread blocked in `accept()` on our listener at `local` by connecting
/// to it, after the node was marked as stopping (tiny-http's trick: portable, and
/// the acceptor then sees the flag). An unspecified bind IP is reached on loopback.
pub(crate) fn wake_listener(local: SocketAddr) {
    let to = match local.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => (Ipv4Addr::LOCALHOST, local.port()).into(),
        IpAddr::V6(ip) if ip.is_unspecified() => (Ipv6Addr::LOCALHOST, local.port()).into(),
        _ => local,
    };
    let _ = TcpStream::connect_timeout(&to, Duration::from_secs(1));
}

#[cfg(any(target_os = "linux", target_os = "android"))]
type Flags = libc::c_int;
#[cfg(not(any(target_os = "linux", target_os = "android")))]
type Flags = std::ffi::c_int;

/// Flags for blocking sends: no SIGPIPE from a peer that hung up (std's own
/// `TcpStream::write` does the same).
#[cfg(any(target_os = "linux", target_os = "android"))]
const SEND_FLAGS: Flags = libc::MSG_NOSIGNAL;
#[cfg(not(any(target_os = "linux", target_os = "android")))]
const SEND_FLAGS: Flags = 0;

/// Flags for a send that must not block. Where the platform cannot send without
/// blocking on a blocking socket, every frame goes through the writer thread.
#[cfg(any(target_os = "linux", target_os = "android"))]
const DIRECT_FLAGS: Option<Flags> = Some(libc::MSG_NOSIGNAL | libc::MSG_DONTWAIT);
#[cfg(not(any(target_os = "linux", target_os = "android")))]
const DIRECT_FLAGS: Option<Flags> = None;
