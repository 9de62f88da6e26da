//! `cargo bench --bench overlay [-- --quick] [--enc plain|tls|both] [SECTION...]`:
//! end-to-end figures of the overlay node, measured with the library API (and, for
//! memory, the `p2p-node` binary) on 127.0.0.1 in one process, printed as tables and
//! written as JSON to `target/bench/overlay.json`.
//!
//! Every node measurement runs once per link encryption (`--enc`, default `both`):
//! plaintext first, then TLS 1.3, in the same run, and the tables carry an `enc`
//! column; the summary adds TLS/plain ratios. The raw-TCP baselines are measured once
//! and shared.
//!
//! | section     | what (module)                                                       |
//! |-------------|---------------------------------------------------------------------|
//! | `link`      | direct-message throughput of one link vs raw TCP ([`direct`])       |
//! | `rtt`       | request/answer round trip vs a raw TCP ping-pong ([`direct`])       |
//! | `broadcast` | flood latency to the last node, 10/50/100 nodes ([`broadcast`])     |
//! | `burst`     | 2,000 broadcasts back to back in 50 nodes, loss and duplicates      |
//! | `join`      | 100 nodes join through one seed until all have 8 links ([`join`])   |
//! | `memory`    | RSS and threads of a `p2p-node` process, idle and per link ([`memory`]) |
//! | `handshake` | `connect_to_peer` time, and an accept storm at one node ([`handshake`]) |
//!
//! Naming sections runs only those (`-- --quick link rtt`); `--enc plain` or `--enc tls`
//! runs one encryption only. `--quick` runs the same measurements with small counts
//! (about a minute for both encryptions). Every wait has a deadline; a
//! measurement that times out prints and records what it got and is marked, it never
//! hangs the run, and a watchdog aborts a section stuck inside the library
//! ([`watchdog`]). After each section the share of the CPU that other processes took
//! is printed: the machine is shared. docs/BENCHMARKS.md explains every figure and
//! has the latest results.

mod broadcast;
mod direct;
mod handshake;
mod join;
mod memory;
mod overlay;
mod raw_tcp;
mod support;
mod watchdog;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use p2p_overlay::Encryption;
use serde_json::{json, Value};

use broadcast::{BurstResult, LatencyResult};
use direct::{LinkResult, RttResult};
use handshake::{HandshakeResult, StormResult};
use join::JoinResult;
use memory::MemoryResult;
use overlay::{Convergence, Overlay};
use support::{fmt_f, fmt_n, ms, open_files_limit, us, Percentiles, Table};

const SECTIONS: [&str; 7] = [
    "link",
    "rtt",
    "broadcast",
    "burst",
    "join",
    "memory",
    "handshake",
];

/// Origins taking turns in the second latency run on each overlay of 10 or more nodes.
const MULTI_ORIGINS: usize = 5;

/// Seed of the random "join through an earlier node" choices.
const TOPOLOGY_SEED: u64 = 0x5eed_2024;

/// Counts and time limits of one mode.
struct Plan {
    quick: bool,
    /// The link encryptions every node measurement runs with, in this order.
    encs: Vec<Encryption>,
    /// (payload bytes, messages) per link throughput run.
    link: Vec<(usize, usize)>,
    link_reps: usize,
    /// Limit of one throughput run.
    run_timeout: Duration,
    rtt_size: usize,
    rtt_trips: usize,
    rtt_warmup: usize,
    broadcast_nodes: Vec<usize>,
    broadcast_count: usize,
    broadcast_warmup: usize,
    broadcast_size: usize,
    broadcast_per_msg: Duration,
    /// Limit for an overlay to become connected.
    form_timeout: Duration,
    burst_nodes: usize,
    burst_count: usize,
    burst_size: usize,
    burst_timeout: Duration,
    join_nodes: usize,
    join_timeout: Duration,
    memory_links: usize,
    /// Sequential `connect_to_peer` samples per encryption, and their time budget.
    handshake_samples: usize,
    handshake_budget: Duration,
    /// Dials of the accept storm, the threads making them, and its time budget.
    storm_dials: usize,
    storm_threads: usize,
    storm_budget: Duration,
}

impl Plan {
    /// Watchdog limits: the sum of every deadline in the section, plus slack.
    /// Encryptions measured, as a factor of the limits.
    fn encs(&self) -> u32 {
        self.encs.len().max(1) as u32
    }

    fn link_limit(&self) -> Duration {
        let runs = (self.encs.len() + 1) * self.link.len() * self.link_reps;
        self.run_timeout * runs as u32 + Duration::from_secs(60)
    }

    fn rtt_limit(&self) -> Duration {
        self.run_timeout * (self.encs() + 1) + Duration::from_secs(60)
    }

    fn join_limit(&self) -> Duration {
        (self.join_timeout + Duration::from_secs(120)) * self.encs()
    }

    fn memory_limit(&self) -> Duration {
        Duration::from_secs(120) * self.encs()
    }

    /// Per encryption: both budgets, the storm's node starts and stops (30 s each at
    /// most), slack.
    fn handshake_limit(&self) -> Duration {
        (self.handshake_budget + self.storm_budget + Duration::from_secs(120)) * self.encs()
    }

    fn overlay_limit(&self) -> Duration {
        let per_overlay = self.form_timeout
            + self.broadcast_per_msg * 2 * (self.broadcast_count + self.broadcast_warmup) as u32
            + Duration::from_secs(60);
        (per_overlay * (self.broadcast_nodes.len() + 1) as u32 + self.burst_timeout) * self.encs()
    }

    fn full() -> Plan {
        Plan {
            quick: false,
            encs: vec![Encryption::Plain, Encryption::Tls],
            link: vec![(64, 2_000_000), (1024, 500_000), (64 * 1024, 20_000)],
            link_reps: 3,
            run_timeout: Duration::from_secs(60),
            rtt_size: 64,
            rtt_trips: 20_000,
            rtt_warmup: 1_000,
            broadcast_nodes: vec![10, 50, 100],
            broadcast_count: 200,
            broadcast_warmup: 10,
            broadcast_size: 64,
            broadcast_per_msg: Duration::from_secs(2),
            form_timeout: Duration::from_secs(30),
            burst_nodes: 50,
            burst_count: 2_000,
            burst_size: 1024,
            burst_timeout: Duration::from_secs(120),
            join_nodes: 100,
            join_timeout: Duration::from_secs(30),
            memory_links: 200,
            handshake_samples: 500,
            handshake_budget: Duration::from_secs(60),
            storm_dials: 1_000,
            storm_threads: 8,
            storm_budget: Duration::from_secs(60),
        }
    }

