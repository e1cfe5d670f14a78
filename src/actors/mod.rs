//! The supervised actors of the daemon and what they share.
//!
//! Tree (built by `supervisor::Root` from the config):
//! - per camera, on the camera's own arbiter: `source::SourceActor` → `batcher::BatcherActor`;
//! - `producer::ProducerActor` (ingest);
//! - `consumer::ConsumerActor` → `inference::InferenceActor` → `annotator::AnnotatorActor` →
//!   `uploader::UploaderActor` (process).
//!
//! Failure model. Every actor runs under actix's `Supervisor`: when it stops on an error it is
//! restarted in place (same address, mailbox kept) after a `Backoff` delay, and the restart is
//! counted. CPU-heavy and risky work runs off the async threads, inside `catch_unwind` or tokio's
//! blocking pool, so a panic there becomes an error and a restart. A panic that still escapes an
//! actor's handler kills only that actor (tokio catches it per task); the actor's `PanicGuard` tells
//! the root, which rebuilds that unit (one camera, the producer, or the process side).

pub mod annotator;
pub mod batcher;
pub mod consumer;
pub mod inference;
pub mod producer;
pub mod source;
pub mod supervisor;
pub mod uploader;

use crate::clock::{Backoff, SharedClock};
use crate::media::source::SourceOpener;
use crate::metrics::Metrics;
use crate::status::{ActorState, StatusRegistry};
use actix::prelude::*;
use parking_lot::RwLock;
use std::sync::Arc;
use std::time::Duration;

/// What every actor of one daemon shares. Lives as long as the daemon.
#[derive(Clone)]
pub struct Shared {
    pub metrics: Arc<Metrics>,
    pub status: Arc<StatusRegistry>,
    pub clock: SharedClock,
    pub opener: Arc<dyn SourceOpener>,
    /// What this daemon's producer has had stored (shutdown waits for it to be committed).
    pub produced: Arc<crate::bus::ProducedOffsets>,
}

/// A replaceable address: the root swaps the actor behind it (reload, or rebuild after a panic)
/// and callers always reach the current one.
pub struct Slot<A: Actor>(Arc<RwLock<Option<Addr<A>>>>);

impl<A: Actor> Clone for Slot<A> {
    fn clone(&self) -> Self {
        Slot(self.0.clone())
    }
}

impl<A: Actor> Default for Slot<A> {
    fn default() -> Self {
        Slot(Arc::new(RwLock::new(None)))
    }
}

impl<A: Actor> Slot<A> {
    pub fn get(&self) -> Option<Addr<A>> {
        self.0.read().clone()
    }
    pub fn set(&self, addr: Option<Addr<A>>) -> Option<Addr<A>> {
        std::mem::replace(&mut *self.0.write(), addr)
    }
}

/// Which unit of the tree to rebuild.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Unit {
    Camera(String),
    Producer,
    Process,
}

/// Sent by a `PanicGuard` when its actor is dropped while panicking.
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub struct UnitPanicked {
    pub unit: Unit,
    pub actor: &'static str,
}

/// Held by every actor; tells the root when the actor dies by panic.
pub struct PanicGuard {
    unit: Unit,
    actor: &'static str,
    root: Recipient<UnitPanicked>,
}

impl PanicGuard {
    pub fn new(unit: Unit, actor: &'static str, root: Recipient<UnitPanicked>) -> Self {
        Self { unit, actor, root }
    }
}

impl Drop for PanicGuard {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.root.do_send(UnitPanicked {
                unit: self.unit.clone(),
                actor: self.actor,
            });
        }
    }
}

/// Sent by the root to an actor it removes: stop for good.
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub struct Retire;

/// Restart bookkeeping every supervised actor carries: counts restarts in metrics and `/status`,
/// and holds the delay the next start waits (exponential backoff, full jitter).
pub struct Life {
    pub actor: &'static str,
    pub camera: Option<String>,
    pub shared: Shared,
    backoff: Backoff,
    pending_delay: Duration,
    instance: u64,
    pub retired: bool,
}

