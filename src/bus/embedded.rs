//! The embedded bus: Kafka's shape (partitions, offsets, one consumer group, commits) in memory, for
//! the single-process default. Bounded and lossless: a producer waits while its partition holds
//! `capacity` uncommitted messages. Messages stay until committed, so a consumer that restarts
//! resumes from the committed offsets and sees the in-flight ones again (at-least-once). It does not
//! survive the process; use Kafka for that.

use super::{BusError, Delivery, OutMessage};
use parking_lot::Mutex;
use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use tokio::sync::Notify;

struct Partition {
    /// Offset of `log[0]`.
    base: i64,
    log: VecDeque<Arc<OutMessage>>,
    committed: i64,
}

struct Inner {
    partitions: Vec<Mutex<Partition>>,
    capacity: usize,
    /// Woken when a message is produced.
    produced: Notify,
    /// Woken when a commit frees room.
    freed: Notify,
    /// Incremented for every new consumer; older consumers see it and stop.
    consumer_epoch: AtomicU64,
}

#[derive(Clone)]
pub struct EmbeddedBus {
    inner: Arc<Inner>,
}

impl EmbeddedBus {
    pub fn new(partitions: i32, capacity: usize) -> Self {
        let parts = (0..partitions.max(1))
            .map(|_| {
                Mutex::new(Partition {
                    base: 0,
                    log: VecDeque::new(),
                    committed: 0,
                })
            })
            .collect();
        Self {
            inner: Arc::new(Inner {
                partitions: parts,
                capacity: capacity.max(1),
                produced: Notify::new(),
                freed: Notify::new(),
                consumer_epoch: AtomicU64::new(0),
            }),
        }
    }

    pub fn partitions(&self) -> i32 {
        self.inner.partitions.len() as i32
    }

    /// Kafka's default partitioner hashes keys with murmur2; any stable hash keeps one key's
    /// messages in one partition, which is the property that matters here.
    fn partition_for(&self, key: &str) -> usize {
        let mut h: u32 = 0x811c9dc5;
        for b in key.bytes() {
            h = (h ^ b as u32).wrapping_mul(0x01000193);
        }
        (h as usize) % self.inner.partitions.len()
    }

    pub async fn produce(&self, msg: Arc<OutMessage>) -> Result<(i32, i64), BusError> {
        let p = self.partition_for(&msg.key);
        loop {
            let freed = self.inner.freed.notified();
            {
                let mut part = self.inner.partitions[p].lock();
                if part.log.len() < self.inner.capacity {
                    let offset = part.base + part.log.len() as i64;
                    part.log.push_back(msg);
                    drop(part);
                    self.inner.produced.notify_waiters();
                    return Ok((p as i32, offset));
                }
            }
            freed.await;
        }
    }

    /// A new member of the (single) consumer group; it starts at the committed offsets and any
    /// older consumer stops receiving.
    pub fn consumer(&self) -> EmbeddedConsumer {
        let epoch = self.inner.consumer_epoch.fetch_add(1, Ordering::SeqCst) + 1;
        let positions = self
            .inner
            .partitions
            .iter()
            .map(|p| p.lock().committed)
            .collect();
        EmbeddedConsumer {
            bus: self.clone(),
            epoch,
            positions: Mutex::new(positions),
            next_partition: Mutex::new(0),
        }
    }

    /// Per partition: messages produced and not yet committed (the consumer group's lag).
    pub fn lags(&self) -> Vec<(i32, i64)> {
        self.inner
            .partitions
            .iter()
            .enumerate()
            .map(|(i, p)| (i as i32, p.lock().log.len() as i64))
            .collect()
    }

    /// Messages not yet committed, over all partitions.
    pub fn uncommitted(&self) -> usize {
        self.inner
            .partitions
            .iter()
            .map(|p| p.lock().log.len())
            .sum()
    }
}

pub struct EmbeddedConsumer {
    bus: EmbeddedBus,
    epoch: u64,
    positions: Mutex<Vec<i64>>,
    next_partition: Mutex<usize>,
}

