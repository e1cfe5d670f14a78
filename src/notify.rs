//! systemd readiness protocol (`Type=notify`, sd_notify(3)): READY once the pipeline is up,
//! RELOADING/READY around a reload, STOPPING on shutdown, WATCHDOG only while every actor
//! heartbeats. Datagrams go to `NOTIFY_SOCKET` (a path, or `@name` for the abstract namespace); a
//! no-op when there is none (not under systemd). The socket is explicit so tests can point one
//! daemon at their own socket without touching the process environment.

use std::os::unix::net::UnixDatagram;
use std::path::PathBuf;
use std::time::Duration;

#[derive(Debug, Clone, Default)]
pub struct Notifier {
    socket: Option<PathBuf>,
    watchdog: Option<Duration>,
}

impl Notifier {
    /// From `NOTIFY_SOCKET` and `WATCHDOG_USEC` (honouring `WATCHDOG_PID` when set).
    pub fn from_env() -> Self {
        let socket = std::env::var_os("NOTIFY_SOCKET").map(PathBuf::from);
        let pid_ok = std::env::var("WATCHDOG_PID")
            .ok()
            .and_then(|p| p.parse::<u32>().ok())
            .is_none_or(|p| p == std::process::id());
        let watchdog = std::env::var("WATCHDOG_USEC")
            .ok()
            .and_then(|u| u.parse::<u64>().ok())
            .filter(|u| *u > 0 && pid_ok)
            .map(Duration::from_micros);
        Self { socket, watchdog }
    }

    pub fn new(socket: Option<PathBuf>, watchdog: Option<Duration>) -> Self {
        Self { socket, watchdog }
    }

    /// The watchdog interval systemd asked for, if any (and only with a socket to ping).
    pub fn watchdog_interval(&self) -> Option<Duration> {
        self.socket.as_ref().and(self.watchdog)
    }

    fn send(&self, msg: &str) {
        let Some(path) = &self.socket else { return };
        let sent = UnixDatagram::unbound().and_then(|s| {
            let raw = path.as_os_str().as_encoded_bytes();
            if let Some(name) = raw.strip_prefix(b"@") {
                use std::os::linux::net::SocketAddrExt;
                let addr = std::os::unix::net::SocketAddr::from_abstract_name(name)?;
                s.send_to_addr(msg.as_bytes(), &addr)
            } else {
                s.send_to(msg.as_bytes(), path)
            }
        });
        if let Err(e) = sent {
            tracing::warn!("sd_notify to {}: {e}", path.display());
        }
    }

    pub fn ready(&self, status: &str) {
        self.send(&format!("READY=1\nSTATUS={status}\n"));
    }

    pub fn reloading(&self) {
        // MONOTONIC_USEC lets systemd ≥ 253 (Type=notify-reload) match the reload to this message.
        let mut ts = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: clock_gettime writes into the timespec we own.
        unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
        let usec = ts.tv_sec as u64 * 1_000_000 + ts.tv_nsec as u64 / 1_000;
        self.send(&format!("RELOADING=1\nMONOTONIC_USEC={usec}\n"));
    }

    pub fn stopping(&self) {
        self.send("STOPPING=1\n");
    }

    pub fn watchdog(&self) {
        self.send("WATCHDOG=1\n");
    }
}