    fn quick() -> Plan {
        Plan {
            quick: true,
            link: vec![(64, 200_000), (1024, 50_000), (64 * 1024, 2_000)],
            link_reps: 1,
            run_timeout: Duration::from_secs(10),
            rtt_trips: 2_000,
            rtt_warmup: 200,
            broadcast_count: 20,
            broadcast_warmup: 3,
            broadcast_per_msg: Duration::from_secs(1),
            form_timeout: Duration::from_secs(10),
            burst_count: 200,
            burst_timeout: Duration::from_secs(15),
            join_timeout: Duration::from_secs(10),
            memory_links: 50,
            handshake_samples: 200,
            handshake_budget: Duration::from_secs(20),
            storm_budget: Duration::from_secs(30),
            ..Plan::full()
        }
    }
}

/// Everything measured, for the summary and the JSON file.
#[derive(Default)]
struct Results {
    link: Vec<LinkResult>,
    rtt: Option<RttResult>,
    broadcast: Vec<(LatencyResult, Convergence)>,
    /// The same overlays with [`MULTI_ORIGINS`] origins taking turns.
    broadcast_multi: Vec<(LatencyResult, Convergence)>,
    burst: Vec<BurstResult>,
    join: Vec<JoinResult>,
    memory: Vec<MemoryResult>,
    handshake: Vec<HandshakeResult>,
    storm: Vec<StormResult>,
    /// Problems worth reading: timeouts, failed joins, nodes that did not stop.
    notes: Vec<String>,
    /// /proc/loadavg (1, 5, 15 min) when the run started.
    load_before: String,
    /// Per section: percent of the machine's CPU other processes used meanwhile.
    other_cpu: Vec<(String, f64)>,
}

/// The first three fields of /proc/loadavg.
fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "unknown".into())
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let quick = args.iter().any(|a| a == "--quick");
    // `cargo bench` passes --bench; `cargo test --benches` does not, and must not run
    // minutes of measurements.
    if !quick && !args.iter().any(|a| a == "--bench") {
        println!("overlay bench: run with `cargo bench --bench overlay [-- --quick]`");
        return;
    }
    let (encs, only) = match parse_args(&args) {
        Ok(x) => x,
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(2);
        }
    };
    if let Some(bad) = only.iter().find(|s| !SECTIONS.contains(s)) {
        eprintln!("unknown section {bad:?}; sections: {}", SECTIONS.join(" "));
        std::process::exit(2);
    }
    let want = |s: &str| only.is_empty() || only.contains(&s);
    // The nodes' own diagnostics on stderr, filtered by RUST_LOG as in the binary;
    // errors only by default (RUST_LOG=warn shows dropped peers and closed links).
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("error")).init();
    let mut plan = if quick { Plan::quick() } else { Plan::full() };
    plan.encs = encs;

    println!(
        "p2p-overlay benchmarks ({} mode), nodes on 127.0.0.1, links {}; source {}",
        if quick { "quick" } else { "full" },
        enc_names(&plan.encs),
        source_version()
    );
    raise_open_files_limit();
    let started = Instant::now();
    let mut r = Results {
        load_before: load_average(),
        ..Results::default()
    };
    println!("load average at start: {}", r.load_before);
    watchdog::start();
    let t = started;
    if want("link") {
        section("link", plan.link_limit(), &plan, &mut r, t, |r| {
            run_link(&plan, r)
        });
    }
    if want("rtt") {
        section("rtt", plan.rtt_limit(), &plan, &mut r, t, |r| {
            run_rtt(&plan, r)
        });
    }
    if want("broadcast") || want("burst") {
        section("broadcast", plan.overlay_limit(), &plan, &mut r, t, |r| {
            run_overlays(&plan, r, want("broadcast"), want("burst"))
        });
    }
    if want("join") {
        let limit = plan.join_limit();
        section("join", limit, &plan, &mut r, t, |r| run_join(&plan, r));
    }
    if want("memory") {
        let limit = plan.memory_limit();
        section("memory", limit, &plan, &mut r, t, |r| run_memory(&plan, r));
    }
    if want("handshake") {
        let limit = plan.handshake_limit();
        section("handshake", limit, &plan, &mut r, t, |r| {
            run_handshake(&plan, r)
        });
    }
    print_summary(&r);
    let others: Vec<String> = r
        .other_cpu
        .iter()
        .map(|(n, p)| format!("{n} {p:.0}%"))
        .collect();
    println!(
        "\nCPU taken by other processes during each section: {} (near 0% = quiet machine)",
        others.join(", ")
    );
    if !r.notes.is_empty() {
        println!("\nNotes:");
        for n in &r.notes {
            println!("  - {n}");
        }
    }
    let path = json_path();
    write_json(&path, &to_json(&plan, &r, started.elapsed()));
    println!(
        "\nTotal {:.1} s. JSON written to {}",
        started.elapsed().as_secs_f64(),
        path.display()
    );
}

/// `--enc plain|tls|both` (or `--enc=...`; default both, plaintext first) and the
/// section names; every other argument starting with `-` is left to `main`.
fn parse_args(args: &[String]) -> Result<(Vec<Encryption>, Vec<&str>), String> {
    let mut encs = vec![Encryption::Plain, Encryption::Tls];
    let mut only = Vec::new();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let value = if a == "--enc" {
            Some(it.next().map(String::as_str).unwrap_or_default())
        } else {
            a.strip_prefix("--enc=")
        };
        match value {
            Some("plain") => encs = vec![Encryption::Plain],
            Some("tls") => encs = vec![Encryption::Tls],
            Some("both") => encs = vec![Encryption::Plain, Encryption::Tls],
            Some(v) => return Err(format!("--enc takes plain, tls or both, not {v:?}")),
            None if !a.starts_with('-') => only.push(a.as_str()),
            None => {}
        }
    }
    Ok((encs, only))
}

/// `plain + tls`, `tls`, ...
fn enc_names(encs: &[Encryption]) -> String {
    encs.iter()
        .map(|e| e.as_str())
        .collect::<Vec<_>>()
        .join(" + ")
}

/// Below this soft limit the bench warns. The 100-node overlays hold about 800
/// links, 2 sockets each, one descriptor per socket, plus the nodes' listeners and
/// wake-up connections: about 2,000 expected (the peak is to be re-measured), twice
/// that to be safe.
const OPEN_FILES_NEEDED: u64 = 4_000;

/// The soft limit the bench asks for: [`OPEN_FILES_NEEDED`] with wide headroom.
const OPEN_FILES_WANTED: u64 = 12_000;

