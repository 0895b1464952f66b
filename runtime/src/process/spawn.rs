//! The runtime's side of `init.spawn`: clone the init process (directly, or
//! through an intermediate process when namespaces need one), put it in its
//! cgroups, write its id maps, run the runtime-side hooks when it asks, and
//! wait until it reports `Ready`.

use std::os::fd::{AsFd, FromRawFd, OwnedFd};
use std::path::Path;

use nix::sys::signal::{kill, Signal};
use nix::sys::wait::{waitpid, WaitStatus};
use nix::unistd::Pid;
use oci_spec::runtime::LinuxIdMapping;

use super::channel::{Channel, InitMessage, PhaseTiming, RuntimeMessage};
use super::clone::{clone_process, Cloned};
use super::init::{child_main, InitConfig, Role};
use super::ProcessError;
use crate::cgroups::Cgroup;

/// The init process, set up and blocked on the exec FIFO.
#[derive(Debug)]
pub struct Spawned {
    /// Its pid in the runtime's pid namespace.
    pub pid: Pid,
    /// A pidfd for it, where the kernel gives one.
    pub pidfd: Option<OwnedFd>,
    /// The phases it measured.
    pub phases: Vec<PhaseTiming>,
    /// Whether it was born in its v2 cgroup (CLONE_INTO_CGROUP).
    pub born_in_cgroup: bool,
}

/// What `spawn_init` needs besides the init configuration.
pub struct SpawnRequest<'a, 'b> {
    /// Everything the child needs.
    pub init: InitConfig<'a>,
    /// The container's cgroups (already created).
    pub cgroup: &'a Cgroup,
    /// Runs the prestart and createRuntime hooks, given the init pid.
    pub runtime_hooks: &'b mut dyn FnMut(i32) -> Result<(), crate::hooks::HookError>,
    /// Called as soon as the init pid is known (to record it in the state, so
    /// that a runtime killed from here on leaves a pid to clean up).
    pub on_pid: &'b mut dyn FnMut(i32),
}

/// Kills and reaps what was spawned unless disarmed.
struct KillOnDrop {
    pids: Vec<Pid>,
}

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        for pid in &self.pids {
            let _ = kill(*pid, Signal::SIGKILL);
            let _ = waitpid(*pid, None);
        }
    }
}

/// Spawns the init process and takes it through set-up. On error, every
/// process spawned is killed before returning.
pub fn spawn_init(mut request: SpawnRequest) -> Result<Spawned, ProcessError> {
    let (ours, theirs) = Channel::pair()?;
    let plan = request.init.plan;
    let intermediate = plan.needs_intermediate();
    let flags = if intermediate {
        0
    } else {
        plan.direct_clone_flags()
    };
    let cgroup_fd = if crate::cgroups::placement_forced_to_procs() {
        None
    } else {
        request.cgroup.unified_fd()
    };
    request.init.close_now.push(ours.raw_fd());
    // SAFETY: the runtime is single-threaded: it starts no threads.
    let cloned = unsafe { clone_process(flags, cgroup_fd.as_ref().map(|fd| fd.as_fd())) }
        .map_err(ProcessError::Clone)?;
    let (first_pid, first_pidfd, born_in_cgroup) = match cloned {
        Cloned::Child => {
            let role = if intermediate {
                Role::Intermediate
            } else {
                Role::DirectInit
            };
            child_main(&request.init, &theirs, role)
        }
        Cloned::Parent {
            pid,
            pidfd,
            in_cgroup,
        } => (pid, pidfd, in_cgroup),
    };
    drop(theirs);
    let mut guard = KillOnDrop {
        pids: vec![first_pid],
    };
    request.cgroup.place(first_pid.as_raw(), born_in_cgroup)?;
    log::debug!(
        "process {first_pid} placed {}",
        if born_in_cgroup {
            "in its v2 cgroup at birth (CLONE_INTO_CGROUP)"
        } else {
            "through cgroup.procs"
        }
    );
    let (pid, pidfd) = if intermediate {
        if plan.is_new(oci_spec::runtime::LinuxNamespaceType::User) {
            expect(&ours, first_pid, |m| {
                matches!(m, InitMessage::UserNamespaceReady)
            })?;
            write_id_maps(first_pid, request.init.spec)?;
        }
        ours.send(&RuntimeMessage::Proceed)?;
        let init_pid = match expect(&ours, first_pid, |m| {
            matches!(m, InitMessage::InitPid { .. })
        })? {
            InitMessage::InitPid { pid } => Pid::from_raw(pid),
            _ => unreachable!("expect returned the matched message"),
        };
        guard.pids.insert(0, init_pid);
        // The intermediate process exits once it has forked the init process.
        match waitpid(first_pid, None) {
            Ok(WaitStatus::Exited(_, 0)) => {}
            Ok(status) => return Err(ProcessError::InitDied(describe(status))),
            Err(e) => return Err(ProcessError::InitDied(e.to_string())),
        }
        guard.pids.retain(|p| *p != first_pid);
        (init_pid, pidfd_open(init_pid))
    } else {
        ours.send(&RuntimeMessage::Proceed)?;
        (first_pid, first_pidfd)
    };
    (request.on_pid)(pid.as_raw());
    let phases = loop {
        // A closed or reset channel means the init process died: say how.
        let message = ours
            .recv::<InitMessage>()
            .map_err(|_| ProcessError::InitDied(exit_status(pid)))?;
        match message {
            Some(InitMessage::RunCreateRuntimeHooks) => {
                (request.runtime_hooks)(pid.as_raw())?;
                // A hook may have killed the init process: say so, not "broken pipe".
                if ours
                    .send(&RuntimeMessage::HooksDone { pid: pid.as_raw() })
                    .is_err()
                {
                    return Err(ProcessError::InitDied(exit_status(pid)));
                }
            }
            Some(InitMessage::Ready { phases }) => {
                crate::telemetry::record_phases(&phases);
                break phases;
            }
            Some(InitMessage::Failed {
                phase,
                message,
                phases,
            }) => {
                crate::telemetry::record_phases(&phases);
                return Err(ProcessError::InitFailed { phase, message });
            }
            Some(other) => {
                return Err(ProcessError::InitDied(format!(
                    "unexpected message {other:?}"
                )))
            }
            None => return Err(ProcessError::InitDied(exit_status(pid))),
        }
    };
    guard.pids.clear();
    Ok(Spawned {
        pid,
        pidfd,
        phases,
        born_in_cgroup,
    })
}

