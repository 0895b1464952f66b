//! A bundle in a temporary directory (its rootfs, its spec, the settings
//! the steps take), for unit tests that run the rootfs steps against
//! `sys::fake::Fake` instead of the kernel, without root.

use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

use nix::fcntl::OFlag;
use nix::sys::stat::Mode;
use oci_spec::runtime::Spec;

use super::{CgroupMountSource, Root, RootfsConfig};

/// A bundle directory with an empty `rootfs/` and a spec.
pub(super) struct Bundle {
    _dir: tempfile::TempDir,
    /// The bundle, canonical (as the kernel names it through a descriptor).
    pub(super) path: PathBuf,
    /// `<bundle>/rootfs`.
    pub(super) rootfs: PathBuf,
    pub(super) spec: Spec,
    pub(super) user_ns: bool,
    pub(super) cgroup_ns: bool,
    pub(super) cgroups: Vec<CgroupMountSource>,
}

/// Opens a directory as a root: `O_PATH`, as `prepare` opens the rootfs.
pub(super) fn open_dir(path: &Path) -> OwnedFd {
    nix::fcntl::open(
        path,
        OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .unwrap()
}

impl Bundle {
    /// A bundle whose spec is `spec` (an object; `ociVersion` is added).
    pub(super) fn new(mut spec: serde_json::Value) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().canonicalize().unwrap();
        let rootfs = path.join("rootfs");
        std::fs::create_dir(&rootfs).unwrap();
        spec["ociVersion"] = "1.0.2".into();
        Bundle {
            _dir: dir,
            path,
            rootfs,
            spec: serde_json::from_value(spec).unwrap(),
            user_ns: false,
            cgroup_ns: false,
            cgroups: Vec::new(),
        }
    }

    pub(super) fn config(&self) -> RootfsConfig<'_> {
        RootfsConfig {
            spec: &self.spec,
            rootfs: &self.rootfs,
            bundle: &self.path,
            user_ns: self.user_ns,
            cgroup_ns: self.cgroup_ns,
            cgroups: &self.cgroups,
        }
    }

    /// The rootfs, open as [`prepare`](super::prepare) leaves it.
    pub(super) fn root(&self) -> Root {
        Root {
            fd: open_dir(&self.rootfs),
            dev_readonly: false,
        }
    }

    /// `path` (absolute, as the container sees it) on the host.
    pub(super) fn at(&self, path: &str) -> PathBuf {
        self.rootfs.join(path.trim_start_matches('/'))
    }

    /// Makes the directory `path` inside the rootfs.
    pub(super) fn mkdir(&self, path: &str) -> PathBuf {
        let at = self.at(path);
        std::fs::create_dir_all(&at).unwrap();
        at
    }

    /// Makes the empty file `path` inside the rootfs.
    pub(super) fn touch(&self, path: &str) -> PathBuf {
        let at = self.at(path);
        std::fs::create_dir_all(at.parent().unwrap()).unwrap();
        std::fs::write(&at, b"").unwrap();
        at
    }
}
