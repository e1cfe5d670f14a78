//! `Root`: owns the actor tree and the running config generation. Builds the tree from the config
//! at start; on `Reload` diffs the new config against the running one and restarts only what
//! changed (cameras added, removed or changed live; others untouched); on `UnitPanicked` rebuilds the
//! unit whose actor died by panic; on `Shutdown` stops the cameras, flushes their partial batches and
//! waits (up to the grace period) until every batch on the bus is durable. Lives as long as the daemon.

use super::annotator::AnnotatorActor;
use super::batcher::{BatcherActor, BatcherSpec, Flush, FrameQueue};
use super::consumer::{CommittedPast, ConsumerActor, InFlight, Stages};
use super::inference::InferenceActor;
use super::producer::ProducerActor;
use super::source::SourceActor;
use super::uploader::UploaderActor;
use super::{Life, PanicGuard, Retire, Shared, Slot, Unit, UnitPanicked};
use crate::bus::embedded::EmbeddedBus;
use crate::config::{CameraConfig, Config, ConfigDiff, Role, SourceUrl};
use crate::media::decoders::DecoderPool;
use crate::storage::ObjectStore;
use actix::prelude::*;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

struct CameraUnit {
    arbiter: Arbiter,
    source: Addr<SourceActor>,
    batcher: Addr<BatcherActor>,
}

struct ProcessUnit {
    consumer: Addr<ConsumerActor>,
    inference: Addr<InferenceActor>,
    annotator: Addr<AnnotatorActor>,
    uploader: Addr<UploaderActor>,
}

pub struct Root {
    cfg: Config,
    role: Role,
    shared: Shared,
    embedded: Option<EmbeddedBus>,
    pipeline: Arbiter,
    cameras: BTreeMap<String, CameraUnit>,
    /// The decoders the cameras share (`media.decoders` > 0), replaced when it changes.
    decoders: Option<Arc<DecoderPool>>,
    producer: Slot<ProducerActor>,
    producer_addr: Option<Addr<ProducerActor>>,
    stages: Stages,
    process: Option<ProcessUnit>,
    generation: u64,
    shutting_down: bool,
}

impl Root {
    pub fn new(cfg: Config, role: Role, shared: Shared) -> Self {
        let embedded = cfg
            .kafka
            .embedded()
            .then(|| EmbeddedBus::new(cfg.kafka.partitions, cfg.kafka.embedded_capacity));
        shared.metrics.config_generation.set(1);
        // Known before any actor runs, so readiness lists every camera it still waits for.
        if role.ingest() {
            for cam in &cfg.cameras {
                shared.status.camera_registered(&cam.id, &cam.url);
            }
        }
        Self {
            decoders: decoder_pool(&cfg, &shared),
            cfg,
            role,
            shared,
            embedded,
            pipeline: Arbiter::new(),
            cameras: BTreeMap::new(),
            producer: Slot::default(),
            producer_addr: None,
            stages: Stages::default(),
            process: None,
            generation: 1,
            shutting_down: false,
        }
    }

    fn life(&self, actor: &'static str, camera: Option<&str>) -> Life {
        Life::new(
            actor,
            camera.map(str::to_string),
            self.shared.clone(),
            self.cfg.supervisor.backoff(),
        )
    }

    fn guard(&self, unit: Unit, actor: &'static str, ctx: &mut Context<Self>) -> PanicGuard {
        PanicGuard::new(unit, actor, ctx.address().recipient())
    }

