//! `ConsumerActor`: the process side's member of the consumer group. Takes messages from the bus
//! (at most `kafka.max_in_flight` batches at once), decodes them (framewire.v1 or seed JSON, see
//! `wire::decode_keyed`), fetches claim-checked frames from storage (`claims`, on the blocking pool;
//! a missing claim object skips the batch, counted as `reason="claim_missing"`), and runs each batch
//! through inference → annotation → storage as a task; when a batch is durable it marks its offset done and
//! commits the partition's contiguous watermark. Nothing is committed before it is stored, so a
//! crash or restart redelivers what was in flight (same keys, same objects).
//!
//! A message that cannot be decoded, or a batch a stage rejects permanently, is logged with its
//! partition/offset, counted, sent to the dead letters (`bus::DeadLetters`: `{topic}.dlq`, or
//! `dead-letters/` in storage on the embedded bus; retried until stored), and only then committed
//! past.
//!
//! While a downstream is unhealthy (`Downstream`: the inference breaker is open, or storage
//! writes fail) and batches are in flight, the consumer pauses its partitions and keeps polling, so
//! it stays in the group; the in-flight batches keep retrying and are the probes; it resumes when
//! they get through. With nothing in flight it takes one message, which becomes the probe.
//! Rebalances (cooperative-sticky): a revoked partition's in-flight batches are abandoned to its
//! new owner — their watermark is forgotten, so nothing stale is committed, and the new owner
//! redoes them from the committed offset under the same deterministic keys.
//!
//! Failure: if the bus consumer cannot be created, the actor stops and is restarted with
//! backoff; a restart drops in-flight tasks and a fresh bus consumer resumes from the committed offsets.

use super::annotator::{Annotate, AnnotatorActor};
use super::inference::{Infer, InferenceActor};
use super::uploader::{Store, UploaderActor};
use super::{Life, PanicGuard, Retire, Shared, Slot, StageError};
use crate::bus::watermark::Watermarks;
use crate::bus::{BusError, Consumer, DeadLetters, Delivery};
use crate::config::KafkaConfig;
use crate::storage::results::Timings;
use crate::storage::{ObjectStore, StorageError};
use crate::wire;
use actix::prelude::*;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The downstream stages a batch goes through.
#[derive(Clone, Default)]
pub struct Stages {
    pub inference: Slot<InferenceActor>,
    pub annotator: Slot<AnnotatorActor>,
    pub uploader: Slot<UploaderActor>,
}

pub struct ConsumerActor {
    kafka: KafkaConfig,
    embedded: Option<crate::bus::embedded::EmbeddedBus>,
    stages: Stages,
    /// Where claim-checked frames are read from.
    claims: Arc<dyn ObjectStore>,
    /// The group member and where its dead letters go; None until connected.
    conn: Option<(Arc<Consumer>, DeadLetters)>,
    paused: bool,
    /// Storage key prefix (dead letters of the embedded bus).
    prefix: String,
    marks: Watermarks,
    /// Commits sent and not yet confirmed by the bus, per partition (re-sent until they are:
    /// a commit can fail with a stale generation while the group rebalances).
    unconfirmed: std::collections::BTreeMap<i32, i64>,
    /// A check of `unconfirmed` against the group coordinator is under way.
    confirming: bool,
    fetching: bool,
    draining: bool,
    life: Life,
    _guard: PanicGuard,
}

impl ConsumerActor {
    pub fn new(
        kafka: KafkaConfig,
        embedded: Option<crate::bus::embedded::EmbeddedBus>,
        stages: Stages,
        claims: Arc<dyn ObjectStore>,
        prefix: String,
        life: Life,
        guard: PanicGuard,
    ) -> Self {
        Self {
            kafka,
            embedded,
            stages,
            claims,
            conn: None,
            paused: false,
            prefix,
            marks: Watermarks::default(),
            unconfirmed: Default::default(),
            confirming: false,
            fetching: false,
            draining: false,
            life,
            _guard: guard,
        }
    }

