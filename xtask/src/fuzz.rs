//! `cargo xtask fuzz [--seconds N] [--target NAME]`: every cargo-fuzz target
//! in `fuzz/` (libFuzzer) for a bounded time each, on the eBPF programs'
//! pinned nightly, with a corpus seeded from the spec template and
//! `fuzz/seeds/`. Fails on the first crash, naming the input that caused it.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::{setup, shell};

/// The targets, in `fuzz/Cargo.toml`'s order.
pub const TARGETS: &[&str] = &["config", "process", "state", "sync"];

/// Seconds per target when `--seconds` is not given (what CI runs).
pub const DEFAULT_SECONDS: u64 = 20;

/// The cargo-fuzz release installed when missing (tested with it).
const CARGO_FUZZ_VERSION: &str = "0.13.2";

/// What one target's run measured, from libFuzzer's final statistics.
#[derive(Debug, Default)]
struct Run {
    target: String,
    wall: Duration,
    execs: u64,
    execs_per_sec: u64,
    coverage: u64,
    features: u64,
    corpus: u64,
    peak_rss_mb: u64,
}

fn parse_args(args: &[String]) -> Result<(u64, Vec<&'static str>)> {
    let mut seconds = DEFAULT_SECONDS;
    let mut targets: Vec<&'static str> = TARGETS.to_vec();
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--seconds" => {
                seconds = it
                    .next()
                    .context("--seconds needs a number")?
                    .parse()
                    .context("--seconds needs a number")?;
                if seconds == 0 {
                    bail!("--seconds must be at least 1");
                }
            }
            "--target" => {
                let name = it.next().context("--target needs a name")?;
                let found = TARGETS
                    .iter()
                    .find(|t| *t == name)
                    .with_context(|| format!("no fuzz target {name:?} (one of {TARGETS:?})"))?;
                targets = vec![found];
            }
            other => bail!("unknown argument {other:?} (--seconds N, --target NAME)"),
        }
    }
    Ok((seconds, targets))
}

/// The nightly `ebpf/setup-toolchain.sh` installs (`$LUCID_EBPF_NIGHTLY`
/// overrides it there and here).
pub fn nightly() -> Result<String> {
    if let Ok(name) = std::env::var("LUCID_EBPF_NIGHTLY") {
        return Ok(name);
    }
    let script = shell::workspace().join("ebpf/setup-toolchain.sh");
    let text = std::fs::read_to_string(&script)
        .with_context(|| format!("reading {}", script.display()))?;
    let marker = "LUCID_EBPF_NIGHTLY:-";
    let start = text
        .find(marker)
        .with_context(|| format!("{} names no default nightly", script.display()))?
        + marker.len();
    let end = text[start..]
        .find('}')
        .with_context(|| format!("{}: unterminated nightly default", script.display()))?;
    Ok(text[start..start + end].to_owned())
}

/// Installs cargo-fuzz unless `cargo fuzz` already runs.
fn ensure_cargo_fuzz(nightly: &str) -> Result<()> {
    let present = Command::new("cargo")
        .args([&format!("+{nightly}"), "fuzz", "--version"])
        .output()
        .is_ok_and(|out| out.status.success());
    if present {
        return Ok(());
    }
    shell::run(
        "cargo",
        &[
            "install",
            &format!("cargo-fuzz@{CARGO_FUZZ_VERSION}"),
            "--locked",
        ],
    )
}

/// Copies the seeds of `target` into `corpus`: the spec template (the
/// configuration `lucid spec` writes, and its process) and `fuzz/seeds/<target>/`.
fn seed(target: &str, corpus: &Path) -> Result<()> {
    std::fs::create_dir_all(corpus).with_context(|| format!("making {}", corpus.display()))?;
    let workspace = shell::workspace();
    let template_path = workspace.join("runtime/src/spec_template.json");
    let template = std::fs::read(&template_path)
        .with_context(|| format!("reading {}", template_path.display()))?;
    match target {
        "config" => std::fs::write(corpus.join("spec_template.json"), &template)?,
        "process" => {
            let spec: serde_json::Value = serde_json::from_slice(&template)?;
            std::fs::write(
                corpus.join("spec_template_process.json"),
                serde_json::to_vec_pretty(&spec["process"])?,
            )?;
        }
        _ => {}
    }
    let seeds = workspace.join("fuzz/seeds").join(target);
    for entry in
        std::fs::read_dir(&seeds).with_context(|| format!("reading {}", seeds.display()))?
    {
        let entry = entry?;
        std::fs::copy(entry.path(), corpus.join(entry.file_name()))?;
    }
    Ok(())
}

/// The number after `key` in a libFuzzer line (`cov: 1234`, `stat::…: 5`).
fn number_after(line: &str, key: &str) -> Option<u64> {
    let rest = &line[line.find(key)? + key.len()..];
    rest.split_whitespace().next()?.parse().ok()
}

