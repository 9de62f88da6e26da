//! `Outbox`: a link's outbound frames, and the one place that writes them to its
//! socket. The C++ original wrote each message on a fresh connection from the
//! caller's thread; this is what replaced that.
//!
//! Every link has a writer thread, so a caller never blocks on a slow peer. But on a
//! small machine waking a thread costs more than the write itself (the profile is in
//! docs/BENCHMARKS.md), so the writer thread is woken only when it has to be:
//!
//! - **Direct send.** When nothing is queued or being written and the link is not
//!   streaming, the caller's thread sends the frame itself with a *non-blocking*
//!   `send`: no thread wakeup and no copy. Whatever the socket does not take at once
//!   is queued for the writer thread, so a peer that stopped reading still never
//!   blocks the caller (the BRIEF's "a slow or dead peer never delays the others").
//! - **Queue.** Otherwise the frame is appended. Small frames coalesce into chunks of
//!   up to [`CHUNK`] bytes, so a busy link costs one `send` per chunk, not per frame;
//!   the writer thread is signalled only if it is parked.
//!
//! "Streaming" means a direct send started on this link less than [`DIRECT_GAP`] ago:
//! a caller sending back to back then leaves the batching to the writer thread
//! instead of paying a system call per frame.
//!
//! Control frames (PING, PONG, PEERS, IHAVE, GRAFT, PRUNE) have a queue of their own
//! that the writer
//! empties before each data chunk, so an application that keeps the data queue full
//! never starves the heartbeat. No lock is held across a socket call.
//!
//! **Bounds.** The data queue is full at `capacity` frames (`Config::queue_len`) *or*
//! at `byte_budget` bytes (`Config::queue_bytes`): the bytes of the queued frames
//! plus the unsent rest of a partial send (the head). Frame count alone let one peer
//! that stopped reading pin 1,024 frames of up to 1 MiB. Both limits mean the same:
//! callers wait for room, then get [`Push::Full`]; [`Outbox::full_by`] says which
//! limit it was, for the log and the counters. An empty queue always takes one frame,
//! whatever its size, so a frame larger than the free room waits for the queue to
//! drain instead of never fitting. Not counted: the batch the writer has taken and is
//! sending (at most one chunk of [`CHUNK`] bytes or one larger frame, plus the
//! control frames), which is no longer queued. The control queue has its own bounds
//! ([`CONTROL_QUEUE`] frames, 1 MiB).
//!
//! **Why the writer stopped.** A send that fails ends the writer, which shuts the
//! socket down; the link's reader then sees the end of the stream. The writer records
//! the error kind first ([`Outbox::send_timed_out`]), so the reader can report the
//! true reason (a peer that stopped reading) instead of "closed by peer".

use std::collections::VecDeque;
use std::io;
use std::net::Shutdown;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex, MutexGuard};

use super::WriteHalf;

/// Coalesced chunks grow up to this size; it is also the most the writer sends with
/// one call before it looks at the control queue again.
pub(crate) const CHUNK: usize = 64 * 1024;

/// Frames at most this long are copied into a chunk; longer ones are queued as they
/// are, without a copy.
const COALESCE_MAX: usize = 16 * 1024;

/// A direct send starting this soon after the previous one means the caller is
/// streaming; the frame is queued for the writer thread to batch instead. Far shorter
/// than any request/response round trip, far longer than one `send` call.
const DIRECT_GAP: Duration = Duration::from_micros(20);

/// Control frames a link may have queued, by count and by bytes. Only a memory
/// backstop: a reader that was held up (by a slow application) answers every PING
/// that piled up meanwhile at once, so bursts of hundreds of PONGs are normal (64
/// was too few: a link whose reader had waited 9 s was dropped, tests/abuse.rs). A
/// peer that stops reading is caught sooner by the writer's send timeout.
pub(crate) const CONTROL_QUEUE: usize = 4096;
const CONTROL_BYTES: usize = 1 << 20;

/// [`Outbox::writing_since_ms`] when no blocking write is in progress.
pub(crate) const WRITER_IDLE: u64 = u64::MAX;

/// One encoded frame to send.
pub(crate) enum Frame {
    /// Shared when the same frame goes to many links (a broadcast).
    Shared(Arc<[u8]>),
    /// For one link alone (a direct message): no second allocation.
    Owned(Vec<u8>),
}

