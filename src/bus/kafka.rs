//! Kafka through rdkafka (bundled librdkafka). The producer is idempotent with `acks=all` and keys
//! by camera; the consumer never auto-commits and commits only the watermark it is given. Any
//! librdkafka property passes through from `[kafka.librdkafka]` (SASL/TLS among them).

use super::{BusError, Delivery, OutMessage};
use crate::config::KafkaConfig;
use rdkafka::ClientConfig;
use rdkafka::Message;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::ClientContext;
use rdkafka::consumer::{
    BaseConsumer, CommitMode, Consumer as _, ConsumerContext, Rebalance, StreamConsumer,
};
use rdkafka::message::{Header, Headers, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::util::Timeout;
use rdkafka::{Offset, TopicPartitionList};
use std::time::Duration;

fn base_config(cfg: &KafkaConfig) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", cfg.brokers.trim());
    for (k, v) in &cfg.librdkafka {
        c.set(k, v);
    }
    c
}

/// librdkafka errors name brokers, never credentials; scrub configured secrets anyway.
fn err(cfg_secrets: &[String], e: impl std::fmt::Display) -> BusError {
    let refs: Vec<&str> = cfg_secrets.iter().map(String::as_str).collect();
    BusError::Kafka(crate::redact::secrets(&e.to_string(), &refs))
}

fn secrets_of(cfg: &KafkaConfig) -> Vec<String> {
    cfg.librdkafka
        .iter()
        .filter(|(k, _)| k.contains("password") || k.contains("secret") || k.contains("key"))
        .map(|(_, v)| v.clone())
        .collect()
}

#[derive(Clone)]
pub struct KafkaProducer {
    inner: FutureProducer,
    topic: String,
    secrets: Vec<String>,
}

impl KafkaProducer {
    pub fn new(cfg: &KafkaConfig) -> Result<Self, BusError> {
        let secrets = secrets_of(cfg);
        let mut c = ClientConfig::new();
        c.set("enable.idempotence", "true").set("acks", "all");
        for (k, v) in base_config(cfg).config_map() {
            c.set(k, v);
        }
        // A message may be `max_message_bytes` plus its headers and record framing.
        c.set(
            "message.max.bytes",
            (cfg.max_message_bytes + 64 * 1024).to_string(),
        )
        .set("compression.type", &cfg.compression);
        let inner: FutureProducer = c.create().map_err(|e| err(&secrets, e))?;
        Ok(Self {
            inner,
            topic: cfg.topic.clone(),
            secrets,
        })
    }

    /// The same producer settings, sending to `topic` instead (the dead-letter topic).
    pub fn for_topic(cfg: &KafkaConfig, topic: &str) -> Result<Self, BusError> {
        let mut p = Self::new(cfg)?;
        p.topic = topic.to_string();
        Ok(p)
    }

    /// Creates the topic with `kafka.partitions` partitions when it does not exist yet. Brokers that
    /// forbid it (or librdkafka's mock cluster, which lacks the admin API) make this a warning.
    pub async fn ensure_topic(cfg: &KafkaConfig) {
        let admin: Result<AdminClient<_>, _> = base_config(cfg).create();
        let Ok(admin) = admin else { return };
        let max_bytes = (cfg.max_message_bytes + 64 * 1024).to_string();
        let topic = NewTopic::new(&cfg.topic, cfg.partitions, TopicReplication::Fixed(-1))
            .set("max.message.bytes", &max_bytes);
        let opts = AdminOptions::new()
            .operation_timeout(Some(Duration::from_secs(5)))
            .request_timeout(Some(Duration::from_secs(5)));
        match tokio::time::timeout(Duration::from_secs(8), admin.create_topics([&topic], &opts))
            .await
        {
            Ok(Ok(results)) => {
                for r in results {
                    match r {
                        Ok(t) => {
                            tracing::info!(topic = %t, partitions = cfg.partitions, "created Kafka topic")
                        }
                        Err((t, rdkafka::types::RDKafkaErrorCode::TopicAlreadyExists)) => {
                            tracing::debug!(topic = %t, "topic exists")
                        }
                        Err((t, code)) => {
                            tracing::warn!(topic = %t, "could not create the topic ({code}); create it yourself if the broker does not auto-create")
                        }
                    }
                }
            }
            Ok(Err(e)) => tracing::warn!(topic = %cfg.topic, "could not create the topic ({e})"),
            Err(_) => tracing::warn!(topic = %cfg.topic, "creating the topic timed out"),
        }
    }

