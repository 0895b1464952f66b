//! Installs what lucid's build, tests, demo and benchmarks need, skipping
//! everything already present, so it is cheap to run every time.

use std::path::Path;
use std::process::Command;

use anyhow::{Context, Result};

use crate::shell;

/// Debian packages: libseccomp for seccomp, busybox-static for test
/// rootfses, runc and crun as benchmark peers, podman (with conmon) and
/// containerd (with ctr and the runc shim) as the clients the tests run
/// lucid under.
pub const APT_PACKAGES: &[&str] = &[
    "libseccomp-dev",
    "pkg-config",
    "busybox-static",
    "runc",
    "crun",
    "podman",
    "containerd",
    "uidmap",
];

/// Debian packages `cargo xtask vm` needs (not the rest of the project):
/// qemu and qemu-img, debootstrap and mkfs.ext4 for the systemd guest's
/// disk, cpio, kmod (modprobe, depmod) and the decompressors for the
/// initramfs images, busybox-static in every guest, binutils' objcopy to
/// strip the binaries the guests run.
pub const VM_PACKAGES: &[&str] = &[
    "qemu-system-x86",
    "qemu-utils",
    "debootstrap",
    "cpio",
    "kmod",
    "xz-utils",
    "zstd",
    "e2fsprogs",
    "busybox-static",
    "binutils",
];

fn installed(package: &str) -> bool {
    Command::new("dpkg-query")
        .args(["-W", "-f=${Status}", package])
        .output()
        .is_ok_and(|out| String::from_utf8_lossy(&out.stdout).contains("install ok installed"))
}

/// Installs the missing Debian packages without letting any start a service.
pub fn apt_install(packages: &[&str]) -> Result<()> {
    let missing: Vec<&str> = packages.iter().copied().filter(|p| !installed(p)).collect();
    if missing.is_empty() {
        return Ok(());
    }
    shell::require_root("installing Debian packages")?;
    // Packages such as prometheus would start their own service; the tests
    // start what they need themselves, on loopback.
    let policy = Path::new("/usr/sbin/policy-rc.d");
    let made_policy = !policy.exists();
    if made_policy {
        std::fs::write(policy, "#!/bin/sh\nexit 101\n").context("writing policy-rc.d")?;
        std::fs::set_permissions(policy, std::os::unix::fs::PermissionsExt::from_mode(0o755))?;
    }
    let result = shell::run("apt-get", &["update", "-qq"]).and_then(|()| {
        let mut args = vec!["install", "-y", "-qq", "--no-install-recommends"];
        args.extend(&missing);
        shell::run("apt-get", &args)
    });
    if made_policy {
        let _ = std::fs::remove_file(policy);
    }
    result
}

/// The rustup components clippy and rustfmt.
fn rustup_components() -> Result<()> {
    let installed = shell::output("rustup", &["component", "list", "--installed"])?;
    for component in ["clippy", "rustfmt"] {
        if !installed.lines().any(|l| l.starts_with(component)) {
            shell::run("rustup", &["component", "add", component])?;
        }
    }
    Ok(())
}

/// Everything: packages, components, the eBPF toolchain.
pub fn run() -> Result<()> {
    std::env::set_var("DEBIAN_FRONTEND", "noninteractive");
    apt_install(APT_PACKAGES)?;
    rustup_components()?;
    shell::run("bash", &["ebpf/setup-toolchain.sh"])?;
    Ok(())
}

/// What `cargo xtask vm` needs on the host.
pub fn vm() -> Result<()> {
    std::env::set_var("DEBIAN_FRONTEND", "noninteractive");
    qemu()?;
    apt_install(VM_PACKAGES)
}

/// The candidate version apt would install of `package`.
fn candidate(package: &str) -> Result<String> {
    let policy = shell::output("apt-cache", &["policy", package])?;
    policy
        .lines()
        .find_map(|l| l.trim().strip_prefix("Candidate:"))
        .map(|v| v.trim().to_owned())
        .filter(|v| v != "(none)")
        .with_context(|| format!("apt has no candidate for {package}: run apt-get update"))
}

/// Installs qemu-system-x86 with the qemu-utils (qemu-img) of its own
/// version. A host may carry a newer, backported qemu-utils, which Debian's
/// qemu-system-x86 cannot live beside: left to itself apt would remove it and
/// leave the host without qemu-img.
fn qemu() -> Result<()> {
    if installed("qemu-system-x86") && installed("qemu-utils") {
        return Ok(());
    }
    shell::require_root("installing qemu")?;
    shell::run("apt-get", &["update", "-qq"])?;
    let version = candidate("qemu-system-x86")?;
    let utils = format!("qemu-utils={version}");
    shell::run(
        "apt-get",
        &[
            "install",
            "-y",
            "-qq",
            "--no-install-recommends",
            "--allow-downgrades",
            "qemu-system-x86",
            &utils,
        ],
    )
}
