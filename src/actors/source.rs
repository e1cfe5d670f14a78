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
use crate::media::h264::{H264Decoder, YuvView};
use crate::media::jpeg::{Codec, FrameEncoder, scale_box};
use crate::media::source::{EncodedUnit, Sampler, SourceError};
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
        let (camera, url, codec, shared, queue, me) = (
            self.camera.clone(),
            self.url.clone(),
            self.codec,
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
        }
    }
}

impl Capture<'_> {
    /// Runs until `stop` is set or the source ends (`Ok`), or fails (`Err`).
    fn run(&self) -> Result<(), SourceError> {
        let id = self.camera.id.as_str();
        let err = |reason: String| SourceError::Read {
            camera: id.to_string(),
            reason,
        };
        let mut decoder = H264Decoder::new().map_err(|e| err(e.to_string()))?;
        let mut chain = Chain {
            encoder: FrameEncoder::with_codec(
                self.camera.width,
                self.camera.height,
                self.camera.jpeg_quality,
                self.codec,
            )
            .map_err(|e| err(e.to_string()))?,
            sampler: Sampler::new(self.camera.sample_fps),
            seq: 0,
            m: CameraMetrics::new(&self.shared.metrics, id),
        };
        let mut source = self.shared.opener.open(self.camera, self.url)?;
        let mut last: Option<EncodedUnit> = None;
        let mut prev_capture_us = None;
        while !self.stop.load(Ordering::Relaxed) {
            self.shared.status.heartbeat("source", Some(id));
            match source.next_unit()? {
                Some(unit) => {
                    chain.m.captured.inc();
                    let t = Instant::now();
                    match decoder.decode_picture(&unit.annexb) {
                        Ok(Some(picture)) => {
                            chain.m.decode_time.observe(t.elapsed().as_secs_f64());
                            self.frame(&mut chain, picture.view(), &unit)?;
                        }
                        Ok(None) => {}
                        Err(e) => {
                            chain.m.decode_errors.inc();
                            tracing::warn!(
                                camera = id,
                                capture_us = unit.capture_us,
                                "undecodable access unit skipped: {e}"
                            );
                        }
                    }
                    prev_capture_us = last.as_ref().map(|u: &EncodedUnit| u.capture_us);
                    last = Some(unit);
                }
                None => {
                    // End of a file: the decoder still holds reordered pictures.
                    let flushed = decoder.flush().map_err(|e| err(e.to_string()))?;
                    if let Some(unit) = &last {
                        // Held-back pictures come after the last unit, one frame interval apart
                        // (the sampler keys on capture time, so they need their own).
                        let interval =
                            (unit.capture_us - prev_capture_us.unwrap_or(unit.capture_us)).max(1);
                        for (k, picture) in flushed.into_iter().enumerate() {
                            let capture_us = unit.capture_us + interval * (k as i64 + 1);
                            self.frame(
                                &mut chain,
                                picture.view(),
                                &EncodedUnit {
                                    capture_us,
                                    ..unit.clone()
                                },
                            )?;
                        }
                    }
                    if !self.camera.loop_file {
                        return Ok(());
                    }
                    decoder = H264Decoder::new().map_err(|e| err(e.to_string()))?;
                    source = self.shared.opener.open(self.camera, self.url)?;
                }
            }
        }
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
            .map_err(|e| SourceError::Read {
                camera: id.to_string(),
                reason: format!("JPEG encoding failed: {e}"),
            })?;
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
        };
        chain.seq += 1;
        if self.queue.push(frame).is_some() {
            chain.m.dropped.inc();
        }
        Ok(())
    }
}
