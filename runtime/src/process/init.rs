//! The code that runs in the container's processes between clone and exec:
//! the init process `create` makes, and a process `exec` starts in a running
//! container.
//!
//! Each records its phases' start and end (CLOCK_REALTIME) and sends them
//! with `Ready`; it never exports anything itself. Errors go back over the
//! sync channel as `Failed` naming the phase, then the process exits.
//!
//! The seccomp filter is the last set-up step (`seccomp.load`); what follows
//! it allocates nothing and lives in `after_seccomp.rs`, whose doc states the
//! invariant: messages serialized into memory set aside before the filter,
//! failures formatted on the stack. startContainer hooks are the exception:
//! they run between `start` and exec, under the filter, as with runc.

use std::convert::Infallible;
use std::ffi::CString;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::path::Path;

use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::sys::signal::SigSet;
use oci_spec::runtime::{LinuxNamespaceType, Process, Spec};

use super::after_seccomp::{
    self, errno, exit, fatal, prepare_exec, wait_for_start, write_all, MessageBuffer,
};
use super::channel::{
    ChildEnd, InitMessage, PhaseTiming, RuntimeMessage, StartMessage, MAX_MESSAGE,
};
use super::setup::{self, CapabilitySets, ExecArgs};
use crate::hooks::{self, HookKind, HookState};
use crate::namespaces::{self, NamespacePlan, OpenedJoins};
use crate::procfs::now_ns;
use crate::rootfs::{self, CgroupMountSource, Root, RootfsConfig};
use crate::seccomp::Program;
use crate::state::Status;
use crate::terminal::{self, WindowSize};

/// What only the container's init process needs: its root filesystem and
/// the exec FIFO it waits on.
#[derive(Debug)]
pub struct ContainerSetup<'a> {
    /// The root filesystem on the host, absolute.
    pub rootfs: &'a Path,
    /// The bundle, absolute.
    pub bundle: &'a Path,
    /// The container's cgroups, for a `cgroup` mount.
    pub cgroups: &'a [CgroupMountSource],
    /// An O_PATH descriptor of the exec FIFO.
    pub exec_fifo: &'a OwnedFd,
    /// `--no-pivot`.
    pub no_pivot: bool,
}

/// What the child needs, all prepared by the runtime before cloning so that
/// the child fails early and allocates little.
#[derive(Debug)]
pub struct InitConfig<'a> {
    /// The container ID.
    pub id: &'a str,
    /// The container's configuration.
    pub spec: &'a Spec,
    /// The process to set up and run: the spec's, or the one `exec` runs.
    pub process: &'a Process,
    /// Which namespaces are new and which joined (for `exec`, all joined).
    pub plan: &'a NamespacePlan,
    /// Descriptors of the namespaces to join.
    pub joins: &'a OpenedJoins,
    /// `Some` for the container's init process, `None` for `exec`.
    pub container: Option<ContainerSetup<'a>>,
    /// The compiled `linux.seccomp`.
    pub seccomp: Option<&'a Program>,
    /// A connected socket to send the pty master to (`process.terminal`).
    pub console_socket: Option<RawFd>,
    /// `--no-new-keyring`.
    pub no_new_keyring: bool,
    /// Descriptors 3..3+N pass to the process (`--preserve-fds`, plus
    /// socket-activation descriptors).
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

