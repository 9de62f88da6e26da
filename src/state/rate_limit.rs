//! `RateLimiter`: a token bucket for what one peer may make this node do, plus the
//! rule that turns persistent excess into a closed link. The C++ original had no
//! limit: a peer's 200,000 broadcasts were relayed overlay-wide in 1.4 s.
//!
//! Plain data, no lock, no clock of its own: the owner (a link's reader, the only
//! thread that touches that link's inbound limits) passes the time in. The clock is
//! read only when the bucket looks empty, so a link well under its limit costs one
//! subtraction per frame and no clock read.
//!
//! - **Bucket.** It holds up to `burst` tokens and refills at `rate` tokens per
//!   second; each admitted frame takes one. It starts full. Tokens are kept in
//!   millionths, so slow rates refill smoothly. Over any span `T` starting full, at
//!   most `burst + rate * T` frames are admitted (the lazy refill only adds what
//!   `rate * T` allows).
//! - **Persistent excess.** An *episode* starts with a refused frame and lasts while
//!   refusals keep coming, each within [`FORGIVE_MS`] (1 s) of the one before. A
//!   frame refused when its episode has lasted `grace` or longer is
//!   [`Verdict::Abusive`]: the peer kept sending faster than `rate` for the whole
//!   grace time, and the caller closes the link. A burst that overflows for less than
//!   the grace time only loses its excess. Admitted frames do not end an episode (at
//!   a high rate the bucket refills between a flooder's chunks), a quiet second does.
//! - **`rate == 0`** means unlimited: every frame passes, no clock is read.

/// Millionths of a token per token.
const SCALE: u64 = 1_000_000;

/// A second without a refused frame ends an episode of excess (ms).
pub(crate) const FORGIVE_MS: u64 = 1_000;

/// What to do with one frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Under the limit: handle it.
    Pass,
    /// Over the limit: drop it (and count it).
    Drop,
    /// Over the limit for longer than the grace time: drop it and close the link.
    Abusive,
}

/// A token bucket with the persistent-excess rule; see the module docs.
#[derive(Clone, Debug)]
pub(crate) struct RateLimiter {
    /// Tokens per second; 0: unlimited.
    rate: u64,
    /// Capacity, in millionths of a token.
    cap: u64,
    /// Tokens left, in millionths.
    level: u64,
    /// When `level` was last refilled (ms, the caller's clock).
    refilled_ms: u64,
    grace_ms: u64,
    /// When the current episode of refusals started.
    limited_since_ms: Option<u64>,
    /// When the last frame was refused.
    refused_ms: u64,
}

impl RateLimiter {
    /// A full bucket of `burst` tokens refilled at `rate` per second (`rate == 0`:
    /// unlimited; a `burst` below 1 is taken as 1), created at `now_ms`.
    pub(crate) fn new(rate: u64, burst: u64, grace_ms: u64, now_ms: u64) -> RateLimiter {
        let cap = burst.max(1).saturating_mul(SCALE);
        RateLimiter {
            rate,
            cap,
            level: cap,
            refilled_ms: now_ms,
            grace_ms,
            limited_since_ms: None,
            refused_ms: 0,
        }
    }

    /// Takes a token for one frame. `now_ms` is called only when the bucket is short
    /// of a token (and never when unlimited).
    pub(crate) fn admit(&mut self, now_ms: impl FnOnce() -> u64) -> Verdict {
        if self.rate == 0 {
            return Verdict::Pass;
        }
        if self.level < SCALE {
            let now = now_ms();
            self.refill(now);
            if self.level < SCALE {
                let since = match self.limited_since_ms {
                    Some(t) if now.saturating_sub(self.refused_ms) < FORGIVE_MS => t,
                    _ => now,
                };
                self.limited_since_ms = Some(since);
                self.refused_ms = now;
                return if now.saturating_sub(since) >= self.grace_ms {
                    Verdict::Abusive
                } else {
                    Verdict::Drop
                };
            }
        }
        self.level -= SCALE;
        Verdict::Pass
    }