impl Life {
    pub fn new(
        actor: &'static str,
        camera: Option<String>,
        shared: Shared,
        backoff: Backoff,
    ) -> Self {
        let instance = shared.status.register(actor, camera.as_deref());
        shared
            .metrics
            .actor_restarts
            .with_label_values(&[actor, camera.as_deref().unwrap_or("")]);
        Self {
            actor,
            camera,
            shared,
            backoff,
            pending_delay: Duration::ZERO,
            instance,
            retired: false,
        }
    }

    pub fn set_state(&self, state: ActorState) {
        self.shared
            .status
            .set_state(self.actor, self.camera.as_deref(), self.instance, state);
    }

    /// Call from `Supervised::restarting`. A retired actor is only being wound down (actix restarts
    /// it while someone still holds its address): not a failure, not counted.
    pub fn restarting(&mut self) {
        if self.retired {
            return;
        }
        let camera = self.camera.as_deref();
        self.shared
            .metrics
            .actor_restarts
            .with_label_values(&[self.actor, camera.unwrap_or("")])
            .inc();
        self.shared.status.record_restart(self.actor, camera);
        self.pending_delay = self
            .backoff
            .failed(self.shared.clock.now(), &mut rand::rng());
        self.set_state(ActorState::Backoff);
        tracing::info!(
            actor = self.actor,
            camera = camera.unwrap_or(""),
            delay_ms = self.pending_delay.as_millis() as u64,
            "restarting after failure"
        );
    }

    /// Call from `Actor::started`: returns how long to wait before starting work.
    pub fn starting(&mut self) -> Duration {
        std::mem::take(&mut self.pending_delay)
    }

    /// The actor's work has (re)started.
    pub fn running(&mut self) {
        self.backoff.started(self.shared.clock.now());
        self.set_state(ActorState::Running);
    }

    /// The actor failed with `error` and is about to stop (and be restarted).
    pub fn failed(&self, error: &str) {
        let camera = self.camera.as_deref();
        tracing::error!(
            actor = self.actor,
            camera = camera.unwrap_or(""),
            "{}",
            crate::redact::url(error)
        );
        self.shared.status.record_error(self.actor, camera, error);
    }

    pub fn heartbeat(&self) {
        self.shared
            .status
            .heartbeat(self.actor, self.camera.as_deref());
    }

    pub fn retire(&mut self) {
        self.retired = true;
        self.set_state(ActorState::Stopped);
    }
}

/// A stage failure: transient ones are retried with backoff, permanent ones skip the batch.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{stage}: {message}")]
pub struct StageError {
    pub stage: &'static str,
    pub message: String,
    pub permanent: bool,
}

impl StageError {
    pub fn transient(stage: &'static str, message: impl Into<String>) -> Self {
        Self {
            stage,
            message: message.into(),
            permanent: false,
        }
    }
    pub fn permanent(stage: &'static str, message: impl Into<String>) -> Self {
        Self {
            stage,
            message: message.into(),
            permanent: true,
        }
    }
}

/// Runs `work` on tokio's blocking pool; a panic in it becomes a permanent `StageError` (the same
/// input would panic again) instead of unwinding through the actor.
pub async fn blocking<T: Send + 'static>(
    stage: &'static str,
    work: impl FnOnce() -> Result<T, StageError> + Send + 'static,
) -> Result<T, StageError> {
    match tokio::task::spawn_blocking(work).await {
        Ok(r) => r,
        Err(e) if e.is_panic() => Err(StageError::permanent(
            stage,
            format!("panicked: {}", panic_message(e.into_panic())),
        )),
        Err(e) => Err(StageError::transient(stage, format!("task cancelled: {e}"))),
    }
}

pub fn panic_message(p: Box<dyn std::any::Any + Send>) -> String {
    if let Some(s) = p.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = p.downcast_ref::<String>() {
        s.clone()
    } else {
        "unknown panic".into()
    }
}

