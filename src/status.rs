//! What the daemon knows about itself, for `/status`, `/readyz`, the progress line and the systemd
//! watchdog: per actor state, restarts, last error and heartbeat; per camera frame rate and age of
//! the last frame. Written by actors, read by the HTTP handlers; lives as long as the daemon.
//! Errors are stored redacted.

use parking_lot::Mutex;
use serde::Serialize;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ActorState {
    Starting,
    Running,
    /// Failed; waiting out its backoff before the next start.
    Backoff,
    /// Stopped on purpose (removed by a reload, or shutdown).
    Stopped,
    /// Its source ended (a file without `loop`): done, not failed.
    Finished,
}

#[derive(Debug, Clone)]
struct ActorEntry {
    /// Which incarnation owns the entry: a replaced actor (reload) must not overwrite its successor.
    instance: u64,
    actor: String,
    camera: Option<String>,
    state: ActorState,
    restarts: u64,
    last_error: Option<String>,
    heartbeat: Instant,
}

#[derive(Debug, Clone)]
struct CameraEntry {
    url: String,
    frames: u64,
    fps: f64,
    last_frame: Option<Instant>,
}

/// Shared, lock-protected status of one daemon.
pub struct StatusRegistry {
    started: Instant,
    generation: AtomicU64,
    jpeg_codec: Mutex<&'static str>,
    instances: AtomicU64,
    actors: Mutex<BTreeMap<String, ActorEntry>>,
    cameras: Mutex<BTreeMap<String, CameraEntry>>,
    pub downstream: Downstream,
}

/// Whether the process side's downstreams can take work. While one is not, the consumer pauses its
/// partitions (it keeps polling, so it stays in the group) and resumes when all are back; batches
/// already in flight keep retrying and serve as probes.
#[derive(Debug, Default)]
pub struct Downstream {
    inference_open: std::sync::atomic::AtomicBool,
    storage_failing: std::sync::atomic::AtomicBool,
    inference_unready: Mutex<Option<String>>,
}

impl Downstream {
    pub fn set_inference_open(&self, open: bool) {
        self.inference_open
            .store(open, std::sync::atomic::Ordering::Relaxed);
    }
    pub fn set_storage_failing(&self, failing: bool) {
        self.storage_failing
            .store(failing, std::sync::atomic::Ordering::Relaxed);
    }
    /// Why the inference service is not ready (its health endpoints), or None when it is.
    pub fn set_inference_unready(&self, why: Option<String>) {
        *self.inference_unready.lock() = why;
    }
    /// Reasons for `/readyz`: unhealthy downstreams and an inference service that is not ready.
    pub fn not_ready(&self) -> Vec<String> {
        let mut out: Vec<String> = self.unhealthy().into_iter().map(String::from).collect();
        if let Some(why) = self.inference_unready.lock().clone() {
            out.push(format!("inference service not ready: {why}"));
        }
        out
    }
    /// What is unhealthy now (empty: all healthy); these pause consumption.
    pub fn unhealthy(&self) -> Vec<&'static str> {
        use std::sync::atomic::Ordering::Relaxed;
        let mut out = Vec::new();
        if self.inference_open.load(Relaxed) {
            out.push("inference circuit open");
        }
        if self.storage_failing.load(Relaxed) {
            out.push("storage failing");
        }
        out
    }
}

/// Identifies an actor in the registry: `source/cam-1`, `consumer`.
pub fn actor_key(actor: &str, camera: Option<&str>) -> String {
    match camera {
        Some(c) => format!("{actor}/{c}"),
        None => actor.to_string(),
    }
}

impl StatusRegistry {
    pub fn new() -> Self {
        Self {
            started: Instant::now(),
            generation: AtomicU64::new(1),
            jpeg_codec: Mutex::new(""),
            instances: AtomicU64::new(0),
            actors: Mutex::new(BTreeMap::new()),
            cameras: Mutex::new(BTreeMap::new()),
            downstream: Default::default(),
        }
    }

