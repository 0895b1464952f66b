//! The container's root filesystem: mounts, devices, `pivot_root`, masked and
//! read-only paths, sysctls. Runs inside the init process, in its new mount
//! namespace, in this order:
//!
//! 1. [`prepare`]: make `/` a slave (or `rootfsPropagation`), bind the rootfs
//!    onto itself so it is a mount point;
//! 2. [`mount_all`]: every spec mount, resolved inside the rootfs;
//! 3. [`create_devices`]: default devices, `linux.devices`, `/dev` symlinks;
//! 4. [`pivot`] (or [`move_root`] for `--no-pivot`);
//! 5. [`finish`]: sysctls, masked and read-only paths, read-only root.

mod devices;
mod mounts;
pub mod options;
mod resolve;

use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sys::stat::Mode;
use oci_spec::runtime::Spec;

pub use devices::create_devices;
pub use mounts::mount_all;
pub use options::{propagation_flag, MountPlan};
pub use resolve::{open_file_in_root, open_in_root, proc_fd_path, Create};

/// A failed step of root filesystem set-up.
#[derive(Debug, thiserror::Error)]
pub enum RootfsError {
    /// A system call on a path failed.
    #[error("{what} {path}: {cause}")]
    Path {
        /// The step (`mounting proc on`, `creating device`, …).
        what: &'static str,
        /// The path, as the container sees it.
        path: PathBuf,
        /// The failure.
        cause: Errno,
    },
    /// Something other than one path.
    #[error("{0}")]
    Other(String),
}

pub(crate) fn path_err<'a>(
    what: &'static str,
    path: &'a Path,
) -> impl FnOnce(Errno) -> RootfsError + 'a {
    move |cause| RootfsError::Path {
        what,
        path: path.to_path_buf(),
        cause,
    }
}

/// A cgroup directory the container's `/sys/fs/cgroup` mount shows.
#[derive(Debug, Clone)]
pub struct CgroupMountSource {
    /// The name under `/sys/fs/cgroup` (`memory`, `cpu,cpuacct`, `unified`, or
    /// empty for a pure v2 host, where the hierarchy is the mount itself).
    pub name: String,
    /// `cgroup` (v1) or `cgroup2`.
    pub fstype: &'static str,
    /// The superblock options of a v1 hierarchy (`memory`, `name=systemd`).
    pub options: String,
    /// The container's cgroup directory in that hierarchy on the host.
    pub host_dir: PathBuf,
}

/// What root filesystem set-up needs to know.
#[derive(Debug, Clone, Copy)]
pub struct RootfsConfig<'a> {
    /// The container's configuration.
    pub spec: &'a Spec,
    /// The root filesystem on the host, absolute.
    pub rootfs: &'a Path,
    /// The bundle, against which relative bind sources resolve.
    pub bundle: &'a Path,
    /// Whether the container runs in a user namespace (devices are then bound
    /// from the host instead of made with mknod).
    pub user_ns: bool,
    /// Whether the container has its own cgroup namespace.
    pub cgroup_ns: bool,
    /// The container's cgroups, for a `cgroup` mount.
    pub cgroups: &'a [CgroupMountSource],
}

/// The container's root, open, ready for mounts.
#[derive(Debug)]
pub struct Root {
    fd: OwnedFd,
    /// Set when the spec mounts /dev read-only: the remount waits until the
    /// devices exist.
    dev_readonly: bool,
}

