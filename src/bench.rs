//! `framewire bench` (W1): the whole pipeline in this process, measured. N cameras replay a
//! pre-encoded H.264 clip of the synthetic scene in real time (encoding is the camera's cost, so
//! the clip is encoded once and cached), every frame is sampled, resized and JPEG-encoded, batched,
//! sent over the bus (embedded, or librdkafka's mock cluster in this process), consumed, run
//! through the built-in detector, annotated and stored (files, or s3s-fs as a child process).
//!
//! After a warm-up, the counters are read at the start and end of the measured window: frames
//! stored per second, frames dropped, capture→stored latency p50/p99 (interpolated within the
//! histogram's 0.1 s buckets), CPU time of this process per frame, time per frame by stage, and
//! peak RSS. The last line printed is one JSON object (the contract: at least `fps`, `dropped`,
//! `p50_ms`, `p99_ms`, `rss_mb`).

use crate::config::{Config, Pace};
use crate::daemon::{self, Options};
use crate::media::synthetic::{SceneConfig, SyntheticCamera};
use crate::metrics::{Metrics, total};
use anyhow::Context as _;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum BenchBus {
    Embedded,
    /// librdkafka's mock cluster, hosted in this process (the real Kafka protocol over loopback).
    Mock,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum BenchStorage {
    File,
    /// s3s-fs (must be on PATH), a real S3 server, as a child process.
    S3,
}

/// `framewire bench` options (also its command line).
#[derive(Debug, Clone, clap::Args)]
pub struct BenchOptions {
    #[arg(long, default_value_t = 12)]
    pub cameras: usize,
    /// Seconds measured (after the warm-up).
    #[arg(long, default_value = "30", value_parser = seconds)]
    pub duration: Duration,
    /// Seconds run before measuring.
    #[arg(long, default_value = "8", value_parser = seconds)]
    pub warmup: Duration,
    /// Camera resolution and frame rate of the replayed clip.
    #[arg(long, default_value_t = 1280)]
    pub width: u32,
    #[arg(long, default_value_t = 720)]
    pub height: u32,
    #[arg(long, default_value_t = 25)]
    pub fps: u32,
    /// Frames are resized to this before JPEG.
    #[arg(long, default_value_t = 640)]
    pub out_width: u32,
    #[arg(long, default_value_t = 360)]
    pub out_height: u32,
    #[arg(long, value_enum, default_value_t = BenchBus::Mock)]
    pub bus: BenchBus,
    #[arg(long, value_enum, default_value_t = BenchStorage::File)]
    pub storage: BenchStorage,
}

/// Seconds (fractions allowed) as a `Duration`.
fn seconds(s: &str) -> Result<Duration, String> {
    let v: f64 = s.parse().map_err(|e| format!("{s:?}: {e}"))?;
    Duration::try_from_secs_f64(v).map_err(|e| format!("{s:?}: {e}"))
}

/// A snapshot of the counters the report is computed from.
struct Sample {
    at: Instant,
    stored: u64,
    dropped: u64,
    latency: Vec<(f64, u64)>,
    stages: Vec<(&'static str, f64, u64)>,
    cpu: Duration,
}

const STAGES: [&str; 5] = ["decode", "encode", "inference", "annotate", "store"];

fn sample(m: &Metrics) -> Sample {
    let latency = crate::metrics::buckets(&m.capture_to_stored);
    Sample {
        at: Instant::now(),
        // One latency sample per stored frame: the +Inf bucket counts them all.
        stored: latency.last().map_or(0, |b| b.1),
        dropped: total(&m.frames_dropped),
        latency,
        stages: STAGES
            .iter()
            .map(|s| {
                let h = m.stage_duration.with_label_values(&[s]);
                (*s, h.get_sample_sum(), h.get_sample_count())
            })
            .collect(),
        cpu: cpu_time(),
    }
}

/// User + system CPU time of this process (all threads).
fn cpu_time() -> Duration {
    // SAFETY: getrusage fills the struct we pass; RUSAGE_SELF is always valid.
    let mut u: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut u) };
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(u.ru_utime) + tv(u.ru_stime)
}

