//! Measurement 7: memory and threads of a real `p2p-node` process.
//!
//! The binary is the one Cargo built for this bench (`CARGO_BIN_EXE_p2p-node`, i.e.
//! `target/release/p2p-node` under `cargo bench`). It runs as
//! `p2p-node 0 --bind 127.0.0.1 --max-links 256` (plus `--max-inbound 256` and
//! `--no-peers-file` when its `--help` lists them), with stdin held open like an
//! interactive node. TLS is the binary's default; for plaintext links it gets
//! `--plaintext`, and when its `--help` does not list that flag the plaintext
//! measurement is skipped with a note (a TLS node cannot take plaintext clients).
//! The client nodes use the same encryption as the process. Figures
//! come from `/proc/<pid>/status` (`VmRSS`) and the entries of `/proc/<pid>/task`:
//!
//! 1. idle: 1.5 s after the node printed its listening line, no links;
//! 2. loaded: `links` in-process library nodes (auto-dial off, so they link only to
//!    the measured node) each `connect_to_peer` it; once the process has printed a
//!    `peer up:` line for every one of them, 2.5 s more so that every link has
//!    exchanged heartbeats, then the same figures again.
//!
//! Per link = (loaded - idle) / links. The process is killed by its PID when the
//! guard is dropped, whatever happens.

use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{unbounded, Receiver};
use p2p_overlay::{Encryption, Node};

use crate::support::{local_config, proc_status_kib, spawn, stop_all, thread_count};
use crate::watchdog;

/// The binary Cargo built alongside this bench.
pub const NODE_BIN: &str = env!("CARGO_BIN_EXE_p2p-node");

/// A running `p2p-node`; killed (SIGKILL to its PID) and reaped on drop.
struct NodeProcess {
    child: Child,
    addr: SocketAddr,
    stdout: Receiver<String>,
}

impl Drop for NodeProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        watchdog::unregister_pid(self.child.id());
    }
}

/// Lines of a child's stream, read on a helper thread.
fn lines_of(stream: impl Read + Send + 'static) -> Receiver<String> {
    let (tx, rx) = unbounded();
    spawn("child-output", move || {
        for line in BufReader::new(stream).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

/// The binary's `--help`, to pass only the flags it has.
fn help_text() -> String {
    Command::new(NODE_BIN)
        .arg("--help")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default()
}

impl NodeProcess {
    fn start(max_links: usize, enc: Encryption) -> Result<NodeProcess, String> {
        let mut cmd = Command::new(NODE_BIN);
        cmd.args(["0", "--bind", "127.0.0.1", "--max-links"])
            .arg(max_links.to_string());
        let help = help_text();
        if enc == Encryption::Plain {
            if !help.contains("--plaintext") {
                return Err(format!(
                    "plaintext not measured: {NODE_BIN} --help lists no --plaintext flag \
                     (the binary always runs TLS)"
                ));
            }
            cmd.arg("--plaintext");
        }
        // Newer binaries cap inbound links separately (default 64): lift it too, since
        // every measured link is dialled by the bench.
        if help.contains("--max-inbound") {
            cmd.arg("--max-inbound").arg(max_links.to_string());
        }
        if help.contains("--no-peers-file") {
            cmd.arg("--no-peers-file");
        }
        cmd.stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        let mut child = cmd
            .spawn()
            .map_err(|e| format!("cannot start {NODE_BIN}: {e}"))?;
        watchdog::register_pid(child.id());
        let stdout = lines_of(child.stdout.take().ok_or("no stdout")?);
        // From here on the guard owns the child: any early return kills it.
        let mut p = NodeProcess {
            child,
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            stdout,
        };
        let first = p
            .stdout
            .recv_timeout(Duration::from_secs(10))
            .map_err(|_| "p2p-node printed no listening line within 10 s".to_string())?;
        p.addr = first
            .rsplit(' ')
            .next()
            .and_then(|a| a.parse().ok())
            .ok_or_else(|| format!("unexpected first line {first:?}"))?;
        Ok(p)
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// VmRSS in KiB and the thread count.
    fn sample(&self) -> Result<(u64, usize), String> {
        let rss = proc_status_kib(self.pid(), "VmRSS").ok_or("no VmRSS in /proc")?;
        let threads = thread_count(self.pid()).ok_or("no /proc/<pid>/task")?;
        Ok((rss, threads))
    }
}

pub struct MemoryResult {
    pub enc: Encryption,
    pub links: usize,
    pub idle_rss_kib: u64,
    pub idle_threads: usize,
    pub loaded_rss_kib: u64,
    pub loaded_threads: usize,
    /// `peer up:` lines the process printed (should equal `links`).
    pub links_up: usize,
    pub errors: Vec<String>,
}

impl MemoryResult {
    pub fn per_link_kib(&self) -> f64 {
        (self.loaded_rss_kib as f64 - self.idle_rss_kib as f64) / self.links_up.max(1) as f64
    }

    pub fn threads_per_link(&self) -> f64 {
        (self.loaded_threads as f64 - self.idle_threads as f64) / self.links_up.max(1) as f64
    }
}

pub fn measure(links: usize, enc: Encryption) -> Result<MemoryResult, String> {
    let p = NodeProcess::start(256, enc)?;
    std::thread::sleep(Duration::from_millis(1500));
    let (idle_rss_kib, idle_threads) = p.sample()?;

    let mut errors = Vec::new();
    let mut clients = Vec::with_capacity(links);
    for i in 0..links {
        let mut cfg = local_config(enc);
        cfg.auto_dial = false;
        cfg.target_links = 1;
        cfg.max_links = 4;
        match Node::start(cfg) {
            Ok(n) => {
                if let Err(e) = n.connect_to_peer(p.addr) {
                    errors.push(format!("client {i}: {e}"));
                }
                clients.push(Arc::new(n));
            }
            Err(e) => {
                errors.push(format!("client {i}: {e}"));
                break;
            }
        }
    }
    let links_up = wait_peer_lines(&p, links, Instant::now() + Duration::from_secs(20));
    if links_up < links {
        errors.push(format!("only {links_up}/{links} peer up lines within 20 s"));
    }
    std::thread::sleep(Duration::from_millis(2500));
    let (loaded_rss_kib, loaded_threads) = p.sample()?;
    let stuck = stop_all(clients, Duration::from_secs(20));
    if stuck > 0 {
        errors.push(format!("{stuck} client nodes did not stop within 20 s"));
    }
    drop(p);
    Ok(MemoryResult {
        enc,
        links,
        idle_rss_kib,
        idle_threads,
        loaded_rss_kib,
        loaded_threads,
        links_up,
        errors,
    })
}

/// Counts `peer up:` lines minus `peer down:` lines until `want` or the deadline.
fn wait_peer_lines(p: &NodeProcess, want: usize, deadline: Instant) -> usize {
    let mut up = 0usize;
    while up < want {
        match p.stdout.recv_deadline(deadline) {
            Ok(l) if l.starts_with("peer up:") => up += 1,
            Ok(l) if l.starts_with("peer down:") => up = up.saturating_sub(1),
            Ok(_) => {}
            Err(_) => break,
        }
    }
    up
}
