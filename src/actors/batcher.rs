//! `BatcherActor`: one per camera, beside its source. Takes `CapturedFrame`s from the camera's
//! `FrameQueue` (a stream), closes a batch at `batch.frames` frames or `batch.max_wait` after its
//! first frame (whichever comes first; with shared decoders also at the end of a keyframe interval
//! when the next would not fit, see [`Assembler`]), encodes it (`kafka.wire_format`) and hands it to the
//! producer, waiting until the bus has acknowledged it (retrying forever: a batch handed over is
//! never dropped). While it waits it takes no frames, so the queue fills and the capture thread drops
//! the oldest (counted). `Flush` batches everything queued plus the partial batch (removal,
//! shutdown). A restart loses only the partial batch in hand; the queue outlives it.
//!
//! Oversize guard: a message over `kafka.max_message_bytes` is never sent and never silently lost.
//! Without `kafka.claim_check` it is refused: an error naming camera, batch, size and limit (also in
//! `/status`), counted in `framewire_messages_rejected_total{reason="oversize"}`, and the camera
//! goes on. With claim-check the frames' JPEGs are first written to storage (`keys::claim_key`, on
//! the blocking pool, retried until durable) and the message carries their keys instead.
use super::producer::{Produce, ProducerActor};
use super::{Life, PanicGuard, Retire, Shared, Slot, StageError};
use crate::bus::OutMessage;
use crate::config::{BatchConfig, KafkaConfig, StorageConfig, WireFormat};
use crate::media::TruthBox;
use crate::storage::{ObjectStore, StorageError, keys};
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
    /// Set on the last frame of a keyframe interval decoded in one go on a shared decoder: how
    /// many frames that interval gave. The camera's next frames come only with its next interval.
    pub interval_end: Option<usize>,
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
        Arc::new(Self {
            frames: crossbeam_queue::ArrayQueue::new(capacity.max(1)),
            ready: tokio::sync::Notify::new(),
        })
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

/// Pure batch-closing logic: counts frames; the actor owns the timer. A batch also closes at the
/// end of a keyframe interval decoded in one go (shared decoders) when an interval as long would
/// not fit in it: else its frames would wait a whole interval more for the next one (a camera
/// that lost a frame would stay one interval late, its batches straddling two intervals).
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
        let next = f.interval_end;
        self.frames.push(f);
        let n = self.frames.len();
        let close = n >= self.max_frames || next.is_some_and(|next| n + next > self.max_frames);
        close.then(|| std::mem::take(&mut self.frames))
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

/// How batches go onto the bus: wire format, the bus's size limit, and where the frames of an
/// oversize batch go with claim-check. Built from `[kafka]` and `[storage]`.
#[derive(Clone)]
pub struct Output {
    pub format: WireFormat,
    pub max_message_bytes: usize,
    /// `Some` with `kafka.claim_check`.
    pub claims: Option<Claims>,
}

/// The store and key prefix claim-checked frames are written to.
#[derive(Clone)]
pub struct Claims {
    pub store: Arc<dyn ObjectStore>,
    pub prefix: String,
}

impl Output {
    pub fn new(kafka: &KafkaConfig, storage: &StorageConfig) -> Self {
        Self {
            format: kafka.wire_format,
            max_message_bytes: kafka.max_message_bytes,
            claims: kafka.claim_check.then(|| Claims {
                store: crate::storage::open(storage),
                prefix: storage.prefix.clone(),
            }),
        }
    }
}

pub struct BatcherActor {
    camera: String,
    source_type: &'static str,
    jpeg_quality: u32,
    cfg: BatchConfig,
    output: Output,
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
    pub output: Output,
}

impl BatcherActor {
    pub fn new(spec: BatcherSpec, life: Life, guard: PanicGuard) -> Self {
        let assembler = Assembler::new(spec.batch.frames);
        Self {
            camera: spec.camera,
            source_type: spec.source_type,
            jpeg_quality: spec.jpeg_quality as u32,
            cfg: spec.batch,
            output: spec.output,
            queue: spec.queue,
            producer: spec.producer,
            assembler,
            sequence: 0,
            opened: 0,
            life,
            _guard: guard,
        }
    }