    pub fn set_generation(&self, g: u64) {
        self.generation.store(g, Ordering::SeqCst);
    }

    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::SeqCst)
    }

    /// The JPEG codec in use (`"libjpeg-turbo"` or `"rust"`), shown in `/status`.
    pub fn set_jpeg_codec(&self, name: &'static str) {
        *self.jpeg_codec.lock() = name;
    }

    /// A new incarnation of an actor (first start, or replacement by a reload): it owns the entry
    /// from now on; the restart count carries over. Returns its instance id.
    pub fn register(&self, actor: &str, camera: Option<&str>) -> u64 {
        let instance = self.instances.fetch_add(1, Ordering::SeqCst) + 1;
        let mut a = self.actors.lock();
        let restarts = a
            .get(&actor_key(actor, camera))
            .map(|e| e.restarts)
            .unwrap_or(0);
        a.insert(
            actor_key(actor, camera),
            ActorEntry {
                instance,
                actor: actor.into(),
                camera: camera.map(str::to_string),
                state: ActorState::Starting,
                restarts,
                last_error: None,
                heartbeat: Instant::now(),
            },
        );
        instance
    }

    /// Sets the state, if `instance` still owns the entry.
    pub fn set_state(&self, actor: &str, camera: Option<&str>, instance: u64, state: ActorState) {
        if let Some(e) = self.actors.lock().get_mut(&actor_key(actor, camera))
            && e.instance == instance
        {
            e.state = state;
            e.heartbeat = Instant::now();
        }
    }

    fn state_of(&self, actor: &str) -> Option<ActorState> {
        self.actors.lock().get(actor).map(|e| e.state)
    }

    pub fn record_restart(&self, actor: &str, camera: Option<&str>) {
        if let Some(e) = self.actors.lock().get_mut(&actor_key(actor, camera)) {
            e.restarts += 1;
        }
    }

    pub fn record_error(&self, actor: &str, camera: Option<&str>, error: &str) {
        if let Some(e) = self.actors.lock().get_mut(&actor_key(actor, camera)) {
            e.last_error = Some(crate::redact::url(error));
        }
    }

    pub fn heartbeat(&self, actor: &str, camera: Option<&str>) {
        if let Some(e) = self.actors.lock().get_mut(&actor_key(actor, camera)) {
            e.heartbeat = Instant::now();
        }
    }

    /// Removes an actor that no longer exists (a camera removed by a reload).
    pub fn forget(&self, actor: &str, camera: Option<&str>) {
        self.actors.lock().remove(&actor_key(actor, camera));
        if let Some(c) = camera {
            self.cameras.lock().remove(c);
        }
    }

    pub fn restarts(&self, actor: &str, camera: Option<&str>) -> u64 {
        self.actors
            .lock()
            .get(&actor_key(actor, camera))
            .map(|e| e.restarts)
            .unwrap_or(0)
    }

    pub fn camera_registered(&self, camera: &str, url: &str) {
        self.cameras
            .lock()
            .entry(camera.to_string())
            .or_insert(CameraEntry {
                url: crate::redact::url(url),
                frames: 0,
                fps: 0.0,
                last_frame: None,
            })
            .url = crate::redact::url(url);
    }

    /// A camera delivered a frame: updates its count and a smoothed rate.
    pub fn camera_frame(&self, camera: &str) {
        let now = Instant::now();
        if let Some(c) = self.cameras.lock().get_mut(camera) {
            if let Some(prev) = c.last_frame {
                let dt = now.duration_since(prev).as_secs_f64().max(1e-6);
                c.fps = if c.fps == 0.0 {
                    1.0 / dt
                } else {
                    0.9 * c.fps + 0.1 / dt
                };
            }
            c.frames += 1;
            c.last_frame = Some(now);
        }
    }

    /// Actors that have not heartbeat within `within` (and are not stopped on purpose).
    pub fn silent_actors(&self, within: Duration) -> Vec<String> {
        let now = Instant::now();
        self.actors
            .lock()
            .iter()
            .filter(|(_, e)| {
                e.state != ActorState::Stopped && now.duration_since(e.heartbeat) > within
            })
            .map(|(k, _)| k.clone())
            .collect()
    }

    /// Why the daemon is not ready yet; empty when it is.
    pub fn not_ready_reasons(&self, needs_cameras: bool, needs_process: bool) -> Vec<String> {
        let mut reasons = Vec::new();
        if needs_cameras {
            for (id, c) in self.cameras.lock().iter() {
                if c.last_frame.is_none() {
                    reasons.push(format!("camera {id}: no frame yet"));
                }
            }
        }
        if needs_process && self.state_of("consumer") != Some(ActorState::Running) {
            reasons.push("process side: consumer not connected to the bus".into());
        }
        if needs_process {
            reasons.extend(self.downstream.not_ready());
        }
        for (k, e) in self.actors.lock().iter() {
            if e.state == ActorState::Backoff {
                reasons.push(format!("actor {k}: restarting after failure"));
            }
        }
        reasons
    }

    /// Seconds since each camera's last frame (`None` before the first).
    pub fn camera_ages(&self) -> Vec<(String, Option<f64>)> {
        let now = Instant::now();
        self.cameras
            .lock()
            .iter()
            .map(|(id, c)| {
                (
                    id.clone(),
                    c.last_frame.map(|t| now.duration_since(t).as_secs_f64()),
                )
            })
            .collect()
    }

    pub fn uptime(&self) -> Duration {
        self.started.elapsed()
    }

    /// The `/status` document.
    pub fn snapshot(&self) -> serde_json::Value {
        let now = Instant::now();
        let actors: Vec<_> = self
            .actors
            .lock()
            .values()
            .map(|e| {
                serde_json::json!({
                    "actor": e.actor, "camera": e.camera, "state": e.state, "restarts": e.restarts,
                    "last_error": e.last_error, "heartbeat_age_seconds": now.duration_since(e.heartbeat).as_secs_f64(),
                })
            })
            .collect();
        let cameras: serde_json::Map<_, _> = self
            .cameras
            .lock()
            .iter()
            .map(|(id, c)| {
                let age = c.last_frame.map(|t| now.duration_since(t).as_secs_f64());
                (id.clone(), serde_json::json!({"url": c.url, "frames": c.frames, "fps": c.fps, "last_frame_age_seconds": age}))
            })
            .collect();
        serde_json::json!({
            "version": env!("CARGO_PKG_VERSION"),
            "config_generation": self.generation(),
            "jpeg_codec": *self.jpeg_codec.lock(),
            "uptime_seconds": self.uptime().as_secs_f64(),
            "actors": actors,
            "cameras": cameras,
        })
    }
}

impl Default for StatusRegistry {
    fn default() -> Self {
        Self::new()
    }
}