    fn connect(&mut self, ctx: &mut Context<Self>) {
        if self.life.retired {
            return;
        }
        let made = match &self.embedded {
            Some(bus) => Ok(Consumer::Embedded(bus.consumer())),
            None => crate::bus::kafka::KafkaConsumer::new(&self.kafka).map(Consumer::Kafka),
        }
        .and_then(|c| {
            DeadLetters::new(&self.kafka, self.claims.clone(), &self.prefix).map(|dead| (c, dead))
        });
        match made {
            Ok((c, dead)) => {
                self.conn = Some((Arc::new(c), dead));
                self.marks = Watermarks::default();
                self.unconfirmed.clear();
                self.paused = false;
                self.life.running();
                self.fetch(ctx);
            }
            Err(e) => {
                self.life.failed(&format!("consumer: {e}"));
                ctx.stop();
            }
        }
    }

    fn fetch(&mut self, ctx: &mut Context<Self>) {
        let Some((consumer, _)) = self.conn.clone() else {
            return;
        };
        self.rebalanced(&consumer);
        let unhealthy = self.life.shared.status.downstream.unhealthy();
        self.pause(
            &consumer,
            !unhealthy.is_empty() && self.marks.in_flight() > 0,
            &unhealthy,
        );
        if self.fetching || self.draining {
            return;
        }
        if self.paused {
            if !consumer.polls_while_paused() {
                return;
            }
        } else if self.marks.in_flight() >= self.kafka.max_in_flight {
            return;
        }
        self.fetching = true;
        ctx.spawn(
            async move { consumer.recv().await }
                .into_actor(self)
                .map(|r, a, ctx| {
                    a.fetching = false;
                    match r {
                        Ok(d) => a.accept(d, ctx),
                        Err(BusError::Closed) => {
                            a.life.failed("consumer: the bus closed this member");
                            ctx.stop();
                            return;
                        }
                        Err(e) => {
                            a.life
                                .shared
                                .metrics
                                .stage_errors
                                .with_label_values(&["consume"])
                                .inc();
                            tracing::warn!("consume: {e}");
                            ctx.run_later(Duration::from_millis(200), |a, ctx| a.fetch(ctx));
                            return;
                        }
                    }
                    a.fetch(ctx);
                }),
        );
    }

    /// Pauses or resumes the partitions when the wanted state changed.
    fn pause(&mut self, consumer: &Consumer, pause: bool, why: &[&str]) {
        if pause == self.paused {
            return;
        }
        match consumer.set_paused(pause) {
            Ok(()) => {
                self.paused = pause;
                self.life.shared.metrics.consumer_paused.set(pause as i64);
                if pause {
                    tracing::warn!(reason = why.join(", "), "consumption paused");
                } else {
                    tracing::info!("consumption resumed");
                }
            }
            Err(e) => tracing::warn!(pause, "pausing/resuming the partitions failed: {e}"),
        }
    }

    /// Applies rebalance changes: revoked partitions' watermarks are forgotten (their in-flight
    /// batches belong to the new owner now), counts and gauges updated.
    fn rebalanced(&mut self, consumer: &Consumer) {
        let (revoked, assigned) = consumer.take_changes();
        if revoked.is_empty() && assigned == 0 {
            return;
        }
        let m = &self.life.shared.metrics;
        for p in &revoked {
            self.unconfirmed.remove(p);
            let abandoned = self.marks.forget(*p);
            let label = p.to_string();
            let _ = m.consumer_lag.remove_label_values(&[&label]);
            if abandoned > 0 {
                tracing::info!(
                    partition = p,
                    abandoned,
                    "partition revoked: its in-flight batches are left to the new owner"
                );
            }
        }
        m.rebalances
            .with_label_values(&["revoked"])
            .inc_by(revoked.len() as u64);
        m.rebalances
            .with_label_values(&["assigned"])
            .inc_by(assigned as u64);
        m.consumer_assigned.set(consumer.assigned().len() as i64);
        m.in_flight_batches.set(self.marks.in_flight() as i64);
    }

