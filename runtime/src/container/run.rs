//! `lucid run`: create and start a container; in the foreground, relay
//! signals (and its terminal) to it, wait for it, delete it and return its
//! exit code.

use std::os::fd::AsFd;
use std::path::Path;

use nix::sys::signal::SigSet;
use nix::unistd::Pid;
use tracing::info_span;

use super::create::{create, create_attached, Attach, CreateOptions};
use crate::foreground::{self, Relay, Signals};
use crate::state::StateDir;
use crate::telemetry::step;
use crate::{Error, Result};

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
    let id = &options.create.id;
    if options.detach {
        step(info_span!("create"), || {
            create(
                root,
                &options.create,
                SigSet::thread_get_mask().unwrap_or_else(|_| SigSet::empty()),
            )
        })?;
        start_or_remove(root, id)?;
        return Ok(0);
    }
    // Reap orphans of a container without its own pid namespace too.
    foreground::become_subreaper();
    let signals = Signals::block()?;
    let created = step(info_span!("create"), || {
        create_attached(
            root,
            &options.create,
            signals.previous(),
            Attach::Foreground(crate::terminal::caller_size()),
        )
    })?;
    // A terminal container's init sent its pty master during create.
    let relay = match &created.console {
        Some(socket) => match crate::terminal::recv_fd(socket.as_fd())
            .map_err(|e| Error::os("receiving the container's pty", e))
            .and_then(|(_, master)| Relay::new(master))
        {
            Ok(relay) => Some(relay),
            Err(e) => {
                remove(root, id);
                return Err(e);
            }
        },
        None => None,
    };
    drop(created.console);
    start_or_remove(root, id)?;
    // Write out create and start now: the container may run for long.
    crate::telemetry::flush();
    let code = step(info_span!("wait"), || {
        let code = foreground::wait(Pid::from_raw(created.pid), &signals, relay)?;
        crate::telemetry::annotate("process.exit.code", i64::from(code));
        Ok::<_, Error>(code)
    })?;
    if !options.keep {
        step(info_span!("delete"), || -> Result<()> {
            let dir = StateDir::open(root, id)?;
            let state = dir.read()?;
            super::delete::destroy(dir, &state)
        })?;
    }
    Ok(code)
}

fn remove(root: &Path, id: &str) {
    if let Err(cleanup) = super::delete::delete(root, id, true) {
        log::warn!("removing {id}: {cleanup}");
    }
}

fn start_or_remove(root: &Path, id: &str) -> Result<()> {
    if let Err(e) = step(info_span!("start"), || super::start::start(root, id)) {
        remove(root, id);
        return Err(e);
    }
    Ok(())
}
