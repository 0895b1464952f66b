//! `lucid create`: load and check the spec, compile its seccomp profile,
//! make the state directory and the cgroups, spawn the init process and take
//! it through set-up; return once it blocks on the exec FIFO.

use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};

use nix::sys::signal::SigSet;
use oci_spec::runtime::{LinuxNamespaceType, Spec};

use crate::cgroups::{Cgroup, CgroupError};
use crate::hooks::{self, HookKind, HookState};
use crate::namespaces::{self, NamespacePlan};
use crate::process::init::{ContainerSetup, InitConfig};
use crate::process::{spawn_init, PhaseTiming, ProcessError, SpawnRequest};
use crate::seccomp::Program;
use crate::state::{ContainerState, StateDir, Status};
use crate::telemetry::{self, step};
use crate::{spec, terminal, Error, Result};
use tracing::info_span;

/// Settings of `create` (and of the create half of `run`).
#[derive(Debug, Clone, Default)]
pub struct CreateOptions {
    /// The container ID.
    pub id: String,
    /// The bundle directory.
    pub bundle: PathBuf,
    /// Where to write the init pid.
    pub pid_file: Option<PathBuf>,
    /// Use MS_MOVE and chroot instead of pivot_root.
    pub no_pivot: bool,
    /// Do not give the container a new session keyring.
    pub no_new_keyring: bool,
    /// Pass descriptors 3..3+N to the container's process.
    pub preserve_fds: i32,
    /// Descriptors 3..3+N the runtime was socket-activated with (LISTEN_FDS
    /// for this process): passed first, announced to the container's process
    /// as LISTEN_FDS=N and LISTEN_PID=1, as runc does.
    pub listen_fds: i32,
    /// The unix socket to send the pty master to (`process.terminal`).
    pub console_socket: Option<PathBuf>,
    /// The unix socket to send a pidfd of the init process to.
    pub pidfd_socket: Option<PathBuf>,
}

/// A container `create` made.
#[derive(Debug)]
pub struct Created {
    /// The init pid.
    pub pid: i32,
    /// A pidfd for it, where the kernel gives one.
    pub pidfd: Option<OwnedFd>,
    /// Set-up phases measured inside the init process.
    pub phases: Vec<PhaseTiming>,
    /// For a foreground `run` of a terminal container: the socket the pty
    /// master arrives on.
    pub console: Option<OwnedFd>,
}

/// Who receives a terminal container's pty master.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Attach {
    /// `create` and `run --detach`: the caller, through `--console-socket`.
    Detached,
    /// A foreground `run`: lucid itself, which relays the pty to the
    /// caller's terminal, whose size the pty gets from the start.
    Foreground(Option<terminal::WindowSize>),
}

/// runc's rules for terminals and console sockets; returns the console
/// socket to give the init process and, in the foreground, the end lucid
/// keeps.
fn console_sockets(
    terminal: bool,
    socket: Option<&Path>,
    attach: Attach,
) -> Result<(Option<OwnedFd>, Option<OwnedFd>)> {
    match (attach, terminal, socket) {
        (Attach::Foreground(_), _, Some(_)) => Err(Error::Unsupported(
            "--console-socket: a foreground run relays the terminal itself: use --detach to hand the pty to a console socket"
                .into(),
        )),
        (Attach::Foreground(_), true, None) => {
            let (ours, theirs) = std::os::unix::net::UnixStream::pair()
                .map_err(|e| Error::os("making the console socket pair", e))?;
            Ok((Some(OwnedFd::from(theirs)), Some(OwnedFd::from(ours))))
        }
        (Attach::Detached, true, None) => Err(Error::Unsupported(
            "config.json: process.terminal: a detached container's terminal goes to a console socket: pass --console-socket, or set process.terminal to false"
                .into(),
        )),
        (Attach::Detached, false, Some(_)) => Err(Error::Unsupported(
            "--console-socket: config.json does not set process.terminal, so there is no pty to send"
                .into(),
        )),
        (Attach::Detached, true, Some(path)) => {
            Ok((Some(terminal::connect("--console-socket", path)?), None))
        }
        (_, false, None) => Ok((None, None)),
    }
}

