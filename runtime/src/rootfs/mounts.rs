//! Each spec mount, made inside the rootfs through descriptors so that a
//! symlink in the rootfs can never send a mount to the host.

use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::mount::{mount, MsFlags};
use nix::sys::stat::Mode;
use oci_spec::runtime::Mount;

use super::resolve::{open_in_root, proc_fd_path, Create};
use super::{locked_flags, path_err, MountPlan, Root, RootfsConfig, RootfsError};

/// Makes every mount of the spec, in order.
pub fn mount_all(config: &RootfsConfig, root: &Root) -> Result<(), RootfsError> {
    for (i, m) in config.spec.mounts().iter().flatten().enumerate() {
        mount_one(config, root, m).map_err(|e| {
            RootfsError::Other(format!(
                "mounts[{i}] ({} on {}): {e}",
                m.typ().as_deref().unwrap_or("bind"),
                m.destination().display()
            ))
        })?;
        if i == 0 {
            crate::failpoint::hold("create.mounts");
        }
    }
    Ok(())
}

fn destination(m: &Mount) -> PathBuf {
    Path::new("/").join(m.destination())
}

fn mount_one(config: &RootfsConfig, root: &Root, m: &Mount) -> Result<(), RootfsError> {
    let plan = MountPlan::from_spec(m).map_err(RootfsError::Other)?;
    let dest = destination(m);
    let fstype = m.typ().as_deref().unwrap_or("");
    if fstype == "cgroup" && !plan.bind {
        let target =
            open_in_root(root.fd(), &dest, Create::Dir).map_err(path_err("making", &dest))?;
        check_proc_mount(root, &target, &dest, ProcSource::Other)?;
        return mount_cgroup(config, root, &dest, &plan);
    }
    if plan.bind {
        let source = bind_source(config, m)?;
        return bind(root, &source, &dest, &plan);
    }
    // /dev is remounted read-only only after the devices are made in it.
    let mut flags = plan.flags;
    if dest == Path::new("/dev") {
        flags &= !MsFlags::MS_RDONLY;
    }
    let target = open_in_root(root.fd(), &dest, Create::Dir).map_err(path_err("making", &dest))?;
    // runc leaves proc and sysfs out of the rule: they make a new instance.
    if !matches!(fstype, "proc" | "sysfs") {
        check_proc_mount(root, &target, &dest, ProcSource::Other)?;
    }
    let source = m
        .source()
        .as_ref()
        .map(|s| s.as_os_str().to_owned())
        .unwrap_or_else(|| fstype.into());
    let data = crate::lsm::with_mount_label(&plan.data, fstype, config.spec);
    let data = (!data.is_empty()).then_some(data.as_str());
    match mount(
        Some(source.as_os_str()),
        &proc_fd_path(&target),
        Some(fstype),
        flags,
        data,
    ) {
        Ok(()) if fstype == "mqueue" => {
            let top = reopen(root, &dest)?;
            crate::lsm::label_mqueue(&proc_fd_path(&top), config.spec)
                .map_err(|e| RootfsError::Other(e.to_string()))?;
        }
        Ok(()) => {}
        // Inside a user namespace without its own network or ipc namespace the
        // kernel refuses new sysfs and mqueue instances; runc binds the host's.
        Err(Errno::EPERM) if config.user_ns && matches!(fstype, "sysfs" | "mqueue") => {
            let host = if fstype == "sysfs" {
                "/sys"
            } else {
                "/dev/mqueue"
            };
            let fallback = MountPlan {
                flags: flags | MsFlags::MS_BIND | MsFlags::MS_REC,
                bind: true,
                ..plan.clone()
            };
            return bind(root, Path::new(host), &dest, &fallback);
        }
        Err(e) => return Err(path_err("mounting on", &dest)(e)),
    }
    apply_propagation(root, &dest, &plan)
}

fn bind_source(config: &RootfsConfig, m: &Mount) -> Result<PathBuf, RootfsError> {
    let source = m
        .source()
        .as_ref()
        .ok_or_else(|| RootfsError::Other("a bind mount needs a source".into()))?;
    Ok(if source.is_absolute() {
        source.clone()
    } else {
        config.bundle.join(source)
    })
}