fn thread_cpu_ns() -> u64 {
    crate::procfs::cpu_time_ns(libc::CLOCK_THREAD_CPUTIME_ID)
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

    /// Runs a phase whose span carries `attributes`. Its record is made
    /// before `f` runs, so a phase after which nothing may allocate
    /// (`seccomp.load`) can be recorded too.
    fn run_with<T>(
        &mut self,
        name: &'static str,
        attributes: Vec<(String, String)>,
        f: impl FnOnce() -> Result<T, Failure>,
    ) -> Result<T, Failure> {
        let name = name.to_owned();
        self.0.reserve(1);
        let start_ns = now_ns();
        let cpu = thread_cpu_ns();
        let result = f();
        self.0.push(PhaseTiming {
            name,
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
    /// Prepares namespaces and forks the init process (or the `exec`
    /// process) inside them.
    Intermediate,
    /// Forked by the intermediate process, inside the namespaces.
    ForkedInit,
    /// A process `exec` starts, forked by the intermediate process inside
    /// the running container's namespaces.
    Exec,
}

/// The child's entry point after clone: never returns.
pub fn child_main(config: &InitConfig, channel: &ChildEnd, role: Role) -> ! {
    // Until exec, /proc/PID/exe is the lucid binary: a process of the
    // container must not be able to open it (or ptrace this one). exec makes
    // the process dumpable again.
    set_dumpable(false);
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
        Role::Exec => exec_process(config, channel, &mut phases).map(|never| match never {}),
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

fn set_name(name: &str) {
    let cname = CString::new(name).unwrap_or_default();
    // SAFETY: PR_SET_NAME reads a NUL-terminated string of at most 16 bytes.
    unsafe { libc::prctl(libc::PR_SET_NAME, cname.as_ptr(), 0, 0, 0) };
}

fn set_dumpable(dumpable: bool) {
    // SAFETY: prctl with integer arguments has no memory effects.
    unsafe { libc::prctl(libc::PR_SET_DUMPABLE, dumpable as libc::c_ulong, 0, 0, 0) };
}

fn set_parent_death_signal(signal: i32) {
    // SAFETY: prctl with integer arguments has no memory effects.
    unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, signal, 0, 0, 0) };
}

/// Starts a session of its own, as runc's processes do: the container's
/// process is not in the caller's session, and a pty can become its
/// controlling terminal.
fn new_session(phase: &'static str) -> Result<(), Failure> {
    nix::unistd::setsid()
        .map(|_| ())
        .map_err(|e| fail(phase)(format!("starting a new session: {e}")))
}

fn wait_for(channel: &ChildEnd, phase: &'static str) -> Result<RuntimeMessage, Failure> {
    match channel.recv().map_err(fail(phase))? {
        Some(message) => Ok(message),
        None => Err(Failure {
            phase,
            message: "the runtime went away".into(),
        }),
    }
}

/// Joins and creates namespaces, then forks the init (or exec) process
/// inside them, as a child of the runtime (CLONE_PARENT).
fn intermediate(config: &InitConfig, channel: &ChildEnd) -> Result<(), Failure> {
    set_name("lucid:stage1");
    set_parent_death_signal(libc::SIGKILL);
    let plan = config.plan;
    config.joins.enter(None).map_err(fail("namespaces.join"))?;
    let new_user = plan.is_new(LinuxNamespaceType::User);
    if new_user {
        namespaces::unshare(&[LinuxNamespaceType::User]).map_err(fail("namespaces.join"))?;
        // A runtime without root can write our id maps only while /proc/PID
        // is ours, which it is not while we are undumpable (runc does this too).
        set_dumpable(true);
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
    if new_user {
        set_dumpable(false);
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
    let role = if config.container.is_some() {
        Role::ForkedInit
    } else {
        Role::Exec
    };
    // The new process shares our channel: it says nothing until we have
    // told the runtime its pid, or its first message (an exec'd process's
    // `SeccompNotify`, quick to come) could overtake `InitPid`. It waits for
    // the end of this pipe, which closes when we have sent it (or died).
    let (gate, open_gate) = nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(fail("init.spawn"))?;
    // The new process is the runtime's child, not ours: the runtime waits
    // for it, and it dies with the runtime until it is ready.
    // SAFETY: this process is single-threaded (a clone of the runtime's only thread).
    match unsafe { super::clone::clone_process(libc::CLONE_PARENT as u64, None) }
        .map_err(fail("init.spawn"))?
    {
        super::clone::Cloned::Child => {
            drop(open_gate);
            wait_for_eof(&gate);
            drop(gate);
            child_main(config, channel, role)
        }
        super::clone::Cloned::Parent { pid, .. } => {
            let sent = channel
                .send(&InitMessage::InitPid { pid: pid.as_raw() })
                .map_err(fail("init.spawn"));
            drop(open_gate);
            sent
        }
    }
}

/// Blocks until every write end of the pipe `read_end` is closed.
fn wait_for_eof(read_end: &OwnedFd) {
    let mut byte = [0u8; 1];
    loop {
        match nix::unistd::read(read_end, &mut byte) {
            Err(Errno::EINTR) => continue,
            Ok(n) if n > 0 => continue,
            _ => return,
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

/// Joins a new session keyring (unless `--no-new-keyring`), labelled with
/// the process's SELinux label where it has one.
fn join_keyring(config: &InitConfig) -> Result<(), String> {
    if config.no_new_keyring {
        return Ok(());
    }
    crate::lsm::apply_key_label(config.process).map_err(|e| e.to_string())?;
    setup::join_session_keyring(config.id)
}

/// The init process: set-up, then wait on the exec FIFO, then exec.
fn init(
    config: &InitConfig,
    channel: &ChildEnd,
    role: Role,
    phases: &mut Phases,
) -> Result<Infallible, Failure> {
    set_name("lucid:init");
    // Die with the runtime (our parent, also when an intermediate forked us)
    // while set-up runs.
    set_parent_death_signal(libc::SIGKILL);
    new_session("namespaces.join")?;
    // Device nodes and mount points get exactly the modes the spec gives.
    nix::sys::stat::umask(nix::sys::stat::Mode::empty());
    let spec = config.spec;
    let process = config.process;
    let container = config.container.as_ref().ok_or(Failure {
        phase: "init.spawn",
        message: "the init process has no container to set up".into(),
    })?;
    phases.run("namespaces.join", || {
        // Forked by an intermediate, the process was born in its namespaces.
        if role == Role::DirectInit {
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
        join_keyring(config).map_err(fail("namespaces.join"))
    })?;
    let rootfs_config = RootfsConfig {
        spec,
        rootfs: container.rootfs,
        bundle: container.bundle,
        user_ns: config.plan.has_user(),
        cgroup_ns: config.plan.is_new(LinuxNamespaceType::Cgroup)
            || config.plan.joins(LinuxNamespaceType::Cgroup),
        cgroups: container.cgroups,
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
    let hook_state =
        |status| HookState::of_spec(spec, config.id, container.bundle, status, host_pid);
    phases.run_hooks(
        HookKind::CreateContainer,
        &HookKind::CreateContainer.hooks(spec),
        &hook_state(Status::Creating),
    )?;
    if let Some(socket) = config.console_socket {
        phases.run("console", || {
            setup_console(Some(&root), socket, process).map_err(fail("console"))
        })?;
    }
    phases.run("rootfs.pivot", || {
        if container.no_pivot {
            rootfs::move_root(container.rootfs).map_err(fail("rootfs.pivot"))?;
        } else {
            rootfs::pivot(container.rootfs).map_err(fail("rootfs.pivot"))?;
        }
        rootfs::finish(&rootfs_config, root.dev_readonly()).map_err(fail("rootfs.pivot"))
    })?;
    drop(root);
    let caps = CapabilitySets::from_process(process);
    let keep = caps.kept_for_seccomp(
        config.seccomp.is_some(),
        process.no_new_privileges() == Some(true),
    );
    let exec = phases.run("process.setup", || {
        setup_process(config, &caps, keep).map_err(fail("process.setup"))
    })?;
    let start_container = HookKind::StartContainer.hooks(spec);
    let fifo_path = CString::new(format!("/proc/self/fd/{}", container.exec_fifo.as_raw_fd()))
        .map_err(fail("init.wait"))?;
    let mut buffer = MessageBuffer::new(MAX_MESSAGE);
    load_seccomp(config, channel, &caps, keep, phases)?;
    // The runtime that waits for Ready is about to exit: stop dying with it.
    set_parent_death_signal(0);
    let ready = InitMessage::Ready {
        phases: std::mem::take(&mut phases.0),
    };
    after_seccomp::send(channel, &mut buffer, &ready, "init.ready");
    let fifo = wait_for_start(&fifo_path);
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
        write_all(fifo.as_raw_fd(), &message.to_line());
        exit(1);
    }
    let started = StartMessage::Started {
        phases: start_phases.0,
        exec_start_ns: now_ns(),
    };
    let line = match buffer.encode(&started, b"\n") {
        Ok(line) => line,
        Err(too_large) => {
            after_seccomp::fatal_too_large(channel, "init.wait", too_large, Some(fifo.as_raw_fd()))
        }
    };
    if let Err(e) = nix::unistd::write(&fifo, line) {
        fatal(channel, "init.wait", "writing the exec FIFO", e, None, None);
    }
    // The FIFO stays open (close-on-exec) through execve: `start` reads its
    // end of file as the moment of exec.
    prepare_exec(config.preserve_fds, &config.sigmask);
    let err = exec.exec();
    let program = Some(exec.program().to_bytes());
    fatal(
        channel,
        "init.exec",
        "exec",
        err,
        program,
        Some(fifo.as_raw_fd()),
    )
}

/// A process `exec` starts: its own set-up, then exec at once.
fn exec_process(
    config: &InitConfig,
    channel: &ChildEnd,
    phases: &mut Phases,
) -> Result<Infallible, Failure> {
    set_name("lucid:exec");
    set_parent_death_signal(libc::SIGKILL);
    new_session("process.setup")?;
    let process = config.process;
    if let Some(socket) = config.console_socket {
        phases.run("console", || {
            setup_console(None, socket, process).map_err(fail("console"))
        })?;
    }
    let caps = CapabilitySets::from_process(process);
    let keep = caps.kept_for_seccomp(
        config.seccomp.is_some(),
        process.no_new_privileges() == Some(true),
    );
    let exec = phases.run("process.setup", || {
        join_keyring(config).map_err(fail("process.setup"))?;
        setup_process(config, &caps, keep).map_err(fail("process.setup"))
    })?;
    let mut buffer = MessageBuffer::new(MAX_MESSAGE);
    load_seccomp(config, channel, &caps, keep, phases)?;
    // A detached exec outlives `lucid exec`.
    set_parent_death_signal(0);
    let ready = InitMessage::Ready {
        phases: std::mem::take(&mut phases.0),
    };
    after_seccomp::send(channel, &mut buffer, &ready, "init.ready");
    prepare_exec(config.preserve_fds, &config.sigmask);
    let err = exec.exec();
    // The runtime waits for the channel to close at exec, or for this.
    let program = Some(exec.program().to_bytes());
    fatal(channel, "init.exec", "exec", err, program, None)
}

/// The `process.setup` step: limits, user, capabilities, working directory,
/// no_new_privs, umask, the LSM labels for exec, and the program to exec.
fn setup_process(
    config: &InitConfig,
    caps: &CapabilitySets,
    keep: u64,
) -> Result<ExecArgs, String> {
    let process = config.process;
    setup::apply_rlimits(process)?;
    if let Some(container_process) = config.spec.process() {
        // oom_score_adj is the container's, also for `exec` (as runc).
        setup::apply_oom_score_adj(container_process)?;
    }
    if config.console_socket.is_some() {
        setup::give_terminal_to_user(process)?;
    }
    crate::lsm::apply_exec_labels(process).map_err(|e| e.to_string())?;
    setup::apply_identity(process, caps, keep)?;
    setup::apply_final(process)?;
    ExecArgs::new(process)
}

/// Creates the process's pty in the container's devpts, binds its slave on
/// /dev/console (for the init process), hands the master to the console
/// socket and makes the slave the process's stdio and controlling terminal.
fn setup_console(root: Option<&Root>, socket: RawFd, process: &Process) -> Result<(), String> {
    let ptmx_path = Path::new("/dev/ptmx");
    let flags = OFlag::O_RDWR | OFlag::O_NOCTTY | OFlag::O_CLOEXEC;
    let ptmx = match root {
        Some(root) => rootfs::open_file_in_root(root.fd(), ptmx_path, flags),
        None => nix::fcntl::open(ptmx_path, flags, nix::sys::stat::Mode::empty()),
    }
    .map_err(|e| format!("opening the container's /dev/ptmx (is /dev/pts mounted?): {e}"))?;
    let size = process
        .console_size()
        .filter(|b| b.height() > 0 && b.width() > 0)
        .map(|b| WindowSize {
            rows: b.height().min(u16::MAX as u64) as u16,
            cols: b.width().min(u16::MAX as u64) as u16,
        });
    let pty = terminal::open_pty(ptmx, size).map_err(|e| e.to_string())?;
    if let Some(root) = root {
        let console = Path::new("/dev/console");
        let target = rootfs::open_in_root(root.fd(), console, rootfs::Create::File)
            .map_err(|e| format!("making /dev/console: {e}"))?;
        nix::mount::mount(
            Some(&rootfs::proc_fd_path(&pty.slave)),
            &rootfs::proc_fd_path(&target),
            None::<&str>,
            nix::mount::MsFlags::MS_BIND,
            None::<&str>,
        )
        .map_err(|e| format!("binding the pty on /dev/console: {e}"))?;
    }
    terminal::send_fd(socket, b"/dev/ptmx", pty.master.as_raw_fd())
        .map_err(|e| format!("sending the pty master to the console socket: {e}"))?;
    // SAFETY: the socket is the runtime's connection, ours to close; nothing
    // else in this process uses it.
    unsafe { libc::close(socket) };
    terminal::attach_stdio(&pty.slave).map_err(|e| e.to_string())
}

/// The `seccomp.load` step: loads the filter, hands its notify fd to the
/// runtime and drops what was kept to load it. Nothing here allocates once
/// the filter is in place.
fn load_seccomp(
    config: &InitConfig,
    channel: &ChildEnd,
    caps: &CapabilitySets,
    keep: u64,
    phases: &mut Phases,
) -> Result<(), Failure> {
    let Some(program) = config.seccomp else {
        return Ok(());
    };
    let notify_message =
        serde_json::to_vec(&InitMessage::SeccompNotify).map_err(fail("seccomp.load"))?;
    phases.run("seccomp.load", || {
        let notify = program.load().map_err(|e| Failure {
            phase: "seccomp.load",
            message: format!(
                "loading the filter: {e}{}",
                if e == Errno::EACCES {
                    ": without noNewPrivileges loading it needs CAP_SYS_ADMIN"
                } else {
                    ""
                }
            ),
        })?;
        // The filter is active: from here on, nothing allocates.
        if let Some(fd) = notify {
            if let Err(e) = channel.send_bytes(&notify_message, Some(fd.as_raw_fd())) {
                fatal(
                    channel,
                    "seccomp.load",
                    "handing over the notify fd",
                    errno(&e),
                    None,
                    None,
                );
            }
        }
        if keep != 0 {
            if let Err(e) = caps.finish() {
                fatal(
                    channel,
                    "seccomp.load",
                    "dropping CAP_SYS_ADMIN",
                    errno(&e),
                    None,
                    None,
                );
            }
        }
        Ok(())
    })
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