/// Raises the soft limit on open files towards [`OPEN_FILES_WANTED`] (never above
/// the hard limit, which needs no privilege) and says what it is.
fn raise_open_files_limit() {
    let before = open_files_limit();
    let raised = rlimit::increase_nofile_limit(OPEN_FILES_WANTED);
    match (before, open_files_limit()) {
        (Some((old, _)), Some((soft, hard))) => {
            let change = if soft != old {
                format!(", raised from {old}")
            } else {
                String::new()
            };
            println!("open files limit: soft {soft}{change}, hard {hard}");
            if soft < OPEN_FILES_NEEDED {
                println!(
                    "  warning: the 100-node runs need about 2,000 (at least \
                     {OPEN_FILES_NEEDED} to be safe); raise the hard limit \
                     (ulimit -Hn {OPEN_FILES_WANTED}) or they may fail"
                );
            }
        }
        _ => println!("open files limit: unknown ({raised:?})"),
    }
}

/// Runs one section under the watchdog, then records the JSON so far (what an
/// aborted run leaves behind).
fn section(
    name: &str,
    limit: Duration,
    plan: &Plan,
    r: &mut Results,
    started: Instant,
    run: impl FnOnce(&mut Results),
) {
    watchdog::arm(name, limit);
    let before = support::CpuSnapshot::now();
    run(r);
    watchdog::disarm();
    if let (Some(b), Some(a)) = (before, support::CpuSnapshot::now()) {
        let others = b.others_percent(&a);
        println!("  (other processes took {others:.0}% of the machine's CPU during `{name}`)");
        r.other_cpu.push((name.to_string(), others));
    }
    watchdog::record_partial(json_path(), to_json(plan, r, started.elapsed()));
}

/// The commit the library was built from, and whether src/ had changes on top of it
/// (other people edit src/ while benchmarks run).
fn source_version() -> String {
    let git = |args: &[&str]| {
        std::process::Command::new("git")
            .arg("-C")
            .arg(env!("CARGO_MANIFEST_DIR"))
            .args(args)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
    };
    match git(&["rev-parse", "--short", "HEAD"]) {
        Some(commit) => match git(&["status", "--porcelain", "--", "src"]) {
            Some(changes) if changes.is_empty() => commit,
            Some(_) => format!("{commit} + uncommitted changes in src/"),
            None => commit,
        },
        None => "unknown (not a git checkout)".into(),
    }
}

fn heading(title: &str) {
    println!("\n== {title}");
}

fn run_link(plan: &Plan, r: &mut Results) {
    heading("1-2. Link throughput: A -> B send_data_to_peer, vs raw TCP (median of runs)");
    let mut t = Table::new(&[
        "size",
        "enc",
        "msgs",
        "node msg/s",
        "node MB/s",
        "raw msg/s",
        "raw MB/s",
        "ratio",
        "tls/plain",
        "node runs ok",
    ]);
    for &(size, count) in &plan.link {
        let results =
            direct::link_throughput(size, count, plan.link_reps, plan.run_timeout, &plan.encs);
        let plain = results
            .iter()
            .find(|l| l.enc == Encryption::Plain)
            .map_or(f64::NAN, |l| l.msgs_per_sec);
        for l in results {
            for e in &l.errors {
                r.notes
                    .push(format!("link {size} B {}: {e}", l.enc.as_str()));
            }
            t.row(vec![
                size_label(size),
                l.enc.as_str().into(),
                fmt_n(count as f64),
                format!(
                    "{}{}",
                    fmt_n(l.msgs_per_sec),
                    if l.partial { " (partial)" } else { "" }
                ),
                fmt_f(l.mb_per_sec(), 1),
                fmt_n(l.baseline_msgs_per_sec),
                fmt_f(l.baseline_mb_per_sec(), 1),
                fmt_f(l.ratio(), 3),
                if l.enc == Encryption::Tls {
                    fmt_f(l.msgs_per_sec / plain, 3)
                } else {
                    String::new()
                },
                format!("{}/{}", l.node_ok(), l.node_runs.len()),
            ]);
            r.link.push(l);
        }
    }
    t.print();
}

fn run_rtt(plan: &Plan, r: &mut Results) {
    heading(
        "3. Round trip: A -> B -> A direct message, vs raw TCP ping-pong (10 alternating blocks)",
    );
    let res = direct::round_trip(
        plan.rtt_size,
        plan.rtt_trips,
        plan.rtt_warmup,
        10,
        plan.run_timeout,
        &plan.encs,
    );
    r.notes
        .extend(res.errors.iter().map(|e| format!("rtt: {e}")));
    let mut t = Table::new(&[
        "path", "size", "trips", "p50 us", "p90 us", "p99 us", "max us",
    ]);
    let mut paths: Vec<(String, &[Duration])> = res
        .node
        .iter()
        .map(|(e, times)| (format!("node {}", e.as_str()), times.as_slice()))
        .collect();
    paths.push(("raw tcp".into(), &res.baseline));
    paths.push(("raw tcp + reader threads".into(), &res.floor));
    for (name, times) in paths {
        let p = Percentiles::of(times);
        let cell =
            |f: fn(&Percentiles) -> Duration| p.as_ref().map_or("-".into(), |p| fmt_f(us(f(p)), 1));
        t.row(vec![
            name,
            size_label(res.size),
            fmt_n(times.len() as f64),
            cell(|p| p.p50),
            cell(|p| p.p90),
            cell(|p| p.p99),
            cell(|p| p.max),
        ]);
    }
    t.print();
    for &enc in &plan.encs {
        println!(
            "  {}: ratio of p50s (node / raw): {}; node / raw with reader threads (the \
             floor of a thread-per-connection node): {}",
            enc.as_str(),
            fmt_f(rtt_ratio(&res, enc), 2),
            fmt_f(floor_ratio(&res, enc), 2)
        );
    }
    r.rtt = Some(res);
}

/// p50 of a sample in microseconds, NaN when empty.
fn p50_us(times: &[Duration]) -> f64 {
    Percentiles::of(times).map_or(f64::NAN, |p| us(p.p50))
}

fn floor_ratio(res: &RttResult, enc: Encryption) -> f64 {
    p50_us(res.node_times(enc)) / p50_us(&res.floor)
}

fn rtt_ratio(res: &RttResult, enc: Encryption) -> f64 {
    p50_us(res.node_times(enc)) / p50_us(&res.baseline)
}

