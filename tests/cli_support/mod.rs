//! A `p2p-node` process for the closed-network and identity tests: unlike
//! `common::NodeProcess` it takes any port and any flags, keeps stderr (the refusal
//! lines are what these tests judge), and runs with `XDG_STATE_HOME` and `HOME` set
//! to a folder the test owns, so key files and peer caches never land in the real
//! home. Every process is killed by its PID and reaped on drop, pass or fail; every
//! wait is bounded.

#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::path::Path;
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_p2p-node");

/// How long an expected line may take (generous: 2 shared cores).
pub const WAIT: Duration = Duration::from_secs(20);

/// One running `p2p-node`.
pub struct Cli {
    pub name: String,
    child: Option<Child>,
    stdin: Option<ChildStdin>,
    out: Receiver<String>,
    err: Receiver<String>,
    out_history: Arc<Mutex<Vec<String>>>,
    err_history: Arc<Mutex<Vec<String>>>,
    /// From the first line.
    pub id: String,
    pub port: u16,
}

/// What a process that ran to its end printed.
pub struct Finished {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

impl Finished {
    pub fn code(&self) -> Option<i32> {
        self.status.code()
    }

    /// The only stderr line, failing the test if there is not exactly one.
    pub fn one_stderr_line(&self, what: &str) -> String {
        let lines: Vec<&str> = self.stderr.lines().collect();
        assert_eq!(
            lines.len(),
            1,
            "{what}: exactly one stderr line expected, got {:?} (stdout {:?})",
            self.stderr,
            self.stdout
        );
        assert!(!self.stderr.contains("panicked"), "{what}: {}", self.stderr);
        lines[0].to_string()
    }
}

fn command(state: &Path, args: &[&str]) -> Command {
    let mut c = Command::new(BIN);
    c.args(args)
        .env_remove("RUST_LOG")
        .env("XDG_STATE_HOME", state)
        .env("HOME", state);
    c
}

/// Runs `p2p-node args...` with stdin at end of file until it exits (at most `WAIT`;
/// then it is killed and the test fails).
pub fn run_to_end(state: &Path, args: &[&str]) -> Finished {
    let mut child = command(state, args)
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
    let deadline = Instant::now() + WAIT;
    let status = loop {
        match child.try_wait() {
            Ok(Some(st)) => break Some(st),
            Ok(None) if Instant::now() < deadline => thread::sleep(Duration::from_millis(10)),
            _ => break None,
        }
    };
    if status.is_none() {
        let _ = child.kill();
        let _ = child.wait();
    }
    let stdout = out.join().expect("stdout reader");
    let stderr = err.join().expect("stderr reader");
    let status = status.unwrap_or_else(|| {
        panic!("p2p-node {args:?} still running after {WAIT:?}\nstdout: {stdout}\nstderr: {stderr}")
    });
    Finished {
        status,
        stdout,
        stderr,
    }
}

/// Runs `p2p-node ca ...` and expects it to succeed.
pub fn ca(state: &Path, args: &[&str]) -> Finished {
    let mut all = vec!["ca"];
    all.extend_from_slice(args);
    let f = run_to_end(state, &all);
    assert_eq!(
        f.code(),
        Some(0),
        "p2p-node {all:?}: stdout {:?} stderr {:?}",
        f.stdout,
        f.stderr
    );
    f
}

fn spawn_reader<R: Read + Send + 'static>(
    stream: R,
    history: Arc<Mutex<Vec<String>>>,
) -> Receiver<String> {
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        for line in BufReader::new(stream).lines() {
            let Ok(line) = line else { break };
            history
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(line.clone());
            let _ = tx.send(line);
        }
    });
    rx
}

fn wait_on(
    rx: &Receiver<String>,
    pred: &mut dyn FnMut(&str) -> bool,
    t: Duration,
) -> Option<String> {
    let deadline = Instant::now() + t;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(l) if pred(&l) => return Some(l),
            Ok(_) => continue,
            Err(RecvTimeoutError::Timeout) | Err(RecvTimeoutError::Disconnected) => return None,
        }
    }
}