impl Frame {
    pub(crate) fn bytes(&self) -> &[u8] {
        match self {
            Frame::Shared(f) => f,
            Frame::Owned(v) => v,
        }
    }
}

/// What happened to a pushed frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Push {
    /// Sent or queued.
    Queued,
    /// The queue stayed full for the whole wait, or the writer has been stuck in one
    /// write for the stall limit: the peer is not reading.
    Full,
    /// The writer has finished (the link is closing); nothing more is sent.
    Closed,
}

/// Which bound made a push [`Push::Full`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Limit {
    /// The data queue held `capacity` frames.
    Frames,
    /// The data queue held too many bytes for the frame to fit its byte budget.
    Bytes,
    /// The control queue was full.
    Control,
}

/// Queued bytes and how many frames they hold.
struct Chunk {
    frame: Frame,
    frames: usize,
}

#[derive(Default)]
struct State {
    /// The unsent rest of a partial direct send: goes before anything else.
    head: Vec<u8>,
    /// Control frames, coalesced.
    ctl: Vec<u8>,
    ctl_frames: usize,
    data: VecDeque<Chunk>,
    data_frames: usize,
    /// Bytes of the frames in `data`.
    data_bytes: usize,
    /// The bound the last `Push::Full` met.
    full_by: Option<Limit>,
    /// Why the writer stopped, if a send failed.
    failed: Option<io::ErrorKind>,
    /// A direct send on TLS left ciphertext the socket did not take
    /// (`WriteHalf::has_unsent`): the writer thread must flush it.
    flush: bool,
    /// Some thread is inside a `send` on this socket.
    writing: bool,
    /// The writer thread is parked on `work`.
    writer_parked: bool,
    /// Callers parked on `room`.
    senders_waiting: usize,
    /// Flush everything queued, half-close, and stop.
    closing: bool,
    /// The writer has stopped; pushes are refused.
    done: bool,
    last_direct: Option<Instant>,
}

impl State {
    fn idle(&self) -> bool {
        self.head.is_empty() && self.ctl.is_empty() && self.data.is_empty() && !self.flush
    }

    /// Data bytes waiting: the queued frames and the unsent rest of a partial send.
    fn queued_bytes(&self) -> usize {
        self.head.len() + self.data_bytes
    }
}

/// A link's outbound queue and socket; see the module docs.
pub(crate) struct Outbox {
    state: Mutex<State>,
    /// The writer thread waits here for frames or for `close`.
    work: Condvar,
    /// Callers wait here for room in a full data queue.
    room: Condvar,
    writer: WriteHalf,
    /// Most data frames queued (`Config::queue_len`).
    capacity: usize,
    /// Most data bytes queued (`Config::queue_bytes`), one frame of any size excepted.
    byte_budget: usize,
    /// Milliseconds since `epoch` when the writer thread started its current blocking
    /// send, or [`WRITER_IDLE`]. A send that takes long means the peer stopped reading.
    writing_since_ms: AtomicU64,
    epoch: Instant,
}

impl Outbox {
    /// An outbox writing to `writer` (the link stream's write half), holding at most
    /// `capacity` data frames and `byte_budget` bytes of them (see the module docs).
    pub(crate) fn new(
        writer: WriteHalf,
        capacity: usize,
        byte_budget: usize,
        epoch: Instant,
    ) -> Outbox {
        Outbox {
            state: Mutex::new(State::default()),
            work: Condvar::new(),
            room: Condvar::new(),
            writer,
            capacity: capacity.max(1),
            byte_budget,
            writing_since_ms: AtomicU64::new(WRITER_IDLE),
            epoch,
        }
    }

