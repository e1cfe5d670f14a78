//! `framewire serve-inference`: the built-in motion detector as an inference service, over the
//! Python prototype's API and Open Inference Protocol v2 REST, so the prototype's three-box
//! topology (cameras / Kafka / inference) runs on framewire alone.
//!
//! Prototype (`optifye`): `GET /health`, `POST /infer`, `GET /stats`, `GET /info`.
//! OIP v2: `GET /v2`, `GET /v2/health/live`, `GET /v2/health/ready`, `GET /v2/models/{m}`,
//! `GET /v2/models/{m}/ready`, `POST /v2/models/{m}/infer` (JSON, or the binary tensor extension).
//! The one model is `motion`; its labels (class index → name) are in the metadata's
//! `parameters.labels`. Detection runs on actix's blocking pool. A bad request gets 400 with
//! `{"error": …}`, an unknown model 404; nothing a client sends can stop the server.

use crate::inference::Detection;
use crate::inference::motion::{MotionDetector, labels};
use crate::inference::{oip, optifye};
use actix_web::{App, HttpRequest, HttpResponse, HttpServer, web};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

pub const MODEL: &str = "motion";
/// Largest request body accepted.
const MAX_BODY: usize = 256 << 20;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Protocols {
    Optifye,
    OipV2,
    Both,
}

struct State {
    detector: MotionDetector,
    started: Instant,
    batches: AtomicU64,
    frames: AtomicU64,
    detections: AtomicU64,
    errors: AtomicU64,
}

fn bad(status: actix_web::http::StatusCode, error: impl std::fmt::Display) -> HttpResponse {
    HttpResponse::build(status).json(serde_json::json!({ "error": error.to_string() }))
}

fn bad_request(s: &State, error: impl std::fmt::Display) -> HttpResponse {
    s.errors.fetch_add(1, Ordering::Relaxed);
    bad(actix_web::http::StatusCode::BAD_REQUEST, error)
}

/// Runs the detector off the async threads; a detector error (undecodable JPEG, sizes that differ)
/// is the client's fault.
async fn detect(s: web::Data<State>, images: oip::Images) -> Result<Vec<Vec<Detection>>, String> {
    let st = s.clone();
    let n = images.len() as u64;
    let dets = web::block(move || match images {
        oip::Images::Jpegs(jpegs) => {
            let refs: Vec<&[u8]> = jpegs.iter().map(Vec::as_slice).collect();
            st.detector.detect_jpegs(&refs)
        }
        oip::Images::Rgb {
            width,
            height,
            frames,
        } => {
            let refs: Vec<&[u8]> = frames.iter().map(Vec::as_slice).collect();
            st.detector.detect_rgb(width, height, &refs)
        }
    })
    .await
    .map_err(|e| format!("detector failed: {e}"))?
    .map_err(|e| e.to_string())?;
    s.batches.fetch_add(1, Ordering::Relaxed);
    s.frames.fetch_add(n, Ordering::Relaxed);
    s.detections.fetch_add(
        dets.iter().map(Vec::len).sum::<usize>() as u64,
        Ordering::Relaxed,
    );
    Ok(dets)
}

async fn health() -> HttpResponse {
    HttpResponse::Ok().json(serde_json::json!({"status": "healthy", "model": MODEL}))
}

async fn info() -> HttpResponse {
    HttpResponse::Ok().json(serde_json::json!({
        "name": "framewire serve-inference",
        "version": env!("CARGO_PKG_VERSION"),
        "model": MODEL,
        "description": "motion detector: temporal median background, threshold, morphology, connected components",
        "classes": labels(),
        "max_batch": optifye::PROTOTYPE_MAX_BATCH,
    }))
}

async fn stats(s: web::Data<State>) -> HttpResponse {
    HttpResponse::Ok().json(serde_json::json!({
        "batches_processed": s.batches.load(Ordering::Relaxed),
        "frames_processed": s.frames.load(Ordering::Relaxed),
        "detections": s.detections.load(Ordering::Relaxed),
        "errors": s.errors.load(Ordering::Relaxed),
        "uptime_seconds": s.started.elapsed().as_secs_f64(),
    }))
}

async fn infer(s: web::Data<State>, body: web::Bytes) -> HttpResponse {
    let req: optifye::InferRequest = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => return bad_request(&s, format!("body is not an /infer batch: {e}")),
    };
    if req.frames.is_empty() || req.frames.len() > optifye::PROTOTYPE_MAX_BATCH {
        return bad_request(
            &s,
            format!(
                "a batch has 1 to {} frames, not {}",
                optifye::PROTOTYPE_MAX_BATCH,
                req.frames.len()
            ),
        );
    }
    let jpegs = match optifye::request_jpegs(&req) {
        Ok(j) => j,
        Err(e) => return bad_request(&s, e),
    };
    let t = Instant::now();
    match detect(s.clone(), oip::Images::Jpegs(jpegs)).await {
        Ok(dets) => {
            HttpResponse::Ok().json(optifye::response(&req, &dets, t.elapsed().as_secs_f64()))
        }
        Err(e) => bad_request(&s, e),
    }
}

async fn v2_server() -> HttpResponse {
    HttpResponse::Ok().json(serde_json::json!({
        "name": "framewire",
        "version": env!("CARGO_PKG_VERSION"),
        "extensions": ["binary_tensor_data"],
    }))
}

async fn v2_live() -> HttpResponse {
    HttpResponse::Ok().json(serde_json::json!({"live": true}))
}

