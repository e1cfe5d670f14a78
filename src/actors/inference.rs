//! `InferenceActor`: runs the configured detector over a batch's frames. Receives `Infer` from the
//! consumer's batch tasks and answers with one list of detections per frame and the model that
//! made them. Protocol `builtin` runs the motion detector on tokio's blocking pool; `optifye` and
//! `oip-v2` call a remote service through `inference::client` (blocking HTTP, also on the blocking
//! pool). At most `inference.workers` batches at once, each bounded by `inference.timeout`; with
//! the built-in detector a batch's decoded frames (YCbCr planes, handed on to the annotator) keep
//! its worker slot until the annotator is done with them, which bounds their memory. A
//! timeout, an unreachable service or a 5xx is transient (the consumer retries with backoff); an
//! undecodable frame, a 4xx, an unparseable answer or a panic is permanent for that batch. Requests
//! are counted in `framewire_inference_requests_total{protocol,outcome}` and timed. Remote calls go
//! through a circuit breaker (`inference::breaker`): while it is open no request is sent, calls wait
//! for the half-open probe (the first call after the open period), and `Downstream` tells the
//! consumer to pause.

use super::{Life, PanicGuard, Retire, StageError};
use crate::config::{InferenceConfig, InferenceProtocol};
use crate::inference::Detection;
use crate::inference::breaker::{Breaker, BreakerConfig, BreakerState};
use crate::inference::client::RemoteClient;
use crate::inference::motion::{MotionConfig, MotionDetector};
use crate::media::jpeg::{Codec, DecodedFrames};
use crate::storage::results::Model;
use crate::wire::FrameBatch;
use actix::prelude::*;
use std::sync::Arc;
use std::time::Instant;
use tokio::sync::Semaphore;

pub type Detections = Arc<Vec<Vec<Detection>>>;

/// What a batch's inference produced.
#[derive(Clone)]
pub struct Inferred {
    pub detections: Detections,
    pub model: Model,
    /// The frames as decoded for the built-in detector, handed on so the annotator does not
    /// decode them again (None for remote protocols).
    pub frames: Option<Arc<DecodedFrames>>,
}

#[derive(Clone)]
enum Backend {
    Builtin(Arc<MotionDetector>),
    Remote(Arc<RemoteClient>),
}

pub struct InferenceActor {
    cfg: InferenceConfig,
    backend: Result<Backend, String>,
    permits: Arc<Semaphore>,
    /// Remote protocols only.
    breaker: Option<Arc<Breaker>>,
    life: Life,
    _guard: PanicGuard,
}

