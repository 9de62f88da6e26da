//! What a node remembers, as plain data: no locks, no sockets, no threads. Each type
//! here is owned by one module above (the link manager or a protocol), which puts it
//! behind its own lock and does the I/O the data asks for.

pub(crate) mod eviction;
pub mod known_addrs;
pub(crate) mod net;
pub(crate) mod observed;
pub mod peer_cache;
pub(crate) mod peer_table;
pub(crate) mod rate_limit;
pub(crate) mod replay;
pub(crate) mod seen_cache;
pub(crate) mod stats;
