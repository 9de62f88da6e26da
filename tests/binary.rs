//! End-to-end tests of the `p2p-node` binary: real processes on 127.0.0.1, driven
//! through their standard input, judged by the documented output lines.
//!
//! Rules every test follows:
//! - nodes listen on `--bind 127.0.0.1` port 0 and the test reads the port back from
//!   the first stdout line; no fixed port is ever used for a node that may start;
//! - every wait is bounded (`WAIT`, `EXIT_WAIT`), there is no sleep-then-assert, and no
//!   timing is asserted beyond "exits within `EXIT_WAIT`";
//! - every process is owned by a guard whose `Drop` kills it by its PID and reaps it,
//!   so none outlives its test, pass or fail;
//! - signals are sent to one PID, with the `kill` program (the race test that signals
//!   right after the first line uses `sh`'s built-in `kill`, also by PID, to be fast
//!   enough).
//!
//! The output-forging tests also use `tests/common` for a raw peer that speaks the
//! wire protocol by hand and for an in-process library node.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_p2p-node");

/// How long any expected line may take to appear (generous: 2 cores, parallel tests).
const WAIT: Duration = Duration::from_secs(20);

/// How long a process may take to exit after `exit` or a signal (the contract says
/// about a second).
const EXIT_WAIT: Duration = Duration::from_secs(10);

/// Pause between two polls of a node's state (`peers`, `info`), never used before an
/// assertion on its own.
const POLL: Duration = Duration::from_millis(100);

// ---------------------------------------------------------------------------------
// Harness
// ---------------------------------------------------------------------------------

/// Every line every process of one test printed, in arrival order, prefixed with the
/// process name and stream; printed (long ones shortened) when an expectation fails.
#[derive(Clone, Default)]
struct Log(Arc<Mutex<Vec<String>>>);

impl Log {
    fn push(&self, line: String) {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).push(line);
    }

    /// The transcript, with the middle left out when it is long (polling loops can
    /// print thousands of lines).
    fn dump(&self) -> String {
        const HEAD: usize = 150;
        const TAIL: usize = 250;
        let lines = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let mut s = String::from("---- transcript (all processes of this test) ----\n");
        for (i, l) in lines.iter().enumerate() {
            if lines.len() > HEAD + TAIL && i == HEAD {
                let left_out = lines.len() - HEAD - TAIL;
                s.push_str(&format!("... {left_out} lines left out ...\n"));
            }
            if lines.len() <= HEAD + TAIL || i < HEAD || i >= lines.len() - TAIL {
                // A line of megabytes (an echoed over-long input) is shown by its start.
                const LONG: usize = 2000;
                match l.char_indices().nth(LONG) {
                    Some((cut, _)) => {
                        s.push_str(&l[..cut]);
                        s.push_str(&format!("... ({} bytes in all)", l.len()));
                    }
                    None => s.push_str(l),
                }
                s.push('\n');
            }
        }
        s.push_str("---- end of transcript ----");
        s
    }
}

/// Reads `stream` line by line on its own thread until end of file: each line goes to
/// `history`, to the shared log and to the returned channel. It keeps reading after the
/// receiver is gone, so the child never blocks on a full pipe.
fn spawn_reader<R: Read + Send + 'static>(
    stream: R,
    label: String,
    log: Log,
    history: Arc<Mutex<Vec<String>>>,
) -> Receiver<String> {
    let (tx, rx) = mpsc::channel();
    thread::Builder::new()
        .name(format!("read {label}"))
        .spawn(move || {
            let mut reader = BufReader::new(stream);
            let mut buf = Vec::new();
            loop {
                buf.clear();
                match reader.read_until(b'\n', &mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {
                        let line = String::from_utf8_lossy(&buf)
                            .trim_end_matches(['\n', '\r'])
                            .to_string();
                        log.push(format!("[{label}] {line}"));
                        history
                            .lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .push(line.clone());
                        let _ = tx.send(line);
                    }
                }
            }
        })
        .expect("start a reader thread");
    rx
}

/// Takes lines from `rx` until one satisfies `pred`; `None` at the deadline or when
/// the stream ends. Non-matching lines are consumed.
fn wait_on(
    rx: &Receiver<String>,
    pred: &mut dyn FnMut(&str) -> bool,
    timeout: Duration,
) -> Option<String> {
    let deadline = Instant::now() + timeout;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) if pred(&line) => return Some(line),
            Ok(_) => continue,
            Err(RecvTimeoutError::Timeout) | Err(RecvTimeoutError::Disconnected) => return None,
        }
    }
}

/// Polls `child` until it exits or `timeout` passes.
fn wait_exit(child: &mut Child, timeout: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + timeout;
    loop {
        match child.try_wait() {
            Ok(Some(st)) => return Some(st),
            Ok(None) if Instant::now() < deadline => thread::sleep(Duration::from_millis(10)),
            Ok(None) | Err(_) => return None,
        }
    }
}

/// Sends `signal` (`TERM`, `INT`, `KILL`) to one PID with the `kill` program.
fn send_signal(pid: u32, signal: &str) {
    let st = Command::new("kill")
        .args([format!("-{signal}"), pid.to_string()])
        .stdin(Stdio::null())
        .status()
        .expect("run kill");
    assert!(st.success(), "kill -{signal} {pid} failed: {st}");
}