impl InferenceActor {
    pub fn new(cfg: InferenceConfig, codec: Codec, life: Life, guard: PanicGuard) -> Self {
        let backend = match cfg.protocol {
            InferenceProtocol::Builtin => Ok(Backend::Builtin(Arc::new(
                MotionDetector::new(MotionConfig {
                    threshold: cfg.motion_threshold,
                    min_area_fraction: cfg.min_area_fraction,
                    ..MotionConfig::default()
                })
                .with_codec(codec),
            ))),
            _ => RemoteClient::new(&cfg).map(|c| Backend::Remote(Arc::new(c.with_codec(codec)))),
        };
        let permits = Arc::new(Semaphore::new(cfg.workers));
        let breaker = (cfg.protocol != InferenceProtocol::Builtin).then(|| {
            Arc::new(Breaker::new(
                BreakerConfig {
                    failures: cfg.breaker_failures,
                    open_for: cfg.breaker_open,
                    max_open: cfg.breaker_open.max(std::time::Duration::from_secs(60)),
                    probe_timeout: cfg.timeout * 2,
                },
                life.shared.clock.clone(),
            ))
        });
        life.shared
            .metrics
            .breaker_state
            .with_label_values(&[cfg.protocol.name()])
            .set(0);
        // A new actor (reload, rebuild) starts closed.
        life.shared.status.downstream.set_inference_open(false);
        Self {
            cfg,
            backend,
            permits,
            breaker,
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
        // A remote service's own health endpoints feed `/readyz` (checked now, then every 10 s).
        if let Ok(Backend::Remote(client)) = &self.backend {
            let (client, status) = (client.clone(), self.life.shared.status.clone());
            let probe = move || {
                let (c, st) = (client.clone(), status.clone());
                actix::spawn(async move {
                    let r = tokio::task::spawn_blocking(move || c.ready()).await;
                    st.downstream.set_inference_unready(match r {
                        Ok(Ok(())) => None,
                        Ok(Err(e)) => Some(e.to_string()),
                        Err(e) => Some(format!("probe task: {e}")),
                    });
                });
            };
            probe();
            ctx.run_interval(std::time::Duration::from_secs(10), move |_, _| probe());
        } else {
            self.life
                .shared
                .status
                .downstream
                .set_inference_unready(None);
        }
    }
}

impl Supervised for InferenceActor {
    fn restarting(&mut self, _: &mut Context<Self>) {
        self.life.restarting();
    }
}

/// Detect objects in every frame of a batch.
#[derive(Message, Clone)]
#[rtype(result = "Result<Inferred, StageError>")]
pub struct Infer(pub Arc<FrameBatch>);

impl Handler<Infer> for InferenceActor {
    type Result = ResponseFuture<Result<Inferred, StageError>>;
    fn handle(&mut self, msg: Infer, _: &mut Context<Self>) -> Self::Result {
        let (backend, permits, timeout) =
            (self.backend.clone(), self.permits.clone(), self.cfg.timeout);
        let metrics = self.life.shared.metrics.clone();
        let status = self.life.shared.status.clone();
        let breaker = self.breaker.clone();
        let protocol = self.cfg.protocol.name();
        Box::pin(async move {
            let backend = backend.map_err(|e| StageError::permanent("inference", e))?;
            // While the breaker is open, wait for its probe instead of sending (one warning
            // when it opens, not one per batch).
            let admission = match &breaker {
                Some(b) => Some(loop {
                    match b.admit() {
                        Ok(a) => break a,
                        Err(wait) => {
                            tokio::time::sleep(wait.max(std::time::Duration::from_millis(50))).await
                        }
                    }
                }),
                None => None,
            };
            // For the built-in detector the permit travels with the decoded frames to the
            // annotator, so at most `workers` batches of decoded frames exist at once.
            let permit = permits
                .acquire_owned()
                .await
                .map_err(|_| StageError::transient("inference", "detector pool closed"))?;
            if admission.is_some_and(|a| a.probe) {
                breaker_entered(&metrics, &status, protocol, BreakerState::HalfOpen);
            }
            let t = Instant::now();
            let batch = msg.0;
            let batch_id = batch.batch_id.clone();
            let model = match &backend {
                Backend::Builtin(_) => Model {
                    protocol: protocol.into(),
                    name: "motion".into(),
                },
                Backend::Remote(c) => Model {
                    protocol: protocol.into(),
                    name: c.model(),
                },
            };
            let work = super::blocking("inference", move || match backend {
                Backend::Builtin(detector) => {
                    let jpegs: Vec<&[u8]> =
                        batch.frames.iter().map(|f| f.jpeg.as_slice()).collect();
                    let (dets, frames) = detector.detect_jpegs_keeping(&jpegs).map_err(|e| {
                        StageError::permanent("inference", format!("batch {}: {e}", batch.batch_id))
                    })?;
                    Ok((dets, Some(frames)))
                }
                Backend::Remote(client) => client.infer(&batch).map(|d| (d, None)).map_err(|e| {
                    if e.is_permanent() {
                        StageError::permanent("inference", e.to_string())
                    } else {
                        StageError::transient("inference", e.to_string())
                    }
                }),
            });
            let result = match tokio::time::timeout(timeout, work).await {
                Ok(r) => r,
                Err(_) => Err(StageError::transient(
                    "inference",
                    format!("batch {batch_id}: no answer within {timeout:?}"),
                )),
            };
            let outcome = match &result {
                Ok(_) => "ok",
                Err(e) if e.permanent => "permanent",
                Err(_) => "transient",
            };
            metrics
                .inference_requests
                .with_label_values(&[protocol, outcome])
                .inc();
            if let (Some(b), Some(a)) = (&breaker, admission)
                && let Some(to) = b.record(a, outcome != "transient")
            {
                breaker_entered(&metrics, &status, protocol, to);
            }
            metrics
                .inference_duration
                .with_label_values(&[protocol])
                .observe(t.elapsed().as_secs_f64());
            let (dets, frames) = result?;
            let frames = frames.map(|f| Arc::new(DecodedFrames::new(f).holding(permit)));
            metrics
                .stage_duration
                .with_label_values(&["inference"])
                .observe(t.elapsed().as_secs_f64());
            for d in dets.iter().flatten() {
                metrics.detections.with_label_values(&[&d.label]).inc();
            }
            Ok(Inferred {
                detections: Arc::new(dets),
                model,
                frames,
            })
        })
    }
}

/// The breaker entered `to`: gauge, transition count, the consumer's pause signal, and a log line.
fn breaker_entered(
    metrics: &crate::metrics::Metrics,
    status: &crate::status::StatusRegistry,
    protocol: &'static str,
    to: BreakerState,
) {
    metrics
        .breaker_state
        .with_label_values(&[protocol])
        .set(to.gauge());
    metrics
        .breaker_transitions
        .with_label_values(&[protocol, to.name()])
        .inc();
    status
        .downstream
        .set_inference_open(to != BreakerState::Closed);
    match to {
        BreakerState::Open => {
            tracing::warn!(
                protocol,
                "inference circuit breaker open: pausing consumption"
            )
        }
        BreakerState::HalfOpen => {
            tracing::info!(protocol, "inference circuit breaker half-open: one probe")
        }
        BreakerState::Closed => tracing::info!(protocol, "inference circuit breaker closed"),
    }
}

impl Handler<Retire> for InferenceActor {
    type Result = ();
    fn handle(&mut self, _: Retire, ctx: &mut Context<Self>) {
        self.life.retire();
        ctx.stop();
    }
}
