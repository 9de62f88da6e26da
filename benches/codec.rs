//! `cargo bench --bench codec`: criterion micro-benchmarks of the wire codec
//! (`p2p_overlay::p2p_message`), per message type and size, with no sockets involved.
//!
//! - `encode/<msg>`: `P2PMessage::encode`, the whole frame with its length prefix, into
//!   a fresh `Vec` (what the node does once per message sent or forwarded).
//! - `decode/<msg>`: `P2PMessage::decode` of one frame without its prefix (what a
//!   reader thread does for every frame; includes the UTF-8 check and the `String`
//!   copy of the text).
//! - `read_frame/<msg>`: `read_frame` from an in-memory reader, i.e. the length check
//!   and the body allocation and copy, without the socket.
//!
//! Throughput is in bytes of the encoded frame. Messages: JOIN (typical, IPv4
//! observed address), DATA and BROADCAST with 64 B, 1 KiB and 64 KiB texts, PING,
//! PONG, PEERS with 8 and 128 IPv4 addresses, LEAVE. Criterion runs 1 s warm-up and
//! 2 s of measurement per benchmark (about 2 minutes in all); `-- --quick` is
//! criterion's own faster mode, and a filter (`-- decode/data`) runs a subset.

use std::hint::black_box;
use std::io::Cursor;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use p2p_overlay::p2p_message::{
    read_frame, Announcement, Broadcast, Join, DEFAULT_MAX_FRAME, LEN_PREFIX, PROTOCOL_VERSION,
};
use p2p_overlay::{NodeId, P2PMessage};

const SIZES: [(usize, &str); 3] = [(64, "64B"), (1024, "1KiB"), (64 * 1024, "64KiB")];

fn text(size: usize) -> String {
    "x".repeat(size)
}

fn addr(i: usize) -> SocketAddr {
    SocketAddr::new(
        IpAddr::V4(Ipv4Addr::new(10, 0, (i / 250) as u8, (i % 250) as u8 + 1)),
        9000 + i as u16,
    )
}

/// Every message the benchmarks use, with its name.
fn messages() -> Vec<(String, P2PMessage)> {
    let mut v = vec![(
        "join".to_string(),
        P2PMessage::Join(Join {
            version: PROTOCOL_VERSION,
            node_id: NodeId(0x0123_4567_89ab_cdef),
            listen_port: 9000,
            network: "p2p-overlay".into(),
            advertise: Some(IpAddr::V4(Ipv4Addr::new(192, 168, 1, 20))),
            observed: Some(IpAddr::V4(Ipv4Addr::new(192, 168, 1, 21))),
        }),
    )];
    for (size, name) in SIZES {
        v.push((
            format!("data_{name}"),
            P2PMessage::Data { text: text(size) },
        ));
    }
    v.push(("ping".into(), P2PMessage::Ping { nonce: 123_456_789 }));
    v.push(("pong".into(), P2PMessage::Pong { nonce: 123_456_789 }));
    for n in [8, 128] {
        v.push((format!("peers_{n}"), P2PMessage::peers((0..n).map(addr))));
    }
    for (size, name) in SIZES {
        v.push((
            format!("broadcast_{name}"),
            P2PMessage::Broadcast(Broadcast {
                origin: NodeId(0xfeed_beef),
                seq: 42,
                hops: 3,
                origin_addr: addr(7),
                // Placeholders: the codec's cost does not depend on their value.
                public_key: [0x5a; 32],
                signature: [0xa5; 64],
                text: text(size),
            }),
        ));
    }
    v.push(("leave".into(), P2PMessage::Leave));
    for n in [8u64, 1024] {
        v.push((
            format!("ihave_{n}"),
            P2PMessage::IHave {
                ids: (0..n)
                    .map(|i| Announcement {
                        id: (NodeId(i), i),
                        hops: 2,
                    })
                    .collect(),
            },
        ));
    }
    v.push((
        "graft_8".into(),
        P2PMessage::Graft {
            ids: (0..8).map(|i| (NodeId(i), i)).collect(),
        },
    ));
    v.push((
        "prune".into(),
        P2PMessage::Prune {
            origin: NodeId(0xfeed_beef),
        },
    ));
    v
}

fn encode(c: &mut Criterion) {
    let mut g = c.benchmark_group("encode");
    for (name, msg) in messages() {
        g.throughput(Throughput::Bytes(msg.encoded_len() as u64));
        g.bench_with_input(BenchmarkId::from_parameter(&name), &msg, |b, m| {
            b.iter(|| black_box(m).encode())
        });
    }
    g.finish();
}

fn decode(c: &mut Criterion) {
    let mut g = c.benchmark_group("decode");
    for (name, msg) in messages() {
        let frame = msg.encode();
        let body = &frame[LEN_PREFIX..];
        assert_eq!(P2PMessage::decode(body).expect("decodes"), msg, "{name}");
        g.throughput(Throughput::Bytes(frame.len() as u64));
        g.bench_with_input(BenchmarkId::from_parameter(&name), body, |b, f| {
            b.iter(|| P2PMessage::decode(black_box(f)))
        });
    }
    g.finish();
}

fn read_frames(c: &mut Criterion) {
    let mut g = c.benchmark_group("read_frame");
    for (name, msg) in messages()
        .into_iter()
        .filter(|(n, _)| n.starts_with("data") || n == "ping")
    {
        let frame = msg.encode();
        g.throughput(Throughput::Bytes(frame.len() as u64));
        g.bench_with_input(BenchmarkId::from_parameter(&name), &frame, |b, f| {
            b.iter(|| {
                let mut r = Cursor::new(black_box(f.as_slice()));
                read_frame(&mut r, DEFAULT_MAX_FRAME)
            })
        });
    }
    g.finish();
}

fn config() -> Criterion {
    Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(2))
        .sample_size(50)
}

criterion_group! {
    name = codec;
    config = config();
    targets = encode, decode, read_frames
}
criterion_main!(codec);
