//! Small helpers every measurement shares: percentiles, payloads, a seeded random
//! number generator, deadlines, stopping many nodes at once without hanging, process
//! limits, and a plain-text table printer.

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use crossbeam_channel::bounded;
use p2p_overlay::{Config, Encryption, Node};

/// Stack of the helper threads the bench starts itself (consumers, stoppers, the
/// raw-TCP peers): they only move a few small buffers.
pub const HELPER_STACK: usize = 128 * 1024;

/// The config of every bench node: 127.0.0.1 with an OS-chosen port, links of the
/// given encryption, and every other setting at its default.
pub fn local_config(enc: Encryption) -> Config {
    let mut config = Config::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 0);
    config.encryption = enc;
    config
}

/// Starts a helper thread with a small stack; the bench cannot go on without it.
pub fn spawn<T: Send + 'static>(
    name: &str,
    f: impl FnOnce() -> T + Send + 'static,
) -> thread::JoinHandle<T> {
    thread::Builder::new()
        .name(name.to_string())
        .stack_size(HELPER_STACK)
        .spawn(f)
        .unwrap_or_else(|e| panic!("cannot start bench thread {name}: {e}"))
}

/// A text of exactly `size` bytes (ASCII), starting with `tag` when it fits.
pub fn payload(tag: &str, size: usize) -> String {
    let mut s = String::with_capacity(size.max(tag.len()));
    s.push_str(tag);
    s.push(' ');
    while s.len() < size {
        s.push('x');
    }
    s.truncate(size.max(tag.len()));
    s
}

/// Nearest-rank percentiles of a sample.
#[derive(Clone, Copy, Debug)]
pub struct Percentiles {
    pub p50: Duration,
    pub p90: Duration,
    pub p99: Duration,
    pub max: Duration,
}

impl Percentiles {
    /// `None` for an empty sample.
    pub fn of(samples: &[Duration]) -> Option<Percentiles> {
        if samples.is_empty() {
            return None;
        }
        let mut v = samples.to_vec();
        v.sort_unstable();
        let rank = |p: f64| {
            let idx = ((p / 100.0) * v.len() as f64).ceil() as usize;
            v[idx.clamp(1, v.len()) - 1]
        };
        Some(Percentiles {
            p50: rank(50.0),
            p90: rank(90.0),
            p99: rank(99.0),
            max: v[v.len() - 1],
        })
    }
}

/// Median of a few repeated figures (the machine is noisy, so each throughput run is
/// repeated and the middle one reported). `NaN` for none.
pub fn median(values: &[f64]) -> f64 {
    let mut v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

/// xorshift64*: a tiny deterministic generator, so every run builds the same random
/// topology from the same seed.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.max(1))
    }

    /// A number in `0..n` (`n > 0`).
    pub fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) % n as u64) as usize
    }
}

/// Stops every node in parallel (each `stop` may wait up to 300 ms for graceful
/// closes, so one by one would take half a minute for 100 nodes). Returns how many
/// did not finish within `limit`; those are left to finish in the background.
pub fn stop_all(nodes: Vec<Arc<Node>>, limit: Duration) -> usize {
    let total = nodes.len();
    let (tx, rx) = bounded(total.max(1));
    for node in nodes {
        let done = tx.clone();
        let stopper = thread::Builder::new()
            .name("stop".into())
            .stack_size(HELPER_STACK)
            .spawn(move || {
                node.stop();
                drop(node);
                let _ = done.send(());
            });
        if let Err(e) = stopper {
            // The closure (and the node in it) is dropped with the error: the node
            // stopped inline.
            eprintln!("warning: no thread to stop a node ({e}); stopped inline");
            let _ = tx.send(());
        }
    }
    drop(tx);
    let deadline = Instant::now() + limit;
    let mut done = 0;
    while done < total && rx.recv_deadline(deadline).is_ok() {
        done += 1;
    }
    total - done
}

/// The soft and hard "Max open files" limits of this process, from /proc.
pub fn open_files_limit() -> Option<(u64, u64)> {
    let text = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = text.lines().find(|l| l.starts_with("Max open files"))?;
    let mut nums = line
        .split_whitespace()
        .filter_map(|w| w.parse::<u64>().ok());
    Some((nums.next()?, nums.next()?))
}

/// One field of /proc/<pid>/status in KiB (`VmRSS`, `VmHWM`, ...).
pub fn proc_status_kib(pid: u32, field: &str) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = text
        .lines()
        .find(|l| l.starts_with(field) && l[field.len()..].starts_with(':'))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// Threads of a process: entries of /proc/<pid>/task.
pub fn thread_count(pid: u32) -> Option<usize> {
    Some(std::fs::read_dir(format!("/proc/{pid}/task")).ok()?.count())
}

