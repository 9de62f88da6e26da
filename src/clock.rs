//! `Clock`: the node's monotonic zero point. Per-link times (last frame, last PING,
//! a writer's stall) are stored as milliseconds or microseconds since it in atomics,
//! so the threads that update them on every frame need no lock.

use std::time::Instant;

/// Milliseconds and microseconds since the node started.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Clock {
    epoch: Instant,
}

impl Clock {
    pub(crate) fn start() -> Clock {
        Clock {
            epoch: Instant::now(),
        }
    }

    pub(crate) fn epoch(&self) -> Instant {
        self.epoch
    }

    pub(crate) fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    pub(crate) fn now_us(&self) -> u64 {
        self.epoch.elapsed().as_micros() as u64
    }
}
