//! Time, injected: a `Clock` gives "now" to the supervisor's backoff and the batcher's deadlines, so
//! tests drive them with `ManualClock` instead of sleeping. `Backoff` is the restart policy every
//! supervised actor uses: exponential, full jitter, capped, reset after a healthy period.

use parking_lot::Mutex;
use rand::Rng;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

/// Where "now" comes from.
pub trait Clock: Send + Sync + 'static {
    /// Monotonic time, for intervals and deadlines.
    fn now(&self) -> Instant;
    /// Wall time, for capture timestamps and storage keys.
    fn wall(&self) -> SystemTime;
}

pub type SharedClock = Arc<dyn Clock>;

/// The real clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Instant {
        Instant::now()
    }
    fn wall(&self) -> SystemTime {
        SystemTime::now()
    }
}

/// A clock that moves only when told to; for tests.
#[derive(Debug)]
pub struct ManualClock {
    base: Instant,
    wall_base: SystemTime,
    offset: Mutex<Duration>,
}

impl ManualClock {
    pub fn new() -> Self {
        Self {
            base: Instant::now(),
            wall_base: SystemTime::UNIX_EPOCH + Duration::from_secs(1_767_225_600),
            offset: Mutex::new(Duration::ZERO),
        }
    }
    pub fn advance(&self, by: Duration) {
        *self.offset.lock() += by;
    }
}

impl Default for ManualClock {
    fn default() -> Self {
        Self::new()
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Instant {
        self.base + *self.offset.lock()
    }
    fn wall(&self) -> SystemTime {
        self.wall_base + *self.offset.lock()
    }
}

/// Restart delays: attempt `n` (1-based) waits a uniformly random time in `[0, min(cap, base·2^(n-1))]`
/// ("full jitter"), so many cameras failing together do not reconnect in lockstep. After the actor
/// has run `healthy_after` without failing, the attempt count starts again from zero.
#[derive(Debug, Clone)]
pub struct Backoff {
    pub base: Duration,
    pub cap: Duration,
    pub healthy_after: Duration,
    attempt: u32,
    started: Option<Instant>,
}

impl Backoff {
    pub fn new(base: Duration, cap: Duration, healthy_after: Duration) -> Self {
        Self {
            base,
            cap,
            healthy_after,
            attempt: 0,
            started: None,
        }
    }

    /// Records that the actor (re)started its work at `now`.
    pub fn started(&mut self, now: Instant) {
        self.started = Some(now);
    }

    /// Number of failures counted since the last healthy period.
    pub fn attempt(&self) -> u32 {
        self.attempt
    }

    /// The upper bound of the delay for the current attempt.
    pub fn ceiling(&self) -> Duration {
        if self.attempt == 0 {
            return Duration::ZERO;
        }
        let exp = self.attempt.saturating_sub(1).min(30);
        self.base.saturating_mul(1u32 << exp).min(self.cap)
    }

    /// Records a failure at `now` and returns how long to wait before the next start.
    pub fn failed(&mut self, now: Instant, rng: &mut impl Rng) -> Duration {
        if let Some(started) = self.started.take()
            && now.saturating_duration_since(started) >= self.healthy_after
        {
            self.attempt = 0;
        }
        self.attempt = self.attempt.saturating_add(1);
        let ceiling = self.ceiling();
        if ceiling.is_zero() {
            return ceiling;
        }
        Duration::from_nanos(rng.random_range(0..=ceiling.as_nanos().min(u64::MAX as u128) as u64))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    fn backoff() -> Backoff {
        Backoff::new(
            Duration::from_millis(100),
            Duration::from_secs(10),
            Duration::from_secs(30),
        )
    }

    /// Ensures the delay ceiling doubles per failure and stops at the cap.
    #[test]
    fn ceiling_grows_exponentially_to_the_cap() {
        let clock = ManualClock::new();
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
        let mut b = backoff();
        let mut ceilings = Vec::new();
        for _ in 0..10 {
            b.started(clock.now());
            clock.advance(Duration::from_secs(1));
            b.failed(clock.now(), &mut rng);
            ceilings.push(b.ceiling().as_millis());
        }
        assert_eq!(
            ceilings,
            vec![100, 200, 400, 800, 1600, 3200, 6400, 10000, 10000, 10000]
        );
    }

    /// Ensures delays are jittered over the whole range rather than fixed.
    #[test]
    fn delays_are_full_jitter() {
        let clock = ManualClock::new();
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
        let mut delays = Vec::new();
        for _ in 0..200 {
            let mut b = backoff();
            for _ in 0..4 {
                b.failed(clock.now(), &mut rng);
            }
            delays.push(b.failed(clock.now(), &mut rng)); // attempt 5: ceiling 1.6 s
        }
        assert!(delays.iter().all(|d| *d <= Duration::from_millis(1600)));
        let low = delays
            .iter()
            .filter(|d| **d < Duration::from_millis(400))
            .count();
        let high = delays
            .iter()
            .filter(|d| **d > Duration::from_millis(1200))
            .count();
        assert!(
            low > 20 && high > 20,
            "not spread over [0, ceiling]: {low} low, {high} high"
        );
        let distinct: std::collections::HashSet<_> = delays.iter().collect();
        assert!(distinct.len() > 150);
    }

    /// Ensures a healthy period resets the attempt count, and a quick failure does not.
    #[test]
    fn healthy_period_resets_attempts() {
        let clock = ManualClock::new();
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(3);
        let mut b = backoff();
        for _ in 0..5 {
            b.started(clock.now());
            clock.advance(Duration::from_secs(1));
            b.failed(clock.now(), &mut rng);
        }
        assert_eq!(b.attempt(), 5);
        b.started(clock.now());
        clock.advance(Duration::from_secs(31));
        b.failed(clock.now(), &mut rng);
        assert_eq!(b.attempt(), 1);
        assert_eq!(b.ceiling(), Duration::from_millis(100));
    }
}
