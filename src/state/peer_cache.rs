//! The persistent peer cache: known addresses saved to a small text file, so a node
//! that restarts finds its overlay without a bootstrap address (Bitcoin Core's
//! `peers.dat` plays the same part). The C++ original forgot everything at exit.
//!
//! The file is plain text, one address per line, so a person can read and edit it:
//!
//! ```text
//! # p2p-overlay peer cache v1
//! 127.0.0.1:9001 seen=1764115200 success=1764115200 failures=0 id=9f86d081884c7d65
//! 10.0.0.7:9000 seen=1764115100 success=- failures=2
//! 192.168.1.20:9000
//! ```
//!
//! - The first line must be the header; a file without it is not a peer cache.
//! - `seen` and `success` are Unix times in seconds (`-` for never); `failures` counts
//!   failed dials since the last success; `id` (16 hex digits, absent when unknown)
//!   is the node id last proven at the address, which the next dial expects in the
//!   peer's certificate (files written before ids existed load without). Every field after the address is optional
//!   and unknown `key=value` fields are ignored, so a hand-written address alone works.
//! - Lines starting with `#` and blank lines are ignored. A line that does not parse is
//!   skipped with a warning; so is a last line without its newline (a cut-off write).
//!
//! Writes are atomic: a temporary file in the same folder is written, fsynced and
//! renamed over the old one, then the folder is fsynced, so a crash or `kill -9` at any
//! moment leaves the old file or the new one, never a torn one. Nothing here is fatal:
//! a cache that cannot be read means starting without one, a cache that cannot be
//! written means a warning, and the node runs on either way.

use std::fmt;
use std::fs;
use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::p2p_message::NodeId;

/// The first line of every cache file.
pub const HEADER: &str = "# p2p-overlay peer cache v1";

/// One remembered address.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CachedAddr {
    /// The node's listen address.
    pub addr: SocketAddr,
    /// When it was last heard of or linked.
    pub last_seen: Option<SystemTime>,
    /// When a handshake with it last succeeded.
    pub last_success: Option<SystemTime>,
    /// Failed dials since the last success.
    pub failures: u32,
    /// The node id last proven at `addr`, if known (`id=` in the file).
    pub id: Option<NodeId>,
}

/// What was read from a cache file.
#[derive(Debug, Default)]
pub struct Loaded {
    /// The addresses, in file order.
    pub addrs: Vec<CachedAddr>,
    /// Line numbers (1-based) that were skipped, with why.
    pub skipped: Vec<(usize, String)>,
}

/// Why a cache file could not be used at all.
#[derive(Debug)]
pub enum CacheError {
    /// There is no file yet (the first run).
    Missing(PathBuf),
    /// The file exists but cannot be read.
    Unreadable {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: io::Error,
    },
    /// The file is empty.
    Empty(PathBuf),
    /// The file does not start with [`HEADER`] (or is not text).
    NotACache(PathBuf),
}

impl fmt::Display for CacheError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CacheError::Missing(p) => write!(f, "no peer cache at {} yet", p.display()),
            CacheError::Unreadable { path, source } => {
                write!(f, "cannot read peer cache {}: {source}", path.display())
            }
            CacheError::Empty(p) => write!(f, "peer cache {} is empty", p.display()),
            CacheError::NotACache(p) => write!(
                f,
                "{} is not a peer cache (first line is not {HEADER:?})",
                p.display()
            ),
        }
    }
}

impl std::error::Error for CacheError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            CacheError::Unreadable { source, .. } => Some(source),
            _ => None,
        }
    }
}

/// The default cache file of a node listening on `port`:
/// `$XDG_STATE_HOME/p2p-overlay/peers-<port>.txt`, else
/// `$HOME/.local/state/p2p-overlay/peers-<port>.txt`. `None` when neither variable is
/// set, and for port 0, whose next run gets another port and so is another node.
pub fn default_path(port: u16) -> Option<PathBuf> {
    crate::identity::state_dir(port).map(|d| d.join(format!("peers-{port}.txt")))
}

