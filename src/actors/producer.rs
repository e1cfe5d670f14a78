//! `ProducerActor`: the ingest side's door to the bus. Receives `Produce` from every camera's
//! batcher and answers with (partition, offset) once the bus acknowledged the message; counts
//! produced batches per camera. Holds a `bus::Producer` (embedded, or an idempotent rdkafka producer
//! created at start). Fails when the Kafka client cannot be created: it stops and is restarted with
//! backoff, while batchers keep retrying their batches.

use super::{Life, PanicGuard, Retire, StageError};
use crate::bus::{OutMessage, Producer};
use crate::config::KafkaConfig;
use actix::prelude::*;
use std::sync::Arc;
use std::time::Instant;

pub struct ProducerActor {
    kafka: KafkaConfig,
    embedded: Option<crate::bus::embedded::EmbeddedBus>,
    producer: Option<Producer>,
    life: Life,
    _guard: PanicGuard,
}

impl ProducerActor {
    pub fn new(
        kafka: KafkaConfig,
        embedded: Option<crate::bus::embedded::EmbeddedBus>,
        life: Life,
        guard: PanicGuard,
    ) -> Self {
        Self {
            kafka,
            embedded,
            producer: None,
            life,
            _guard: guard,
        }
    }
}

impl Actor for ProducerActor {
    type Context = Context<Self>;
    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.set_mailbox_capacity(256);
        let delay = self.life.starting();
        ctx.run_later(delay, |a, ctx| {
            if a.life.retired {
                return;
            }
            let made = match &a.embedded {
                Some(bus) => Ok(Producer::Embedded(bus.clone())),
                None => crate::bus::kafka::KafkaProducer::new(&a.kafka).map(Producer::Kafka),
            };
            match made {
                Ok(p) => {
                    a.producer = Some(p);
                    a.life.running();
                }
                Err(e) => {
                    a.life.failed(&format!("producer: {e}"));
                    ctx.stop();
                }
            }
        });
        ctx.run_interval(std::time::Duration::from_secs(1), |a, _| a.life.heartbeat());
    }
}

impl Supervised for ProducerActor {
    fn restarting(&mut self, _: &mut Context<Self>) {
        self.producer = None;
        self.life.restarting();
    }
}

/// Put one batch on the bus.
#[derive(Message, Clone)]
#[rtype(result = "Result<(i32, i64), StageError>")]
pub struct Produce(pub Arc<OutMessage>);

impl Handler<Produce> for ProducerActor {
    type Result = ResponseFuture<Result<(i32, i64), StageError>>;
    fn handle(&mut self, msg: Produce, _: &mut Context<Self>) -> Self::Result {
        let producer = self.producer.clone();
        let metrics = self.life.shared.metrics.clone();
        let produced = self.life.shared.produced.clone();
        Box::pin(async move {
            let Some(producer) = producer else {
                return Err(StageError::transient(
                    "produce",
                    "producer not connected yet",
                ));
            };
            let t = Instant::now();
            let key = msg.0.key.clone();
            let r = producer
                .send(msg.0)
                .await
                .map_err(|e| StageError::transient("produce", e.to_string()))?;
            metrics
                .stage_duration
                .with_label_values(&["produce"])
                .observe(t.elapsed().as_secs_f64());
            metrics.batches_produced.with_label_values(&[&key]).inc();
            produced.record(r.0, r.1);
            Ok(r)
        })
    }
}

impl Handler<Retire> for ProducerActor {
    type Result = ();
    fn handle(&mut self, _: Retire, ctx: &mut Context<Self>) {
        self.life.retire();
        ctx.stop();
    }
}
