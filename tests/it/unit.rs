//! The shipped systemd unit, run the way systemd runs it: its own command lines, a notify socket.

use crate::common::*;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

const UNIT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/systemd/framewire.service");
const CONFIG: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/etc/framewire.toml");

/// The unit's `[Service]` assignments, in order (comments skipped, `\` continuations joined).
fn service_section(text: &str) -> Vec<(String, String)> {
    let (mut out, mut in_service, mut pending) = (Vec::new(), false, String::new());
    for raw in text.lines() {
        let line = raw.trim();
        if pending.is_empty() && (line.is_empty() || line.starts_with('#') || line.starts_with(';'))
        {
            continue;
        }
        if let Some(head) = line.strip_suffix('\\') {
            pending.push_str(head);
            pending.push(' ');
            continue;
        }
        let line = std::mem::take(&mut pending) + line;
        if line.starts_with('[') {
            in_service = line == "[Service]";
        } else if in_service {
            let (k, v) = line
                .split_once('=')
                .unwrap_or_else(|| panic!("{UNIT}: not Key=Value: {line}"));
            out.push((k.trim().to_string(), v.trim().to_string()));
        }
    }
    out
}

fn values<'a>(service: &'a [(String, String)], key: &str) -> Vec<&'a str> {
    service
        .iter()
        .filter(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
        .collect()
}

fn one<'a>(service: &'a [(String, String)], key: &str) -> &'a str {
    let v = values(service, key);
    assert_eq!(v.len(), 1, "{UNIT}: expected one {key}=, found {v:?}");
    v[0]
}

fn seconds(value: &str) -> Duration {
    humantime::parse_duration(value).unwrap_or_else(|e| panic!("{UNIT}: time span {value:?}: {e}"))
}

/// How the unit's paths map onto this build.
struct Host {
    config: PathBuf,
    workdir: PathBuf,
    env: Vec<(String, String)>,
}

/// One `Exec*=` command line as argv, with the unit's paths mapped to this build and `$MAINPID`
/// substituted. Returns (argv, failure ignored by a `-` prefix).
fn argv(line: &str, host: &Host, mainpid: Option<u32>) -> (Vec<String>, bool) {
    let prefix_len = line
        .find(|c: char| !"-@:+!".contains(c))
        .unwrap_or(line.len());
    let prefix = &line[..prefix_len];
    assert!(
        !prefix.contains('@') && !prefix.contains(':'),
        "{UNIT}: prefix {prefix:?} not modelled by this test: {line}"
    );
    assert!(
        !line.contains(['"', '\'', '%']),
        "{UNIT}: quoting/specifiers not modelled by this test: {line}"
    );
    let words = line[prefix_len..]
        .split_whitespace()
        .map(|w| match w {
            "/usr/bin/framewire" => bin().to_string(),
            "/etc/framewire/framewire.toml" => host.config.display().to_string(),
            "$MAINPID" | "${MAINPID}" => mainpid.expect("$MAINPID outside ExecReload").to_string(),
            w if w.contains('$') => panic!("{UNIT}: variable not modelled by this test: {w}"),
            w if w.starts_with('/') => {
                assert!(
                    Path::new(w).exists(),
                    "{UNIT}: {w} does not exist on this machine"
                );
                w.to_string()
            }
            w => w.to_string(),
        })
        .collect();
    (words, prefix.contains('-'))
}

fn command(argv: &[String], host: &Host) -> Command {
    let mut c = Command::new(&argv[0]);
    c.args(&argv[1..])
        .current_dir(&host.workdir)
        .envs(host.env.iter().map(|(k, v)| (k, v)));
    c
}

/// Runs `Exec*=` lines in order as systemd does: the first failing one (without `-`) stops the
/// sequence. Returns the index and exit status of the failing line, if any.
fn run_lines(
    lines: &[&str],
    host: &Host,
    mainpid: Option<u32>,
) -> Option<(usize, std::process::Output)> {
    for (i, line) in lines.iter().enumerate() {
        let (argv, ignore) = argv(line, host, mainpid);
        let out = command(&argv, host)
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("{argv:?}: {e}"));
        if !out.status.success() && !ignore {
            return Some((i, out));
        }
    }
    None
}