impl Cli {
    /// Starts `p2p-node <port> <args...> --bind 127.0.0.1` with its state under
    /// `state`, and reads its first line (`node <id> listening on 127.0.0.1:<port>`).
    pub fn start(name: &str, state: &Path, port: u16, args: &[&str]) -> Cli {
        let port_s = port.to_string();
        let mut all = vec![port_s.as_str()];
        all.extend_from_slice(args);
        all.extend_from_slice(&["--bind", "127.0.0.1"]);
        let mut child = command(state, &all)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn p2p-node");
        let stdin = child.stdin.take();
        let out_history = Arc::new(Mutex::new(Vec::new()));
        let err_history = Arc::new(Mutex::new(Vec::new()));
        let out = spawn_reader(
            child.stdout.take().expect("stdout piped"),
            Arc::clone(&out_history),
        );
        let err = spawn_reader(
            child.stderr.take().expect("stderr piped"),
            Arc::clone(&err_history),
        );
        let mut cli = Cli {
            name: name.to_string(),
            child: Some(child),
            stdin,
            out,
            err,
            out_history,
            err_history,
            id: String::new(),
            port: 0,
        };
        let first = cli.expect_line("the first line", |_| true);
        let parsed = first.strip_prefix("node ").and_then(|rest| {
            let (id, rest) = rest.split_once(' ')?;
            let port: u16 = rest.strip_prefix("listening on 127.0.0.1:")?.parse().ok()?;
            (id.len() == 16).then(|| (id.to_string(), port))
        });
        let (id, port) = parsed.unwrap_or_else(|| cli.fail(&format!("bad first line {first:?}")));
        cli.id = id;
        cli.port = port;
        cli
    }

    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn fail(&self, what: &str) -> ! {
        panic!(
            "{}: {what}\nstdout: {:#?}\nstderr: {:#?}",
            self.name,
            self.stdout(),
            self.stderr()
        )
    }

    /// Every stdout line so far.
    pub fn stdout(&self) -> Vec<String> {
        self.out_history
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Every stderr line so far.
    pub fn stderr(&self) -> Vec<String> {
        self.err_history
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    pub fn send_line(&mut self, line: &str) {
        let ok = self.stdin.as_mut().is_some_and(|s| {
            s.write_all(format!("{line}\n").as_bytes())
                .and_then(|_| s.flush())
                .is_ok()
        });
        if !ok {
            self.fail(&format!("cannot write {line:?} to stdin"));
        }
    }

    /// The next stdout line matching `pred` within `WAIT` (earlier ones are consumed).
    pub fn expect_line(&self, what: &str, mut pred: impl FnMut(&str) -> bool) -> String {
        wait_on(&self.out, &mut pred, WAIT)
            .unwrap_or_else(|| self.fail(&format!("no stdout line {what} within {WAIT:?}")))
    }

    /// The next stderr line matching `pred` within `WAIT`.
    pub fn expect_err_line(&self, what: &str, mut pred: impl FnMut(&str) -> bool) -> String {
        wait_on(&self.err, &mut pred, WAIT)
            .unwrap_or_else(|| self.fail(&format!("no stderr line {what} within {WAIT:?}")))
    }

    /// Runs `peers` (with `info` after it as an end marker: commands run in order) and
    /// returns its lines.
    pub fn peers(&mut self) -> Vec<String> {
        self.send_line("peers");
        self.send_line("info");
        let mut lines = Vec::new();
        self.expect_line("`id: ` after `peers`", |l| {
            if l.starts_with("127.0.0.1:") || l == "no peers connected" {
                lines.push(l.to_string());
            }
            l.starts_with("id: ")
        });
        lines
    }

    /// Polls `peers` until `pred` holds for its lines, within `WAIT`.
    pub fn wait_peers(
        &mut self,
        what: &str,
        mut pred: impl FnMut(&[String]) -> bool,
    ) -> Vec<String> {
        let deadline = Instant::now() + WAIT;
        loop {
            let lines = self.peers();
            if pred(&lines) {
                return lines;
            }
            if Instant::now() >= deadline {
                self.fail(&format!("`peers` never showed {what}; last: {lines:?}"));
            }
            thread::sleep(Duration::from_millis(100));
        }
    }

    /// Runs `info` and returns its lines, `id: ` to `counters: `.
    pub fn info(&mut self) -> Vec<String> {
        self.send_line("info");
        let mut lines = vec![self.expect_line("`id: `", |l| l.starts_with("id: "))];
        self.expect_line("`counters: `", |l| {
            lines.push(l.to_string());
            l.starts_with("counters: ")
        });
        lines
    }

    /// `exit`, then waits for the process to end with status 0.
    pub fn exit(&mut self) {
        self.send_line("exit");
        let st = self.wait_exit();
        if st.code() != Some(0) {
            self.fail(&format!("exit status {st}, expected 0"));
        }
    }

    /// Waits (bounded) for the process to end.
    pub fn wait_exit(&mut self) -> ExitStatus {
        let deadline = Instant::now() + WAIT;
        loop {
            let child = match self.child.as_mut() {
                Some(c) => c,
                None => self.fail("already reaped"),
            };
            match child.try_wait() {
                Ok(Some(st)) => {
                    self.child = None;
                    return st;
                }
                Ok(None) if Instant::now() < deadline => thread::sleep(Duration::from_millis(10)),
                _ => self.fail(&format!("did not exit within {WAIT:?}")),
            }
        }
    }

    /// SIGKILL by PID and reap: no LEAVE, no final cache write.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Cli {
    fn drop(&mut self) {
        self.kill9();
    }
}