/// Forms each overlay (once per encryption, plaintext first), measures broadcast
/// latency on it, and the burst on the one of `burst_nodes` nodes.
fn run_overlays(plan: &Plan, r: &mut Results, latency: bool, burst: bool) {
    let mut sizes: Vec<usize> = if latency {
        plan.broadcast_nodes.clone()
    } else {
        Vec::new()
    };
    if burst && !sizes.contains(&plan.burst_nodes) {
        sizes.push(plan.burst_nodes);
    }
    let mut t = Table::new(&[
        "nodes",
        "enc",
        "formed in",
        "links mean",
        "msgs",
        "p50 ms",
        "p90 ms",
        "p99 ms",
        "max ms",
        "incomplete",
        "copies/deliv",
        "dups/deliv",
    ]);
    for &n in &sizes {
        for &enc in &plan.encs {
            let e = enc.as_str();
            heading(&format!(
                "Overlay of {n} nodes, {e} links (each joins a random earlier node, default \
                 config)"
            ));
            let t0 = Instant::now();
            let ov = match Overlay::form_random(n, TOPOLOGY_SEED, enc) {
                Ok(ov) => ov,
                Err(err) => {
                    r.notes.push(format!("overlay {n} {e}: {err}"));
                    continue;
                }
            };
            r.notes.extend(summarize(
                &format!("overlay {n} {e}: connect_to_peer failed"),
                &ov.join_errors,
            ));
            let conv = ov.wait_connected(t0, t0 + plan.form_timeout, true);
            println!("  {}", conv.describe());
            if !conv.connected {
                r.notes
                    .push(format!("overlay {n} {e}: {}", conv.describe()));
            }
            let origin = n - 1; // the last to join: a typical node, not the hub node 0
            if latency && plan.broadcast_nodes.contains(&n) {
                let l = run_latency(plan, r, &mut t, &ov, &conv, &[origin]);
                r.broadcast.push((l, conv.clone()));
                if n >= MULTI_ORIGINS * 2 {
                    // The same overlay with several origins taking turns: each origin
                    // needs a tree of its own (PROTOCOL.md 3.5).
                    let origins: Vec<usize> = (0..MULTI_ORIGINS)
                        .map(|k| n - 1 - k * (n / MULTI_ORIGINS))
                        .collect();
                    let m = run_latency(plan, r, &mut t, &ov, &conv, &origins);
                    r.broadcast_multi.push((m, conv));
                }
            }
            if burst && n == plan.burst_nodes {
                let b = broadcast::burst(
                    &ov,
                    origin,
                    plan.burst_count,
                    plan.burst_size,
                    plan.burst_timeout,
                    Duration::from_secs(10),
                );
                r.burst.push(b);
            }
            if let Some(note) = ov.shutdown() {
                r.notes.push(format!("overlay {n} {e}: {note}"));
            }
        }
    }
    if !t.is_empty() {
        heading("4. Broadcast latency: origin -> last node to deliver (64 B, one at a time)");
        t.print();
    }
    if !r.burst.is_empty() {
        print_burst(plan, r);
    }
}

/// One latency measurement on `ov` from `origins`: printed, noted if incomplete, and
/// added to the table `t`.
fn run_latency(
    plan: &Plan,
    r: &mut Results,
    t: &mut Table,
    ov: &Overlay,
    conv: &Convergence,
    origins: &[usize],
) -> LatencyResult {
    let n = ov.len();
    let label = match origins.len() {
        1 => n.to_string(),
        k => format!("{n} ({k} origins)"),
    };
    let l = broadcast::latency(
        ov,
        origins,
        plan.broadcast_count,
        plan.broadcast_warmup,
        plan.broadcast_size,
        plan.broadcast_per_msg,
    );
    print_latency_line(&l);
    if l.incomplete > 0 {
        r.notes.push(format!(
            "broadcast {label} {}: {} of {} broadcasts did not reach every node within {:?}",
            ov.enc.as_str(),
            l.incomplete,
            l.sent,
            plan.broadcast_per_msg
        ));
    }
    let p = l.percentiles();
    let cell =
        |f: fn(&Percentiles) -> Duration| p.as_ref().map_or("-".into(), |p| fmt_f(ms(f(p)), 2));
    t.row(vec![
        label,
        ov.enc.as_str().into(),
        format!("{:.2} s", conv.elapsed.as_secs_f64()),
        fmt_f(conv.mean_links, 1),
        l.sent.to_string(),
        cell(|p| p.p50),
        cell(|p| p.p90),
        cell(|p| p.p99),
        cell(|p| p.max),
        l.incomplete.to_string(),
        fmt_f(l.copies_per_delivery(), 2),
        fmt_f(l.duplicates_per_delivery(), 2),
    ]);
    l
}

fn print_latency_line(l: &LatencyResult) {
    let p = l.percentiles();
    let done = Percentiles::of(&l.flood_done);
    println!(
        "  broadcast latency{}: {} sent, p50 {} ms, p99 {} ms (flood over: p50 {} ms), \
         {} incomplete;\n  copies/delivery {:.2}, duplicates dropped/delivery {:.2}, \
         double deliveries {}, grafts {}, max hops {}",
        match l.origins {
            1 => String::new(),
            k => format!(" ({k} origins taking turns)"),
        },
        l.sent,
        p.map_or("-".into(), |p| fmt_f(ms(p.p50), 2)),
        p.map_or("-".into(), |p| fmt_f(ms(p.p99), 2)),
        done.map_or("-".into(), |p| fmt_f(ms(p.p50), 2)),
        l.incomplete,
        l.copies_per_delivery(),
        l.duplicates_per_delivery(),
        l.double_deliveries,
        l.counters.grafts_sent,
        l.max_hops,
    );
    let c = &l.counters;
    let sent = c.broadcast_frames_sent;
    let accounted = l.deliveries + c.duplicates_dropped;
    if sent != accounted {
        println!(
            "  note: {sent} copies sent but {accounted} accounted for \
             (deliveries + duplicates dropped): {} lost in flight",
            sent as i64 - accounted as i64
        );
    }
}

fn print_burst(plan: &Plan, r: &mut Results) {
    heading(&format!(
        "5. Broadcast burst: {} x {} broadcasts back to back, {} nodes",
        plan.burst_count,
        size_label(plan.burst_size),
        plan.burst_nodes
    ));
    let mut t = Table::new(&[
        "nodes",
        "enc",
        "msgs",
        "origin send s",
        "slowest done s",
        "msg/s slowest",
        "lost",
        "dups",
        "slow peers dropped",
        "events dropped",
        "link ends before/after",
    ]);
    for b in &r.burst {
        t.row(vec![
            b.nodes.to_string(),
            b.enc.as_str().into(),
            fmt_n(b.msgs as f64),
            fmt_f(b.send_time.as_secs_f64(), 2),
            fmt_f(b.slowest.as_secs_f64(), 2),
            fmt_n(b.msgs_per_sec_slowest()),
            b.lost.to_string(),
            b.duplicates.to_string(),
            b.counters.slow_peers_dropped.to_string(),
            b.counters.events_dropped.to_string(),
            format!("{}/{}", b.links_before, b.links_after),
        ]);
        if !b.complete {
            r.notes.push(format!(
                "burst {}: incomplete: the slowest node delivered {} of {}; {} lost, {} send \
                 errors",
                b.enc.as_str(),
                b.min_delivered,
                b.msgs,
                b.lost,
                b.send_errors
            ));
        }
    }
    t.print();
}