/// A child process killed and reaped on drop, whatever happened.
struct ChildGuard(Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// One running `p2p-node`.
struct NodeProc {
    name: String,
    child: ChildGuard,
    stdin: Option<ChildStdin>,
    out: Receiver<String>,
    err: Receiver<String>,
    /// Every stdout line, consumed or not.
    out_history: Arc<Mutex<Vec<String>>>,
    /// Every stderr line, consumed or not.
    err_history: Arc<Mutex<Vec<String>>>,
    log: Log,
    /// Id from the first line.
    id: String,
    /// Listen port from the first line.
    port: u16,
}

impl NodeProc {
    /// Starts a node on 127.0.0.1 port 0 with `extra` arguments after the port (e.g.
    /// the bootstrap peer) and reads its first line.
    fn start(log: &Log, name: &str, extra: &[&str]) -> NodeProc {
        NodeProc::start_on(log, name, "0", extra)
    }

    /// As `start`, on a given port (a restart must come back on the same one).
    fn start_on(log: &Log, name: &str, port: &str, extra: &[&str]) -> NodeProc {
        let mut args = vec![port];
        args.extend_from_slice(extra);
        args.extend_from_slice(&["--bind", "127.0.0.1"]);
        let mut child = Command::new(BIN)
            .args(&args)
            .env_remove("RUST_LOG")
            // A default peer cache would go under $XDG_STATE_HOME: keep it in a
            // temporary folder, never the user's home.
            .env("XDG_STATE_HOME", state_home())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn p2p-node");
        let stdin = child.stdin.take();
        let stdout = child.stdout.take().expect("stdout piped");
        let stderr = child.stderr.take().expect("stderr piped");
        let child = ChildGuard(child);
        let out_history = Arc::new(Mutex::new(Vec::new()));
        let err_history = Arc::new(Mutex::new(Vec::new()));
        let out = spawn_reader(
            stdout,
            format!("{name} out"),
            log.clone(),
            Arc::clone(&out_history),
        );
        let err = spawn_reader(
            stderr,
            format!("{name} err"),
            log.clone(),
            Arc::clone(&err_history),
        );
        log.push(format!("[{name}] started: p2p-node {}", args.join(" ")));
        let mut node = NodeProc {
            name: name.to_string(),
            child,
            stdin,
            out,
            err,
            out_history,
            err_history,
            log: log.clone(),
            id: String::new(),
            port: 0,
        };
        let first = node.expect_line("the first line `node <id> listening on ...`", |_| true);
        let (id, port) = parse_first_line(&first)
            .unwrap_or_else(|| node.fail(&format!("bad first line {first:?}")));
        node.id = id;
        node.port = port;
        node
    }

    /// Starts a node that joins the overlay through `via`.
    fn join(log: &Log, name: &str, via: &NodeProc) -> NodeProc {
        let port = via.port.to_string();
        NodeProc::start(log, name, &["127.0.0.1", &port])
    }

    /// `127.0.0.1:<port>`: the address peers list this node under.
    fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    fn pid(&self) -> u32 {
        self.child.0.id()
    }

    fn fail(&self, what: &str) -> ! {
        panic!("{}: {what}\n{}", self.name, self.log.dump())
    }

    fn send_line(&mut self, line: &str) {
        self.log.push(format!("[{} in] {line}", self.name));
        let ok = match self.stdin.as_mut() {
            Some(stdin) => stdin
                .write_all(format!("{line}\n").as_bytes())
                .and_then(|_| stdin.flush())
                .is_ok(),
            None => false,
        };
        if !ok {
            self.fail(&format!("cannot write {line:?} to stdin"));
        }
    }

    /// Writes raw `bytes` to stdin; the transcript shows `what` instead of them.
    fn send_bytes(&mut self, what: &str, bytes: &[u8]) {
        self.log.push(format!("[{} in] <{what}>", self.name));
        let ok = match self.stdin.as_mut() {
            Some(stdin) => stdin.write_all(bytes).and_then(|_| stdin.flush()).is_ok(),
            None => false,
        };
        if !ok {
            self.fail(&format!("cannot write {what} to stdin"));
        }
    }

    /// Every stderr line once the process has exited and its stderr is closed (the
    /// reader thread has seen end of file), within `WAIT`.
    fn all_stderr(&self) -> Vec<String> {
        let deadline = Instant::now() + WAIT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.err.recv_timeout(left) {
                Ok(_) => continue,
                Err(RecvTimeoutError::Disconnected) => break,
                Err(RecvTimeoutError::Timeout) => {
                    self.fail(&format!("stderr still open after {WAIT:?}"))
                }
            }
        }
        self.err_history
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Peak resident memory (`VmHWM` of /proc/<pid>/status) in KiB, or `None` where
    /// there is no such file.
    fn peak_rss_kib(&self) -> Option<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).ok()?;
        let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
        line.trim_start_matches("VmHWM:")
            .trim()
            .trim_end_matches("kB")
            .trim()
            .parse()
            .ok()
    }

    /// Closes the node's standard input (end of file for the node).
    fn close_stdin(&mut self) {
        self.log.push(format!("[{} in] <end of input>", self.name));
        drop(self.stdin.take());
    }

    /// The next stdout line satisfying `pred` within `timeout`; earlier lines are
    /// consumed.
    fn wait_line(&self, mut pred: impl FnMut(&str) -> bool, timeout: Duration) -> Option<String> {
        wait_on(&self.out, &mut pred, timeout)
    }

    /// Like `wait_line` for stderr.
    fn wait_err_line(
        &self,
        mut pred: impl FnMut(&str) -> bool,
        timeout: Duration,
    ) -> Option<String> {
        wait_on(&self.err, &mut pred, timeout)
    }

    /// `wait_line` with `WAIT`, failing the test with the transcript.
    fn expect_line(&self, what: &str, pred: impl FnMut(&str) -> bool) -> String {
        self.wait_line(pred, WAIT)
            .unwrap_or_else(|| self.fail(&format!("no stdout line {what} within {WAIT:?}")))
    }

    /// Waits for exactly `line` on stdout.
    fn expect_exact(&self, line: &str) -> String {
        self.expect_line(&format!("{line:?}"), |l| l == line)
    }

    /// `wait_err_line` with `WAIT`, failing the test with the transcript.
    fn expect_err_line(&self, what: &str, pred: impl FnMut(&str) -> bool) -> String {
        self.wait_err_line(pred, WAIT)
            .unwrap_or_else(|| self.fail(&format!("no stderr line {what} within {WAIT:?}")))
    }

    /// Runs `peers` and returns its lines. `info` is sent right after it as an end
    /// marker: the node runs commands one at a time, so everything `peers` prints comes
    /// before the `id: ` line of `info`. Event lines printed in between are skipped.
    fn peers(&mut self) -> Vec<String> {
        self.send_line("peers");
        self.send_line("info");
        let mut lines = Vec::new();
        self.expect_line("`id: ` (end of the `peers` output)", |l| {
            if l == "no peers connected" || is_peer_line(l) {
                lines.push(l.to_string());
            }
            l.starts_with("id: ")
        });
        lines
    }

    /// The `peers` line for `other`, polling until it appears.
    fn wait_peer(&mut self, other: &NodeProc) -> String {
        let prefix = format!("{} id={} ", other.addr(), other.id);
        let deadline = Instant::now() + WAIT;
        loop {
            let lines = self.peers();
            if let Some(l) = lines.iter().find(|l| l.starts_with(&prefix)) {
                return l.clone();
            }
            if Instant::now() >= deadline {
                self.fail(&format!(
                    "`peers` never listed {} within {WAIT:?}; last output: {lines:?}",
                    other.name
                ));
            }
            thread::sleep(POLL);
        }
    }

    /// Runs `info` and returns its lines, from `id: ` to `counters: `.
    fn info(&mut self) -> Vec<String> {
        self.send_line("info");
        let mut lines = vec![self.expect_line("`id: `", |l| l.starts_with("id: "))];
        let mut more = Vec::new();
        self.expect_line("`counters: ` (last line of `info`)", |l| {
            more.push(l.to_string());
            l.starts_with("counters: ")
        });
        lines.extend(more);
        lines
    }

    /// The broadcast counters of `info`.
    fn broadcast_counters(&mut self) -> Counters {
        let lines = self.info();
        let line = lines
            .iter()
            .find(|l| l.starts_with("counters: "))
            .unwrap_or_else(|| self.fail(&format!("no `counters:` line in {lines:?}")));
        parse_broadcast_counters(line)
            .unwrap_or_else(|| self.fail(&format!("cannot read counters in {line:?}")))
    }

    /// How many stdout lines so far (consumed or not) are exactly `line`.
    fn count_lines(&self, line: &str) -> usize {
        self.out_history
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .filter(|l| *l == line)
            .count()
    }

    /// How many stdout lines so far (consumed or not) start with `prefix`.
    fn count_lines_starting(&self, prefix: &str) -> usize {
        self.out_history
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .filter(|l| l.starts_with(prefix))
            .count()
    }

    /// Waits for the process to end; fails the test after `EXIT_WAIT`.
    fn expect_exit(&mut self) -> ExitStatus {
        let st = wait_exit(&mut self.child.0, EXIT_WAIT);
        match st {
            Some(st) => {
                self.log.push(format!("[{}] exited: {st}", self.name));
                st
            }
            None => self.fail(&format!("did not exit within {EXIT_WAIT:?}")),
        }
    }

    /// Expects a clean exit: `shutting down` on stdout, then status 0.
    fn expect_clean_exit(&mut self) {
        self.expect_exact("shutting down");
        let st = self.expect_exit();
        if st.code() != Some(0) {
            self.fail(&format!("exit status {st}, expected 0"));
        }
    }

    fn signal(&mut self, signal: &str) {
        self.log.push(format!("[{}] <- SIG{signal}", self.name));
        send_signal(self.pid(), signal);
    }
}