async fn v2_ready() -> HttpResponse {
    HttpResponse::Ok().json(serde_json::json!({"ready": true}))
}

fn unknown_model(name: &str) -> Option<HttpResponse> {
    (name != MODEL).then(|| {
        bad(
            actix_web::http::StatusCode::NOT_FOUND,
            format!("unknown model {name:?}; this server has {MODEL:?}"),
        )
    })
}

async fn v2_model(name: web::Path<String>) -> HttpResponse {
    if let Some(r) = unknown_model(&name) {
        return r;
    }
    HttpResponse::Ok().json(serde_json::json!({
        "name": MODEL,
        "versions": ["1"],
        "platform": "framewire-motion",
        // Also accepted: `images` as UINT8 [N, H, W, 3] of any size; and the boxes outputs
        // (boxes, scores, classes, num_detections) when a request names them.
        "inputs": [{"name": oip::INPUT, "datatype": "BYTES", "shape": [-1]}],
        "outputs": [
            {"name": oip::OUTPUT, "datatype": "FP32", "shape": [-1, -1, 6]},
            {"name": oip::BOX_OUTPUTS[0], "datatype": "FP32", "shape": [-1, -1, 4]},
            {"name": oip::BOX_OUTPUTS[1], "datatype": "FP32", "shape": [-1, -1]},
            {"name": oip::BOX_OUTPUTS[2], "datatype": "FP32", "shape": [-1, -1]},
            {"name": oip::BOX_OUTPUTS[3], "datatype": "INT32", "shape": [-1]},
        ],
        "parameters": {"labels": labels()},
    }))
}

async fn v2_model_ready(name: web::Path<String>) -> HttpResponse {
    unknown_model(&name).unwrap_or_else(|| {
        HttpResponse::Ok().json(serde_json::json!({"name": MODEL, "ready": true}))
    })
}

async fn v2_infer(
    s: web::Data<State>,
    name: web::Path<String>,
    http: HttpRequest,
    body: web::Bytes,
) -> HttpResponse {
    if let Some(r) = unknown_model(&name) {
        return r;
    }
    let header_length = match http.headers().get(oip::HEADER_LENGTH) {
        None => None,
        Some(v) => match v.to_str().ok().and_then(|v| v.trim().parse().ok()) {
            Some(n) => Some(n),
            None => return bad_request(&s, format!("{} is not a number", oip::HEADER_LENGTH)),
        },
    };
    let (req, images) = match oip::parse_request(&body, header_length) {
        Ok(r) => r,
        Err(e) => return bad_request(&s, e),
    };
    if images.is_empty() {
        return bad_request(&s, format!("input {} has no elements", oip::INPUT));
    }
    let dets = match detect(s.clone(), images).await {
        Ok(d) => d,
        Err(e) => return bad_request(&s, e),
    };
    let names = labels();
    let class = |l: &str| names.iter().position(|n| *n == l).map_or(-1, |i| i as i64);
    let boxes = req
        .outputs
        .iter()
        .any(|o| oip::BOX_OUTPUTS.contains(&o.name.as_str()));
    let body = if boxes {
        oip::response_with(MODEL, &req, oip::box_outputs(&dets, class))
    } else {
        let (shape, rows) = oip::detection_rows(&dets, class);
        oip::response(MODEL, &req, shape, &rows)
    };
    let mut r = HttpResponse::Ok();
    match body.header_length {
        Some(n) => r
            .content_type("application/octet-stream")
            .insert_header((oip::HEADER_LENGTH, n.to_string())),
        None => r.content_type("application/json"),
    };
    r.body(body.bytes)
}

/// Binds `listen` and returns the server (to be awaited on an actix system) and its address.
pub fn server(
    listen: SocketAddr,
    protocols: Protocols,
    detector: MotionDetector,
    workers: usize,
) -> std::io::Result<(actix_web::dev::Server, SocketAddr)> {
    let state = web::Data::new(State {
        detector,
        started: Instant::now(),
        batches: AtomicU64::new(0),
        frames: AtomicU64::new(0),
        detections: AtomicU64::new(0),
        errors: AtomicU64::new(0),
    });
    let server = HttpServer::new(move || {
        let mut app = App::new()
            .app_data(state.clone())
            .app_data(web::PayloadConfig::new(MAX_BODY));
        if protocols != Protocols::OipV2 {
            app = app
                .route("/health", web::get().to(health))
                .route("/info", web::get().to(info))
                .route("/stats", web::get().to(stats))
                .route("/infer", web::post().to(infer));
        }
        if protocols != Protocols::Optifye {
            app = app
                .route("/v2", web::get().to(v2_server))
                .route("/v2/health/live", web::get().to(v2_live))
                .route("/v2/health/ready", web::get().to(v2_ready))
                .route("/v2/models/{name}", web::get().to(v2_model))
                .route("/v2/models/{name}/ready", web::get().to(v2_model_ready))
                .route("/v2/models/{name}/infer", web::post().to(v2_infer));
        }
        app.default_service(web::to(|| async {
            bad(actix_web::http::StatusCode::NOT_FOUND, "no such route")
        }))
    })
    .workers(workers.max(1))
    .bind(listen)
    .map_err(|e| std::io::Error::new(e.kind(), format!("--listen {listen}: {e}")))?;
    let addr = server.addrs().first().copied().unwrap_or(listen);
    Ok((server.run(), addr))
}