fn describe(out: &std::process::Output) -> String {
    format!(
        "{} stdout={:?} stderr={:?}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Ensures the unit's own command lines work with the shipped config: ExecStartPre validates it,
/// ExecStart sends READY=1, ExecReload gives RELOADING=1 then READY=1 (and, on an invalid file,
/// fails before signalling the daemon), and SIGTERM gives STOPPING=1 and exit 0 within TimeoutStopSec.
#[test]
fn unit_command_lines_drive_the_daemon() {
    let service = service_section(&std::fs::read_to_string(UNIT).unwrap());
    assert_eq!(one(&service, "Type"), "notify");
    assert!(
        values(&service, "KillSignal")
            .iter()
            .all(|s| *s == "SIGTERM"),
        "the test sends SIGTERM, as the unit's KillSignal"
    );
    let (start_pre, start, reload) = (
        values(&service, "ExecStartPre"),
        one(&service, "ExecStart"),
        values(&service, "ExecReload"),
    );
    assert!(
        !start_pre.is_empty() && !reload.is_empty(),
        "{UNIT}: ExecStartPre and ExecReload are required"
    );
    let timeout_start = seconds(one(&service, "TimeoutStartSec"));
    let timeout_stop = seconds(one(&service, "TimeoutStopSec"));
    let watchdog = seconds(one(&service, "WatchdogSec"));

    // /etc/framewire/framewire.toml ← a copy of the shipped file; WorkingDirectory and the
    // storage path ← the temp dir; HTTP on an ephemeral port. Environment= lines apply.
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("framewire.toml");
    std::fs::copy(CONFIG, &config).unwrap();
    let mut env: Vec<(String, String)> = values(&service, "Environment")
        .iter()
        .flat_map(|v| v.split_whitespace())
        .map(|kv| {
            kv.split_once('=')
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .unwrap_or_else(|| panic!("Environment={kv}"))
        })
        .collect();
    env.push(("FRAMEWIRE__HTTP__LISTEN".into(), "127.0.0.1:0".into()));
    env.push((
        "FRAMEWIRE__STORAGE__PATH".into(),
        dir.path().join("out").display().to_string(),
    ));
    let host = Host {
        config: config.clone(),
        workdir: dir.path().to_path_buf(),
        env,
    };

    if let Some((i, out)) = run_lines(&start_pre, &host, None) {
        panic!("ExecStartPre={} failed: {}", start_pre[i], describe(&out));
    }

    let sock_path = dir.path().join("notify.sock");
    let sock = UnixDatagram::bind(&sock_path).unwrap();
    let (start_argv, _) = argv(start, &host, None);
    let mut child: Child = command(&start_argv, &host)
        .env("NOTIFY_SOCKET", &sock_path)
        .env("WATCHDOG_USEC", watchdog.as_micros().to_string())
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let pid = child.id();
    wait_for(&sock, "READY=1", timeout_start);

    // systemctl reload: validate, then SIGHUP.
    if let Some((i, out)) = run_lines(&reload, &host, Some(pid)) {
        panic!("ExecReload={} failed: {}", reload[i], describe(&out));
    }
    let seen = wait_for(&sock, "READY=1", Duration::from_secs(10));
    let reloading = seen
        .iter()
        .position(|m| m.lines().any(|l| l == "RELOADING=1"))
        .unwrap_or_else(|| panic!("no RELOADING=1 before READY=1: {seen:?}"));
    assert!(seen[reloading].contains("MONOTONIC_USEC="), "{seen:?}");
    let ready = seen
        .iter()
        .rposition(|m| m.lines().any(|l| l == "READY=1"))
        .unwrap();
    assert!(reloading < ready, "{seen:?}");

    // systemctl reload with an invalid file: the validate line fails (exit 2) and the daemon is
    // never signalled.
    std::fs::write(&config, "[batch]\nframes = \"many\"\n").unwrap();
    let (i, out) =
        run_lines(&reload, &host, Some(pid)).expect("ExecReload must fail on an invalid file");
    assert!(
        reload[i].contains("validate"),
        "failed at {:?}, not at validation: {}",
        reload[i],
        describe(&out)
    );
    assert_eq!(out.status.code(), Some(2), "{}", describe(&out));
    let after = collect(&sock, Duration::from_millis(1500));
    assert!(
        !after.iter().any(|m| m.contains("RELOADING=1")),
        "daemon signalled despite the invalid file: {after:?}"
    );
    assert!(
        child.try_wait().unwrap().is_none(),
        "daemon exited after a rejected reload"
    );

    // systemctl stop: SIGTERM (KillSignal), drain, exit 0 before TimeoutStopSec.
    signal(&child, libc::SIGTERM);
    wait_for(&sock, "STOPPING=1", Duration::from_secs(10));
    let status = wait_exit(&mut child, timeout_stop);
    assert!(status.success(), "exit status {status}");
}