/// The `XDG_STATE_HOME` of every node these tests start: one temporary folder per
/// test process, removed when the process exits... or left in the temp dir if it is
/// killed, never in `$HOME`.
fn state_home() -> &'static std::path::Path {
    static DIR: std::sync::OnceLock<tempfile::TempDir> = std::sync::OnceLock::new();
    DIR.get_or_init(|| tempfile::tempdir().expect("temporary state folder"))
        .path()
}

/// `node <16 hex> listening on 127.0.0.1:<port>` → (id, port).
fn parse_first_line(line: &str) -> Option<(String, u16)> {
    let rest = line.strip_prefix("node ")?;
    let (id, rest) = rest.split_once(' ')?;
    if id.len() != 16 || !id.chars().all(|c| c.is_ascii_hexdigit()) {
        return None;
    }
    let port: u16 = rest.strip_prefix("listening on 127.0.0.1:")?.parse().ok()?;
    (port != 0).then(|| (id.to_string(), port))
}

/// A `peers` line: `<host:port> id=<id> dir=in|out rtt=<x>ms|- up=<n>s enc=tls|plain`.
fn is_peer_line(l: &str) -> bool {
    let words: Vec<&str> = l.split(' ').collect();
    words.len() == 6
        && words[0].parse::<std::net::SocketAddr>().is_ok()
        && words[1].starts_with("id=")
        && (words[2] == "dir=in" || words[2] == "dir=out")
        && (words[3] == "rtt=-" || (words[3].starts_with("rtt=") && words[3].ends_with("ms")))
        && words[4].starts_with("up=")
        && words[4].ends_with('s')
        && (words[5] == "enc=tls" || words[5] == "enc=plain")
}

/// The broadcast counters `info` prints.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Counters {
    delivered: u64,
    duplicates: u64,
    forwarded: u64,
}

/// The broadcast counters of `counters: name=value name=value ...`.
fn parse_broadcast_counters(l: &str) -> Option<Counters> {
    let rest = l.strip_prefix("counters: ")?;
    let number = |name: &str| -> Option<u64> {
        rest.split(' ')
            .find_map(|kv| kv.strip_prefix(name)?.strip_prefix('='))?
            .parse()
            .ok()
    };
    Some(Counters {
        delivered: number("broadcasts_delivered")?,
        duplicates: number("duplicates_dropped")?,
        forwarded: number("frames_forwarded")?,
    })
}

/// What a process that ran to its end printed.
struct Finished {
    status: ExitStatus,
    stdout: String,
    stderr: String,
}

/// Runs the binary with `args` and stdin at end of file until it exits; fails the test
/// if it runs longer than `EXIT_WAIT` (the guard then kills it).
fn run_to_end(args: &[&str]) -> Finished {
    let mut child = Command::new(BIN)
        .args(args)
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn p2p-node");
    let read_all = |mut r: Box<dyn Read + Send>| {
        thread::spawn(move || {
            let mut s = Vec::new();
            let _ = r.read_to_end(&mut s);
            String::from_utf8_lossy(&s).into_owned()
        })
    };
    let out = read_all(Box::new(child.stdout.take().expect("stdout piped")));
    let err = read_all(Box::new(child.stderr.take().expect("stderr piped")));
    let mut guard = ChildGuard(child);
    let status = wait_exit(&mut guard.0, EXIT_WAIT);
    drop(guard); // kills it if it is still running, so the readers see end of file
    let stdout = out.join().expect("stdout reader");
    let stderr = err.join().expect("stderr reader");
    let status = status.unwrap_or_else(|| {
        panic!(
            "p2p-node {args:?} still running after {EXIT_WAIT:?}\nstdout: {stdout}\nstderr: {stderr}"
        )
    });
    Finished {
        status,
        stdout,
        stderr,
    }
}

/// Checks the "bad arguments" contract for one invocation and returns the stderr line.
fn assert_one_line_error(args: &[&str], code: i32) -> String {
    let f = run_to_end(args);
    let ctx = format!(
        "p2p-node {args:?}: status {}\nstdout: {:?}\nstderr: {:?}",
        f.status, f.stdout, f.stderr
    );
    assert_eq!(f.status.code(), Some(code), "{ctx}");
    assert!(!f.stderr.contains("panicked"), "{ctx}");
    assert!(f.stdout.is_empty(), "nothing expected on stdout; {ctx}");
    assert!(f.stderr.ends_with('\n'), "{ctx}");
    let lines: Vec<&str> = f.stderr.lines().collect();
    assert_eq!(lines.len(), 1, "exactly one stderr line expected; {ctx}");
    assert!(lines[0].starts_with("p2p-node: "), "{ctx}");
    lines[0].to_string()
}

