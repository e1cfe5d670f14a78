//! Circuit breaker in front of a remote inference service. `failures` transient failures in a row
//! (timeouts, refused connections, 5xx) open it: calls then fail at once without a request, and the
//! consumer pauses its partitions (`Downstream`). After `open_for` it is half-open: one call is let
//! through as a probe; its success closes the breaker, its failure opens it again for twice as long
//! (capped at `max_open`). An answer that is an error of the request itself (4xx, a bad answer) shows
//! the service is up, so it counts as a success here.

use crate::clock::SharedClock;
use parking_lot::Mutex;
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BreakerState {
    Closed,
    Open,
    HalfOpen,
}

impl BreakerState {
    /// The `to` label of `framewire_inference_breaker_transitions_total`.
    pub fn name(self) -> &'static str {
        match self {
            BreakerState::Closed => "closed",
            BreakerState::Open => "open",
            BreakerState::HalfOpen => "half_open",
        }
    }

    /// The gauge value of `framewire_inference_breaker_state`.
    pub fn gauge(self) -> i64 {
        match self {
            BreakerState::Closed => 0,
            BreakerState::Open => 1,
            BreakerState::HalfOpen => 2,
        }
    }
}

#[derive(Debug, Clone, Copy)]
pub struct BreakerConfig {
    /// Transient failures in a row that open the breaker (0: never opens).
    pub failures: u32,
    pub open_for: Duration,
    pub max_open: Duration,
    /// A probe not reported within this time (its caller went away) is given up: the next call
    /// becomes the probe.
    pub probe_timeout: Duration,
}

#[derive(Debug)]
enum State {
    Closed { failures: u32 },
    Open { until: Instant, open_for: Duration },
    HalfOpen { open_for: Duration, since: Instant },
}

/// A call let through: report its outcome with `Breaker::record`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Admission {
    pub probe: bool,
}

pub struct Breaker {
    cfg: BreakerConfig,
    clock: SharedClock,
    state: Mutex<State>,
}

impl Breaker {
    pub fn new(cfg: BreakerConfig, clock: SharedClock) -> Self {
        Self {
            cfg,
            clock,
            state: Mutex::new(State::Closed { failures: 0 }),
        }
    }

    pub fn state(&self) -> BreakerState {
        match *self.state.lock() {
            State::Closed { .. } => BreakerState::Closed,
            State::Open { .. } => BreakerState::Open,
            State::HalfOpen { .. } => BreakerState::HalfOpen,
        }
    }

    /// Lets a call through, or says how long the breaker stays open (`Err`). The first call after
    /// the open period is the half-open probe; others wait while it runs.
    pub fn admit(&self) -> Result<Admission, Duration> {
        let now = self.clock.now();
        let mut s = self.state.lock();
        match *s {
            State::Closed { .. } => Ok(Admission { probe: false }),
            State::Open { until, open_for } if now >= until => {
                *s = State::HalfOpen {
                    open_for,
                    since: now,
                };
                Ok(Admission { probe: true })
            }
            State::HalfOpen { open_for, since } if now >= since + self.cfg.probe_timeout => {
                *s = State::HalfOpen {
                    open_for,
                    since: now,
                };
                Ok(Admission { probe: true })
            }
            State::Open { until, .. } => Err(until - now),
            State::HalfOpen { .. } => Err(Duration::ZERO),
        }
    }

    /// Records the outcome of an admitted call (`up`: the service answered). Returns the new state
    /// when it changed.
    pub fn record(&self, admission: Admission, up: bool) -> Option<BreakerState> {
        let now = self.clock.now();
        let mut s = self.state.lock();
        let before = state_of(&s);
        *s = match (&*s, up) {
            (State::Closed { .. }, true) => State::Closed { failures: 0 },
            (_, true) if admission.probe => State::Closed { failures: 0 },
            // A late answer from before the breaker opened changes nothing.
            (_, true) => return None,
            (State::HalfOpen { open_for, .. }, false) if admission.probe => {
                let open_for = (*open_for * 2).min(self.cfg.max_open);
                State::Open {
                    until: now + open_for,
                    open_for,
                }
            }
            (State::Closed { failures }, false) => {
                let failures = failures + 1;
                if self.cfg.failures > 0 && failures >= self.cfg.failures {
                    State::Open {
                        until: now + self.cfg.open_for,
                        open_for: self.cfg.open_for,
                    }
                } else {
                    State::Closed { failures }
                }
            }
            (_, false) => return None,
        };
        let after = state_of(&s);
        (after != before).then_some(after)
    }
}