/// Runs `attempt` until it succeeds or fails permanently. Transient failures are counted in
/// `framewire_stage_errors_total{stage}`, logged, and retried after a capped, jittered backoff:
/// nothing accepted is given up on because a downstream is briefly unavailable.
pub async fn retry<T, F, Fut>(
    shared: &Shared,
    stage: &'static str,
    mut attempt: F,
) -> Result<T, StageError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, StageError>>,
{
    let mut backoff = Backoff::new(
        Duration::from_millis(50),
        Duration::from_secs(5),
        Duration::from_secs(60),
    );
    loop {
        match attempt().await {
            Ok(v) => return Ok(v),
            Err(e) if e.permanent => return Err(e),
            Err(e) => {
                shared
                    .metrics
                    .stage_errors
                    .with_label_values(&[stage])
                    .inc();
                let delay = backoff.failed(shared.clock.now(), &mut rand::rng());
                tracing::warn!(stage, retry_in_ms = delay.as_millis() as u64, "{e}");
                tokio::time::sleep(delay.max(Duration::from_millis(10))).await;
            }
        }
    }
}

/// Sends `make()` to the actor in `slot` until it answers Ok or a permanent error (`retry`): a
/// mailbox failure (the actor is restarting or being replaced) is transient.
pub async fn call<A, M, T>(
    slot: &Slot<A>,
    shared: &Shared,
    stage: &'static str,
    make: impl Fn() -> M,
) -> Result<T, StageError>
where
    A: Actor + Handler<M>,
    A::Context: actix::dev::ToEnvelope<A, M>,
    M: Message<Result = Result<T, StageError>> + Send + 'static,
    T: Send + 'static,
{
    retry(shared, stage, || {
        let (addr, msg) = (slot.get(), make());
        async move {
            match addr {
                Some(addr) => addr.send(msg).await.unwrap_or_else(|e| {
                    Err(StageError::transient(
                        stage,
                        format!("actor unavailable ({e})"),
                    ))
                }),
                None => Err(StageError::transient(stage, "actor not running")),
            }
        }
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use parking_lot::Mutex;

    struct Root(Arc<Mutex<Vec<(Unit, &'static str)>>>);
    impl Actor for Root {
        type Context = Context<Self>;
    }
    impl Handler<UnitPanicked> for Root {
        type Result = ();
        fn handle(&mut self, m: UnitPanicked, _: &mut Context<Self>) {
            self.0.lock().push((m.unit, m.actor));
        }
    }

    struct Fragile {
        _guard: PanicGuard,
    }
    impl Actor for Fragile {
        type Context = Context<Self>;
    }
    #[derive(Message)]
    #[rtype(result = "u32")]
    struct Poke {
        panic: bool,
    }
    impl Handler<Poke> for Fragile {
        type Result = u32;
        fn handle(&mut self, p: Poke, _: &mut Context<Self>) -> u32 {
            if p.panic {
                panic!("injected panic in a handler");
            }
            7
        }
    }

    /// Ensures a panic inside one actor's handler kills only that actor: another actor on the same
    /// arbiter keeps answering, and the dead actor's `PanicGuard` reports its unit to the root.
    #[test]
    fn handler_panic_is_contained_and_reported() {
        actix_rt::System::new().block_on(async {
            let seen = Arc::new(Mutex::new(Vec::new()));
            let root = Root(seen.clone()).start();
            let arbiter = Arbiter::new();
            let start = |cam: &str| {
                let guard =
                    PanicGuard::new(Unit::Camera(cam.into()), "source", root.clone().recipient());
                Fragile::start_in_arbiter(&arbiter.handle(), move |_| Fragile { _guard: guard })
            };
            let (a, b) = (start("cam-a"), start("cam-b"));
            assert!(
                a.send(Poke { panic: true }).await.is_err(),
                "the panicking actor is gone"
            );
            assert_eq!(
                b.send(Poke { panic: false }).await.unwrap(),
                7,
                "its neighbour on the same arbiter still answers"
            );
            assert!(!a.connected());
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            assert_eq!(*seen.lock(), vec![(Unit::Camera("cam-a".into()), "source")]);
            arbiter.stop();
        });
    }
}
