//! The code that runs in the container's processes between clone and exec.
//!
//! The init process records each phase's start and end (CLOCK_REALTIME) and
//! sends them with `Ready`, just before it blocks on the exec FIFO; it never
//! exports anything itself. Errors go back over the sync channel as `Failed`
//! naming the phase, then the process exits.

use std::convert::Infallible;
use std::ffi::CString;
use std::io::Write;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::path::Path;
use std::time::SystemTime;

use nix::sys::signal::{SigHandler, SigSet, Signal};
use oci_spec::runtime::{LinuxNamespaceType, Spec};

use super::channel::{Channel, InitMessage, PhaseTiming, RuntimeMessage, StartMessage};
use super::setup;
use crate::hooks::{self, HookKind, HookState};
use crate::namespaces::{self, NamespacePlan, OpenedJoins};
use crate::rootfs::{self, CgroupMountSource, RootfsConfig};
use crate::state::Status;

/// What the init process needs, all prepared by the runtime before cloning
/// so that the child fails early and allocates little.
#[derive(Debug)]
pub struct InitConfig<'a> {
    /// The container ID.
    pub id: &'a str,
    /// The configuration.
    pub spec: &'a Spec,
    /// The root filesystem on the host, absolute.
    pub rootfs: &'a Path,
    /// The bundle, absolute.
    pub bundle: &'a Path,
    /// Which namespaces are new and which joined.
    pub plan: &'a NamespacePlan,
    /// Descriptors of the namespaces to join.
    pub joins: &'a OpenedJoins,
    /// The container's cgroups, for a `cgroup` mount.
    pub cgroups: &'a [CgroupMountSource],
    /// An O_PATH descriptor of the exec FIFO.
    pub exec_fifo: &'a OwnedFd,
    /// `--no-pivot`.
    pub no_pivot: bool,
    /// `--no-new-keyring`.
    pub no_new_keyring: bool,
    /// `--preserve-fds`: descriptors 3..3+N pass to the process.
    pub preserve_fds: i32,
    /// The signal mask to restore before exec (`run` blocks signals).
    pub sigmask: SigSet,
    /// Descriptors of the runtime's that the child must close at once (the
    /// state lock above all: holding it would block every later command).
    pub close_now: Vec<RawFd>,
}

/// A failed phase.
struct Failure {
    phase: &'static str,
    message: String,
}

fn fail<E: std::fmt::Display>(phase: &'static str) -> impl FnOnce(E) -> Failure {
    move |e| Failure {
        phase,
        message: e.to_string(),
    }
}

fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or_default()
}

fn thread_cpu_ns() -> u64 {
    super::cpu_time_ns(libc::CLOCK_THREAD_CPUTIME_ID)
}

/// Phase timings recorded so far.
#[derive(Default)]
struct Phases(Vec<PhaseTiming>);

impl Phases {
    fn run<T>(
        &mut self,
        name: &'static str,
        f: impl FnOnce() -> Result<T, Failure>,
    ) -> Result<T, Failure> {
        self.run_with(name, Vec::new(), f)
    }

    /// Runs a phase whose span carries `attributes`.
    fn run_with<T>(
        &mut self,
        name: &'static str,
        attributes: Vec<(String, String)>,
        f: impl FnOnce() -> Result<T, Failure>,
    ) -> Result<T, Failure> {
        let start_ns = now_ns();
        let cpu = thread_cpu_ns();
        let result = f();
        self.0.push(PhaseTiming {
            name: name.to_owned(),
            start_ns,
            end_ns: now_ns(),
            cpu_ns: Some(thread_cpu_ns().saturating_sub(cpu)),
            attributes,
            error: result.as_ref().err().map(|f| f.message.clone()),
        });
        result
    }

    /// Runs each hook of `kind` as a phase of its own.
    fn run_hooks(
        &mut self,
        kind: HookKind,
        list: &[oci_spec::runtime::Hook],
        state: &HookState,
    ) -> Result<(), Failure> {
        if list.is_empty() {
            return Ok(());
        }
        let name = kind.span_name();
        let stdin = serde_json::to_vec(state).map_err(fail(name))?;
        for hook in list {
            let attributes = vec![("hook.path".to_owned(), hook.path().display().to_string())];
            self.run_with(name, attributes, || {
                hooks::run(kind, hook, &stdin).map_err(fail(name))
            })?;
        }
        Ok(())
    }
}

/// Which process this is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Cloned by the runtime directly into the container's namespaces.
    DirectInit,
    /// Prepares namespaces and forks the init process.
    Intermediate,
    /// Forked by the intermediate process, inside the namespaces.
    ForkedInit,
}

