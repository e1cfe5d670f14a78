//! The `framewire` command line: `run` the daemon, `validate` a config. Everything else lives in
//! the library.

use clap::{Parser, Subcommand, ValueEnum};
use framewire::config::{self, Role};
use framewire::daemon;
use framewire::http::serve::Protocols;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

#[derive(Parser)]
#[command(
    name = "framewire",
    version,
    about = "Live camera video → detections → annotated frames and results in storage, with Kafka in the middle"
)]
struct Cli {
    /// Log format on stderr.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Human)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Human,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Run the pipeline until SIGTERM/SIGINT (or --duration); SIGHUP reloads the config.
    Run {
        /// TOML config file; without it, built-in defaults (two synthetic cameras, embedded bus,
        /// output in ./framewire-out).
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// Which half of the pipeline to run.
        #[arg(long, value_enum, default_value_t = Role::All)]
        role: Role,
        /// Stop (after draining) when this many seconds have passed.
        #[arg(long)]
        duration: Option<f64>,
    },
    /// Serve the built-in motion detector over the prototype's `/infer` API and Open Inference
    /// Protocol v2 REST. Prints `listening on ADDR` when bound; SIGINT/SIGTERM stop it.
    ServeInference {
        #[arg(long, default_value = "127.0.0.1:8000")]
        listen: std::net::SocketAddr,
        #[arg(long, value_enum, default_value_t = Protocols::Both)]
        protocol: Protocols,
        /// HTTP worker threads (detection itself runs on the blocking pool).
        #[arg(long, default_value_t = 2)]
        workers: usize,
        /// Per-pixel difference from the background that counts as motion (0–255).
        #[arg(long, default_value_t = 30)]
        motion_threshold: u8,
        /// Smallest object, as a fraction of the frame area.
        #[arg(long, default_value_t = 0.001)]
        min_area_fraction: f32,
    },
    /// W1: the whole pipeline in this process over N cameras replaying a 720p clip in real time;
    /// prints a table, then one JSON line (fps, dropped, p50_ms, p99_ms, rss_mb, …).
    Bench(framewire::bench::BenchOptions),
    /// The bench's Kafka broker: librdkafka's mock cluster with one topic, in its own process.
    /// Prints the bootstrap servers, then serves until stdin closes.
    #[command(hide = true)]
    BenchBroker {
        #[arg(long)]
        topic: String,
        #[arg(long)]
        partitions: i32,
    },
    /// Check a config file; exit 0 when valid, 2 with every problem listed otherwise.
    Validate {
        #[arg(long, short)]
        config: Option<PathBuf>,
        #[arg(long, value_enum, default_value_t = Role::All)]
        role: Role,
    },
}

fn init_logs(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| "info,librdkafka=warn,rdkafka=warn".into());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Human => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

fn main() -> ExitCode {
    // Two threads per camera would otherwise get up to 8 × cores glibc malloc arenas, each holding
    // freed frame buffers: measured with 8 cameras, 2 arenas cut RSS by ~14 % at no CPU cost
    // (mimalloc instead raised it by ~25 %). MALLOC_ARENA_MAX in the environment still wins.
    if std::env::var_os("MALLOC_ARENA_MAX").is_none() {
        // SAFETY: called before any other thread exists; mallopt only tunes the allocator.
        unsafe { libc::mallopt(libc::M_ARENA_MAX, 2) };
    }
    let cli = Cli::parse();
    if matches!(cli.command, Command::Bench(_) | Command::BenchBroker { .. })
        && std::env::var_os("RUST_LOG").is_none()
    {
        // The report is the output; only problems are logged.
        // SAFETY: single-threaded here, before any other thread exists.
        unsafe { std::env::set_var("RUST_LOG", "warn,librdkafka=error,rdkafka=error") };
    }
    init_logs(cli.log_format);
    match cli.command {
        Command::Bench(o) => match framewire::bench::run(&o) {
            Ok(_) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("framewire bench: {e:#}");
                ExitCode::FAILURE
            }
        },
        Command::BenchBroker { topic, partitions } => {
            match framewire::bench::serve_mock_broker(&topic, partitions) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("framewire bench-broker: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::ServeInference {
            listen,
            protocol,
            workers,
            motion_threshold,
            min_area_fraction,
        } => {
            let detector = framewire::inference::motion::MotionDetector::new(
                framewire::inference::motion::MotionConfig {
                    threshold: motion_threshold,
                    min_area_fraction,
                    ..Default::default()
                },
            );
            let served = actix_rt::System::new().block_on(async move {
                let (server, addr) =
                    framewire::http::serve::server(listen, protocol, detector, workers)?;
                println!("listening on {addr}");
                tracing::info!(%addr, ?protocol, "serve-inference listening");
                server.await
            });
            match served {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("framewire serve-inference: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Validate { config, role } => match config::load(config.as_deref(), role) {
            Ok(cfg) => {
                println!(
                    "{}: valid ({} camera(s), bus {}, storage {} {})",
                    config
                        .as_ref()
                        .map(|p| p.display().to_string())
                        .unwrap_or_else(|| "<defaults>".into()),
                    cfg.cameras.len(),
                    if cfg.kafka.embedded() {
                        "embedded".to_string()
                    } else {
                        format!("kafka topic {}", cfg.kafka.topic)
                    },
                    format!("{:?}", cfg.storage.kind).to_lowercase(),
                    match cfg.storage.kind {
                        framewire::config::StorageKind::S3 =>
                            format!("s3://{}", cfg.storage.bucket),
                        framewire::config::StorageKind::File => cfg.storage.path.clone(),
                    }
                );
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprint!("{e}");
                ExitCode::from(2)
            }
        },
        Command::Run {
            config,
            role,
            duration,
        } => {
            let cfg = match config::load(config.as_deref(), role) {
                Ok(cfg) => cfg,
                Err(e) => {
                    eprint!("{e}");
                    return ExitCode::from(2);
                }
            };
            let mut opts = daemon::Options::new(cfg);
            opts.config_path = config;
            opts.role = role;
            opts.duration = duration.map(Duration::from_secs_f64);
            opts.progress = true;
            opts.signals = true;
            opts.notifier = framewire::notify::Notifier::from_env();
            match daemon::run_foreground(opts) {
                Ok(true) => ExitCode::SUCCESS,
                Ok(false) => {
                    eprintln!(
                        "framewire: stopped before every batch was durable; they will be redelivered"
                    );
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("framewire: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}
