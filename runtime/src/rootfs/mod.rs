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
#[cfg(test)]
mod fixture;
mod mounts;
pub mod options;
mod resolve;

use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::mount::{MntFlags, MsFlags};
use nix::sys::stat::Mode;
use oci_spec::runtime::Spec;

use crate::sys::{self, Call};

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
    sys::mount(None::<&str>, "/", None, propagation, None)
        .map_err(path_err("setting propagation of", Path::new("/")))?;
    // pivot_root refuses a new root whose parent mount is shared.
    if let Some(parent) = mount_point_of(config.rootfs) {
        match sys::mount(None::<&str>, &parent, None, MsFlags::MS_PRIVATE, None) {
            Ok(()) | Err(Errno::EINVAL) => {}
            Err(e) => return Err(path_err("making private", &parent)(e)),
        }
    }
    sys::mount(
        Some(config.rootfs),
        config.rootfs,
        None,
        MsFlags::MS_BIND | MsFlags::MS_REC,
        None,
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
    sys::call(Call::Fchdir {
        dir: new_root.as_fd(),
    })
    .map_err(path_err("entering", rootfs))?;
    // pivot_root(".", ".") stacks the old root on top of the new one; it is
    // then unmounted from where we stand, without needing a directory for it.
    let here = Path::new(".");
    sys::call(Call::PivotRoot {
        new_root: here,
        put_old: here,
    })
    .map_err(path_err("pivot_root into", rootfs))?;
    sys::call(Call::Fchdir {
        dir: old_root.as_fd(),
    })
    .map_err(path_err("entering old root", Path::new("/")))?;
    // Keep the unmount from propagating to the host.
    sys::mount(
        None::<&str>,
        here,
        None,
        MsFlags::MS_SLAVE | MsFlags::MS_REC,
        None,
    )
    .map_err(path_err("making old root a slave", Path::new("/")))?;
    sys::call(Call::Umount {
        target: here,
        flags: MntFlags::MNT_DETACH,
    })
    .map_err(path_err("unmounting old root", Path::new("/")))?;
    sys::call(Call::Chdir {
        path: Path::new("/"),
    })
    .map_err(path_err("entering", Path::new("/")))?;
    Ok(())
}

/// `--no-pivot`: moves the rootfs over `/` and chroots into it. Weaker than
/// pivot_root (the old root stays reachable to a process that escapes the
/// chroot), which is why it is only done when asked.
pub fn move_root(rootfs: &Path) -> Result<(), RootfsError> {
    sys::call(Call::Chdir { path: rootfs }).map_err(path_err("entering", rootfs))?;
    sys::mount(Some("."), "/", None, MsFlags::MS_MOVE, None)
        .map_err(path_err("moving rootfs onto", Path::new("/")))?;
    sys::call(Call::Chroot {
        path: Path::new("."),
    })
    .map_err(path_err("chroot into", rootfs))?;
    sys::call(Call::Chdir {
        path: Path::new("/"),
    })
    .map_err(path_err("entering", Path::new("/")))?;
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
        make_readonly(&new_root()?, Path::new(path))?;
    }
    for path in linux.masked_paths().iter().flatten() {
        mask(&new_root()?, Path::new(path))?;
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
        sys::mount(None::<&str>, "/", None, flag, None)
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
    sys::mount(None::<&str>, path, None, flags, None)
        .map_err(path_err("remounting read-only", path))
}

