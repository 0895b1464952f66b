//! `lucid run`: create and start a container; in the foreground, relay
//! signals to it, wait for it, delete it and return its exit code.

use std::path::Path;

use nix::sys::signal::{SigSet, SigmaskHow, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;

use super::create::{create, CreateOptions};
use crate::state::StateDir;
use crate::telemetry::step;
use crate::{Error, Result};
use tracing::info_span;

/// Settings of `run`.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// What `create` takes.
    pub create: CreateOptions,
    /// Return once the container started instead of waiting for it.
    pub detach: bool,
    /// Keep the container (stopped) after it exits instead of deleting it.
    pub keep: bool,
}

/// Runs the container; returns the exit code `lucid run` should exit with:
/// the container's, or 128+N if a signal N killed it.
pub fn run(root: &Path, options: &RunOptions) -> Result<i32> {
    if options.detach {
        step(info_span!("create"), || {
            create(
                root,
                &options.create,
                SigSet::thread_get_mask().unwrap_or_else(|_| SigSet::empty()),
            )
        })?;
        start_or_remove(root, &options.create.id)?;
        return Ok(0);
    }
    // Become the reaper of the init process even when an intermediate process
    // forks it, and of orphans of a container without its own pid namespace.
    // SAFETY: prctl with integer arguments has no memory effects.
    unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
    // Block the signals before the container exists, so none is lost: a
    // SIGCHLD that arrived before we wait would otherwise hang `run`.
    let mut waited = SigSet::empty();
    waited.add(Signal::SIGCHLD);
    for signal in crate::signals::forwarded() {
        waited.add(signal);
    }
    let mut previous = SigSet::empty();
    nix::sys::signal::pthread_sigmask(SigmaskHow::SIG_BLOCK, Some(&waited), Some(&mut previous))
        .map_err(|e| Error::os("blocking signals", e))?;
    let created = step(info_span!("create"), || {
        create(root, &options.create, previous)
    })?;
    start_or_remove(root, &options.create.id)?;
    // Write out create and start now: the container may run for long.
    crate::telemetry::flush();
    let code = step(info_span!("wait"), || {
        let code = wait_and_forward(Pid::from_raw(created.pid), &waited)?;
        crate::telemetry::annotate("process.exit.code", i64::from(code));
        Ok::<_, Error>(code)
    })?;
    if !options.keep {
        step(info_span!("delete"), || -> Result<()> {
            let dir = StateDir::open(root, &options.create.id)?;
            let state = dir.read()?;
            super::delete::destroy(dir, &state)
        })?;
    }
    Ok(code)
}

fn start_or_remove(root: &Path, id: &str) -> Result<()> {
    if let Err(e) = step(info_span!("start"), || super::start::start(root, id)) {
        if let Err(cleanup) = super::delete::delete(root, id, true) {
            log::warn!("removing {id} after a failed start: {cleanup}");
        }
        return Err(e);
    }
    Ok(())
}

/// Relays every signal but SIGCHLD to `init`; reaps children until `init`
/// exits and returns its exit code.
fn wait_and_forward(init: Pid, waited: &SigSet) -> Result<i32> {
    loop {
        let signal = waited
            .wait()
            .map_err(|e| Error::os("waiting for signals", e))?;
        if signal != Signal::SIGCHLD {
            // The init process may have just exited; ESRCH is not an error.
            let _ = nix::sys::signal::kill(init, signal);
            continue;
        }
        loop {
            match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::Exited(pid, code)) if pid == init => return Ok(code),
                Ok(WaitStatus::Signaled(pid, sig, _)) if pid == init => return Ok(128 + sig as i32),
                Ok(WaitStatus::StillAlive) | Err(nix::errno::Errno::ECHILD) => break,
                Ok(_) => continue,
                Err(nix::errno::Errno::EINTR) => continue,
                Err(e) => return Err(Error::os("waiting for the container", e)),
            }
        }
    }
}
