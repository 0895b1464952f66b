//! `lucid pause` and `lucid resume`: freeze and thaw every process of the
//! container (the v1 freezer, or `cgroup.freeze` on v2).

use std::path::Path;

use super::rules::Op;
use crate::cgroups::Cgroup;
use crate::state::{StateDir, Status};
use crate::Result;

/// Freezes a running (or created) container.
pub fn pause(root: &Path, id: &str) -> Result<()> {
    let dir = StateDir::open(root, id)?;
    let mut state = dir.read()?;
    let status = super::current_status(root, &state);
    Op::Pause.check(id, status)?;
    Cgroup::from_paths(&state.cgroup).freeze()?;
    state.status = Status::Paused;
    dir.write(&state)?;
    Ok(())
}

/// Thaws a paused container.
pub fn resume(root: &Path, id: &str) -> Result<()> {
    let dir = StateDir::open(root, id)?;
    let mut state = dir.read()?;
    let status = super::current_status(root, &state);
    Op::Resume.check(id, status)?;
    Cgroup::from_paths(&state.cgroup).thaw()?;
    state.status = if dir.has_exec_fifo() {
        Status::Created
    } else {
        Status::Running
    };
    dir.write(&state)?;
    Ok(())
}