    pub async fn send(&self, msg: &OutMessage) -> Result<(i32, i64), BusError> {
        let mut headers = OwnedHeaders::new_with_capacity(msg.headers.len());
        for (k, v) in &msg.headers {
            headers = headers.insert(Header {
                key: k,
                value: Some(v),
            });
        }
        let record = FutureRecord::to(&self.topic)
            .key(&msg.key)
            .payload(&msg.payload)
            .headers(headers);
        match self.inner.send(record, Timeout::Never).await {
            Ok(d) => Ok((d.partition, d.offset)),
            Err((e, _)) => Err(err(&self.secrets, e)),
        }
    }
}

/// What the consumer's rebalance callbacks (run inside `recv`, on the consumer's thread) leave for
/// the consumer actor: partitions revoked since it last looked, the current assignment, and whether
/// newly assigned partitions must start paused.
#[derive(Default)]
pub struct GroupState {
    inner: parking_lot::Mutex<GroupInner>,
}

#[derive(Default)]
struct GroupInner {
    assigned: std::collections::BTreeSet<i32>,
    revoked: Vec<i32>,
    newly_assigned: usize,
    paused: bool,
}

impl GroupState {
    /// Partitions revoked since the last call (their in-flight work is abandoned: the new owner
    /// redoes it under the same keys), and how many were newly assigned.
    pub fn take_changes(&self) -> (Vec<i32>, usize) {
        let mut g = self.inner.lock();
        (
            std::mem::take(&mut g.revoked),
            std::mem::take(&mut g.newly_assigned),
        )
    }
    pub fn assigned(&self) -> Vec<i32> {
        self.inner.lock().assigned.iter().copied().collect()
    }
}

pub struct GroupContext {
    topic: String,
    state: std::sync::Arc<GroupState>,
}

impl ClientContext for GroupContext {}

impl ConsumerContext for GroupContext {
    fn pre_rebalance(&self, _: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Revoke(tpl) = rebalance {
            let mut g = self.state.inner.lock();
            for el in tpl.elements_for_topic(&self.topic) {
                g.assigned.remove(&el.partition());
                g.revoked.push(el.partition());
            }
            tracing::info!(revoked = ?tpl.elements_for_topic(&self.topic).iter().map(|e| e.partition()).collect::<Vec<_>>(), "partitions revoked");
        }
    }
    fn post_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Assign(tpl) => {
                let paused = {
                    let mut g = self.state.inner.lock();
                    for el in tpl.elements_for_topic(&self.topic) {
                        g.assigned.insert(el.partition());
                        g.newly_assigned += 1;
                    }
                    g.paused
                };
                if paused && let Err(e) = consumer.pause(tpl) {
                    tracing::warn!("pausing newly assigned partitions: {e}");
                }
                tracing::info!(assigned = ?tpl.elements_for_topic(&self.topic).iter().map(|e| e.partition()).collect::<Vec<_>>(), "partitions assigned");
            }
            Rebalance::Error(e) => tracing::warn!("rebalance failed: {e}"),
            Rebalance::Revoke(_) => {}
        }
    }
}

pub struct KafkaConsumer {
    inner: StreamConsumer<GroupContext>,
    topic: String,
    secrets: Vec<String>,
    pub group: std::sync::Arc<GroupState>,
}

impl KafkaConsumer {
    /// Joins `kafka.group_id` and subscribes to `kafka.topic`, starting from the committed offsets
    /// (the earliest offset for a new group).
    pub fn new(cfg: &KafkaConfig) -> Result<Self, BusError> {
        let secrets = secrets_of(cfg);
        let mut c = ClientConfig::new();
        // librdkafka prefetches up to 64 MiB per consumer by default; framewire works on at most
        // `max_in_flight` batches at once, so 16 MiB (~20 batches of 25 frames) keeps the
        // pipeline fed at a quarter of the memory. `[kafka.librdkafka]` may override it.
        c.set("auto.offset.reset", "earliest")
            .set("partition.assignment.strategy", "cooperative-sticky")
            .set("queued.max.messages.kbytes", "16384");
        for (k, v) in base_config(cfg).config_map() {
            c.set(k, v);
        }
        c.set("group.id", &cfg.group_id)
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false");
        let group = std::sync::Arc::new(GroupState::default());
        let context = GroupContext {
            topic: cfg.topic.clone(),
            state: group.clone(),
        };
        let inner: StreamConsumer<GroupContext> = c
            .create_with_context(context)
            .map_err(|e| err(&secrets, e))?;
        inner
            .subscribe(&[&cfg.topic])
            .map_err(|e| err(&secrets, e))?;
        Ok(Self {
            inner,
            topic: cfg.topic.clone(),
            secrets,
            group,
        })
    }

