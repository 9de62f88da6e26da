//! The raw-TCP baselines: what loopback TCP itself does with the same traffic, so the
//! node's figures can be read as a ratio on this machine rather than as absolutes.
//!
//! Frames are `u32` big-endian length + payload over one `std::net::TcpStream` pair
//! with `TCP_NODELAY` on both ends, the receiver on its own thread:
//!
//! - [`throughput`]: the sender writes `count` frames back to back through a 64 KiB
//!   `BufWriter`; the receiver reads them through a 64 KiB `BufReader` into one reused
//!   buffer. The time is from the first write to the receiver having read the last.
//! - [`PingPong`]: the client writes one frame, the echo thread reads it (64 KiB
//!   `BufReader`) and writes it back, the client reads the answer; each round trip is
//!   timed.
//! - [`ThreadedPingPong`]: the same ping-pong shaped like any thread-per-connection
//!   node with an event queue: on each side a reader thread reads the frame and hands
//!   it over a `crossbeam_channel` to the application thread, which writes the answer
//!   on the socket itself. Two more thread handoffs per round trip than
//!   [`PingPong`]: the floor for the design card's architecture, with no node code.

use std::io::{self, BufReader, BufWriter, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::support::spawn;

const BUF: usize = 64 * 1024;

/// A connected pair on 127.0.0.1 with `TCP_NODELAY` on both ends: (client, server).
fn pair(timeout: Duration) -> io::Result<(TcpStream, TcpStream)> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let client = TcpStream::connect(listener.local_addr()?)?;
    let (server, _) = listener.accept()?;
    for s in [&client, &server] {
        s.set_nodelay(true)?;
        s.set_read_timeout(Some(timeout))?;
        s.set_write_timeout(Some(timeout))?;
    }
    Ok((client, server))
}

fn read_frame(r: &mut impl Read, buf: &mut Vec<u8>) -> io::Result<()> {
    let mut head = [0u8; 4];
    r.read_exact(&mut head)?;
    buf.resize(u32::from_be_bytes(head) as usize, 0);
    r.read_exact(buf)
}

fn frame(size: usize) -> Vec<u8> {
    let mut f = (size as u32).to_be_bytes().to_vec();
    f.resize(4 + size, b'x');
    f
}

/// Time to move `count` frames of `size` payload bytes from one socket to the other.
/// Every blocking call has `timeout`, so a stuck transfer ends in an error.
pub fn throughput(size: usize, count: usize, timeout: Duration) -> io::Result<Duration> {
    let (client, server) = pair(timeout)?;
    let receiver = spawn("raw-rx", move || -> io::Result<Instant> {
        let mut r = BufReader::with_capacity(BUF, server);
        let mut buf = Vec::with_capacity(size);
        for _ in 0..count {
            read_frame(&mut r, &mut buf)?;
        }
        Ok(Instant::now())
    });
    let f = frame(size);
    let start = Instant::now();
    let sent = (|| {
        let mut w = BufWriter::with_capacity(BUF, &client);
        for _ in 0..count {
            w.write_all(&f)?;
        }
        w.flush()
    })();
    let received = receiver
        .join()
        .map_err(|_| io::Error::other("receiver panicked"))?;
    sent?;
    Ok(received? - start)
}

/// A raw ping-pong pair: the client on the caller's thread, the echo on its own.
pub struct PingPong {
    client: TcpStream,
    reader: BufReader<TcpStream>,
    frame: Vec<u8>,
    buf: Vec<u8>,
    echo: Option<JoinHandle<io::Result<()>>>,
}

