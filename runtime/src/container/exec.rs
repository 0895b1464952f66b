//! `lucid exec`: run one more process in a running (or created) container.
//!
//! The process joins every namespace of the container and its cgroups (born
//! in the v2 one with CLONE_INTO_CGROUP where the kernel allows), and gets
//! the container's capabilities, rlimits, seccomp filter and LSM labels
//! unless its process.json or the flags say otherwise, as with runc. It goes
//! through the same machinery as the init process: an intermediate process
//! joins the namespaces and forks it (a pid namespace only takes children),
//! the sync channel reports its set-up, and the runtime waits until it has
//! exec'd. In the foreground `exec` forwards signals, relays its pty, and
//! returns its exit code (128+N when signal N killed it).

use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};

use nix::sys::signal::SigSet;
use oci_spec::runtime::{Capability, LinuxCapabilities, Process};

use super::create::{check_preserved_fds, send_pidfd, write_pid_file};
use super::rules::Op;
use crate::cgroups::Cgroup;
use crate::foreground::{self, Relay, Signals};
use crate::hooks::HookState;
use crate::namespaces;
use crate::process::init::InitConfig;
use crate::process::{spawn_exec, ProcessError, SpawnRequest};
use crate::seccomp::Program;
use crate::state::{StateDir, Status};
use crate::{terminal, Error, Result};

/// What is wrong with the process `exec` was asked to run.
#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    /// The process file cannot be read.
    #[error("--process {path}: {cause}")]
    ReadProcess {
        /// The file.
        path: PathBuf,
        /// The failure.
        cause: std::io::Error,
    },
    /// The process file is not a valid OCI process.
    #[error("--process {path}: {field}: {message}")]
    ParseProcess {
        /// The file.
        path: PathBuf,
        /// Where in the document parsing stopped (`.` for the top).
        field: String,
        /// The parser's message.
        message: String,
    },
    /// A field of the process holds a value lucid refuses.
    #[error("{origin}: {field}: {reason}")]
    InvalidProcess {
        /// `--process FILE`, or `exec` for a process made from flags.
        origin: String,
        /// The field, as a JSON path.
        field: String,
        /// Why.
        reason: String,
    },
    /// A flag that cannot be used as given.
    #[error("{flag}: {reason}")]
    Flag {
        /// The flag.
        flag: &'static str,
        /// Why, and what to do.
        reason: String,
    },
}

/// Changes `exec` makes to the container's own process, from its flags.
#[derive(Debug, Clone, Default)]
pub struct ProcessFlags {
    /// The command and its arguments.
    pub args: Vec<String>,
    /// `--cwd`.
    pub cwd: Option<PathBuf>,
    /// `--env NAME=value`, appended.
    pub env: Vec<String>,
    /// `--tty` (an exec'd process has no terminal unless asked).
    pub tty: bool,
    /// `--user uid[:gid]`.
    pub user: Option<(u32, Option<u32>)>,
    /// `--additional-gids`, appended.
    pub additional_gids: Vec<u32>,
    /// `--cap`: added to every capability set.
    pub caps: Vec<String>,
    /// `--no-new-privs`.
    pub no_new_privs: bool,
    /// `--apparmor`.
    pub apparmor: Option<String>,
    /// `--process-label`.
    pub process_label: Option<String>,
}

/// Which process `exec` runs.
#[derive(Debug, Clone)]
pub enum ExecProcess {
    /// `--process FILE`: an OCI process.json. `tty` is `--tty` given beside
    /// it (as podman does), which the file's `terminal` must then agree with.
    File {
        /// The file.
        path: PathBuf,
        /// `--tty` was given too.
        tty: bool,
    },
    /// The container's process, changed by flags.
    Flags(ProcessFlags),
}

/// Settings of `exec`.
#[derive(Debug, Clone)]
pub struct ExecOptions {
    /// The container ID.
    pub id: String,
    /// The process to run.
    pub process: ExecProcess,
    /// Return once the process runs instead of waiting for it.
    pub detach: bool,
    /// Where to write the process's pid.
    pub pid_file: Option<PathBuf>,
    /// The unix socket to send the pty master to (`--tty` with `--detach`).
    pub console_socket: Option<PathBuf>,
    /// The unix socket to send a pidfd of the process to.
    pub pidfd_socket: Option<PathBuf>,
    /// Pass descriptors 3..3+N to the process.
    pub preserve_fds: i32,
}

/// Parses a capability name the way config.json's are parsed.
fn capability(name: &str) -> Result<Capability, ExecError> {
    serde_json::from_value(serde_json::Value::String(name.to_owned())).map_err(|_| {
        ExecError::Flag {
            flag: "--cap",
            reason: format!("{name}: no such capability"),
        }
    })
}

