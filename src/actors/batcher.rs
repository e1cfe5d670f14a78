//! `BatcherActor`: one per camera, beside its source. Takes `CapturedFrame`s from the camera's
//! `FrameQueue` (a stream), closes a batch at `batch.frames` frames or `batch.max_wait` after its
//! first frame (whichever comes first), encodes it and hands it to the producer, waiting until the
//! bus has acknowledged it (retrying forever: a batch handed over is never dropped). While it
//! waits it takes no frames, so the queue fills and the capture thread drops the oldest (counted).
//! `Flush` batches everything queued plus the partial batch (removal, shutdown). A restart loses
//! only the partial batch in hand; the queue outlives it.

use super::producer::{Produce, ProducerActor};
use super::{Life, PanicGuard, Retire, Slot};
use crate::bus::OutMessage;
use crate::config::BatchConfig;
use crate::media::TruthBox;
use crate::wire::{self, v1};
use actix::prelude::*;
use std::sync::Arc;

/// One sampled, resized, JPEG-encoded frame of a camera.
#[derive(Message, Debug, Clone)]
#[rtype(result = "()")]
pub struct CapturedFrame {
    pub seq: u64,
    pub capture_us: i64,
    pub width: u32,
    pub height: u32,
    pub jpeg: Vec<u8>,
    pub truth: Vec<TruthBox>,
}

/// The bounded queue between a camera's capture thread and its batcher. When full, a push evicts
/// the oldest frame (returned, so the caller counts it): a live camera never waits. Lives as long
/// as the camera unit, across restarts of either actor.
pub struct FrameQueue {
    frames: crossbeam_queue::ArrayQueue<CapturedFrame>,
    ready: tokio::sync::Notify,
}

impl FrameQueue {
    pub fn new(capacity: usize) -> Arc<Self> {
        Arc::new(Self { frames: crossbeam_queue::ArrayQueue::new(capacity.max(1)), ready: tokio::sync::Notify::new() })
    }

    /// Adds a frame; returns the oldest one if it had to make room.
    pub fn push(&self, frame: CapturedFrame) -> Option<CapturedFrame> {
        let evicted = self.frames.force_push(frame);
        self.ready.notify_one();
        evicted
    }

    pub fn len(&self) -> usize {
        self.frames.len()
    }

    pub fn is_empty(&self) -> bool {
        self.frames.is_empty()
    }

    /// The frames as they arrive (never ends).
    pub fn stream(self: Arc<Self>) -> impl futures::Stream<Item = CapturedFrame> {
        futures::stream::unfold(self, |q| async move {
            loop {
                if let Some(f) = q.frames.pop() {
                    return Some((f, q));
                }
                q.ready.notified().await;
            }
        })
    }
}

/// Pure batch-closing logic: counts frames; the actor owns the timer.
#[derive(Debug)]
pub struct Assembler {
    max_frames: usize,
    frames: Vec<CapturedFrame>,
}

impl Assembler {
    pub fn new(max_frames: usize) -> Self {
        Self {
            max_frames: max_frames.max(1),
            frames: Vec::new(),
        }
    }
    /// Adds a frame; returns the batch when it is full.
    pub fn push(&mut self, f: CapturedFrame) -> Option<Vec<CapturedFrame>> {
        self.frames.push(f);
        (self.frames.len() >= self.max_frames).then(|| std::mem::take(&mut self.frames))
    }
    /// Takes the partial batch, if any.
    pub fn take(&mut self) -> Option<Vec<CapturedFrame>> {
        (!self.frames.is_empty()).then(|| std::mem::take(&mut self.frames))
    }
    pub fn len(&self) -> usize {
        self.frames.len()
    }
    pub fn is_empty(&self) -> bool {
        self.frames.is_empty()
    }
}

pub struct BatcherActor {
    camera: String,
    source_type: &'static str,
    jpeg_quality: u32,
    cfg: BatchConfig,
    queue: Arc<FrameQueue>,
    producer: Slot<ProducerActor>,
    assembler: Assembler,
    sequence: u64,
    /// Bumped per batch so a stale `max_wait` timer does nothing.
    opened: u64,
    life: Life,
    _guard: PanicGuard,
}

/// What a batcher needs to know about its camera.
pub struct BatcherSpec {
    pub camera: String,
    pub source_type: &'static str,
    pub jpeg_quality: u8,
    pub batch: BatchConfig,
    pub queue: Arc<FrameQueue>,
    pub producer: Slot<ProducerActor>,
}

impl BatcherActor {
    pub fn new(spec: BatcherSpec, life: Life, guard: PanicGuard) -> Self {
        let assembler = Assembler::new(spec.batch.frames);
        Self {
            camera: spec.camera,
            source_type: spec.source_type,
            jpeg_quality: spec.jpeg_quality as u32,
            cfg: spec.batch,
            queue: spec.queue,
            producer: spec.producer,
            assembler,
            sequence: 0,
            opened: 0,
            life,
            _guard: guard,
        }
    }