// ---------------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------------

/// The basic scenario with three processes: link, direct message, discovery,
/// broadcast delivered once, and a clean leave.
#[test]
fn three_nodes_link_message_discover_broadcast_and_leave() {
    let log = Log::default();
    let mut a = NodeProc::start(&log, "A", &[]);
    let mut b = NodeProc::join(&log, "B", &a);

    // B dialled A: both report the link, with the direction seen from each side.
    b.expect_exact(&format!("connected to {} (id {})", a.addr(), a.id));
    b.expect_exact(&format!("peer up: {} (id {}, out)", a.addr(), a.id));
    a.expect_exact(&format!("peer up: {} (id {}, in)", b.addr(), b.id));
    let on_a = a.wait_peer(&b);
    assert!(on_a.contains(" dir=in "), "{on_a}");
    let on_b = b.wait_peer(&a);
    assert!(on_b.contains(" dir=out "), "{on_b}");

    // A direct message, attributed to the sender's listen address.
    b.send_line(&format!("send {} Hello from Node B!", a.addr()));
    b.expect_exact(&format!("sent to {}", a.addr()));
    a.expect_exact(&format!("message from {}: Hello from Node B!", b.addr()));

    // C joins through A and is discovered by B (peer exchange + auto-dial).
    let mut c = NodeProc::join(&log, "C", &a);
    c.expect_exact(&format!("connected to {} (id {})", a.addr(), a.id));
    a.expect_line("`peer up` for C", |l| {
        l.starts_with(&format!("peer up: {} (id {}, ", c.addr(), c.id))
    });
    b.wait_peer(&c);
    c.wait_peer(&a);
    c.wait_peer(&b);

    // C floods a broadcast over the triangle. A and B each get C's copy, and whichever
    // of them delivers C's copy first also forwards it to the other (never back to
    // C, the origin), so at least one extra copy must reach them and be dropped.
    c.send_line("broadcast hi everyone");
    c.expect_exact("broadcast sent to 2 peers");
    let want = format!("broadcast from {}: hi everyone", c.addr());
    a.expect_exact(&want);
    b.expect_exact(&want);
    // Every copy has been handled once the duplicates dropped by A and B add up to the
    // frames they forwarded (C forwards nothing of its own).
    let deadline = Instant::now() + WAIT;
    let (on_a, on_b) = loop {
        let (on_a, on_b) = (a.broadcast_counters(), b.broadcast_counters());
        let settled = on_a.forwarded + on_b.forwarded >= 1
            && on_a.duplicates + on_b.duplicates == on_a.forwarded + on_b.forwarded;
        if settled || Instant::now() >= deadline {
            break (on_a, on_b);
        }
        thread::sleep(POLL);
    };
    let settled = on_a.forwarded + on_b.forwarded >= 1
        && on_a.duplicates + on_b.duplicates == on_a.forwarded + on_b.forwarded;
    if !settled || on_a.delivered != 1 || on_b.delivered != 1 {
        a.fail(&format!(
            "expected each of A and B to deliver once and to drop every forwarded copy \
             within {WAIT:?}; A: {on_a:?}, B: {on_b:?}"
        ));
    }
    for node in [&mut a, &mut b] {
        // Anything printed for the broadcast is out before this `peers` answer.
        node.peers();
        let n = node.count_lines(&want);
        if n != 1 {
            node.fail(&format!("{want:?} printed {n} times, expected once"));
        }
    }

    // B leaves with `exit`: status 0, and A (and C) see the LEAVE.
    b.send_line("exit");
    b.expect_clean_exit();
    a.expect_exact(&format!("peer down: {} (left)", b.addr()));
    c.expect_exact(&format!("peer down: {} (left)", b.addr()));

    a.send_line("exit");
    a.expect_clean_exit();
    c.send_line("exit");
    c.expect_clean_exit();
}

/// Starts A and B (joined to A), waits until both report the link, sends `signal` to
/// B and checks B exits 0 and A sees it leave.
fn signal_leaves_cleanly(signal: &str) {
    let log = Log::default();
    let mut a = NodeProc::start(&log, "A", &[]);
    let mut b = NodeProc::join(&log, "B", &a);
    a.expect_exact(&format!("peer up: {} (id {}, in)", b.addr(), b.id));
    // Printed by B's main loop, which runs after its signal handler is installed.
    b.expect_exact(&format!("peer up: {} (id {}, out)", a.addr(), a.id));

    b.signal(signal);
    b.expect_clean_exit();
    a.expect_exact(&format!("peer down: {} (left)", b.addr()));

    a.send_line("exit");
    a.expect_clean_exit();
}

#[test]
fn sigterm_sends_leave_and_exits_0() {
    signal_leaves_cleanly("TERM");
}

#[test]
fn sigint_sends_leave_and_exits_0() {
    signal_leaves_cleanly("INT");
}

/// With stdin closed from the start the node keeps serving; SIGTERM still ends it
/// cleanly.
#[test]
fn end_of_input_does_not_stop_the_node() {
    let log = Log::default();
    let mut a = NodeProc::start(&log, "A", &[]);
    a.close_stdin();

    let mut b = NodeProc::join(&log, "B", &a);
    b.expect_exact(&format!("peer up: {} (id {}, out)", a.addr(), a.id));
    a.expect_exact(&format!("peer up: {} (id {}, in)", b.addr(), b.id));
    // A still delivers what it receives.
    b.send_line(&format!("send {} still there?", a.addr()));
    a.expect_exact(&format!("message from {}: still there?", b.addr()));

    a.signal("TERM");
    a.expect_clean_exit();
    b.expect_exact(&format!("peer down: {} (left)", a.addr()));

    b.send_line("exit");
    b.expect_clean_exit();
}

/// Each bad command line prints exactly one `p2p-node: ` line on stderr and exits 2.
#[test]
fn bad_arguments_print_one_line_and_exit_2() {
    let long_name = "n".repeat(65);
    // `--bind 127.0.0.1` is appended where it does not change the mistake, so that a
    // node started by error would only listen on loopback.
    let cases: Vec<Vec<&str>> = vec![
        vec![],
        vec!["abc", "--bind", "127.0.0.1"],
        vec!["70000", "--bind", "127.0.0.1"],
        vec!["-1", "--bind", "127.0.0.1"],
        vec!["9000", "127.0.0.1", "--bind", "127.0.0.1"],
        vec!["0", "127.0.0.1", "xyz", "--bind", "127.0.0.1"],
        vec!["0", "127.0.0.1", "0", "--bind", "127.0.0.1"],
        vec!["0", "--bind", "nonsense"],
        vec!["0", "--network", &long_name, "--bind", "127.0.0.1"],
    ];
    for args in &cases {
        assert_one_line_error(args, 2);
    }
}

