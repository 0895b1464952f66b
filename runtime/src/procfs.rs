//! What `/proc` and the clocks say about a process: whether it still runs
//! (by pid and start time, so a reused pid is told apart), how to wait for
//! its exit, CPU and wall-clock time. A leaf: it uses no other module of the
//! runtime, and every layer may use it.

/// The wall-clock time in nanoseconds since the Unix epoch (0 before it):
/// the unit of span and phase times.
pub fn now_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::SystemTime::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or_default()
}

/// The time on `clock` (a CPU-time clock) in nanoseconds, 0 if unreadable.
pub fn cpu_time_ns(clock: libc::clockid_t) -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec into the local.
    if unsafe { libc::clock_gettime(clock, &mut ts) } != 0 {
        return 0;
    }
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// Fields of /proc/PID/stat after the command name.
fn stat_fields(pid: i32) -> Option<Vec<String>> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces and parentheses: split at the last ')'.
    let rest = &text[text.rfind(')')? + 1..];
    Some(rest.split_whitespace().map(str::to_owned).collect())
}

/// The process's start time in clock ticks since boot (field 22), which
/// tells a process from a later one that reuses its pid.
pub fn start_time(pid: i32) -> Option<u64> {
    stat_fields(pid)?.get(19)?.parse().ok()
}

/// Whether the process is gone or a zombie.
pub fn has_exited(pid: i32) -> bool {
    match stat_fields(pid) {
        Some(fields) => matches!(
            fields.first().map(String::as_str),
            Some("Z") | Some("X") | None
        ),
        None => true,
    }
}

/// Whether the process `pid` that started at `start` still runs.
pub fn is_alive(pid: i32, start: u64) -> bool {
    pid > 0 && !has_exited(pid) && start_time(pid) == Some(start)
}

/// Waits until process `pid` exits (without reaping it) or `deadline`
/// passes; true if it exited. `exited` says whether the process meant is
/// gone (e.g. [`has_exited`], or not [`is_alive`] with its start time).
///
/// With a pidfd (Linux 5.3+) the wait is one `poll`. The pidfd is opened
/// first and `exited` asked after: if the process meant still runs then, the
/// pidfd is its own, not a later process's that reused the pid. Without
/// one (or if `poll` fails), `exited` is asked every 5 ms.
pub fn wait_for_exit(pid: i32, deadline: std::time::Instant, exited: impl Fn() -> bool) -> bool {
    use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
    use std::os::fd::{AsFd, FromRawFd, OwnedFd};
    // SAFETY: pidfd_open has no memory effects; a negative result is an error.
    let raw = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if exited() {
        return true;
    }
    if raw >= 0 {
        // SAFETY: a non-negative result is a new descriptor we own.
        let pidfd = unsafe { OwnedFd::from_raw_fd(raw as i32) };
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            let millis = left.as_millis().min(i32::MAX as u128) as i32;
            let mut fds = [PollFd::new(pidfd.as_fd(), PollFlags::POLLIN)];
            match poll(
                &mut fds,
                PollTimeout::try_from(millis).unwrap_or(PollTimeout::MAX),
            ) {
                Ok(0) => return false,
                Ok(_) => return true,
                Err(nix::errno::Errno::EINTR) => continue,
                Err(_) => break,
            }
        }
    }
    while std::time::Instant::now() < deadline {
        if exited() {
            return true;
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    exited()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_process_is_alive_with_its_start_time() {
        let pid = std::process::id() as i32;
        let start = start_time(pid).unwrap();
        assert!(is_alive(pid, start));
        assert!(!is_alive(pid, start + 1));
    }

    #[test]
    fn waiting_ends_at_exit_or_at_the_deadline() {
        use std::time::{Duration, Instant};
        let mut child = std::process::Command::new("sleep")
            .arg("5")
            .spawn()
            .unwrap();
        let pid = child.id() as i32;
        let deadline = Instant::now() + Duration::from_millis(50);
        assert!(!wait_for_exit(pid, deadline, || has_exited(pid)));
        child.kill().unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        assert!(wait_for_exit(pid, deadline, || has_exited(pid)));
        child.wait().unwrap();
        // Gone and reaped: no pidfd, and the answer is at once.
        assert!(wait_for_exit(pid, deadline, || has_exited(pid)));
    }

    #[test]
    fn reaped_child_has_exited() {
        let mut child = std::process::Command::new("/bin/true").spawn().unwrap();
        let pid = child.id() as i32;
        child.wait().unwrap();
        assert!(has_exited(pid));
    }
}