/// Binds a host path into the rootfs, then remounts it with the asked flags.
fn bind(root: &Root, source: &Path, dest: &Path, plan: &MountPlan) -> Result<(), RootfsError> {
    let src = nix::fcntl::open(source, OFlag::O_PATH | OFlag::O_CLOEXEC, Mode::empty())
        .map_err(path_err("opening bind source", source))?;
    let is_dir = nix::sys::stat::fstat(src.as_fd())
        .map(|st| st.st_mode & libc::S_IFMT == libc::S_IFDIR)
        .map_err(path_err("inspecting bind source", source))?;
    let target = open_in_root(
        root.fd(),
        dest,
        if is_dir { Create::Dir } else { Create::File },
    )
    .map_err(path_err("making", dest))?;
    check_proc_mount(root, &target, dest, ProcSource::of_bind(&src))?;
    mount(
        Some(&proc_fd_path(&src)),
        &proc_fd_path(&target),
        None::<&str>,
        MsFlags::MS_BIND | (plan.flags & MsFlags::MS_REC),
        None::<&str>,
    )
    .map_err(path_err("binding onto", dest))?;
    let remount = plan.remount_flags();
    if !remount.is_empty() {
        let top = reopen(root, dest)?;
        remount_bind(&top, dest, remount)?;
    }
    apply_propagation(root, dest, plan)
}

/// Where the mount of a [`check_proc_mount`] comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ProcSource {
    /// A bind of the root of a procfs: a procfs after all.
    ProcRoot,
    /// Anything else (a bind of anything else, a tmpfs, a cgroup, ...).
    Other,
}

impl ProcSource {
    fn of_bind(src: &OwnedFd) -> Self {
        /// The inode number of every procfs's root directory.
        const PROC_ROOT_INO: u64 = 1;
        let on_proc = nix::sys::statfs::fstatfs(src)
            .is_ok_and(|fs| fs.filesystem_type() == nix::sys::statfs::PROC_SUPER_MAGIC);
        let is_root = nix::sys::stat::fstat(src.as_fd()).is_ok_and(|st| st.st_ino == PROC_ROOT_INO);
        if on_proc && is_root {
            ProcSource::ProcRoot
        } else {
            ProcSource::Other
        }
    }
}

/// The files under `/proc` a mount may cover, runc's list: those lxcfs
/// emulates, and `ns_last_pid`.
const PROC_MOUNT_EXCEPTIONS: &[&str] = &[
    "/proc/cpuinfo",
    "/proc/diskstats",
    "/proc/meminfo",
    "/proc/stat",
    "/proc/swaps",
    "/proc/uptime",
    "/proc/loadavg",
    "/proc/slabinfo",
    "/proc/net/dev",
    "/proc/sys/kernel/ns_last_pid",
];

/// runc's rule for mounts under `/proc` (its `checkProcMount`), applied to
/// where the destination really is inside the rootfs (`resolved`: links
/// followed, within the root), so `/evil -> /proc/sys/kernel/core_pattern`
/// is judged as `/proc/sys/kernel/core_pattern`. Outside `/proc`, anything
/// goes; on `/proc` itself, only a procfs; inside it, only
/// [`PROC_MOUNT_EXCEPTIONS`].
fn proc_mount_rule(resolved: &Path, source: ProcSource) -> Result<(), String> {
    let Ok(inside) = resolved.strip_prefix("/proc") else {
        return Ok(());
    };
    if inside.as_os_str().is_empty() {
        return match source {
            ProcSource::ProcRoot => Ok(()),
            ProcSource::Other => Err(format!(
                "{} cannot be mounted because it is not of type proc",
                resolved.display()
            )),
        };
    }
    if PROC_MOUNT_EXCEPTIONS
        .iter()
        .any(|allowed| Path::new(allowed) == resolved)
    {
        return Ok(());
    }
    Err(format!(
        "{} cannot be mounted because it is inside /proc",
        resolved.display()
    ))
}

