//! The operations HTTP server (actix-web, loopback by default): `GET /healthz` (alive),
//! `GET /readyz` (200, or 503 with the reasons), `GET /metrics` (Prometheus text), `GET /status`
//! (JSON). Runs on its own worker inside the daemon's actix system; nothing here can stop the pipeline.

pub mod serve;

use crate::config::Role;
use crate::metrics::Metrics;
use crate::status::StatusRegistry;
use actix_web::{App, HttpResponse, HttpServer, web};
use std::net::SocketAddr;
use std::sync::Arc;

#[derive(Clone)]
pub struct HttpState {
    pub metrics: Arc<Metrics>,
    pub status: Arc<StatusRegistry>,
    pub role: Role,
}

async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(serde_json::json!({"status": "alive"}))
}

async fn readyz(s: web::Data<HttpState>) -> HttpResponse {
    let reasons = s
        .status
        .not_ready_reasons(s.role.ingest(), s.role.process());
    if reasons.is_empty() {
        HttpResponse::Ok().json(serde_json::json!({"ready": true}))
    } else {
        HttpResponse::ServiceUnavailable()
            .json(serde_json::json!({"ready": false, "reasons": reasons}))
    }
}

async fn metrics(s: web::Data<HttpState>) -> HttpResponse {
    s.metrics.uptime.set(s.status.uptime().as_secs_f64());
    for (camera, age) in s.status.camera_ages() {
        if let Some(age) = age {
            s.metrics
                .camera_last_frame_age
                .with_label_values(&[&camera])
                .set(age);
        }
    }
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4; charset=utf-8")
        .body(s.metrics.render())
}

async fn status(s: web::Data<HttpState>) -> HttpResponse {
    let mut doc = s.status.snapshot();
    doc["role"] = serde_json::json!(s.role);
    HttpResponse::Ok().json(doc)
}

/// Binds `listen` and starts serving; returns the server handle and the bound address (useful
/// with port 0).
pub fn start(
    listen: SocketAddr,
    state: HttpState,
) -> std::io::Result<(actix_web::dev::ServerHandle, SocketAddr)> {
    let server = HttpServer::new(move || {
        App::new()
            .app_data(web::Data::new(state.clone()))
            .route("/healthz", web::get().to(healthz))
            .route("/readyz", web::get().to(readyz))
            .route("/metrics", web::get().to(metrics))
            .route("/status", web::get().to(status))
    })
    .workers(1)
    .disable_signals()
    .shutdown_timeout(2)
    .bind(listen)
    .map_err(|e| std::io::Error::new(e.kind(), format!("http.listen {listen}: {e}")))?;
    let addr = server.addrs().first().copied().unwrap_or(listen);
    let server = server.run();
    let handle = server.handle();
    actix_rt::spawn(server);
    Ok((handle, addr))
}
