//! The running daemon: an actix system on its own thread holding the root supervisor, the HTTP
//! server, the systemd notifier, the watchdog and the progress line. `start` returns a `Handle`
//! (used by `main` and by in-process tests) to reload or stop it; with `signals`, SIGHUP reloads and
//! SIGTERM/SIGINT drain and stop.

use crate::actors::Shared;
use crate::actors::supervisor::{Reload, Root, Shutdown};
use crate::clock::SystemClock;
use crate::config::{self, Config, Role};
use crate::http::{self, HttpState};
use crate::media::source::{DefaultOpener, SourceOpener};
use crate::metrics::Metrics;
use crate::notify::Notifier;
use crate::status::StatusRegistry;
use actix::prelude::*;
use std::io::IsTerminal;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;

pub struct Options {
    pub config: Config,
    /// Re-read on reload; `None` means built-in defaults (plus environment overrides).
    pub config_path: Option<PathBuf>,
    pub role: Role,
    /// Stop (draining) after this long.
    pub duration: Option<Duration>,
    pub opener: Arc<dyn SourceOpener>,
    /// Show a live progress line on stderr (only when it is a terminal).
    pub progress: bool,
    /// Handle SIGHUP/SIGTERM/SIGINT.
    pub signals: bool,
    /// Where systemd notifications go (`Notifier::from_env()` under systemd).
    pub notifier: Notifier,
}

impl Options {
    pub fn new(config: Config) -> Self {
        Self {
            config,
            config_path: None,
            role: Role::All,
            duration: None,
            opener: Arc::new(DefaultOpener),
            progress: false,
            signals: false,
            notifier: Notifier::default(),
        }
    }
}

enum Control {
    Reload,
    Shutdown,
}

/// A running daemon.
pub struct Handle {
    pub http: SocketAddr,
    pub metrics: Arc<Metrics>,
    pub status: Arc<StatusRegistry>,
    control: mpsc::UnboundedSender<Control>,
    thread: std::thread::JoinHandle<bool>,
}

impl Handle {
    /// Re-reads the config file (as SIGHUP does).
    pub fn reload(&self) {
        let _ = self.control.send(Control::Reload);
    }

    /// Stops the cameras, drains, and waits; `true` when everything was durable in time.
    pub fn shutdown(self) -> bool {
        let _ = self.control.send(Control::Shutdown);
        self.wait()
    }

    /// Waits for the daemon to stop on its own (signal or duration).
    pub fn wait(self) -> bool {
        self.thread.join().unwrap_or(false)
    }
}

/// Starts the daemon on its own thread and returns once the HTTP server listens.
pub fn start(opts: Options) -> anyhow::Result<Handle> {
    let metrics = Arc::new(Metrics::new());
    let status = Arc::new(StatusRegistry::new());
    let (control, rx) = mpsc::unbounded_channel();
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let (m, s) = (metrics.clone(), status.clone());
    let thread = std::thread::Builder::new()
        .name("framewire".into())
        .spawn(move || {
            let system = actix_rt::System::new();
            let drained = system.block_on(run(opts, m, s, rx, ready_tx));
            System::current().stop();
            drained
        })?;
    match ready_rx.recv() {
        Ok(Ok(http)) => Ok(Handle {
            http,
            metrics,
            status,
            control,
            thread,
        }),
        Ok(Err(e)) => {
            let _ = thread.join();
            Err(anyhow::anyhow!(e))
        }
        Err(_) => {
            let _ = thread.join();
            Err(anyhow::anyhow!("the daemon thread ended during start"))
        }
    }
}