    /// Queues (or sends at once) a data frame. When the queue is full (by frames or
    /// by bytes) it waits up to `max_wait` for room, which slows the caller to the
    /// peer's pace the way TCP would, unless the writer has been stuck inside one
    /// send for `stall`: such a peer is not reading, and waiting for it would only
    /// delay the caller.
    pub(crate) fn push_data(&self, frame: Frame, max_wait: Duration, stall: Duration) -> Push {
        let len = frame.bytes().len();
        let mut st = self.state.lock();
        if st.done {
            return Push::Closed;
        }
        if let Some(limit) = self.data_full(&st, len) {
            if self.stalled_for(stall) {
                st.full_by = Some(limit);
                return Push::Full;
            }
            let deadline = Instant::now() + max_wait;
            st.senders_waiting += 1;
            while self.data_full(&st, len).is_some() && !st.done {
                if self.room.wait_until(&mut st, deadline).timed_out() {
                    break;
                }
            }
            st.senders_waiting -= 1;
            if st.done {
                return Push::Closed;
            }
            if let Some(limit) = self.data_full(&st, len) {
                st.full_by = Some(limit);
                return Push::Full;
            }
        }
        let mut st = match self.try_direct(st, frame.bytes()) {
            Direct::Sent(st) => return self.finish_direct(st),
            Direct::Declined(st) => st,
        };
        append_data(&mut st, frame);
        self.wake_writer(&st);
        Push::Queued
    }

    /// Queues (or sends at once) a control frame. `Full` means the peer has left
    /// thousands of control frames unread.
    pub(crate) fn push_control(&self, frame: &[u8]) -> Push {
        let mut st = self.state.lock();
        if st.done {
            return Push::Closed;
        }
        if st.ctl_frames >= CONTROL_QUEUE || st.ctl.len() + frame.len() > CONTROL_BYTES {
            st.full_by = Some(Limit::Control);
            return Push::Full;
        }
        let mut st = match self.try_direct(st, frame) {
            Direct::Sent(st) => return self.finish_direct(st),
            Direct::Declined(st) => st,
        };
        st.ctl.extend_from_slice(frame);
        st.ctl_frames += 1;
        self.wake_writer(&st);
        Push::Queued
    }

    /// Queues `leave` as the last frame and closes (see [`Outbox::close`]). False when
    /// the data queue is full or the writer has stopped: the caller then shuts the
    /// socket instead.
    pub(crate) fn leave(&self, leave: Vec<u8>) -> bool {
        let mut st = self.state.lock();
        if st.done || self.data_full(&st, leave.len()).is_some() {
            return false;
        }
        append_data(&mut st, Frame::Owned(leave));
        st.closing = true;
        self.work.notify_one();
        true
    }

    /// Asks the writer thread to send everything queued, half-close the socket and
    /// stop. Frames pushed before it has finished still go out first.
    pub(crate) fn close(&self) {
        let mut st = self.state.lock();
        st.closing = true;
        self.work.notify_one();
    }

    /// Which bound the last [`Push::Full`] of this outbox met.
    pub(crate) fn full_by(&self) -> Option<Limit> {
        self.state.lock().full_by
    }

    /// Data frames and bytes queued now (the unsent rest of a partial send included).
    pub(crate) fn backlog(&self) -> (usize, usize) {
        let st = self.state.lock();
        (st.data_frames, st.queued_bytes())
    }

    /// The most data bytes queued (`Config::queue_bytes`).
    pub(crate) fn byte_budget(&self) -> usize {
        self.byte_budget
    }

    /// True when the writer stopped because a send made no progress for the write
    /// timeout: the peer stopped reading. (It then shut the socket down, so the
    /// link's reader sees the end of the stream.)
    pub(crate) fn send_timed_out(&self) -> bool {
        matches!(
            self.state.lock().failed,
            Some(io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut)
        )
    }

    /// Why a data frame of `len` bytes does not fit now, if it does not. An empty
    /// queue takes any frame: one larger than the budget waits for the queue to
    /// drain, and is never refused for ever.
    fn data_full(&self, st: &State, len: usize) -> Option<Limit> {
        if st.data_frames >= self.capacity {
            return Some(Limit::Frames);
        }
        let queued = st.queued_bytes();
        if queued > 0 && queued + len > self.byte_budget {
            return Some(Limit::Bytes);
        }
        None
    }

    /// True when the writer thread has been inside one blocking send for longer than
    /// `limit`.
    pub(crate) fn stalled_for(&self, limit: Duration) -> bool {
        let since = self.writing_since_ms.load(Ordering::Relaxed);
        since != WRITER_IDLE && self.now_ms().saturating_sub(since) > limit.as_millis() as u64
    }