    fn accept(&mut self, d: Delivery, ctx: &mut Context<Self>) {
        let (partition, offset) = (d.partition, d.offset);
        self.life.shared.metrics.batches_consumed.inc();
        self.marks.begin(partition, offset);
        self.life
            .shared
            .metrics
            .in_flight_batches
            .set(self.marks.in_flight() as i64);
        let batch = match wire::decode_keyed(&d.payload, &d.headers, d.key.as_deref()) {
            Ok(b) => {
                let now = crate::media::source::now_us();
                let captures = b.frames.iter().map(|f| f.capture_time_us);
                self.life
                    .shared
                    .metrics
                    .frame_ages("consumed", now, captures);
                Arc::new(b)
            }
            Err(e) => {
                self.life
                    .shared
                    .metrics
                    .messages_rejected
                    .with_label_values(&["undecodable"])
                    .inc();
                tracing::error!(partition, offset, "message sent to the dead letters: {e}");
                self.dead_letter(d, "undecodable", e.to_string(), ctx);
                return;
            }
        };
        let (stages, shared, claims) = (
            self.stages.clone(),
            self.life.shared.clone(),
            self.claims.clone(),
        );
        ctx.spawn(process(batch.clone(), stages, shared, claims).into_actor(self).map(move |r, a, ctx| {
            match r {
                Ok(key) => {
                    let m = &a.life.shared.metrics;
                    m.batches_stored.with_label_values(&[&batch.camera_id]).inc();
                    let now = crate::media::source::now_us();
                    let lat = m.capture_to_stored.with_label_values(&[&batch.camera_id]);
                    for f in &batch.frames {
                        lat.observe((now - f.capture_time_us).max(0) as f64 / 1e6);
                    }
                    tracing::debug!(partition, offset, key, "batch stored");
                }
                Err(e) => {
                    a.life.shared.metrics.messages_rejected.with_label_values(&[e.stage]).inc();
                    tracing::error!(partition, offset, camera = %batch.camera_id, batch_id = %batch.batch_id, "batch sent to the dead letters: {e}");
                    a.dead_letter(d, e.stage, e.to_string(), ctx);
                    return;
                }
            }
            a.done(partition, offset);
            a.fetch(ctx);
        }));
    }

    /// Stores `d` as a dead letter (retried with backoff until durable), then commits past it.
    fn dead_letter(
        &mut self,
        d: Delivery,
        reason: &'static str,
        error: String,
        ctx: &mut Context<Self>,
    ) {
        let (partition, offset) = (d.partition, d.offset);
        let Some((_, dead)) = self.conn.clone() else {
            // Not connected: the message came from a member that is gone; its redelivery will
            // be dead-lettered by the next one.
            return;
        };
        let shared = self.life.shared.clone();
        let letter = DeadLetters::letter(&self.kafka.topic, &d, reason, &error);
        ctx.spawn(
            async move {
                super::retry(&shared, "dead_letter", || {
                    let (dead, letter) = (dead.clone(), letter.clone());
                    async move {
                        dead.send(partition, offset, letter)
                            .await
                            .map_err(|e| StageError::transient("dead_letter", e.to_string()))
                    }
                })
                .await
            }
            .into_actor(self)
            .map(move |r, a, ctx| {
                if r.is_ok() {
                    a.life
                        .shared
                        .metrics
                        .dead_letters
                        .with_label_values(&[reason])
                        .inc();
                    a.done(partition, offset);
                }
                a.fetch(ctx);
            }),
        );
    }

    fn done(&mut self, partition: i32, offset: i64) {
        let Some((c, _)) = self.conn.clone() else {
            return;
        };
        self.rebalanced(&c);
        if let Some(next) = self.marks.complete(partition, offset) {
            self.unconfirmed.insert(partition, next);
            self.commit(&c, partition, next);
        }
        self.life
            .shared
            .metrics
            .in_flight_batches
            .set(self.marks.in_flight() as i64);
    }

    fn commit(&self, c: &Consumer, partition: i32, next: i64) {
        match c.commit(partition, next) {
            Ok(()) => self
                .life
                .shared
                .metrics
                .committed_offset
                .with_label_values(&[&partition.to_string()])
                .set(next),
            // Still unconfirmed: `recommit` sends it again.
            Err(e) => tracing::warn!(partition, next, "commit failed: {e}"),
        }
    }

