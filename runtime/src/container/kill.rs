//! `lucid kill`: send a signal to the container's init process, or with
//! `--all` to every process in its cgroup.

use std::path::Path;

use super::rules::Op;
use crate::cgroups::Cgroup;
use crate::state::{StateDir, Status};
use crate::{Error, Result};

/// Sends `signal` to the container.
pub fn kill(root: &Path, id: &str, signal: i32, all: bool) -> Result<()> {
    crate::telemetry::annotate("signal", i64::from(signal));
    let dir = StateDir::open(root, id)?;
    let state = dir.read()?;
    let status = super::current_status(root, &state);
    Op::Kill.check(id, status)?;
    let cgroup = Cgroup::from_paths(&state.cgroup);
    if all {
        cgroup.signal_all(signal)?;
    } else {
        // SAFETY: kill(2) has no memory effects; the pid was checked to still be
        // the container's init process (same start time) just above.
        if unsafe { libc::kill(state.pid, signal) } != 0 {
            return Err(Error::os(
                format!("sending signal {signal} to init process {}", state.pid),
                std::io::Error::last_os_error(),
            ));
        }
    }
    // A frozen process cannot die: as runc does, a paused container is
    // thawed once SIGKILL is sent (containerd's `task delete --force` and
    // podman's `rm --force` of a paused container rely on it).
    if status == Status::Paused && signal == libc::SIGKILL {
        cgroup.thaw()?;
    }
    Ok(())
}