fn run_join(plan: &Plan, r: &mut Results) {
    heading(&format!(
        "6. Join convergence: {} nodes join through one seed",
        plan.join_nodes
    ));
    let mut t = Table::new(&[
        "nodes",
        "enc",
        "joins done s",
        "converged s",
        "at target",
        "below target",
        "links min/mean/max",
    ]);
    for &enc in &plan.encs {
        let e = enc.as_str();
        match join::join_through_seed(plan.join_nodes, plan.join_timeout, enc) {
            Ok(j) => {
                t.row(vec![
                    j.nodes.to_string(),
                    e.into(),
                    fmt_f(j.joins.as_secs_f64(), 3),
                    fmt_f(j.convergence.elapsed.as_secs_f64(), 3),
                    if j.convergence.at_target { "yes" } else { "NO" }.into(),
                    j.convergence.below_target.to_string(),
                    format!(
                        "{}/{:.1}/{}",
                        j.convergence.min_links, j.convergence.mean_links, j.convergence.max_links
                    ),
                ]);
                if !j.convergence.at_target {
                    r.notes.push(format!(
                        "join {e}: not every node at target within {:?}: {}",
                        plan.join_timeout,
                        j.convergence.describe()
                    ));
                }
                r.notes
                    .extend(summarize(&format!("join {e}: failed"), &j.errors));
                r.join.push(j);
            }
            Err(err) => r.notes.push(format!("join {e}: {err}")),
        }
    }
    t.print();
}

fn run_memory(plan: &Plan, r: &mut Results) {
    heading(&format!(
        "7. Memory: one p2p-node process ({}), idle and with {} links",
        memory::NODE_BIN,
        plan.memory_links
    ));
    let mut t = Table::new(&[
        "enc",
        "state",
        "links",
        "VmRSS KiB",
        "threads",
        "KiB/link",
        "threads/link",
    ]);
    for &enc in &plan.encs {
        let e = enc.as_str();
        match memory::measure(plan.memory_links, enc) {
            Ok(m) => {
                t.row(vec![
                    e.into(),
                    "idle".into(),
                    "0".into(),
                    m.idle_rss_kib.to_string(),
                    m.idle_threads.to_string(),
                    String::new(),
                    String::new(),
                ]);
                t.row(vec![
                    e.into(),
                    "loaded".into(),
                    m.links_up.to_string(),
                    m.loaded_rss_kib.to_string(),
                    m.loaded_threads.to_string(),
                    fmt_f(m.per_link_kib(), 1),
                    fmt_f(m.threads_per_link(), 2),
                ]);
                r.notes
                    .extend(m.errors.iter().map(|err| format!("memory {e}: {err}")));
                r.memory.push(m);
            }
            Err(err) => r.notes.push(format!("memory {e}: {err}")),
        }
    }
    t.print();
}

fn run_handshake(plan: &Plan, r: &mut Results) {
    heading(&format!(
        "8. Handshake: {} sequential connect_to_peer B -> A (TCP + TLS + JOIN), each \
         followed by remove_peer",
        plan.handshake_samples
    ));
    let mut t = Table::new(&[
        "enc",
        "samples",
        "p50 ms",
        "p90 ms",
        "p99 ms",
        "max ms",
        "tls/plain p50",
    ]);
    for &enc in &plan.encs {
        let h = handshake::sequential(enc, plan.handshake_samples, plan.handshake_budget);
        let p = h.percentiles();
        let cell =
            |f: fn(&Percentiles) -> Duration| p.as_ref().map_or("-".into(), |p| fmt_f(ms(f(p)), 3));
        let plain = r
            .handshake
            .iter()
            .find(|x| x.enc == Encryption::Plain)
            .and_then(HandshakeResult::percentiles);
        t.row(vec![
            enc.as_str().into(),
            format!("{}/{}", h.times.len(), h.asked),
            cell(|p| p.p50),
            cell(|p| p.p90),
            cell(|p| p.p99),
            cell(|p| p.max),
            match (enc, p, plain) {
                (Encryption::Tls, Some(p), Some(q)) => fmt_f(ms(p.p50) / ms(q.p50), 2),
                _ => String::new(),
            },
        ]);
        r.notes.extend(
            h.errors
                .iter()
                .map(|e| format!("handshake {}: {e}", enc.as_str())),
        );
        if h.slow_teardowns > 0 {
            r.notes.push(format!(
                "handshake {}: {} samples started with a socket of the previous one still \
                 closing",
                enc.as_str(),
                h.slow_teardowns
            ));
        }
        r.handshake.push(h);
    }
    t.print();
    heading(&format!(
        "8b. Accept storm: {} distinct nodes dial one node from {} threads (its pending, \
         link and connection caps raised above {})",
        plan.storm_dials, plan.storm_threads, plan.storm_dials
    ));
    let mut t = Table::new(&[
        "enc",
        "dials",
        "linked",
        "failed",
        "secs",
        "handshakes/s",
        "dial p50 ms",
        "dial p99 ms",
        "target links",
        "target refused/failed",
        "setup s",
    ]);
    for &enc in &plan.encs {
        let s = handshake::storm(enc, plan.storm_dials, plan.storm_threads, plan.storm_budget);
        let p = Percentiles::of(&s.times);
        t.row(vec![
            enc.as_str().into(),
            s.dials.to_string(),
            s.ok.to_string(),
            (s.failed + s.not_started).to_string(),
            fmt_f(s.elapsed.as_secs_f64(), 3),
            fmt_n(s.per_sec()),
            p.map_or("-".into(), |p| fmt_f(ms(p.p50), 2)),
            p.map_or("-".into(), |p| fmt_f(ms(p.p99), 2)),
            s.target_links.to_string(),
            s.refusals.total().to_string(),
            fmt_f(s.setup.as_secs_f64(), 2),
        ]);
        r.notes.extend(
            s.errors
                .iter()
                .map(|e| format!("accept storm {}: {e}", enc.as_str())),
        );
        if s.target_links < s.ok {
            r.notes.push(format!(
                "accept storm {}: {} dials linked but the target had {} links",
                enc.as_str(),
                s.ok,
                s.target_links
            ));
        }
        r.storm.push(s);
    }
    t.print();
}

/// One note for a list of similar errors: the count and the first two.
fn summarize(what: &str, errors: &[String]) -> Option<String> {
    match errors {
        [] => None,
        [one] => Some(format!("{what}: {one}")),
        [a, b, ..] => Some(format!(
            "{what} {} times, e.g. {a}; {b}{}",
            errors.len(),
            if errors.len() > 2 { "; ..." } else { "" }
        )),
    }
}

fn size_label(size: usize) -> String {
    if size >= 1024 && size % 1024 == 0 {
        format!("{} KiB", size / 1024)
    } else {
        format!("{size} B")
    }
}

/// One line of the summary: the figure, what was measured, the target, a verdict and
/// the reference figure from the issue.
fn verdict(ok: Option<bool>) -> String {
    match ok {
        Some(true) => "met".into(),
        Some(false) => "MISSED".into(),
        None => "not measured".into(),
    }
}

