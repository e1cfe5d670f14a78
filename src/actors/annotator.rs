//! `AnnotatorActor`: draws each frame's detections (class-coloured boxes, `label confidence` text)
//! and re-encodes the frames as JPEG. Receives `Annotate` from the consumer's batch tasks; the
//! drawing runs on tokio's blocking pool, at most `annotator.workers` batches at once. A frame with
//! no detections is stored as received (nothing to draw, so no decode and re-encode). An
//! undecodable frame or a panic is a permanent error for that batch.

use super::inference::Detections;
use super::{Life, PanicGuard, Retire, StageError};
use crate::config::AnnotatorConfig;
use crate::media::annotate::Annotator;
use crate::media::jpeg::{Codec, DecodedFrames};
use crate::media::planes::DECODED;
use crate::wire::FrameBatch;
use actix::prelude::*;
use std::sync::Arc;
use std::time::Instant;
use tokio::sync::Semaphore;

pub type Annotated = Arc<Vec<Vec<u8>>>;

pub struct AnnotatorActor {
    cfg: AnnotatorConfig,
    codec: Codec,
    annotator: Option<Arc<Annotator>>,
    permits: Arc<Semaphore>,
    life: Life,
    _guard: PanicGuard,
}

impl AnnotatorActor {
    pub fn new(cfg: AnnotatorConfig, codec: Codec, life: Life, guard: PanicGuard) -> Self {
        let permits = Arc::new(Semaphore::new(cfg.workers));
        Self {
            cfg,
            codec,
            annotator: None,
            permits,
            life,
            _guard: guard,
        }
    }
}

impl Actor for AnnotatorActor {
    type Context = Context<Self>;
    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.set_mailbox_capacity(64);
        let delay = self.life.starting();
        ctx.run_later(delay, |a, ctx| match Annotator::with_codec(a.codec) {
            Ok(an) => {
                a.annotator = Some(Arc::new(an));
                a.life.running();
            }
            Err(e) => {
                a.life
                    .failed(&format!("annotator: cannot load the font: {e}"));
                ctx.stop();
            }
        });
        ctx.run_interval(std::time::Duration::from_secs(1), |a, _| a.life.heartbeat());
    }
}

impl Supervised for AnnotatorActor {
    fn restarting(&mut self, _: &mut Context<Self>) {
        self.life.restarting();
    }
}

/// Draw a batch's detections onto its frames.
#[derive(Message, Clone)]
#[rtype(result = "Result<Annotated, StageError>")]
pub struct Annotate {
    pub batch: Arc<FrameBatch>,
    pub detections: Detections,
    /// The frames already decoded (by the built-in detector), drawn on in place; a frame that
    /// is not there (remote inference, or taken by an earlier attempt) is decoded here.
    pub frames: Option<Arc<DecodedFrames>>,
}

impl Handler<Annotate> for AnnotatorActor {
    type Result = ResponseFuture<Result<Annotated, StageError>>;
    fn handle(&mut self, msg: Annotate, _: &mut Context<Self>) -> Self::Result {
        let (annotator, permits, quality) = (
            self.annotator.clone(),
            self.permits.clone(),
            self.cfg.jpeg_quality,
        );
        let metrics = self.life.shared.metrics.clone();
        Box::pin(async move {
            let annotator = annotator
                .ok_or_else(|| StageError::transient("annotate", "annotator not started yet"))?;
            let _permit = permits
                .acquire_owned()
                .await
                .map_err(|_| StageError::transient("annotate", "annotator pool closed"))?;
            let t = Instant::now();
            let out = super::blocking("annotate", move || {
                let Annotate {
                    batch,
                    detections,
                    frames,
                } = msg;
                batch
                    .frames
                    .iter()
                    .enumerate()
                    .map(|(i, f)| {
                        let dets = detections.get(i).map(Vec::as_slice).unwrap_or(&[]);
                        if dets.is_empty() {
                            // Nothing to draw: the frame as received is its annotated image
                            // (no decode, no second JPEG generation).
                            return Ok(f.jpeg.clone());
                        }
                        match frames.as_ref().and_then(|fr| fr.take(i)) {
                            Some(mut planes) => {
                                let jpeg = annotator.annotate_planes(&mut planes, dets, quality);
                                DECODED.give(planes);
                                jpeg
                            }
                            None => annotator.annotate_jpeg(&f.jpeg, dets, quality),
                        }
                        .map_err(|e| {
                            StageError::permanent(
                                "annotate",
                                format!("batch {} frame {}: {e}", batch.batch_id, f.seq),
                            )
                        })
                    })
                    .collect::<Result<Vec<_>, _>>()
            })
            .await?;
            metrics
                .stage_duration
                .with_label_values(&["annotate"])
                .observe(t.elapsed().as_secs_f64());
            Ok(Arc::new(out))
        })
    }
}

impl Handler<Retire> for AnnotatorActor {
    type Result = ();
    fn handle(&mut self, _: Retire, ctx: &mut Context<Self>) {
        self.life.retire();
        ctx.stop();
    }
}