/// The container's process changed by `exec`'s flags (runc's rules).
fn from_flags(container: &Process, flags: &ProcessFlags) -> Result<Process, ExecError> {
    let mut process = container.clone();
    process.set_args(Some(flags.args.clone()));
    if let Some(cwd) = &flags.cwd {
        process.set_cwd(cwd.clone());
    }
    if !flags.env.is_empty() {
        process
            .env_mut()
            .get_or_insert_with(Vec::new)
            .extend(flags.env.iter().cloned());
    }
    process.set_terminal(Some(flags.tty));
    if flags.no_new_privs {
        process.set_no_new_privileges(Some(true));
    }
    if let Some(profile) = &flags.apparmor {
        process.set_apparmor_profile(Some(profile.clone()));
    }
    if let Some(label) = &flags.process_label {
        process.set_selinux_label(Some(label.clone()));
    }
    if let Some((uid, gid)) = flags.user {
        process.user_mut().set_uid(uid);
        if let Some(gid) = gid {
            process.user_mut().set_gid(gid);
        }
    }
    if !flags.additional_gids.is_empty() {
        let mut gids = process.user().additional_gids().clone().unwrap_or_default();
        gids.extend(&flags.additional_gids);
        process.user_mut().set_additional_gids(Some(gids));
    }
    if !flags.caps.is_empty() {
        let added = flags
            .caps
            .iter()
            .map(|name| capability(name))
            .collect::<Result<Vec<_>, _>>()?;
        let mut caps = process
            .capabilities()
            .clone()
            .unwrap_or_else(empty_capabilities);
        let with = |set: &Option<oci_spec::runtime::Capabilities>| {
            let mut set = set.clone().unwrap_or_default();
            set.extend(added.iter().copied());
            Some(set)
        };
        caps.set_bounding(with(caps.bounding()));
        caps.set_effective(with(caps.effective()));
        caps.set_inheritable(with(caps.inheritable()));
        caps.set_permitted(with(caps.permitted()));
        caps.set_ambient(with(caps.ambient()));
        process.set_capabilities(Some(caps));
    }
    Ok(process)
}

fn empty_capabilities() -> LinuxCapabilities {
    let mut caps = LinuxCapabilities::default();
    caps.set_bounding(None);
    caps.set_effective(None);
    caps.set_inheritable(None);
    caps.set_permitted(None);
    caps.set_ambient(None);
    caps
}

/// A process.json, with what it leaves out taken from the container's
/// process: capabilities, rlimits, no_new_privileges and LSM labels (runc's
/// rules).
fn from_file(container: &Process, path: &Path) -> Result<Process, ExecError> {
    let text = std::fs::read(path).map_err(|cause| ExecError::ReadProcess {
        path: path.to_path_buf(),
        cause,
    })?;
    process_from_json(container, &text, path)
}

/// Parses a process.json read from `path` and fills in what it leaves out
/// from the container's process (runc's rules); the fields are not checked
/// yet ([`check_process`] does).
pub fn process_from_json(
    container: &Process,
    text: &[u8],
    path: &Path,
) -> Result<Process, ExecError> {
    let mut de = serde_json::Deserializer::from_slice(text);
    let mut process: Process =
        serde_path_to_error::deserialize(&mut de).map_err(|err| ExecError::ParseProcess {
            path: path.to_path_buf(),
            field: err.path().to_string(),
            message: err.into_inner().to_string(),
        })?;
    if process.capabilities().is_none() {
        process.set_capabilities(container.capabilities().clone());
    }
    if process.rlimits().as_ref().is_none_or(Vec::is_empty) {
        process.set_rlimits(container.rlimits().clone());
    }
    if process.no_new_privileges().is_none() {
        process.set_no_new_privileges(container.no_new_privileges());
    }
    if process
        .apparmor_profile()
        .as_ref()
        .is_none_or(String::is_empty)
    {
        process.set_apparmor_profile(container.apparmor_profile().clone());
    }
    if process
        .selinux_label()
        .as_ref()
        .is_none_or(String::is_empty)
    {
        process.set_selinux_label(container.selinux_label().clone());
    }
    Ok(process)
}

/// Checks the process `exec` is to run (the checks of config.json's
/// `process`, and its LSM labels); `origin` names it in messages and
/// `prefix` is its JSON path.
pub fn check_process(process: &Process, origin: &str, prefix: &str) -> Result<()> {
    crate::spec::check_process(process, prefix).map_err(|e| match e {
        crate::spec::SpecError::Invalid { field, reason } => {
            Error::from(ExecError::InvalidProcess {
                origin: origin.to_owned(),
                field: field.trim_start_matches('.').to_owned(),
                reason,
            })
        }
        other => other.into(),
    })?;
    crate::lsm::check_process(process, origin, prefix)?;
    Ok(())
}

