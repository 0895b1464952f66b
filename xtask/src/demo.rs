//! `cargo xtask demo`: build lucid, run a busybox container through create,
//! start, state and delete, and show what lucid recorded about its start;
//! then the metrics stack ([`demo_stack`]).

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

use crate::bundle::Bundle;
use crate::{setup, shell};

#[path = "demo_stack.rs"]
mod demo_stack;

/// Runs `lucid ARGS` with the demo's stdout and stderr: the container's
/// process inherits them (capturing them through a pipe would wait for the
/// container to exit).
fn lucid(bin: &Path, root: &Path, args: &[&str]) -> Result<()> {
    println!("$ lucid {}", args.join(" "));
    let status = Command::new(bin)
        .arg("--root")
        .arg(root)
        .args(args)
        .status()
        .with_context(|| format!("running lucid {}", args.join(" ")))?;
    if !status.success() {
        bail!("lucid {} failed ({status})", args.join(" "));
    }
    Ok(())
}

/// Runs the demo.
pub fn run() -> Result<()> {
    shell::require_root("running containers")?;
    setup::run()?;
    shell::run("cargo", &["build", "--release", "-p", "lucid"])?;
    let bin = shell::workspace().join("target/release/lucid");
    let root = PathBuf::from(format!("/run/lucid-demo-{}", std::process::id()));
    let bundle = Bundle::new(
        &bin,
        "demo",
        &[
            "sh",
            "-c",
            "echo \"hello from $(hostname): pid $$ in its own pid namespace, uid $(id -u)\"; \
             echo \"its cgroup: $(grep memory /proc/self/cgroup)\"",
        ],
    )?;
    let result = demo(&bin, &root, &bundle);
    // Whatever happened, leave nothing behind.
    let _ = Command::new(&bin)
        .arg("--root")
        .arg(&root)
        .args(["delete", "--force", "demo"])
        .stderr(std::process::Stdio::null())
        .status();
    let _ = std::fs::remove_dir_all(&root);
    result.and_then(|()| demo_stack::run(&bin))
}

fn demo(bin: &Path, root: &Path, bundle: &Bundle) -> Result<()> {
    println!("\n== a container's life, step by step ==");
    lucid(bin, root, &["create", "--bundle", bundle.arg(), "demo"])?;
    lucid(bin, root, &["state", "demo"])?;
    lucid(bin, root, &["list"])?;
    lucid(bin, root, &["start", "demo"])?;
    wait_stopped(bin, root, "demo")?;
    lucid(bin, root, &["state", "demo"])?;
    print_phases(root, "demo")?;
    lucid(bin, root, &["delete", "demo"])?;
    lucid(bin, root, &["list"])?;

    println!("\n== run: create, start, wait and delete in one command ==");
    let config = bundle.dir.join("config.json");
    let mut spec: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&config)?)?;
    spec["process"]["args"] = serde_json::json!(["sh", "-c", "echo exiting with 3; exit 3"]);
    std::fs::write(&config, serde_json::to_vec_pretty(&spec)?)?;
    println!("$ lucid run demo-run");
    let status = Command::new(bin)
        .arg("--root")
        .arg(root)
        .args(["run", "--bundle", bundle.arg(), "demo-run"])
        .status()?;
    println!("exit code: {}", status.code().unwrap_or(-1));
    Ok(())
}

fn wait_stopped(bin: &Path, root: &Path, id: &str) -> Result<()> {
    for _ in 0..500 {
        let out = Command::new(bin)
            .arg("--root")
            .arg(root)
            .args(["state", id])
            .output()?;
        let state: serde_json::Value = serde_json::from_slice(&out.stdout)?;
        if state["status"] == "stopped" {
            return Ok(());
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    bail!("container {id} did not stop")
}

/// The set-up phases the init process measured, from the state file.
fn print_phases(root: &Path, id: &str) -> Result<()> {
    let text = std::fs::read_to_string(root.join(id).join("state.json"))?;
    let state: serde_json::Value = serde_json::from_str(&text)?;
    println!("set-up phases measured inside the init process:");
    for phase in state["phases"].as_array().into_iter().flatten() {
        let start = phase["start_ns"].as_u64().unwrap_or_default();
        let end = phase["end_ns"].as_u64().unwrap_or_default();
        println!(
            "  {:<22} {:>8.3} ms",
            phase["name"].as_str().unwrap_or("?"),
            end.saturating_sub(start) as f64 / 1e6
        );
    }
    Ok(())
}