/// The child's entry point after clone: never returns.
pub fn child_main(config: &InitConfig, channel: &Channel, role: Role) -> ! {
    // Until exec, /proc/PID/exe is the lucid binary: a process of the
    // container must not be able to open it (or ptrace this one). exec makes
    // the process dumpable again.
    // SAFETY: prctl with integer arguments has no memory effects.
    unsafe { libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0) };
    for fd in &config.close_now {
        // SAFETY: these descriptors belong to the runtime's side and are not
        // used by the child; closing them cannot invalidate anything it holds.
        unsafe { libc::close(*fd) };
    }
    let mut phases = Phases::default();
    let result = match role {
        Role::Intermediate => intermediate(config, channel).map(|()| 0),
        Role::DirectInit | Role::ForkedInit => {
            init(config, channel, role, &mut phases).map(|never| match never {})
        }
    };
    match result {
        Ok(code) => exit(code),
        Err(failure) => {
            let _ = channel.send(&InitMessage::Failed {
                phase: failure.phase.to_owned(),
                message: failure.message,
                phases: phases.0,
            });
            exit(1)
        }
    }
}

fn exit(code: i32) -> ! {
    // SAFETY: _exit ends the process without running the runtime's atexit
    // handlers or flushing its buffers, which belong to the parent.
    unsafe { libc::_exit(code) }
}

fn set_name(name: &str) {
    let cname = CString::new(name).unwrap_or_default();
    // SAFETY: PR_SET_NAME reads a NUL-terminated string of at most 16 bytes.
    unsafe { libc::prctl(libc::PR_SET_NAME, cname.as_ptr(), 0, 0, 0) };
}

fn set_parent_death_signal(signal: i32) {
    // SAFETY: prctl with integer arguments has no memory effects.
    unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, signal, 0, 0, 0) };
}

fn wait_for(channel: &Channel, phase: &'static str) -> Result<RuntimeMessage, Failure> {
    match channel.recv::<RuntimeMessage>().map_err(fail(phase))? {
        Some(message) => Ok(message),
        None => Err(Failure {
            phase,
            message: "the runtime went away".into(),
        }),
    }
}

/// Joins and creates namespaces, then forks the init process inside them.
fn intermediate(config: &InitConfig, channel: &Channel) -> Result<(), Failure> {
    set_name("lucid:stage1");
    set_parent_death_signal(libc::SIGKILL);
    let plan = config.plan;
    config.joins.enter(None).map_err(fail("namespaces.join"))?;
    if plan.is_new(LinuxNamespaceType::User) {
        namespaces::unshare(&[LinuxNamespaceType::User]).map_err(fail("namespaces.join"))?;
        channel
            .send(&InitMessage::UserNamespaceReady)
            .map_err(fail("namespaces.join"))?;
    }
    match wait_for(channel, "namespaces.join")? {
        RuntimeMessage::Proceed => {}
        other => {
            return Err(Failure {
                phase: "namespaces.join",
                message: format!("unexpected message {other:?}"),
            })
        }
    }
    if plan.has_user() {
        // Become root of the user namespace, so that the rest of set-up runs
        // with its full capabilities.
        // SAFETY: setresgid/setresuid take plain integers.
        if unsafe { libc::setresgid(0, 0, 0) } != 0 || unsafe { libc::setresuid(0, 0, 0) } != 0 {
            return Err(Failure {
                phase: "namespaces.join",
                message: format!(
                    "becoming root in the user namespace (is id 0 mapped?): {}",
                    std::io::Error::last_os_error()
                ),
            });
        }
    }
    let others: Vec<LinuxNamespaceType> = plan
        .new
        .iter()
        .copied()
        .filter(|t| *t != LinuxNamespaceType::User)
        .collect();
    namespaces::unshare(&others).map_err(fail("namespaces.join"))?;
    if plan.time_offsets {
        write_time_offsets(config.spec).map_err(fail("namespaces.join"))?;
    }
    // SAFETY: this process is single-threaded (a clone of the runtime's only thread).
    match unsafe { super::clone::clone_process(0, None) }.map_err(fail("init.spawn"))? {
        super::clone::Cloned::Child => child_main(config, channel, Role::ForkedInit),
        super::clone::Cloned::Parent { pid, .. } => {
            channel
                .send(&InitMessage::InitPid { pid: pid.as_raw() })
                .map_err(fail("init.spawn"))?;
            Ok(())
        }
    }
}

fn write_time_offsets(spec: &Spec) -> Result<(), String> {
    let offsets = spec
        .linux()
        .as_ref()
        .and_then(|l| l.time_offsets().clone())
        .unwrap_or_default();
    let mut text = String::new();
    for (clock, offset) in &offsets {
        text.push_str(&format!(
            "{clock} {} {}\n",
            offset.secs().unwrap_or(0),
            offset.nanosecs().unwrap_or(0)
        ));
    }
    std::fs::write("/proc/self/timens_offsets", text)
        .map_err(|e| format!("writing time offsets: {e}"))
}