/// Checks that descriptors 3..3+count are open, so that none of the
/// runtime's own can take a missing one's number and leak to the container.
pub(crate) fn check_preserved_fds(count: i32) -> Result<()> {
    for fd in 3..3 + count.max(0) {
        // SAFETY: F_GETFD on any number has no memory effects.
        if unsafe { libc::fcntl(fd, libc::F_GETFD) } < 0 {
            return Err(Error::Unsupported(format!(
                "--preserve-fds: descriptor {fd} is not open: pass only descriptors lucid inherits"
            )));
        }
    }
    Ok(())
}

/// The first `linux.resources` limit (device rules aside, which runc too
/// leaves unenforced without a cgroup) that needs a cgroup of the
/// container's own.
fn undelegated_limits(spec: &Spec) -> Option<&'static str> {
    let r = spec.linux().as_ref()?.resources().as_ref()?;
    [
        ("linux.resources.memory", r.memory().is_some()),
        ("linux.resources.cpu", r.cpu().is_some()),
        ("linux.resources.pids", r.pids().is_some()),
        ("linux.resources.blockIO", r.block_io().is_some()),
        (
            "linux.resources.hugepageLimits",
            r.hugepage_limits().as_ref().is_some_and(|h| !h.is_empty()),
        ),
        ("linux.resources.network", r.network().is_some()),
        (
            "linux.resources.rdma",
            r.rdma().as_ref().is_some_and(|m| !m.is_empty()),
        ),
        (
            "linux.resources.unified",
            r.unified().as_ref().is_some_and(|m| !m.is_empty()),
        ),
    ]
    .into_iter()
    .find_map(|(field, set)| set.then_some(field))
}

/// Undoes a half-made container unless disarmed: kills its processes, runs
/// its poststop hooks, removes its cgroups and state directory.
struct Cleanup<'a> {
    dir: Option<StateDir>,
    cgroup: Option<Cgroup>,
    ebpf: Option<crate::ebpf::Registration>,
    spec: &'a Spec,
    pid: Option<i32>,
    bundle: PathBuf,
}

impl Cleanup<'_> {
    fn disarm(mut self) -> StateDir {
        self.cgroup = None;
        self.ebpf = None;
        self.pid = None;
        self.dir
            .take()
            .expect("the state directory is set until disarmed")
    }
}

impl Drop for Cleanup<'_> {
    fn drop(&mut self) {
        let Some(dir) = self.dir.take() else {
            return;
        };
        if let Some(pid) = self.pid {
            // SAFETY: kill(2) has no memory effects.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
        if let Some(cgroup) = &self.cgroup {
            let _ = cgroup.signal_all(libc::SIGKILL);
            if let Err(e) = cgroup.remove() {
                log::warn!("removing the cgroups of {}: {e}", dir.id());
            }
        }
        if let Some(registration) = &self.ebpf {
            crate::ebpf::detach(registration);
        }
        let id = dir.id().to_owned();
        if let Err(e) = dir.remove() {
            log::warn!("removing the state of {id}: {e}");
        }
        if self.pid.is_some() {
            // The runtime spec: a container that fails after its process
            // existed goes on to the delete step, poststop hooks included.
            let state = HookState::of_spec(self.spec, &id, &self.bundle, Status::Stopped, None);
            if let Err(e) = hooks::run_all(
                HookKind::Poststop,
                &HookKind::Poststop.hooks(self.spec),
                &state,
            ) {
                log::warn!("{e}");
            }
        }
    }
}

fn absolute(path: &Path) -> Result<PathBuf> {
    std::path::absolute(path).map_err(|e| Error::os(format!("bundle {}", path.display()), e))
}

/// Every check `create` makes of a configuration before it changes anything
/// on the host: the spec's own rules, a new mount namespace, the LSM labels;
/// returns the checked rootfs and the namespaces to make or join.
pub fn check_spec(spec: &Spec, bundle: &Path) -> Result<(spec::Validated, NamespacePlan)> {
    let checked = spec::validate(spec, bundle)?;
    if !spec::has_new_namespace(spec, LinuxNamespaceType::Mount) {
        return Err(spec::SpecError::Invalid {
            field: "linux.namespaces".into(),
            reason: "lucid needs a new mount namespace (add {\"type\": \"mount\"})".into(),
        }
        .into());
    }
    crate::lsm::check_spec(spec)?;
    Ok((checked, NamespacePlan::from_spec(spec)))
}

