//! The container's processes: the init process (and, when namespaces need
//! it, an intermediate process that forks it), the typed sync channel they
//! share with the runtime, and the set-up of credentials and limits.
//!
//! Processes are named with prctl so `ps` shows what each is:
//! `lucid:stage1` (intermediate), `lucid:init` and `lucid:exec` (until they
//! exec).

mod after_seccomp;
pub mod channel;
pub mod clone;
pub mod init;
pub mod setup;
pub mod spawn;

pub use channel::{
    ChannelError, ChildEnd, InitMessage, InitPhase, InitSequence, PhaseTiming, RuntimeEnd,
    RuntimeMessage, StartMessage,
};
pub use spawn::{spawn_exec, spawn_init, SpawnRequest, Spawned};

/// What can go wrong creating or reaching the container's processes.
#[derive(Debug, thiserror::Error)]
pub enum ProcessError {
    /// clone(2) failed.
    #[error("cloning the init process: {0}")]
    Clone(nix::errno::Errno),
    /// The sync channel failed.
    #[error(transparent)]
    Channel(#[from] ChannelError),
    /// The init process reported a failure.
    #[error("init process failed in {phase}: {message}")]
    InitFailed {
        /// The phase (`rootfs.mount`, `process.setup`, …).
        phase: String,
        /// What went wrong.
        message: String,
    },
    /// A process `exec` started reported a failure.
    #[error("the process failed in {phase}: {message}")]
    ExecFailed {
        /// The phase (`process.setup`, `init.exec`, …).
        phase: String,
        /// What went wrong.
        message: String,
    },
    /// The init process died without saying why.
    #[error("init process exited during set-up ({0})")]
    InitDied(String),
    /// Writing the user namespace's id maps failed.
    #[error("writing {path}: {cause}")]
    IdMap {
        /// The map file.
        path: std::path::PathBuf,
        /// The failure.
        cause: std::io::Error,
    },
    /// newuidmap or newgidmap failed.
    #[error("{tool}: {message}")]
    IdMapTool {
        /// The helper.
        tool: String,
        /// What went wrong, and what to do.
        message: String,
    },
    /// The seccomp notify fd could not be handed to the listener.
    #[error(transparent)]
    Seccomp(#[from] crate::seccomp::SeccompError),
    /// A prestart or createRuntime hook failed.
    #[error(transparent)]
    RuntimeHook(#[from] crate::hooks::HookError),
    /// The cgroups could not take the process.
    #[error(transparent)]
    Cgroup(#[from] crate::cgroups::CgroupError),
}
