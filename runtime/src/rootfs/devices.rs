//! Device nodes in the container's /dev: runc's default set, the spec's
//! `linux.devices`, and the standard symlinks.

use std::os::fd::AsFd;
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::mount::MsFlags;
use nix::sys::stat::{makedev, Mode, SFlag};
use nix::unistd::{Gid, Uid};
use oci_spec::runtime::LinuxDeviceType;

use super::resolve::{open_in_root, open_parent_in_root, proc_fd_path, Create};
use super::{path_err, Root, RootfsConfig, RootfsError};
use crate::sys::{self, Call};

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
    let mknod = Call::Mknodat {
        dir: dir.as_fd(),
        name,
        kind: node.kind,
        mode: Mode::from_bits_truncate(node.mode),
        dev: makedev(node.major, node.minor),
    };
    match sys::call(mknod) {
        Ok(()) => {}
        Err(Errno::EEXIST) => {
            // Replace what the image put there: the spec decides this node.
            nix::unistd::unlinkat(dir.as_fd(), name, nix::unistd::UnlinkatFlags::NoRemoveDir)
                .map_err(path_err("replacing device", &node.path))?;
            sys::call(mknod).map_err(path_err("creating device", &node.path))?;
        }
        Err(e) => return Err(path_err("creating device", &node.path)(e)),
    }
    sys::call(Call::Fchownat {
        dir: dir.as_fd(),
        name,
        uid: Uid::from_raw(node.uid),
        gid: Gid::from_raw(node.gid),
    })
    .map_err(path_err("changing owner of device", &node.path))
}

