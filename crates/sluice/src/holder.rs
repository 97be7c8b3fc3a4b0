//! Who drives a local run, and whether that process still lives: a `sluice run` killed with
//! `kill -9` leaves its table's lease behind, and the next `sluice run` on the same host can
//! see the process is gone and take the run over at once instead of waiting for the lease to
//! lapse.

use chrono::{DateTime, Utc};
use sluice_core::run::RunHolder;

/// This process, as a run's holder from `since`.
pub fn this_process(since: DateTime<Utc>) -> RunHolder {
    let pid = std::process::id();
    RunHolder {
        host: host_name(),
        pid,
        process_start: process_start(pid),
        pid_namespace: pid_namespace(),
        boot_id: boot_id(),
        since,
    }
}

/// What can be told about a holder from here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Liveness {
    /// The same process (pid and start) is running on this host.
    Alive,
    /// It ran on this host and is not running any more.
    Gone,
    /// It runs (or ran) on another host: only its lease can tell.
    Unknown,
}

/// Whether `holder` still runs, as far as this host can tell.
pub fn liveness(holder: &RunHolder) -> Liveness {
    if holder.host != host_name() || holder.pid_namespace != pid_namespace() {
        return Liveness::Unknown;
    }
    if let (Some(then), Some(now)) = (&holder.boot_id, boot_id())
        && *then != now
    {
        return Liveness::Gone;
    }
    if holder.pid == std::process::id() {
        return Liveness::Alive;
    }
    match (process_start(holder.pid), holder.process_start) {
        // The pid was reused by a process that started at another time.
        (Some(now), Some(then)) if now != then => Liveness::Gone,
        (Some(_), _) => Liveness::Alive,
        (None, _) if process_exists(holder.pid) => Liveness::Alive,
        (None, _) => Liveness::Gone,
    }
}

fn host_name() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: the buffer is valid for its length; gethostname writes at most that many bytes.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if rc != 0 {
        return "unknown-host".into();
    }
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    String::from_utf8_lossy(&buf[..end]).into_owned()
}

/// The start time of process `pid` in clock ticks since boot (Linux); `None` when there is no
/// such process or no `/proc`. The command name (field 2) may hold spaces and parentheses, so
/// fields are counted after its closing parenthesis.
fn process_start(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after_name = &stat[stat.rfind(')')? + 1..];
    // Fields 3.. follow the name; the start time is field 22.
    after_name.split_whitespace().nth(19)?.parse().ok()
}

/// This process's PID namespace: the inode `/proc/self/ns/pid` links to (`pid:[4026531836]`).
fn pid_namespace() -> Option<u64> {
    let link = std::fs::read_link("/proc/self/ns/pid").ok()?;
    let text = link.to_str()?;
    text.strip_prefix("pid:[")?.strip_suffix(']')?.parse().ok()
}

/// This boot of the host (Linux), to tell a holder from before a reboot.
fn boot_id() -> Option<String> {
    std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .ok()
        .map(|id| id.trim().to_owned())
}

/// Whether a process `pid` exists, where `/proc` is not available (macOS).
fn process_exists(pid: u32) -> bool {
    let Ok(pid) = libc::pid_t::try_from(pid) else {
        return false;
    };
    // SAFETY: signal 0 checks for existence and permission only; nothing is delivered.
    let rc = unsafe { libc::kill(pid, 0) };
    rc == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_is_alive_and_a_finished_child_is_gone() {
        let me = this_process(Utc::now());
        assert_eq!(liveness(&me), Liveness::Alive);
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id();
        let started = process_start(pid);
        let holder = RunHolder {
            pid,
            process_start: started,
            ..me.clone()
        };
        child.wait().unwrap();
        assert_eq!(liveness(&holder), Liveness::Gone);
        let elsewhere = RunHolder {
            host: format!("{}-elsewhere", me.host),
            ..me.clone()
        };
        assert_eq!(liveness(&elsewhere), Liveness::Unknown);
        // Another container with this host name: its pids are not ours to judge.
        let other_namespace = RunHolder {
            pid_namespace: Some(me.pid_namespace.map_or(1, |n| n + 1)),
            ..me.clone()
        };
        assert_eq!(liveness(&other_namespace), Liveness::Unknown);
        // A holder from an earlier boot of this host is gone, even under a live pid.
        let before_reboot = RunHolder {
            boot_id: Some("an-earlier-boot".into()),
            ..me
        };
        assert_eq!(liveness(&before_reboot), Liveness::Gone);
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn a_reused_pid_with_another_start_is_gone() {
        let me = this_process(Utc::now());
        let init_start = process_start(1).expect("pid 1 has a /proc entry on Linux");
        let reused = RunHolder {
            pid: 1,
            process_start: Some(init_start + 1),
            ..me.clone()
        };
        assert_eq!(liveness(&reused), Liveness::Gone);
        let same = RunHolder {
            pid: 1,
            process_start: Some(init_start),
            ..me
        };
        assert_eq!(liveness(&same), Liveness::Alive);
    }
}
