//! The node's counters, named once.
//!
//! Each counter is declared in the one list at the bottom of this file, with its doc
//! comment. The macro turns the list into the atomics the node's threads bump
//! ([`Stats`]), the public snapshot [`Counters`] that [`NodeInfo`](crate::NodeInfo)
//! carries, and [`Counters::list`], which yields every counter with its name and help
//! text in list order: the binary's `info` prints from it, and a metrics page can
//! export from it, so adding a counter here is the whole change.

use std::sync::atomic::{AtomicU64, Ordering};

/// One counter of a [`Counters`] snapshot, for generic output (`info`, metrics).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Counter {
    /// The field name, `snake_case`, stable: scripts and metrics rely on it.
    pub name: &'static str,
    /// What it counts (the field's doc comment, on one line).
    pub help: &'static str,
    /// Its value when the snapshot was taken.
    pub value: u64,
}

macro_rules! counters {
    ($( $(#[doc = $doc:literal])+ $name:ident, )+) => {
        /// Every counter of the node, copied at one moment. Counters only grow.
        #[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
        #[non_exhaustive]
        pub struct Counters {
            $( $(#[doc = $doc])+ pub $name: u64, )+
        }

        impl Counters {
            /// Every counter with its name and help text, in a fixed order.
            pub fn list(&self) -> Vec<Counter> {
                vec![$(
                    Counter {
                        name: stringify!($name),
                        help: concat!($($doc),+).trim_start(),
                        value: self.$name,
                    },
                )+]
            }
        }

        /// The live counters, bumped without a lock by whichever thread sees the
        /// event.
        #[derive(Default)]
        pub(crate) struct Stats {
            $( pub(crate) $name: AtomicU64, )+
        }

        impl Stats {
            /// A copy of every counter.
            pub(crate) fn snapshot(&self) -> Counters {
                Counters {
                    $( $name: self.$name.load(Ordering::Relaxed), )+
                }
            }
        }
    };
}

/// Adds `n` to a counter and returns its value before.
pub(crate) fn add(counter: &AtomicU64, n: u64) -> u64 {
    counter.fetch_add(n, Ordering::Relaxed)
}

counters! {
    /// Broadcasts delivered to the application (own ones excluded).
    broadcasts_delivered,
    /// Broadcast copies dropped because they had been seen already.
    duplicates_dropped,
    /// Broadcast frames queued for forwarding to neighbours (others' broadcasts, and
    /// broadcasts a neighbour asked for with GRAFT).
    frames_forwarded,
    /// Every broadcast frame this node queued: its own broadcasts' copies plus
    /// `frames_forwarded`. Summed over an overlay, it equals deliveries plus
    /// duplicates once every copy has arrived.
    broadcast_frames_sent,
    /// Broadcasts asked for with GRAFT because the tree did not bring them in time
    /// (a tree link or node failed, or the tree is still forming).
    grafts_sent,
    /// Peers dropped because their outbound queue stayed full.
    slow_peers_dropped,
    /// Of `slow_peers_dropped`, the peers whose data queue was full by its byte budget
    /// (`queue_bytes`) rather than by its frame count.
    queue_budget_drops,
    /// Peers dropped because one send to them made no progress for the write timeout
    /// (twice the peer timeout): they stopped reading.
    not_reading_drops,
    /// Events dropped because the application did not consume them.
    events_dropped,
    /// Messages whose delivery waited because the text of the events queued for the
    /// application had reached `max_pending_event_bytes` (each one is delivered when
    /// room appears, or dropped after the bounded wait and counted in
    /// `events_dropped`).
    event_budget_waits,
    /// Accepted sockets closed at once because `max_pending_handshakes` were pending.
    refused_connections,
    /// Accepted sockets closed at once, before any byte, because `max_connections`
    /// sockets were open.
    connections_refused_cap,
    /// Connections to an already-linked node closed right after the handshake
    /// instead of lingering as retired duplicates: 2 of that node's were retiring
    /// already, or the connection cap was nearly full.
    duplicates_closed,
    /// Handshakes refused for a link cap or an address held by a live peer.
    refused_links,
    /// Pending handshakes closed to admit a socket from a less represented source
    /// group (/24, /48) while `max_pending_handshakes` were pending.
    pending_evicted,
    /// Inbound links closed (LEAVE, `Evicted`) to link a newcomer from a less
    /// represented source group while the inbound cap was reached.
    links_evicted,
    /// Connections closed during the handshake (timeout, bad or missing JOIN, wrong
    /// network or version, refusal).
    handshakes_failed,
    /// Dials that failed to connect or to complete the handshake.
    dial_failures,
    /// Frames ignored as the protocol says: unknown types, broadcasts whose hop count
    /// is out of range.
    frames_ignored,
    /// New broadcasts dropped because the link that brought them was over its
    /// broadcast rate limit (`broadcast_rate`, `broadcast_burst`); not remembered as
    /// seen, so another link's copy still gets through.
    broadcasts_rate_limited,
    /// Direct messages (DATA) dropped because their link was over its rate limit
    /// (`data_rate`, `data_burst`).
    data_rate_limited,
    /// Links closed because they stayed over a rate limit for `rate_limit_grace`.
    links_rate_limited,
    /// Broadcast copies the seen cache no longer knew but the origin's replay window
    /// did (already taken, or too old); also counted in `duplicates_dropped`.
    replays_dropped,
    /// New broadcasts dropped because their signature was not their origin's (the
    /// key does not hash to the origin id, or the signature does not verify): not
    /// delivered, not forwarded, not remembered, so the origin's real broadcast with
    /// that id still gets through.
    broadcasts_forged,
    /// Addresses in PEERS lists ignored because the sender's /24 (/48) already has
    /// `NEW_PER_SOURCE` never-tried entries in the address book.
    addrs_ignored,
    /// JOINs whose observed address was recorded as a vote on this node's own IP.
    observations,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_list_names_every_counter_once_with_its_help() {
        let stats = Stats::default();
        add(&stats.grafts_sent, 3);
        let list = stats.snapshot().list();
        let names: Vec<&str> = list.iter().map(|c| c.name).collect();
        let mut unique = names.clone();
        unique.sort_unstable();
        unique.dedup();
        assert_eq!(unique.len(), names.len(), "{names:?}");
        assert!(list.iter().all(|c| !c.help.trim().is_empty()));
        let grafts = list
            .iter()
            .find(|c| c.name == "grafts_sent")
            .expect("listed");
        assert_eq!(grafts.value, 3);
        assert!(grafts.help.contains("GRAFT"), "{}", grafts.help);
    }
}
