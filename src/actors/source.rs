//! `SourceActor`: one per camera, on the camera's own arbiter. Owns the camera's capture thread,
//! which reads access units from the camera's `FrameSource`, decodes them (openh264), samples to
//! `sample_fps`, resizes and JPEG-encodes the kept frames, and pushes them onto the camera's
//! bounded `FrameQueue` for its `BatcherActor`. When the queue is full (the bus is down or slow) the
//! oldest frame is dropped and counted: a live camera cannot wait.
//!
//! Receives `WorkerExited` from its thread and `Retire` from the root. When the source fails
//! (cannot open, disconnects, stalls past `stall_timeout`, or the thread panics) the reconnect is
//! counted by reason, the actor stops, and actix's supervisor restarts it after the backoff delay
//! (exponential, full jitter): the thread starts afresh. A file that ends without `loop` marks the
//! camera finished (not failed); the batcher keeps its partial batch until `max_wait` or shutdown.

use super::batcher::{CapturedFrame, FrameQueue};
use super::{Life, PanicGuard, Retire, Shared};
use crate::config::{CameraConfig, SourceUrl};
use crate::media::TruthBox;
use crate::media::decoders::{DecoderPool, MAX_HOLD, MAX_WAIT};
use crate::media::h264::{H264Decoder, StreamMemory, YuvView, is_idr};
use crate::media::jpeg::{Codec, FrameEncoder, scale_box};
use crate::media::source::{EncodedUnit, Sampler, SourceError, now_us};
use crate::status::ActorState;
use actix::prelude::*;
use prometheus::{Gauge, Histogram, IntCounter, IntGauge};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

pub struct SourceActor {
    camera: CameraConfig,
    url: SourceUrl,
    codec: Codec,
    decoders: Option<Arc<DecoderPool>>,
    queue: Arc<FrameQueue>,
    life: Life,
    stop: Option<Arc<AtomicBool>>,
    /// Counts capture threads started, so a late exit of an old thread is told apart.
    worker: u64,
    _guard: PanicGuard,
}

impl SourceActor {
    pub fn new(
        camera: CameraConfig,
        url: SourceUrl,
        codec: Codec,
        decoders: Option<Arc<DecoderPool>>,
        queue: Arc<FrameQueue>,
        life: Life,
        guard: PanicGuard,
    ) -> Self {
        life.shared
            .status
            .camera_registered(&camera.id, &camera.url);
        Self {
            camera,
            url,
            codec,
            decoders,
            queue,
            life,
            stop: None,
            worker: 0,
            _guard: guard,
        }
    }

    fn launch(&mut self, ctx: &mut Context<Self>) {
        if self.life.retired {
            return;
        }
        let stop = Arc::new(AtomicBool::new(false));
        self.stop = Some(stop.clone());
        self.worker += 1;
        let worker = self.worker;
        let (camera, url, codec, decoders, shared, queue, me) = (
            self.camera.clone(),
            self.url.clone(),
            self.codec,
            self.decoders.clone(),
            self.life.shared.clone(),
            self.queue.clone(),
            ctx.address(),
        );
        let spawned = std::thread::Builder::new()
            .name(format!("cam-{}", camera.id))
            .spawn(move || {
                let capture = Capture {
                    camera: &camera,
                    url: &url,
                    codec,
                    decoders: decoders.as_deref(),
                    shared: &shared,
                    queue: &queue,
                    stop: &stop,
                };
                let outcome =
                    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| capture.run()));
                let result = match outcome {
                    Ok(Ok(())) => Ok(()),
                    Ok(Err(e)) => Err((e.reason(), e.to_string())),
                    Err(p) => Err((
                        "panic",
                        format!(
                            "camera {}: capture thread panicked: {}",
                            camera.id,
                            super::panic_message(p)
                        ),
                    )),
                };
                me.do_send(WorkerExited { worker, result });
            });
        match spawned {
            Ok(_) => self.life.running(),
            Err(e) => {
                self.life.failed(&format!(
                    "camera {}: cannot start capture thread: {e}",
                    self.camera.id
                ));
                ctx.stop();
            }
        }
    }
}