/// CPU time counters, to tell how much of the machine other processes took while a
/// section ran (the machine is shared; the latency figures suffer first).
#[derive(Clone, Copy)]
pub struct CpuSnapshot {
    /// Jiffies of every CPU: busy (user, nice, system) and all.
    busy: u64,
    total: u64,
    /// This process's user + system jiffies, reaped children included.
    own: u64,
    /// Kernel threads' jiffies (ksoftirqd, kworkers): mostly our own loopback traffic.
    kernel: u64,
}

/// utime + stime (+ cutime + cstime with `children`) and the parent pid, from a
/// /proc/<pid>/stat file.
fn task_jiffies(path: &str, children: bool) -> Option<(u64, u64)> {
    let text = std::fs::read_to_string(path).ok()?;
    let fields: Vec<u64> = text
        .rsplit_once(')')?
        .1
        .split_whitespace()
        .skip(1) // state
        .map(|x| x.parse().unwrap_or(0))
        .collect();
    // From ppid (index 0): utime is index 10, stime 11, cutime 12, cstime 13.
    let n = if children { 4 } else { 2 };
    Some((fields.get(10..10 + n)?.iter().sum(), *fields.first()?))
}

impl CpuSnapshot {
    pub fn now() -> Option<CpuSnapshot> {
        let stat = std::fs::read_to_string("/proc/stat").ok()?;
        let cpu: Vec<u64> = stat
            .lines()
            .next()?
            .split_whitespace()
            .skip(1)
            .filter_map(|x| x.parse().ok())
            .collect();
        // user nice system idle iowait irq softirq steal (guest time is in user).
        // Busy = user + nice + system: irq and softirq time is charged to no process.
        let kernel = std::fs::read_dir("/proc")
            .ok()?
            .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
            .filter_map(|pid| task_jiffies(&format!("/proc/{pid}/stat"), false).map(|t| (pid, t)))
            .filter(|(pid, (_, ppid))| *pid == 2 || *ppid == 2)
            .map(|(_, (jiffies, _))| jiffies)
            .sum();
        Some(CpuSnapshot {
            busy: cpu.iter().take(3).sum(),
            total: cpu.iter().take(8).sum(),
            own: task_jiffies("/proc/self/stat", true)?.0,
            kernel,
        })
    }

    /// Percent of the machine's CPU time since `self` used by other user processes.
    pub fn others_percent(&self, later: &CpuSnapshot) -> f64 {
        let total = later.total.saturating_sub(self.total).max(1) as f64;
        let busy = later.busy.saturating_sub(self.busy);
        let ours = later.own.saturating_sub(self.own) + later.kernel.saturating_sub(self.kernel);
        busy.saturating_sub(ours) as f64 / total * 100.0
    }
}

/// Microseconds as a float, for tables and JSON.
pub fn us(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

/// Milliseconds as a float.
pub fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// A plain-text table: a header row, then rows; columns padded to the widest cell,
/// numbers right-aligned.
pub struct Table {
    header: Vec<String>,
    rows: Vec<Vec<String>>,
}

impl Table {
    pub fn new(header: &[&str]) -> Table {
        Table {
            header: header.iter().map(|s| s.to_string()).collect(),
            rows: Vec::new(),
        }
    }

    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    pub fn print(&self) {
        let cols = self.header.len();
        let mut width = vec![0; cols];
        for row in std::iter::once(&self.header).chain(&self.rows) {
            for (i, c) in row.iter().enumerate().take(cols) {
                width[i] = width[i].max(c.chars().count());
            }
        }
        let line = |row: &Vec<String>| {
            let cells: Vec<String> = row
                .iter()
                .enumerate()
                .take(cols)
                .map(|(i, c)| {
                    let numeric =
                        c.starts_with(|ch: char| ch.is_ascii_digit() || ch == '-') && i > 0;
                    if numeric {
                        format!("{c:>w$}", w = width[i])
                    } else {
                        format!("{c:<w$}", w = width[i])
                    }
                })
                .collect();
            println!("  {}", cells.join("  ").trim_end());
        };
        line(&self.header);
        let rule: Vec<String> = width.iter().map(|w| "-".repeat(*w)).collect();
        println!("  {}", rule.join("  "));
        for r in &self.rows {
            line(r);
        }
    }
}

/// A figure for a table cell: fixed decimals, or "-" when missing.
pub fn fmt_f(x: f64, decimals: usize) -> String {
    if x.is_finite() {
        format!("{x:.decimals$}")
    } else {
        "-".into()
    }
}

/// A large count with thousands separators, or "-".
pub fn fmt_n(x: f64) -> String {
    if !x.is_finite() {
        return "-".into();
    }
    let s = format!("{:.0}", x.abs());
    let mut out = String::new();
    for (i, ch) in s.chars().enumerate() {
        if i > 0 && (s.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(ch);
    }
    if x < 0.0 {
        out.insert(0, '-');
    }
    out
}
