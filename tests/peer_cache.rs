//! The persistent peer cache through the library: a restarted node rejoins from its
//! file, and no bad file stops a node from starting.

use std::fs;
use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use p2p_overlay::peer_cache::{self, HEADER};
use p2p_overlay::{Config, Node};

const DEADLINE: Duration = Duration::from_secs(20);

fn config(peers_file: Option<&Path>) -> Config {
    let mut c = Config::new("127.0.0.1".parse().expect("ip"), 0);
    c.peers_file = peers_file.map(Path::to_path_buf);
    c
}

/// Polls `cond` every 10 ms until it holds or the deadline passes.
fn eventually(mut cond: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + DEADLINE;
    while Instant::now() < end {
        if cond() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    cond()
}

fn linked_to(node: &Node, addr: SocketAddr) -> bool {
    node.peers().iter().any(|p| p.addr == addr)
}

#[test]
fn restarted_node_rejoins_from_its_file_without_bootstrap() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("peers.txt");
    let seed = Node::start(config(None)).expect("seed");

    // First run: joined through the seed, then stopped (which writes the file).
    let first = Node::start(config(Some(&file))).expect("first run");
    first.connect_to_peer(seed.local_addr()).expect("join");
    first.stop();
    let loaded = peer_cache::load(&file).expect("file written on stop");
    assert!(
        loaded.addrs.iter().any(|a| a.addr == seed.local_addr()),
        "{loaded:?}"
    );
    assert!(loaded.addrs.iter().all(|a| a.last_success.is_some()));

    // Second run: no connect_to_peer call at all.
    let second = Node::start(config(Some(&file))).expect("second run");
    assert!(
        eventually(|| linked_to(&second, seed.local_addr())),
        "restarted node did not rejoin: {:?}",
        second.peers()
    );
}

#[test]
fn file_is_rewritten_on_a_timer_and_never_holds_own_address() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("state").join("peers.txt");
    let seed = Node::start(config(None)).expect("seed");
    let mut c = config(Some(&file));
    c.peers_file_interval = Duration::from_millis(50);
    let node = Node::start(c).expect("node");
    node.connect_to_peer(seed.local_addr()).expect("join");
    assert!(
        eventually(|| peer_cache::load(&file)
            .map(|l| l.addrs.iter().any(|a| a.addr == seed.local_addr()))
            .unwrap_or(false)),
        "the timer never wrote the file (folder created on demand)"
    );
    let loaded = peer_cache::load(&file).expect("load");
    assert!(loaded
        .addrs
        .iter()
        .all(|a| a.addr != node.local_addr() && a.addr != node.advertised_addr()));
}

#[test]
fn bad_files_never_stop_a_node() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("empty", Vec::new()),
        (
            "garbage",
            b"\x00\xff\xfe\x01 not a cache at all \x7f".to_vec(),
        ),
        ("no header", b"127.0.0.1:1\n".to_vec()),
        (
            "truncated",
            format!("{HEADER}\n127.0.0.1:1 seen=17641152").into_bytes(),
        ),
        (
            "bad lines",
            format!("{HEADER}\nnot-an-address\n127.0.0.1:1 failures=many\n").into_bytes(),
        ),
    ];
    for (what, bytes) in cases {
        let file = dir.path().join(format!("{what}.txt"));
        fs::write(&file, bytes).expect("write case");
        let node = Node::start(config(Some(&file))).unwrap_or_else(|e| panic!("{what}: {e}"));
        assert_eq!(
            node.info().known_addrs,
            0,
            "{what}: nothing usable was in it"
        );
        node.stop();
        // The node rewrites a clean file on stop.
        let reloaded = peer_cache::load(&file).unwrap_or_else(|e| panic!("{what}: {e}"));
        assert!(reloaded.skipped.is_empty(), "{what}: {reloaded:?}");
    }
    // Missing, and a folder where the file should be (unreadable).
    let node = Node::start(config(Some(&dir.path().join("missing.txt")))).expect("missing");
    node.stop();
    let folder = dir.path().join("a-folder");
    fs::create_dir(&folder).expect("mkdir");
    let node = Node::start(config(Some(&folder))).expect("unreadable");
    node.stop(); // cannot write either: a warning, no panic
}

#[test]
fn unwritable_location_is_a_warning_not_a_failure() {
    let dir = tempfile::tempdir().expect("tempdir");
    // A regular file where the cache folder should be: create_dir_all fails.
    let blocker = dir.path().join("blocker");
    fs::write(&blocker, b"x").expect("write");
    let mut c = config(Some(&blocker.join("peers.txt")));
    c.peers_file_interval = Duration::from_millis(20);
    let node = Node::start(c).expect("starts anyway");
    let other = Node::start(config(None)).expect("other");
    node.connect_to_peer(other.local_addr())
        .expect("still works");
    // The first heartbeat round trip takes a second: dozens of failed timer writes.
    assert!(eventually(|| node.peers().iter().any(|p| p.rtt.is_some())));
    assert!(node.is_running());
    assert_eq!(node.peers().len(), 1);
}

#[test]
fn file_is_bounded_by_the_address_book() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("peers.txt");
    let mut text = format!("{HEADER}\n");
    for i in 0..3000u32 {
        text.push_str(&format!("127.0.{}.{}:{}\n", i / 250, 1 + i % 250, 1000 + i));
    }
    fs::write(&file, text).expect("write");
    let mut c = config(Some(&file));
    c.auto_dial = false; // nobody listens there; this test only counts
    c.max_known_addrs = 1000;
    let node = Node::start(c).expect("node");
    assert_eq!(node.info().known_addrs, 1000);
    node.stop();
    assert_eq!(peer_cache::load(&file).expect("load").addrs.len(), 1000);
}

#[test]
fn addresses_that_keep_failing_are_dropped() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("peers.txt");
    // A port with nobody listening: take one from the OS and close it again.
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr")
    };
    fs::write(
        &file,
        format!("{HEADER}\n{dead} seen=1 success=1 failures=7\n"),
    )
    .expect("write");
    let node = Node::start(config(Some(&file))).expect("node");
    // One more refused dial reaches the limit of 8 and the address is forgotten.
    assert!(
        eventually(|| node.known_addrs().iter().all(|k| k.addr != dead)),
        "{:?}",
        node.known_addrs()
    );
    node.stop();
    let loaded = peer_cache::load(&file).expect("load");
    assert!(loaded.addrs.iter().all(|a| a.addr != dead));
}