    /// Re-sends commits the bus has not stored (checked every 2 s, off the actor's thread: the
    /// group coordinator is asked); revoked partitions were dropped from `unconfirmed` by
    /// `rebalanced`, and a partition that committed further meanwhile waits for the next check.
    fn recommit(&mut self, ctx: &mut Context<Self>) {
        let Some((c, _)) = self.conn.clone() else {
            return;
        };
        self.rebalanced(&c);
        if self.confirming || self.unconfirmed.is_empty() {
            return;
        }
        let pending: Vec<(i32, i64)> = self.unconfirmed.iter().map(|(p, o)| (*p, *o)).collect();
        let asked = pending.clone();
        self.confirming = true;
        ctx.spawn(
            async move { tokio::task::spawn_blocking(move || c.commits_stored(&asked)).await }
                .into_actor(self)
                .map(move |r, a, _| {
                    a.confirming = false;
                    let stored = match r {
                        Ok(Ok(stored)) => stored,
                        Ok(Err(e)) => {
                            tracing::debug!("asking which commits are stored: {e}");
                            return;
                        }
                        Err(_) => return,
                    };
                    let Some((c, _)) = a.conn.clone() else {
                        return;
                    };
                    for ((p, next), stored) in pending.into_iter().zip(stored) {
                        if a.unconfirmed.get(&p) != Some(&next) {
                            continue;
                        }
                        if stored {
                            a.unconfirmed.remove(&p);
                        } else {
                            tracing::debug!(
                                partition = p,
                                next,
                                "commit not stored yet: sending again"
                            );
                            a.commit(&c, p, next);
                        }
                    }
                }),
        );
    }
}

/// One batch through the stages. Transient failures are retried inside `call`; the result is the
/// results key, or the permanent error that made the batch be skipped.
async fn process(
    batch: Arc<wire::FrameBatch>,
    stages: Stages,
    shared: Shared,
    claims: Arc<dyn ObjectStore>,
) -> Result<String, StageError> {
    let batch = resolve_claims(batch, claims, &shared).await?;
    let t = Instant::now();
    let inferred = super::call(&stages.inference, &shared, "inference", || {
        Infer(batch.clone())
    })
    .await?;
    let (detections, model, frames) = (inferred.detections, inferred.model, inferred.frames);
    let inference_ms = t.elapsed().as_secs_f64() * 1e3;
    let t = Instant::now();
    let annotated = super::call(&stages.annotator, &shared, "annotate", || Annotate {
        batch: batch.clone(),
        detections: detections.clone(),
        frames: frames.clone(),
    })
    .await?;
    drop(frames);
    let timings = Timings {
        inference: inference_ms,
        annotate: t.elapsed().as_secs_f64() * 1e3,
        store: 0.0,
    };
    super::call(&stages.uploader, &shared, "store", || Store {
        batch: batch.clone(),
        detections: detections.clone(),
        annotated: annotated.clone(),
        timings: timings.clone(),
        model: model.clone(),
    })
    .await
}

/// Fills in the JPEGs of claim-checked frames from storage (on the blocking pool), so later stages
/// see an ordinary batch. A missing object is a permanent error (`claim_missing`); other storage
/// errors are retried with backoff.
async fn resolve_claims(
    batch: Arc<wire::FrameBatch>,
    store: Arc<dyn ObjectStore>,
    shared: &Shared,
) -> Result<Arc<wire::FrameBatch>, StageError> {
    if batch.frames.iter().all(|f| f.claim_key.is_empty()) {
        return Ok(batch);
    }
    super::retry(shared, "claim", || {
        let (store, b) = (store.clone(), batch.clone());
        super::blocking("claim", move || {
            let mut b = (*b).clone();
            for f in b.frames.iter_mut().filter(|f| !f.claim_key.is_empty()) {
                f.jpeg = store.get(&f.claim_key).map_err(|e| match e {
                    StorageError::NotFound { .. } | StorageError::BadKey { .. } => {
                        StageError::permanent(
                            "claim_missing",
                            format!("claim-checked frame {}: {e}", f.seq),
                        )
                    }
                    e => StageError::transient("claim", e.to_string()),
                })?;
                f.claim_key.clear();
            }
            Ok(b)
        })
    })
    .await
    .map(Arc::new)
}