/// (current, peak) resident set size in MiB, from /proc/self/status.
pub fn rss_mb() -> (f64, f64) {
    let text = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let kb = |key: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok())
            .unwrap_or(0.0)
            / 1024.0
    };
    (kb("VmRSS:"), kb("VmHWM:"))
}

/// The clip every camera replays: `seconds` of the synthetic scene, Annex B, cached by size.
fn clip(width: u32, height: u32, fps: u32) -> anyhow::Result<PathBuf> {
    let dir = std::env::temp_dir().join("framewire-bench");
    std::fs::create_dir_all(&dir)?;
    let path = dir.join(format!("scene-{width}x{height}-{fps}.h264"));
    if path.is_file() {
        return Ok(path);
    }
    eprintln!(
        "encoding the {width}x{height} clip once ({})…",
        path.display()
    );
    let mut cam = SyntheticCamera::new(SceneConfig {
        width,
        height,
        fps,
        objects: 3,
        seed: 7,
    })?;
    let tmp = path.with_extension("part");
    let mut f = std::io::BufWriter::new(std::fs::File::create(&tmp)?);
    for _ in 0..fps * 10 {
        f.write_all(&cam.next_frame()?.annexb)?;
    }
    f.into_inner()?.sync_all()?;
    std::fs::rename(&tmp, &path)?;
    Ok(path)
}

/// s3s-fs over a temporary directory, killed on drop.
struct S3Child {
    child: std::process::Child,
    endpoint: String,
}

