//! How the host's CPUs idle, read from Linux's cpuidle sysfs: the idle driver and governor, the
//! guest's halt-polling limit (the `haltpoll` governor of KVM guests), and how often the CPUs
//! entered an idle state. On a virtual machine a vCPU that halts exits to the hypervisor; on this
//! project's test host W1's CPU per frame fell by 11–14 % when idle vCPUs polled before halting
//! (docs/performance.md, 2026-12-07; why a halt costs the work after it was not measured), so W1
//! reports how the host was set up and how often its vCPUs halted during the window.

use std::path::Path;

/// The idle setup: `None` where the host does not expose it (no cpuidle, not a KVM guest).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Setup {
    pub driver: Option<String>,
    pub governor: Option<String>,
    /// `haltpoll`'s `guest_halt_poll_ns`: how long an idle vCPU polls before it halts. Only
    /// when the haltpoll governor is the one in use: a kernel with it built in has the parameter
    /// whatever its driver and governor are, and then nothing polls.
    pub guest_halt_poll_ns: Option<u64>,
}

/// Idle-state entries summed over the CPUs since boot.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Entries {
    /// Into the polling state (`POLL`): the CPU stays awake.
    pub polls: u64,
    /// Into any other state: a halt on a virtual machine, a C-state on metal.
    pub halts: u64,
}

/// [`Entries`] per second over a window.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rates {
    pub polls_per_s: f64,
    pub halts_per_s: f64,
}

impl Entries {
    /// Entries per second between `earlier` and `self`, `secs` apart.
    pub fn rates_since(&self, earlier: &Entries, secs: f64) -> Rates {
        let per_s = |n: u64| if secs > 0.0 { n as f64 / secs } else { 0.0 };
        Rates {
            polls_per_s: per_s(self.polls.saturating_sub(earlier.polls)),
            halts_per_s: per_s(self.halts.saturating_sub(earlier.halts)),
        }
    }
}

fn read_trimmed(path: &Path) -> Option<String> {
    std::fs::read_to_string(path)
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
}

/// The setup under `sys` (`/sys` on a live host).
pub fn setup(sys: &Path) -> Setup {
    let cpuidle = sys.join("devices/system/cpu/cpuidle");
    let governor = read_trimmed(&cpuidle.join("current_governor"))
        .or_else(|| read_trimmed(&cpuidle.join("current_governor_ro")));
    let guest_halt_poll_ns = if governor.as_deref() == Some("haltpoll") {
        read_trimmed(&sys.join("module/haltpoll/parameters/guest_halt_poll_ns"))
            .and_then(|s| s.parse().ok())
    } else {
        None
    };
    Setup {
        driver: read_trimmed(&cpuidle.join("current_driver")),
        governor,
        guest_halt_poll_ns,
    }
}

/// The polling limit as the table shows it: `off`, or µs.
pub fn describe_poll_limit(ns: Option<u64>) -> String {
    match ns {
        None => "n/a (not the haltpoll governor)".into(),
        Some(0) => "off".into(),
        Some(ns) => format!("up to {} µs", ns as f64 / 1000.0),
    }
}

/// The CPUs' idle-state entries under `sys`; `None` when no CPU exposes cpuidle states.
pub fn entries(sys: &Path) -> Option<Entries> {
    let cpus = std::fs::read_dir(sys.join("devices/system/cpu")).ok()?;
    let mut total = Entries::default();
    let mut seen = false;
    for cpu in cpus.flatten() {
        let name = cpu.file_name();
        let name = name.to_string_lossy();
        let is_cpu = name
            .strip_prefix("cpu")
            .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()));
        if !is_cpu {
            continue;
        }
        let Ok(states) = std::fs::read_dir(cpu.path().join("cpuidle")) else {
            continue;
        };
        for state in states.flatten() {
            let dir = state.path();
            let Some(usage) = read_trimmed(&dir.join("usage")).and_then(|s| s.parse::<u64>().ok())
            else {
                continue;
            };
            seen = true;
            if read_trimmed(&dir.join("name")).as_deref() == Some("POLL") {
                total.polls += usage;
            } else {
                total.halts += usage;
            }
        }
    }
    seen.then_some(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(root: &Path, rel: &str, text: &str) {
        let path = root.join(rel);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }

    /// A sysfs tree laid out as a KVM guest's with the haltpoll driver (as on the test host).
    fn guest(root: &Path) {
        write(
            root,
            "devices/system/cpu/cpuidle/current_driver",
            "haltpoll\n",
        );
        write(
            root,
            "devices/system/cpu/cpuidle/current_governor_ro",
            "haltpoll\n",
        );
        write(
            root,
            "module/haltpoll/parameters/guest_halt_poll_ns",
            "200000\n",
        );
        for (cpu, poll, halt) in [("cpu0", 7, 1000), ("cpu1", 5, 2000)] {
            let d = format!("devices/system/cpu/{cpu}/cpuidle");
            write(root, &format!("{d}/state0/name"), "POLL\n");
            write(root, &format!("{d}/state0/usage"), &format!("{poll}\n"));
            write(root, &format!("{d}/state1/name"), "haltpoll idle\n");
            write(root, &format!("{d}/state1/usage"), &format!("{halt}\n"));
        }
        // Not a CPU: its states must not be counted.
        write(
            root,
            "devices/system/cpu/cpufreq/cpuidle/state0/usage",
            "99\n",
        );
    }

    #[test]
    fn reads_a_guest_setup_and_sums_entries_by_kind() {
        let dir = tempfile::tempdir().unwrap();
        guest(dir.path());
        assert_eq!(
            setup(dir.path()),
            Setup {
                driver: Some("haltpoll".into()),
                governor: Some("haltpoll".into()),
                guest_halt_poll_ns: Some(200_000),
            }
        );
        let e = entries(dir.path()).unwrap();
        assert_eq!(
            e,
            Entries {
                polls: 12,
                halts: 3000
            }
        );
        let later = Entries {
            polls: 32,
            halts: 3500,
        };
        assert_eq!(
            later.rates_since(&e, 2.0),
            Rates {
                polls_per_s: 10.0,
                halts_per_s: 250.0
            }
        );
        // A counter that went backwards (a CPU taken offline) gives 0, not a wrap.
        assert_eq!(
            e.rates_since(&later, 2.0),
            Rates {
                polls_per_s: 0.0,
                halts_per_s: 0.0
            }
        );
    }

    #[test]
    fn the_polling_limit_counts_only_under_the_haltpoll_governor() {
        let dir = tempfile::tempdir().unwrap();
        guest(dir.path());
        // A writable governor file wins over the read-only one; the parameter stays (the
        // governor is built in) but nothing polls.
        write(
            dir.path(),
            "devices/system/cpu/cpuidle/current_governor",
            "menu\n",
        );
        let s = setup(dir.path());
        assert_eq!(s.governor.as_deref(), Some("menu"));
        assert_eq!(s.guest_halt_poll_ns, None);
        assert_eq!(
            describe_poll_limit(s.guest_halt_poll_ns),
            "n/a (not the haltpoll governor)"
        );
        assert_eq!(describe_poll_limit(Some(0)), "off");
        assert_eq!(describe_poll_limit(Some(200_000)), "up to 200 µs");
        assert_eq!(describe_poll_limit(Some(2_500)), "up to 2.5 µs");
    }

    #[test]
    fn a_host_without_cpuidle_reports_nothing() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "devices/system/cpu/cpu0/online", "1\n");
        assert_eq!(setup(dir.path()), Setup::default());
        assert_eq!(entries(dir.path()), None);
    }
}
