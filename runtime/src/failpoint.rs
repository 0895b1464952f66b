//! Fail points, **for tests only**: `LUCID_FAILPOINT=<name>` makes the
//! runtime kill itself with SIGKILL when it reaches that point, as a
//! `kill -9` from outside would, so a test can show that `delete --force`
//! cleans up whatever each phase of `create`, `start` and `delete` leaves.
//!
//! They are always compiled in: a point costs one comparison with a value
//! read once per process, and the tests then exercise the very binary that
//! ships (a cargo feature would build a second `lucid`, and `cargo build`
//! and `cargo test` of the workspace would keep rebuilding it). An unknown
//! name is an error, never silently ignored. The list is [`NAMES`]; it is
//! documented in docs/reliability.md.

use std::sync::OnceLock;

/// The environment variable naming the point to die at.
pub const ENV: &str = "LUCID_FAILPOINT";

/// Every fail point, in the order a container's life reaches them.
pub const NAMES: &[&str] = &[
    // create
    "create.state-dir",
    "create.state-written",
    "create.cgroup",
    "create.ebpf",
    "create.init-cloned",
    "create.mounts",
    "create.ready",
    // start
    "start.state-read",
    "start.released",
    // delete
    "delete.state-read",
    "delete.killed",
    "delete.cgroup-removed",
    "delete.ebpf-detached",
];

fn armed() -> Option<&'static str> {
    static ARMED: OnceLock<Option<&'static str>> = OnceLock::new();
    *ARMED.get_or_init(|| {
        let value = std::env::var(ENV).ok()?;
        NAMES.iter().copied().find(|n| *n == value)
    })
}

/// Checks `LUCID_FAILPOINT`: unset, or one of [`NAMES`].
pub fn check_env() -> Result<(), String> {
    match std::env::var(ENV) {
        Err(_) => Ok(()),
        Ok(v) if NAMES.contains(&v.as_str()) => Ok(()),
        Ok(v) => Err(format!(
            "{ENV}={v:?} is not a fail point (test-only; one of: {})",
            NAMES.join(", ")
        )),
    }
}

/// Kills this process with SIGKILL if `name` is the armed fail point.
pub fn hit(name: &'static str) {
    debug_assert!(NAMES.contains(&name), "unlisted fail point {name}");
    if armed() == Some(name) {
        log::debug!("fail point {name}: killing the runtime");
        // SAFETY: kill(2) of our own pid has no memory effects.
        unsafe { libc::kill(libc::getpid(), libc::SIGKILL) };
    }
}

/// For the init process, which is a clone of the runtime and may not see
/// it (a new pid namespace): if `name` is armed, waits here until the
/// runtime, which watches for this point with [`kill_when`], is killed, and
/// the init process with it (`PR_SET_PDEATHSIG`). Called before the seccomp
/// filter, where the init process may still allocate.
pub fn hold(name: &'static str) {
    debug_assert!(NAMES.contains(&name), "unlisted fail point {name}");
    if armed() == Some(name) {
        loop {
            // SAFETY: pause has no memory effects.
            unsafe { libc::pause() };
        }
    }
}

/// In the runtime: if `name` is armed, waits (up to 10 s) until `reached`
/// says the init process got to its [`hold`], then kills the runtime.
pub fn kill_when(name: &'static str, reached: impl Fn() -> bool) {
    debug_assert!(NAMES.contains(&name), "unlisted fail point {name}");
    if armed() != Some(name) {
        return;
    }
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !reached() && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
    hit(name);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique() {
        let mut names = NAMES.to_vec();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), NAMES.len());
    }
}