/// The listening port is taken: one `p2p-node: cannot listen on ...` line, exit 1.
#[test]
fn port_in_use_prints_one_line_and_exits_1() {
    let taken = TcpListener::bind("127.0.0.1:0").expect("bind a test listener");
    let port = taken.local_addr().expect("local addr").port().to_string();
    let line = assert_one_line_error(&[&port, "--bind", "127.0.0.1"], 1);
    assert!(
        line.starts_with(&format!("p2p-node: cannot listen on 127.0.0.1:{port}")),
        "{line}"
    );
    drop(taken);
}

/// Typing mistakes print one `error: ` line on stderr each; the node keeps running.
#[test]
fn command_mistakes_print_errors_and_the_node_keeps_running() {
    let log = Log::default();
    let mut a = NodeProc::start(&log, "A", &[]);
    // (command, text the error line must contain)
    let cases = [
        ("frobnicate", "frobnicate"),
        ("send", "send"),
        ("send 127.0.0.1:1", "send"),
        ("send 127.0.0.1:1 hi", "127.0.0.1:1"),
        ("connect 127.0.0.1 notaport", "notaport"),
        ("disconnect 127.0.0.1:1", "127.0.0.1:1"),
    ];
    for (cmd, mention) in cases {
        a.send_line(cmd);
        let line = a.expect_err_line(&format!("`error: ` for {cmd:?}"), |l| {
            l.starts_with("error: ")
        });
        if !line.contains(mention) {
            a.fail(&format!(
                "error for {cmd:?} does not mention {mention:?}: {line}"
            ));
        }
        // Still answering.
        assert_eq!(a.peers(), vec!["no peers connected".to_string()]);
    }
    a.send_line("exit");
    a.expect_clean_exit();

    let stdout = a.out_history.lock().expect("history").clone();
    for l in &stdout {
        assert!(
            !l.starts_with("error") && !l.contains("panicked"),
            "unexpected stdout line {l:?}\n{}",
            log.dump()
        );
    }
    let transcript = log.dump();
    assert!(!transcript.contains("panicked"), "{transcript}");
}

/// `help` lists every command; `info` starts with this node's id.
#[test]
fn help_and_info_commands() {
    let log = Log::default();
    let mut a = NodeProc::start(&log, "A", &[]);
    a.send_line("help");
    a.expect_exact("commands:");
    for cmd in [
        "peers",
        "send <host:port> <text>",
        "broadcast <text>",
        "connect <host> <port>",
        "disconnect <host:port>",
        "known",
        "forget <host:port>",
        "info",
        "help",
        "exit",
    ] {
        a.expect_line(&format!("help entry {cmd:?}"), |l| {
            l.trim_start().starts_with(&format!("{cmd} "))
        });
    }

    let info = a.info();
    assert_eq!(info[0], format!("id: {}", a.id), "{info:?}");
    assert!(
        info.contains(&format!("listening: {}", a.addr())),
        "{info:?}"
    );

    a.send_line("exit");
    a.expect_clean_exit();
}

/// `--help` exits 0 and documents every option.
#[test]
fn help_flag_exits_0_and_lists_every_option() {
    let f = run_to_end(&["--help"]);
    assert_eq!(f.status.code(), Some(0), "stderr: {}", f.stderr);
    for opt in [
        "--bind",
        "--advertise",
        "--network",
        "--target-links",
        "--max-links",
        "--max-connections",
        "--no-auto-dial",
        "--heartbeat-ms",
        "--timeout-ms",
        "--handshake-timeout-ms",
        "--max-frame",
        "--identity",
        "--plaintext",
        "--network-ca",
        "--cert",
        "--key",
        "ca init",
        "ca issue",
        "--help",
        "--version",
    ] {
        assert!(
            f.stdout.contains(opt),
            "--help does not mention {opt}:\n{}",
            f.stdout
        );
    }
    assert!(!f.stdout.contains("panicked") && !f.stderr.contains("panicked"));
}

/// `--max-connections` must leave room above `--max-pending`: a cap that handshakes
/// alone could fill is refused with one line naming both.
#[test]
fn max_connections_not_above_max_pending_is_refused() {
    let line = assert_one_line_error(
        &[
            "0",
            "--bind",
            "127.0.0.1",
            "--no-peers-file",
            "--max-connections",
            "32",
        ],
        2,
    );
    assert!(
        line.contains("max connections (32) must exceed max pending handshakes (32)"),
        "{line}"
    );
}

/// A missing positional argument should be named in the error line, as every other
/// argument error names its value.
#[test]
fn missing_argument_error_names_the_argument() {
    let line = assert_one_line_error(&[], 2);
    assert!(line.contains("<PORT>"), "{line}");
    let line = assert_one_line_error(&["9000", "127.0.0.1", "--bind", "127.0.0.1"], 2);
    assert!(line.contains("PEER_PORT"), "{line}");
}

/// A supervisor that sends SIGTERM as soon as it has read the `listening` line must
/// get a clean stop (status 0), since that line is the node's ready signal.
///
/// The reaction has to be quick to hit the window, faster than starting a `kill`
/// process after the test thread reads the line, so a small `sh` script starts the
/// node, reads its first line from a FIFO and signals it with the shell's built-in
/// `kill`, by PID. It reports the PID first, so the test can kill the node should the
/// script die before it.
#[test]
fn sigterm_right_after_the_listening_line_exits_0() {
    const SCRIPT: &str = r#"
bin=$1; fifo=$2
mkfifo "$fifo" || exit 90
"$bin" 0 --bind 127.0.0.1 </dev/null >"$fifo" 2>/dev/null &
pid=$!
echo "pid $pid"
exec 3<"$fifo"
IFS= read -r line <&3
kill -TERM "$pid"
echo "line $line"
cat <&3
wait "$pid"
echo "status $?"
"#;
    let dir = tempfile::tempdir().expect("temp dir");
    for round in 0..30 {
        let fifo = dir.path().join(format!("out{round}"));
        let mut child = Command::new("sh")
            .arg("-c")
            .arg(SCRIPT)
            .arg("sh") // $0
            .arg(BIN)
            .arg(&fifo)
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn sh");
        let stdout = child.stdout.take().expect("stdout piped");
        let sh = ChildGuard(child);
        let log = Log::default();
        let rx = spawn_reader(
            stdout,
            format!("round {round}"),
            log.clone(),
            Arc::new(Mutex::new(Vec::new())),
        );
        let pid: u32 = wait_on(&rx, &mut |l| l.starts_with("pid "), WAIT)
            .and_then(|l| l["pid ".len()..].parse().ok())
            .unwrap_or_else(|| panic!("no pid from the script\n{}", log.dump()));
        let status = wait_on(&rx, &mut |l| l.starts_with("status "), WAIT);
        if status.is_none() {
            // The node may still be running: kill it by PID (it is not reaped yet, the
            // script is still waiting for it).
            let _ = Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status();
        }
        drop(sh);
        let status = status.unwrap_or_else(|| panic!("no status\n{}", log.dump()));
        assert_eq!(
            status,
            "status 0",
            "round {round}: SIGTERM right after the first line\n{}",
            log.dump()
        );
    }
}