/// Receives the next message, which must match; a `Failed` or a closed
/// channel become errors.
fn expect(
    channel: &Channel,
    pid: Pid,
    wanted: impl Fn(&InitMessage) -> bool,
) -> Result<InitMessage, ProcessError> {
    match channel.recv::<InitMessage>()? {
        Some(InitMessage::Failed { phase, message, .. }) => {
            Err(ProcessError::InitFailed { phase, message })
        }
        Some(message) if wanted(&message) => Ok(message),
        Some(other) => Err(ProcessError::InitDied(format!(
            "unexpected message {other:?}"
        ))),
        None => Err(ProcessError::InitDied(exit_status(pid))),
    }
}

/// How a child that closed the channel ended (reaping it if it is ours).
fn exit_status(pid: Pid) -> String {
    match waitpid(pid, None) {
        Ok(status) => describe(status),
        Err(_) => "it closed the sync channel".to_owned(),
    }
}

fn describe(status: WaitStatus) -> String {
    match status {
        WaitStatus::Exited(_, code) => format!("exit status {code}"),
        WaitStatus::Signaled(_, signal, _) => format!("killed by {signal}"),
        other => format!("{other:?}"),
    }
}

fn pidfd_open(pid: Pid) -> Option<OwnedFd> {
    // SAFETY: pidfd_open has no memory effects; a negative result is an error.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid.as_raw(), 0) };
    // SAFETY: a non-negative result is a new descriptor this process owns.
    (fd >= 0).then(|| unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

fn map_text(mappings: &[LinuxIdMapping]) -> String {
    mappings
        .iter()
        .map(|m| format!("{} {} {}\n", m.container_id(), m.host_id(), m.size()))
        .collect()
}

/// Writes the user namespace's uid and gid maps (each in one write, as the
/// kernel requires).
fn write_id_maps(pid: Pid, spec: &oci_spec::runtime::Spec) -> Result<(), ProcessError> {
    let linux = spec.linux().as_ref();
    let uid = linux
        .and_then(|l| l.uid_mappings().clone())
        .unwrap_or_default();
    let gid = linux
        .and_then(|l| l.gid_mappings().clone())
        .unwrap_or_default();
    for (file, mappings) in [("uid_map", uid), ("gid_map", gid)] {
        if mappings.is_empty() {
            continue;
        }
        let path = Path::new("/proc").join(pid.as_raw().to_string()).join(file);
        std::fs::write(&path, map_text(&mappings))
            .map_err(|cause| ProcessError::IdMap { path, cause })?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn id_maps_are_one_line_per_range() {
        let maps: Vec<LinuxIdMapping> = serde_json::from_value(serde_json::json!([
            { "containerID": 0, "hostID": 1000, "size": 1 },
            { "containerID": 1, "hostID": 100000, "size": 65536 }
        ]))
        .unwrap();
        assert_eq!(map_text(&maps), "0 1000 1\n1 100000 65536\n");
    }
}
