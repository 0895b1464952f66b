//! Device nodes in the container's /dev: runc's default set, the spec's
//! `linux.devices`, and the standard symlinks.

use std::os::fd::AsFd;
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::mount::{mount, MsFlags};
use nix::sys::stat::{makedev, Mode, SFlag};
use nix::unistd::{Gid, Uid};
use oci_spec::runtime::LinuxDeviceType;

use super::resolve::{open_in_root, open_parent_in_root, proc_fd_path, Create};
use super::{path_err, Root, RootfsConfig, RootfsError};

/// A device node to make.
#[derive(Debug, Clone, PartialEq, Eq)]
struct DeviceNode {
    path: PathBuf,
    kind: SFlag,
    major: u64,
    minor: u64,
    mode: u32,
    uid: u32,
    gid: u32,
}

/// The devices every container gets (runc's list).
fn default_devices() -> Vec<DeviceNode> {
    [
        ("null", 1, 3),
        ("zero", 1, 5),
        ("full", 1, 7),
        ("random", 1, 8),
        ("urandom", 1, 9),
        ("tty", 5, 0),
    ]
    .into_iter()
    .map(|(name, major, minor)| DeviceNode {
        path: Path::new("/dev").join(name),
        kind: SFlag::S_IFCHR,
        major,
        minor,
        mode: 0o666,
        uid: 0,
        gid: 0,
    })
    .collect()
}

fn spec_devices(config: &RootfsConfig) -> Result<Vec<DeviceNode>, RootfsError> {
    let mut nodes = Vec::new();
    for dev in config
        .spec
        .linux()
        .iter()
        .flat_map(|l| l.devices().iter().flatten())
    {
        let kind = match dev.typ() {
            LinuxDeviceType::C | LinuxDeviceType::U => SFlag::S_IFCHR,
            LinuxDeviceType::B => SFlag::S_IFBLK,
            LinuxDeviceType::P => SFlag::S_IFIFO,
            LinuxDeviceType::A => {
                return Err(RootfsError::Other(format!(
                    "linux.devices: {}: type \"a\" is only valid in cgroup rules",
                    dev.path().display()
                )))
            }
        };
        nodes.push(DeviceNode {
            path: dev.path().clone(),
            kind,
            major: dev.major() as u64,
            minor: dev.minor() as u64,
            mode: dev.file_mode().unwrap_or(0o666),
            uid: dev.uid().unwrap_or(0),
            gid: dev.gid().unwrap_or(0),
        });
    }
    Ok(nodes)
}

/// Whether /dev comes from the host (a bind mount), in which case it already
/// has its devices and lucid adds none.
fn dev_is_bound(config: &RootfsConfig) -> bool {
    config.spec.mounts().iter().flatten().any(|m| {
        m.destination() == Path::new("/dev")
            && super::MountPlan::from_spec(m).is_ok_and(|plan| plan.bind)
    })
}

/// Makes the default devices, the spec's devices and the /dev symlinks.
pub fn create_devices(config: &RootfsConfig, root: &Root) -> Result<(), RootfsError> {
    let bound = dev_is_bound(config);
    let mut nodes = if bound { Vec::new() } else { default_devices() };
    nodes.extend(spec_devices(config)?);
    for node in &nodes {
        if config.user_ns {
            bind_device(root, node)?;
        } else {
            make_device(root, node)?;
        }
    }
    if !bound {
        make_symlinks(root)?;
    }
    Ok(())
}

fn make_device(root: &Root, node: &DeviceNode) -> Result<(), RootfsError> {
    let (dir, name) = open_parent_in_root(root.fd(), &node.path, Create::Dir)
        .map_err(path_err("making the directory of", &node.path))?;
    let perm = Mode::from_bits_truncate(node.mode);
    let dev = makedev(node.major, node.minor);
    match nix::sys::stat::mknodat(dir.as_fd(), name, node.kind, perm, dev) {
        Ok(()) => {}
        Err(Errno::EEXIST) => {
            // Replace what the image put there: the spec decides this node.
            nix::unistd::unlinkat(dir.as_fd(), name, nix::unistd::UnlinkatFlags::NoRemoveDir)
                .map_err(path_err("replacing device", &node.path))?;
            nix::sys::stat::mknodat(dir.as_fd(), name, node.kind, perm, dev)
                .map_err(path_err("creating device", &node.path))?;
        }
        Err(e) => return Err(path_err("creating device", &node.path)(e)),
    }
    nix::unistd::fchownat(
        dir.as_fd(),
        name,
        Some(Uid::from_raw(node.uid)),
        Some(Gid::from_raw(node.gid)),
        nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
    )
    .map_err(path_err("changing owner of device", &node.path))
}

/// In a user namespace mknod is not allowed: bind the host's node instead.
fn bind_device(root: &Root, node: &DeviceNode) -> Result<(), RootfsError> {
    let host = nix::fcntl::open(&node.path, OFlag::O_PATH | OFlag::O_CLOEXEC, Mode::empty())
        .map_err(path_err("opening host device", &node.path))?;
    let target = open_in_root(root.fd(), &node.path, Create::File)
        .map_err(path_err("making", &node.path))?;
    mount(
        Some(&proc_fd_path(&host)),
        &proc_fd_path(&target),
        None::<&str>,
        MsFlags::MS_BIND,
        None::<&str>,
    )
    .map_err(path_err("binding device", &node.path))
}

/// /dev/fd, /dev/std{in,out,err}, /dev/core and /dev/ptmx → pts/ptmx.
fn make_symlinks(root: &Root) -> Result<(), RootfsError> {
    let mut links = vec![
        ("/dev/fd", "/proc/self/fd"),
        ("/dev/stdin", "/proc/self/fd/0"),
        ("/dev/stdout", "/proc/self/fd/1"),
        ("/dev/stderr", "/proc/self/fd/2"),
    ];
    if Path::new("/proc/kcore").exists() {
        links.push(("/dev/core", "/proc/kcore"));
    }
    for (link, target) in links {
        let link = Path::new(link);
        let (dir, name) = open_parent_in_root(root.fd(), link, Create::Dir)
            .map_err(path_err("making the directory of", link))?;
        match nix::unistd::symlinkat(target, dir.as_fd(), name) {
            Ok(()) | Err(Errno::EEXIST) => {}
            Err(e) => return Err(path_err("linking", link)(e)),
        }
    }
    // The container's devpts instance has its own ptmx; /dev/ptmx must lead to it.
    let ptmx = Path::new("/dev/ptmx");
    let (dir, name) = open_parent_in_root(root.fd(), ptmx, Create::Dir)
        .map_err(path_err("making the directory of", ptmx))?;
    match nix::unistd::unlinkat(dir.as_fd(), name, nix::unistd::UnlinkatFlags::NoRemoveDir) {
        Ok(()) | Err(Errno::ENOENT) => {}
        Err(e) => return Err(path_err("removing", ptmx)(e)),
    }
    nix::unistd::symlinkat("pts/ptmx", dir.as_fd(), name).map_err(path_err("linking", ptmx))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_devices_are_runcs_six() {
        let names: Vec<_> = default_devices()
            .iter()
            .map(|d| d.path.display().to_string())
            .collect();
        assert_eq!(
            names,
            [
                "/dev/null",
                "/dev/zero",
                "/dev/full",
                "/dev/random",
                "/dev/urandom",
                "/dev/tty"
            ]
        );
        assert!(default_devices().iter().all(|d| d.mode == 0o666));
    }
}