impl PingPong {
    /// Connects the pair and starts the echo thread for `size`-byte payloads.
    pub fn start(size: usize, timeout: Duration) -> io::Result<PingPong> {
        let (client, server) = pair(timeout)?;
        let echo = spawn("raw-echo", move || -> io::Result<()> {
            let mut r = BufReader::with_capacity(BUF, server.try_clone()?);
            let mut w = &server;
            let mut buf = Vec::with_capacity(size);
            let mut out = Vec::with_capacity(4 + size);
            loop {
                match read_frame(&mut r, &mut buf) {
                    Ok(()) => {}
                    Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(()),
                    Err(e) => return Err(e),
                }
                out.clear();
                out.extend_from_slice(&(buf.len() as u32).to_be_bytes());
                out.extend_from_slice(&buf);
                w.write_all(&out)?;
            }
        });
        Ok(PingPong {
            reader: BufReader::with_capacity(BUF, client.try_clone()?),
            client,
            frame: frame(size),
            buf: Vec::with_capacity(size),
            echo: Some(echo),
        })
    }

    /// `n` timed round trips: write one frame, read the echo.
    pub fn trips(&mut self, n: usize) -> io::Result<Vec<Duration>> {
        let mut times = Vec::with_capacity(n);
        for _ in 0..n {
            let t0 = Instant::now();
            (&self.client).write_all(&self.frame)?;
            read_frame(&mut self.reader, &mut self.buf)?;
            times.push(t0.elapsed());
        }
        Ok(times)
    }
}

/// The ping-pong through reader threads and channels; see the module docs.
pub struct ThreadedPingPong {
    client: TcpStream,
    answers: crossbeam_channel::Receiver<Vec<u8>>,
    frame: Vec<u8>,
    threads: Vec<JoinHandle<io::Result<()>>>,
}

impl ThreadedPingPong {
    pub fn start(size: usize, timeout: Duration) -> io::Result<ThreadedPingPong> {
        let (client, server) = pair(timeout)?;
        // Each reader thread hands every frame to its application over a channel.
        let reader = |name: &str, s: TcpStream, tx: crossbeam_channel::Sender<Vec<u8>>| {
            spawn(name, move || -> io::Result<()> {
                let mut r = BufReader::with_capacity(BUF, s);
                loop {
                    let mut buf = Vec::with_capacity(size);
                    match read_frame(&mut r, &mut buf) {
                        Ok(()) => {}
                        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(()),
                        Err(e) => return Err(e),
                    }
                    if tx.send(buf).is_err() {
                        return Ok(());
                    }
                }
            })
        };
        let (server_tx, server_rx) = crossbeam_channel::unbounded();
        let (client_tx, client_rx) = crossbeam_channel::unbounded();
        let mut threads = vec![
            reader("floor-rx-b", server.try_clone()?, server_tx),
            reader("floor-rx-a", client.try_clone()?, client_tx),
        ];
        threads.push(spawn("floor-app-b", move || -> io::Result<()> {
            let mut out = Vec::with_capacity(4 + size);
            while let Ok(buf) = server_rx.recv() {
                out.clear();
                out.extend_from_slice(&(buf.len() as u32).to_be_bytes());
                out.extend_from_slice(&buf);
                (&server).write_all(&out)?;
            }
            Ok(())
        }));
        Ok(ThreadedPingPong {
            client,
            answers: client_rx,
            frame: frame(size),
            threads,
        })
    }

    /// `n` timed round trips: write one frame, wait for the echo on the channel.
    pub fn trips(&mut self, n: usize, timeout: Duration) -> io::Result<Vec<Duration>> {
        let mut times = Vec::with_capacity(n);
        for _ in 0..n {
            let t0 = Instant::now();
            (&self.client).write_all(&self.frame)?;
            self.answers
                .recv_timeout(timeout)
                .map_err(|e| io::Error::new(io::ErrorKind::TimedOut, e))?;
            times.push(t0.elapsed());
        }
        Ok(times)
    }
}

impl Drop for ThreadedPingPong {
    fn drop(&mut self) {
        let _ = self.client.shutdown(std::net::Shutdown::Both);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

impl Drop for PingPong {
    fn drop(&mut self) {
        let _ = self.client.shutdown(std::net::Shutdown::Both);
        if let Some(echo) = self.echo.take() {
            let _ = echo.join();
        }
    }
}
