//! The runtime's side of `init.spawn`: clone the init process (directly, or
//! through an intermediate process when namespaces need one), put it in its
//! cgroups, write its id maps, run the runtime-side hooks when it asks, hand
//! its seccomp notify fd to the listener, and wait until it reports `Ready`.
//! A process `exec` starts goes the same way, always through an intermediate
//! process (it joins a pid namespace), and is waited for until it has exec'd.

use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::path::Path;
use std::process::Command;

use nix::sys::signal::{kill, Signal};
use nix::sys::wait::{waitpid, WaitStatus};
use nix::unistd::Pid;
use oci_spec::runtime::LinuxIdMapping;

use super::channel::{self, InitMessage, InitSequence, PhaseTiming, RuntimeEnd, RuntimeMessage};
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
    /// Hands a seccomp notify fd to the profile's listener, given the pid of
    /// the process it filters.
    pub on_notify: &'b mut dyn FnMut(OwnedFd, i32) -> Result<(), ProcessError>,
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
pub fn spawn_init(request: SpawnRequest) -> Result<Spawned, ProcessError> {
    spawn(request)
}

/// Spawns a process in a running container (`request.init.container` is
/// `None` and every namespace is joined) and waits until it has exec'd. On
/// error, every process spawned is killed before returning.
pub fn spawn_exec(request: SpawnRequest) -> Result<Spawned, ProcessError> {
    spawn(request).map_err(|e| match e {
        ProcessError::InitFailed { phase, message } => ProcessError::ExecFailed { phase, message },
        other => other,
    })
}