    /// Turns a closed batch into a wire batch (assigning its sequence number).
    fn build(&mut self, frames: Vec<CapturedFrame>) -> v1::FrameBatch {
        let first = frames.first().map(|f| f.capture_us).unwrap_or_default();
        let now = crate::media::source::now_us();
        (self.life.shared.metrics).frame_ages("batched", now, frames.iter().map(|f| f.capture_us));
        let batch = v1::FrameBatch {
            camera_id: self.camera.clone(),
            batch_id: wire::batch_id(&self.camera, first, self.sequence),
            sequence: self.sequence,
            frames: frames.into_iter().map(to_wire_frame).collect(),
            created_time_us: now,
            source_type: self.source_type.to_string(),
            jpeg_quality: self.jpeg_quality,
        };
        self.sequence += 1;
        batch
    }

    /// Hands a closed batch to the producer and takes no more frames until it is acked.
    fn emit(&mut self, frames: Vec<CapturedFrame>, ctx: &mut Context<Self>) {
        let fut = self.hand_over(vec![frames]);
        ctx.wait(fut);
    }

    /// The future that hands closed batches over, in order, and resolves once the bus acknowledged
    /// them all (or, for an oversize batch without claim-check, once it was refused).
    fn hand_over(
        &mut self,
        batches: Vec<Vec<CapturedFrame>>,
    ) -> impl ActorFuture<Self, Output = ()> + 'static {
        self.opened += 1;
        let batches: Vec<v1::FrameBatch> = batches
            .into_iter()
            .map(|frames| self.build(frames))
            .collect();
        let (slot, shared, output) = (
            self.producer.clone(),
            self.life.shared.clone(),
            self.output.clone(),
        );
        async move {
            for batch in batches {
                let (camera, batch_id) = (batch.camera_id.clone(), batch.batch_id.clone());
                let Some(msg) = message(batch, &output, &shared).await else {
                    continue;
                };
                let msg = Arc::new(msg);
                match super::call(&slot, &shared, "produce", || Produce(msg.clone())).await {
                    Ok((p, o)) => tracing::debug!(
                        camera,
                        batch_id,
                        partition = p,
                        offset = o,
                        "batch on the bus"
                    ),
                    Err(e) => {
                        shared
                            .metrics
                            .stage_errors
                            .with_label_values(&["produce"])
                            .inc();
                        tracing::error!(camera, batch_id, "batch rejected by the bus: {e}");
                    }
                }
            }
        }
        .into_actor(self)
    }
}

/// The bus message for `batch` in the configured format, within `max_message_bytes` (claim-checking
/// its frames if need be), or `None` when it had to be refused (logged and counted).
async fn message(batch: v1::FrameBatch, out: &Output, shared: &Shared) -> Option<OutMessage> {
    let (payload, headers) = wire::encode_as(&batch, out.format);
    if payload.len() <= out.max_message_bytes {
        return Some(OutMessage {
            key: batch.camera_id,
            payload,
            headers,
        });
    }
    let size = payload.len();
    let Some(claims) = &out.claims else {
        refuse(
            &batch,
            shared,
            &format!(
                "batch of {} frames is {size} bytes, over kafka.max_message_bytes = {}; not sent. Enable \
                 kafka.claim_check, or raise kafka.max_message_bytes (and the topic's max.message.bytes), \
                 or lower batch.frames or the camera's size or jpeg_quality",
                batch.frames.len(),
                out.max_message_bytes
            ),
        );
        return None;
    };
    let batch = check_in(batch, claims, shared).await?;
    let (payload, headers) = wire::encode_as(&batch, out.format);
    if payload.len() > out.max_message_bytes {
        refuse(
            &batch,
            shared,
            &format!(
                "batch is {} bytes even with its {} frames claim-checked, over kafka.max_message_bytes = {}; \
                 not sent. Raise kafka.max_message_bytes or lower batch.frames",
                payload.len(),
                batch.frames.len(),
                out.max_message_bytes
            ),
        );
        return None;
    }
    tracing::info!(
        camera = %batch.camera_id,
        batch_id = %batch.batch_id,
        size,
        limit = out.max_message_bytes,
        claimed_size = payload.len(),
        "batch over kafka.max_message_bytes: its frames went to storage (claim-check)"
    );
    shared
        .metrics
        .batches_oversize
        .with_label_values(&[&batch.camera_id, "claim_checked"])
        .inc();
    Some(OutMessage {
        key: batch.camera_id,
        payload,
        headers,
    })
}