fn parse_stats(target: &str, wall: Duration, log: &str) -> Run {
    let mut run = Run {
        target: target.to_owned(),
        wall,
        ..Run::default()
    };
    for line in log.lines() {
        if line.contains("cov: ") && line.starts_with('#') {
            run.coverage = number_after(line, "cov: ").unwrap_or(run.coverage);
            run.features = number_after(line, "ft: ").unwrap_or(run.features);
            if let Some(corp) = line.split("corp: ").nth(1) {
                run.corpus = corp
                    .split('/')
                    .next()
                    .and_then(|n| n.parse().ok())
                    .unwrap_or(run.corpus);
            }
        }
        if let Some(n) = number_after(line, "stat::number_of_executed_units: ") {
            run.execs = n;
        }
        if let Some(n) = number_after(line, "stat::average_exec_per_sec: ") {
            run.execs_per_sec = n;
        }
        if let Some(n) = number_after(line, "stat::peak_rss_mb: ") {
            run.peak_rss_mb = n;
        }
    }
    run
}

/// Runs one target for `seconds`; fails with the crashing input's path.
fn fuzz_one(nightly: &str, target: &str, seconds: u64, scratch: &Path) -> Result<Run> {
    let workspace = shell::workspace();
    let corpus = workspace.join("fuzz/corpus").join(target);
    seed(target, &corpus)?;
    let log_path = workspace
        .join("fuzz/artifacts")
        .join(format!("{target}.log"));
    std::fs::create_dir_all(log_path.parent().expect("the log has a directory"))?;
    let log = std::fs::File::create(&log_path)?;
    let corpus_arg = corpus.to_string_lossy().into_owned();
    let args = [
        format!("+{nightly}"),
        "fuzz".into(),
        "run".into(),
        target.into(),
        corpus_arg,
        "--".into(),
        format!("-max_total_time={seconds}"),
        // A single input taking this long is a hang worth reporting.
        "-timeout=10".into(),
        "-print_final_stats=1".into(),
    ];
    eprintln!("+ cargo {}", args.join(" "));
    let start = Instant::now();
    let status = Command::new("cargo")
        .args(&args)
        .current_dir(&workspace)
        .env("LUCID_FUZZ_SCRATCH", scratch)
        .stdout(log.try_clone()?)
        .stderr(log)
        .status()
        .context("running cargo fuzz")?;
    let wall = start.elapsed();
    let text = std::fs::read_to_string(&log_path).unwrap_or_default();
    if !status.success() {
        let artifact = text
            .lines()
            .find_map(|l| l.split("Test unit written to ").nth(1))
            .unwrap_or("(no input written)");
        let tail: Vec<&str> = text.lines().rev().take(40).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        bail!(
            "fuzz target {target} failed ({status}) on {artifact}:\n{}\n(full log: {}; reproduce with `cargo +{nightly} fuzz run {target} {artifact}`)",
            tail.join("\n"),
            log_path.display()
        );
    }
    Ok(parse_stats(target, wall, &text))
}

/// Builds every target, runs each for `--seconds`, prints what they did.
pub fn run(args: &[String]) -> Result<()> {
    let (seconds, targets) = parse_args(args)?;
    // The pinned nightly (and everything else the build needs).
    setup::run()?;
    let nightly = nightly()?;
    let install = Instant::now();
    ensure_cargo_fuzz(&nightly)?;
    let install = install.elapsed();
    let build = Instant::now();
    shell::run("cargo", &[&format!("+{nightly}"), "fuzz", "build"])?;
    let build = build.elapsed();
    let scratch = std::env::temp_dir().join(format!("lucid-fuzz-xtask-{}", std::process::id()));
    let results: Result<Vec<Run>> = targets
        .iter()
        .map(|target| fuzz_one(&nightly, target, seconds, &scratch))
        .collect();
    let _ = std::fs::remove_dir_all(&scratch);
    let results = results?;
    println!(
        "\nfuzzing, {seconds} s per target on {nightly} (cargo-fuzz check/install {:.0} s, build {:.0} s)",
        install.as_secs_f64(),
        build.as_secs_f64()
    );
    println!(
        "{:<8} {:>8} {:>12} {:>9} {:>8} {:>9} {:>7} {:>8}  crashes",
        "target", "wall s", "execs", "execs/s", "cov", "features", "corpus", "rss MiB"
    );
    for r in &results {
        println!(
            "{:<8} {:>8.0} {:>12} {:>9} {:>8} {:>9} {:>7} {:>8}  0",
            r.target,
            r.wall.as_secs_f64(),
            r.execs,
            r.execs_per_sec,
            r.coverage,
            r.features,
            r.corpus,
            r.peak_rss_mb
        );
    }
    Ok(())
}