impl Drop for S3Child {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_s3(root: &Path, bucket: &str) -> anyhow::Result<S3Child> {
    std::fs::create_dir_all(root.join(bucket))?;
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let child = std::process::Command::new("s3s-fs")
        .args(["--host", "127.0.0.1", "--port", &port.to_string()])
        .args(["--access-key", "bench", "--secret-key", "bench-secret"])
        .arg(root)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .context("--storage s3 needs s3s-fs on PATH (cargo install s3s-fs@0.14.1 --features binary --locked)")?;
    let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse()?;
    let s3 = S3Child {
        child,
        endpoint: format!("http://{addr}"),
    };
    let until = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(100)).is_err() {
        anyhow::ensure!(Instant::now() < until, "s3s-fs did not start listening");
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(s3)
}

/// Runs W1 and prints the report; returns the JSON line's object.
pub fn run(o: &BenchOptions) -> anyhow::Result<serde_json::Value> {
    anyhow::ensure!(o.cameras >= 1, "--cameras must be at least 1");
    let clip = clip(o.width, o.height, o.fps)?;
    let dir = tempfile::tempdir()?;
    let mut cfg = Config::default();
    cfg.http.listen = "127.0.0.1:0".parse()?;
    cfg.batch.frames = 25;
    cfg.cameras = (0..o.cameras)
        .map(|i| {
            let mut c = crate::config::CameraConfig::synthetic(
                &format!("cam-{i:02}"),
                &format!("file://{}", clip.display()),
            );
            c.sample_fps = f64::from(o.fps);
            c.width = o.out_width;
            c.height = o.out_height;
            c.jpeg_quality = 80;
            c.loop_file = true;
            c.pace = Pace::Realtime;
            c
        })
        .collect();
    cfg.storage.path = dir.path().join("out").display().to_string();
    cfg.annotator.jpeg_quality = 80;
    // Both cores for the CPU-bound stages of the process side.
    cfg.inference.workers = 2;
    cfg.annotator.workers = 2;
    let cluster = match o.bus {
        BenchBus::Embedded => None,
        BenchBus::Mock => {
            let cluster = rdkafka::mocking::MockCluster::new(1)?;
            let partitions = o.cameras.max(2) as i32;
            cluster.create_topic("framewire.bench", partitions, 1)?;
            cfg.kafka.brokers = cluster.bootstrap_servers();
            cfg.kafka.topic = "framewire.bench".into();
            cfg.kafka.create_topic = false;
            cfg.kafka
                .librdkafka
                .insert("fetch.wait.max.ms".into(), "10".into());
            Some(cluster)
        }
    };
    let _s3 = match o.storage {
        BenchStorage::File => None,
        BenchStorage::S3 => {
            let s3 = start_s3(&dir.path().join("s3"), "bench")?;
            cfg.storage.kind = crate::config::StorageKind::S3;
            cfg.storage.bucket = "bench".into();
            cfg.storage.region = "us-east-1".into();
            cfg.storage.endpoint = s3.endpoint.clone();
            cfg.storage.force_path_style = true;
            cfg.storage.access_key_id = "bench".into();
            cfg.storage.secret_access_key = "bench-secret".into();
            Some(s3)
        }
    };
    let mut opts = Options::new(cfg);
    opts.signals = false;
    let d = daemon::start(opts)?;
    let m = d.metrics.clone();
    eprintln!(
        "{} cameras × {}x{} @ {} fps → {}x{}; warm-up {:?}, measuring {:?}…",
        o.cameras, o.width, o.height, o.fps, o.out_width, o.out_height, o.warmup, o.duration
    );
    std::thread::sleep(o.warmup);
    let a = sample(&m);
    std::thread::sleep(o.duration);
    let b = sample(&m);
    let (rss, rss_peak) = rss_mb();
    d.shutdown();

    let secs = (b.at - a.at).as_secs_f64();
    let frames = b.stored.saturating_sub(a.stored);
    let fps = frames as f64 / secs;
    let window: Vec<(f64, u64)> = b
        .latency
        .iter()
        .zip(&a.latency)
        .map(|(x, y)| (x.0, x.1.saturating_sub(y.1)))
        .collect();
    let p50 = crate::metrics::quantile(&window, 0.5) * 1e3;
    let p99 = crate::metrics::quantile(&window, 0.99) * 1e3;
    let per_frame = |ms: f64| if frames == 0 { 0.0 } else { ms / frames as f64 };
    let cpu_ms = per_frame((b.cpu - a.cpu).as_secs_f64() * 1e3);
    let mut stages = serde_json::Map::new();
    for ((name, sum_b, _), (_, sum_a, _)) in b.stages.iter().zip(&a.stages) {
        stages.insert((*name).into(), per_frame((sum_b - sum_a) * 1e3).into());
    }
    let report = serde_json::json!({
        "cameras": o.cameras,
        "input": format!("{}x{}@{}", o.width, o.height, o.fps),
        "output": format!("{}x{}", o.out_width, o.out_height),
        "bus": format!("{:?}", o.bus).to_lowercase(),
        "storage": format!("{:?}", o.storage).to_lowercase(),
        "duration_s": secs,
        "fps": fps,
        "target_fps": o.cameras as f64 * f64::from(o.fps),
        "frames": frames,
        "dropped": b.dropped.saturating_sub(a.dropped),
        "p50_ms": p50,
        "p99_ms": p99,
        "cpu_ms_per_frame": cpu_ms,
        "cores_busy": (b.cpu - a.cpu).as_secs_f64() / secs,
        "stage_ms_per_frame": stages,
        "rss_mb": rss,
        "rss_peak_mb": rss_peak,
    });
    println!("framewire bench (W1)");
    println!(
        "  cameras {:>3}   end-to-end {:>7.1} frames/s (target {:.0})   dropped {}",
        o.cameras,
        fps,
        o.cameras as f64 * f64::from(o.fps),
        report["dropped"]
    );
    println!(
        "  capture→stored p50 {p50:>7.0} ms   p99 {p99:>7.0} ms   RSS {rss:.0} MiB (peak {rss_peak:.0})"
    );
    println!(
        "  CPU {cpu_ms:.2} ms/frame ({:.2} cores busy); by stage, ms/frame:",
        report["cores_busy"].as_f64().unwrap_or(0.0)
    );
    for (name, ms) in &stages {
        println!("    {name:<10} {:>6.2}", ms.as_f64().unwrap_or(0.0));
    }
    println!("{report}");
    // The process ends next: keep the mock cluster up until then, so the daemon's bus clients,
    // still closing, do not log a storm of connection errors after the report.
    std::mem::forget(cluster);
    Ok(report)
}