/// Reads a cache file. Bad lines are skipped and listed in [`Loaded::skipped`]; only a
/// file that cannot be a cache at all is an error. Temporary files that a killed
/// writer left beside it are removed.
pub fn load(path: &Path) -> Result<Loaded, CacheError> {
    remove_stale_temporaries(path);
    let bytes = match fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Err(CacheError::Missing(path.to_path_buf()))
        }
        Err(source) => {
            return Err(CacheError::Unreadable {
                path: path.to_path_buf(),
                source,
            })
        }
    };
    parse(&bytes).map_err(|kind| match kind {
        ParseFailure::Empty => CacheError::Empty(path.to_path_buf()),
        ParseFailure::NoHeader => CacheError::NotACache(path.to_path_buf()),
    })
}

enum ParseFailure {
    Empty,
    NoHeader,
}

fn parse(bytes: &[u8]) -> Result<Loaded, ParseFailure> {
    if bytes.is_empty() {
        return Err(ParseFailure::Empty);
    }
    let text = String::from_utf8_lossy(bytes);
    let mut lines = text.split_inclusive('\n').enumerate();
    match lines.next() {
        Some((_, first)) if first.trim_end() == HEADER => {}
        _ => return Err(ParseFailure::NoHeader),
    }
    let mut loaded = Loaded::default();
    for (i, raw) in lines {
        let n = i + 1;
        if !raw.ends_with('\n') {
            loaded
                .skipped
                .push((n, "last line is cut off (no newline)".into()));
            continue;
        }
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        match parse_line(line) {
            Ok(a) => loaded.addrs.push(a),
            Err(why) => loaded.skipped.push((n, why)),
        }
    }
    Ok(loaded)
}

fn parse_line(line: &str) -> Result<CachedAddr, String> {
    let mut words = line.split_whitespace();
    let addr_text = words.next().unwrap_or_default();
    let addr: SocketAddr = addr_text
        .parse()
        .map_err(|_| format!("{addr_text:?} is not an ip:port address"))?;
    let mut entry = CachedAddr {
        addr,
        last_seen: None,
        last_success: None,
        failures: 0,
        id: None,
    };
    for w in words {
        let Some((key, value)) = w.split_once('=') else {
            return Err(format!("{w:?} is not key=value"));
        };
        match key {
            "seen" => entry.last_seen = parse_time(value)?,
            "success" => entry.last_success = parse_time(value)?,
            "failures" => {
                entry.failures = value
                    .parse()
                    .map_err(|_| format!("failures={value:?} is not a number"))?
            }
            "id" => {
                let id = u64::from_str_radix(value, 16)
                    .ok()
                    .filter(|_| value.len() == 16)
                    .ok_or_else(|| format!("id={value:?} is not 16 hex digits"))?;
                entry.id = Some(NodeId(id));
            }
            _ => {} // a later version's field
        }
    }
    Ok(entry)
}

fn parse_time(v: &str) -> Result<Option<SystemTime>, String> {
    if v == "-" {
        return Ok(None);
    }
    let secs: u64 = v
        .parse()
        .map_err(|_| format!("{v:?} is not a Unix time or -"))?;
    Ok(UNIX_EPOCH.checked_add(Duration::from_secs(secs)))
}

fn fmt_time(t: Option<SystemTime>) -> String {
    match t.and_then(|t| t.duration_since(UNIX_EPOCH).ok()) {
        Some(d) => d.as_secs().to_string(),
        None => "-".into(),
    }
}

/// The file's text for `addrs`.
pub fn render(addrs: &[CachedAddr]) -> String {
    let mut s = String::with_capacity(64 + addrs.len() * 64);
    s.push_str(HEADER);
    s.push('\n');
    for a in addrs {
        s.push_str(&format!(
            "{} seen={} success={} failures={}",
            a.addr,
            fmt_time(a.last_seen),
            fmt_time(a.last_success),
            a.failures
        ));
        if let Some(id) = a.id {
            s.push_str(&format!(" id={id}"));
        }
        s.push('\n');
    }
    s
}

/// The folder of the cache file and the prefix of its temporary files.
fn temporary_prefix(path: &Path) -> (PathBuf, String) {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "peers".into());
    (dir, format!(".{name}.tmp-"))
}

fn remove_stale_temporaries(path: &Path) {
    let (dir, prefix) = temporary_prefix(path);
    let Ok(entries) = fs::read_dir(&dir) else {
        return;
    };
    for e in entries.flatten() {
        if e.file_name().to_string_lossy().starts_with(&prefix) {
            let _ = fs::remove_file(e.path());
        }
    }
}

