//! A bounded pool of H.264 decoders shared by cameras, one keyframe interval at a time.
//!
//! An openh264 decoder of a 720p stream holds about 15 MB (three pictures, a zero-filled 3 MB
//! bitstream buffer, per-macroblock arrays) whether it decodes or waits, so one decoder per camera
//! is most of the daemon's memory at a dozen cameras. Yet a decoder needs nothing from before an
//! IDR: every IDR empties its reference pictures. So a camera can hold its access units from one
//! IDR to the next (a closed keyframe interval, typically 1–2 s and some hundred kilobytes),
//! then lease a decoder, decode the interval in one go, flush it, and give it back. The pool keeps
//! at most `size` decoders, created when first needed; a camera waits while all are leased.
//!
//! The cost is latency: a frame waits for the end of its keyframe interval before it is decoded
//! (the batcher would hold it for its batch anyway when the interval and the batch are one second
//! each).

use super::h264::{DecodeError, H264Decoder};
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// The longest keyframe interval a camera holds for a shared decoder. A camera whose interval is
/// longer (or that sends no IDR at all, as with intra refresh) decodes on its own decoder.
pub const MAX_HOLD: Duration = Duration::from_secs(4);

/// How long a camera keeps reading while its complete intervals wait for a free decoder, trying
/// again at each new unit; past this it waits for one (the pool is saturated: the camera's own
/// buffers take the back-pressure).
pub const MAX_WAIT: Duration = Duration::from_millis(500);

/// At most `size` decoders, leased one at a time, the longest-waiting interval first.
pub struct DecoderPool {
    size: usize,
    /// Counts the decoders this pool created, while it lives (a metric).
    alive: Option<prometheus::IntGauge>,
    state: Mutex<State>,
    returned: Condvar,
}

struct State {
    idle: Vec<H264Decoder>,
    created: usize,
    /// The callers waiting now: (since, ticket); the smallest goes first.
    waiting: Vec<(i64, u64)>,
    tickets: u64,
}

impl State {
    fn available(&self, size: usize) -> bool {
        !self.idle.is_empty() || self.created < size
    }

    fn first_in_line(&self) -> Option<(i64, u64)> {
        self.waiting.iter().min().copied()
    }

    fn leave(&mut self, me: (i64, u64)) {
        self.waiting.retain(|w| *w != me);
    }
}

impl DecoderPool {
    /// A pool of at most `size` (≥ 1) decoders; none is created before the first lease.
    pub fn new(size: usize) -> Self {
        Self {
            size: size.max(1),
            alive: None,
            state: Mutex::new(State {
                idle: Vec::new(),
                created: 0,
                waiting: Vec::new(),
                tickets: 0,
            }),
            returned: Condvar::new(),
        }
    }

    /// Counts the decoders this pool creates in `alive` (taken back when the pool goes).
    pub fn counted(mut self, alive: prometheus::IntGauge) -> Self {
        self.alive = Some(alive);
        self
    }

    /// Decoders created so far (at most `size`).
    pub fn created(&self) -> usize {
        self.lock().created
    }

    /// A decoder for work waiting `since` (a camera's interval complete since that capture time,
    /// µs): while all are leased, the callers waiting are served oldest `since` first, each as a
    /// decoder comes back. Waits until `until` (`None`: without limit), then gives `Ok(None)`;
    /// `give_up` is asked about every 100 ms of waiting (callers send their heartbeat there), and
    /// ends the wait with `Ok(None)` when it says true.
    ///
    /// A camera passes one frame interval as `until`, reads its next unit, and asks again with
    /// the same `since`: it keeps its place among those waiting then, while its source is read.
    pub fn lease(
        &self,
        since: i64,
        until: Option<Instant>,
        mut give_up: impl FnMut() -> bool,
    ) -> Result<Option<Lease<'_>>, DecodeError> {
        let mut state = self.lock();
        let me = (since, state.tickets);
        state.tickets += 1;
        state.waiting.push(me);
        loop {
            if state.available(self.size) && state.first_in_line() == Some(me) {
                state.leave(me);
                // Another decoder may be free for the next in line.
                self.returned.notify_all();
                if let Some(decoder) = state.idle.pop() {
                    return Ok(Some(Lease {
                        pool: self,
                        decoder: Some(decoder),
                    }));
                }
                state.created += 1;
                drop(state);
                if let Some(alive) = &self.alive {
                    alive.inc();
                }
                return match H264Decoder::new() {
                    Ok(decoder) => Ok(Some(Lease {
                        pool: self,
                        decoder: Some(decoder),
                    })),
                    Err(e) => {
                        self.lock().created -= 1;
                        if let Some(alive) = &self.alive {
                            alive.dec();
                        }
                        self.returned.notify_all();
                        Err(e)
                    }
                };
            }
            let now = Instant::now();
            let timeout = match until {
                Some(t) if t <= now => None,
                Some(t) => Some((t - now).min(POLL)),
                None => Some(POLL),
            };
            let Some(timeout) = timeout.filter(|_| !give_up()) else {
                state.leave(me);
                self.returned.notify_all();
                return Ok(None);
            };
            state = self
                .returned
                .wait_timeout(state, timeout)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves the list consistent (push/pop or a counter).
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// How often a waiting caller is asked whether it gives up.
const POLL: Duration = Duration::from_millis(100);

impl Drop for DecoderPool {
    fn drop(&mut self) {
        if let Some(alive) = &self.alive {
            alive.sub(self.lock().created as i64);
        }
    }
}

/// A leased decoder; it goes back to the pool when dropped (also when its holder panics: the
/// next holder starts at an IDR, which needs nothing the decoder held).
pub struct Lease<'a> {
    pool: &'a DecoderPool,
    decoder: Option<H264Decoder>,
}

impl std::ops::Deref for Lease<'_> {
    type Target = H264Decoder;
    fn deref(&self) -> &H264Decoder {
        self.decoder
            .as_ref()
            .expect("a lease holds its decoder until dropped")
    }
}

impl std::ops::DerefMut for Lease<'_> {
    fn deref_mut(&mut self) -> &mut H264Decoder {
        self.decoder
            .as_mut()
            .expect("a lease holds its decoder until dropped")
    }
}

impl Drop for Lease<'_> {
    fn drop(&mut self) {
        if let Some(decoder) = self.decoder.take() {
            self.pool.lock().idle.push(decoder);
            // The first in line takes it; the others look again and keep waiting.
            self.pool.returned.notify_all();
        }
    }
}

#[cfg(test)]
mod tests;