/// In a user namespace mknod is not allowed: bind the host's node instead.
fn bind_device(root: &Root, node: &DeviceNode) -> Result<(), RootfsError> {
    let host = nix::fcntl::open(&node.path, OFlag::O_PATH | OFlag::O_CLOEXEC, Mode::empty())
        .map_err(path_err("opening host device", &node.path))?;
    let target = open_in_root(root.fd(), &node.path, Create::File)
        .map_err(path_err("making", &node.path))?;
    sys::mount(
        Some(&proc_fd_path(&host)),
        &proc_fd_path(&target),
        None,
        MsFlags::MS_BIND,
        None,
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
    use super::super::fixture::Bundle;
    use super::*;
    use crate::sys::fake::{Fake, Recorded};
    use serde_json::json;

    const DEFAULT_NAMES: [&str; 6] = ["null", "zero", "full", "random", "urandom", "tty"];

    fn mknod(path: PathBuf, kind: SFlag, mode: u32, major: u64, minor: u64) -> Recorded {
        Recorded::Mknodat {
            path,
            kind,
            mode: Mode::from_bits_truncate(mode),
            dev: makedev(major, minor),
        }
    }

    fn chown(path: PathBuf, uid: u32, gid: u32) -> Recorded {
        Recorded::Fchownat { path, uid, gid }
    }

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

    #[test]
    fn devices_are_made_with_mknod_and_owned_as_the_spec_says() {
        let b = Bundle::new(json!({"linux": {"devices": [
            { "path": "/dev/fuse", "type": "c", "major": 10, "minor": 229,
              "fileMode": 384, "uid": 1000, "gid": 1001 },
            { "path": "/dev/disk/sda", "type": "b", "major": 8, "minor": 0 },
            { "path": "/dev/pipe", "type": "p", "major": 0, "minor": 0 }
        ]}}));
        let fake = Fake::new();
        create_devices(&b.config(), &b.root()).unwrap();
        let mut expected = Vec::new();
        for (d, (major, minor)) in
            default_devices()
                .iter()
                .zip([(1, 3), (1, 5), (1, 7), (1, 8), (1, 9), (5, 0)])
        {
            let path = b.at(&d.path.to_string_lossy());
            expected.push(mknod(path.clone(), SFlag::S_IFCHR, 0o666, major, minor));
            expected.push(chown(path, 0, 0));
        }
        expected.extend([
            mknod(b.at("/dev/fuse"), SFlag::S_IFCHR, 0o600, 10, 229),
            chown(b.at("/dev/fuse"), 1000, 1001),
            mknod(b.at("/dev/disk/sda"), SFlag::S_IFBLK, 0o666, 8, 0),
            chown(b.at("/dev/disk/sda"), 0, 0),
            mknod(b.at("/dev/pipe"), SFlag::S_IFIFO, 0o666, 0, 0),
            chown(b.at("/dev/pipe"), 0, 0),
        ]);
        assert_eq!(fake.calls(), expected);
        assert!(b.at("/dev/disk").is_dir(), "a device's directory is made");
    }

    #[test]
    fn the_dev_links_are_made_and_ptmx_leads_to_the_containers_devpts() {
        let b = Bundle::new(json!({}));
        // An image's own /dev/ptmx gives way.
        b.touch("/dev/ptmx");
        let _fake = Fake::new();
        create_devices(&b.config(), &b.root()).unwrap();
        let link = |path: &str| std::fs::read_link(b.at(path)).unwrap();
        assert_eq!(link("/dev/fd"), Path::new("/proc/self/fd"));
        assert_eq!(link("/dev/stdin"), Path::new("/proc/self/fd/0"));
        assert_eq!(link("/dev/stdout"), Path::new("/proc/self/fd/1"));
        assert_eq!(link("/dev/stderr"), Path::new("/proc/self/fd/2"));
        assert_eq!(link("/dev/ptmx"), Path::new("pts/ptmx"));
        assert_eq!(
            b.at("/dev/core").symlink_metadata().is_ok(),
            Path::new("/proc/kcore").exists()
        );
    }

    #[test]
    fn a_node_the_image_has_is_replaced() {
        let b = Bundle::new(json!({}));
        let null = b.touch("/dev/null");
        let mut made = false;
        let fake = Fake::answering(move |call| match call {
            Recorded::Mknodat { path, .. } if path.ends_with("null") && !made => {
                made = true;
                Err(Errno::EEXIST)
            }
            _ => Ok(()),
        });
        create_devices(&b.config(), &b.root()).unwrap();
        assert!(!null.exists(), "the image's file was removed");
        let calls: Vec<_> = fake
            .calls()
            .into_iter()
            .filter(|c| matches!(c, Recorded::Mknodat { path, .. } | Recorded::Fchownat { path, .. } if *path == null))
            .collect();
        assert_eq!(
            calls,
            [
                mknod(null.clone(), SFlag::S_IFCHR, 0o666, 1, 3),
                mknod(null.clone(), SFlag::S_IFCHR, 0o666, 1, 3),
                chown(null, 0, 0),
            ]
        );
    }

    #[test]
    fn in_a_user_namespace_devices_are_the_hosts_bound() {
        let mut b = Bundle::new(json!({}));
        b.user_ns = true;
        let fake = Fake::new();
        create_devices(&b.config(), &b.root()).unwrap();
        let expected: Vec<_> = DEFAULT_NAMES
            .iter()
            .map(|name| {
                let host = format!("/dev/{name}");
                Recorded::mount(
                    Some(host.as_str()),
                    b.at(&host),
                    None,
                    MsFlags::MS_BIND,
                    None,
                )
            })
            .collect();
        assert_eq!(fake.calls(), expected);
        for name in DEFAULT_NAMES {
            assert!(b.at(&format!("/dev/{name}")).is_file(), "{name}");
        }
    }

    #[test]
    fn a_dev_bound_from_the_host_gets_no_devices_or_links() {
        let b = Bundle::new(json!({"mounts": [
            { "destination": "/dev", "type": "bind", "source": "/dev", "options": ["rbind"] }
        ]}));
        let fake = Fake::new();
        create_devices(&b.config(), &b.root()).unwrap();
        assert!(fake.calls().is_empty());
        assert!(!b.at("/dev").exists());
    }

    #[test]
    fn type_a_is_refused_by_field_before_any_device_is_made() {
        let b = Bundle::new(json!({"linux": {"devices": [
            { "path": "/dev/all", "type": "a", "major": 0, "minor": 0 }
        ]}}));
        let fake = Fake::new();
        let err = create_devices(&b.config(), &b.root()).unwrap_err();
        assert_eq!(
            err.to_string(),
            "linux.devices: /dev/all: type \"a\" is only valid in cgroup rules"
        );
        assert!(fake.calls().is_empty());
    }

    #[test]
    fn a_device_that_cannot_be_made_is_named() {
        let b = Bundle::new(json!({}));
        let _fake = Fake::answering(|call| match call {
            Recorded::Mknodat { .. } => Err(Errno::EPERM),
            _ => Ok(()),
        });
        let err = create_devices(&b.config(), &b.root()).unwrap_err();
        assert_eq!(
            err.to_string(),
            "creating device /dev/null: EPERM: Operation not permitted"
        );
        let _fake = Fake::answering(|call| match call {
            Recorded::Fchownat { .. } => Err(Errno::EINVAL),
            _ => Ok(()),
        });
        let err = create_devices(&b.config(), &b.root()).unwrap_err();
        assert_eq!(
            err.to_string(),
            "changing owner of device /dev/null: EINVAL: Invalid argument"
        );
    }
}