    /// The writer thread's body: sends what is queued, control frames first, until
    /// [`Outbox::close`] (then half-closes) or a send fails (then shuts the socket
    /// down, which ends the link's reader too).
    pub(crate) fn run_writer(&self) {
        let result = self.write_until_closed();
        {
            let mut st = self.state.lock();
            st.done = true;
            // Recorded before the shutdown below wakes the reader, which asks.
            st.failed = result.as_ref().err().map(io::Error::kind);
            // What is left would never be sent; free it now.
            st.data.clear();
            st.data_frames = 0;
            st.data_bytes = 0;
            st.ctl = Vec::new();
            st.head = Vec::new();
            self.room.notify_all();
        }
        let how = if result.is_ok() {
            // Graceful: the peer reads what we sent (e.g. LEAVE), then sees the end.
            Shutdown::Write
        } else {
            Shutdown::Both
        };
        self.writer.shutdown(how);
    }

    fn write_until_closed(&self) -> io::Result<()> {
        let mut batch: Vec<Frame> = Vec::new();
        loop {
            {
                let mut st = self.state.lock();
                let mut lingered = false;
                loop {
                    if !st.writing && !st.idle() {
                        break;
                    }
                    if st.closing && !st.writing && st.idle() {
                        return Ok(());
                    }
                    if !lingered {
                        lingered = true;
                        MutexGuard::unlocked(&mut st, std::thread::yield_now);
                        continue;
                    }
                    st.writer_parked = true;
                    self.work.wait(&mut st);
                    st.writer_parked = false;
                }
                st.writing = true;
                take_batch(&mut st, &mut batch);
                if st.senders_waiting > 0 {
                    self.room.notify_all();
                }
            }
            self.writing_since_ms
                .store(self.now_ms(), Ordering::Relaxed);
            // Ciphertext a direct send left goes first (nothing on plain TCP).
            let mut result = self.writer.flush();
            for f in &batch {
                if result.is_err() {
                    break;
                }
                result = self.writer.send_all(f.bytes());
            }
            batch.clear();
            self.writing_since_ms.store(WRITER_IDLE, Ordering::Relaxed);
            self.state.lock().writing = false;
            result?;
        }
    }

    /// Sends `bytes` from the caller's thread if the link is idle and not streaming.
    fn try_direct<'a>(&'a self, mut st: MutexGuard<'a, State>, bytes: &[u8]) -> Direct<'a> {
        if !self.writer.can_try_send() {
            return Direct::Declined(st);
        }
        if st.writing || st.closing || !st.idle() {
            return Direct::Declined(st);
        }
        let now = Instant::now();
        if st
            .last_direct
            .is_some_and(|t| now.saturating_duration_since(t) < DIRECT_GAP)
        {
            return Direct::Declined(st);
        }
        st.last_direct = Some(now);
        st.writing = true;
        drop(st);
        // A full socket buffer sends 0; a failed socket too: the writer thread takes
        // the frame and meets the error itself, so one path handles it.
        let sent = self.writer.try_send(bytes).unwrap_or(0);
        let mut st = self.state.lock();
        st.writing = false;
        if sent < bytes.len() {
            // Nothing can have been queued ahead of it: others queue behind `writing`.
            st.head.extend_from_slice(&bytes[sent..]);
        } else if self.writer.has_unsent() {
            st.flush = true;
        }
        Direct::Sent(st)
    }

    fn finish_direct(&self, st: MutexGuard<'_, State>) -> Push {
        // Frames queued during the send, or the unsent rest, are the writer's now.
        if !st.idle() || st.closing {
            self.work.notify_one();
        }
        Push::Queued
    }

    fn wake_writer(&self, st: &State) {
        if st.writer_parked && !st.writing {
            self.work.notify_one();
        }
    }

    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }
}