fn state_of(s: &State) -> BreakerState {
    match s {
        State::Closed { .. } => BreakerState::Closed,
        State::Open { .. } => BreakerState::Open,
        State::HalfOpen { .. } => BreakerState::HalfOpen,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;
    use std::sync::Arc;

    fn breaker() -> (Breaker, Arc<ManualClock>) {
        let clock = Arc::new(ManualClock::new());
        let cfg = BreakerConfig {
            failures: 3,
            open_for: Duration::from_secs(2),
            max_open: Duration::from_secs(5),
            probe_timeout: Duration::from_secs(3),
        };
        (Breaker::new(cfg, clock.clone()), clock)
    }

    /// Ensures consecutive transient failures open the breaker, an open breaker refuses calls until
    /// its period ends, and a success in between resets the count.
    #[test]
    fn opens_after_consecutive_failures() {
        let (b, clock) = breaker();
        let a = b.admit().unwrap();
        assert_eq!(b.record(a, false), None);
        assert_eq!(b.record(a, true), None, "a success resets the count");
        for _ in 0..2 {
            assert_eq!(b.record(b.admit().unwrap(), false), None);
        }
        assert_eq!(
            b.record(b.admit().unwrap(), false),
            Some(BreakerState::Open)
        );
        assert_eq!(b.admit(), Err(Duration::from_secs(2)));
        clock.advance(Duration::from_millis(1500));
        assert_eq!(b.admit(), Err(Duration::from_millis(500)));
    }

    /// Ensures exactly one half-open probe goes through; its failure reopens for twice as long
    /// (capped), its success closes the breaker; late answers from before change nothing.
    #[test]
    fn half_open_probe_decides() {
        let (b, clock) = breaker();
        let old = b.admit().unwrap();
        for _ in 0..3 {
            b.record(b.admit().unwrap(), false);
        }
        clock.advance(Duration::from_secs(2));
        let probe = b.admit().unwrap();
        assert!(probe.probe);
        assert_eq!(b.state(), BreakerState::HalfOpen);
        assert_eq!(b.admit(), Err(Duration::ZERO), "one probe at a time");
        assert_eq!(b.record(old, true), None, "a late success is not the probe");
        assert_eq!(b.record(old, false), None);
        assert_eq!(b.record(probe, false), Some(BreakerState::Open));
        assert_eq!(b.admit(), Err(Duration::from_secs(4)));
        clock.advance(Duration::from_secs(4));
        let probe = b.admit().unwrap();
        assert_eq!(b.record(probe, false), Some(BreakerState::Open));
        assert_eq!(b.admit(), Err(Duration::from_secs(5)), "capped at max_open");
        clock.advance(Duration::from_secs(5));
        let probe = b.admit().unwrap();
        assert_eq!(b.record(probe, true), Some(BreakerState::Closed));
        assert_eq!(b.admit(), Ok(Admission { probe: false }));
    }

    /// Ensures a probe whose caller went away (never reported) does not hold the breaker
    /// half-open for ever: after `probe_timeout` the next call is the probe.
    #[test]
    fn lost_probe_is_replaced() {
        let (b, clock) = breaker();
        for _ in 0..3 {
            b.record(b.admit().unwrap(), false);
        }
        clock.advance(Duration::from_secs(2));
        let _lost = b.admit().unwrap();
        clock.advance(Duration::from_millis(2999));
        assert_eq!(b.admit(), Err(Duration::ZERO));
        clock.advance(Duration::from_millis(1));
        let probe = b.admit().unwrap();
        assert!(probe.probe);
        assert_eq!(b.record(probe, true), Some(BreakerState::Closed));
    }

    /// Ensures `failures = 0` turns the breaker off.
    #[test]
    fn zero_failures_never_opens() {
        let clock = Arc::new(ManualClock::new());
        let b = Breaker::new(
            BreakerConfig {
                failures: 0,
                open_for: Duration::from_secs(1),
                max_open: Duration::from_secs(1),
                probe_timeout: Duration::from_secs(1),
            },
            clock,
        );
        for _ in 0..100 {
            assert_eq!(b.record(b.admit().unwrap(), false), None);
        }
        assert_eq!(b.state(), BreakerState::Closed);
    }
}