    fn start_camera(&mut self, cam: &CameraConfig, ctx: &mut Context<Self>) {
        let url = match SourceUrl::parse(&cam.url) {
            Ok(u) => u,
            Err(e) => {
                // Validation ran before; this only happens if the URL's meaning changed under us.
                tracing::error!(camera = %cam.id, "cannot start camera: {e}");
                return;
            }
        };
        self.shared.metrics.init_camera(&cam.id);
        let arbiter = Arbiter::new();
        let unit = Unit::Camera(cam.id.clone());
        let queue = FrameQueue::new(cam.queue_frames);
        let batcher = BatcherActor::new(
            BatcherSpec {
                camera: cam.id.clone(),
                source_type: url.source_type(),
                jpeg_quality: cam.jpeg_quality,
                batch: self.cfg.batch.clone(),
                queue: queue.clone(),
                producer: self.producer.clone(),
                output: super::batcher::Output::new(&self.cfg.kafka, &self.cfg.storage),
            },
            self.life("batcher", Some(&cam.id)),
            self.guard(unit.clone(), "batcher", ctx),
        );
        let batcher = Supervisor::start_in_arbiter(&arbiter.handle(), move |_| batcher);
        let source = SourceActor::new(
            cam.clone(),
            url,
            self.cfg.media.codec(),
            self.decoders.clone(),
            queue,
            self.life("source", Some(&cam.id)),
            self.guard(unit, "source", ctx),
        );
        let source = Supervisor::start_in_arbiter(&arbiter.handle(), move |_| source);
        tracing::info!(camera = %cam.id, url = %crate::redact::url(&cam.url), "camera started");
        self.cameras.insert(
            cam.id.clone(),
            CameraUnit {
                arbiter,
                source,
                batcher,
            },
        );
    }

    /// Stops a camera: its source at once, its batcher after flushing the partial batch.
    fn stop_camera(&mut self, id: &str, forget: bool) {
        if let Some(u) = self.cameras.remove(id) {
            u.source.do_send(Retire);
            let (batcher, arbiter) = (u.batcher, u.arbiter);
            actix::spawn(async move {
                let _ = tokio::time::timeout(Duration::from_secs(30), batcher.send(Flush)).await;
                batcher.do_send(Retire);
                drop(batcher);
                tokio::time::sleep(Duration::from_secs(1)).await;
                arbiter.stop();
            });
            if forget {
                for actor in ["source", "batcher"] {
                    self.shared.status.forget(actor, Some(id));
                }
                self.shared.metrics.forget_camera(id);
            }
            tracing::info!(camera = id, "camera stopped");
        }
    }

    fn start_producer(&mut self, ctx: &mut Context<Self>) {
        if let Some(old) = self.producer_addr.take() {
            old.do_send(Retire);
        }
        let p = ProducerActor::new(
            self.cfg.kafka.clone(),
            self.embedded.clone(),
            self.life("producer", None),
            self.guard(Unit::Producer, "producer", ctx),
        );
        if self.embedded.is_none() && self.cfg.kafka.create_topic {
            let kafka = self.cfg.kafka.clone();
            actix::spawn(
                async move { crate::bus::kafka::KafkaProducer::ensure_topic(&kafka).await },
            );
        }
        let addr = Supervisor::start_in_arbiter(&self.pipeline.handle(), move |_| p);
        self.producer.set(Some(addr.clone()));
        self.producer_addr = Some(addr);
    }

    fn start_process(&mut self, ctx: &mut Context<Self>) {
        self.stop_process();
        let store: Arc<dyn ObjectStore> = crate::storage::open(&self.cfg.storage);
        let h = self.pipeline.handle();
        let inference = InferenceActor::new(
            self.cfg.inference.clone(),
            self.cfg.media.codec(),
            self.life("inference", None),
            self.guard(Unit::Process, "inference", ctx),
        );
        let annotator = AnnotatorActor::new(
            self.cfg.annotator.clone(),
            self.cfg.media.codec(),
            self.life("annotator", None),
            self.guard(Unit::Process, "annotator", ctx),
        );
        let uploader = UploaderActor::new(
            store,
            self.cfg.storage.prefix.clone(),
            self.life("uploader", None),
            self.guard(Unit::Process, "uploader", ctx),
        );
        let inference = Supervisor::start_in_arbiter(&h, move |_| inference);
        let annotator = Supervisor::start_in_arbiter(&h, move |_| annotator);
        let uploader = Supervisor::start_in_arbiter(&h, move |_| uploader);
        self.stages.inference.set(Some(inference.clone()));
        self.stages.annotator.set(Some(annotator.clone()));
        self.stages.uploader.set(Some(uploader.clone()));
        let consumer = ConsumerActor::new(
            self.cfg.kafka.clone(),
            self.embedded.clone(),
            self.stages.clone(),
            crate::storage::open(&self.cfg.storage),
            self.cfg.storage.prefix.clone(),
            self.life("consumer", None),
            self.guard(Unit::Process, "consumer", ctx),
        );
        let consumer = Supervisor::start_in_arbiter(&h, move |_| consumer);
        self.process = Some(ProcessUnit {
            consumer,
            inference,
            annotator,
            uploader,
        });
    }

