//! `InferenceActor`: runs the configured detector over a batch's frames. Receives `Infer` from the
//! consumer's batch tasks and answers with one list of detections per frame. Protocol `builtin`
//! runs the motion detector on tokio's blocking pool, at most `inference.workers` batches at once,
//! each bounded by `inference.timeout` (a timeout is transient and retried; an undecodable frame or a
//! panic is permanent for that batch).

use super::{Life, PanicGuard, Retire, StageError};
use crate::config::InferenceConfig;
use crate::inference::Detection;
use crate::inference::motion::{MotionConfig, MotionDetector};
use crate::wire::FrameBatch;
use actix::prelude::*;
use std::sync::Arc;
use std::time::Instant;
use tokio::sync::Semaphore;

pub type Detections = Arc<Vec<Vec<Detection>>>;

pub struct InferenceActor {
    cfg: InferenceConfig,
    detector: Arc<MotionDetector>,
    permits: Arc<Semaphore>,
    life: Life,
    _guard: PanicGuard,
}

impl InferenceActor {
    pub fn new(cfg: InferenceConfig, life: Life, guard: PanicGuard) -> Self {
        let detector = Arc::new(MotionDetector::new(MotionConfig {
            threshold: cfg.motion_threshold,
            min_area_fraction: cfg.min_area_fraction,
            ..MotionConfig::default()
        }));
        let permits = Arc::new(Semaphore::new(cfg.workers));
        Self {
            cfg,
            detector,
            permits,
            life,
            _guard: guard,
        }
    }
}

impl Actor for InferenceActor {
    type Context = Context<Self>;
    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.set_mailbox_capacity(64);
        let delay = self.life.starting();
        ctx.run_later(delay, |a, _| a.life.running());
        ctx.run_interval(std::time::Duration::from_secs(1), |a, _| a.life.heartbeat());
    }
}

impl Supervised for InferenceActor {
    fn restarting(&mut self, _: &mut Context<Self>) {
        self.life.restarting();
    }
}

/// Detect objects in every frame of a batch.
#[derive(Message, Clone)]
#[rtype(result = "Result<Detections, StageError>")]
pub struct Infer(pub Arc<FrameBatch>);

impl Handler<Infer> for InferenceActor {
    type Result = ResponseFuture<Result<Detections, StageError>>;
    fn handle(&mut self, msg: Infer, _: &mut Context<Self>) -> Self::Result {
        let (detector, permits, timeout) = (
            self.detector.clone(),
            self.permits.clone(),
            self.cfg.timeout,
        );
        let metrics = self.life.shared.metrics.clone();
        Box::pin(async move {
            let _permit = permits
                .acquire_owned()
                .await
                .map_err(|_| StageError::transient("inference", "detector pool closed"))?;
            let t = Instant::now();
            let batch = msg.0;
            let batch_id = batch.batch_id.clone();
            let work = super::blocking("inference", move || {
                let jpegs: Vec<&[u8]> = batch.frames.iter().map(|f| f.jpeg.as_slice()).collect();
                detector.detect_jpegs(&jpegs).map_err(|e| {
                    StageError::permanent("inference", format!("batch {}: {e}", batch.batch_id))
                })
            });
            let dets = tokio::time::timeout(timeout, work).await.map_err(|_| {
                StageError::transient(
                    "inference",
                    format!("batch {batch_id}: no answer within {timeout:?}"),
                )
            })??;
            metrics
                .stage_duration
                .with_label_values(&["inference"])
                .observe(t.elapsed().as_secs_f64());
            for d in dets.iter().flatten() {
                metrics.detections.with_label_values(&[&d.label]).inc();
            }
            Ok(Arc::new(dets))
        })
    }
}

impl Handler<Retire> for InferenceActor {
    type Result = ();
    fn handle(&mut self, _: Retire, ctx: &mut Context<Self>) {
        self.life.retire();
        ctx.stop();
    }
}