impl Actor for SourceActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        let delay = self.life.starting();
        ctx.run_later(delay, |a, ctx| a.launch(ctx));
        // While no capture thread runs (backoff, or a finished file), the actor shows it is alive.
        ctx.run_interval(Duration::from_secs(1), |a, _| {
            if a.stop.is_none() && !a.life.retired {
                a.life.heartbeat();
            }
        });
    }

    fn stopping(&mut self, _: &mut Context<Self>) -> Running {
        if let Some(stop) = self.stop.take() {
            stop.store(true, Ordering::SeqCst);
        }
        self.life
            .shared
            .metrics
            .camera_up
            .with_label_values(&[&self.camera.id])
            .set(0);
        Running::Stop
    }
}

impl Supervised for SourceActor {
    fn restarting(&mut self, _: &mut Context<Self>) {
        self.life.restarting();
    }
}

/// The capture thread ended: `Ok` when the source finished, `Err((reason, message))` otherwise.
#[derive(Message)]
#[rtype(result = "()")]
pub struct WorkerExited {
    pub worker: u64,
    pub result: Result<(), (&'static str, String)>,
}

impl Handler<WorkerExited> for SourceActor {
    type Result = ();
    fn handle(&mut self, msg: WorkerExited, ctx: &mut Context<Self>) {
        if self.life.retired || msg.worker != self.worker || self.stop.is_none() {
            return;
        }
        self.stop = None;
        let m = &self.life.shared.metrics;
        m.camera_up.with_label_values(&[&self.camera.id]).set(0);
        match msg.result {
            Ok(()) => {
                tracing::info!(camera = %self.camera.id, "source finished (end of file)");
                self.life.set_state(ActorState::Finished);
            }
            Err((reason, e)) => {
                m.camera_reconnects
                    .with_label_values(&[&self.camera.id, reason])
                    .inc();
                let refs: Vec<String> = self.camera.secrets();
                let refs: Vec<&str> = refs.iter().map(String::as_str).collect();
                self.life.failed(&crate::redact::secrets(&e, &refs));
                ctx.stop();
            }
        }
    }
}

impl Handler<Retire> for SourceActor {
    type Result = ();
    fn handle(&mut self, _: Retire, ctx: &mut Context<Self>) {
        self.life.retire();
        ctx.stop();
    }
}

/// One run of a camera's capture thread.
struct Capture<'a> {
    camera: &'a CameraConfig,
    url: &'a SourceUrl,
    codec: Codec,
    decoders: Option<&'a DecoderPool>,
    shared: &'a Shared,
    queue: &'a FrameQueue,
    stop: &'a AtomicBool,
}

/// Per-run state of the sample → encode chain (the decoder is kept beside it, because the
/// picture handed to the chain is borrowed from the decoder's buffers).
struct Chain {
    encoder: FrameEncoder,
    sampler: Sampler,
    seq: u64,
    m: CameraMetrics,
    /// The last access unit fed, and the capture interval before it (stamps flushed pictures).
    last: Option<EncodedUnit>,
    interval_us: i64,
    /// While a keyframe interval is decoded in one go: its frames so far, the last held back
    /// until the interval's end is known (it goes out marked, for the batcher).
    burst: Option<Burst>,
}

#[derive(Default)]
struct Burst {
    frames: usize,
    last: Option<CapturedFrame>,
}

/// How a capture run decodes.
enum Decoding<'p> {
    /// On the camera's own decoder, each unit as it arrives.
    Own(OwnDecoder),
    /// On decoders shared by all cameras (`media.decoders`): the units from an IDR on are held
    /// until the next IDR (or the end of the file), then decoded on a leased decoder in one go,
    /// while the camera is still read.
    Shared { pool: &'p DecoderPool, held: Held },
}

/// A camera's own decoder, counted in `framewire_h264_decoders` while it lives.
struct OwnDecoder {
    decoder: H264Decoder,
    alive: IntGauge,
}

impl std::ops::Deref for OwnDecoder {
    type Target = H264Decoder;
    fn deref(&self) -> &H264Decoder {
        &self.decoder
    }
}

impl std::ops::DerefMut for OwnDecoder {
    fn deref_mut(&mut self) -> &mut H264Decoder {
        &mut self.decoder
    }
}

impl Drop for OwnDecoder {
    fn drop(&mut self) {
        self.alive.dec();
    }
}