impl EmbeddedConsumer {
    fn try_take(&self) -> Option<Delivery> {
        let n = self.bus.inner.partitions.len();
        let start = *self.next_partition.lock();
        let mut positions = self.positions.lock();
        for i in 0..n {
            let p = (start + i) % n;
            let part = self.bus.inner.partitions[p].lock();
            let pos = positions[p].max(part.base);
            let idx = (pos - part.base) as usize;
            if let Some(msg) = part.log.get(idx) {
                positions[p] = pos + 1;
                *self.next_partition.lock() = (p + 1) % n;
                return Some(Delivery {
                    partition: p as i32,
                    offset: pos,
                    key: Some(msg.key.clone()),
                    payload: msg.payload.clone(),
                    headers: msg.headers.clone(),
                });
            }
        }
        None
    }

    pub async fn recv(&self) -> Result<Delivery, BusError> {
        loop {
            if self.bus.inner.consumer_epoch.load(Ordering::SeqCst) != self.epoch {
                return Err(BusError::Closed);
            }
            let produced = self.bus.inner.produced.notified();
            if let Some(d) = self.try_take() {
                return Ok(d);
            }
            produced.await;
        }
    }

    pub fn lags(&self) -> Vec<(i32, i64)> {
        self.bus.lags()
    }

    /// Drops every message before `next_offset` in `partition`.
    pub fn commit(&self, partition: i32, next_offset: i64) {
        let Some(part) = self.bus.inner.partitions.get(partition as usize) else {
            return;
        };
        let mut part = part.lock();
        if next_offset <= part.committed {
            return;
        }
        part.committed = next_offset;
        while part.base < next_offset && !part.log.is_empty() {
            part.log.pop_front();
            part.base += 1;
        }
        drop(part);
        self.bus.inner.freed.notify_waiters();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn msg(key: &str, n: u8) -> Arc<OutMessage> {
        Arc::new(OutMessage {
            key: key.into(),
            payload: vec![n],
            headers: vec![],
        })
    }

    /// Ensures one key's messages keep their order and offsets count up per partition.
    #[tokio::test]
    async fn ordered_per_key() {
        let bus = EmbeddedBus::new(3, 100);
        let mut offsets = vec![];
        for n in 0..10 {
            offsets.push(bus.produce(msg("cam-a", n)).await.unwrap());
        }
        assert!(
            offsets
                .windows(2)
                .all(|w| w[0].0 == w[1].0 && w[1].1 == w[0].1 + 1)
        );
        let c = bus.consumer();
        for n in 0..10 {
            assert_eq!(c.recv().await.unwrap().payload, vec![n]);
        }
    }

    /// Ensures a full partition makes the producer wait (nothing dropped) until a commit frees room.
    #[tokio::test]
    async fn full_partition_waits_for_commit() {
        let bus = EmbeddedBus::new(1, 2);
        bus.produce(msg("k", 0)).await.unwrap();
        bus.produce(msg("k", 1)).await.unwrap();
        let b2 = bus.clone();
        let third = tokio::spawn(async move { b2.produce(msg("k", 2)).await });
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(
            !third.is_finished(),
            "producer must wait while the partition is full"
        );
        let c = bus.consumer();
        let d = c.recv().await.unwrap();
        c.commit(d.partition, d.offset + 1);
        assert_eq!(third.await.unwrap().unwrap(), (0, 2));
        assert_eq!(bus.uncommitted(), 2);
    }

    /// Ensures a new consumer resumes at the committed offset: uncommitted messages come again.
    #[tokio::test]
    async fn restart_redelivers_uncommitted() {
        let bus = EmbeddedBus::new(1, 10);
        for n in 0..4 {
            bus.produce(msg("k", n)).await.unwrap();
        }
        let c = bus.consumer();
        let first = c.recv().await.unwrap();
        c.commit(0, first.offset + 1);
        let _ = c.recv().await.unwrap();
        let c2 = bus.consumer();
        assert!(
            matches!(c.recv().await, Err(BusError::Closed)),
            "old member is fenced"
        );
        assert_eq!(c2.recv().await.unwrap().payload, vec![1]);
    }
}