/// Writes the cache atomically (see the module doc), creating the folder if needed.
/// The same writer as the identity key's: the cache says whom the node talks to, so it
/// is private to its owner too (mode 0600).
pub fn save(path: &Path, addrs: &[CachedAddr]) -> io::Result<()> {
    crate::identity::write_secret_file(path, render(addrs).as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(addr: &str, secs: Option<u64>, failures: u32) -> CachedAddr {
        let t = secs.map(|s| UNIX_EPOCH + Duration::from_secs(s));
        CachedAddr {
            addr: addr.parse().expect("addr"),
            last_seen: t,
            last_success: t,
            failures,
            id: None,
        }
    }

    #[test]
    fn ids_round_trip_and_old_lines_load_without() {
        let mut with_id = entry("127.0.0.1:9001", Some(1_764_115_200), 0);
        with_id.id = Some(NodeId(0x9f86_d081_884c_7d65));
        let text = render(&[with_id.clone(), entry("10.0.0.7:9000", None, 2)]);
        assert!(text.contains(
            "127.0.0.1:9001 seen=1764115200 success=1764115200 failures=0 id=9f86d081884c7d65\n"
        ));
        assert!(text.contains("10.0.0.7:9000 seen=- success=- failures=2\n"));
        let loaded = parse(text.as_bytes()).ok().expect("parses");
        assert_eq!(loaded.addrs[0], with_id);
        assert_eq!(loaded.addrs[1].id, None);
        let bad = format!("{HEADER}\n127.0.0.1:1 id=12\n127.0.0.1:2 id=zz00000000000000\n");
        let loaded = parse(bad.as_bytes()).ok().expect("parses");
        assert!(loaded.addrs.is_empty());
        assert_eq!(loaded.skipped.len(), 2);
    }

    #[test]
    fn round_trip() {
        let v = vec![
            entry("127.0.0.1:9001", Some(1_764_115_200), 0),
            entry("[::1]:9002", None, 3),
        ];
        let text = render(&v);
        assert!(text.starts_with(HEADER));
        let loaded = parse(text.as_bytes()).ok().expect("parses");
        assert_eq!(loaded.addrs, v);
        assert!(loaded.skipped.is_empty());
    }

    #[test]
    fn hand_written_lines_and_comments() {
        let text = format!("{HEADER}\n\n# mine\n10.0.0.1:9000\n10.0.0.2:9000 color=blue\n");
        let loaded = parse(text.as_bytes()).ok().expect("parses");
        assert_eq!(loaded.addrs.len(), 2);
        assert_eq!(loaded.addrs[0].failures, 0);
        assert!(loaded.skipped.is_empty());
    }

    #[test]
    fn bad_lines_are_skipped_not_fatal() {
        let text =
            format!("{HEADER}\nnonsense\n10.0.0.1:9000 failures=x\n10.0.0.2:9000\n10.0.0.3:90");
        let loaded = parse(text.as_bytes()).ok().expect("parses");
        assert_eq!(loaded.addrs.len(), 1, "{loaded:?}");
        assert_eq!(loaded.skipped.len(), 3, "{loaded:?}");
        assert_eq!(loaded.skipped[2].0, 5);
    }

    #[test]
    fn empty_and_garbage_files_are_refused() {
        assert!(matches!(parse(b""), Err(ParseFailure::Empty)));
        assert!(matches!(
            parse(b"\x00\xff\x13garbage"),
            Err(ParseFailure::NoHeader)
        ));
        assert!(matches!(
            parse(b"10.0.0.1:9000\n"),
            Err(ParseFailure::NoHeader)
        ));
    }

    #[test]
    fn default_path_is_per_port_and_none_for_port_0() {
        assert_eq!(default_path(0), None);
        if let Some(p) = default_path(9001) {
            assert!(p.ends_with("p2p-overlay/peers-9001.txt"), "{}", p.display());
        }
    }

    #[test]
    fn save_then_load_through_the_file_system() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("sub").join("peers.txt");
        let v = vec![entry("127.0.0.1:9001", Some(5), 1)];
        save(&path, &v).expect("save");
        assert_eq!(load(&path).expect("load").addrs, v);
        // No temporary file is left behind.
        let names: Vec<_> = fs::read_dir(path.parent().expect("dir"))
            .expect("read_dir")
            .map(|e| e.expect("entry").file_name())
            .collect();
        assert_eq!(names.len(), 1, "{names:?}");
        assert!(matches!(
            load(&dir.path().join("none.txt")),
            Err(CacheError::Missing(_))
        ));
    }
}