/// A camera's access units waiting for a shared decoder.
#[derive(Default)]
struct Held {
    /// From an IDR on, in decoding order, each with whether it is an IDR (found once, on
    /// arrival).
    units: Vec<(EncodedUnit, bool)>,
    /// Where the interval still being received starts: `units[..start]` are complete intervals.
    start: usize,
    /// What the decoders learnt about this stream (reordering).
    memory: StreamMemory,
    /// Units before the stream's first IDR, not decodable.
    skipped: u64,
}

/// The camera's metric series, resolved once per run rather than per frame.
struct CameraMetrics {
    captured: IntCounter,
    decoded: IntCounter,
    sampled: IntCounter,
    decode_errors: IntCounter,
    dropped: IntCounter,
    up: IntGauge,
    last_frame: Gauge,
    decode_time: Histogram,
    encode_time: Histogram,
    decoder_wait: Histogram,
}

impl CameraMetrics {
    fn new(m: &crate::metrics::Metrics, id: &str) -> Self {
        Self {
            captured: m.frames_captured.with_label_values(&[id]),
            decoded: m.frames_decoded.with_label_values(&[id]),
            sampled: m.frames_sampled.with_label_values(&[id]),
            decode_errors: m.decode_errors.with_label_values(&[id]),
            dropped: m.frames_dropped.with_label_values(&[id, "queue_full"]),
            up: m.camera_up.with_label_values(&[id]),
            last_frame: m.camera_last_frame.with_label_values(&[id]),
            decode_time: m.stage_duration.with_label_values(&["decode"]),
            encode_time: m.stage_duration.with_label_values(&["encode"]),
            decoder_wait: m.h264_decoder_wait.clone(),
        }
    }
}