// ---------------------------------------------------------------------------------
// Peer cache
// ---------------------------------------------------------------------------------

/// A port nobody listens on right now, from the OS (bound, read, released), for a
/// node that must come back on the same port after a restart.
fn free_port() -> String {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr").port().to_string()
}

/// A node restarted without a bootstrap address rejoins through its peer cache;
/// `known` lists the cached address and `forget` removes it.
#[test]
fn restarted_node_rejoins_without_bootstrap() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("b-peers.txt");
    let file_arg = file.to_str().expect("utf-8 path");
    let log = Log::default();
    let mut a = NodeProc::start(&log, "A", &[]);
    let port = free_port();
    let a_port = a.port.to_string();

    let mut b = NodeProc::start_on(
        &log,
        "B",
        &port,
        &["127.0.0.1", &a_port, "--peers-file", file_arg],
    );
    b.expect_exact(&format!("peer up: {} (id {}, out)", a.addr(), a.id));
    // A lists B at its listen address once its dial-back verified it.
    a.expect_exact(&format!("peer up: {} (id {}, in)", b.addr(), b.id));
    b.send_line("exit");
    b.expect_clean_exit();
    a.expect_exact(&format!("peer down: {} (left)", b.addr()));

    // No bootstrap this time.
    let mut b2 = NodeProc::start_on(&log, "B2", &port, &["--peers-file", file_arg]);
    b2.expect_exact(&format!("peer up: {} (id {}, out)", a.addr(), a.id));
    a.expect_exact(&format!("peer up: {} (id {}, in)", b2.addr(), b2.id));
    b2.send_line("known");
    b2.expect_line("A in `known`", |l| {
        l.starts_with(&format!("{} ", a.addr())) && l.contains("failures=0")
    });
    b2.send_line(&format!("forget {}", a.addr()));
    b2.expect_exact(&format!("forgot {}", a.addr()));
    b2.send_line("exit");
    b2.expect_clean_exit();
    // Forgotten addresses stay forgotten in the file; B2's own address never appears.
    let loaded = p2p_overlay::peer_cache::load(&file).expect("cache loads");
    let addrs: Vec<String> = loaded.addrs.iter().map(|c| c.addr.to_string()).collect();
    assert!(!addrs.contains(&a.addr()), "{addrs:?}");
    assert!(!addrs.contains(&b2.addr()), "{addrs:?}");

    a.send_line("exit");
    a.expect_clean_exit();
}

/// `kill -9` at any moment while the node rewrites a 1000-entry cache every few
/// milliseconds leaves a file that loads whole: atomic replace, never a torn file.
#[test]
fn kill_9_during_cache_writes_never_leaves_a_torn_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("peers.txt");
    let file_arg = file.to_str().expect("utf-8 path");
    let mut text = format!("{}\n", p2p_overlay::peer_cache::HEADER);
    for i in 0..1000u32 {
        text.push_str(&format!(
            "127.0.{}.{}:{} seen=1 success=-\n",
            i / 200,
            1 + i % 200,
            2000 + i
        ));
    }
    std::fs::write(&file, text).expect("write cache");
    let log = Log::default();
    for round in 0..40u64 {
        let mut n = NodeProc::start(
            &log,
            &format!("N{round}"),
            &[
                "--peers-file",
                file_arg,
                "--peers-file-interval-ms",
                "1",
                "--heartbeat-ms",
                "40",
                "--timeout-ms",
                "200",
                // Nobody listens on the cached addresses: do not dial them.
                "--no-auto-dial",
            ],
        );
        // Let it rewrite the file a few times (each maintenance tick, 10 ms), then
        // kill it at a different point of its write cycle every round.
        let before = std::fs::metadata(&file).and_then(|m| m.modified()).ok();
        let deadline = Instant::now() + WAIT;
        while std::fs::metadata(&file).and_then(|m| m.modified()).ok() == before {
            assert!(
                Instant::now() < deadline,
                "the node never rewrote its cache"
            );
            thread::sleep(Duration::from_millis(1));
        }
        thread::sleep(Duration::from_micros(700 * (round % 15)));
        n.signal("KILL");
        n.expect_exit();
        let loaded = p2p_overlay::peer_cache::load(&file)
            .unwrap_or_else(|e| panic!("round {round}: {e}\n{}", log.dump()));
        assert!(
            loaded.skipped.is_empty(),
            "round {round}: {:?}",
            loaded.skipped
        );
        assert_eq!(loaded.addrs.len(), 1000, "round {round}");
        // A killed writer may leave its temporary file; the next start removes it.
        let leftovers = std::fs::read_dir(dir.path()).expect("read_dir").count() - 1;
        assert!(
            leftovers <= 1,
            "round {round}: {leftovers} temporary files pile up"
        );
    }
}

// ---------------------------------------------------------------------------------
// Output forging: peer text is escaped, one event is one line
// ---------------------------------------------------------------------------------

/// A peer's text that, printed raw, would add a forged `peer up:` line, return the
/// carriage, clear the screen, write the clipboard (OSC 52), open a C1 CSI sequence
/// and reverse what follows (U+202E).
const FORGING_TEXT: &str = "hi\npeer up: 127.0.0.1:1 (id 0000000000000001, in)\r\x1b[2J\
                            \x1b]52;c;aGk=\x07\u{9b}31m\u{202e}evil";

/// `FORGING_TEXT` as the binary must print it (README.md, "Output contract").
const FORGING_TEXT_ESCAPED: &str = concat!(
    r"hi\npeer up: 127.0.0.1:1 (id 0000000000000001, in)\r\u{001B}[2J",
    r"\u{001B}]52;c;aGk=\u{0007}\u{009B}31m\u{202E}evil"
);