    fn stop_process(&mut self) {
        if let Some(p) = self.process.take() {
            p.consumer.do_send(Retire);
            p.inference.do_send(Retire);
            p.annotator.do_send(Retire);
            p.uploader.do_send(Retire);
        }
    }

    fn apply(&mut self, new: Config, ctx: &mut Context<Self>) -> Result<String, String> {
        let diff = ConfigDiff::between(&self.cfg, &new);
        if diff.is_empty() {
            return Ok("unchanged".into());
        }
        if self.cfg.kafka.embedded() != new.kafka.embedded() {
            return Err("switching between the embedded bus and Kafka needs a restart".into());
        }
        if diff.http_changed {
            tracing::warn!("[http] changed: takes effect at the next restart");
        }
        let old = std::mem::replace(&mut self.cfg, new);
        if old.media.decoders != self.cfg.media.decoders {
            // Every camera restarts below (`batch_changed`) and leases from the new pool; the old
            // one goes when the last old capture thread ends.
            self.decoders = decoder_pool(&self.cfg, &self.shared);
        }
        let ingest = self.role.ingest();
        let mut restart: Vec<CameraConfig> = Vec::new();
        for id in &diff.cameras_removed {
            self.stop_camera(id, true);
        }
        if ingest {
            if diff.batch_changed {
                restart = self
                    .cfg
                    .cameras
                    .iter()
                    .filter(|c| old.cameras.iter().any(|o| o.id == c.id))
                    .cloned()
                    .collect();
            } else {
                restart = diff.cameras_changed.clone();
            }
            for cam in &restart {
                self.stop_camera(&cam.id, false);
                self.start_camera(cam, ctx);
            }
            for cam in &diff.cameras_added {
                self.start_camera(cam, ctx);
            }
            if diff.kafka_changed {
                self.start_producer(ctx);
            }
        }
        if self.role.process() && (diff.kafka_changed || diff.process_changed) {
            self.start_process(ctx);
        }
        if old.media != self.cfg.media {
            self.show_codec();
        }
        self.generation += 1;
        self.shared.status.set_generation(self.generation);
        self.shared
            .metrics
            .config_generation
            .set(self.generation as i64);
        Ok(format!(
            "generation {}: {} camera(s) added, {} removed, {} restarted{}{}",
            self.generation,
            diff.cameras_added.len(),
            diff.cameras_removed.len(),
            restart.len(),
            if diff.kafka_changed {
                ", bus clients restarted"
            } else {
                ""
            },
            if diff.process_changed {
                ", process side restarted"
            } else {
                ""
            },
        ))
    }
}

/// The shared decoder pool `media.decoders` asks for, if any.
fn decoder_pool(cfg: &Config, shared: &Shared) -> Option<Arc<DecoderPool>> {
    (cfg.media.decoders > 0).then(|| {
        let pool = DecoderPool::new(cfg.media.decoders);
        Arc::new(pool.counted(shared.metrics.h264_decoders.clone()))
    })
}

impl Root {
    /// Logs the JPEG codec in use and shows it in `/status`.
    fn show_codec(&self) {
        let codec = self.cfg.media.codec();
        if let (crate::media::jpeg::Codec::Rust, Err(why)) =
            (codec, crate::media::turbo::TurboJpeg::get())
        {
            tracing::info!(jpeg_codec = codec.name(), "JPEG codec: built-in ({why})");
        } else {
            tracing::info!(jpeg_codec = codec.name(), "JPEG codec: {}", codec.name());
        }
        self.shared.status.set_jpeg_codec(codec.name());
    }
}