impl Capture<'_> {
    fn error(&self, reason: String) -> SourceError {
        SourceError::Read {
            camera: self.camera.id.clone(),
            reason,
        }
    }

    fn own_decoder(&self) -> Result<OwnDecoder, SourceError> {
        let decoder = H264Decoder::new().map_err(|e| self.error(e.to_string()))?;
        let alive = self.shared.metrics.h264_decoders.clone();
        alive.inc();
        Ok(OwnDecoder { decoder, alive })
    }

    /// Runs until `stop` is set or the source ends (`Ok`), or fails (`Err`).
    fn run(&self) -> Result<(), SourceError> {
        let id = self.camera.id.as_str();
        let mut decoding = match self.decoders {
            Some(pool) => Decoding::Shared {
                pool,
                held: Held::default(),
            },
            None => Decoding::Own(self.own_decoder()?),
        };
        let mut chain = Chain {
            encoder: FrameEncoder::with_codec(
                self.camera.width,
                self.camera.height,
                self.camera.jpeg_quality,
                self.codec,
            )
            .map_err(|e| self.error(e.to_string()))?,
            sampler: Sampler::new(self.camera.sample_fps),
            seq: 0,
            m: CameraMetrics::new(&self.shared.metrics, id),
            last: None,
            interval_us: 1,
            burst: None,
        };
        let mut source = self.shared.opener.open(self.camera, self.url)?;
        while !self.stop.load(Ordering::Relaxed) {
            self.shared.status.heartbeat("source", Some(id));
            match source.next_unit()? {
                Some(unit) => {
                    chain.m.captured.inc();
                    self.take(&mut decoding, &mut chain, unit)?;
                }
                None => {
                    // End of a file: decode what is held, and what the decoder still holds.
                    match &mut decoding {
                        Decoding::Own(decoder) => self.drain(decoder, &mut chain)?,
                        Decoding::Shared { pool, held } => {
                            held.start = held.units.len();
                            self.decode_held(pool, held, &mut chain, None)?
                        }
                    }
                    if !self.camera.loop_file {
                        return Ok(());
                    }
                    // The flushed decoder takes the file again from its first IDR.
                    if !source.rewind()? {
                        source = self.shared.opener.open(self.camera, self.url)?;
                    }
                }
            }
        }
        // Stopping: units held for a shared decoder are dropped like those still in the
        // camera's buffers (nothing was accepted from them yet).
        Ok(())
    }

    /// One access unit from the source: decoded now on the camera's own decoder, or held for a
    /// shared one until its keyframe interval is complete and a decoder is free.
    fn take(
        &self,
        decoding: &mut Decoding<'_>,
        chain: &mut Chain,
        unit: EncodedUnit,
    ) -> Result<(), SourceError> {
        let (pool, held) = match decoding {
            Decoding::Own(decoder) => return self.feed(decoder, chain, unit),
            Decoding::Shared { pool, held } => (*pool, held),
        };
        let idr = is_idr(&unit.annexb);
        if held.units.is_empty() && !idr {
            // A shared decoder starts each interval at an IDR; before the stream's first one
            // (joining a live stream mid-interval) nothing could be decoded anyway.
            held.skipped += 1;
            return Ok(());
        }
        if idr {
            if held.skipped > 0 {
                tracing::info!(
                    camera = %self.camera.id,
                    "{} access unit(s) before the first keyframe skipped",
                    held.skipped
                );
                held.skipped = 0;
            }
            held.start = held.units.len();
        }
        let now_us = unit.capture_us;
        held.units.push((unit, idr));
        let open_for_us = now_us - held.units[held.start].0.capture_us;
        if held.start > 0 {
            // Complete intervals are held: decode them when a decoder is free, waiting for one
            // at most a frame interval at a time (then the camera's next unit is read, and it
            // asks again, keeping its place in line); past MAX_WAIT, wait as long as it takes.
            let patience = if open_for_us >= MAX_WAIT.as_micros() as i64 {
                None
            } else {
                Some(Duration::from_micros(
                    chain.interval_us.clamp(5_000, 100_000) as u64,
                ))
            };
            self.decode_held(pool, held, chain, patience)?;
        }
        if open_for_us > MAX_HOLD.as_micros() as i64 {
            tracing::warn!(
                camera = %self.camera.id,
                "keyframe interval longer than {MAX_HOLD:?}: this camera now decodes on its own \
                 decoder (about 15 MB at 720p) until it restarts, instead of holding its video \
                 for the shared ones (media.decoders)"
            );
            self.decode_held(pool, held, chain, None)?;
            let mut own = self.own_decoder()?;
            own.resume(held.memory);
            for (unit, _) in std::mem::take(&mut held.units) {
                self.feed(&mut own, chain, unit)?;
            }
            *decoding = Decoding::Own(own);
        }
        Ok(())
    }

    /// Decodes the held complete keyframe intervals (all held units at the end of a file) on a
    /// decoder leased from the pool, flushes it and gives it back. Waits for a decoder at most
    /// `patience` (then does nothing; `None`: as long as it takes, dropping the intervals if
    /// stopped meanwhile). Cameras waiting are served in the order their intervals completed.
    fn decode_held(
        &self,
        pool: &DecoderPool,
        held: &mut Held,
        chain: &mut Chain,
        patience: Option<Duration>,
    ) -> Result<(), SourceError> {
        if held.start == 0 {
            return Ok(());
        }
        let id = self.camera.id.as_str();
        // Complete since the unit that closed the last interval arrived (at the end of a file:
        // its last unit).
        let since = held
            .units
            .get(held.start)
            .or(held.units.last())
            .map_or(0, |(u, _)| u.capture_us);
        let lease = pool
            .lease(since, patience.map(|p| Instant::now() + p), || {
                self.shared.status.heartbeat("source", Some(id));
                self.stop.load(Ordering::Relaxed)
            })
            .map_err(|e| self.error(e.to_string()))?;
        let Some(mut decoder) = lease else {
            if patience.is_none() {
                held.units.drain(..held.start);
                held.start = 0;
            }
            return Ok(());
        };
        chain
            .m
            .decoder_wait
            .observe((now_us() - since).max(0) as f64 / 1e6);
        decoder.resume(held.memory);
        let complete = std::mem::take(&mut held.start);
        chain.burst = Some(Burst::default());
        let decoded = self.decode_intervals(&mut decoder, chain, held.units.drain(..complete));
        self.end_interval(chain);
        chain.burst = None;
        held.memory = decoder.memory();
        decoded
    }

    /// Decodes complete keyframe intervals in one go, each interval's last frame marked.
    fn decode_intervals(
        &self,
        decoder: &mut H264Decoder,
        chain: &mut Chain,
        units: impl Iterator<Item = (EncodedUnit, bool)>,
    ) -> Result<(), SourceError> {
        for (k, (unit, idr)) in units.enumerate() {
            if k > 0 && idr {
                // The end of an interval: its held-back pictures come before the IDR's.
                self.drain(decoder, chain)?;
                self.end_interval(chain);
            }
            self.feed(decoder, chain, unit)?;
        }
        self.drain(decoder, chain)
    }

    /// Queues the interval's last frame, marked with how many frames the interval gave.
    fn end_interval(&self, chain: &mut Chain) {
        let Some(burst) = &mut chain.burst else {
            return;
        };
        let frames = std::mem::take(&mut burst.frames);
        if let Some(mut last) = burst.last.take() {
            last.interval_end = Some(frames);
            self.queue(chain, last);
        }
    }

    /// Puts a frame on the camera's queue (counting the oldest it evicts, if full).
    fn queue(&self, chain: &Chain, frame: CapturedFrame) {
        if self.queue.push(frame).is_some() {
            chain.m.dropped.inc();
        }
    }

    /// Decodes one access unit; its picture, if one is ready, goes down the chain.
    fn feed(
        &self,
        decoder: &mut H264Decoder,
        chain: &mut Chain,
        unit: EncodedUnit,
    ) -> Result<(), SourceError> {
        let t = Instant::now();
        match decoder.decode_picture(&unit.annexb) {
            Ok(Some(picture)) => {
                chain.m.decode_time.observe(t.elapsed().as_secs_f64());
                self.frame(chain, picture.view(), &unit)?;
            }
            Ok(None) => {}
            Err(e) => {
                chain.m.decode_errors.inc();
                tracing::warn!(
                    camera = %self.camera.id,
                    capture_us = unit.capture_us,
                    "undecodable access unit skipped: {e}"
                );
            }
        }
        if let Some(prev) = &chain.last {
            chain.interval_us = (unit.capture_us - prev.capture_us).max(1);
        }
        chain.last = Some(unit);
        Ok(())
    }

    /// The pictures the decoder still holds (a reordering stream's last ones) go down the chain,
    /// one frame interval apart after the last unit (the sampler keys on capture time).
    fn drain(&self, decoder: &mut H264Decoder, chain: &mut Chain) -> Result<(), SourceError> {
        let flushed = decoder.flush().map_err(|e| self.error(e.to_string()))?;
        let Some(last) = chain.last.take() else {
            return Ok(());
        };
        for (k, picture) in flushed.into_iter().enumerate() {
            let capture_us = last.capture_us + chain.interval_us * (k as i64 + 1);
            let unit = EncodedUnit {
                annexb: Vec::new(),
                capture_us,
                truth: last.truth.clone(),
                source_size: last.source_size,
            };
            self.frame(chain, picture.view(), &unit)?;
        }
        chain.last = Some(last);
        Ok(())
    }

    /// One decoded picture: count it, sample it, encode it, queue it.
    fn frame(
        &self,
        chain: &mut Chain,
        picture: YuvView<'_>,
        unit: &EncodedUnit,
    ) -> Result<(), SourceError> {
        let id = self.camera.id.as_str();
        chain.m.decoded.inc();
        self.shared.status.camera_frame(id);
        chain.m.up.set(1);
        chain.m.last_frame.set(unit.capture_us as f64 / 1e6);
        if !chain.sampler.keep(unit.capture_us) {
            return Ok(());
        }
        let t = Instant::now();
        let jpeg = chain
            .encoder
            .encode_view(picture)
            .map_err(|e| self.error(format!("JPEG encoding failed: {e}")))?;
        chain.m.encode_time.observe(t.elapsed().as_secs_f64());
        chain.m.sampled.inc();
        let out = chain.encoder.out_size();
        let size = if unit.truth.is_empty() {
            (picture.width, picture.height)
        } else {
            unit.source_size
        };
        let truth = unit
            .truth
            .iter()
            .map(|b| TruthBox {
                bbox: scale_box(b.bbox, size, out),
                ..b.clone()
            })
            .collect();
        let frame = CapturedFrame {
            seq: chain.seq,
            capture_us: unit.capture_us,
            width: out.0,
            height: out.1,
            jpeg,
            truth,
            interval_end: None,
        };
        chain.seq += 1;
        let frame = match &mut chain.burst {
            Some(burst) => {
                burst.frames += 1;
                burst.last.replace(frame)
            }
            None => Some(frame),
        };
        if let Some(frame) = frame {
            self.queue(chain, frame);
        }
        Ok(())
    }
}