/// Runs the process; returns the exit code `lucid exec` should exit with:
/// the process's in the foreground, 0 once it runs with `--detach`.
pub fn exec(root: &Path, options: &ExecOptions) -> Result<i32> {
    check_preserved_fds(options.preserve_fds)?;
    let dir = StateDir::open(root, &options.id)?;
    let state = dir.read()?;
    let status = super::current_status(root, &state);
    Op::Exec.check(&options.id, status)?;
    let container_process = state.config.process().clone().unwrap_or_default();
    let (mut process, origin) = match &options.process {
        ExecProcess::File { path, tty } => {
            let process = from_file(&container_process, path)?;
            if *tty && process.terminal() != Some(true) {
                return Err(ExecError::Flag {
                    flag: "--tty",
                    reason: format!(
                        "--process {} has no terminal: set \"terminal\": true in it, or drop --tty",
                        path.display()
                    ),
                }
                .into());
            }
            (process, format!("--process {}", path.display()))
        }
        ExecProcess::Flags(flags) => (from_flags(&container_process, flags)?, "exec".to_owned()),
    };
    // Fields of a process file are named from its top; flags change the
    // container's `process`.
    let prefix = match options.process {
        ExecProcess::File { .. } => "",
        ExecProcess::Flags(_) => "process",
    };
    check_process(&process, &origin, prefix)?;
    let seccomp = state
        .config
        .linux()
        .as_ref()
        .and_then(|l| l.seccomp().as_ref())
        .map(Program::compile)
        .transpose()?;
    let terminal = process.terminal() == Some(true);
    let (console_socket, console_ours) = match (options.detach, terminal, &options.console_socket) {
        (false, _, Some(_)) => {
            return Err(ExecError::Flag {
                flag: "--console-socket",
                reason: "a foreground exec relays the terminal itself: add --detach to hand the pty to a console socket".into(),
            }
            .into())
        }
        (false, true, None) => {
            let (ours, theirs) = std::os::unix::net::UnixStream::pair()
                .map_err(|e| Error::os("making the console socket pair", e))?;
            // The pty starts at the size of the terminal it is relayed to.
            if let Some(size) = terminal::caller_size() {
                process.set_console_size(Some(terminal::console_box(size)));
            }
            (Some(OwnedFd::from(theirs)), Some(OwnedFd::from(ours)))
        }
        (true, true, None) => {
            return Err(ExecError::Flag {
                flag: "--tty",
                reason: "a detached exec's terminal goes to a console socket: pass --console-socket".into(),
            }
            .into())
        }
        (true, false, Some(_)) => {
            return Err(ExecError::Flag {
                flag: "--console-socket",
                reason: "the process has no terminal: add --tty".into(),
            }
            .into())
        }
        (true, true, Some(path)) => (Some(terminal::connect("--console-socket", path)?), None),
        (_, false, None) => (None, None),
    };
    let pidfd_socket = options
        .pidfd_socket
        .as_deref()
        .map(|p| terminal::connect("--pidfd-socket", p))
        .transpose()?;
    let plan = namespaces::plan_joining(&state.config, state.pid);
    let joins = namespaces::open_joins(&plan)
        .map_err(|e| Error::os("opening the container's namespaces", e))?;
    // The namespaces opened are the container's only if its init process is
    // still the one the state names.
    if !crate::procfs::is_alive(state.pid, state.init_start_time) {
        Op::Exec.check(&options.id, Status::Stopped)?;
    }
    let cgroup = Cgroup::from_paths(&state.cgroup);
    let signals = if options.detach {
        None
    } else {
        Some(Signals::block()?)
    };
    let sigmask = match &signals {
        Some(signals) => signals.previous(),
        None => SigSet::thread_get_mask().unwrap_or_else(|_| SigSet::empty()),
    };
    let mut close_now = vec![dir.lock_fd()];
    close_now.extend(console_ours.as_ref().map(|fd| fd.as_raw_fd()));
    close_now.extend(pidfd_socket.as_ref().map(|fd| fd.as_raw_fd()));
    let init = InitConfig {
        id: &options.id,
        spec: &state.config,
        process: &process,
        plan: &plan,
        joins: &joins,
        container: None,
        seccomp: seccomp.as_ref(),
        console_socket: console_socket.as_ref().map(|fd| fd.as_raw_fd()),
        no_new_keyring: state.no_new_keyring,
        preserve_fds: options.preserve_fds,
        sigmask,
        close_now,
    };
    let mut no_hooks = |_: i32| Ok(());
    let mut on_pid = |_: i32| {};
    let mut on_notify = |fd: OwnedFd, pid: i32| -> Result<(), ProcessError> {
        let Some(program) = &seccomp else {
            return Ok(());
        };
        let hook_state = HookState::of_container(&state, Status::Running);
        Ok(program.send_to_listener(&fd, pid, &hook_state)?)
    };
    let spawned = spawn_exec(SpawnRequest {
        init,
        cgroup: &cgroup,
        runtime_hooks: &mut no_hooks,
        on_pid: &mut on_pid,
        on_notify: &mut on_notify,
    })?;
    drop(console_socket);
    // The process runs: later commands on the container need not wait for it.
    drop(dir);
    let pid = spawned.pid;
    let after_start = || -> Result<()> {
        if let Some(pid_file) = &options.pid_file {
            write_pid_file(pid_file, pid.as_raw())?;
        }
        if let Some(socket) = &pidfd_socket {
            send_pidfd(socket, spawned.pidfd.as_ref(), "setns")?;
        }
        Ok(())
    };
    if let Err(e) = after_start() {
        // SAFETY: kill(2) has no memory effects; pid is our child.
        unsafe { libc::kill(pid.as_raw(), libc::SIGKILL) };
        let _ = nix::sys::wait::waitpid(pid, None);
        return Err(e);
    }
    let Some(signals) = signals else {
        return Ok(0);
    };
    let relay = match &console_ours {
        Some(socket) => Some(Relay::new(
            terminal::recv_fd(socket.as_fd())
                .map(|(_, master)| master)
                .map_err(|e| Error::os("receiving the process's pty", e))?,
        )?),
        None => None,
    };
    drop(console_ours);
    foreground::wait(pid, &signals, relay)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn container_process() -> Process {
        serde_json::from_value(serde_json::json!({
            "terminal": true,
            "user": { "uid": 0, "gid": 0 },
            "args": ["sh"],
            "env": ["PATH=/bin"],
            "cwd": "/",
            "capabilities": { "bounding": ["CAP_KILL"], "effective": ["CAP_KILL"] },
            "rlimits": [{ "type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024 }],
            "noNewPrivileges": true
        }))
        .unwrap()
    }

    #[test]
    fn flags_change_the_containers_process_as_runc_does() {
        let flags = ProcessFlags {
            args: vec!["id".into()],
            cwd: Some("/tmp".into()),
            env: vec!["A=b".into()],
            user: Some((1000, Some(100))),
            additional_gids: vec![5],
            caps: vec!["CAP_NET_RAW".into()],
            ..Default::default()
        };
        let p = from_flags(&container_process(), &flags).unwrap();
        assert_eq!(p.args().as_deref(), Some(&["id".to_owned()][..]));
        assert_eq!(p.cwd(), Path::new("/tmp"));
        assert_eq!(p.env().as_ref().unwrap(), &["PATH=/bin", "A=b"]);
        // No terminal unless --tty, whatever the container's process had.
        assert_eq!(p.terminal(), Some(false));
        assert_eq!((p.user().uid(), p.user().gid()), (1000, 100));
        assert_eq!(p.user().additional_gids().as_deref(), Some(&[5][..]));
        let caps = p.capabilities().as_ref().unwrap();
        assert!(caps
            .ambient()
            .as_ref()
            .unwrap()
            .contains(&Capability::NetRaw));
        assert!(caps
            .bounding()
            .as_ref()
            .unwrap()
            .contains(&Capability::Kill));
        assert_eq!(p.rlimits().as_ref().unwrap().len(), 1);
    }

    #[test]
    fn unknown_cap_flag_is_refused() {
        let flags = ProcessFlags {
            args: vec!["id".into()],
            caps: vec!["CAP_WISHFUL_THINKING".into()],
            ..Default::default()
        };
        let err = from_flags(&container_process(), &flags)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("--cap") && err.contains("CAP_WISHFUL_THINKING"),
            "{err}"
        );
    }

    #[test]
    fn a_process_file_inherits_what_it_leaves_out() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("process.json");
        std::fs::write(
            &path,
            r#"{ "user": { "uid": 0, "gid": 0 }, "args": ["ls"], "cwd": "/" }"#,
        )
        .unwrap();
        let p = from_file(&container_process(), &path).unwrap();
        assert_eq!(p.no_new_privileges(), Some(true));
        assert!(p.capabilities().is_some());
        assert_eq!(p.rlimits().as_ref().unwrap().len(), 1);
        std::fs::write(
            &path,
            r#"{ "user": { "uid": "root" }, "args": ["ls"], "cwd": "/" }"#,
        )
        .unwrap();
        let err = from_file(&container_process(), &path)
            .unwrap_err()
            .to_string();
        assert!(err.contains("user.uid"), "{err}");
    }
}
