//! The library's error, rolling up each module's.
use std::path::PathBuf;

use crate::{
    cgroup::CgroupError, devices::DeviceError, kernel_btf::BtfError, settings::SettingsError,
};

/// Why eBPF cannot be used on this host; the runtime says it once and runs containers without.
#[derive(Debug, thiserror::Error)]
pub enum Unavailable {
    /// bpf(2) or a BPF file system operation was refused.
    #[error("not permitted to use BPF ({0}); run as root (CAP_BPF, CAP_PERFMON, CAP_NET_ADMIN, CAP_SYS_ADMIN)")]
    NotPermitted(String),
    /// The kernel has no BTF.
    #[error(transparent)]
    NoBtf(#[from] BtfError),
    /// No BPF file system could be found or mounted.
    #[error("no BPF file system at {path} and mounting one failed: {detail}")]
    NoBpffs {
        /// Where one was looked for.
        path: PathBuf,
        /// Why mounting failed.
        detail: String,
    },
    /// The kernel refused to create the maps every feature needs.
    #[error(
        "the kernel refused {program}: {detail}; lucid's eBPF programs need Linux 5.10+ on x86_64"
    )]
    Rejected {
        /// The program.
        program: String,
        /// The kernel's reason, with the verifier log when there is one.
        detail: String,
    },
    /// The feature a call needs is off on this host.
    #[error("the eBPF {feature} feature is off on this host: {reason}")]
    Feature {
        /// The feature (`lucid_ebpf_common::feature::NAMES`).
        feature: &'static str,
        /// Why (each program's refusal, or the setting that switched it off).
        reason: String,
    },
}

/// Errors of `lucid-ebpf`.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// eBPF cannot be used here; see [`Error::is_unavailable`].
    #[error("eBPF unavailable: {0}")]
    Unavailable(#[from] Unavailable),
    /// A bad cgroup path.
    #[error(transparent)]
    Cgroup(#[from] CgroupError),
    /// Bad device rules.
    #[error(transparent)]
    Device(#[from] DeviceError),
    /// The host's settings file cannot be used.
    #[error("eBPF settings: {0}")]
    Settings(#[from] SettingsError),
    /// A file system operation on the pins failed.
    #[error("{action} {path}: {source}")]
    Pin {
        /// What was being done.
        action: &'static str,
        /// The pin or directory.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// A map operation failed.
    #[error("map {map}: {source}")]
    Map {
        /// The map's name.
        map: &'static str,
        /// The cause.
        source: aya::maps::MapError,
    },
    /// A program operation on pinned programs failed.
    #[error("program {program}: {detail}")]
    Program {
        /// The program.
        program: &'static str,
        /// The cause.
        detail: String,
    },
    /// The cgroup id is not registered.
    #[error("cgroup {0} is not registered with lucid's eBPF programs")]
    NotRegistered(u64),
    /// Every counter slot is taken.
    #[error("all {0} container slots are in use; unregister deleted containers (Programs::sweep)")]
    Full(u32),
    /// The entries of the `WATCHED` table a cgroup id may use are all taken (with at most
    /// `MAX_CONTAINERS` ids in a much larger table, practically never).
    #[error("no room for cgroup {0} in the WATCHED table; unregister deleted containers (Programs::sweep)")]
    WatchedTableFull(u64),
    /// The cgroup is deeper than the programs look.
    #[error("cgroup {path} is at level {level}, deeper than the {max} levels lucid watches")]
    TooDeep {
        /// The cgroup.
        path: PathBuf,
        /// Its level.
        level: u32,
        /// The deepest level watched.
        max: u32,
    },
    /// Watched cgroups sit at too many distinct levels.
    #[error("watched cgroups would sit at more than {0} distinct levels; keep containers' cgroups at a few depths")]
    TooManyLevels(usize),
    /// The pin directory exists but misses pins.
    #[error(
        "incomplete pins under {0}: remove that directory (no container is using it) and retry"
    )]
    IncompletePins(PathBuf),
}

impl Error {
    /// True when eBPF cannot be used on this host at all (no privileges, no BTF, old kernel,
    /// verifier refusal), as opposed to an error with one container or call.
    pub fn is_unavailable(&self) -> bool {
        matches!(self, Self::Unavailable(_))
    }

    pub(crate) fn pin(
        action: &'static str,
        path: &std::path::Path,
        source: std::io::Error,
    ) -> Self {
        if source.kind() == std::io::ErrorKind::PermissionDenied {
            return Self::Unavailable(Unavailable::NotPermitted(format!(
                "{action} {}: {source}",
                path.display()
            )));
        }
        Self::Pin {
            action,
            path: path.to_owned(),
            source,
        }
    }

    pub(crate) fn map(map: &'static str) -> impl FnOnce(aya::maps::MapError) -> Self {
        move |source| Self::Map { map, source }
    }
}