fn spawn(mut request: SpawnRequest) -> Result<Spawned, ProcessError> {
    let (ours, theirs) = channel::pair()?;
    // Every message of the init process must come in the protocol's order.
    let mut sequence = InitSequence::default();
    let plan = request.init.plan;
    let exec = request.init.container.is_none();
    let intermediate = exec || plan.needs_intermediate();
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
    // The v2 cgroup's directory is the clone's argument only: the child must
    // not hold a host directory (CVE-2024-21626).
    if let Some(fd) = &cgroup_fd {
        request.init.close_now.push(fd.as_raw_fd());
    }
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
    if !exec {
        crate::failpoint::hit("create.init-cloned");
    }
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
            expect(&ours, &mut sequence, first_pid, |m| {
                matches!(m, InitMessage::UserNamespaceReady)
            })?;
            write_id_maps(first_pid, request.init.spec)?;
        }
        ours.send(&RuntimeMessage::Proceed)?;
        let init_pid = match expect(&ours, &mut sequence, first_pid, |m| {
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
    if let Some(container) = &request.init.container {
        // Mid-mounts: once the init process has made the first spec mount.
        if let Some(first) = request.init.spec.mounts().iter().flatten().next() {
            let target = container.rootfs.join(
                first
                    .destination()
                    .strip_prefix("/")
                    .unwrap_or(first.destination()),
            );
            let needle = format!(" {} ", target.display());
            crate::failpoint::kill_when("create.mounts", || {
                std::fs::read_to_string(format!("/proc/{pid}/mountinfo"))
                    .is_ok_and(|m| m.contains(&needle))
            });
        }
    }
    let phases = loop {
        // A closed or reset channel means the init process died: say how.
        let message = ours
            .recv()
            .map_err(|_| ProcessError::InitDied(exit_status(pid)))?;
        if let Some((message, _)) = &message {
            sequence.accept(message)?;
        }
        match message {
            Some((InitMessage::RunCreateRuntimeHooks, _)) => {
                (request.runtime_hooks)(pid.as_raw())?;
                // A hook may have killed the init process: say so, not "broken pipe".
                if ours
                    .send(&RuntimeMessage::HooksDone { pid: pid.as_raw() })
                    .is_err()
                {
                    return Err(ProcessError::InitDied(exit_status(pid)));
                }
            }
            Some((InitMessage::SeccompNotify, Some(fd))) => (request.on_notify)(fd, pid.as_raw())?,
            Some((InitMessage::Ready { phases }, _)) => {
                crate::telemetry::record_phases(&phases);
                break phases;
            }
            Some((
                InitMessage::Failed {
                    phase,
                    message,
                    phases,
                },
                _,
            )) => {
                crate::telemetry::record_phases(&phases);
                return Err(ProcessError::InitFailed { phase, message });
            }
            Some((other, _)) => {
                return Err(ProcessError::InitDied(format!(
                    "unexpected message {other:?}"
                )))
            }
            None => return Err(ProcessError::InitDied(exit_status(pid))),
        }
    };
    if exec {
        // The channel closes when the process execs; a failed exec says why.
        match ours.recv()?.map(|(message, _)| message) {
            None => {}
            Some(InitMessage::Failed { phase, message, .. }) => {
                return Err(ProcessError::InitFailed { phase, message })
            }
            Some(other) => {
                return Err(ProcessError::InitDied(format!(
                    "unexpected message {other:?}"
                )))
            }
        }
    }
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
    channel: &RuntimeEnd,
    sequence: &mut InitSequence,
    pid: Pid,
    wanted: impl Fn(&InitMessage) -> bool,
) -> Result<InitMessage, ProcessError> {
    let message = channel.recv()?.map(|(message, _)| message);
    if let Some(message) = &message {
        sequence.accept(message)?;
    }
    match message {
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
/// kernel requires). Without root, a map that is more than the caller's own
/// id needs the setuid helpers newuidmap/newgidmap, as with runc; a gid map
/// that is just the caller's own gid needs setgroups denied first.
fn write_id_maps(pid: Pid, spec: &oci_spec::runtime::Spec) -> Result<(), ProcessError> {
    let linux = spec.linux().as_ref();
    let uid = linux
        .and_then(|l| l.uid_mappings().clone())
        .unwrap_or_default();
    let gid = linux
        .and_then(|l| l.gid_mappings().clone())
        .unwrap_or_default();
    let rootless = !nix::unistd::geteuid().is_root();
    let proc_dir = Path::new("/proc").join(pid.as_raw().to_string());
    if rootless && is_only(&gid, nix::unistd::getegid().as_raw()) {
        let path = proc_dir.join("setgroups");
        std::fs::write(&path, "deny").map_err(|cause| ProcessError::IdMap { path, cause })?;
    }
    for (file, tool, mappings) in [("uid_map", "newuidmap", uid), ("gid_map", "newgidmap", gid)] {
        if mappings.is_empty() {
            continue;
        }
        let path = proc_dir.join(file);
        match std::fs::write(&path, map_text(&mappings)) {
            Ok(()) => {}
            Err(e) if rootless && e.raw_os_error() == Some(libc::EPERM) => {
                run_map_tool(tool, pid, &mappings)?
            }
            Err(cause) => return Err(ProcessError::IdMap { path, cause }),
        }
    }
    Ok(())
}

/// Whether the mappings map exactly one id, `host`, to root.
fn is_only(mappings: &[LinuxIdMapping], host: u32) -> bool {
    matches!(mappings, [m] if m.container_id() == 0 && m.host_id() == host && m.size() == 1)
}

/// Writes a map through newuidmap or newgidmap (which check /etc/subuid
/// and /etc/subgid).
fn run_map_tool(tool: &str, pid: Pid, mappings: &[LinuxIdMapping]) -> Result<(), ProcessError> {
    let mut command = Command::new(tool);
    command.arg(pid.as_raw().to_string());
    for m in mappings {
        command
            .arg(m.container_id().to_string())
            .arg(m.host_id().to_string())
            .arg(m.size().to_string());
    }
    let output = command.output().map_err(|source| ProcessError::IdMapTool {
        tool: tool.to_owned(),
        message: if source.kind() == std::io::ErrorKind::NotFound {
            "not found: install the uidmap package; mappings beyond your own id need it".into()
        } else {
            source.to_string()
        },
    })?;
    if !output.status.success() {
        return Err(ProcessError::IdMapTool {
            tool: tool.to_owned(),
            message: format!(
                "{}: {}: check /etc/subuid and /etc/subgid",
                output.status,
                String::from_utf8_lossy(&output.stderr).trim()
            ),
        });
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
        assert!(!is_only(&maps, 1000));
        assert!(is_only(&maps[..1], 1000));
    }
}
