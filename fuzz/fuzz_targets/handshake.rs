//! Arbitrary bytes as the first bytes of a new connection, judged the way a node's
//! handshake judges them (src/peer_connection.rs `handshake` and `run_link`), through
//! the public API only: one frame of at most `MAX_JOIN_FRAME` bytes, which must decode
//! to a JOIN of our version and network, not carrying our id, with a listen port; the
//! peer is then listed at `advertise or the socket's IP : listen port`.
#![no_main]

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use libfuzzer_sys::fuzz_target;
use p2p_overlay::known_addrs::is_dialable;
use p2p_overlay::p2p_message::{read_frame, MAX_JOIN_FRAME, PROTOCOL_VERSION};
use p2p_overlay::{Config, NodeId, P2PMessage};

const OUR_ID: NodeId = NodeId(0x0123_4567_89ab_cdef);

fuzz_target!(|data: &[u8]| {
    let network = Config::default().network;
    let remote = IpAddr::V4(Ipv4Addr::LOCALHOST);
    let mut r = data;
    let frame = match read_frame(&mut r, MAX_JOIN_FRAME) {
        Ok(Some(f)) => f,
        Ok(None) | Err(_) => return, // closed before JOIN, or malformed: refused
    };
    assert!(frame.len() <= MAX_JOIN_FRAME as usize);
    let join = match P2PMessage::decode(&frame) {
        Ok(P2PMessage::Join(j)) => j,
        Ok(_) | Err(_) => return, // anything but a JOIN first: refused
    };
    if join.version != PROTOCOL_VERSION
        || join.network != network
        || join.node_id == OUR_ID
        || join.listen_port == 0
    {
        return; // refused
    }
    // Accepted: the address the peer is listed and dialled at.
    assert!(join.network.len() <= 64);
    let addr = SocketAddr::new(join.advertise.unwrap_or(remote), join.listen_port);
    assert_ne!(addr.port(), 0);
    let _ = is_dialable(&addr);
    // Our JOIN back always fits the limit the peer applies.
    let ours = P2PMessage::Join(p2p_overlay::p2p_message::Join {
        version: PROTOCOL_VERSION,
        node_id: OUR_ID,
        listen_port: 9000,
        network,
        advertise: join.observed,
        observed: Some(addr.ip()),
    });
    assert!(ours.encode().len() <= MAX_JOIN_FRAME as usize + 4);
});