/// The line `FORGING_TEXT` tries to make a script believe in.
const FORGED_LINE: &str = "peer up: 127.0.0.1:1 (id 0000000000000001, in)";

/// Called once the line starting with `prefix` has been seen. Waits until `node` has
/// answered a `peers` command, printed after that line's whole `println!`, so anything
/// a raw text would have added to it is out; then checks all of stdout: exactly one
/// line starts with `prefix` and it is `want`, no line starts with `FORGED_LINE`, and
/// no line carries a control character (C0, DEL, C1) or U+202E.
fn assert_printed_once_escaped(node: &mut NodeProc, prefix: &str, want: &str) {
    node.peers();
    let stdout = node
        .out_history
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    let matching: Vec<&String> = stdout.iter().filter(|l| l.starts_with(prefix)).collect();
    if matching != [want] {
        node.fail(&format!(
            "expected exactly one {prefix:?} line {want:?}, got {matching:?}"
        ));
    }
    if let Some(l) = stdout.iter().find(|l| l.starts_with(FORGED_LINE)) {
        node.fail(&format!("forged line printed: {l:?}"));
    }
    if let Some(l) = stdout
        .iter()
        .find(|l| l.chars().any(|c| c.is_control() || c == '\u{202e}'))
    {
        node.fail(&format!("control character printed: {l:?}"));
    }
}

/// `127.0.0.1:<port>` of a node process, as a socket address.
fn sock(node: &NodeProc) -> SocketAddr {
    node.addr().parse().expect("a node's listen address")
}

/// A raw peer's DATA text full of control characters prints as one `message from`
/// line with the text escaped; no forged `peer up:` line appears.
#[test]
fn data_with_control_characters_prints_one_escaped_line() {
    let log = Log::default();
    // The raw peer speaks the wire protocol without TLS.
    let mut a = NodeProc::start(&log, "A", &["--no-auto-dial", "--plaintext"]);
    let (mut raw, _) = common::RawPeer::join(sock(&a), &common::default_network());
    let raw_addr = raw.listen_addr();
    a.expect_exact(&format!("peer up: {raw_addr} (id {}, in)", raw.id));

    raw.send(&p2p_overlay::P2PMessage::Data {
        text: FORGING_TEXT.to_string(),
    });
    let want = format!("message from {raw_addr}: {FORGING_TEXT_ESCAPED}");
    let got = a.expect_line("`message from `", |l| l.starts_with("message from "));
    if got != want {
        a.fail(&format!("printed {got:?}, expected {want:?}"));
    }
    assert_printed_once_escaped(&mut a, "message from ", &want);

    a.send_line("exit");
    a.expect_clean_exit();
}

/// The same text as a BROADCAST from a library node, relayed by the `p2p-node` A to
/// the `p2p-node` B (origin -> A -> B; no node auto-dials, so B has no link to the
/// origin): both print one escaped `broadcast from` line, escaping holds for relayed
/// text too.
#[test]
fn relayed_broadcast_with_control_characters_prints_one_escaped_line() {
    let log = Log::default();
    let mut a = NodeProc::start(&log, "A", &["--no-auto-dial"]);
    let a_port = a.port.to_string();
    let mut b = NodeProc::start(&log, "B", &["127.0.0.1", &a_port, "--no-auto-dial"]);
    a.expect_exact(&format!("peer up: {} (id {}, in)", b.addr(), b.id));
    b.expect_exact(&format!("peer up: {} (id {}, out)", a.addr(), a.id));

    let origin = common::start_node(|c| c.auto_dial = false);
    if let Err(e) = origin.connect_to_peer(sock(&a)) {
        a.fail(&format!("the origin cannot link to A: {e}"));
    }
    a.expect_exact(&format!(
        "peer up: {} (id {}, in)",
        origin.addr(),
        origin.id()
    ));
    match origin.broadcast_data(FORGING_TEXT) {
        Ok(1) => {}
        other => a.fail(&format!(
            "broadcast from the origin: {other:?}, expected Ok(1)"
        )),
    }

    let want = format!("broadcast from {}: {FORGING_TEXT_ESCAPED}", origin.addr());
    for node in [&mut a, &mut b] {
        let got = node.expect_line("`broadcast from `", |l| l.starts_with("broadcast from "));
        if got != want {
            node.fail(&format!("printed {got:?}, expected {want:?}"));
        }
        assert_printed_once_escaped(node, "broadcast from ", &want);
    }
    // B got it through A: its only link, ever, is A.
    let on_b = b.peers();
    if on_b.len() != 1 || !on_b[0].starts_with(&format!("{} ", a.addr())) {
        b.fail(&format!(
            "B should be linked to A only, `peers` says {on_b:?}"
        ));
    }
    let origin_up = format!("peer up: {} ", origin.addr());
    if b.count_lines_starting(&origin_up) != 0 {
        b.fail("B linked to the origin: the broadcast was not relayed");
    }

    for node in [&mut a, &mut b] {
        node.send_line("exit");
        node.expect_clean_exit();
    }
}

/// `s` cut to its first 200 characters, for failure messages about lines that may be
/// megabytes long (the first version echoed a whole over-long line).
fn shorten(s: &str) -> String {
    match s.char_indices().nth(200) {
        Some((cut, _)) => format!("{:?}... ({} bytes)", &s[..cut], s.len()),
        None => format!("{s:?}"),
    }
}

/// One `error: ` line on stderr starting with `prefix`, from every stderr line of a
/// process that has exited; fails with the lines otherwise.
fn assert_one_error(node: &NodeProc, stderr: &[String], prefix: &str) {
    let errors: Vec<String> = stderr
        .iter()
        .filter(|l| l.starts_with("error"))
        .map(|l| shorten(l))
        .collect();
    let first_ok = stderr
        .iter()
        .find(|l| l.starts_with("error"))
        .is_some_and(|l| l.starts_with(prefix));
    if errors.len() != 1 || !first_ok {
        node.fail(&format!(
            "expected one stderr line starting with {prefix:?}, got {errors:?}"
        ));
    }
}

/// The 5 MB line of the over-long line tests: no line feed in it.
const LONG_LINE: usize = 5_000_000;

