//! The lifecycle operations, one file each, in runc's command order. Each
//! takes plain settings (never clap types) and the state root.

pub mod create;
pub mod delete;
pub mod events;
pub mod exec;
pub mod kill;
pub mod list;
pub mod pause;
pub mod ps;
pub mod rules;
pub mod run;
pub mod start;
pub mod state;
pub mod syscalls;
pub mod update;

use std::path::Path;
use std::time::{Duration, Instant};

use crate::state::{ContainerState, Status};

/// The container's status now: what the state file says, corrected by what
/// the init process is actually doing.
pub fn current_status(root: &Path, state: &ContainerState) -> Status {
    match state.status {
        Status::Stopped => Status::Stopped,
        // A `create` that died half-way leaves "creating" with nobody holding
        // the lock: the container will never be created.
        Status::Creating => {
            if crate::state::is_locked(root, &state.id) {
                Status::Creating
            } else {
                Status::Stopped
            }
        }
        Status::Created | Status::Running | Status::Paused => {
            if !crate::procfs::is_alive(state.pid, state.init_start_time) {
                Status::Stopped
            } else if crate::cgroups::Cgroup::from_paths(&state.cgroup).is_frozen() {
                Status::Paused
            } else if crate::state::has_exec_fifo(root, &state.id) {
                Status::Created
            } else {
                Status::Running
            }
        }
    }
}

/// Waits up to `timeout` for the process to exit (or become a zombie).
/// Returns whether it did.
pub fn wait_for_exit(pid: i32, start_time: u64, timeout: Duration) -> bool {
    crate::procfs::wait_for_exit(pid, Instant::now() + timeout, || {
        !crate::procfs::is_alive(pid, start_time)
    })
}