impl Root {
    /// The root directory's descriptor.
    pub fn fd(&self) -> std::os::fd::BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

/// Makes the mount tree private to the container and the rootfs a mount point.
pub fn prepare(config: &RootfsConfig) -> Result<Root, RootfsError> {
    let propagation = config
        .spec
        .linux()
        .as_ref()
        .and_then(|l| l.rootfs_propagation().as_deref())
        .and_then(propagation_flag)
        .unwrap_or(MsFlags::MS_SLAVE | MsFlags::MS_REC);
    mount(None::<&str>, "/", None::<&str>, propagation, None::<&str>)
        .map_err(path_err("setting propagation of", Path::new("/")))?;
    // pivot_root refuses a new root whose parent mount is shared.
    if let Some(parent) = mount_point_of(config.rootfs) {
        match mount(
            None::<&str>,
            &parent,
            None::<&str>,
            MsFlags::MS_PRIVATE,
            None::<&str>,
        ) {
            Ok(()) | Err(Errno::EINVAL) => {}
            Err(e) => return Err(path_err("making private", &parent)(e)),
        }
    }
    mount(
        Some(config.rootfs),
        config.rootfs,
        None::<&str>,
        MsFlags::MS_BIND | MsFlags::MS_REC,
        None::<&str>,
    )
    .map_err(path_err("binding rootfs", config.rootfs))?;
    let fd = nix::fcntl::open(
        config.rootfs,
        OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(path_err("opening rootfs", config.rootfs))?;
    let dev_readonly = config.spec.mounts().iter().flatten().any(|m| {
        m.destination() == Path::new("/dev") && m.options().iter().flatten().any(|o| o == "ro")
    });
    Ok(Root { fd, dev_readonly })
}

/// The mount point holding `path`, from /proc/self/mountinfo.
fn mount_point_of(path: &Path) -> Option<PathBuf> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    info.lines()
        .filter_map(|line| line.split(' ').nth(4))
        .map(unescape_mountinfo_path)
        .filter(|mp| path.starts_with(mp))
        .max_by_key(|mp| mp.as_os_str().len())
}

pub use lucid_layout::hierarchy::unescape_mountinfo_path;


/// Makes the rootfs the process's `/` with pivot_root(2), then detaches the
/// old root so no host mount stays reachable.
pub fn pivot(rootfs: &Path) -> Result<(), RootfsError> {
    let old_root = nix::fcntl::open(
        "/",
        OFlag::O_DIRECTORY | OFlag::O_RDONLY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(path_err("opening", Path::new("/")))?;
    let new_root = nix::fcntl::open(
        rootfs,
        OFlag::O_DIRECTORY | OFlag::O_RDONLY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(path_err("opening", rootfs))?;
    nix::unistd::fchdir(&new_root).map_err(path_err("entering", rootfs))?;
    // pivot_root(".", ".") stacks the old root on top of the new one; it is
    // then unmounted from where we stand, without needing a directory for it.
    nix::unistd::pivot_root(".", ".").map_err(path_err("pivot_root into", rootfs))?;
    nix::unistd::fchdir(&old_root).map_err(path_err("entering old root", Path::new("/")))?;
    // Keep the unmount from propagating to the host.
    mount(
        None::<&str>,
        ".",
        None::<&str>,
        MsFlags::MS_SLAVE | MsFlags::MS_REC,
        None::<&str>,
    )
    .map_err(path_err("making old root a slave", Path::new("/")))?;
    umount2(".", MntFlags::MNT_DETACH).map_err(path_err("unmounting old root", Path::new("/")))?;
    nix::unistd::chdir("/").map_err(path_err("entering", Path::new("/")))?;
    Ok(())
}

/// `--no-pivot`: moves the rootfs over `/` and chroots into it. Weaker than
/// pivot_root (the old root stays reachable to a process that escapes the
/// chroot), which is why it is only done when asked.
pub fn move_root(rootfs: &Path) -> Result<(), RootfsError> {
    nix::unistd::chdir(rootfs).map_err(path_err("entering", rootfs))?;
    mount(Some("."), "/", None::<&str>, MsFlags::MS_MOVE, None::<&str>)
        .map_err(path_err("moving rootfs onto", Path::new("/")))?;
    nix::unistd::chroot(".").map_err(path_err("chroot into", rootfs))?;
    nix::unistd::chdir("/").map_err(path_err("entering", Path::new("/")))?;
    Ok(())
}

/// After the pivot: sysctls, masked and read-only paths, a read-only /dev and
/// root where asked, and the rootfs propagation re-applied to the new `/`.
pub fn finish(config: &RootfsConfig, dev_readonly: bool) -> Result<(), RootfsError> {
    let Some(linux) = config.spec.linux() else {
        return finish_root(config, dev_readonly);
    };
    let mut sysctls: Vec<_> = linux.sysctl().iter().flatten().collect();
    sysctls.sort();
    for (key, value) in sysctls {
        let path = PathBuf::from("/proc/sys").join(key.replace('.', "/"));
        std::fs::write(&path, value.as_bytes()).map_err(|e| {
            RootfsError::Other(format!(
                "setting sysctl {key}={value}: {}: {e}",
                path.display()
            ))
        })?;
    }
    for path in linux.readonly_paths().iter().flatten() {
        make_readonly(Path::new(path))?;
    }
    for path in linux.masked_paths().iter().flatten() {
        mask(Path::new(path))?;
    }
    finish_root(config, dev_readonly)
}

fn finish_root(config: &RootfsConfig, dev_readonly: bool) -> Result<(), RootfsError> {
    if dev_readonly {
        remount_readonly(Path::new("/dev"), false)?;
    }
    if config.spec.root().as_ref().and_then(|r| r.readonly()) == Some(true) {
        remount_readonly(Path::new("/"), false)?;
    }
    if let Some(flag) = config
        .spec
        .linux()
        .as_ref()
        .and_then(|l| l.rootfs_propagation().as_deref())
        .and_then(propagation_flag)
    {
        mount(None::<&str>, "/", None::<&str>, flag, None::<&str>)
            .map_err(path_err("setting propagation of", Path::new("/")))?;
    }
    Ok(())
}

/// The flags of the mount at `path` that a remount must keep (inside a user
/// namespace the kernel refuses to clear them).
pub(crate) fn locked_flags(path: &Path) -> MsFlags {
    use nix::sys::statvfs::{statvfs, FsFlags};
    let Ok(stat) = statvfs(path) else {
        return MsFlags::empty();
    };
    let f = stat.flags();
    let mut flags = MsFlags::empty();
    for (fs, ms) in [
        (FsFlags::ST_NOSUID, MsFlags::MS_NOSUID),
        (FsFlags::ST_NODEV, MsFlags::MS_NODEV),
        (FsFlags::ST_NOEXEC, MsFlags::MS_NOEXEC),
        (FsFlags::ST_NOATIME, MsFlags::MS_NOATIME),
        (FsFlags::ST_NODIRATIME, MsFlags::MS_NODIRATIME),
        (FsFlags::ST_RELATIME, MsFlags::MS_RELATIME),
    ] {
        if f.contains(fs) {
            flags |= ms;
        }
    }
    flags
}

/// Remounts the mount at `path` read-only, keeping its other flags.
fn remount_readonly(path: &Path, recursive: bool) -> Result<(), RootfsError> {
    let mut flags =
        MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY | locked_flags(path);
    if recursive {
        flags |= MsFlags::MS_REC;
    }
    mount(None::<&str>, path, None::<&str>, flags, None::<&str>)
        .map_err(path_err("remounting read-only", path))
}

/// The new root (after the pivot), for resolving masked and read-only paths
/// inside it.
fn new_root() -> Result<OwnedFd, RootfsError> {
    nix::fcntl::open(
        "/",
        OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(path_err("opening", Path::new("/")))
}

/// Resolves `path` inside the new root (`RESOLVE_IN_ROOT`, no magic links),
/// or `None` when it does not exist (masked and read-only paths may be absent).
fn resolve_existing(root: &OwnedFd, path: &Path) -> Result<Option<OwnedFd>, RootfsError> {
    match open_in_root(root.as_fd(), path, Create::Nothing) {
        Ok(fd) => Ok(Some(fd)),
        Err(Errno::ENOENT) => Ok(None),
        Err(e) => Err(path_err("resolving", path)(e)),
    }
}

/// `readonlyPaths`: bind the path onto itself and remount it read-only,
/// both through the descriptor it resolved to inside the root.
fn make_readonly(path: &Path) -> Result<(), RootfsError> {
    let root = new_root()?;
    let Some(fd) = resolve_existing(&root, path)? else {
        return Ok(());
    };
    let at = proc_fd_path(&fd);
    mount(
        Some(&at),
        &at,
        None::<&str>,
        MsFlags::MS_BIND | MsFlags::MS_REC,
        None::<&str>,
    )
    .map_err(path_err("binding read-only path", path))?;
    // The descriptor names the directory under the new mount: reopen it.
    let top =
        resolve_existing(&root, path)?.ok_or_else(|| path_err("reopening", path)(Errno::ENOENT))?;
    remount_readonly(&proc_fd_path(&top), true).map_err(|e| match e {
        RootfsError::Path { what, cause, .. } => RootfsError::Path {
            what,
            path: path.to_path_buf(),
            cause,
        },
        other => other,
    })
}

/// `maskedPaths`: hide a directory under an empty read-only tmpfs, a file
/// under /dev/null, mounting through the descriptor the path resolved to
/// inside the root.
fn mask(path: &Path) -> Result<(), RootfsError> {
    let root = new_root()?;
    let Some(fd) = resolve_existing(&root, path)? else {
        return Ok(());
    };
    let is_dir = nix::sys::stat::fstat(fd.as_fd())
        .map(|st| st.st_mode & libc::S_IFMT == libc::S_IFDIR)
        .map_err(path_err("masking", path))?;
    let at = proc_fd_path(&fd);
    let result = if is_dir {
        mount(
            Some("tmpfs"),
            &at,
            Some("tmpfs"),
            MsFlags::MS_RDONLY,
            Some("size=0k"),
        )
    } else {
        let null = open_in_root(root.as_fd(), Path::new("/dev/null"), Create::Nothing)
            .map_err(path_err("opening", Path::new("/dev/null")))?;
        mount(
            Some(&proc_fd_path(&null)),
            &at,
            None::<&str>,
            MsFlags::MS_BIND,
            None::<&str>,
        )
    };
    result.map_err(path_err("masking", path))
}

/// Sets the container's hostname and domain name (it has its own uts namespace).
pub fn set_names(spec: &Spec) -> Result<(), RootfsError> {
    if let Some(hostname) = spec.hostname().as_deref().filter(|h| !h.is_empty()) {
        nix::unistd::sethostname(hostname)
            .map_err(|e| RootfsError::Other(format!("setting hostname {hostname:?}: {e}")))?;
    }
    if let Some(domain) = spec.domainname().as_deref().filter(|d| !d.is_empty()) {
        // SAFETY: the pointer and length describe a live byte slice.
        let ret = unsafe { libc::setdomainname(domain.as_ptr().cast(), domain.len()) };
        if ret != 0 {
            return Err(RootfsError::Other(format!(
                "setting domain name {domain:?}: {}",
                Errno::last()
            )));
        }
    }
    Ok(())
}

impl Root {
    /// Whether /dev must be remounted read-only once the devices exist.
    pub fn dev_readonly(&self) -> bool {
        self.dev_readonly
    }
}

