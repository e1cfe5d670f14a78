//! `SourceActor`: one per camera, on the camera's own arbiter. Owns the camera's capture thread,
//! which reads access units from the camera's `FrameSource`, decodes them (openh264), samples to
//! `sample_fps`, resizes and JPEG-encodes the kept frames, and hands them to the camera's
//! `BatcherActor` (`try_send`: when the batcher's mailbox is full the frame is dropped and counted,
//! a live camera cannot wait). Receives `WorkerExited` from its thread and `Retire` from the root.
//! Fails when the source cannot be opened or read, or the thread panics: the actor stops, actix's
//! supervisor restarts it after the backoff delay, and the thread is started afresh.

use super::batcher::{BatcherActor, CapturedFrame};
use super::{Life, PanicGuard, Retire, Shared};
use crate::config::{CameraConfig, SourceUrl};
use crate::media::TruthBox;
use crate::media::h264::H264Decoder;
use crate::media::jpeg::{FrameEncoder, scale_box};
use crate::media::source::Sampler;
use actix::prelude::*;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

pub struct SourceActor {
    camera: CameraConfig,
    url: SourceUrl,
    batcher: Addr<BatcherActor>,
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
        batcher: Addr<BatcherActor>,
        life: Life,
        guard: PanicGuard,
    ) -> Self {
        life.shared
            .status
            .camera_registered(&camera.id, &camera.url);
        Self {
            camera,
            url,
            batcher,
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
        let (camera, url, shared, batcher, me) = (
            self.camera.clone(),
            self.url.clone(),
            self.life.shared.clone(),
            self.batcher.clone(),
            ctx.address(),
        );
        let spawned = std::thread::Builder::new()
            .name(format!("cam-{}", camera.id))
            .spawn(move || {
                let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    capture(&camera, &url, &shared, &batcher, &stop)
                }));
                let result = match outcome {
                    Ok(r) => r,
                    Err(p) => Err(format!(
                        "camera {}: capture thread panicked: {}",
                        camera.id,
                        super::panic_message(p)
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
        // While no capture thread runs (backoff), the actor itself shows it is alive.
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

/// The capture thread ended: `Ok` when the source finished, `Err` with the reason otherwise.
#[derive(Message)]
#[rtype(result = "()")]
pub struct WorkerExited {
    pub worker: u64,
    pub result: Result<(), String>,
}

impl Handler<WorkerExited> for SourceActor {
    type Result = ();
    fn handle(&mut self, msg: WorkerExited, ctx: &mut Context<Self>) {
        if self.life.retired || msg.worker != self.worker || self.stop.is_none() {
            return;
        }
        self.stop = None;
        match msg.result {
            Ok(()) => {
                tracing::info!(camera = %self.camera.id, "source finished");
                self.life.set_state(crate::status::ActorState::Stopped);
            }
            Err(e) => {
                self.life.failed(&e);
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

/// The capture loop: runs until `stop` is set, the source ends (`Ok`) or fails (`Err`).
fn capture(
    camera: &CameraConfig,
    url: &SourceUrl,
    shared: &Shared,
    batcher: &Addr<BatcherActor>,
    stop: &AtomicBool,
) -> Result<(), String> {
    let id = camera.id.as_str();
    let m = &shared.metrics;
    let mut source = shared.opener.open(camera, url).map_err(|e| e.to_string())?;
    let mut decoder = H264Decoder::new().map_err(|e| format!("camera {id}: {e}"))?;
    let mut encoder = FrameEncoder::new(camera.width, camera.height, camera.jpeg_quality)
        .map_err(|e| format!("camera {id}: {e}"))?;
    let mut sampler = Sampler::new(camera.sample_fps);
    let mut seq = 0u64;
    let out = (camera.width, camera.height);
    let (captured, decoded, sampled) = (
        m.frames_captured.with_label_values(&[id]),
        m.frames_decoded.with_label_values(&[id]),
        m.frames_sampled.with_label_values(&[id]),
    );
    let (decode_t, encode_t) = (
        m.stage_duration.with_label_values(&["decode"]),
        m.stage_duration.with_label_values(&["encode"]),
    );
    while !stop.load(Ordering::Relaxed) {
        shared.status.heartbeat("source", Some(id));
        let Some(unit) = source.next_unit().map_err(|e| e.to_string())? else {
            return Ok(());
        };
        captured.inc();
        let t = Instant::now();
        let picture = match decoder.decode(&unit.annexb) {
            Ok(Some(p)) => p,
            Ok(None) => continue,
            Err(e) => {
                m.decode_errors.with_label_values(&[id]).inc();
                tracing::warn!(
                    camera = id,
                    capture_us = unit.capture_us,
                    "undecodable access unit skipped: {e}"
                );
                continue;
            }
        };
        decode_t.observe(t.elapsed().as_secs_f64());
        decoded.inc();
        shared.status.camera_frame(id);
        m.camera_up.with_label_values(&[id]).set(1);
        m.camera_last_frame
            .with_label_values(&[id])
            .set(unit.capture_us as f64 / 1e6);
        if !sampler.keep(unit.capture_us) {
            continue;
        }
        let t = Instant::now();
        let jpeg = encoder
            .encode(&picture)
            .map_err(|e| format!("camera {id}: JPEG encoding failed: {e}"))?;
        encode_t.observe(t.elapsed().as_secs_f64());
        sampled.inc();
        let truth = unit
            .truth
            .into_iter()
            .map(|b| TruthBox {
                bbox: scale_box(b.bbox, unit.source_size, out),
                ..b
            })
            .collect();
        let frame = CapturedFrame {
            seq,
            capture_us: unit.capture_us,
            width: out.0,
            height: out.1,
            jpeg,
            truth,
        };
        seq += 1;
        match batcher.try_send(frame) {
            Ok(()) => {}
            Err(SendError::Full(_)) => m
                .frames_dropped
                .with_label_values(&[id, "batcher_full"])
                .inc(),
            Err(SendError::Closed(_)) => return Err(format!("camera {id}: batcher is gone")),
        }
    }
    Ok(())
}