/// A 5 MB line (the first version kept it whole and echoed it back in an `unknown
/// command` error) is refused with one short `error: line too long` line; the node
/// answers the next command and exits cleanly. Its peak memory is compared with an
/// idle node's, measured the same way in the same test, where /proc exists.
#[test]
fn an_over_long_line_is_refused_in_one_short_error_and_costs_no_memory() {
    let log = Log::default();
    let mut idle = NodeProc::start(&log, "idle", &[]);
    let mut fed = NodeProc::start(&log, "fed", &[]);

    let mut long = vec![b'a'; LONG_LINE];
    long.push(b'\n');
    fed.send_bytes(
        &format!("{LONG_LINE} bytes of 'a', then a line feed"),
        &long,
    );
    drop(long);
    // Commands run in order: `peers` answered means the long line was read and
    // reported.
    for node in [&mut idle, &mut fed] {
        let peers = node.peers();
        if peers != ["no peers connected"] {
            node.fail(&format!("`peers` printed {peers:?}"));
        }
    }
    let line = fed.expect_err_line("`error: line too long`", |l| l.starts_with("error: "));
    let want = format!(
        "error: line too long ({LONG_LINE} bytes, the limit is {} bytes); ignored",
        (1 << 20) + 4096
    );
    if line != want {
        fed.fail(&format!("printed {}, expected {want:?}", shorten(&line)));
    }

    // Peak memory: the line may cost its limit (1 MiB) but not its length.
    if let (Some(idle_kib), Some(fed_kib)) = (idle.peak_rss_kib(), fed.peak_rss_kib()) {
        log.push(format!("peak RSS: idle {idle_kib} KiB, fed {fed_kib} KiB"));
        if fed_kib > idle_kib + 4 * 1024 {
            fed.fail(&format!(
                "peak RSS {fed_kib} KiB after a {LONG_LINE}-byte line, idle node {idle_kib} KiB"
            ));
        }
    }

    for node in [&mut idle, &mut fed] {
        node.send_line("exit");
        node.expect_clean_exit();
    }
    let stderr = fed.all_stderr();
    assert_one_error(&fed, &stderr, "error: line too long (");
    let bytes: usize = stderr.iter().map(|l| l.len() + 1).sum();
    if bytes >= 4096 {
        fed.fail(&format!("{bytes} bytes on stderr"));
    }
}

/// The same without a line feed: the long line ends at end of input, is still
/// reported once, and the node keeps running until a signal.
#[test]
fn an_over_long_last_line_without_line_feed_is_reported_at_end_of_input() {
    let log = Log::default();
    let mut a = NodeProc::start(&log, "A", &[]);
    a.send_bytes(
        &format!("{LONG_LINE} bytes of 'a', no line feed"),
        &vec![b'a'; LONG_LINE],
    );
    a.close_stdin();
    a.expect_err_line("`error: line too long`", |l| l.starts_with("error: "));
    a.signal("TERM");
    a.expect_clean_exit();
    let stderr = a.all_stderr();
    assert_one_error(
        &a,
        &stderr,
        &format!("error: line too long ({LONG_LINE} bytes"),
    );
}

/// A line with a byte that is not UTF-8 is one error; the lines after it still run,
/// `exit` included (the first version's stdin thread stopped at such a byte).
#[test]
fn invalid_utf8_is_an_error_for_that_line_only() {
    let log = Log::default();
    let mut a = NodeProc::start(&log, "A", &[]);
    a.send_bytes("pe\\xffers and a line feed", b"pe\xffers\n");
    let peers = a.peers();
    if peers != ["no peers connected"] {
        a.fail(&format!("`peers` printed {peers:?}"));
    }
    let line = a.expect_err_line("`error: line is not valid UTF-8`", |l| {
        l.starts_with("error: ")
    });
    let want = r#"error: line is not valid UTF-8 (at byte 2, after "pe"); ignored"#;
    if line != want {
        a.fail(&format!("printed {}, expected {want:?}", shorten(&line)));
    }
    a.send_line("exit");
    a.expect_clean_exit();
    let stderr = a.all_stderr();
    assert_one_error(&a, &stderr, "error: line is not valid UTF-8");
}

/// A 1 MiB unknown command word (within the line limit) is quoted by its first 64
/// characters only.
#[test]
fn a_huge_unknown_command_is_quoted_short() {
    let log = Log::default();
    let mut a = NodeProc::start(&log, "A", &[]);
    let mut word = vec![b'x'; 1 << 20];
    word.push(b'\n');
    a.send_bytes("1 MiB of 'x', then a line feed", &word);
    let line = a.expect_err_line("`error: unknown command`", |l| l.starts_with("error: "));
    let want = format!(
        "error: unknown command \"{}\"... (1048576 bytes) (type 'help')",
        "x".repeat(64)
    );
    if line != want {
        a.fail(&format!("printed {}, expected {want:?}", shorten(&line)));
    }
    a.send_line("exit");
    a.expect_clean_exit();
}

/// The line limit is the frame limit plus 4 KiB: a line of exactly the limit is read
/// (here an unknown command), one byte more is refused, and the largest text a DATA
/// frame can carry (`max_frame - 1` bytes) fits on a `send` line and arrives whole.
#[test]
fn the_largest_message_fits_on_a_line_and_the_limit_is_exact() {
    const LIMIT: usize = (1 << 20) + 4096;
    let log = Log::default();
    let mut a = NodeProc::start(&log, "A", &["--no-auto-dial"]);
    let a_port = a.port.to_string();
    let mut b = NodeProc::start(&log, "B", &["127.0.0.1", &a_port, "--no-auto-dial"]);
    a.expect_exact(&format!("peer up: {} (id {}, in)", b.addr(), b.id));

    for (len, want) in [
        (LIMIT, "error: unknown command \"x"),
        (LIMIT + 1, "error: line too long ("),
    ] {
        let mut line = vec![b'x'; len];
        line.push(b'\n');
        a.send_bytes(&format!("{len} bytes of 'x', then a line feed"), &line);
        let got = a.expect_err_line("an `error: ` line", |l| l.starts_with("error: "));
        if !got.starts_with(want) || !got.contains(&format!("{len} bytes")) {
            a.fail(&format!(
                "for {len} bytes: {}, expected {want:?}",
                shorten(&got)
            ));
        }
    }

    let text = "m".repeat((1 << 20) - 1);
    let mut line = format!("send {} {text}", b.addr()).into_bytes();
    line.push(b'\n');
    a.send_bytes("send <B> with a text of max_frame - 1 bytes", &line);
    a.expect_exact(&format!("sent to {}", b.addr()));
    let got = b.expect_line("`message from `", |l| l.starts_with("message from "));
    if got != format!("message from {}: {text}", a.addr()) {
        b.fail(&format!("received {}", shorten(&got)));
    }

    for node in [&mut a, &mut b] {
        node.send_line("exit");
        node.expect_clean_exit();
    }
}
