//! Builds the eBPF object with the pinned nightly and bpf-linker (see `ebpf/setup-toolchain.sh`).
use std::{path::Path, process::Command};

use anyhow::{anyhow, bail, Context as _};

/// The nightly that builds the eBPF crate; bpf-linker 0.10 uses this rustc's LLVM.
const NIGHTLY: &str = "nightly-2026-05-20";

fn main() -> anyhow::Result<()> {
    println!("cargo:rerun-if-env-changed=LUCID_EBPF_NIGHTLY");
    let nightly = std::env::var("LUCID_EBPF_NIGHTLY").unwrap_or_else(|_| NIGHTLY.to_owned());
    check_toolchain(&nightly)?;
    let manifest_dir = std::env::var("CARGO_MANIFEST_DIR").context("CARGO_MANIFEST_DIR not set")?;
    let programs = Path::new(&manifest_dir).join("../programs");
    let programs = programs
        .canonicalize()
        .with_context(|| format!("eBPF crate not found at {}", programs.display()))?;
    let root_dir = programs
        .to_str()
        .ok_or_else(|| anyhow!("non-UTF-8 path {}", programs.display()))?;
    aya_build::build_ebpf(
        [aya_build::Package {
            name: "lucid-ebpf-programs",
            root_dir,
            ..Default::default()
        }],
        aya_build::Toolchain::Custom(&nightly),
    )
    .context("building the eBPF programs failed; run ebpf/setup-toolchain.sh if the toolchain is missing")
}

/// Fails with a message naming the set-up script when the nightly or bpf-linker is missing.
fn check_toolchain(nightly: &str) -> anyhow::Result<()> {
    let hint = "run ebpf/setup-toolchain.sh to install it";
    let rustc = Command::new("rustup")
        .args(["run", nightly, "rustc", "--version"])
        .output();
    match rustc {
        Ok(out) if out.status.success() => {}
        _ => bail!("the eBPF programs need the Rust toolchain {nightly} with rust-src: {hint}"),
    }
    let sysroot = Command::new("rustup")
        .args(["run", nightly, "rustc", "--print", "sysroot"])
        .output()
        .context("rustc --print sysroot")?;
    let sysroot = String::from_utf8_lossy(&sysroot.stdout).trim().to_owned();
    if !Path::new(&sysroot)
        .join("lib/rustlib/src/rust/library/core")
        .exists()
    {
        bail!("the eBPF programs need the rust-src component of {nightly}: {hint}");
    }
    match Command::new("bpf-linker").arg("--version").output() {
        Ok(out) if out.status.success() => Ok(()),
        _ => bail!("the eBPF programs need bpf-linker on PATH: {hint}"),
    }
}
