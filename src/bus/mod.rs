//! The bus between ingest and processing: `Producer` and `Consumer` over either the embedded
//! in-process log (`kafka.brokers = "embedded"`) or Kafka through rdkafka. Both give the same
//! promise: a produce returns only once the message is stored on the bus; a consumer sees each
//! message at least once and commits per partition a *next offset* after which nothing is redelivered.

pub mod embedded;
pub mod kafka;
pub mod watermark;

use crate::wire::Headers;

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
