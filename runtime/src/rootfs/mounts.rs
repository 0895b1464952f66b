//! Each spec mount, made inside the rootfs through descriptors so that a
//! symlink in the rootfs can never send a mount to the host.

use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::mount::MsFlags;
use nix::sys::stat::Mode;
use oci_spec::runtime::Mount;

use super::resolve::{open_in_root, proc_fd_path, Create};
use super::{locked_flags, path_err, MountPlan, Root, RootfsConfig, RootfsError};
use crate::sys;

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
    match sys::mount(
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
    sys::mount(
        Some(&proc_fd_path(&src)),
        &proc_fd_path(&target),
        None,
        MsFlags::MS_BIND | (plan.flags & MsFlags::MS_REC),
        None,
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
    match sys::mount(None::<&str>, &path, None, base | flags, None) {
        Ok(()) => Ok(()),
        // Flags the source mount has and a user namespace may not clear.
        Err(Errno::EPERM) => sys::mount(
            None::<&str>,
            &path,
            None,
            base | flags | locked_flags(&path),
            None,
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
        sys::mount(None::<&str>, &proc_fd_path(&top), None, *flag, None)
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
    sys::mount(
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
        sys::mount(
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
    use super::super::fixture::Bundle;
    use super::super::CgroupMountSource;
    use super::*;
    use crate::sys::fake::{Fake, Recorded};
    use serde_json::json;

    /// A mount(2) with no source, type or data: a remount or a propagation
    /// change.
    fn change(target: PathBuf, flags: MsFlags) -> Recorded {
        Recorded::mount(None, target, None, flags, None)
    }

    fn bind_of(source: &Path, target: PathBuf, flags: MsFlags) -> Recorded {
        Recorded::mount(source.to_str(), target, None, flags, None)
    }

    fn mount_all_of(bundle: &Bundle) -> Result<(), String> {
        mount_all(&bundle.config(), &bundle.root()).map_err(|e| e.to_string())
    }

    const REMOUNT: MsFlags = MsFlags::MS_BIND.union(MsFlags::MS_REMOUNT);

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

    #[test]
    fn a_bind_binds_then_remounts_with_the_asked_flags_then_sets_propagation() {
        let b = Bundle::new(json!({"mounts": [{
            "destination": "/data", "type": "bind", "source": "src",
            "options": ["rbind", "ro", "nosuid", "rprivate"]
        }]}));
        let source = b.path.join("src");
        std::fs::create_dir(&source).unwrap();
        let fake = Fake::new();
        mount_all_of(&b).unwrap();
        let data = b.at("/data");
        assert_eq!(
            fake.calls(),
            [
                bind_of(&source, data.clone(), MsFlags::MS_BIND | MsFlags::MS_REC),
                change(
                    data.clone(),
                    REMOUNT | MsFlags::MS_RDONLY | MsFlags::MS_NOSUID
                ),
                change(data.clone(), MsFlags::MS_PRIVATE | MsFlags::MS_REC),
            ]
        );
        assert!(
            data.is_dir(),
            "the bind target of a directory is a directory"
        );
    }

    #[test]
    fn a_bind_of_a_file_makes_a_file_and_needs_no_remount_without_flags() {
        let b = Bundle::new(json!({"mounts": [{
            "destination": "/etc/hosts", "type": "bind", "source": "hosts",
            "options": ["bind"]
        }]}));
        let source = b.path.join("hosts");
        std::fs::write(&source, "127.0.0.1 localhost\n").unwrap();
        let fake = Fake::new();
        mount_all_of(&b).unwrap();
        let target = b.at("/etc/hosts");
        assert_eq!(
            fake.calls(),
            [bind_of(&source, target.clone(), MsFlags::MS_BIND)]
        );
        assert!(target.is_file());
    }

    #[test]
    fn a_bind_remount_refused_with_eperm_is_retried_keeping_the_locked_flags() {
        let b = Bundle::new(json!({"mounts": [{
            "destination": "/data", "type": "bind", "source": "src", "options": ["bind", "ro"]
        }]}));
        let source = b.path.join("src");
        std::fs::create_dir(&source).unwrap();
        let mut refused = false;
        let fake = Fake::answering(move |call| match call {
            Recorded::Mount { flags, .. } if flags.contains(MsFlags::MS_REMOUNT) && !refused => {
                refused = true;
                Err(Errno::EPERM)
            }
            _ => Ok(()),
        });
        mount_all_of(&b).unwrap();
        let data = b.at("/data");
        let asked = REMOUNT | MsFlags::MS_RDONLY;
        assert_eq!(
            fake.calls(),
            [
                bind_of(&source, data.clone(), MsFlags::MS_BIND),
                change(data.clone(), asked),
                change(data.clone(), asked | locked_flags(&data)),
            ]
        );
    }

    #[test]
    fn a_bind_remount_refused_twice_names_the_mount() {
        let b = Bundle::new(json!({"mounts": [{
            "destination": "/data", "type": "bind", "source": "src", "options": ["bind", "ro"]
        }]}));
        std::fs::create_dir(b.path.join("src")).unwrap();
        let fake = Fake::answering(|call| match call {
            Recorded::Mount { flags, .. } if flags.contains(MsFlags::MS_REMOUNT) => {
                Err(Errno::EPERM)
            }
            _ => Ok(()),
        });
        assert_eq!(
            mount_all_of(&b).unwrap_err(),
            "mounts[0] (bind on /data): remounting /data: EPERM: Operation not permitted"
        );
        assert_eq!(fake.calls().len(), 3);
    }

    #[test]
    fn a_tmpfs_is_mounted_once_with_its_flags_and_data() {
        let b = Bundle::new(json!({"mounts": [
            {
                "destination": "/run", "type": "tmpfs", "source": "tmpfs",
                "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]
            },
            { "destination": "/scratch", "type": "tmpfs", "source": "tmpfs" }
        ]}));
        let fake = Fake::new();
        mount_all_of(&b).unwrap();
        assert_eq!(
            fake.calls(),
            [
                Recorded::mount(
                    Some("tmpfs"),
                    b.at("/run"),
                    Some("tmpfs"),
                    MsFlags::MS_NOSUID | MsFlags::MS_STRICTATIME,
                    Some("mode=755,size=65536k"),
                ),
                Recorded::mount(
                    Some("tmpfs"),
                    b.at("/scratch"),
                    Some("tmpfs"),
                    MsFlags::empty(),
                    None
                ),
            ]
        );
    }

    #[test]
    fn the_mount_label_is_added_to_the_data() {
        let b = Bundle::new(json!({
            "linux": { "mountLabel": "system_u:object_r:container_file_t:s0" },
            "mounts": [{
                "destination": "/run", "type": "tmpfs", "source": "tmpfs", "options": ["mode=755"]
            }]
        }));
        let fake = Fake::new();
        mount_all_of(&b).unwrap();
        assert_eq!(
            fake.calls(),
            [Recorded::mount(
                Some("tmpfs"),
                b.at("/run"),
                Some("tmpfs"),
                MsFlags::empty(),
                Some("mode=755,context=\"system_u:object_r:container_file_t:s0\""),
            )]
        );
    }

    #[test]
    fn dev_is_mounted_writable_whatever_the_spec_asks() {
        let b = Bundle::new(json!({"mounts": [{
            "destination": "/dev", "type": "tmpfs", "source": "tmpfs",
            "options": ["nosuid", "strictatime", "mode=755", "size=65536k", "ro"]
        }]}));
        let fake = Fake::new();
        mount_all_of(&b).unwrap();
        assert_eq!(
            fake.calls(),
            [Recorded::mount(
                Some("tmpfs"),
                b.at("/dev"),
                Some("tmpfs"),
                MsFlags::MS_NOSUID | MsFlags::MS_STRICTATIME,
                Some("mode=755,size=65536k"),
            )]
        );
    }

    #[test]
    fn a_failed_mount_names_its_index_type_and_destination() {
        let b = Bundle::new(json!({"mounts": [
            { "destination": "/run", "type": "tmpfs", "source": "tmpfs" },
            { "destination": "/tmp", "type": "tmpfs", "source": "tmpfs" },
            { "destination": "/never", "type": "tmpfs", "source": "tmpfs" }
        ]}));
        let tmp = b.at("/tmp");
        let fake = Fake::answering(move |call| match call {
            Recorded::Mount { target, .. } if *target == tmp => Err(Errno::EACCES),
            _ => Ok(()),
        });
        assert_eq!(
            mount_all_of(&b).unwrap_err(),
            "mounts[1] (tmpfs on /tmp): mounting on /tmp: EACCES: Permission denied"
        );
        assert_eq!(fake.calls().len(), 2, "nothing is mounted after a failure");
    }

    #[test]
    fn sysfs_refused_in_a_user_namespace_is_the_hosts_bound() {
        let spec = json!({"mounts": [{
            "destination": "/sys", "type": "sysfs", "source": "sysfs",
            "options": ["nosuid", "noexec", "nodev", "ro"]
        }]});
        let refuse_sysfs = |call: &Recorded| match call {
            Recorded::Mount { fstype, .. } if fstype.as_deref() == Some("sysfs") => {
                Err(Errno::EPERM)
            }
            _ => Ok(()),
        };
        let flags = MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC | MsFlags::MS_NODEV;
        let ro = flags | MsFlags::MS_RDONLY;

        let mut b = Bundle::new(spec.clone());
        b.user_ns = true;
        let fake = Fake::answering(refuse_sysfs);
        mount_all_of(&b).unwrap();
        let sys = b.at("/sys");
        assert_eq!(
            fake.calls(),
            [
                Recorded::mount(Some("sysfs"), sys.clone(), Some("sysfs"), ro, None),
                bind_of(
                    Path::new("/sys"),
                    sys.clone(),
                    MsFlags::MS_BIND | MsFlags::MS_REC
                ),
                change(sys.clone(), REMOUNT | ro),
            ]
        );
        drop(fake);

        // Without a user namespace the refusal is the answer.
        let b = Bundle::new(spec);
        let _fake = Fake::answering(refuse_sysfs);
        assert_eq!(
            mount_all_of(&b).unwrap_err(),
            "mounts[0] (sysfs on /sys): mounting on /sys: EPERM: Operation not permitted"
        );
    }

    #[test]
    fn a_mount_led_into_proc_by_a_symlink_is_refused_before_mounting() {
        let b = Bundle::new(json!({"mounts": [
            { "destination": "/evil", "type": "tmpfs", "source": "tmpfs" }
        ]}));
        b.mkdir("/proc/sys");
        std::os::unix::fs::symlink("/proc/sys", b.at("/evil")).unwrap();
        let fake = Fake::new();
        assert_eq!(
            mount_all_of(&b).unwrap_err(),
            "mounts[0] (tmpfs on /evil): /evil leads to /proc/sys cannot be mounted \
             because it is inside /proc"
        );
        assert!(fake.calls().is_empty());
    }

    #[test]
    fn proc_takes_a_procfs_and_only_runcs_files_inside_it() {
        let source = |b: &Bundle, name: &str| {
            let path = b.path.join(name);
            std::fs::create_dir_all(&path).unwrap();
            path
        };
        // A directory bound over /proc is not a procfs.
        let b = Bundle::new(json!({"mounts": [
            { "destination": "/proc", "type": "bind", "source": "fakeproc", "options": ["rbind"] }
        ]}));
        source(&b, "fakeproc");
        let fake = Fake::new();
        assert_eq!(
            mount_all_of(&b).unwrap_err(),
            "mounts[0] (bind on /proc): /proc cannot be mounted because it is not of type proc"
        );
        assert!(fake.calls().is_empty());
        drop(fake);

        // A proc mount is one; lxcfs's files may be bound inside it.
        let b = Bundle::new(json!({"mounts": [
            { "destination": "/proc", "type": "proc", "source": "proc" },
            { "destination": "/proc/cpuinfo", "type": "bind", "source": "cpuinfo", "options": ["bind"] },
            { "destination": "/proc/kcore", "type": "bind", "source": "kcore", "options": ["bind"] }
        ]}));
        std::fs::write(b.path.join("cpuinfo"), "").unwrap();
        std::fs::write(b.path.join("kcore"), "").unwrap();
        let fake = Fake::new();
        assert_eq!(
            mount_all_of(&b).unwrap_err(),
            "mounts[2] (bind on /proc/kcore): /proc/kcore cannot be mounted because it is \
             inside /proc"
        );
        assert_eq!(
            fake.calls(),
            [
                Recorded::mount(
                    Some("proc"),
                    b.at("/proc"),
                    Some("proc"),
                    MsFlags::empty(),
                    None
                ),
                bind_of(
                    &b.path.join("cpuinfo"),
                    b.at("/proc/cpuinfo"),
                    MsFlags::MS_BIND
                ),
            ]
        );
    }

    /// The spec's `/sys/fs/cgroup` mount, as runc's template writes it.
    fn cgroup_mount_spec() -> serde_json::Value {
        json!({"mounts": [{
            "destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup",
            "options": ["nosuid", "noexec", "nodev", "relatime", "ro"]
        }]})
    }

    fn hierarchy(b: &Bundle, name: &str, fstype: &'static str, options: &str) -> CgroupMountSource {
        let host_dir = b.path.join("host-cgroup").join(name);
        std::fs::create_dir_all(&host_dir).unwrap();
        CgroupMountSource {
            name: name.into(),
            fstype,
            options: options.into(),
            host_dir,
        }
    }

    const CGROUP_FLAGS: MsFlags = MsFlags::MS_NOSUID
        .union(MsFlags::MS_NOEXEC)
        .union(MsFlags::MS_NODEV)
        .union(MsFlags::MS_RELATIME);

    #[test]
    fn on_cgroup_v2_the_mount_is_the_containers_cgroup2_or_its_cgroup_bound() {
        let mut b = Bundle::new(cgroup_mount_spec());
        let only = hierarchy(&b, "", "cgroup2", "");
        b.cgroups = vec![only.clone()];
        let dest = b.at("/sys/fs/cgroup");
        let ro = CGROUP_FLAGS | MsFlags::MS_RDONLY;

        b.cgroup_ns = true;
        let fake = Fake::new();
        mount_all_of(&b).unwrap();
        assert_eq!(
            fake.calls(),
            [Recorded::mount(
                Some("cgroup2"),
                dest.clone(),
                Some("cgroup2"),
                ro,
                None
            )]
        );
        drop(fake);

        b.cgroup_ns = false;
        let fake = Fake::new();
        mount_all_of(&b).unwrap();
        assert_eq!(
            fake.calls(),
            [
                bind_of(
                    &only.host_dir,
                    dest.clone(),
                    MsFlags::MS_BIND | MsFlags::MS_REC
                ),
                change(dest, REMOUNT | ro),
            ]
        );
    }

    #[test]
    fn on_cgroup_v1_the_mount_is_a_tmpfs_with_a_directory_per_hierarchy() {
        let mut b = Bundle::new(cgroup_mount_spec());
        b.cgroups = vec![
            hierarchy(&b, "memory", "cgroup", "memory"),
            hierarchy(&b, "cpu,cpuacct", "cgroup", "cpu,cpuacct"),
            hierarchy(&b, "unified", "cgroup2", ""),
        ];
        b.cgroup_ns = true;
        let fake = Fake::new();
        mount_all_of(&b).unwrap();
        let dest = b.at("/sys/fs/cgroup");
        let ro = CGROUP_FLAGS | MsFlags::MS_RDONLY;
        let hidden = MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
        assert_eq!(
            fake.calls(),
            [
                // Read-only only once every hierarchy is in it.
                Recorded::mount(
                    Some("tmpfs"),
                    dest.clone(),
                    Some("tmpfs"),
                    CGROUP_FLAGS | hidden,
                    Some("mode=755")
                ),
                Recorded::mount(
                    Some("cgroup"),
                    dest.join("memory"),
                    Some("cgroup"),
                    ro,
                    Some("memory")
                ),
                Recorded::mount(
                    Some("cgroup"),
                    dest.join("cpu,cpuacct"),
                    Some("cgroup"),
                    ro,
                    Some("cpu,cpuacct")
                ),
                Recorded::mount(
                    Some("cgroup2"),
                    dest.join("unified"),
                    Some("cgroup2"),
                    ro,
                    None
                ),
                change(dest.clone(), REMOUNT | MsFlags::MS_RDONLY | hidden),
            ]
        );
        for part in ["cpu", "cpuacct"] {
            assert_eq!(
                std::fs::read_link(dest.join(part)).unwrap(),
                Path::new("cpu,cpuacct"),
                "{part}"
            );
        }
    }

    #[test]
    fn on_cgroup_v1_without_a_cgroup_namespace_each_hierarchy_is_bound_from_the_host() {
        let mut b = Bundle::new(cgroup_mount_spec());
        b.cgroups = vec![
            hierarchy(&b, "memory", "cgroup", "memory"),
            hierarchy(&b, "pids", "cgroup", "pids"),
        ];
        let fake = Fake::new();
        mount_all_of(&b).unwrap();
        let dest = b.at("/sys/fs/cgroup");
        let ro = CGROUP_FLAGS | MsFlags::MS_RDONLY;
        let rbind = MsFlags::MS_BIND | MsFlags::MS_REC;
        let calls = fake.calls();
        assert_eq!(
            calls[1..5],
            [
                bind_of(&b.cgroups[0].host_dir, dest.join("memory"), rbind),
                change(dest.join("memory"), REMOUNT | ro),
                bind_of(&b.cgroups[1].host_dir, dest.join("pids"), rbind),
                change(dest.join("pids"), REMOUNT | ro),
            ]
        );
        assert_eq!(
            calls.len(),
            6,
            "a tmpfs, two binds and their remounts, the remount"
        );
    }
}
