//! The last line of defence against a hung run, and the check for a known library
//! deadlock.
//!
//! Every measurement already waits with deadlines, but a call into the library
//! (`info()`, `peers()`, ...) blocks for ever if a node has deadlocked on its own
//! mutex. So each section runs under a time limit ([`arm`]): a thread checks it every
//! 200 ms and, when it passes, prints which section hung, kills every child process
//! registered with [`register_pid`] (by PID), writes the JSON gathered so far with an
//! `"aborted"` field, and exits with status 3.
//!
//! [`peer_exchange_deadlocks`] probes the library once at start-up: two linked nodes
//! with a 1 s peer-exchange interval, then `info()` from a helper thread. See
//! docs/BENCHMARKS.md ("Known node bug") for what it detects.

use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crossbeam_channel::bounded;
use p2p_overlay::Node;
use serde_json::Value;

struct Armed {
    section: String,
    limit: Duration,
    deadline: Instant,
}

static ARMED: Mutex<Option<Armed>> = Mutex::new(None);
static PIDS: Mutex<Vec<u32>> = Mutex::new(Vec::new());
static PARTIAL: Mutex<Option<(PathBuf, Value)>> = Mutex::new(None);

/// Starts the watchdog thread (once).
pub fn start() {
    crate::support::spawn("watchdog", || loop {
        std::thread::sleep(Duration::from_millis(200));
        let expired = ARMED.lock().ok().and_then(|a| {
            a.as_ref()
                .filter(|a| Instant::now() >= a.deadline)
                .map(|a| (a.section.clone(), a.limit))
        });
        if let Some((section, limit)) = expired {
            abort(&section, limit);
        }
    });
}

/// Puts the next section under a time limit.
pub fn arm(section: &str, limit: Duration) {
    if let Ok(mut a) = ARMED.lock() {
        *a = Some(Armed {
            section: section.to_string(),
            limit,
            deadline: Instant::now() + limit,
        });
    }
}

pub fn disarm() {
    if let Ok(mut a) = ARMED.lock() {
        *a = None;
    }
}

/// A child process to kill if the run is aborted.
pub fn register_pid(pid: u32) {
    if let Ok(mut p) = PIDS.lock() {
        p.push(pid);
    }
}

pub fn unregister_pid(pid: u32) {
    if let Ok(mut p) = PIDS.lock() {
        p.retain(|&x| x != pid);
    }
}

/// The JSON document as written after the last completed section.
pub fn record_partial(path: PathBuf, doc: Value) {
    if let Ok(mut p) = PARTIAL.lock() {
        *p = Some((path, doc));
    }
}

fn abort(section: &str, limit: Duration) -> ! {
    println!(
        "\nWATCHDOG: section `{section}` still running after {limit:?}; a node is stuck \
         (see the notes). Aborting the run."
    );
    let pids = PIDS.lock().map(|p| p.clone()).unwrap_or_default();
    for pid in pids {
        let _ = std::process::Command::new("kill")
            .args(["-KILL", &pid.to_string()])
            .status();
    }
    if let Ok(Some((path, mut doc))) = PARTIAL.lock().map(|mut p| p.take()) {
        doc["aborted"] = Value::String(format!("section {section} exceeded {limit:?}"));
        let text = serde_json::to_string_pretty(&doc).unwrap_or_default();
        if std::fs::write(&path, text + "\n").is_ok() {
            println!("partial results written to {}", path.display());
        }
    }
    std::process::exit(3);
}

/// Whether a node with a link deadlocks once its periodic peer exchange runs. Two
/// nodes with a 1 s exchange interval are linked; 1.6 s later `info()` must return
/// within 3 s. Deadlocked nodes are leaked (their `stop` would never return).
pub fn peer_exchange_deadlocks() -> Result<bool, String> {
    let mut cfg = crate::support::default_local_config();
    cfg.peer_exchange_interval = Duration::from_secs(1);
    let a = Node::start(cfg.clone()).map_err(|e| e.to_string())?;
    let b = Node::start(cfg).map_err(|e| e.to_string())?;
    a.connect_to_peer(b.local_addr())
        .map_err(|e| e.to_string())?;
    std::thread::sleep(Duration::from_millis(1600));
    let (tx, rx) = bounded(1);
    let probe = std::sync::Arc::new(a);
    let p = std::sync::Arc::clone(&probe);
    crate::support::spawn("probe", move || {
        let _ = p.info();
        let _ = tx.send(());
    });
    let stuck = rx.recv_timeout(Duration::from_secs(3)).is_err();
    if stuck {
        std::mem::forget(probe);
        std::mem::forget(b);
    } else {
        crate::support::stop_all(vec![probe, std::sync::Arc::new(b)], Duration::from_secs(5));
    }
    Ok(stuck)
}