/// What a TLS/plain ratio is held to.
#[derive(Clone, Copy)]
enum Target {
    AtLeast(f64),
    AtMost(f64),
}

impl Target {
    fn text(self) -> String {
        match self {
            Target::AtLeast(x) => format!(">= {x}"),
            Target::AtMost(x) => format!("<= {x}"),
        }
    }

    fn met(self, value: f64) -> Option<bool> {
        value.is_finite().then_some(match self {
            Target::AtLeast(x) => value >= x,
            Target::AtMost(x) => value <= x,
        })
    }
}

/// One TLS/plain comparison of the same figure measured in the same run.
struct Ratio {
    /// Its name in the JSON (`tls_vs_plain`).
    key: String,
    label: String,
    tls: f64,
    plain: f64,
    /// Unit of `tls` and `plain`, for the summary.
    unit: &'static str,
    target: Option<Target>,
}

impl Ratio {
    fn value(&self) -> f64 {
        self.tls / self.plain
    }
}

/// Every figure measured for both encryptions, as TLS / plain. Throughputs: above 1
/// means TLS is faster; times and memory: above 1 means TLS costs more.
fn tls_vs_plain(r: &Results) -> Vec<Ratio> {
    let mut v = Vec::new();
    let mut add = |key: String, label: String, unit, target, f: &dyn Fn(Encryption) -> f64| {
        let (tls, plain) = (f(Encryption::Tls), f(Encryption::Plain));
        if tls.is_finite() && plain.is_finite() {
            v.push(Ratio {
                key,
                label,
                tls,
                plain,
                unit,
                target,
            });
        }
    };
    let mut sizes: Vec<usize> = r.link.iter().map(|l| l.size).collect();
    sizes.dedup();
    for size in sizes {
        let target = (size >= 1024).then_some(Target::AtLeast(0.5));
        add(
            format!("link_{size}_msgs_per_sec"),
            format!("link {} msg/s", size_label(size)),
            "msg/s",
            target,
            &|enc| {
                r.link
                    .iter()
                    .find(|l| l.size == size && l.enc == enc)
                    .map_or(f64::NAN, |l| l.msgs_per_sec)
            },
        );
    }
    if let Some(res) = &r.rtt {
        add("rtt_p50".into(), "rtt p50".into(), "us", None, &|enc| {
            p50_us(res.node_times(enc))
        });
    }
    let mut nodes: Vec<usize> = r.broadcast.iter().map(|(l, _)| l.nodes).collect();
    nodes.dedup();
    for n in nodes {
        let pick = |enc: Encryption, f: fn(&Percentiles) -> Duration| {
            r.broadcast
                .iter()
                .find(|(l, _)| l.nodes == n && l.enc == enc)
                .and_then(|(l, _)| l.percentiles())
                .map_or(f64::NAN, |p| ms(f(&p)))
        };
        let target = (n >= 50).then_some(Target::AtMost(1.2));
        add(
            format!("broadcast_{n}_p50"),
            format!("broadcast p50, {n} nodes"),
            "ms",
            target,
            &|enc| pick(enc, |p| p.p50),
        );
        add(
            format!("broadcast_{n}_p99"),
            format!("broadcast p99, {n} nodes"),
            "ms",
            None,
            &|enc| pick(enc, |p| p.p99),
        );
    }
    add(
        "burst_msgs_per_sec".into(),
        "burst msg/s, slowest node".into(),
        "msg/s",
        None,
        &|enc| {
            r.burst
                .iter()
                .find(|b| b.enc == enc)
                .map_or(f64::NAN, BurstResult::msgs_per_sec_slowest)
        },
    );
    add("join_secs".into(), "join".into(), "s", None, &|enc| {
        r.join
            .iter()
            .find(|j| j.enc == enc)
            .map_or(f64::NAN, |j| j.convergence.elapsed.as_secs_f64())
    });
    add(
        "memory_per_link_kib".into(),
        "RSS per link".into(),
        "KiB",
        None,
        &|enc| {
            r.memory
                .iter()
                .find(|m| m.enc == enc)
                .map_or(f64::NAN, MemoryResult::per_link_kib)
        },
    );
    add(
        "handshake_p50".into(),
        "handshake p50".into(),
        "ms",
        None,
        &|enc| {
            r.handshake
                .iter()
                .find(|h| h.enc == enc)
                .and_then(HandshakeResult::percentiles)
                .map_or(f64::NAN, |p| ms(p.p50))
        },
    );
    add(
        "accept_storm_per_sec".into(),
        "accept storm handshakes/s".into(),
        "/s",
        None,
        &|enc| {
            r.storm
                .iter()
                .find(|s| s.enc == enc)
                .map_or(f64::NAN, StormResult::per_sec)
        },
    );
    v
}

