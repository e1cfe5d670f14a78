//! The bus between ingest and processing: `Producer` and `Consumer` over either the embedded
//! in-process log (`kafka.brokers = "embedded"`) or Kafka through rdkafka. Both give the same
//! promise: a produce returns only once the message is stored on the bus; a consumer sees each
//! message at least once and commits per partition a *next offset* after which nothing is redelivered.

pub mod embedded;
pub mod kafka;
pub mod watermark;

use crate::config::KafkaConfig;
use crate::storage::ObjectStore;
use crate::wire::Headers;
use std::sync::Arc;

/// A message to put on the bus.
#[derive(Debug, Clone)]
pub struct OutMessage {
    /// Partitioning key: the camera id, so one camera's batches stay in order.
    pub key: String,
    pub payload: Vec<u8>,
    pub headers: Headers,
}

/// A message taken from the bus, with where it came from.
#[derive(Debug, Clone)]
pub struct Delivery {
    pub partition: i32,
    pub offset: i64,
    pub key: Option<String>,
    pub payload: Vec<u8>,
    pub headers: Headers,
}

#[derive(Debug, thiserror::Error)]
pub enum BusError {
    #[error("kafka: {0}")]
    Kafka(String),
    #[error("the bus is shut down")]
    Closed,
    #[error("dead letter: {0}")]
    DeadLetter(String),
}

/// The highest offset this daemon's producer has had stored, per partition: what a `role = "all"`
/// daemon waits to see committed by its consumer group before it calls itself drained. (Counting
/// stored batches instead is wrong after a redelivery: a batch stored twice would stand in for
/// one not consumed yet.)
#[derive(Debug, Default)]
pub struct ProducedOffsets(parking_lot::Mutex<std::collections::BTreeMap<i32, i64>>);

impl ProducedOffsets {
    pub fn record(&self, partition: i32, offset: i64) {
        let mut m = self.0.lock();
        let o = m.entry(partition).or_insert(offset);
        *o = (*o).max(offset);
    }

    /// (partition, highest offset produced), by partition.
    pub fn snapshot(&self) -> Vec<(i32, i64)> {
        self.0.lock().iter().map(|(p, o)| (*p, *o)).collect()
    }
}

/// Where produced messages go.
#[derive(Clone)]
pub enum Producer {
    Embedded(embedded::EmbeddedBus),
    Kafka(kafka::KafkaProducer),
}

impl Producer {
    /// Returns (partition, offset) once the bus has stored the message. Waits while the embedded
    /// bus is full (it never drops); Kafka errors after librdkafka's own retries are returned.
    pub async fn send(&self, msg: std::sync::Arc<OutMessage>) -> Result<(i32, i64), BusError> {
        match self {
            Producer::Embedded(bus) => bus.produce(msg).await,
            Producer::Kafka(p) => p.send(&msg).await,
        }
    }
}

/// One member of the consumer group.
pub enum Consumer {
    Embedded(embedded::EmbeddedConsumer),
    Kafka(kafka::KafkaConsumer),
}

impl Consumer {
    pub async fn recv(&self) -> Result<Delivery, BusError> {
        match self {
            Consumer::Embedded(c) => c.recv().await,
            Consumer::Kafka(c) => c.recv().await,
        }
    }

    /// The consumer group's lag per partition (blocking for Kafka).
    pub fn lags(&self) -> Result<Vec<(i32, i64)>, BusError> {
        match self {
            Consumer::Embedded(c) => Ok(c.lags()),
            Consumer::Kafka(c) => c.lags(),
        }
    }

    /// Pauses or resumes taking messages while a downstream is unhealthy. Kafka pauses the
    /// partitions (the caller keeps polling `recv`); the embedded bus needs nothing: the caller
    /// just stops asking.
    pub fn set_paused(&self, paused: bool) -> Result<(), BusError> {
        match self {
            Consumer::Embedded(_) => Ok(()),
            Consumer::Kafka(c) => c.set_paused(paused),
        }
    }

    /// Whether `recv` must keep being polled while paused (Kafka: rebalances and group liveness).
    pub fn polls_while_paused(&self) -> bool {
        matches!(self, Consumer::Kafka(_))
    }

    /// Whether the consumer group has committed past each (partition, offset): every message up
    /// to it is durable downstream, whichever member took it (blocking for Kafka: asks the group
    /// coordinator). The embedded bus answers for its own uncommitted messages instead.
    pub fn committed_past(&self, offsets: &[(i32, i64)]) -> Result<bool, BusError> {
        match self {
            Consumer::Embedded(c) => Ok(c.lags().iter().all(|(_, lag)| *lag == 0)),
            Consumer::Kafka(c) => {
                let next: Vec<(i32, i64)> = offsets.iter().map(|(p, o)| (*p, o + 1)).collect();
                Ok(c.commits_stored(&next)?.into_iter().all(|stored| stored))
            }
        }
    }

