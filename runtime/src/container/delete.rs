//! `lucid delete`: remove a stopped container (or, with `--force`, kill and
//! remove one in any state), its cgroups and its state, then run the
//! poststop hooks.

use std::path::Path;
use std::time::Duration;

use super::rules::Op;
use crate::cgroups::Cgroup;
use crate::hooks::{self, HookKind, HookState};
use crate::state::{ContainerState, StateDir, StateError, Status};
use crate::telemetry::step;
use crate::Result;
use tracing::info_span;

/// How long a killed container may take to go away.
const KILL_TIMEOUT: Duration = Duration::from_secs(10);

/// Deletes the container.
pub fn delete(root: &Path, id: &str, force: bool) -> Result<()> {
    let read = step(info_span!("state.read"), || -> Result<_> {
        let dir = match StateDir::open(root, id) {
            Ok(dir) => dir,
            // As runc: a forced delete of what is already gone succeeds, so a
            // client's clean-up after its own `delete` (containerd's shim does
            // both) is not an error.
            Err(StateError::NotFound(_)) if force => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        let state = dir.read();
        Ok(Some((dir, state)))
    })?;
    let Some((dir, state)) = read else {
        return Ok(());
    };
    crate::failpoint::hit("delete.state-read");
    let state = match state {
        Ok(state) => state,
        // Nothing can be learned from a corrupt state, nor from a directory
        // whose create was killed before its first state.json; --force still
        // removes it.
        Err(e @ StateError::Corrupt { .. }) if force => {
            log::warn!("{e}");
            dir.remove()?;
            return Ok(());
        }
        // A `create` killed before its first state write: `create` writes the
        // state (with the cgroup paths) before making anything else, so the
        // directory is all there is.
        Err(StateError::NotFound(_)) if force => {
            log::debug!("{id} has a state directory without a state file: removing it");
            dir.remove()?;
            return Ok(());
        }
        Err(e) => return Err(e.into()),
    };
    let status = super::current_status(root, &state);
    let op = if force { Op::ForceDelete } else { Op::Delete };
    op.check(id, status)?;
    destroy(dir, &state)
}

/// Kills whatever is left, removes the cgroups and the state directory, runs
/// the poststop hooks; ends the container's trace.
pub fn destroy(dir: StateDir, state: &ContainerState) -> Result<()> {
    let cgroup = Cgroup::from_paths(&state.cgroup);
    step(info_span!("process.kill"), || -> Result<()> {
        if state.pid > 0 && crate::procfs::is_alive(state.pid, state.init_start_time) {
            // SAFETY: kill(2) has no memory effects; the pid is the container's
            // init process (same start time).
            unsafe { libc::kill(state.pid, libc::SIGKILL) };
            if cgroup.is_frozen() {
                cgroup.thaw()?;
            }
            if !super::wait_for_exit(state.pid, state.init_start_time, KILL_TIMEOUT) {
                log::warn!(
                    "init process {} of {} did not exit after SIGKILL",
                    state.pid,
                    state.id
                );
            }
        }
        // Without its own pid namespace, the container's other processes outlive init.
        cgroup.signal_all(libc::SIGKILL)?;
        // A frozen process cannot die: thaw a paused container once it is signalled.
        if cgroup.is_frozen() {
            cgroup.thaw()?;
        }
        Ok(())
    })?;
    crate::failpoint::hit("delete.killed");
    // A `create` killed between registering the cgroup with the eBPF
    // programs and recording it left no registration in the state: find it
    // by the cgroup's id while the cgroup still exists.
    let unrecorded = match &state.ebpf {
        Some(_) => None,
        None => crate::ebpf::unrecorded_registration(state.cgroup.unified.as_deref()),
    };
    step(info_span!("cgroup.remove"), || cgroup.remove())?;
    crate::failpoint::hit("delete.cgroup-removed");
    if let Some(registration) = state.ebpf.as_ref().or(unrecorded.as_ref()) {
        let _span = info_span!("ebpf.detach").entered();
        crate::ebpf::detach(registration);
    }
    crate::failpoint::hit("delete.ebpf-detached");
    step(info_span!("state.remove"), || dir.remove())?;
    let hook_state = HookState::of_container(state, Status::Stopped);
    // The runtime spec: a failing poststop hook is logged, delete succeeds.
    if let Err(e) = hooks::run_all(
        HookKind::Poststop,
        &HookKind::Poststop.hooks(&state.config),
        &hook_state,
    ) {
        log::warn!("{e}");
    }
    crate::telemetry::end_container(state.trace.as_ref(), state.pid);
    Ok(())
}
