//! framewire: live camera video → H.264 decode → sampled JPEG frames → batches → a bus (embedded or
//! Kafka) → inference → annotated frames and results JSON → storage.
//!
//! The library holds every piece; `src/main.rs` is only the command line. Pure logic lives in
//! `config`, `media`, `wire`, `inference`, `storage` and `bus` (no actix types); `actors` are thin
//! supervised shells over it; `http` serves health, readiness, metrics and status.

pub mod actors;
pub mod bench;
pub mod bus;
pub mod clock;
pub mod config;
pub mod daemon;
pub mod http;
pub mod inference;
pub mod media;
pub mod metrics;
pub mod notify;
pub mod redact;
mod simd;
pub mod status;
pub mod storage;
pub mod wire;