/// The init process: set-up, then wait on the exec FIFO, then exec.
fn init(
    config: &InitConfig,
    channel: &Channel,
    role: Role,
    phases: &mut Phases,
) -> Result<Infallible, Failure> {
    set_name("lucid:init");
    let direct = role == Role::DirectInit;
    if direct {
        // Die with the runtime while set-up runs. (A forked init outlives its
        // intermediate parent by design, and notices a dead runtime on the channel.)
        set_parent_death_signal(libc::SIGKILL);
    }
    // Device nodes and mount points get exactly the modes the spec gives.
    nix::sys::stat::umask(nix::sys::stat::Mode::empty());
    let spec = config.spec;
    let process = spec.process().as_ref().ok_or(Failure {
        phase: "process.setup",
        message: "config.json has no process".into(),
    })?;
    phases.run("namespaces.join", || {
        if direct {
            match wait_for(channel, "namespaces.join")? {
                RuntimeMessage::Proceed => {}
                other => {
                    return Err(Failure {
                        phase: "namespaces.join",
                        message: format!("unexpected message {other:?}"),
                    })
                }
            }
            config.joins.enter(None).map_err(fail("namespaces.join"))?;
            if config.plan.is_new(LinuxNamespaceType::Cgroup) {
                namespaces::unshare(&[LinuxNamespaceType::Cgroup])
                    .map_err(fail("namespaces.join"))?;
            }
        }
        rootfs::set_names(spec).map_err(fail("namespaces.join"))?;
        if !config.no_new_keyring {
            setup::join_session_keyring(config.id).map_err(fail("namespaces.join"))?;
        }
        Ok(())
    })?;
    let rootfs_config = RootfsConfig {
        spec,
        rootfs: config.rootfs,
        bundle: config.bundle,
        user_ns: config.plan.has_user(),
        cgroup_ns: config.plan.is_new(LinuxNamespaceType::Cgroup)
            || config.plan.joins(LinuxNamespaceType::Cgroup),
        cgroups: config.cgroups,
    };
    let root = phases.run("rootfs.mount", || {
        let root = rootfs::prepare(&rootfs_config).map_err(fail("rootfs.mount"))?;
        rootfs::mount_all(&rootfs_config, &root).map_err(fail("rootfs.mount"))?;
        Ok(root)
    })?;
    phases.run("devices", || {
        rootfs::create_devices(&rootfs_config, &root).map_err(fail("devices"))
    })?;
    let mut host_pid = None;
    if needs_pid_from_runtime(spec) {
        channel
            .send(&InitMessage::RunCreateRuntimeHooks)
            .map_err(fail("hook.createRuntime"))?;
        match wait_for(channel, "hook.createRuntime")? {
            RuntimeMessage::HooksDone { pid } => host_pid = Some(pid),
            other => {
                return Err(Failure {
                    phase: "hook.createRuntime",
                    message: format!("unexpected message {other:?}"),
                })
            }
        }
    }
    let annotations = spec.annotations().clone().unwrap_or_default();
    let hook_state = |status| HookState {
        oci_version: spec.version(),
        id: config.id,
        status,
        pid: host_pid,
        bundle: config.bundle,
        annotations: &annotations,
    };
    phases.run_hooks(
        HookKind::CreateContainer,
        &HookKind::CreateContainer.hooks(spec),
        &hook_state(Status::Creating),
    )?;
    phases.run("rootfs.pivot", || {
        if config.no_pivot {
            rootfs::move_root(config.rootfs).map_err(fail("rootfs.pivot"))?;
        } else {
            rootfs::pivot(config.rootfs).map_err(fail("rootfs.pivot"))?;
        }
        rootfs::finish(&rootfs_config, root.dev_readonly()).map_err(fail("rootfs.pivot"))
    })?;
    drop(root);
    let (program, argv, envp) = phases.run("process.setup", || {
        setup::apply_rlimits(process).map_err(fail("process.setup"))?;
        setup::apply_oom_score_adj(process).map_err(fail("process.setup"))?;
        setup::apply_identity(process).map_err(fail("process.setup"))?;
        setup::apply_final(process).map_err(fail("process.setup"))?;
        let args = process.args().clone().unwrap_or_default();
        let env = setup::environment(process);
        let program = setup::find_executable(&args[0], &env).map_err(fail("process.setup"))?;
        let program = CString::new(program.into_os_string().into_encoded_bytes())
            .map_err(fail("process.setup"))?;
        let argv = setup::c_strings(&args, "process.args").map_err(fail("process.setup"))?;
        let envp = setup::c_strings(&env, "process.env").map_err(fail("process.setup"))?;
        Ok((program, argv, envp))
    })?;
    let start_container = HookKind::StartContainer.hooks(spec);
    // The runtime that waits for Ready is about to exit: stop dying with it.
    set_parent_death_signal(0);
    channel
        .send(&InitMessage::Ready {
            phases: std::mem::take(&mut phases.0),
        })
        .map_err(fail("init.ready"))?;
    let mut fifo = wait_for_start(config.exec_fifo).map_err(|f| exec_failure(&f.message))?;
    // startContainer hooks run after `start` opened the FIFO and before it
    // hears back, so a failing hook fails `start`.
    let mut start_phases = Phases::default();
    if let Err(failure) = start_phases.run_hooks(
        HookKind::StartContainer,
        &start_container,
        &hook_state(Status::Created),
    ) {
        let message = StartMessage::HookFailed {
            phases: start_phases.0,
            message: failure.message,
        };
        let _ = fifo.write_all(&message.to_line());
        exit(1);
    }
    let started = StartMessage::Started {
        phases: start_phases.0,
        exec_start_ns: now_ns(),
    };
    fifo.write_all(&started.to_line())
        .map_err(|e| exec_failure(&format!("writing the exec FIFO: {e}")))?;
    // The FIFO stays open (close-on-exec) through execve: `start` reads its
    // end of file as the moment of exec.
    if let Err(e) = prepare_exec(config) {
        let _ = fifo.write_all(&StartMessage::ExecFailed { message: e.clone() }.to_line());
        return Err(exec_failure(&e));
    }
    let err = nix::unistd::execve(&program, &argv, &envp).unwrap_err();
    let message = format!("exec {}: {err}", program.to_string_lossy());
    let _ = fifo.write_all(
        &StartMessage::ExecFailed {
            message: message.clone(),
        }
        .to_line(),
    );
    Err(exec_failure(&message))
}