/// Refuses a mount whose target (`target`, opened for `dest` inside the
/// root) lies where [`proc_mount_rule`] forbids.
fn check_proc_mount(
    root: &Root,
    target: &OwnedFd,
    dest: &Path,
    source: ProcSource,
) -> Result<(), RootfsError> {
    let resolved = path_in_root(root, target, dest)?;
    proc_mount_rule(&resolved, source).map_err(|why| {
        if resolved == dest {
            RootfsError::Other(why)
        } else {
            RootfsError::Other(format!("{} leads to {why}", dest.display()))
        }
    })
}

/// The absolute path inside the root of what `target` names, as the
/// kernel resolved it (links followed).
fn path_in_root(root: &Root, target: &OwnedFd, dest: &Path) -> Result<PathBuf, RootfsError> {
    let link = |fd: &dyn std::os::fd::AsRawFd| {
        nix::fcntl::readlink(&proc_fd_path(&fd.as_raw_fd()))
            .map(PathBuf::from)
            .map_err(path_err("resolving", dest))
    };
    let root_path = link(&root.fd())?;
    let target_path = link(target)?;
    let inside = target_path.strip_prefix(&root_path).map_err(|_| {
        RootfsError::Other(format!(
            "{} resolved to {}, outside the rootfs {}",
            dest.display(),
            target_path.display(),
            root_path.display()
        ))
    })?;
    Ok(Path::new("/").join(inside))
}

/// The mount now on top of `dest` (a descriptor opened before mounting names
/// the directory underneath).
fn reopen(root: &Root, dest: &Path) -> Result<OwnedFd, RootfsError> {
    open_in_root(root.fd(), dest, Create::Nothing).map_err(path_err("reopening", dest))
}

fn remount_bind(top: &OwnedFd, dest: &Path, flags: MsFlags) -> Result<(), RootfsError> {
    let path = proc_fd_path(top);
    let base = MsFlags::MS_BIND | MsFlags::MS_REMOUNT;
    match mount(
        None::<&str>,
        &path,
        None::<&str>,
        base | flags,
        None::<&str>,
    ) {
        Ok(()) => Ok(()),
        // Flags the source mount has and a user namespace may not clear.
        Err(Errno::EPERM) => mount(
            None::<&str>,
            &path,
            None::<&str>,
            base | flags | locked_flags(&path),
            None::<&str>,
        )
        .map_err(path_err("remounting", dest)),
        Err(e) => Err(path_err("remounting", dest)(e)),
    }
}

fn apply_propagation(root: &Root, dest: &Path, plan: &MountPlan) -> Result<(), RootfsError> {
    if plan.propagation.is_empty() {
        return Ok(());
    }
    let top = reopen(root, dest)?;
    for flag in &plan.propagation {
        mount(
            None::<&str>,
            &proc_fd_path(&top),
            None::<&str>,
            *flag,
            None::<&str>,
        )
        .map_err(path_err("setting propagation of", dest))?;
    }
    Ok(())
}

/// A `cgroup` mount: on a v2 host the container's cgroup2 (or its cgroup
/// bound from the host without a cgroup namespace); on v1 and hybrid hosts a
/// tmpfs with one directory per hierarchy, as runc lays it out.
fn mount_cgroup(
    config: &RootfsConfig,
    root: &Root,
    dest: &Path,
    plan: &MountPlan,
) -> Result<(), RootfsError> {
    let flags = plan.flags & !MsFlags::MS_RDONLY;
    let readonly = plan.flags.contains(MsFlags::MS_RDONLY);
    if let [only] = config.cgroups {
        if only.name.is_empty() {
            mount_hierarchy(config, root, dest, only, plan.flags)?;
            return apply_propagation(root, dest, plan);
        }
    }
    let target = open_in_root(root.fd(), dest, Create::Dir).map_err(path_err("making", dest))?;
    mount(
        Some("tmpfs"),
        &proc_fd_path(&target),
        Some("tmpfs"),
        flags | MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
        Some("mode=755"),
    )
    .map_err(path_err("mounting tmpfs on", dest))?;
    for hierarchy in config.cgroups {
        let sub = dest.join(&hierarchy.name);
        mount_hierarchy(config, root, &sub, hierarchy, plan.flags)?;
        // Co-mounted controllers (`cpu,cpuacct`) also get a link per name.
        if hierarchy.name.contains(',') {
            for part in hierarchy.name.split(',') {
                let link = dest.join(part);
                let (dir, name) =
                    super::resolve::open_parent_in_root(root.fd(), &link, Create::Dir)
                        .map_err(path_err("making", dest))?;
                match nix::unistd::symlinkat(hierarchy.name.as_str(), dir.as_fd(), name) {
                    Ok(()) | Err(Errno::EEXIST) => {}
                    Err(e) => return Err(path_err("linking", &dest.join(part))(e)),
                }
            }
        }
    }
    if readonly {
        let top = reopen(root, dest)?;
        remount_bind(
            &top,
            dest,
            MsFlags::MS_RDONLY | MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
        )?;
    }
    apply_propagation(root, dest, plan)
}

