//! The last line of defence against a hung run.
//!
//! Every measurement already waits with deadlines, but a call into the library
//! (`info()`, `peers()`, ...) blocks for ever if a node has deadlocked on its own
//! mutex. So each section runs under a time limit ([`arm`]): a thread checks it every
//! 200 ms and, when it passes, prints which section hung, kills every child process
//! registered with [`register_pid`] (by PID), writes the JSON gathered so far with an
//! `"aborted"` field, and exits with status 3.

use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{Duration, Instant};

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