/// The new root (after the pivot), in which masked and read-only paths
/// resolve.
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
/// both through the descriptor it resolved to inside `root`.
fn make_readonly(root: &OwnedFd, path: &Path) -> Result<(), RootfsError> {
    let Some(fd) = resolve_existing(root, path)? else {
        return Ok(());
    };
    let at = proc_fd_path(&fd);
    sys::mount(
        Some(&at),
        &at,
        None,
        MsFlags::MS_BIND | MsFlags::MS_REC,
        None,
    )
    .map_err(path_err("binding read-only path", path))?;
    // The descriptor names the directory under the new mount: reopen it.
    let top =
        resolve_existing(root, path)?.ok_or_else(|| path_err("reopening", path)(Errno::ENOENT))?;
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
/// inside `root`.
fn mask(root: &OwnedFd, path: &Path) -> Result<(), RootfsError> {
    let Some(fd) = resolve_existing(root, path)? else {
        return Ok(());
    };
    let is_dir = nix::sys::stat::fstat(fd.as_fd())
        .map(|st| st.st_mode & libc::S_IFMT == libc::S_IFDIR)
        .map_err(path_err("masking", path))?;
    let at = proc_fd_path(&fd);
    let result = if is_dir {
        sys::mount(
            Some("tmpfs"),
            &at,
            Some("tmpfs"),
            MsFlags::MS_RDONLY,
            Some("size=0k"),
        )
    } else {
        let null = open_in_root(root.as_fd(), Path::new("/dev/null"), Create::Nothing)
            .map_err(path_err("opening", Path::new("/dev/null")))?;
        sys::mount(
            Some(&proc_fd_path(&null)),
            &at,
            None,
            MsFlags::MS_BIND,
            None,
        )
    };
    result.map_err(path_err("masking", path))
}

/// Sets the container's hostname and domain name (it has its own uts namespace).
pub fn set_names(spec: &Spec) -> Result<(), RootfsError> {
    if let Some(hostname) = spec.hostname().as_deref().filter(|h| !h.is_empty()) {
        sys::call(Call::Sethostname { name: hostname })
            .map_err(|e| RootfsError::Other(format!("setting hostname {hostname:?}: {e}")))?;
    }
    if let Some(domain) = spec.domainname().as_deref().filter(|d| !d.is_empty()) {
        sys::call(Call::Setdomainname { name: domain })
            .map_err(|e| RootfsError::Other(format!("setting domain name {domain:?}: {e}")))?;
    }
    Ok(())
}

impl Root {
    /// Whether /dev must be remounted read-only once the devices exist.
    pub fn dev_readonly(&self) -> bool {
        self.dev_readonly
    }
}

#[cfg(test)]
mod tests {
    use super::fixture::{open_dir, Bundle};
    use super::*;
    use crate::sys::fake::{Fake, Recorded};
    use serde_json::json;

    fn change(target: impl Into<PathBuf>, flags: MsFlags) -> Recorded {
        Recorded::mount(None, target, None, flags, None)
    }

    const READONLY: MsFlags = MsFlags::MS_BIND
        .union(MsFlags::MS_REMOUNT)
        .union(MsFlags::MS_RDONLY);

    #[test]
    fn prepare_makes_the_tree_a_slave_then_binds_the_rootfs_onto_itself() {
        let b = Bundle::new(json!({}));
        let fake = Fake::new();
        let root = prepare(&b.config()).unwrap();
        let mut expected = vec![change("/", MsFlags::MS_SLAVE | MsFlags::MS_REC)];
        if let Some(parent) = mount_point_of(&b.rootfs) {
            expected.push(change(parent, MsFlags::MS_PRIVATE));
        }
        expected.push(Recorded::mount(
            b.rootfs.to_str(),
            &b.rootfs,
            None,
            MsFlags::MS_BIND | MsFlags::MS_REC,
            None,
        ));
        assert_eq!(fake.calls(), expected);
        assert_eq!(
            std::fs::read_link(proc_fd_path(&root.fd())).unwrap(),
            b.rootfs
        );
        assert!(!root.dev_readonly());
    }

    #[test]
    fn prepare_takes_the_specs_propagation_and_notes_a_readonly_dev() {
        let b = Bundle::new(json!({
            "linux": { "rootfsPropagation": "shared" },
            "mounts": [{ "destination": "/dev", "type": "tmpfs", "source": "tmpfs",
                         "options": ["nosuid", "ro"] }]
        }));
        let fake = Fake::new();
        let root = prepare(&b.config()).unwrap();
        assert_eq!(fake.calls()[0], change("/", MsFlags::MS_SHARED));
        assert!(root.dev_readonly());
    }

    #[test]
    fn prepare_goes_on_when_the_parent_is_no_mount_point_and_names_it_otherwise() {
        let b = Bundle::new(json!({}));
        let Some(parent) = mount_point_of(&b.rootfs) else {
            panic!("no mount point holds {}", b.rootfs.display());
        };
        let answer = |errno| {
            move |call: &Recorded| match call {
                Recorded::Mount { flags, .. } if *flags == MsFlags::MS_PRIVATE => Err(errno),
                _ => Ok(()),
            }
        };
        let fake = Fake::answering(answer(Errno::EINVAL));
        prepare(&b.config()).unwrap();
        assert_eq!(fake.calls().len(), 3);
        drop(fake);

        let fake = Fake::answering(answer(Errno::EACCES));
        let err = prepare(&b.config()).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "making private {}: EACCES: Permission denied",
                parent.display()
            )
        );
        assert_eq!(fake.calls().len(), 2, "the rootfs is not bound");
    }

    #[test]
    fn pivot_enters_the_rootfs_pivots_and_detaches_the_old_root() {
        let b = Bundle::new(json!({}));
        let cwd = std::env::current_dir().unwrap();
        let fake = Fake::new();
        pivot(&b.rootfs).unwrap();
        assert_eq!(
            fake.calls(),
            [
                Recorded::Fchdir {
                    dir: b.rootfs.clone()
                },
                Recorded::PivotRoot {
                    new_root: ".".into(),
                    put_old: ".".into()
                },
                Recorded::Fchdir { dir: "/".into() },
                change(".", MsFlags::MS_SLAVE | MsFlags::MS_REC),
                Recorded::Umount {
                    target: ".".into(),
                    flags: MntFlags::MNT_DETACH
                },
                Recorded::Chdir { path: "/".into() },
            ]
        );
        assert_eq!(std::env::current_dir().unwrap(), cwd);
    }

    #[test]
    fn a_refused_pivot_names_the_rootfs_and_stops_there() {
        let b = Bundle::new(json!({}));
        let fake = Fake::answering(|call| match call {
            Recorded::PivotRoot { .. } => Err(Errno::EINVAL),
            _ => Ok(()),
        });
        let err = pivot(&b.rootfs).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "pivot_root into {}: EINVAL: Invalid argument",
                b.rootfs.display()
            )
        );
        assert_eq!(fake.calls().len(), 2, "the old root is left alone");
    }

    #[test]
    fn move_root_moves_the_rootfs_over_slash_and_chroots() {
        let b = Bundle::new(json!({}));
        let fake = Fake::new();
        move_root(&b.rootfs).unwrap();
        assert_eq!(
            fake.calls(),
            [
                Recorded::Chdir {
                    path: b.rootfs.clone()
                },
                Recorded::mount(Some("."), "/", None, MsFlags::MS_MOVE, None),
                Recorded::Chroot { path: ".".into() },
                Recorded::Chdir { path: "/".into() },
            ]
        );
    }

    #[test]
    fn a_readonly_path_is_bound_on_itself_then_remounted_readonly_recursively() {
        let b = Bundle::new(json!({}));
        let sys = b.mkdir("/proc/sys");
        let root = open_dir(&b.rootfs);
        let fake = Fake::new();
        make_readonly(&root, Path::new("/proc/sys")).unwrap();
        make_readonly(&root, Path::new("/proc/absent")).unwrap();
        assert_eq!(
            fake.calls(),
            [
                Recorded::mount(
                    sys.to_str(),
                    &sys,
                    None,
                    MsFlags::MS_BIND | MsFlags::MS_REC,
                    None
                ),
                change(&sys, READONLY | MsFlags::MS_REC | locked_flags(&sys)),
            ]
        );
    }

    #[test]
    fn a_readonly_path_is_resolved_inside_the_root() {
        let b = Bundle::new(json!({}));
        let etc = b.mkdir("/etc");
        // Read as the host would, this link names the host's /etc.
        std::os::unix::fs::symlink("/etc", b.at("/link")).unwrap();
        let root = open_dir(&b.rootfs);
        let fake = Fake::new();
        make_readonly(&root, Path::new("/link")).unwrap();
        let calls = fake.calls();
        assert_eq!(
            calls[0],
            Recorded::mount(
                etc.to_str(),
                &etc,
                None,
                MsFlags::MS_BIND | MsFlags::MS_REC,
                None
            )
        );
        assert_eq!(
            calls[1],
            change(&etc, READONLY | MsFlags::MS_REC | locked_flags(&etc))
        );
    }

    #[test]
    fn a_readonly_path_that_cannot_be_remounted_is_named_as_the_spec_names_it() {
        let b = Bundle::new(json!({}));
        b.mkdir("/proc/sys");
        let root = open_dir(&b.rootfs);
        let _fake = Fake::answering(|call| match call {
            Recorded::Mount { flags, .. } if flags.contains(MsFlags::MS_REMOUNT) => {
                Err(Errno::EROFS)
            }
            _ => Ok(()),
        });
        let err = make_readonly(&root, Path::new("/proc/sys")).unwrap_err();
        assert_eq!(
            err.to_string(),
            "remounting read-only /proc/sys: EROFS: Read-only file system"
        );
    }

    #[test]
    fn a_masked_directory_gets_an_empty_readonly_tmpfs_and_a_file_dev_null() {
        let b = Bundle::new(json!({}));
        let acpi = b.mkdir("/proc/acpi");
        let kcore = b.touch("/proc/kcore");
        let null = b.touch("/dev/null");
        let root = open_dir(&b.rootfs);
        let fake = Fake::new();
        mask(&root, Path::new("/proc/acpi")).unwrap();
        mask(&root, Path::new("/proc/kcore")).unwrap();
        mask(&root, Path::new("/proc/absent")).unwrap();
        assert_eq!(
            fake.calls(),
            [
                Recorded::mount(
                    Some("tmpfs"),
                    &acpi,
                    Some("tmpfs"),
                    MsFlags::MS_RDONLY,
                    Some("size=0k")
                ),
                Recorded::mount(null.to_str(), &kcore, None, MsFlags::MS_BIND, None),
            ]
        );
    }

    #[test]
    fn a_path_that_cannot_be_masked_is_named() {
        let b = Bundle::new(json!({}));
        b.mkdir("/proc/acpi");
        let root = open_dir(&b.rootfs);
        let _fake = Fake::answering(|_| Err(Errno::EACCES));
        let err = mask(&root, Path::new("/proc/acpi")).unwrap_err();
        assert_eq!(
            err.to_string(),
            "masking /proc/acpi: EACCES: Permission denied"
        );
    }

    #[test]
    fn finish_remounts_dev_and_root_readonly_then_sets_propagation() {
        let b = Bundle::new(json!({
            "root": { "path": "rootfs", "readonly": true },
            "linux": { "rootfsPropagation": "rslave" }
        }));
        let fake = Fake::new();
        finish(&b.config(), true).unwrap();
        assert_eq!(
            fake.calls(),
            [
                change("/dev", READONLY | locked_flags(Path::new("/dev"))),
                change("/", READONLY | locked_flags(Path::new("/"))),
                change("/", MsFlags::MS_SLAVE | MsFlags::MS_REC),
            ]
        );
        drop(fake);

        let b = Bundle::new(json!({}));
        let fake = Fake::new();
        finish(&b.config(), false).unwrap();
        assert!(fake.calls().is_empty());
    }

    #[test]
    fn dev_is_remounted_readonly_only_after_its_devices_are_made() {
        let b = Bundle::new(json!({
            "mounts": [{ "destination": "/dev", "type": "tmpfs", "source": "tmpfs",
                         "options": ["nosuid", "strictatime", "mode=755", "ro"] }],
            "linux": {}
        }));
        let fake = Fake::new();
        let config = b.config();
        let root = prepare(&config).unwrap();
        mount_all(&config, &root).unwrap();
        create_devices(&config, &root).unwrap();
        pivot(&b.rootfs).unwrap();
        finish(&config, root.dev_readonly()).unwrap();
        let calls = fake.calls();
        let dev_mount = calls
            .iter()
            .position(|c| matches!(c, Recorded::Mount { target, .. } if *target == b.at("/dev")))
            .unwrap();
        let Recorded::Mount { flags, .. } = &calls[dev_mount] else {
            unreachable!()
        };
        assert!(!flags.contains(MsFlags::MS_RDONLY), "{flags:?}");
        let last_device = calls
            .iter()
            .rposition(|c| matches!(c, Recorded::Mknodat { .. }))
            .unwrap();
        let readonly = calls
            .iter()
            .position(|c| *c == change("/dev", READONLY | locked_flags(Path::new("/dev"))))
            .unwrap();
        assert!(dev_mount < last_device && last_device < readonly);
    }

    #[test]
    fn names_are_set_when_given_and_a_refusal_names_the_field() {
        let spec = |value| -> Spec {
            let mut value: serde_json::Value = value;
            value["ociVersion"] = "1.0.2".into();
            serde_json::from_value(value).unwrap()
        };
        let fake = Fake::new();
        set_names(&spec(
            json!({"hostname": "box", "domainname": "example.org"}),
        ))
        .unwrap();
        set_names(&spec(json!({"hostname": ""}))).unwrap();
        assert_eq!(
            fake.calls(),
            [
                Recorded::Sethostname { name: "box".into() },
                Recorded::Setdomainname {
                    name: "example.org".into()
                },
            ]
        );
        drop(fake);

        let _fake = Fake::answering(|call| match call {
            Recorded::Setdomainname { .. } => Err(Errno::EPERM),
            _ => Ok(()),
        });
        let err = set_names(&spec(
            json!({"hostname": "box", "domainname": "example.org"}),
        ))
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "setting domain name \"example.org\": EPERM: Operation not permitted"
        );
    }
}