    fn refill(&mut self, now: u64) {
        let elapsed = now.saturating_sub(self.refilled_ms);
        // rate tokens/s × elapsed ms = rate × elapsed × 1,000 millionths.
        let add = elapsed
            .saturating_mul(self.rate)
            .saturating_mul(SCALE / 1000);
        self.level = self.level.saturating_add(add).min(self.cap);
        self.refilled_ms = now;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Frames admitted out of `n` offered at `now`.
    fn offer(l: &mut RateLimiter, n: u64, now: u64) -> (u64, Vec<Verdict>) {
        let mut passed = 0;
        let mut verdicts = Vec::new();
        for _ in 0..n {
            let v = l.admit(|| now);
            if v == Verdict::Pass {
                passed += 1;
            }
            verdicts.push(v);
        }
        (passed, verdicts)
    }

    #[test]
    fn a_full_bucket_passes_its_burst_then_drops() {
        let mut l = RateLimiter::new(10, 100, 5_000, 0);
        let (passed, v) = offer(&mut l, 150, 0);
        assert_eq!(passed, 100);
        assert!(v[100..].iter().all(|v| *v == Verdict::Drop));
    }

    #[test]
    fn it_refills_at_the_rate_up_to_the_burst() {
        let mut l = RateLimiter::new(10, 100, 5_000, 0);
        assert_eq!(offer(&mut l, 100, 0).0, 100);
        // 500 ms at 10/s: 5 tokens.
        assert_eq!(offer(&mut l, 20, 500).0, 5);
        // A long pause refills to the burst, not beyond.
        assert_eq!(offer(&mut l, 1_000, 3_600_000).0, 100);
    }

    #[test]
    fn slow_rates_refill_in_fractions() {
        let mut l = RateLimiter::new(1, 1, 5_000, 0);
        assert_eq!(offer(&mut l, 1, 0).0, 1);
        assert_eq!(offer(&mut l, 1, 400).0, 0);
        assert_eq!(offer(&mut l, 1, 999).0, 0);
        assert_eq!(offer(&mut l, 1, 1_000).0, 1);
    }

    #[test]
    fn never_more_than_burst_plus_rate_times_elapsed() {
        let (rate, burst) = (500, 1_000);
        let mut l = RateLimiter::new(rate, burst, u64::MAX, 0);
        let mut passed = 0;
        for ms in 0..10_000u64 {
            passed += offer(&mut l, 7, ms).0; // 7,000/s offered
            assert!(
                passed <= burst + rate * ms / 1000 + 1,
                "{passed} at {ms} ms"
            );
        }
        assert!(passed >= burst + rate * 9, "{passed}");
    }

    #[test]
    fn sustained_excess_becomes_abusive_after_the_grace_time() {
        let mut l = RateLimiter::new(100, 100, 2_000, 0);
        let mut first_abusive = None;
        for ms in (0..5_000u64).step_by(10) {
            // 1,000/s against 100/s.
            let (_, v) = offer(&mut l, 10, ms);
            if first_abusive.is_none() && v.contains(&Verdict::Abusive) {
                first_abusive = Some(ms);
            }
        }
        // Limited from about 110 ms (the burst is gone), abusive 2 s later.
        let at = first_abusive.expect("abusive");
        assert!((2_000..2_300).contains(&at), "abusive at {at} ms");
    }

    #[test]
    fn bursty_excess_with_pauses_is_abusive_too() {
        // 100 frames every 50 ms (2,000/s) against 100/s: the bucket refills 5 tokens
        // in each pause, and the excess still ends the link after the grace time.
        let mut l = RateLimiter::new(100, 100, 2_000, 0);
        let mut first_abusive = None;
        for ms in (0..5_000u64).step_by(50) {
            let (passed, v) = offer(&mut l, 100, ms);
            assert!(passed >= 1 || ms == 0 || first_abusive.is_some());
            if first_abusive.is_none() && v.contains(&Verdict::Abusive) {
                first_abusive = Some(ms);
            }
        }
        assert_eq!(first_abusive, Some(2_050));
    }

    #[test]
    fn a_short_overflow_is_forgiven() {
        let mut l = RateLimiter::new(100, 100, 1_000, 0);
        let (_, v) = offer(&mut l, 200, 0);
        assert!(v.contains(&Verdict::Drop));
        // Then well under the rate: one frame every 50 ms for 3 s.
        for ms in (50..3_050u64).step_by(50) {
            assert_eq!(l.admit(|| ms), Verdict::Pass, "at {ms} ms");
        }
        // A new overflow starts a new grace time.
        let (_, v) = offer(&mut l, 200, 3_100);
        assert!(v.contains(&Verdict::Drop));
        assert!(!v.contains(&Verdict::Abusive));
    }

    #[test]
    fn rate_zero_is_unlimited_and_reads_no_clock() {
        let mut l = RateLimiter::new(0, 0, 0, 0);
        for _ in 0..100_000 {
            assert_eq!(l.admit(|| unreachable!("no clock read")), Verdict::Pass);
        }
    }

    #[test]
    fn the_clock_is_read_only_when_short_of_a_token() {
        let mut l = RateLimiter::new(10, 3, 1_000, 0);
        for _ in 0..3 {
            assert_eq!(l.admit(|| unreachable!("a token was there")), Verdict::Pass);
        }
        assert_eq!(l.admit(|| 0), Verdict::Drop);
    }

    #[test]
    fn huge_values_saturate_instead_of_overflowing() {
        let mut l = RateLimiter::new(u64::MAX, u64::MAX, 0, 0);
        assert_eq!(offer(&mut l, 10, u64::MAX).0, 10);
    }
}