/// What [`Outbox::try_direct`] did; either way the caller holds the lock again.
enum Direct<'a> {
    Sent(MutexGuard<'a, State>),
    /// Not sent: queue it.
    Declined(MutexGuard<'a, State>),
}

/// Appends a data frame, copying small ones into the last chunk.
fn append_data(st: &mut State, frame: Frame) {
    st.data_frames += 1;
    let bytes = frame.bytes();
    st.data_bytes += bytes.len();
    if bytes.len() <= COALESCE_MAX {
        if let Some(Chunk {
            frame: Frame::Owned(buf),
            frames,
        }) = st.data.back_mut()
        {
            if buf.len() + bytes.len() <= CHUNK {
                buf.extend_from_slice(bytes);
                *frames += 1;
                return;
            }
        }
        let mut buf = Vec::with_capacity(bytes.len().max(4096));
        buf.extend_from_slice(bytes);
        st.data.push_back(Chunk {
            frame: Frame::Owned(buf),
            frames: 1,
        });
        return;
    }
    st.data.push_back(Chunk { frame, frames: 1 });
}

/// Moves the next batch into `batch`: the rest of a partial send, every control frame,
/// then data chunks up to [`CHUNK`] bytes (at least one).
fn take_batch(st: &mut State, batch: &mut Vec<Frame>) {
    st.flush = false;
    if !st.head.is_empty() {
        batch.push(Frame::Owned(std::mem::take(&mut st.head)));
    }
    if !st.ctl.is_empty() {
        batch.push(Frame::Owned(std::mem::take(&mut st.ctl)));
        st.ctl_frames = 0;
    }
    let mut bytes = 0;
    while let Some(chunk) = st.data.front() {
        let len = chunk.frame.bytes().len();
        if bytes > 0 && bytes + len > CHUNK {
            break;
        }
        bytes += len;
        if let Some(chunk) = st.data.pop_front() {
            st.data_frames -= chunk.frames;
            st.data_bytes -= len;
            batch.push(chunk.frame);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transport::Stream;
    use std::io::Read;
    use std::net::{TcpListener, TcpStream};
    use std::thread;

    /// An outbox on one end of a real loopback connection, its writer thread running,
    /// and the other end.
    fn pair(capacity: usize) -> (Arc<Outbox>, thread::JoinHandle<()>, TcpStream) {
        pair_with(capacity, usize::MAX)
    }

    /// Like [`pair`], with a byte budget.
    fn pair_with(
        capacity: usize,
        byte_budget: usize,
    ) -> (Arc<Outbox>, thread::JoinHandle<()>, TcpStream) {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind");
        let a = TcpStream::connect(l.local_addr().expect("addr")).expect("connect");
        let (b, _) = l.accept().expect("accept");
        let out = Arc::new(Outbox::new(
            Stream::tcp(a).writer(),
            capacity,
            byte_budget,
            Instant::now(),
        ));
        let w = {
            let out = Arc::clone(&out);
            thread::spawn(move || out.run_writer())
        };
        (out, w, b)
    }

    fn frame(i: u32, len: usize) -> Vec<u8> {
        let mut v = i.to_be_bytes().to_vec();
        v.resize(len.max(4), (i % 251) as u8);
        v
    }

    /// Reads everything until the writer half-closes.
    fn read_all(mut b: TcpStream) -> Vec<u8> {
        b.set_read_timeout(Some(Duration::from_secs(30)))
            .expect("timeout");
        let mut all = Vec::new();
        b.read_to_end(&mut all).expect("read to end");
        all
    }

    #[test]
    fn frames_arrive_whole_and_in_order_through_every_path() {
        let (out, w, b) = pair(64);
        let reader = thread::spawn(move || read_all(b));
        let mut expect = Vec::new();
        // Sizes across the coalescing limit and the chunk size; some pushes far apart
        // (direct sends), most back to back (queued and coalesced).
        for i in 0..3000u32 {
            let len = match i % 7 {
                0 => 70_000,
                1 => 20_000,
                _ => 5 + (i as usize * 37) % 900,
            };
            let f = frame(i, len);
            expect.extend_from_slice(&f);
            let p = if i % 3 == 0 {
                out.push_data(
                    Frame::Shared(f.into()),
                    Duration::from_secs(30),
                    Duration::from_secs(30),
                )
            } else {
                out.push_data(
                    Frame::Owned(f),
                    Duration::from_secs(30),
                    Duration::from_secs(30),
                )
            };
            assert_eq!(p, Push::Queued);
            if i % 500 == 0 {
                thread::sleep(Duration::from_millis(2));
            }
        }
        out.close();
        w.join().expect("writer");
        let got = reader.join().expect("reader");
        assert_eq!(got.len(), expect.len());
        assert!(got == expect, "bytes differ");
    }

    #[test]
    fn control_frames_jump_the_data_queue() {
        let (out, w, b) = pair(100_000);
        // The peer does not read yet: data piles up behind a full socket buffer.
        let big = vec![7u8; 60_000];
        for _ in 0..200 {
            let p = out.push_data(
                Frame::Owned(big.clone()),
                Duration::from_secs(1),
                Duration::from_secs(30),
            );
            assert_eq!(p, Push::Queued);
        }
        assert_eq!(out.push_control(b"CTL!"), Push::Queued);
        out.close();
        let got = read_all(b);
        w.join().expect("writer");
        assert_eq!(got.len(), 200 * 60_000 + 4);
        let at = got
            .windows(4)
            .position(|w| w == b"CTL!")
            .expect("control frame sent");
        assert!(
            at < got.len() / 2,
            "the control frame waited for the data queue: at byte {at} of {}",
            got.len()
        );
    }

    #[test]
    fn a_full_queue_of_a_peer_that_does_not_read_times_out_without_blocking_forever() {
        let (out, w, b) = pair(4);
        let big = vec![1u8; 1 << 20];
        let mut results = Vec::new();
        for _ in 0..16 {
            results.push(out.push_data(
                Frame::Owned(big.clone()),
                Duration::from_millis(50),
                Duration::from_secs(30),
            ));
        }
        assert!(results.contains(&Push::Full), "{results:?}");
        // Shut the socket as close_link would: the writer stops, pushes are refused.
        out.writer.shutdown(Shutdown::Both);
        w.join().expect("writer");
        let p = out.push_data(
            Frame::Owned(vec![1]),
            Duration::from_secs(1),
            Duration::from_secs(1),
        );
        assert_eq!(p, Push::Closed);
        drop(b);
    }

    #[test]
    fn a_stuck_writer_makes_a_full_queue_fail_at_once() {
        let (out, w, b) = pair(2);
        let big = vec![1u8; 4 << 20];
        for _ in 0..3 {
            let _ = out.push_data(
                Frame::Owned(big.clone()),
                Duration::from_millis(10),
                Duration::from_secs(30),
            );
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        while !out.stalled_for(Duration::from_millis(50)) {
            assert!(Instant::now() < deadline, "writer never counted as stuck");
            thread::sleep(Duration::from_millis(5));
        }
        let started = Instant::now();
        let p = out.push_data(
            Frame::Owned(vec![1]),
            Duration::from_secs(20),
            Duration::from_millis(50),
        );
        // Either refused at once as stuck, or queued if the last batch just finished.
        if p == Push::Full {
            assert!(started.elapsed() < Duration::from_secs(10));
        }
        out.writer.shutdown(Shutdown::Both);
        w.join().expect("writer");
        drop(b);
    }

    #[test]
    fn leave_is_the_last_frame_and_then_the_stream_ends() {
        let (out, w, b) = pair(16);
        assert_eq!(out.push_control(b"ping"), Push::Queued);
        assert_eq!(
            out.push_data(
                Frame::Owned(b"data".to_vec()),
                Duration::from_secs(1),
                Duration::from_secs(1)
            ),
            Push::Queued
        );
        assert!(out.leave(b"LEAVE".to_vec()));
        let got = read_all(b);
        w.join().expect("writer");
        assert_eq!(got, b"pingdataLEAVE");
        assert!(!out.leave(b"again".to_vec()), "a stopped outbox refuses");
        assert!(!out.send_timed_out(), "a graceful end is no send failure");
    }

    /// An outbox whose writer thread is not started: what is queued stays queued.
    fn parked(capacity: usize, byte_budget: usize) -> (Outbox, TcpStream) {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind");
        let a = TcpStream::connect(l.local_addr().expect("addr")).expect("connect");
        let (b, _) = l.accept().expect("accept");
        let out = Outbox::new(
            Stream::tcp(a).writer(),
            capacity,
            byte_budget,
            Instant::now(),
        );
        (out, b)
    }

    #[test]
    fn queued_bytes_count_chunks_and_the_head_and_bound_the_queue() {
        let (out, _b) = parked(100, 1000);
        let mut st = out.state.lock();
        assert_eq!(
            out.data_full(&st, 5000),
            None,
            "an empty queue takes any frame"
        );
        append_data(&mut st, Frame::Owned(vec![1; 300])); // coalesced...
        append_data(&mut st, Frame::Owned(vec![2; 300])); // ...into one chunk
        append_data(&mut st, Frame::Shared(vec![3; 70_000].into())); // its own chunk
        assert_eq!((st.data_frames, st.queued_bytes()), (3, 70_600));
        assert_eq!(out.data_full(&st, 1), Some(Limit::Bytes));
        // A batch is at most one chunk's worth (or one larger frame).
        let mut batch = Vec::new();
        take_batch(&mut st, &mut batch);
        assert_eq!((st.data_frames, st.queued_bytes()), (1, 70_000));
        batch.clear();
        take_batch(&mut st, &mut batch);
        assert_eq!((st.data_frames, st.queued_bytes()), (0, 0));
        // The unsent rest of a direct send counts as well.
        st.head = vec![0; 900];
        assert_eq!(out.data_full(&st, 100), None);
        assert_eq!(out.data_full(&st, 101), Some(Limit::Bytes));
        // The frame count still bounds the queue whatever the bytes.
        st.head.clear();
        for _ in 0..100 {
            append_data(&mut st, Frame::Owned(vec![0; 1]));
        }
        assert_eq!(out.data_full(&st, 1), Some(Limit::Frames));
    }

    #[test]
    fn a_frame_larger_than_the_free_room_waits_for_it_then_is_queued() {
        let (out, b) = parked(100, 1000);
        let out = Arc::new(out);
        append_data(&mut out.state.lock(), Frame::Owned(vec![1; 600]));
        // No writer yet: the queue never drains, and the wait ends as Full.
        let big = || Frame::Owned(vec![2; 5000]);
        let p = out.push_data(big(), Duration::from_millis(30), Duration::MAX);
        assert_eq!(p, Push::Full);
        assert_eq!(out.full_by(), Some(Limit::Bytes));
        assert_eq!(out.backlog(), (1, 600));
        // With a writer and a reading peer the queue drains, and the frame, larger
        // than the whole budget, is taken once the queue is empty.
        let w = {
            let out = Arc::clone(&out);
            thread::spawn(move || out.run_writer())
        };
        let reader = thread::spawn(move || read_all(b));
        let p = out.push_data(big(), Duration::from_secs(20), Duration::MAX);
        assert_eq!(p, Push::Queued);
        out.close();
        w.join().expect("writer");
        let got = reader.join().expect("reader");
        assert_eq!(got.len(), 5600);
        assert!(got[..600].iter().all(|&x| x == 1) && got[600..].iter().all(|&x| x == 2));
    }

    #[test]
    fn a_peer_that_does_not_read_fills_the_byte_budget_not_the_frame_count() {
        let (out, w, b) = pair_with(1000, 100_000);
        let frame = vec![5u8; 30_000];
        let mut full = None;
        // The socket buffers take the first few MiB; then the queue fills.
        for i in 0..4000 {
            let p = out.push_data(
                Frame::Owned(frame.clone()),
                Duration::from_millis(20),
                Duration::MAX,
            );
            if p == Push::Full {
                full = Some(i);
                break;
            }
            assert_eq!(p, Push::Queued);
        }
        assert!(full.is_some(), "120 MB went into a queue of 100,000 bytes");
        assert_eq!(out.full_by(), Some(Limit::Bytes));
        let (frames, bytes) = out.backlog();
        assert!(
            bytes <= 100_000 && bytes + 30_000 > 100_000,
            "{bytes} bytes"
        );
        assert!(frames < 1000, "{frames} frames");
        out.writer.shutdown(Shutdown::Both);
        w.join().expect("writer");
        assert_eq!(out.backlog(), (0, 0), "a stopped writer frees its queue");
        drop(b);
    }

    #[test]
    fn a_send_that_times_out_is_recorded_as_the_peer_not_reading() {
        let (out, w, b) = pair_with(64, usize::MAX);
        out.writer
            .set_write_timeout(Some(Duration::from_millis(100)))
            .expect("write timeout");
        // Far more than the socket buffers hold (the peer never reads).
        let big = vec![9u8; 1 << 20];
        for _ in 0..40 {
            if out.push_data(
                Frame::Owned(big.clone()),
                Duration::from_secs(5),
                Duration::MAX,
            ) == Push::Closed
            {
                break;
            }
        }
        // The writer gives up after one send made no progress for 100 ms.
        w.join().expect("writer");
        assert!(out.send_timed_out());
        drop(b);
    }
}