/// Logs, counts and records (in `/status`) a batch that will not be sent.
fn refuse(batch: &v1::FrameBatch, shared: &Shared, why: &str) {
    shared
        .metrics
        .messages_rejected
        .with_label_values(&["oversize"])
        .inc();
    shared
        .metrics
        .batches_oversize
        .with_label_values(&[&batch.camera_id, "refused"])
        .inc();
    tracing::error!(camera = %batch.camera_id, batch_id = %batch.batch_id, "{why}");
    shared.status.record_error(
        "batcher",
        Some(&batch.camera_id),
        &format!("batch {}: {why}", batch.batch_id),
    );
}

/// Claim-check: writes every frame's JPEG to storage (on the blocking pool, retrying transient
/// failures with backoff until durable) and returns the batch with claim keys instead of JPEGs.
/// `None` only if a write fails permanently (refused and counted like an oversize batch).
async fn check_in(
    mut batch: v1::FrameBatch,
    claims: &Claims,
    shared: &Shared,
) -> Option<v1::FrameBatch> {
    let first = batch
        .frames
        .first()
        .map(|f| f.capture_time_us)
        .unwrap_or_default();
    let mut objects = Vec::with_capacity(batch.frames.len());
    for f in &mut batch.frames {
        f.claim_key = keys::claim_key(
            &claims.prefix,
            &batch.camera_id,
            first,
            &batch.batch_id,
            f.seq,
        );
        objects.push((f.claim_key.clone(), std::mem::take(&mut f.jpeg)));
    }
    let objects = Arc::new(objects);
    let written = super::retry(shared, "claim", || {
        let (store, objects) = (claims.store.clone(), objects.clone());
        super::blocking("claim", move || {
            objects.iter().try_for_each(|(key, jpeg)| {
                store.put(key, jpeg, "image/jpeg").map_err(|e| match e {
                    StorageError::BadKey { .. } => StageError::permanent("claim", e.to_string()),
                    e => StageError::transient("claim", format!("claim-check write failed: {e}")),
                })
            })
        })
    })
    .await;
    match written {
        Ok(()) => Some(batch),
        Err(e) => {
            refuse(
                &batch,
                shared,
                &format!("over kafka.max_message_bytes and claim-check failed: {e}; not sent"),
            );
            None
        }
    }
}

fn to_wire_frame(f: CapturedFrame) -> v1::Frame {
    v1::Frame {
        seq: f.seq,
        capture_time_us: f.capture_us,
        width: f.width,
        height: f.height,
        jpeg: f.jpeg,
        claim_key: String::new(),
        truth: f
            .truth
            .into_iter()
            .map(|t| v1::TruthBox {
                label: t.label,
                bbox: Some(v1::Box {
                    x1: t.bbox[0],
                    y1: t.bbox[1],
                    x2: t.bbox[2],
                    y2: t.bbox[3],
                }),
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
            interval_end: None,
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

    /// Frames decoded an interval at a time: a batch closes at an interval's end when the next
    /// interval would not fit, so batches follow intervals again after a lost frame, and several
    /// short intervals share a batch.
    #[test]
    fn closes_at_an_interval_end_when_the_next_would_not_fit() {
        let ends = |a: &mut Assembler, seqs: std::ops::Range<u64>, interval: usize| {
            let last = seqs.end - 1;
            seqs.filter_map(|s| {
                let mut f = frame(s);
                f.interval_end = (s == last).then_some(interval);
                a.push(f).map(|b| (b[0].seq, b.len()))
            })
            .collect::<Vec<_>>()
        };
        let mut a = Assembler::new(25);
        // Interval 0..25 lost its first frame: 24 frames, closed at its end.
        assert_eq!(ends(&mut a, 1..25, 24), [(1, 24)]);
        // Aligned again: the next interval is one batch.
        assert_eq!(ends(&mut a, 25..50, 25), [(25, 25)]);
        // Intervals of 10: two share a batch; the third would not fit.
        assert_eq!(ends(&mut a, 50..60, 10), []);
        assert_eq!(ends(&mut a, 60..70, 10), [(50, 20)]);
        // An interval of 30: a full batch, then its 5 last frames at its end.
        assert_eq!(ends(&mut a, 70..100, 30), [(70, 25), (95, 5)]);
        assert!(a.take().is_none());
        // Frames one by one (own decoder): only the count closes a batch.
        assert_eq!(
            (100..126)
                .filter_map(|s| a.push(frame(s)).map(|b| b.len()))
                .collect::<Vec<_>>(),
            [25]
        );
    }
}
