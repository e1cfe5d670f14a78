//! framewire's integration tests: one binary (link time), one module per promise area. Every test
//! drives real parts: the daemon's actors, its HTTP server, librdkafka's mock cluster, the real
//! binary under signals and a systemd notify socket.

mod bench;
mod common;
mod dlq;
mod file;
mod fleet;
mod http;
mod inference;
mod kafka;
mod noloss;
mod notify;
mod oversize;
mod panic;
mod pipeline;
mod reload;
mod rtsp;
mod s3;
mod unit;
mod validate;
mod wire;