/// Creates the container; `sigmask` is the mask its process gets at exec.
pub fn create(root: &Path, options: &CreateOptions, sigmask: SigSet) -> Result<Created> {
    create_attached(root, options, sigmask, Attach::Detached)
}

/// Creates the container, its terminal going where `attach` says.
pub(crate) fn create_attached(
    root: &Path,
    options: &CreateOptions,
    sigmask: SigSet,
    attach: Attach,
) -> Result<Created> {
    crate::state::validate_id(&options.id)?;
    let preserve_fds = options.listen_fds + options.preserve_fds;
    check_preserved_fds(preserve_fds)?;
    crate::cgroups::check_placement_env()?;
    let bundle = absolute(&options.bundle)?;
    let spec = step(info_span!("spec.load"), || spec::load(&bundle))?;
    let (checked, plan, joins) = step(info_span!("spec.validate"), || -> Result<_> {
        let (checked, plan) = check_spec(&spec, &bundle)?;
        let joins = namespaces::open_joins(&plan)
            .map_err(|e| Error::os("opening a namespace to join", e))?;
        Ok((checked, plan, joins))
    })?;
    let seccomp = step(info_span!("seccomp.compile"), || {
        spec.linux()
            .as_ref()
            .and_then(|l| l.seccomp().as_ref())
            .map(Program::compile)
            .transpose()
    })?;
    let annotations = spec.annotations().clone().unwrap_or_default();
    // With the opt-in annotation, the container's process joins the trace.
    let injected = telemetry::traceparent_for(&annotations).map(|traceparent| {
        let tracestate = telemetry::container_trace()
            .map(|t| t.tracestate)
            .unwrap_or_default();
        with_trace_env(&spec, &traceparent, &tracestate)
    });
    let init_spec = injected.as_ref().unwrap_or(&spec);
    // validate() made sure there is a process.
    let mut process = init_spec.process().clone().unwrap_or_default();
    if options.listen_fds > 0 {
        let env = process.env_mut().get_or_insert_with(Vec::new);
        env.push(format!("LISTEN_FDS={}", options.listen_fds));
        env.push("LISTEN_PID=1".to_owned());
    }
    let (console_socket, console_ours) = console_sockets(
        process.terminal() == Some(true),
        options.console_socket.as_deref(),
        attach,
    )?;
    if let (Attach::Foreground(Some(size)), Some(_)) = (attach, &console_ours) {
        process.set_console_size(Some(terminal::console_box(size)));
    }
    let pidfd_socket = options
        .pidfd_socket
        .as_deref()
        .map(|p| terminal::connect("--pidfd-socket", p))
        .transpose()?;
    let mut cleanup = Cleanup {
        dir: None,
        cgroup: None,
        ebpf: None,
        spec: &spec,
        pid: None,
        bundle: bundle.clone(),
    };
    let mut state = ContainerState {
        oci_version: spec.version().clone(),
        id: options.id.clone(),
        pid: 0,
        status: Status::Creating,
        bundle: bundle.clone(),
        rootfs: checked.rootfs.clone(),
        created: humantime::format_rfc3339_nanos(std::time::SystemTime::now()).to_string(),
        annotations: annotations.clone(),
        init_start_time: 0,
        cgroup: Default::default(),
        ebpf: None,
        own_pid_namespace: plan.is_new(LinuxNamespaceType::Pid),
        no_new_keyring: options.no_new_keyring,
        phases: Vec::new(),
        trace: telemetry::container_trace(),
        config: spec.clone(),
    };
    let mut cgroup = Cgroup::new(&spec, &options.id)?;
    // Record the paths before making anything, so a runtime killed from here
    // on leaves enough for `delete --force` to clean up.
    state.cgroup = cgroup.paths().clone();
    let fifo = step(info_span!("state.create"), || -> Result<OwnedFd> {
        cleanup.dir = Some(StateDir::create(root, &options.id)?);
        crate::failpoint::hit("create.state-dir");
        let dir = cleanup.dir.as_ref().expect("set just above");
        dir.write(&state)?;
        make_exec_fifo(dir, &spec)
    })?;
    crate::failpoint::hit("create.state-written");
    let dir = cleanup.dir.as_ref().expect("set by state.create");
    cleanup.cgroup = Some(cgroup.clone());
    let delegated = match step(info_span!("cgroup.create"), || cgroup.create(&spec)) {
        Ok(()) => true,
        // Without root and without a cgroup delegated to the caller, runc runs
        // the container in the caller's cgroup; so does lucid.
        Err(CgroupError::Io { path, cause })
            if !nix::unistd::geteuid().is_root()
                && matches!(
                    cause.kind(),
                    std::io::ErrorKind::PermissionDenied | std::io::ErrorKind::ReadOnlyFilesystem
                ) =>
        {
            undelegated_limits(&spec).map_or(Ok(()), |field| {
                Err(Error::Unsupported(format!(
                    "config.json: {field}: no cgroup is delegated to this user ({}: {cause}), so the limit cannot be set: delegate a cgroup or remove the limit",
                    path.display()
                )))
            })?;
            log::debug!(
                "no cgroup delegated to this user ({}: {cause}): {} runs in the caller's cgroup, its device rules unenforced",
                path.display(),
                options.id
            );
            cgroup = Cgroup::from_paths(&Default::default());
            cleanup.cgroup = Some(cgroup.clone());
            false
        }
        Err(e) => return Err(e.into()),
    };
    state.cgroup = cgroup.paths().clone();
    crate::failpoint::hit("create.cgroup");
    if delegated {
        // ebpf.attach: before any process exists, so the device filter (where
        // it is the only one) is in place before the container could open a device.
        let registration = step(info_span!("ebpf.attach"), || -> Result<_> {
            Ok(crate::ebpf::attach(&crate::ebpf::AttachRequest {
                state_root: root,
                cgroup_dir: cgroup.paths().unified.as_deref(),
                devices: cgroup
                    .device_filter_needed()
                    .then(|| crate::cgroups::devices::rules(&spec))
                    .transpose()?,
                syscall_latency: crate::ebpf::wants_latency(&state.annotations)?,
            })?)
        })?;
        cleanup.ebpf = registration.clone();
        state.ebpf = registration;
    }
    crate::failpoint::hit("create.ebpf");
    dir.write(&state)?;
    let cgroup_mounts = cgroup.mount_sources();
    let mut close_now = vec![dir.lock_fd()];
    close_now.extend(console_ours.as_ref().map(|fd| fd.as_raw_fd()));
    close_now.extend(pidfd_socket.as_ref().map(|fd| fd.as_raw_fd()));
    let init = InitConfig {
        id: &options.id,
        spec: init_spec,
        process: &process,
        plan: &plan,
        joins: &joins,
        container: Some(ContainerSetup {
            rootfs: &checked.rootfs,
            bundle: &bundle,
            cgroups: &cgroup_mounts,
            exec_fifo: &fifo,
            no_pivot: options.no_pivot,
        }),
        seccomp: seccomp.as_ref(),
        console_socket: console_socket.as_ref().map(|fd| fd.as_raw_fd()),
        no_new_keyring: options.no_new_keyring,
        preserve_fds,
        sigmask,
        close_now,
    };
    let mut spawned_pid = None;
    let mut runtime_hooks = |pid: i32| {
        let hook_state =
            HookState::of_spec(&spec, &options.id, &bundle, Status::Creating, Some(pid));
        hooks::run_all(
            HookKind::Prestart,
            &HookKind::Prestart.hooks(&spec),
            &hook_state,
        )?;
        hooks::run_all(
            HookKind::CreateRuntime,
            &HookKind::CreateRuntime.hooks(&spec),
            &hook_state,
        )
    };
    let mut on_pid = |pid: i32| {
        spawned_pid = Some(pid);
        telemetry::annotate("process.pid", i64::from(pid));
        state.pid = pid;
        state.init_start_time = crate::procfs::start_time(pid).unwrap_or_default();
        if let Err(e) = dir.write(&state) {
            log::warn!("recording the init pid of {}: {e}", options.id);
        }
    };
    let mut on_notify = |fd: OwnedFd, pid: i32| -> Result<(), ProcessError> {
        let Some(program) = &seccomp else {
            return Ok(());
        };
        let state = HookState::of_spec(&spec, &options.id, &bundle, Status::Creating, Some(pid));
        Ok(program.send_to_listener(&fd, pid, &state)?)
    };
    let result = step(info_span!("init.spawn"), || {
        spawn_init(SpawnRequest {
            init,
            cgroup: &cgroup,
            runtime_hooks: &mut runtime_hooks,
            on_pid: &mut on_pid,
            on_notify: &mut on_notify,
        })
    });
    drop(console_socket);
    cleanup.pid = spawned_pid;
    let spawned = result?;
    crate::failpoint::hit("create.ready");
    if let Some(socket) = &pidfd_socket {
        send_pidfd(socket, spawned.pidfd.as_ref(), "standard")?;
    }
    step(info_span!("state.write"), || -> Result<()> {
        state.pid = spawned.pid.as_raw();
        state.init_start_time = crate::procfs::start_time(state.pid).unwrap_or_default();
        state.status = Status::Created;
        state.phases = spawned.phases.clone();
        dir.write(&state)?;
        if let Some(pid_file) = &options.pid_file {
            write_pid_file(pid_file, state.pid)?;
        }
        Ok(())
    })?;
    cleanup.disarm();
    Ok(Created {
        pid: state.pid,
        pidfd: spawned.pidfd,
        phases: spawned.phases,
        console: console_ours,
    })
}