async fn run(
    opts: Options,
    metrics: Arc<Metrics>,
    status: Arc<StatusRegistry>,
    mut control: mpsc::UnboundedReceiver<Control>,
    ready: std::sync::mpsc::Sender<Result<SocketAddr, String>>,
) -> bool {
    let notifier = opts.notifier.clone();
    let role = opts.role;
    let (http_handle, http_addr) = match http::start(
        opts.config.http.listen,
        HttpState {
            metrics: metrics.clone(),
            status: status.clone(),
            role,
        },
    ) {
        Ok(x) => x,
        Err(e) => {
            let _ = ready.send(Err(e.to_string()));
            return false;
        }
    };
    tracing::info!(%http_addr, ?role, cameras = opts.config.cameras.len(), "framewire started");
    let shared = Shared {
        metrics: metrics.clone(),
        status: status.clone(),
        clock: Arc::new(SystemClock),
        opener: opts.opener.clone(),
        produced: Default::default(),
    };
    let root = Root::new(opts.config.clone(), role, shared).start();
    let _ = ready.send(Ok(http_addr));

    // READY=1 once the pipeline is up; WATCHDOG=1 only while every actor heartbeats.
    let (st, n) = (status.clone(), notifier.clone());
    actix_rt::spawn(async move {
        let notifier = n;
        loop {
            if st
                .not_ready_reasons(role.ingest(), role.process())
                .is_empty()
            {
                notifier.ready("pipeline running");
                tracing::info!("pipeline ready");
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    });
    if let Some(interval) = notifier.watchdog_interval() {
        let (st, notifier) = (status.clone(), notifier.clone());
        actix_rt::spawn(async move {
            let mut tick = tokio::time::interval(interval / 3);
            loop {
                tick.tick().await;
                let silent = st.silent_actors(interval / 2);
                if silent.is_empty() {
                    notifier.watchdog();
                } else {
                    tracing::warn!(
                        ?silent,
                        "actors not heartbeating; withholding the systemd watchdog ping"
                    );
                }
            }
        });
    }
    if opts.progress && std::io::stderr().is_terminal() {
        actix_rt::spawn(progress(metrics.clone()));
    }

    let mut hup = signal(tokio::signal::unix::SignalKind::hangup(), opts.signals);
    let mut term = signal(tokio::signal::unix::SignalKind::terminate(), opts.signals);
    let mut int = signal(tokio::signal::unix::SignalKind::interrupt(), opts.signals);
    let until = opts.duration.map(|d| tokio::time::Instant::now() + d);
    loop {
        let stop_at = async {
            match until {
                Some(t) => tokio::time::sleep_until(t).await,
                None => futures::future::pending().await,
            }
        };
        tokio::select! {
            c = control.recv() => match c {
                Some(Control::Reload) => reload(&opts, &root, &metrics, &notifier).await,
                Some(Control::Shutdown) | None => break,
            },
            _ = recv(&mut hup) => reload(&opts, &root, &metrics, &notifier).await,
            _ = recv(&mut term) => { tracing::info!("SIGTERM: draining"); break }
            _ = recv(&mut int) => { tracing::info!("SIGINT: draining"); break }
            _ = stop_at => { tracing::info!("duration reached: draining"); break }
        }
    }
    notifier.stopping();
    let drained = root.send(Shutdown).await.unwrap_or(false);
    http_handle.stop(true).await;
    tracing::info!(drained, "framewire stopped");
    drained
}

fn signal(
    kind: tokio::signal::unix::SignalKind,
    enabled: bool,
) -> Option<tokio::signal::unix::Signal> {
    if enabled {
        tokio::signal::unix::signal(kind).ok()
    } else {
        None
    }
}

async fn recv(s: &mut Option<tokio::signal::unix::Signal>) {
    match s {
        Some(s) => {
            s.recv().await;
        }
        None => futures::future::pending().await,
    }
}

async fn reload(opts: &Options, root: &Addr<Root>, metrics: &Metrics, notifier: &Notifier) {
    notifier.reloading();
    let result = match config::load(opts.config_path.as_deref(), opts.role) {
        Err(e) => {
            tracing::error!("reload rejected, keeping the running config:\n{e}");
            "invalid"
        }
        Ok(cfg) => match root.send(Reload(cfg)).await {
            Ok(Ok(summary)) if summary == "unchanged" => {
                tracing::info!("reload: config unchanged");
                "unchanged"
            }
            Ok(Ok(summary)) => {
                tracing::info!("reload applied: {summary}");
                "applied"
            }
            Ok(Err(e)) => {
                tracing::error!("reload rejected, keeping the running config: {e}");
                "invalid"
            }
            Err(e) => {
                tracing::error!("reload failed: {e}");
                "invalid"
            }
        },
    };
    metrics.config_reloads.with_label_values(&[result]).inc();
    notifier.ready("pipeline running");
}

async fn progress(m: Arc<Metrics>) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tick.tick().await;
        let (p50, _) = crate::metrics::quantiles(&m.capture_to_stored);
        eprint!(
            "\r\x1b[2Kframes {} | batches {} | stored {} | drops {} | capture→stored p50 {:.1}s ",
            crate::metrics::total(&m.frames_sampled),
            crate::metrics::total(&m.batches_produced),
            crate::metrics::total(&m.batches_stored),
            crate::metrics::total(&m.frames_dropped),
            p50
        );
    }
}

/// Runs the daemon in the foreground until a signal or the duration; returns whether it drained.
pub fn run_foreground(opts: Options) -> anyhow::Result<bool> {
    let handle = start(opts)?;
    let drained = handle.wait();
    if std::io::stderr().is_terminal() {
        eprintln!();
    }
    Ok(drained)
}
