//! The systemd guest's disk: Debian 12 (minbase) with systemd, udev, D-Bus
//! and podman, made by debootstrap into a directory and turned into an ext4
//! image by `mkfs.ext4 -d` (no loop device, nothing mounted on the host but
//! what debootstrap mounts inside its target, unmounted if it fails). The
//! image is the cached base; each run boots a qcow2 overlay of it.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

use super::stamp;

/// The suite and mirror of the guest.
const SUITE: &str = "bookworm";
const MIRROR: &str = "http://deb.debian.org/debian";

/// What the guest has beyond minbase: systemd as init with udev (without it
/// the boot waits 90 s for ttyS0) and D-Bus; busybox-static (the tests'
/// rootfs, and the runner's process-group kill); podman with what it needs
/// to run with `--cgroup-manager cgroupfs` (debootstrap does not resolve
/// virtual packages, so container-network-stack is named); iproute2 and
/// procps as on any host.
pub const PACKAGES: &[&str] = &[
    "systemd-sysv",
    "dbus",
    "udev",
    "kmod",
    "busybox-static",
    "podman",
    "conmon",
    "crun",
    "golang-github-containers-common",
    "containernetworking-plugins",
    "uidmap",
    "iproute2",
    "procps",
];

/// The image's size (sparse: only what is written takes space).
const SIZE: &str = "3G";

/// The units that run the plan at boot.
const SERVICE: &str = include_str!("guest/lucid-vm.service");
const TARGET: &str = include_str!("guest/lucid-vm.target");

/// Timers and services that would wake up during a run and compete for the
/// two emulated CPUs.
const MASKED: &[&str] = &[
    "apt-daily.timer",
    "apt-daily-upgrade.timer",
    "dpkg-db-backup.timer",
    "e2scrub_all.timer",
    "fstrim.timer",
    "podman-auto-update.timer",
    "systemd-tmpfiles-clean.timer",
    "man-db.timer",
];

/// Bumped when `configure` changes in a way the inputs do not show.
const LAYOUT_VERSION: &str = "1";

/// The base image (built unless cached). Returns its path and whether it
/// was built now.
pub fn base(vm_dir: &Path) -> Result<(PathBuf, bool)> {
    let images = vm_dir.join("images");
    std::fs::create_dir_all(&images)?;
    let out = images.join(format!("systemd-{SUITE}.img"));
    let mut inputs = stamp::Inputs::default();
    inputs
        .add("layout", LAYOUT_VERSION)
        .add("suite", SUITE)
        .add("mirror", MIRROR)
        .add("packages", PACKAGES.join(","))
        .add("size", SIZE)
        .add("service", SERVICE)
        .add("target", TARGET)
        .add("masked", MASKED.join(","));
    let hash = inputs.hex();
    if stamp::fresh(&out, &hash) {
        return Ok((out, false));
    }
    remove_stale_builds(&images);
    let work = Build {
        dir: images.join(format!(".systemd-build-{}", std::process::id())),
    };
    let root = work.dir.join("root");
    std::fs::create_dir_all(&work.dir)?;
    let cache = vm_dir.join("debootstrap-cache");
    std::fs::create_dir_all(&cache)?;
    let status = Command::new("debootstrap")
        .arg("--variant=minbase")
        .arg(format!("--cache-dir={}", cache.display()))
        .arg(format!("--include={}", PACKAGES.join(",")))
        .arg(SUITE)
        .arg(&root)
        .arg(MIRROR)
        .status()
        .context("running debootstrap (install debootstrap)")?;
    if !status.success() {
        bail!(
            "debootstrap of {SUITE} with {} failed ({status}): see {}/debootstrap/debootstrap.log",
            PACKAGES.join(","),
            root.display()
        );
    }
    configure(&root)?;
    let tmp = images.join(format!(".systemd-{SUITE}.img.tmp"));
    let status = Command::new("mkfs.ext4")
        .args(["-q", "-F", "-L", "root", "-d"])
        .arg(&root)
        .arg(&tmp)
        .arg(SIZE)
        .status()
        .context("running mkfs.ext4 (install e2fsprogs)")?;
    if !status.success() {
        let _ = std::fs::remove_file(&tmp);
        bail!("mkfs.ext4 -d {} failed ({status})", root.display());
    }
    stamp::clear(&out);
    std::fs::rename(&tmp, &out).with_context(|| format!("renaming {}", tmp.display()))?;
    stamp::mark(&out, &hash)?;
    Ok((out, true))
}

/// What makes the debootstrapped tree a guest: the plan's units, a host
/// name, quiet timers, no package caches.
fn configure(root: &Path) -> Result<()> {
    let units = root.join("etc/systemd/system");
    std::fs::create_dir_all(&units)?;
    std::fs::write(units.join("lucid-vm.service"), SERVICE)?;
    std::fs::write(units.join("lucid-vm.target"), TARGET)?;
    for unit in MASKED {
        let link = units.join(unit);
        let _ = std::fs::remove_file(&link);
        std::os::unix::fs::symlink("/dev/null", &link)?;
    }
    std::fs::write(root.join("etc/hostname"), "lucid-vm\n")?;
    std::fs::write(
        root.join("etc/hosts"),
        "127.0.0.1 localhost lucid-vm\n::1 localhost\n",
    )?;
    // The initramfs mounts the root read-write; nothing else to mount.
    std::fs::write(
        root.join("etc/fstab"),
        "# the root is mounted by the initramfs\n",
    )?;
    for dir in ["var/cache/apt/archives", "var/lib/apt/lists"] {
        let dir = root.join(dir);
        for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            if entry.file_type().is_ok_and(|t| t.is_file()) {
                let _ = std::fs::remove_file(entry.path());
            }
        }
    }
    Ok(())
}

/// A debootstrap target being built: whatever debootstrap mounted inside it
/// (proc, sys, dev/pts) is unmounted and the directory removed when dropped,
/// also when debootstrap failed midway.
struct Build {
    dir: PathBuf,
}

impl Drop for Build {
    fn drop(&mut self) {
        unmount_under(&self.dir);
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Builds a killed run left behind (`.systemd-build-<pid>` of a process that
/// is gone).
fn remove_stale_builds(images: &Path) {
    for entry in std::fs::read_dir(images).into_iter().flatten().flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(pid) = name.strip_prefix(".systemd-build-") else {
            continue;
        };
        if Path::new("/proc").join(pid).exists() {
            continue;
        }
        unmount_under(&entry.path());
        let _ = std::fs::remove_dir_all(entry.path());
    }
}

/// Detaches every mount at or under `dir`, deepest first.
pub fn unmount_under(dir: &Path) {
    let prefix = dir.to_string_lossy().into_owned();
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let mut points: Vec<&str> = mountinfo
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .filter(|p| *p == prefix || p.starts_with(&format!("{prefix}/")))
        .collect();
    points.sort_by_key(|p| std::cmp::Reverse(p.len()));
    for point in points {
        let Ok(c) = std::ffi::CString::new(point) else {
            continue;
        };
        // SAFETY: umount2 reads the NUL-terminated path only.
        if unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) } != 0 {
            eprintln!(
                "vm: unmounting {point}: {}",
                std::io::Error::last_os_error()
            );
        }
    }
}