impl Actor for Root {
    type Context = Context<Self>;
    fn started(&mut self, ctx: &mut Context<Self>) {
        self.show_codec();
        if self.role.ingest() {
            self.start_producer(ctx);
            for cam in self.cfg.cameras.clone() {
                self.start_camera(&cam, ctx);
            }
        }
        if self.role.process() {
            self.start_process(ctx);
        }
    }
}

/// Apply a newly loaded (already validated) config.
#[derive(Message)]
#[rtype(result = "Result<String, String>")]
pub struct Reload(pub Config);

impl Handler<Reload> for Root {
    type Result = Result<String, String>;
    fn handle(&mut self, msg: Reload, ctx: &mut Context<Self>) -> Self::Result {
        if self.shutting_down {
            return Err("shutting down".into());
        }
        self.apply(msg.0, ctx)
    }
}

impl Handler<UnitPanicked> for Root {
    type Result = ();
    fn handle(&mut self, msg: UnitPanicked, ctx: &mut Context<Self>) {
        if self.shutting_down {
            return;
        }
        let camera = match &msg.unit {
            Unit::Camera(id) => Some(id.clone()),
            _ => None,
        };
        tracing::error!(
            actor = msg.actor,
            camera = camera.as_deref().unwrap_or(""),
            "actor died by panic; rebuilding its unit"
        );
        self.shared
            .metrics
            .actor_restarts
            .with_label_values(&[msg.actor, camera.as_deref().unwrap_or("")])
            .inc();
        self.shared
            .status
            .record_restart(msg.actor, camera.as_deref());
        match msg.unit {
            Unit::Camera(id) => {
                if let Some(cam) = self.cfg.cameras.iter().find(|c| c.id == id).cloned()
                    && self.cameras.contains_key(&id)
                {
                    self.stop_camera(&id, false);
                    self.start_camera(&cam, ctx);
                }
            }
            Unit::Producer => self.start_producer(ctx),
            Unit::Process => self.start_process(ctx),
        }
    }
}

/// Stop the cameras and drain: answers `true` when everything produced is durable in time.
#[derive(Message)]
#[rtype(result = "bool")]
pub struct Shutdown;

impl Handler<Shutdown> for Root {
    type Result = ResponseActFuture<Self, bool>;
    fn handle(&mut self, _: Shutdown, _: &mut Context<Self>) -> Self::Result {
        self.shutting_down = true;
        let deadline = Instant::now() + self.cfg.supervisor.shutdown_grace;
        let mut flushes = Vec::new();
        for (_, u) in std::mem::take(&mut self.cameras) {
            u.source.do_send(Retire);
            flushes.push(async move {
                let _ = u.batcher.send(Flush).await;
                u.batcher.do_send(Retire);
            });
        }
        let (role, embedded, produced) = (
            self.role,
            self.embedded.clone(),
            self.shared.produced.clone(),
        );
        let consumer = self.process.as_ref().map(|p| p.consumer.clone());
        Box::pin(
            async move {
                let _ =
                    tokio::time::timeout_at(deadline.into(), futures::future::join_all(flushes))
                        .await;
                if !role.process() {
                    return true;
                }
                loop {
                    let in_flight = match &consumer {
                        Some(c) => c.send(InFlight).await.unwrap_or(0),
                        None => 0,
                    };
                    let drained = match (&embedded, role) {
                        (Some(bus), _) => bus.uncommitted() == 0 && in_flight == 0,
                        // Every batch produced here committed by the group: stored (or
                        // dead-lettered), by this member or another.
                        (None, Role::All) => {
                            in_flight == 0
                                && match &consumer {
                                    Some(c) => c
                                        .send(CommittedPast(produced.snapshot()))
                                        .await
                                        .unwrap_or(false),
                                    None => false,
                                }
                        }
                        (None, _) => in_flight == 0,
                    };
                    if drained {
                        return true;
                    }
                    if Instant::now() >= deadline {
                        tracing::warn!(
                            in_flight,
                            "shutdown grace period over; uncommitted batches will be redelivered"
                        );
                        return false;
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
            .into_actor(self),
        )
    }
}