    /// Turns closed batches into bus messages (assigning sequence numbers).
    fn build(&mut self, frames: Vec<CapturedFrame>) -> (String, OutMessage) {
        let first = frames.first().map(|f| f.capture_us).unwrap_or_default();
        let batch_id = wire::batch_id(&self.camera, first, self.sequence);
        let batch = v1::FrameBatch {
            camera_id: self.camera.clone(),
            batch_id: batch_id.clone(),
            sequence: self.sequence,
            frames: frames.into_iter().map(to_wire_frame).collect(),
            created_time_us: crate::media::source::now_us(),
            source_type: self.source_type.to_string(),
            jpeg_quality: self.jpeg_quality,
        };
        self.sequence += 1;
        let (payload, headers) = wire::encode(&batch);
        (batch_id, OutMessage { key: self.camera.clone(), payload, headers })
    }

    /// Hands a closed batch to the producer and takes no more frames until it is acked.
    fn emit(&mut self, frames: Vec<CapturedFrame>, ctx: &mut Context<Self>) {
        let fut = self.hand_over(vec![frames]);
        ctx.wait(fut);
    }

    /// The future that hands closed batches over, in order, and resolves once the bus acknowledged
    /// them all.
    fn hand_over(&mut self, batches: Vec<Vec<CapturedFrame>>) -> impl ActorFuture<Self, Output = ()> + 'static {
        self.opened += 1;
        let messages: Vec<(String, Arc<OutMessage>)> = batches
            .into_iter()
            .map(|frames| {
                let (id, msg) = self.build(frames);
                (id, Arc::new(msg))
            })
            .collect();
        let (slot, shared, camera) = (self.producer.clone(), self.life.shared.clone(), self.camera.clone());
        async move {
            for (batch_id, msg) in messages {
                match super::call(&slot, &shared, "produce", || Produce(msg.clone())).await {
                    Ok((p, o)) => tracing::debug!(camera, batch_id, partition = p, offset = o, "batch on the bus"),
                    Err(e) => {
                        shared.metrics.stage_errors.with_label_values(&["produce"]).inc();
                        tracing::error!(camera, batch_id, "batch rejected by the bus: {e}");
                    }
                }
            }
        }
        .into_actor(self)
    }
}

fn to_wire_frame(f: CapturedFrame) -> v1::Frame {
    v1::Frame {
        seq: f.seq,
        capture_time_us: f.capture_us,
        width: f.width,
        height: f.height,
        jpeg: f.jpeg,
        truth: f
            .truth
            .into_iter()
            .map(|t| v1::TruthBox {
                label: t.label,
                bbox: Some(v1::Box { x1: t.bbox[0], y1: t.bbox[1], x2: t.bbox[2], y2: t.bbox[3] }),
                fully_visible: t.fully_visible,
            })
            .collect(),
    }
}

impl Actor for BatcherActor {
    type Context = Context<Self>;
    fn started(&mut self, ctx: &mut Context<Self>) {
        let delay = self.life.starting();
        ctx.run_later(delay, |a, ctx| {
            if a.life.retired {
                return;
            }
            a.life.running();
            ctx.add_stream(a.queue.clone().stream());
        });
        ctx.run_interval(std::time::Duration::from_secs(1), |a, _| a.life.heartbeat());
    }
}

impl Supervised for BatcherActor {
    fn restarting(&mut self, _: &mut Context<Self>) {
        self.life.restarting();
    }
}

impl StreamHandler<CapturedFrame> for BatcherActor {
    fn handle(&mut self, frame: CapturedFrame, ctx: &mut Context<Self>) {
        let first = self.assembler.is_empty();
        if let Some(frames) = self.assembler.push(frame) {
            self.emit(frames, ctx);
        } else if first {
            let opened = self.opened;
            ctx.run_later(self.cfg.max_wait, move |a, ctx| {
                if a.opened == opened
                    && let Some(frames) = a.assembler.take()
                {
                    a.emit(frames, ctx);
                }
            });
        }
    }

    /// The queue's stream never ends; nothing to do.
    fn finished(&mut self, _: &mut Context<Self>) {}
}

/// Batches everything queued and the partial batch now; answers once all are on the bus.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Flush;

impl Handler<Flush> for BatcherActor {
    type Result = AtomicResponse<Self, ()>;
    fn handle(&mut self, _: Flush, _: &mut Context<Self>) -> Self::Result {
        let mut batches = Vec::new();
        while let Some(frame) = self.queue.frames.pop() {
            batches.extend(self.assembler.push(frame));
        }
        batches.extend(self.assembler.take());
        AtomicResponse::new(Box::pin(self.hand_over(batches)))
    }
}

impl Handler<Retire> for BatcherActor {
    type Result = ();
    fn handle(&mut self, _: Retire, ctx: &mut Context<Self>) {
        self.life.retire();
        ctx.stop();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(seq: u64) -> CapturedFrame {
        CapturedFrame {
            seq,
            capture_us: seq as i64 * 200_000,
            width: 8,
            height: 8,
            jpeg: vec![1],
            truth: vec![],
        }
    }

    /// Ensures a batch closes exactly at the frame count, and the partial rest can be taken.
    #[test]
    fn closes_at_frame_count() {
        let mut a = Assembler::new(3);
        assert!(a.push(frame(0)).is_none());
        assert!(a.push(frame(1)).is_none());
        let b = a.push(frame(2)).expect("full");
        assert_eq!(b.iter().map(|f| f.seq).collect::<Vec<_>>(), vec![0, 1, 2]);
        assert!(a.take().is_none());
        a.push(frame(3));
        assert_eq!(a.take().map(|b| b.len()), Some(1));
    }
}