    /// Rebalance changes since the last call: partitions revoked, and how many were assigned.
    pub fn take_changes(&self) -> (Vec<i32>, usize) {
        match self {
            Consumer::Embedded(_) => (Vec::new(), 0),
            Consumer::Kafka(c) => c.group.take_changes(),
        }
    }

    /// Partitions assigned to this member (the embedded bus: all of them, reported as none).
    pub fn assigned(&self) -> Vec<i32> {
        match self {
            Consumer::Embedded(_) => Vec::new(),
            Consumer::Kafka(c) => c.group.assigned(),
        }
    }

    /// For each (partition, next offset) commit, whether the group coordinator holds it (or a
    /// later one), blocking for Kafka. The embedded bus commits synchronously: always.
    /// (rust-rdkafka does not call `ConsumerContext::commit_callback` for asynchronous manual
    /// commits, fede1024/rust-rdkafka#856, so the coordinator is asked.)
    pub fn commits_stored(&self, commits: &[(i32, i64)]) -> Result<Vec<bool>, BusError> {
        match self {
            Consumer::Embedded(_) => Ok(vec![true; commits.len()]),
            Consumer::Kafka(c) => c.commits_stored(commits),
        }
    }

    /// Commits `next_offset` for `partition`: everything before it is durable downstream.
    pub fn commit(&self, partition: i32, next_offset: i64) -> Result<(), BusError> {
        match self {
            Consumer::Embedded(c) => {
                c.commit(partition, next_offset);
                Ok(())
            }
            Consumer::Kafka(c) => c.commit(partition, next_offset),
        }
    }
}

/// Where a message goes that can never be processed (undecodable, or rejected permanently by a
/// stage): Kafka's `{topic}.dlq`, or, on the embedded bus, storage objects under
/// `{prefix}/dead-letters/partition={p}/{offset:020}.msg` with a `.json` of its headers beside it.
/// The original payload, key and headers are kept; headers `dlq-error`, `dlq-stage`, `dlq-topic`,
/// `dlq-partition`, `dlq-offset` and `dlq-time` (RFC 3339) say what happened. The consumer commits
/// past the message only once the dead letter is stored.
#[derive(Clone)]
pub enum DeadLetters {
    Kafka(kafka::KafkaProducer),
    Store {
        store: Arc<dyn ObjectStore>,
        prefix: String,
    },
}

impl DeadLetters {
    pub fn topic(topic: &str) -> String {
        format!("{topic}.dlq")
    }

    pub fn new(
        cfg: &KafkaConfig,
        store: Arc<dyn ObjectStore>,
        prefix: &str,
    ) -> Result<Self, BusError> {
        if cfg.embedded() {
            Ok(DeadLetters::Store {
                store,
                prefix: prefix.to_string(),
            })
        } else {
            kafka::KafkaProducer::for_topic(cfg, &Self::topic(&cfg.topic)).map(DeadLetters::Kafka)
        }
    }

    /// The message as a dead letter: original key and payload, headers plus the `dlq-*` ones.
    pub fn letter(topic: &str, d: &Delivery, stage: &str, error: &str) -> OutMessage {
        let mut headers = d.headers.clone();
        let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
        for (k, v) in [
            ("dlq-error", error.to_string()),
            ("dlq-stage", stage.to_string()),
            ("dlq-topic", topic.to_string()),
            ("dlq-partition", d.partition.to_string()),
            ("dlq-offset", d.offset.to_string()),
            ("dlq-time", now),
        ] {
            headers.push((k.to_string(), v.into_bytes()));
        }
        OutMessage {
            key: d.key.clone().unwrap_or_default(),
            payload: d.payload.clone(),
            headers,
        }
    }

    /// Stores the dead letter of `msg`, taken from `partition`/`offset`; Ok once it is durable.
    pub async fn send(&self, partition: i32, offset: i64, msg: OutMessage) -> Result<(), BusError> {
        match self {
            DeadLetters::Kafka(p) => p.send(&msg).await.map(|_| ()),
            DeadLetters::Store { store, prefix } => {
                let head = if prefix.is_empty() {
                    String::new()
                } else {
                    format!("{prefix}/")
                };
                let base = format!("{head}dead-letters/partition={partition}/{offset:020}");
                let (store, msg) = (store.clone(), msg);
                tokio::task::spawn_blocking(move || {
                    let headers: serde_json::Map<String, serde_json::Value> = msg
                        .headers
                        .iter()
                        .map(|(k, v)| (k.clone(), String::from_utf8_lossy(v).into_owned().into()))
                        .collect();
                    let meta = serde_json::json!({"key": msg.key, "headers": headers});
                    store.put(
                        &format!("{base}.msg"),
                        &msg.payload,
                        "application/octet-stream",
                    )?;
                    store.put(
                        &format!("{base}.json"),
                        meta.to_string().as_bytes(),
                        "application/json",
                    )
                })
                .await
                .map_err(|e| BusError::DeadLetter(format!("task: {e}")))?
                .map_err(|e| BusError::DeadLetter(e.to_string()))
            }
        }
    }
}