/// Sends a pidfd of the process over `--pidfd-socket`, with runc's payload
/// (`standard` for the init process, `setns` for `exec`).
pub(crate) fn send_pidfd(socket: &OwnedFd, pidfd: Option<&OwnedFd>, kind: &str) -> Result<()> {
    let pidfd = pidfd.ok_or_else(|| {
        Error::Unsupported(
            "--pidfd-socket: this kernel gives no pidfd (Linux 5.3 or later needed)".into(),
        )
    })?;
    terminal::send_fd(
        socket.as_fd().as_raw_fd(),
        kind.as_bytes(),
        pidfd.as_raw_fd(),
    )
    .map_err(|e| Error::os("sending the pidfd to --pidfd-socket", e))
}

/// Makes the exec FIFO the init process blocks on, and opens it (O_PATH) for
/// the init process to reopen. It belongs to the container's root, who opens
/// it for writing after switching users.
fn make_exec_fifo(dir: &StateDir, spec: &Spec) -> Result<OwnedFd> {
    Ok(dir.make_exec_fifo(container_root_ids(spec))?)
}

/// A copy of the spec whose process also gets `TRACEPARENT` (and
/// `TRACESTATE`), replacing any the bundle set.
fn with_trace_env(spec: &Spec, traceparent: &str, tracestate: &str) -> Spec {
    let mut spec = spec.clone();
    if let Some(process) = spec.process_mut() {
        let mut env: Vec<String> = process
            .env()
            .clone()
            .unwrap_or_default()
            .into_iter()
            .filter(|v| !v.starts_with("TRACEPARENT=") && !v.starts_with("TRACESTATE="))
            .collect();
        env.push(format!("TRACEPARENT={traceparent}"));
        if !tracestate.is_empty() {
            env.push(format!("TRACESTATE={tracestate}"));
        }
        process.set_env(Some(env));
    }
    spec
}

/// The host uid and gid that are root inside the container.
fn container_root_ids(spec: &Spec) -> (u32, u32) {
    let linux = spec.linux().as_ref();
    let host_id = |maps: Option<Vec<oci_spec::runtime::LinuxIdMapping>>| {
        maps.unwrap_or_default()
            .iter()
            .find(|m| m.container_id() == 0)
            .map_or(0, |m| m.host_id())
    };
    (
        host_id(linux.and_then(|l| l.uid_mappings().clone())),
        host_id(linux.and_then(|l| l.gid_mappings().clone())),
    )
}

/// Writes the pid atomically (readers such as containerd never see a partial file).
pub(crate) fn write_pid_file(path: &Path, pid: i32) -> Result<()> {
    let path = absolute(path)?;
    let dir = path.parent().unwrap_or(Path::new("/"));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.tmp"));
    std::fs::write(&tmp, pid.to_string())
        .and_then(|()| std::fs::rename(&tmp, &path))
        .map_err(|e| Error::os(format!("writing pid file {}", path.display()), e))
}
