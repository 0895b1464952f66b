//! Where the pins live: `<root>/v<LAYOUT_VERSION>/{maps,progs,links,containers/<cgroup id>}`.
use std::path::{Path, PathBuf};

use lucid_ebpf_common::LAYOUT_VERSION;

use crate::{error::Unavailable, sys, Error};

/// Production pin root; tests and benchmarks use their own directories under `/sys/fs/bpf`.
pub const DEFAULT_PIN_ROOT: &str = "/sys/fs/bpf/lucid";

/// `statfs` magic of a BPF file system.
const BPF_FS_MAGIC: i64 = 0xcafe_4a11;

/// Maps pinned under `maps/`: every map of the object.
pub(crate) const MAPS: &[&str] = &[
    "WATCHED",
    "LEVELS",
    "NESTED",
    "SYSCALLS",
    "LATENCY",
    "INFLIGHT",
    "COUNTERS",
    "OOM_VICTIMS",
    "EVENTS",
    "STATS",
    "NET",
    "DEVICE_RULES",
    "FEATURES",
];

/// Programs pinned under `progs/`, attached per container or on demand.
pub(crate) const PROG_NET_INGRESS: &str = "net_ingress";
pub(crate) const PROG_NET_EGRESS: &str = "net_egress";
pub(crate) const PROG_DEVICE: &str = "device_filter";
/// The counting program, by hook: fexit on `x64_sys_call` or the `sys_exit` tracepoint;
/// attached (`links/syscall_exit`) only while a container is registered.
pub(crate) const PROG_SYSCALL_EXIT_FEXIT: &str = "syscall_exit_fexit";
pub(crate) const PROG_SYSCALL_EXIT_TP: &str = "syscall_exit_tp";
/// The latency entry program, by hook: fentry on `x64_sys_call` or the `sys_enter` tracepoint;
/// attached (`links/syscall_enter`) only while a container asks for latency.
pub(crate) const PROG_SYSCALL_ENTER_FENTRY: &str = "syscall_enter_fentry";
pub(crate) const PROG_SYSCALL_ENTER_TP: &str = "syscall_enter_tp";

/// Global links pinned under `links/`.
pub(crate) const LINK_SYSCALL_EXIT: &str = "syscall_exit";
pub(crate) const LINK_SYSCALL_ENTER: &str = "syscall_enter";
pub(crate) const LINK_EXEC: &str = "process_exec";
pub(crate) const LINK_EXIT: &str = "process_exit";
pub(crate) const LINK_OOM: &str = "oom_mark_victim";
pub(crate) const LINK_CGROUP_MKDIR: &str = "cgroup_mkdir";

/// Paths inside one version directory.
#[derive(Clone, Debug)]
pub(crate) struct Layout {
    pub dir: PathBuf,
}

impl Layout {
    pub fn new(dir: PathBuf) -> Self {
        Self { dir }
    }

    pub fn current(root: &Path) -> Self {
        Self::new(root.join(format!("v{LAYOUT_VERSION}")))
    }

    pub fn map(&self, name: &str) -> PathBuf {
        self.dir.join("maps").join(name)
    }

    pub fn prog(&self, name: &str) -> PathBuf {
        self.dir.join("progs").join(name)
    }

    pub fn link(&self, name: &str) -> PathBuf {
        self.dir.join("links").join(name)
    }

    pub fn containers(&self) -> PathBuf {
        self.dir.join("containers")
    }

    pub fn container(&self, cgroup_id: u64) -> PathBuf {
        self.containers().join(cgroup_id.to_string())
    }

    /// Every pin a complete, loaded version directory has: the maps. Programs and links are
    /// pinned for the features the kernel took, which `FEATURES` records.
    pub fn required_pins(&self) -> Vec<PathBuf> {
        MAPS.iter().map(|m| self.map(m)).collect()
    }
}

/// Makes sure `root` is on a BPF file system, mounting one at `/sys/fs/bpf` (or at `root`
/// itself when it is elsewhere) if needed, and creates it.
pub(crate) fn ensure_bpffs(root: &Path) -> Result<(), Error> {
    let mut probe = root.to_path_buf();
    while !probe.exists() {
        if !probe.pop() {
            break;
        }
    }
    let on_bpffs = sys::statfs_magic(&probe)
        .map(|m| m == BPF_FS_MAGIC)
        .unwrap_or(false);
    if !on_bpffs {
        let mount_point = if root.starts_with("/sys/fs/bpf") {
            PathBuf::from("/sys/fs/bpf")
        } else {
            root.to_path_buf()
        };
        std::fs::create_dir_all(&mount_point)
            .map_err(|e| Error::pin("creating", &mount_point, e))?;
        sys::mount_bpffs(&mount_point).map_err(|e| {
            Error::Unavailable(Unavailable::NoBpffs {
                path: mount_point.clone(),
                detail: e.to_string(),
            })
        })?;
    }
    std::fs::create_dir_all(root).map_err(|e| Error::pin("creating", root, e))
}

/// Removes every pin under `root` (all versions): programs detach, maps go once unused.
///
/// For uninstalling and for tests; never needed on the create or delete path.
pub fn remove_pin_root(root: &Path) -> Result<(), Error> {
    match std::fs::remove_dir_all(root) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Error::pin("removing", root, e)),
    }
}