fn print_summary(r: &Results) {
    heading("Summary against the targets");
    let mut t = Table::new(&[
        "figure",
        "enc",
        "measured",
        "target",
        "verdict",
        "reference",
    ]);
    for l in &r.link {
        let (target, reference) = match l.size {
            64 => (0.25, "C++ original: ~130 direct msg/s".to_string()),
            1024 => (0.5, "raw TCP here ~5.6 M msg/s".to_string()),
            _ => (0.5, "raw TCP here ~2.6 GB/s".to_string()),
        };
        let ratio = l.ratio();
        t.row(vec![
            format!("link {} ratio", size_label(l.size)),
            l.enc.as_str().into(),
            format!(
                "{} ({} msg/s, {} MB/s{})",
                fmt_f(ratio, 3),
                fmt_n(l.msgs_per_sec),
                fmt_f(l.mb_per_sec(), 0),
                if l.partial { ", partial" } else { "" }
            ),
            format!(">= {target}"),
            match (ratio.is_finite(), l.node_ok(), l.node_runs.len()) {
                (true, ok, runs) if ok < runs => format!(
                    "{}; only {ok}/{runs} runs delivered everything",
                    verdict(Some(ratio >= target))
                ),
                (finite, _, _) => verdict(finite.then_some(ratio >= target)),
            },
            reference,
        ]);
    }
    if let Some(res) = &r.rtt {
        for (enc, times) in &res.node {
            let ratio = rtt_ratio(res, *enc);
            t.row(vec![
                "rtt p50 ratio".into(),
                enc.as_str().into(),
                format!("{} ({} us)", fmt_f(ratio, 2), fmt_f(p50_us(times), 1)),
                "<= 1.5".into(),
                verdict(ratio.is_finite().then_some(ratio <= 1.5)),
                "raw ping-pong ~67 us".into(),
            ]);
        }
    }
    for (l, _) in &r.broadcast {
        let (target, reference) = match l.nodes {
            50 => (Some(3.0), "libp2p gossipsub p99 ~12 ms"),
            100 => (Some(6.0), "libp2p gossipsub p99 ~23 ms"),
            _ => (None, ""),
        };
        let p99 = l.percentiles().map_or(f64::NAN, |p| ms(p.p99));
        let complete = l.incomplete == 0;
        t.row(vec![
            format!("broadcast p99, {} nodes", l.nodes),
            l.enc.as_str().into(),
            format!(
                "{} ms{}",
                fmt_f(p99, 2),
                if complete { "" } else { " (incomplete)" }
            ),
            target.map_or("-".into(), |x| format!("< {x} ms")),
            match target {
                Some(x) => verdict(p99.is_finite().then_some(p99 < x && complete)),
                None => "-".into(),
            },
            reference.into(),
        ]);
    }
    for (l, _) in &r.broadcast_multi {
        let p99 = l.percentiles().map_or(f64::NAN, |p| ms(p.p99));
        t.row(vec![
            format!("broadcast p99, {} nodes, {} origins", l.nodes, l.origins),
            l.enc.as_str().into(),
            format!(
                "{} ms{}",
                fmt_f(p99, 2),
                if l.incomplete == 0 {
                    ""
                } else {
                    " (incomplete)"
                }
            ),
            "-".into(),
            "-".into(),
            "-".into(),
        ]);
    }
    for b in &r.burst {
        let rate = b.msgs_per_sec_slowest();
        t.row(vec![
            format!("burst, slowest of {}", b.nodes),
            b.enc.as_str().into(),
            format!(
                "{} msg/s, lost {}, dups {}",
                fmt_n(rate),
                b.lost,
                b.duplicates
            ),
            ">= 1,500 msg/s, 0 lost, 0 dups".into(),
            verdict(Some(
                b.complete && rate >= 1500.0 && b.lost == 0 && b.duplicates == 0,
            )),
            "libp2p gossipsub ~150 msg/s".into(),
        ]);
    }
    for j in &r.join {
        let secs = j.convergence.elapsed.as_secs_f64();
        t.row(vec![
            format!("join of {}", j.nodes),
            j.enc.as_str().into(),
            format!(
                "{} s{}",
                fmt_f(secs, 2),
                if j.convergence.at_target {
                    ""
                } else {
                    " (not converged)"
                }
            ),
            "< 2 s".into(),
            verdict(Some(j.convergence.at_target && secs < 2.0)),
            String::new(),
        ]);
    }
    for m in &r.memory {
        // The TLS session state has a budget of its own.
        let per_link_target = match m.enc {
            Encryption::Tls => 100.0,
            Encryption::Plain => 128.0,
        };
        t.row(vec![
            "idle RSS".into(),
            m.enc.as_str().into(),
            format!("{} KiB", m.idle_rss_kib),
            "< 4 MiB".into(),
            verdict(Some(m.idle_rss_kib < 4096)),
            String::new(),
        ]);
        t.row(vec![
            "RSS per link".into(),
            m.enc.as_str().into(),
            format!(
                "{} KiB ({} threads/link)",
                fmt_f(m.per_link_kib(), 1),
                fmt_f(m.threads_per_link(), 2)
            ),
            format!("< {per_link_target} KiB"),
            verdict(Some(m.per_link_kib() < per_link_target)),
            String::new(),
        ]);
    }
    for h in &r.handshake {
        let p = h.percentiles();
        let p50 = p.map_or(f64::NAN, |p| ms(p.p50));
        let target = (h.enc == Encryption::Tls).then_some(2.0);
        t.row(vec![
            "handshake p50 (p99)".into(),
            h.enc.as_str().into(),
            format!(
                "{} ms ({} ms, {}/{} samples)",
                fmt_f(p50, 3),
                fmt_f(p.map_or(f64::NAN, |p| ms(p.p99)), 3),
                h.times.len(),
                h.asked
            ),
            target.map_or("-".into(), |x| format!("< {x} ms")),
            target.map_or("-".into(), |x| verdict(p50.is_finite().then_some(p50 < x))),
            String::new(),
        ]);
    }
    for s in &r.storm {
        t.row(vec![
            format!("accept storm, {} dials", s.dials),
            s.enc.as_str().into(),
            format!(
                "{} handshakes/s, {} failed",
                fmt_n(s.per_sec()),
                s.failed + s.not_started
            ),
            "-".into(),
            "-".into(),
            String::new(),
        ]);
    }
    for x in tls_vs_plain(r) {
        t.row(vec![
            x.label.clone(),
            "tls/plain".into(),
            format!(
                "{} ({} vs {} {})",
                fmt_f(x.value(), 2),
                fmt_g(x.tls),
                fmt_g(x.plain),
                x.unit
            ),
            x.target.map_or("-".into(), Target::text),
            x.target.map_or("-".into(), |tg| verdict(tg.met(x.value()))),
            String::new(),
        ]);
    }
    t.print();
}

/// A figure of any size with sensible decimals.
fn fmt_g(x: f64) -> String {
    if x.abs() >= 1000.0 {
        fmt_n(x)
    } else if x.abs() >= 10.0 {
        fmt_f(x, 1)
    } else {
        fmt_f(x, 3)
    }
}

/// `target/bench/overlay.json` (under `CARGO_TARGET_DIR` when set).
fn json_path() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target"));
    target.join("bench").join("overlay.json")
}

fn write_json(path: &PathBuf, doc: &Value) {
    let written = path
        .parent()
        .map_or(Ok(()), std::fs::create_dir_all)
        .and_then(|()| {
            let text = serde_json::to_string_pretty(doc).unwrap_or_default();
            std::fs::write(path, text + "\n")
        });
    if let Err(e) = written {
        eprintln!("cannot write {}: {e}", path.display());
    }
}