impl Actor for ConsumerActor {
    type Context = Context<Self>;
    fn started(&mut self, ctx: &mut Context<Self>) {
        let delay = self.life.starting();
        ctx.run_later(delay, |a, ctx| a.connect(ctx));
        // Lag per partition: cheap for the embedded bus, a broker round trip for Kafka.
        let every = if self.embedded.is_some() {
            Duration::from_secs(1)
        } else {
            Duration::from_secs(5)
        };
        ctx.run_interval(every, |a, _| {
            let (Some((consumer, _)), metrics) = (a.conn.clone(), a.life.shared.metrics.clone())
            else {
                return;
            };
            actix::spawn(async move {
                match tokio::task::spawn_blocking(move || consumer.lags()).await {
                    Ok(Ok(lags)) => {
                        for (p, lag) in lags {
                            metrics
                                .consumer_lag
                                .with_label_values(&[&p.to_string()])
                                .set(lag);
                        }
                    }
                    Ok(Err(e)) => tracing::debug!("consumer lag: {e}"),
                    Err(_) => {}
                }
            });
        });
        ctx.run_interval(Duration::from_secs(1), |a, _| a.life.heartbeat());
        // Pause/resume follows the downstreams' health; rebalances show up here when idle.
        ctx.run_interval(Duration::from_millis(250), |a, ctx| a.fetch(ctx));
        ctx.run_interval(Duration::from_secs(2), |a, ctx| a.recommit(ctx));
    }
    fn stopping(&mut self, _: &mut Context<Self>) -> Running {
        self.conn = None;
        self.paused = false;
        self.life.shared.metrics.consumer_paused.set(0);
        self.fetching = false;
        // A restart drops the context's futures, a commit check under way among them.
        self.confirming = false;
        Running::Stop
    }
}

impl Supervised for ConsumerActor {
    fn restarting(&mut self, _: &mut Context<Self>) {
        self.life.restarting();
    }
}

/// Stop taking new messages; answers with the number of batches still in flight.
#[derive(Message)]
#[rtype(result = "usize")]
pub struct Drain;

impl Handler<Drain> for ConsumerActor {
    type Result = usize;
    fn handle(&mut self, _: Drain, _: &mut Context<Self>) -> usize {
        self.draining = true;
        self.marks.in_flight()
    }
}

/// Batches in flight (for shutdown).
#[derive(Message)]
#[rtype(result = "usize")]
pub struct InFlight;

impl Handler<InFlight> for ConsumerActor {
    type Result = usize;
    fn handle(&mut self, _: InFlight, _: &mut Context<Self>) -> usize {
        self.marks.in_flight()
    }
}

/// Whether the consumer group has committed past each (partition, offset) (for shutdown: the
/// batches this daemon produced are stored, whichever member took them). `false` when not
/// connected or the coordinator does not answer.
#[derive(Message)]
#[rtype(result = "bool")]
pub struct CommittedPast(pub Vec<(i32, i64)>);

impl Handler<CommittedPast> for ConsumerActor {
    type Result = ResponseFuture<bool>;
    fn handle(&mut self, msg: CommittedPast, _: &mut Context<Self>) -> Self::Result {
        let conn = self.conn.clone();
        Box::pin(async move {
            let Some((consumer, _)) = conn else {
                return false;
            };
            match tokio::task::spawn_blocking(move || consumer.committed_past(&msg.0)).await {
                Ok(Ok(past)) => past,
                Ok(Err(e)) => {
                    tracing::debug!("committed offsets: {e}");
                    false
                }
                Err(_) => false,
            }
        })
    }
}

impl Handler<Retire> for ConsumerActor {
    type Result = ();
    fn handle(&mut self, _: Retire, ctx: &mut Context<Self>) {
        self.life.retire();
        ctx.stop();
    }
}
