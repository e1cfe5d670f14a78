//! `framewire bench` (W1): the whole pipeline in this process, measured. N cameras replay a
//! pre-encoded H.264 clip of the synthetic scene in real time (encoding is the camera's cost, so
//! the clip is encoded once and cached), every frame is sampled, resized and JPEG-encoded, batched,
//! sent over the bus (embedded, or librdkafka's mock cluster in a child process), consumed, run
//! through the built-in detector, annotated and stored (files, or s3s-fs as a child process).
//!
//! After a warm-up, the counters are read at the start and end of the measured window: frames
//! stored per second, frames dropped, capture→stored latency p50/p99 (interpolated within the
//! histogram's 0.1 s buckets), CPU time of this process per frame, time per frame by stage, and
//! peak RSS. The last line printed is one JSON object (the contract: at least `fps`, `dropped`,
//! `p50_ms`, `p99_ms`, `rss_mb`).

use crate::config::{Config, Pace};
use crate::daemon::{self, Options};
use crate::media::jpeg::CodecChoice;
use crate::media::synthetic::{SceneConfig, SyntheticCamera};
use crate::metrics::{Metrics, total};
use anyhow::Context as _;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

mod idle;
mod limits;
pub use limits::StageLimits;

/// JPEG quality of the cameras and the annotator, and of the stage limits.
const QUALITY: u8 = 80;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum BenchBus {
    Embedded,
    /// librdkafka's mock cluster in a child process (`framewire bench-broker`): the real Kafka
    /// protocol over loopback.
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
    /// JPEG codec (`[media] jpeg_codec`): auto, libjpeg-turbo or rust.
    #[arg(long, value_enum, default_value_t = CodecArg::Auto)]
    pub jpeg_codec: CodecArg,
    /// H.264 decoders shared by the cameras (`[media] decoders`; 0 = one per camera).
    #[arg(long, default_value_t = 0)]
    pub decoders: usize,
    /// When each camera starts: `spread` at random moments (seeded) within one batch window, as
    /// independent cameras come up, so their batches close at unrelated moments; or all at once
    /// (`aligned`: every camera's batch closes in the same instant, the worst case for the
    /// process side, as right after a restart of the daemon with file sources).
    #[arg(long, value_enum, default_value_t = CameraPhase::Spread)]
    pub camera_phase: CameraPhase,
    /// Rounds of the stage-limit measurement taken on one core before the pipeline starts and
    /// again after it stops (`limits`; median of the rounds); 0 skips it.
    #[arg(long, default_value_t = 3)]
    pub limit_rounds: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum CameraPhase {
    Spread,
    Aligned,
}

/// Opens each camera's source the first time after its own delay (the bench's camera phases).
struct PhasedOpener {
    delays: std::collections::HashMap<String, Duration>,
    started: parking_lot::Mutex<std::collections::HashSet<String>>,
}

impl crate::media::source::SourceOpener for PhasedOpener {
    fn open(
        &self,
        camera: &crate::config::CameraConfig,
        url: &crate::config::SourceUrl,
    ) -> Result<Box<dyn crate::media::source::FrameSource>, crate::media::source::SourceError> {
        if self.started.lock().insert(camera.id.clone()) {
            std::thread::sleep(self.delays.get(&camera.id).copied().unwrap_or_default());
        }
        crate::media::source::DefaultOpener.open(camera, url)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum CodecArg {
    Auto,
    LibjpegTurbo,
    Rust,
}

impl From<CodecArg> for CodecChoice {
    fn from(c: CodecArg) -> Self {
        match c {
            CodecArg::Auto => CodecChoice::Auto,
            CodecArg::LibjpegTurbo => CodecChoice::LibjpegTurbo,
            CodecArg::Rust => CodecChoice::Rust,
        }
    }
}

/// Seconds (fractions allowed) as a `Duration`.
fn seconds(s: &str) -> Result<Duration, String> {
    let v: f64 = s.parse().map_err(|e| format!("{s:?}: {e}"))?;
    Duration::try_from_secs_f64(v).map_err(|e| format!("{s:?}: {e}"))
}

/// A snapshot of the counters the report is computed from.
struct Sample {
    at: Instant,
    /// Frames sampled by the cameras (entering the pipeline).
    sampled: u64,
    stored: u64,
    dropped: u64,
    /// Over all cameras (merged from `latency_by_camera`).
    latency: Vec<(f64, u64)>,
    /// Camera by camera (label order as collected).
    latency_by_camera: Vec<(String, Vec<(f64, u64)>)>,
    /// Frames' ages when batched and when consumed (`framewire_capture_age_seconds`).
    ages: Vec<(String, Vec<(f64, u64)>)>,
    /// Keyframe intervals' waits for a shared decoder.
    decoder_wait: Vec<(f64, u64)>,
    stages: Vec<(&'static str, f64, u64)>,
    cpu: Duration,
    /// Of which the capture threads'.
    cameras_cpu: Duration,
    /// CPU time of each peer process, in `peers` order.
    peers_cpu: Vec<Duration>,
    /// The host CPUs' idle-state entries so far (`None` without cpuidle).
    idle: Option<idle::Entries>,
}

impl Sample {
    /// Frames sampled and not yet stored or dropped.
    fn in_flight(&self) -> i64 {
        self.sampled as i64 - self.stored as i64 - self.dropped as i64
    }
}

const STAGES: [&str; 5] = ["decode", "encode", "inference", "annotate", "store"];

fn sample(m: &Metrics, peers: &[Peer]) -> Sample {
    let latency_by_camera = crate::metrics::buckets_by_label(&m.capture_to_stored);
    let latency = crate::metrics::merge(latency_by_camera.iter().map(|(_, b)| b.as_slice()));
    Sample {
        at: Instant::now(),
        sampled: total(&m.frames_sampled),
        // One latency sample per stored frame: the +Inf bucket counts them all.
        stored: latency.last().map_or(0, |b| b.1),
        dropped: total(&m.frames_dropped),
        latency,
        latency_by_camera,
        ages: crate::metrics::buckets_by_label(&m.capture_age),
        decoder_wait: crate::metrics::buckets(&m.h264_decoder_wait),
        stages: STAGES
            .iter()
            .map(|s| {
                let h = m.stage_duration.with_label_values(&[s]);
                (*s, h.get_sample_sum(), h.get_sample_count())
            })
            .collect(),
        cpu: cpu_time(),
        cameras_cpu: camera_threads_cpu(),
        peers_cpu: peers.iter().map(Peer::cpu).collect(),
        idle: idle::entries(Path::new("/sys")),
    }
}

/// utime + stime of a `/proc/…/stat` line (clock ticks, 10 ms here); zero if unreadable.
fn stat_cpu(stat: &str) -> Duration {
    // Fields after the parenthesised command name: utime and stime are the 12th and 13th.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let ticks: u64 = rest
        .split_whitespace()
        .skip(11)
        .take(2)
        .filter_map(|v| v.parse::<u64>().ok())
        .sum();
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    Duration::from_secs_f64(ticks as f64 / hz)
}

/// CPU time of this process's capture threads (`cam-…`: demux, H.264 decode, resize, JPEG
/// encode). They live as long as their camera, so a difference over the window is theirs; the
/// rest of the process's CPU is the process side and the glue (Kafka clients, actors).
fn camera_threads_cpu() -> Duration {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return Duration::ZERO;
    };
    tasks
        .flatten()
        .filter(|t| {
            std::fs::read_to_string(t.path().join("comm")).is_ok_and(|c| c.starts_with("cam-"))
        })
        .map(|t| stat_cpu(&std::fs::read_to_string(t.path().join("stat")).unwrap_or_default()))
        .sum()
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
    rss_of("/proc/self/status")
}

/// (VmRSS, VmHWM) in MiB from a `/proc/…/status` file; zeros if it cannot be read.
fn rss_of(path: &str) -> (f64, f64) {
    let text = std::fs::read_to_string(path).unwrap_or_default();
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

/// A peer process of the bench (the Kafka broker, the S3 server), killed on drop; its CPU time
/// and memory are read from `/proc`, so they are reported apart from framewire's.
struct Peer {
    name: &'static str,
    child: std::process::Child,
    /// Bootstrap servers or endpoint URL.
    address: String,
}

impl Drop for Peer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A peer's command, set to be killed when this process ends (also on a crash).
fn peer_command(program: impl AsRef<std::ffi::OsStr>) -> std::process::Command {
    use std::os::unix::process::CommandExt as _;
    let mut cmd = std::process::Command::new(program);
    // SAFETY: prctl is async-signal-safe; the closure touches nothing else.
    unsafe {
        cmd.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) == 0 {
                Ok(())
            } else {
                Err(std::io::Error::last_os_error())
            }
        });
    }
    cmd
}

impl Peer {
    /// User + system CPU time so far, from `/proc/PID/stat`.
    fn cpu(&self) -> Duration {
        stat_cpu(
            &std::fs::read_to_string(format!("/proc/{}/stat", self.child.id())).unwrap_or_default(),
        )
    }

    /// (current, peak) RSS in MiB.
    fn rss_mb(&self) -> (f64, f64) {
        rss_of(&format!("/proc/{}/status", self.child.id()))
    }
}

/// `framewire bench-broker`: librdkafka's mock cluster with one topic, in its own process (a
/// production daemon never hosts its broker, so the bench keeps the broker's memory and CPU out
/// of framewire's figures). Prints the bootstrap servers, then serves until stdin closes.
pub fn serve_mock_broker(topic: &str, partitions: i32) -> anyhow::Result<()> {
    let cluster = rdkafka::mocking::MockCluster::new(1)?;
    cluster.create_topic(topic, partitions, 1)?;
    println!("{}", cluster.bootstrap_servers());
    std::io::stdout().flush()?;
    let mut sink = Vec::new();
    let _ = std::io::Read::read_to_end(&mut std::io::stdin(), &mut sink);
    Ok(())
}

fn start_broker(topic: &str, partitions: i32) -> anyhow::Result<Peer> {
    use std::io::BufRead as _;
    let mut child = peer_command(std::env::current_exe()?)
        .args(["bench-broker", "--topic", topic])
        .args(["--partitions", &partitions.to_string()])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .context("starting the mock Kafka broker (framewire bench-broker)")?;
    let mut line = String::new();
    if let Some(out) = child.stdout.take() {
        std::io::BufReader::new(out).read_line(&mut line)?;
    }
    let address = line.trim().to_string();
    let peer = Peer {
        name: "kafka",
        child,
        address,
    };
    anyhow::ensure!(
        !peer.address.is_empty(),
        "the mock broker printed no bootstrap servers"
    );
    Ok(peer)
}

fn start_s3(root: &Path, bucket: &str) -> anyhow::Result<Peer> {
    std::fs::create_dir_all(root.join(bucket))?;
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let child = peer_command("s3s-fs")
        .args(["--host", "127.0.0.1", "--port", &port.to_string()])
        .args(["--access-key", "bench", "--secret-key", "bench-secret"])
        .arg(root)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .context("--storage s3 needs s3s-fs on PATH (cargo install s3s-fs@0.14.1 --features binary --locked)")?;
    let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse()?;
    let s3 = Peer {
        name: "s3",
        child,
        address: format!("http://{addr}"),
    };
    let until = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(100)).is_err() {
        anyhow::ensure!(Instant::now() < until, "s3s-fs did not start listening");
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(s3)
}

/// The kind of filesystem holding `path` (where W1 stores, under `TMPDIR`): storage's cost
/// depends on it (ext4 scans inodes deleted in the last minutes for every file it creates, so
/// back-to-back runs on ext4 slow each other; tmpfs never syncs).
fn filesystem(path: &Path) -> String {
    let Ok(c) = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()) else {
        return "unknown".into();
    };
    // SAFETY: all-zero is a valid `statfs` (plain integers), which statfs fills; `c` is a valid
    // C string.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    if unsafe { libc::statfs(c.as_ptr(), &mut st) } != 0 {
        return "unknown".into();
    }
    match st.f_type as u64 {
        0xEF53 => "ext4".into(),
        0x0102_1994 => "tmpfs".into(),
        0x5846_5342 => "xfs".into(),
        0x9123_683E => "btrfs".into(),
        0x794C_7630 => "overlayfs".into(),
        other => format!("0x{other:x}"),
    }
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
            c.jpeg_quality = QUALITY;
            c.loop_file = true;
            c.pace = Pace::Realtime;
            c
        })
        .collect();
    cfg.storage.path = dir.path().join("out").display().to_string();
    let storage_fs = filesystem(dir.path());
    cfg.annotator.jpeg_quality = QUALITY;
    cfg.media.jpeg_codec = o.jpeg_codec.into();
    cfg.media.decoders = o.decoders;
    let codec = crate::media::jpeg::Codec::select(cfg.media.jpeg_codec)
        .map_err(|e| anyhow::anyhow!("--jpeg-codec: {e}"))?;
    let setup = limits::Setup {
        units: if o.limit_rounds == 0 {
            Vec::new()
        } else {
            limits::read_units(&clip)?
        },
        out_width: o.out_width,
        out_height: o.out_height,
        quality: QUALITY,
        codec,
    };
    let measure_limits = |when: &str| -> anyhow::Result<Option<StageLimits>> {
        if o.limit_rounds == 0 {
            return Ok(None);
        }
        eprintln!(
            "stage limits on one core ({when}, {} rounds)…",
            o.limit_rounds
        );
        limits::measure(&setup, o.limit_rounds)
            .map(Some)
            .with_context(|| format!("stage limits ({when})"))
    };
    let limits_before = measure_limits("before")?;
    // Both cores for the CPU-bound stages of the process side.
    cfg.inference.workers = 2;
    cfg.annotator.workers = 2;
    let mut peers: Vec<Peer> = Vec::new();
    if o.bus == BenchBus::Mock {
        let broker = start_broker("framewire.bench", o.cameras.max(2) as i32)?;
        cfg.kafka.brokers = broker.address.clone();
        peers.push(broker);
        {
            cfg.kafka.topic = "framewire.bench".into();
            cfg.kafka.create_topic = false;
            cfg.kafka
                .librdkafka
                .insert("fetch.wait.max.ms".into(), "10".into());
        }
    }
    if o.storage == BenchStorage::S3 {
        let s3 = start_s3(&dir.path().join("s3"), "bench")?;
        cfg.storage.kind = crate::config::StorageKind::S3;
        cfg.storage.bucket = "bench".into();
        cfg.storage.region = "us-east-1".into();
        cfg.storage.endpoint = s3.address.clone();
        cfg.storage.force_path_style = true;
        cfg.storage.access_key_id = "bench".into();
        cfg.storage.secret_access_key = "bench-secret".into();
        peers.push(s3);
    }
    // `spread`: each camera starts at a random moment (seeded, so runs repeat) within one batch
    // window, as independent cameras do; their batches then close at unrelated moments.
    let window = Duration::from_secs_f64(cfg.batch.frames as f64 / f64::from(o.fps));
    let mut rng = <rand_chacha::ChaCha8Rng as rand::SeedableRng>::seed_from_u64(1);
    let delays = cfg
        .cameras
        .iter()
        .map(|c| {
            let at = match o.camera_phase {
                CameraPhase::Spread => window.mul_f64(rand::Rng::random::<f64>(&mut rng)),
                CameraPhase::Aligned => Duration::ZERO,
            };
            (c.id.clone(), at)
        })
        .collect();
    let mut opts = Options::new(cfg);
    opts.signals = false;
    opts.opener = std::sync::Arc::new(PhasedOpener {
        delays,
        started: Default::default(),
    });
    let d = daemon::start(opts)?;
    let m = d.metrics.clone();
    eprintln!(
        "{} cameras × {}x{} @ {} fps → {}x{}; warm-up {:?}, measuring {:?}…",
        o.cameras, o.width, o.height, o.fps, o.out_width, o.out_height, o.warmup, o.duration
    );
    std::thread::sleep(o.warmup);
    let a = sample(&m, &peers);
    std::thread::sleep(o.duration);
    let b = sample(&m, &peers);
    let (rss, rss_peak) = rss_mb();
    let peer_rss: Vec<(f64, f64)> = peers.iter().map(Peer::rss_mb).collect();
    d.shutdown();
    let limits_after = measure_limits("after")?;

    let secs = (b.at - a.at).as_secs_f64();
    let frames = b.stored.saturating_sub(a.stored);
    let fps = frames as f64 / secs;
    // (Before any frame is stored, the merged buckets are only `+Inf`: `since` keeps every
    // bound of the later read.)
    let window = crate::metrics::since(&b.latency, Some(&a.latency));
    let p50 = crate::metrics::quantile(&window, 0.5) * 1e3;
    let p99 = crate::metrics::quantile(&window, 0.99) * 1e3;
    // The camera whose frames waited longest (p99 over the window): one stuck camera (its decoder
    // lease, its partition) shows here, where the p99 over all cameras only says "slow".
    let worst = b
        .latency_by_camera
        .iter()
        .map(|(cam, buckets)| {
            let before = a.latency_by_camera.iter().find(|(c, _)| c == cam);
            let window = crate::metrics::since(buckets, before.map(|(_, b)| b.as_slice()));
            (cam.clone(), crate::metrics::quantile(&window, 0.99) * 1e3)
        })
        .max_by(|x, y| x.1.total_cmp(&y.1));
    // Where the latency went: each frame's age when its batch was sealed and when consumed,
    // p50 / p99 over the window, next to capture→stored.
    let mut hops = serde_json::Map::new();
    for (at, buckets) in &b.ages {
        let before = a.ages.iter().find(|(x, _)| x == at);
        let window = crate::metrics::since(buckets, before.map(|(_, b)| b.as_slice()));
        hops.insert(
            at.clone(),
            serde_json::json!({
                "p50_ms": crate::metrics::quantile(&window, 0.5) * 1e3,
                "p99_ms": crate::metrics::quantile(&window, 0.99) * 1e3,
            }),
        );
    }
    hops.insert(
        "stored".into(),
        serde_json::json!({"p50_ms": p50, "p99_ms": p99}),
    );
    let waits = crate::metrics::since(&b.decoder_wait, Some(&a.decoder_wait));
    let decoder_wait = serde_json::json!({
        "intervals": waits.last().map_or(0, |w| w.1),
        "p50_ms": crate::metrics::quantile(&waits, 0.5) * 1e3,
        "p99_ms": crate::metrics::quantile(&waits, 0.99) * 1e3,
    });
    let per_frame = |ms: f64| if frames == 0 { 0.0 } else { ms / frames as f64 };
    let cpu_ms = per_frame((b.cpu - a.cpu).as_secs_f64() * 1e3);
    let cameras_ms = per_frame(b.cameras_cpu.saturating_sub(a.cameras_cpu).as_secs_f64() * 1e3);
    let mut stages = serde_json::Map::new();
    for ((name, sum_b, _), (_, sum_a, _)) in b.stages.iter().zip(&a.stages) {
        stages.insert((*name).into(), per_frame((sum_b - sum_a) * 1e3).into());
    }
    let mut peer_report = serde_json::Map::new();
    let mut peers_cpu = Duration::ZERO;
    for ((p, (cb, ca)), (prss, ppeak)) in peers
        .iter()
        .zip(b.peers_cpu.iter().zip(&a.peers_cpu))
        .zip(&peer_rss)
    {
        peers_cpu += cb.saturating_sub(*ca);
        peer_report.insert(
            p.name.into(),
            serde_json::json!({
                "cpu_ms_per_frame": per_frame(cb.saturating_sub(*ca).as_secs_f64() * 1e3),
                "rss_mb": prss,
                "rss_peak_mb": ppeak,
            }),
        );
    }
    let machine_cores = ((b.cpu - a.cpu) + peers_cpu).as_secs_f64() / secs;
    // How the vCPUs idled: on the test host (a VM) the CPU per frame depended on whether idle
    // vCPUs halt at once or poll first (idle.rs), so the report says which this run had.
    let idle_setup = idle::setup(Path::new("/sys"));
    let idle_rates = a.idle.zip(b.idle).map(|(x, y)| y.rates_since(&x, secs));
    let cpu_idle = serde_json::json!({
        "driver": idle_setup.driver,
        "governor": idle_setup.governor,
        "guest_halt_poll_ns": idle_setup.guest_halt_poll_ns,
        "polls_per_s": idle_rates.map(|r| r.polls_per_s),
        "halts_per_s": idle_rates.map(|r| r.halts_per_s),
    });
    // The CPU per frame against the stage sum measured before and after the window (their mean).
    let limits_json = match (limits_before, limits_after) {
        (Some(before), Some(after)) => {
            let mean = |f: fn(&StageLimits) -> f64| (f(&before) + f(&after)) / 2.0;
            let sum = mean(StageLimits::sum);
            let cameras = mean(|l| l.decode + l.resize_encode);
            serde_json::json!({
                "before": before.to_json(),
                "after": after.to_json(),
                "cpu_vs_sum": cpu_ms / sum,
                "cpu_vs_sum_with_detector": cpu_ms / (sum + mean(|l| l.detector)),
                // Each side against its own stages: the capture threads against decode +
                // resize + encode, the rest against JPEG decode + detector + draw + encode.
                "cameras_vs_stages": cameras_ms / cameras,
                "rest_vs_stages": (cpu_ms - cameras_ms) / (sum - cameras + mean(|l| l.detector)),
            })
        }
        _ => serde_json::Value::Null,
    };
    let report = serde_json::json!({
        "cameras": o.cameras,
        "input": format!("{}x{}@{}", o.width, o.height, o.fps),
        "output": format!("{}x{}", o.out_width, o.out_height),
        "bus": format!("{:?}", o.bus).to_lowercase(),
        "storage": format!("{:?}", o.storage).to_lowercase(),
        "duration_s": secs,
        "fps": fps,
        // Frames entering per second, and how much the frames in flight (sampled, not yet
        // stored) grew over the window: about zero when the pipeline keeps up (the stored count
        // moves a batch of 25 at a time, so `fps` alone is off by a few batches at the edges).
        "input_fps": b.sampled.saturating_sub(a.sampled) as f64 / secs,
        "backlog_growth": b.in_flight() - a.in_flight(),
        "target_fps": o.cameras as f64 * f64::from(o.fps),
        "frames": frames,
        "dropped": b.dropped.saturating_sub(a.dropped),
        "p50_ms": p50,
        "p99_ms": p99,
        "age_ms": hops,
        // Shared decoders: how long complete keyframe intervals waited for one.
        "decoder_wait_ms": decoder_wait,
        "p99_ms_worst_camera": worst.as_ref().map(|(cam, ms)| serde_json::json!({"camera": cam, "p99_ms": ms})),
        "cpu_ms_per_frame": cpu_ms,
        // Split: the capture threads (decode, resize, encode) and the rest (process side, glue).
        "cpu_ms_per_frame_cameras": cameras_ms,
        "cpu_ms_per_frame_rest": cpu_ms - cameras_ms,
        "cores_busy": (b.cpu - a.cpu).as_secs_f64() / secs,
        "stage_ms_per_frame": stages,
        "rss_mb": rss,
        "rss_peak_mb": rss_peak,
        "jpeg_codec": codec.name(),
        "decoders": if o.decoders == 0 { o.cameras } else { o.decoders },
        "decoders_shared": o.decoders > 0,
        "storage_fs": storage_fs,
        "camera_phase": format!("{:?}", o.camera_phase).to_lowercase(),
        "peers": peer_report,
        "machine_cores_busy": machine_cores,
        "cpu_idle": cpu_idle,
        "stage_limits_ms": limits_json,
    });
    println!("framewire bench (W1)");
    println!(
        "  cameras {:>3}   end-to-end {:>7.1} frames/s (target {:.0}, in {:.1})   dropped {}   backlog growth {}",
        o.cameras,
        fps,
        o.cameras as f64 * f64::from(o.fps),
        report["input_fps"].as_f64().unwrap_or(0.0),
        report["dropped"],
        report["backlog_growth"]
    );
    println!(
        "  capture→stored p50 {p50:>7.0} ms   p99 {p99:>7.0} ms (worst camera: {})   RSS {rss:.0} MiB (peak {rss_peak:.0})",
        worst
            .as_ref()
            .map_or("none".into(), |(cam, ms)| format!("{cam} {ms:.0} ms"))
    );
    println!(
        "  frame age p50 / p99 ms: {}",
        hops.iter()
            .map(|(at, h)| format!(
                "{at} {:.0} / {:.0}",
                h["p50_ms"].as_f64().unwrap_or(0.0),
                h["p99_ms"].as_f64().unwrap_or(0.0)
            ))
            .collect::<Vec<_>>()
            .join(", ")
    );
    if o.decoders > 0 {
        println!(
            "  keyframe intervals waiting for a shared decoder: p50 {:.0} ms, p99 {:.0} ms ({} intervals)",
            decoder_wait["p50_ms"].as_f64().unwrap_or(0.0),
            decoder_wait["p99_ms"].as_f64().unwrap_or(0.0),
            decoder_wait["intervals"]
        );
    }
    println!(
        "  CPU {cpu_ms:.2} ms/frame ({:.2} cores busy): capture threads {cameras_ms:.2}, the rest {:.2}; wall time by stage, ms/frame:",
        report["cores_busy"].as_f64().unwrap_or(0.0),
        cpu_ms - cameras_ms
    );
    for (name, ms) in &stages {
        println!("    {name:<10} {:>6.2}", ms.as_f64().unwrap_or(0.0));
    }
    for (name, p) in &peer_report {
        println!(
            "  peer {name:<6} CPU {:.2} ms/frame   RSS {:.0} MiB (peak {:.0})",
            p["cpu_ms_per_frame"].as_f64().unwrap_or(0.0),
            p["rss_mb"].as_f64().unwrap_or(0.0),
            p["rss_peak_mb"].as_f64().unwrap_or(0.0)
        );
    }
    if let (Some(before), Some(after)) = (limits_before, limits_after) {
        println!("  stage limits, ms/frame on one core (before / after the run):");
        for (name, x, y) in [
            ("decode", before.decode, after.decode),
            ("resize+encode", before.resize_encode, after.resize_encode),
            ("JPEG decode", before.jpeg_decode, after.jpeg_decode),
            ("draw+encode", before.draw_encode, after.draw_encode),
            ("sum", before.sum(), after.sum()),
            ("(detector)", before.detector, after.detector),
            ("(boxes/frame)", before.boxes, after.boxes),
        ] {
            println!("    {name:<14} {x:>6.2} / {y:>6.2}");
        }
        let x = |k: &str| limits_json[k].as_f64().unwrap_or(0.0);
        println!(
            "  CPU per frame = {:.2}× the stage sum ({:.2}× with the detector counted); capture threads {:.2}× their stages, the rest {:.2}× theirs (detector counted)",
            x("cpu_vs_sum"),
            x("cpu_vs_sum_with_detector"),
            x("cameras_vs_stages"),
            x("rest_vs_stages")
        );
    }
    println!(
        "  JPEG codec {}, {}, storage on {storage_fs}, camera phases {:?}; all processes kept {machine_cores:.2} of {} cores busy",
        codec.name(),
        if o.decoders == 0 {
            "one H.264 decoder per camera".to_string()
        } else {
            format!("{} shared H.264 decoders", o.decoders)
        },
        o.camera_phase,
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    println!(
        "  CPU idle: driver {}, governor {}, guest halt polling {}; {} halts/s, {} polls/s over the window",
        idle_setup.driver.as_deref().unwrap_or("none"),
        idle_setup.governor.as_deref().unwrap_or("none"),
        idle::describe_poll_limit(idle_setup.guest_halt_poll_ns),
        idle_rates.map_or("?".to_string(), |r| format!("{:.0}", r.halts_per_s)),
        idle_rates.map_or("?".to_string(), |r| format!("{:.0}", r.polls_per_s)),
    );
    println!("{report}");
    // The process ends next: keep the peers up until then (they die with it, PR_SET_PDEATHSIG),
    // so the daemon's bus clients, still closing, do not log a storm of connection errors.
    std::mem::forget(peers);
    Ok(report)
}
