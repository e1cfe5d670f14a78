//! `UploaderActor`: makes a processed batch durable. Receives `Store` from the consumer's batch
//! tasks; writes every annotated frame, then the results JSON (which marks the batch complete), under
//! deterministic keys, so a redelivered batch overwrites the same objects. Runs on tokio's blocking
//! pool. Storage errors are transient (retried with backoff by the caller; the offset is not
//! committed meanwhile).

use super::annotator::Annotated;
use super::inference::Detections;
use super::{Life, PanicGuard, Retire, StageError};
use crate::media::TruthBox;
use crate::storage::results::{self, BatchResults, FrameResults, Model, Timings};
use crate::storage::{ObjectStore, keys};
use crate::wire::FrameBatch;
use actix::prelude::*;
use std::sync::Arc;
use std::time::Instant;

pub struct UploaderActor {
    store: Arc<dyn ObjectStore>,
    prefix: String,
    life: Life,
    _guard: PanicGuard,
}

impl UploaderActor {
    pub fn new(store: Arc<dyn ObjectStore>, prefix: String, life: Life, guard: PanicGuard) -> Self {
        Self {
            store,
            prefix,
            life,
            _guard: guard,
        }
    }
}

impl Actor for UploaderActor {
    type Context = Context<Self>;
    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.set_mailbox_capacity(64);
        let delay = self.life.starting();
        ctx.run_later(delay, |a, _| a.life.running());
        ctx.run_interval(std::time::Duration::from_secs(1), |a, _| a.life.heartbeat());
    }
}

impl Supervised for UploaderActor {
    fn restarting(&mut self, _: &mut Context<Self>) {
        self.life.restarting();
    }
}

/// Store a processed batch; answers with the results key once everything is durable.
#[derive(Message, Clone)]
#[rtype(result = "Result<String, StageError>")]
pub struct Store {
    pub batch: Arc<FrameBatch>,
    pub detections: Detections,
    pub annotated: Annotated,
    pub timings: Timings,
    pub model: Model,
}

impl Handler<Store> for UploaderActor {
    type Result = ResponseFuture<Result<String, StageError>>;
    fn handle(&mut self, msg: Store, _: &mut Context<Self>) -> Self::Result {
        let (store, prefix) = (self.store.clone(), self.prefix.clone());
        let metrics = self.life.shared.metrics.clone();
        let status = self.life.shared.status.clone();
        Box::pin(async move {
            let t = Instant::now();
            let written =
                super::blocking("store", move || write_batch(&*store, &prefix, msg)).await;
            match &written {
                Ok(_) => status.downstream.set_storage_failing(false),
                Err(e) if !e.permanent => status.downstream.set_storage_failing(true),
                Err(_) => {}
            }
            let key = written?;
            metrics
                .stage_duration
                .with_label_values(&["store"])
                .observe(t.elapsed().as_secs_f64());
            Ok(key)
        })
    }
}

fn write_batch(
    store: &dyn ObjectStore,
    prefix: &str,
    mut msg: Store,
) -> Result<String, StageError> {
    let b = &msg.batch;
    let first = b
        .frames
        .first()
        .map(|f| f.capture_time_us)
        .unwrap_or_default();
    let err = |e: crate::storage::StorageError| StageError::transient("store", e.to_string());
    let t = Instant::now();
    let mut frames = Vec::with_capacity(b.frames.len());
    let mut objects = Vec::with_capacity(b.frames.len());
    for (i, f) in b.frames.iter().enumerate() {
        let key = keys::frame_key(prefix, &b.camera_id, first, &b.batch_id, f.seq);
        let jpeg = msg.annotated.get(i).ok_or_else(|| {
            StageError::permanent(
                "store",
                format!("batch {}: frame {i} was not annotated", b.batch_id),
            )
        })?;
        objects.push((key.clone(), jpeg.clone(), "image/jpeg"));
        frames.push(FrameResults {
            seq: f.seq,
            capture_time: results::rfc3339_micros(f.capture_time_us),
            width: f.width,
            height: f.height,
            annotated_key: key,
            detections: msg.detections.get(i).cloned().unwrap_or_default(),
            truth: f
                .truth
                .iter()
                .map(|t| TruthBox {
                    label: t.label.clone(),
                    bbox: t.bbox.map(|x| [x.x1, x.y1, x.x2, x.y2]).unwrap_or_default(),
                    fully_visible: t.fully_visible,
                })
                .collect(),
        });
    }
    // Frames first (concurrently where the store can); the results object, last, marks the
    // batch complete.
    store.put_all(objects).map_err(err)?;
    msg.timings.store = t.elapsed().as_secs_f64() * 1e3;
    let doc = BatchResults {
        schema: results::SCHEMA.into(),
        camera: b.camera_id.clone(),
        batch_id: b.batch_id.clone(),
        sequence: b.sequence,
        source_type: b.source_type.clone(),
        model: msg.model.clone(),
        frames,
        timings_ms: msg.timings.clone(),
    };
    let key = keys::results_key(prefix, &b.camera_id, first, &b.batch_id);
    let json = serde_json::to_vec_pretty(&doc)
        .map_err(|e| StageError::permanent("store", e.to_string()))?;
    store.put(&key, &json, "application/json").map_err(err)?;
    Ok(key)
}

impl Handler<Retire> for UploaderActor {
    type Result = ();
    fn handle(&mut self, _: Retire, ctx: &mut Context<Self>) {
        self.life.retire();
        ctx.stop();
    }
}
