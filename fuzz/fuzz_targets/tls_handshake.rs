//! Arbitrary bytes as the first bytes a TLS node receives, through the public API
//! only: one real node (TLS 1.3, the default) on 127.0.0.1 with an OS-chosen port,
//! started once for the whole run. Each input is written on a new connection, which
//! is then half-closed; the target reads until the node closes it (bounded by a short
//! timeout) and checks that the node is still running and answers `info()`.
//!
//! What this exercises: the node's TLS handshake driver (`transport/tls.rs`: the
//! first-byte plaintext check, rustls fed arbitrary records, the deadline) and, for
//! inputs rustls accepts as far as they go, everything up to the JOIN. A panic in a
//! connection thread would not crash the target by itself (threads unwind alone), so
//! the target also requires that the handshake-failure counter moves for every
//! input: every input must be judged and refused, none may leave a
//! connection hanging or be silently dropped (an empty input is a peer that hung up
//! before its first byte: counted too).
#![no_main]

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, Shutdown, TcpStream};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use libfuzzer_sys::fuzz_target;
use p2p_overlay::{Config, Node};

fn node() -> &'static Node {
    static NODE: OnceLock<Node> = OnceLock::new();
    NODE.get_or_init(|| {
        let mut c = Config::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 0);
        c.auto_dial = false;
        c.handshake_timeout = Duration::from_secs(1);
        Node::start(c).expect("node starts")
    })
}

fuzz_target!(|data: &[u8]| {
    let node = node();
    let before = node.info().counters.handshakes_failed;
    let addr = node.local_addr();
    let Ok(mut s) = TcpStream::connect_timeout(&addr, Duration::from_secs(2)) else {
        panic!("the node no longer accepts connections");
    };
    let _ = s.set_write_timeout(Some(Duration::from_secs(2)));
    // The node may refuse and close before all of it is written.
    let _ = s.write_all(data);
    let _ = s.shutdown(Shutdown::Write);
    let deadline = Instant::now() + Duration::from_secs(3);
    let mut buf = [0u8; 4096];
    let closed = loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break false;
        }
        let _ = s.set_read_timeout(Some(left));
        match s.read(&mut buf) {
            Ok(0) => break true,
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                break false
            }
            Err(_) => break true,
        }
    };
    assert!(
        closed,
        "the node kept a connection open after its handshake timeout"
    );
    assert!(node.is_running());
    let deadline = Instant::now() + Duration::from_secs(2);
    while node.info().counters.handshakes_failed == before && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(1));
    }
    assert!(
        node.info().counters.handshakes_failed > before,
        "an input was not counted as a failed handshake"
    );
});