    /// Pauses (or resumes) fetching from every assigned partition; partitions assigned while paused
    /// start paused. `recv` must still be polled: it serves rebalances and keeps the member in the
    /// group (`max.poll.interval.ms`).
    pub fn set_paused(&self, paused: bool) -> Result<(), BusError> {
        self.group.inner.lock().paused = paused;
        let assignment = self.inner.assignment().map_err(|e| err(&self.secrets, e))?;
        if paused {
            self.inner.pause(&assignment)
        } else {
            self.inner.resume(&assignment)
        }
        .map_err(|e| err(&self.secrets, e))
    }

    pub async fn recv(&self) -> Result<Delivery, BusError> {
        let m = self.inner.recv().await.map_err(|e| err(&self.secrets, e))?;
        let headers = m
            .headers()
            .map(|h| {
                h.iter()
                    .map(|h| (h.key.to_string(), h.value.unwrap_or_default().to_vec()))
                    .collect()
            })
            .unwrap_or_default();
        Ok(Delivery {
            partition: m.partition(),
            offset: m.offset(),
            key: m.key().map(|k| String::from_utf8_lossy(k).into_owned()),
            payload: m.payload().unwrap_or_default().to_vec(),
            headers,
        })
    }

    /// Per assigned partition: log end minus the group's committed offset (blocking: asks the
    /// brokers; call it off the async threads).
    pub fn lags(&self) -> Result<Vec<(i32, i64)>, BusError> {
        let timeout = Duration::from_secs(5);
        let committed = self
            .inner
            .committed(timeout)
            .map_err(|e| err(&self.secrets, e))?;
        let mut out = Vec::new();
        for el in committed.elements_for_topic(&self.topic) {
            let (low, high) = self
                .inner
                .fetch_watermarks(&self.topic, el.partition(), timeout)
                .map_err(|e| err(&self.secrets, e))?;
            let from = match el.offset() {
                Offset::Offset(o) => o,
                _ => low,
            };
            out.push((el.partition(), (high - from).max(0)));
        }
        Ok(out)
    }

    /// For each (partition, next offset), whether the group's committed offset has reached it,
    /// on partitions assigned to this member or not (blocking: asks the group coordinator).
    pub fn commits_stored(&self, commits: &[(i32, i64)]) -> Result<Vec<bool>, BusError> {
        if commits.is_empty() {
            return Ok(Vec::new());
        }
        let mut tpl = TopicPartitionList::new();
        for (p, _) in commits {
            tpl.add_partition(&self.topic, *p);
        }
        let committed = self
            .inner
            .committed_offsets(tpl, Duration::from_secs(5))
            .map_err(|e| err(&self.secrets, e))?;
        Ok(commits
            .iter()
            .map(|(p, next)| {
                committed
                    .find_partition(&self.topic, *p)
                    .is_some_and(|el| matches!(el.offset(), Offset::Offset(c) if c >= *next))
            })
            .collect())
    }

    pub fn commit(&self, partition: i32, next_offset: i64) -> Result<(), BusError> {
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(&self.topic, partition, Offset::Offset(next_offset))
            .map_err(|e| err(&self.secrets, e))?;
        self.inner
            .commit(&tpl, CommitMode::Async)
            .map_err(|e| err(&self.secrets, e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Ensures the bundled librdkafka is built with TLS and SASL, so MSK-style settings passed
    /// through `[kafka.librdkafka]` are accepted (a build without TLS refuses SASL_SSL at once).
    #[test]
    fn sasl_ssl_settings_are_accepted() {
        let mut cfg = KafkaConfig {
            brokers: "127.0.0.1:9".into(),
            ..KafkaConfig::default()
        };
        for (k, v) in [
            ("security.protocol", "SASL_SSL"),
            ("sasl.mechanism", "SCRAM-SHA-512"),
            ("sasl.username", "framewire"),
            ("sasl.password", "not-a-real-secret"),
        ] {
            cfg.librdkafka.insert(k.into(), v.into());
        }
        let made = KafkaProducer::new(&cfg);
        assert!(
            made.is_ok(),
            "{}",
            made.err().map(|e| e.to_string()).unwrap_or_default()
        );
        cfg.librdkafka
            .insert("security.protocol".into(), "NOT_A_PROTOCOL".into());
        let refused = KafkaProducer::new(&cfg)
            .err()
            .expect("a bad protocol is refused")
            .to_string();
        assert!(!refused.contains("not-a-real-secret"), "{refused}");
    }
}