fn mount_hierarchy(
    config: &RootfsConfig,
    root: &Root,
    dest: &Path,
    hierarchy: &super::CgroupMountSource,
    flags: MsFlags,
) -> Result<(), RootfsError> {
    if config.cgroup_ns {
        let target =
            open_in_root(root.fd(), dest, Create::Dir).map_err(path_err("making", dest))?;
        let options = (!hierarchy.options.is_empty()).then_some(hierarchy.options.as_str());
        let fs_flags = flags & !(MsFlags::MS_BIND | MsFlags::MS_REC | MsFlags::MS_REMOUNT);
        mount(
            Some(hierarchy.fstype),
            &proc_fd_path(&target),
            Some(hierarchy.fstype),
            fs_flags,
            options,
        )
        .map_err(path_err("mounting cgroup on", dest))
    } else {
        let plan = MountPlan {
            flags: flags | MsFlags::MS_BIND | MsFlags::MS_REC,
            data: String::new(),
            propagation: Vec::new(),
            bind: true,
        };
        bind(root, &hierarchy.host_dir, dest, &plan)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outside_proc_anything_goes() {
        for dest in ["/", "/procfs", "/data/proc", "/evil", "/sys/kernel"] {
            proc_mount_rule(Path::new(dest), ProcSource::Other).unwrap();
        }
    }

    #[test]
    fn on_proc_only_a_procfs() {
        proc_mount_rule(Path::new("/proc"), ProcSource::ProcRoot).unwrap();
        let err = proc_mount_rule(Path::new("/proc"), ProcSource::Other).unwrap_err();
        assert!(err.contains("not of type proc"), "{err}");
    }

    #[test]
    fn inside_proc_only_runcs_exceptions() {
        for dest in PROC_MOUNT_EXCEPTIONS {
            proc_mount_rule(Path::new(dest), ProcSource::Other).unwrap();
        }
        for dest in [
            "/proc/sys/kernel/core_pattern",
            "/proc/sysrq-trigger",
            "/proc/self",
            "/proc/net",
            "/proc/cpuinfo/x",
            "/proc/sys/kernel",
        ] {
            let err = proc_mount_rule(Path::new(dest), ProcSource::ProcRoot).unwrap_err();
            assert!(err.contains("inside /proc"), "{dest}: {err}");
        }
    }

    #[test]
    fn the_path_judged_is_where_links_lead() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("proc/sys")).unwrap();
        std::os::unix::fs::symlink("/proc/sys", dir.path().join("evil")).unwrap();
        let root = Root {
            fd: nix::fcntl::open(
                dir.path(),
                OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
                Mode::empty(),
            )
            .unwrap(),
            dev_readonly: false,
        };
        let dest = Path::new("/evil");
        let target = open_in_root(root.fd(), dest, Create::Nothing).unwrap();
        assert_eq!(
            path_in_root(&root, &target, dest).unwrap(),
            Path::new("/proc/sys")
        );
        let err = check_proc_mount(&root, &target, dest, ProcSource::Other)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("/evil leads to /proc/sys cannot be mounted"),
            "{err}"
        );
    }
}