/// Whether the init process must stop for the runtime (prestart and
/// createRuntime hooks run there) or learn its host pid for its own hooks.
fn needs_pid_from_runtime(spec: &Spec) -> bool {
    [
        HookKind::Prestart,
        HookKind::CreateRuntime,
        HookKind::CreateContainer,
        HookKind::StartContainer,
    ]
    .iter()
    .any(|kind| !kind.hooks(spec).is_empty())
}

/// After `start`, nobody listens on the sync channel: failures go to the
/// container's stderr, which the caller of `start` (or `run`) sees.
fn exec_failure(message: &str) -> Failure {
    eprintln!("lucid: {message}");
    exit(127)
}

/// Blocks until `start` opens the exec FIFO; returns it (close-on-exec) for
/// the [`StartMessage`]s.
fn wait_for_start(fifo: &OwnedFd) -> Result<std::fs::File, Failure> {
    // The FIFO is reopened through /proc (now the container's own procfs)
    // because it lives outside the new root.
    let path = format!("/proc/self/fd/{}", fifo.as_raw_fd());
    std::fs::OpenOptions::new()
        .write(true)
        .open(&path)
        .map_err(|e| Failure {
            phase: "init.wait",
            message: format!(
                "opening the exec FIFO through {path} (the container needs /proc): {e}"
            ),
        })
}

/// Last steps before exec: only the process's own descriptors stay open,
/// signals return to their defaults, the caller's mask comes back.
fn prepare_exec(config: &InitConfig) -> Result<(), String> {
    let first = 3 + config.preserve_fds.max(0) as u32;
    const CLOSE_RANGE_CLOEXEC: libc::c_uint = 1 << 2;
    // SAFETY: close_range with CLOEXEC only marks descriptors; none is freed.
    let ret = unsafe { libc::syscall(libc::SYS_close_range, first, u32::MAX, CLOSE_RANGE_CLOEXEC) };
    if ret != 0 {
        mark_cloexec_from(first as RawFd);
    }
    for signal in Signal::iterator() {
        if matches!(signal, Signal::SIGKILL | Signal::SIGSTOP) {
            continue;
        }
        // SAFETY: restoring the default disposition installs no handler code.
        let _ = unsafe { nix::sys::signal::signal(signal, SigHandler::SigDfl) };
    }
    config
        .sigmask
        .thread_set_mask()
        .map_err(|e| format!("restoring the signal mask: {e}"))
}

/// close_range fallback for kernels before 5.11.
fn mark_cloexec_from(first: RawFd) {
    let Ok(entries) = std::fs::read_dir("/proc/self/fd") else {
        return;
    };
    let fds: Vec<RawFd> = entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse().ok())
        .filter(|fd| *fd >= first)
        .collect();
    for fd in fds {
        // SAFETY: F_SETFD on a possibly-closed descriptor at worst fails with EBADF.
        unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) };
    }
}
