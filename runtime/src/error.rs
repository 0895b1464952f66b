//! The library's error type: one variant per concern, each carrying that
//! concern's own error.

use crate::{cgroups, ebpf, hooks, lsm, process, rootfs, seccomp, spec, state, terminal};

/// Everything that can go wrong in a lifecycle operation.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Reading or checking `config.json`.
    #[error(transparent)]
    Spec(#[from] spec::SpecError),
    /// The container's state directory.
    #[error(transparent)]
    State(#[from] state::StateError),
    /// Creating, filling or removing the container's cgroups.
    #[error(transparent)]
    Cgroup(#[from] cgroups::CgroupError),
    /// Attaching or reading the eBPF programs.
    #[error(transparent)]
    Ebpf(#[from] ebpf::EbpfError),
    /// Setting up the root filesystem.
    #[error(transparent)]
    Rootfs(#[from] rootfs::RootfsError),
    /// Spawning or talking to the container's processes.
    #[error(transparent)]
    Process(#[from] process::ProcessError),
    /// A lifecycle hook failed.
    #[error(transparent)]
    Hook(#[from] hooks::HookError),
    /// The seccomp profile, or its listener.
    #[error(transparent)]
    Seccomp(#[from] seccomp::SeccompError),
    /// An AppArmor profile or SELinux label.
    #[error(transparent)]
    Lsm(#[from] lsm::LsmError),
    /// A terminal, or a socket descriptors are sent over.
    #[error(transparent)]
    Terminal(#[from] terminal::TerminalError),
    /// The process `exec` was asked to run.
    #[error(transparent)]
    Exec(#[from] crate::container::exec::ExecError),
    /// The operation does not apply to the container in its current state.
    #[error("container {id} is {status}: {what}")]
    WrongStatus {
        /// The container.
        id: String,
        /// Its status now.
        status: crate::state::Status,
        /// What cannot be done, and what to do instead.
        what: String,
    },
    /// A flag or argument the runtime cannot honour.
    #[error("{0}")]
    Unsupported(String),
    /// An operating-system call failed outside any one concern.
    #[error("{context}: {cause}")]
    Os {
        /// What was being done.
        context: String,
        /// The failure.
        cause: std::io::Error,
    },
}

/// The library's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// An OS error with the step that failed.
    pub fn os(context: impl Into<String>, cause: impl Into<std::io::Error>) -> Self {
        Error::Os {
            context: context.into(),
            cause: cause.into(),
        }
    }
}
