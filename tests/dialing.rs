//! Several `connect_to_peer` calls for one address at once share one dial: the calls
//! that find a dial running wait for it to end (no polling) and report its outcome,
//! and the peer sees exactly one connection.

mod common;

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant};

use common::*;
use p2p_overlay::p2p_message::{read_frame, Join, DEFAULT_MAX_FRAME, PROTOCOL_VERSION};
use p2p_overlay::{Error, HandshakeError, NodeId, P2PMessage};

/// How long the slow peer sits on a connection before it answers: long enough that
/// every caller finds the first dial still running.
const ANSWER_AFTER: Duration = Duration::from_millis(400);

/// A listener that answers each connection's JOIN after [`ANSWER_AFTER`] (or, with
/// `refuse`, closes it then), counting the connections it accepts. Stops (and closes
/// what it holds) when dropped.
struct SlowPeer {
    addr: SocketAddr,
    id: NodeId,
    accepted: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    thread: Option<thread::JoinHandle<()>>,
}

impl SlowPeer {
    fn start(refuse: bool) -> SlowPeer {
        let listener = TcpListener::bind((localhost(), 0)).expect("bind");
        listener.set_nonblocking(true).expect("nonblocking");
        let addr = listener.local_addr().expect("addr");
        let id = NodeId::random();
        let accepted = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (accepted, stop) = (Arc::clone(&accepted), Arc::clone(&stop));
            thread::spawn(move || {
                let mut held: Vec<TcpStream> = Vec::new();
                let deadline = Instant::now() + DEADLINE;
                while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
                    match listener.accept() {
                        Ok((mut s, _)) => {
                            accepted.fetch_add(1, Ordering::Relaxed);
                            let _ = s.set_nonblocking(false);
                            let _ = s.set_read_timeout(Some(DEADLINE));
                            // The node's JOIN comes first; then we take our time.
                            let _ = read_frame(&mut s, DEFAULT_MAX_FRAME);
                            thread::sleep(ANSWER_AFTER);
                            if refuse {
                                continue; // dropped: closed without a JOIN
                            }
                            let join = P2PMessage::Join(Join {
                                version: PROTOCOL_VERSION,
                                node_id: id,
                                listen_port: addr.port(),
                                network: default_network(),
                                advertise: None,
                                observed: None,
                            });
                            let _ = std::io::Write::write_all(&mut s, &join.encode());
                            held.push(s);
                        }
                        Err(_) => thread::sleep(Duration::from_millis(5)),
                    }
                }
            })
        };
        SlowPeer {
            addr,
            id,
            accepted,
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for SlowPeer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Calls `connect_to_peer(addr)` from `n` threads released at the same moment, and
/// collects their results, failing the test if any caller is still waiting after
/// [`DEADLINE`].
fn connect_from_threads(
    node: &Arc<p2p_overlay::Node>,
    addr: SocketAddr,
    n: usize,
) -> Vec<Result<p2p_overlay::PeerInfo, Error>> {
    let barrier = Arc::new(Barrier::new(n));
    let (tx, rx) = crossbeam_channel::unbounded();
    for _ in 0..n {
        let (node, barrier, tx) = (Arc::clone(node), Arc::clone(&barrier), tx.clone());
        thread::spawn(move || {
            barrier.wait();
            let _ = tx.send(node.connect_to_peer(addr));
        });
    }
    (0..n)
        .map(|i| {
            rx.recv_timeout(DEADLINE).unwrap_or_else(|_| {
                panic!("{i} of {n} callers returned within {DEADLINE:?}; the rest hang")
            })
        })
        .collect()
}

#[test]
fn concurrent_connects_to_one_address_share_one_dial() {
    let peer = SlowPeer::start(false);
    let a = start_node(|c| {
        plain(c);
        c.auto_dial = false;
    });
    let results = connect_from_threads(&a.node, peer.addr, 4);
    for r in &results {
        match r {
            Ok(info) => assert_eq!(info.node_id, peer.id, "{results:?}"),
            Err(e) => panic!("a caller failed: {e} ({results:?})"),
        }
    }
    assert_eq!(peer.accepted.load(Ordering::Relaxed), 1, "one dial only");
    assert_eq!(a.peers().len(), 1);
}

#[test]
fn callers_waiting_for_a_failed_dial_get_its_failure_not_a_hang() {
    let peer = SlowPeer::start(true);
    // Waiters that were not woken when the dial ended would wait out these (far past
    // the test's deadline) instead of returning with the dial.
    let a = start_node(|c| {
        plain(c);
        c.auto_dial = false;
        c.connect_timeout = Duration::from_secs(60);
        c.handshake_timeout = Duration::from_secs(60);
    });
    let results = connect_from_threads(&a.node, peer.addr, 4);
    let waited_for_other = results
        .iter()
        .filter(|r| {
            matches!(
                r,
                Err(Error::Handshake {
                    reason: HandshakeError::ConcurrentDialFailed,
                    ..
                })
            )
        })
        .count();
    let own = results
        .iter()
        .filter(|r| {
            matches!(
                r,
                Err(Error::Handshake {
                    reason: HandshakeError::ClosedEarly,
                    ..
                })
            )
        })
        .count();
    assert_eq!((own, waited_for_other), (1, 3), "{results:?}");
    assert_eq!(peer.accepted.load(Ordering::Relaxed), 1, "one dial only");
    assert!(a.peers().is_empty());
}