fn to_json(plan: &Plan, r: &Results, total: Duration) -> Value {
    let pct = |times: &[Duration], f: fn(&Percentiles) -> Duration, unit: fn(Duration) -> f64| {
        Percentiles::of(times).map_or(f64::NAN, |p| unit(f(&p)))
    };
    let link: Vec<Value> = r
        .link
        .iter()
        .map(|l| {
            json!({
                "enc": l.enc.as_str(),
                "size": l.size, "msgs": l.count,
                "msgs_per_sec": l.msgs_per_sec,
                "baseline_msgs_per_sec": l.baseline_msgs_per_sec,
                "ratio": l.ratio(),
                "mb_per_sec": l.mb_per_sec(),
                "baseline_mb_per_sec": l.baseline_mb_per_sec(),
                "runs": l.node_runs.iter().map(|(x, _)| *x).collect::<Vec<f64>>(),
                "runs_complete": l.node_runs.iter().map(|(_, ok)| *ok).collect::<Vec<bool>>(),
                "partial": l.partial,
                "baseline_runs": l.baseline_runs,
                "node_runs_ok": l.node_ok(),
                "complete": l.errors.is_empty(),
            })
        })
        .collect();
    // One entry per encryption; the raw-TCP figures are the same in each.
    let rtt: Vec<Value> = r.rtt.as_ref().map_or(Vec::new(), |res| {
        res.node
            .iter()
            .map(|(enc, node)| {
                json!({
                    "enc": enc.as_str(),
                    "size": res.size, "trips": node.len(),
                    "p50_us": pct(node, |p| p.p50, us),
                    "p90_us": pct(node, |p| p.p90, us),
                    "p99_us": pct(node, |p| p.p99, us),
                    "baseline_p50_us": pct(&res.baseline, |p| p.p50, us),
                    "baseline_p90_us": pct(&res.baseline, |p| p.p90, us),
                    "baseline_p99_us": pct(&res.baseline, |p| p.p99, us),
                    "ratio": rtt_ratio(res, *enc),
                    "threaded_baseline_p50_us": pct(&res.floor, |p| p.p50, us),
                    "threaded_ratio": floor_ratio(res, *enc),
                    "complete": res.errors.is_empty(),
                })
            })
            .collect()
    });
    let latency_json = |(l, conv): &(LatencyResult, Convergence)| {
        json!({
            "enc": l.enc.as_str(),
            "nodes": l.nodes, "origins": l.origins, "msgs": l.sent,
            "p50_ms": pct(&l.times, |p| p.p50, ms),
            "p90_ms": pct(&l.times, |p| p.p90, ms),
            "p99_ms": pct(&l.times, |p| p.p99, ms),
            "max_ms": pct(&l.times, |p| p.max, ms),
            "flood_done_p50_ms": pct(&l.flood_done, |p| p.p50, ms),
            "copies_per_delivery": l.copies_per_delivery(),
            "duplicates_dropped_per_delivery": l.duplicates_per_delivery(),
            "double_deliveries": l.double_deliveries,
            "grafts": l.counters.grafts_sent,
            "max_hops": l.max_hops,
            "incomplete": l.incomplete,
            "formed_secs": conv.elapsed.as_secs_f64(),
            "mean_links": conv.mean_links,
            "connected": conv.connected,
        })
    };
    let broadcast: Vec<Value> = r.broadcast.iter().map(latency_json).collect();
    let broadcast_multi: Vec<Value> = r.broadcast_multi.iter().map(latency_json).collect();
    let burst: Vec<Value> = r
        .burst
        .iter()
        .map(|b| {
            json!({
                "enc": b.enc.as_str(),
                "nodes": b.nodes, "msgs": b.msgs,
                "msgs_per_sec_slowest": b.msgs_per_sec_slowest(),
                "lost": b.lost, "duplicates": b.duplicates,
                "slowest_secs": b.slowest.as_secs_f64(),
                "origin_send_secs": b.send_time.as_secs_f64(),
                "slow_peers_dropped": b.counters.slow_peers_dropped,
                "events_dropped": b.counters.events_dropped,
                "complete": b.complete,
            })
        })
        .collect();
    let join: Vec<Value> = r
        .join
        .iter()
        .map(|j| {
            json!({
                "enc": j.enc.as_str(),
                "nodes": j.nodes,
                "secs": j.convergence.elapsed.as_secs_f64(),
                "joins_secs": j.joins.as_secs_f64(),
                "at_target": j.convergence.at_target,
                "below_target": j.convergence.below_target,
            })
        })
        .collect();
    let memory: Vec<Value> = r
        .memory
        .iter()
        .map(|m| {
            json!({
                "enc": m.enc.as_str(),
                "idle_rss_kib": m.idle_rss_kib as f64,
                "per_link_kib": m.per_link_kib(),
                "threads_per_link": m.threads_per_link(),
                "links": m.links_up,
                "links_requested": m.links,
                "loaded_rss_kib": m.loaded_rss_kib as f64,
                "idle_threads": m.idle_threads,
                "loaded_threads": m.loaded_threads,
            })
        })
        .collect();
    let handshake: Vec<Value> = r
        .handshake
        .iter()
        .map(|h| {
            json!({
                "enc": h.enc.as_str(),
                "samples": h.times.len(),
                "samples_requested": h.asked,
                "p50_ms": pct(&h.times, |p| p.p50, ms),
                "p90_ms": pct(&h.times, |p| p.p90, ms),
                "p99_ms": pct(&h.times, |p| p.p99, ms),
                "max_ms": pct(&h.times, |p| p.max, ms),
                "slow_teardowns": h.slow_teardowns,
                "complete": h.errors.is_empty(),
            })
        })
        .collect();
    let storm: Vec<Value> = r
        .storm
        .iter()
        .map(|s| {
            json!({
                "enc": s.enc.as_str(),
                "dials": s.dials,
                "threads": s.threads,
                "linked": s.ok,
                "failed": s.failed,
                "not_started": s.not_started,
                "secs": s.elapsed.as_secs_f64(),
                "handshakes_per_sec": s.per_sec(),
                "dial_p50_ms": pct(&s.times, |p| p.p50, ms),
                "dial_p99_ms": pct(&s.times, |p| p.p99, ms),
                "target_links": s.target_links,
                "target_handshakes_failed": s.refusals.handshakes_failed,
                "target_refused_connections": s.refusals.refused_connections,
                "target_connections_refused_cap": s.refusals.connections_refused_cap,
                "target_refused_links": s.refusals.refused_links,
                "target_pending_evicted": s.refusals.pending_evicted,
                "target_links_evicted": s.refusals.links_evicted,
                "setup_secs": s.setup.as_secs_f64(),
            })
        })
        .collect();
    let ratios: serde_json::Map<String, Value> = tls_vs_plain(r)
        .iter()
        .map(|x| {
            (
                x.key.clone(),
                json!({
                    "ratio": x.value(), "tls": x.tls, "plain": x.plain, "unit": x.unit,
                    "target": x.target.map(Target::text),
                    "met": x.target.and_then(|tg| tg.met(x.value())),
                }),
            )
        })
        .collect();
    json!({
        "mode": if plan.quick { "quick" } else { "full" },
        "encryptions": plan.encs.iter().map(|e| e.as_str()).collect::<Vec<_>>(),
        "source": source_version(),
        "load_average_at_start": r.load_before,
        "other_cpu_percent": r.other_cpu.iter().map(|(n, p)| (n.clone(), json!(p)))
            .collect::<serde_json::Map<String, Value>>(),
        "total_secs": total.as_secs_f64(),
        "link": link, "rtt": rtt, "broadcast": broadcast,
        "broadcast_multi_origin": broadcast_multi, "burst": burst,
        "join": join, "memory": memory,
        "handshake": handshake, "accept_storm": storm,
        "tls_vs_plain": ratios,
        "notes": r.notes,
    })
}
