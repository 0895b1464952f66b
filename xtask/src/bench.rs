//! `cargo xtask bench`: lucid beside runc and crun, in one interleaved run.
//!
//! `core` times create + start + delete of a busybox `/bin/true` for each
//! runtime (lucid also with each binary-protection method and without one),
//! rotating the order every round, and reports medians, the ratio to crun
//! and peak RSS. Every runtime runs in the same private mount namespace,
//! where /sys/fs/cgroup/unified/cgroup.controllers reads empty: Debian's crun
//! 1.8.1 refuses hybrid cgroups otherwise. `ebpf` runs the eBPF cost benchmark,
//! `exporter` the scrape benchmark with 500 tracked containers, `soak` the
//! leak check over many container lives.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::bundle::Bundle;
use crate::{setup, shell};

mod telemetry;

/// One runtime under test: a binary and the environment it runs with.
pub struct Contender {
    /// The name in the report.
    pub name: String,
    /// The binary.
    pub bin: PathBuf,
    /// Extra environment (a lucid variant differs only here).
    pub env: Vec<(String, String)>,
}

impl Contender {
    /// The name as a container ID and path component.
    fn slug(&self) -> String {
        self.name
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
            .collect()
    }
}

/// What one round of one contender measured.
struct Sample {
    wall: Duration,
    peak_rss_kib: i64,
}

fn parse_rounds(args: &[String]) -> Result<usize> {
    match args.iter().position(|a| a == "--rounds") {
        Some(i) => args
            .get(i + 1)
            .context("--rounds needs a number")?
            .parse()
            .context("--rounds needs a number"),
        None => Ok(30),
    }
}

/// Runs the benchmark named by the first argument (default `core`).
pub fn run(args: &[String]) -> Result<()> {
    let which = args
        .first()
        .filter(|a| !a.starts_with("--"))
        .map_or("core", String::as_str);
    let rounds = parse_rounds(args)?;
    match which {
        "core" => core(rounds),
        "ebpf" => {
            shell::require_root("the eBPF benchmark")?;
            setup::run()?;
            let rounds = rounds.to_string();
            shell::run(
                "cargo",
                &[
                    "run",
                    "--release",
                    "-p",
                    "lucid-ebpf",
                    "--example",
                    "bench",
                    "--",
                    "--rounds",
                    &rounds,
                ],
            )
        }
        "exporter" => {
            shell::require_root("the exporter benchmark")?;
            setup::run()?;
            shell::run(
                "cargo",
                &[
                    "run",
                    "--release",
                    "-p",
                    "lucid-exporter",
                    "--example",
                    "bench",
                    "--",
                    "--containers",
                    "500",
                ],
            )
        }
        "telemetry" => telemetry::run(rounds),
        "exe" => exe(rounds),
        "soak" => soak(args),
        other => bail!("unknown benchmark {other:?} (core, ebpf, exporter, telemetry, exe, soak)"),
    }
}

/// `bench soak [--cycles N]`: containers created, started and deleted in a
/// loop beside a running `lucid-exporter` with eBPF; fails when a descriptor,
/// the exporter's memory, a cgroup, a BPF pin, an eBPF map entry or a state
/// directory is left over (`exporter/examples/soak.rs`, docs/reliability.md).
fn soak(args: &[String]) -> Result<()> {
    shell::require_root("the soak benchmark")?;
    setup::run()?;
    let cycles = match args.iter().position(|a| a == "--cycles") {
        Some(i) => args
            .get(i + 1)
            .context("--cycles needs a number")?
            .parse::<usize>()
            .context("--cycles needs a number")?,
        None => 200,
    };
    shell::run(
        "cargo",
        &[
            "build",
            "--release",
            "-p",
            "lucid",
            "-p",
            "lucid-exporter",
            "--bins",
        ],
    )?;
    let release = shell::workspace().join("target/release");
    let lucid = release.join("lucid");
    let exporter = release.join("lucid-exporter");
    let cycles = cycles.to_string();
    shell::run(
        "cargo",
        &[
            "run",
            "--release",
            "-p",
            "lucid-exporter",
            "--example",
            "soak",
            "--",
            "--lucid",
            &lucid.to_string_lossy(),
            "--exporter",
            &exporter.to_string_lossy(),
            "--cycles",
            &cycles,
        ],
    )
}

fn core(rounds: usize) -> Result<()> {
    shell::require_root("the runtime benchmark")?;
    setup::apt_install(setup::APT_PACKAGES)?;
    shell::run("cargo", &["build", "--release", "-p", "lucid"])?;
    let lucid = shell::workspace().join("target/release/lucid");
    // lucid with one variable set, labelled `lucid (LABEL)`.
    let variant = |label: &str, var: &str, value: &str| Contender {
        name: format!("lucid ({label})"),
        bin: lucid.clone(),
        env: vec![(var.into(), value.into())],
    };
    let contenders = vec![
        Contender {
            name: "lucid".into(),
            bin: lucid.clone(),
            env: Vec::new(),
        },
        // Binary protection (CVE-2019-5736): the default re-execs from a
        // read-only overlay; the alternatives and no protection at all, to
        // price each (docs/security.md).
        variant("exe: memfd", "LUCID_EXE_PROTECTION", "memfd"),
        variant("exe: bind", "LUCID_EXE_PROTECTION", "bind"),
        variant("exe: none", "LUCID_EXE_PROTECTION", "none"),
        // lucid placing the init process through cgroup.procs instead of
        // clone3(CLONE_INTO_CGROUP).
        variant("cgroup.procs", "LUCID_CGROUP_PLACEMENT", "procs"),
        Contender {
            name: "runc".into(),
            bin: "runc".into(),
            env: Vec::new(),
        },
        Contender {
            name: "crun".into(),
            bin: "crun".into(),
            env: Vec::new(),
        },
    ];
    enter_fair_namespace()?;
    let bundle = Bundle::new(&lucid, "bench", &["/bin/true"])?;
    let results = interleave(&contenders, &bundle, rounds)?;
    report(&contenders, &results, rounds);
    Ok(())
}

/// The start-up cost of each binary-protection method alone: `lucid exec`
/// of a container that does not exist re-execs from the protected image,
/// looks the state up and fails, so the difference to `none` is the
/// protection. Interleaved, `rounds` runs per method.
fn exe(rounds: usize) -> Result<()> {
    shell::require_root("the binary-protection benchmark")?;
    shell::run("cargo", &["build", "--release", "-p", "lucid"])?;
    let lucid = shell::workspace().join("target/release/lucid");
    let root = std::env::temp_dir().join(format!("lucid-bench-exe-{}", std::process::id()));
    let methods = ["none", "overlay", "bind", "memfd"];
    let args: Vec<OsString> = vec![
        "--root".into(),
        root.clone().into(),
        "exec".into(),
        "no-such-container".into(),
        "true".into(),
    ];
    let mut ms: Vec<Vec<f64>> = methods.iter().map(|_| Vec::new()).collect();
    for round in 0..rounds {
        for k in 0..methods.len() {
            let i = (round + k) % methods.len();
            let env = [("LUCID_EXE_PROTECTION".to_owned(), methods[i].to_owned())];
            let (time, _, _) = timed(&lucid, &env, &args)?;
            ms[i].push(time.as_secs_f64() * 1e3);
        }
    }
    let _ = std::fs::remove_dir_all(&root);
    let size = std::fs::metadata(&lucid)?.len() as f64 / (1024.0 * 1024.0);
    println!("\nlucid start-up with each binary protection ({rounds} interleaved runs each; the binary is {size:.1} MiB)");
    println!(
        "{:<10} {:>10} {:>10} {:>10} {:>12}",
        "method", "median ms", "p10 ms", "p90 ms", "vs none ms"
    );
    let mut none = 0.0;
    for (method, mut v) in methods.iter().zip(ms) {
        v.sort_by(f64::total_cmp);
        let median = percentile(&v, 0.5);
        if *method == "none" {
            none = median;
        }
        println!(
            "{method:<10} {median:>10.2} {:>10.2} {:>10.2} {:>+12.2}",
            percentile(&v, 0.1),
            percentile(&v, 0.9),
            median - none
        );
    }
    Ok(())
}

/// Moves this process (and so every runtime it starts) into a private mount
/// namespace where the v2 root's cgroup.controllers reads empty.
fn enter_fair_namespace() -> Result<()> {
    // SAFETY: unshare and mount take valid C strings or nulls; xtask is
    // single-threaded, as unshare(CLONE_NEWNS) wants.
    unsafe {
        if libc::unshare(libc::CLONE_NEWNS) != 0 {
            bail!("unshare(CLONE_NEWNS): {}", std::io::Error::last_os_error());
        }
        let root = c"/";
        if libc::mount(
            std::ptr::null(),
            root.as_ptr(),
            std::ptr::null(),
            libc::MS_REC | libc::MS_PRIVATE,
            std::ptr::null(),
        ) != 0
        {
            bail!("making / private: {}", std::io::Error::last_os_error());
        }
    }
    let controllers = Path::new("/sys/fs/cgroup/unified/cgroup.controllers");
    if controllers.exists() {
        let empty = std::env::temp_dir().join(format!("lucid-bench-empty-{}", std::process::id()));
        std::fs::write(&empty, "")?;
        let source = std::ffi::CString::new(empty.as_os_str().as_encoded_bytes())?;
        let target = std::ffi::CString::new(controllers.as_os_str().as_encoded_bytes())?;
        // SAFETY: valid C strings; a bind mount in our private namespace.
        let ret = unsafe {
            libc::mount(
                source.as_ptr(),
                target.as_ptr(),
                std::ptr::null(),
                libc::MS_BIND,
                std::ptr::null(),
            )
        };
        let _ = std::fs::remove_file(&empty);
        if ret != 0 {
            bail!(
                "binding over {}: {}",
                controllers.display(),
                std::io::Error::last_os_error()
            );
        }
    }
    Ok(())
}

/// Runs one command, returning its wall time and peak RSS (from wait4).
fn timed(bin: &Path, env: &[(String, String)], args: &[OsString]) -> Result<(Duration, i64, i32)> {
    let start = Instant::now();
    let child = Command::new(bin)
        .args(args)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .with_context(|| format!("starting {}", bin.display()))?;
    let mut status = 0;
    // SAFETY: rusage is plain data the kernel fills.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: wait4 on our own child with valid pointers.
    let pid = unsafe { libc::wait4(child.id() as i32, &mut status, 0, &mut usage) };
    if pid < 0 {
        bail!("wait4: {}", std::io::Error::last_os_error());
    }
    Ok((start.elapsed(), usage.ru_maxrss, status))
}

fn one_round(c: &Contender, root: &Path, bundle: &Bundle, id: &str) -> Result<Sample> {
    let root = root.as_os_str().to_owned();
    let arg = |a: &str| OsString::from(a);
    let steps: [Vec<OsString>; 3] = [
        vec![
            arg("--root"),
            root.clone(),
            arg("create"),
            arg("--bundle"),
            arg(bundle.arg()),
            arg(id),
        ],
        vec![arg("--root"), root.clone(), arg("start"), arg(id)],
        vec![arg("--root"), root, arg("delete"), arg("--force"), arg(id)],
    ];
    let mut wall = Duration::ZERO;
    let mut peak = 0;
    for step in &steps {
        let (time, rss, status) = timed(&c.bin, &c.env, step)?;
        if status != 0 {
            bail!("{} {:?} failed (wait status {status})", c.name, step);
        }
        wall += time;
        peak = peak.max(rss);
    }
    Ok(Sample {
        wall,
        peak_rss_kib: peak,
    })
}

fn interleave(
    contenders: &[Contender],
    bundle: &Bundle,
    rounds: usize,
) -> Result<Vec<Vec<Sample>>> {
    let roots: Vec<PathBuf> = contenders
        .iter()
        .map(|c| {
            std::env::temp_dir().join(format!(
                "lucid-bench-root-{}-{}",
                c.name,
                std::process::id()
            ))
        })
        .collect();
    let mut results: Vec<Vec<Sample>> = contenders.iter().map(|_| Vec::new()).collect();
    const WARM_UP: usize = 3;
    let total = rounds + WARM_UP;
    for round in 0..total {
        for k in 0..contenders.len() {
            // Rotate who goes first, so no runtime always runs on a cold cache.
            let i = (round + k) % contenders.len();
            let id = format!("bench-{}-{round}", contenders[i].slug());
            let sample = one_round(&contenders[i], &roots[i], bundle, &id)?;
            if round >= WARM_UP {
                results[i].push(sample);
            }
        }
    }
    for root in roots {
        let _ = std::fs::remove_dir_all(root);
    }
    Ok(results)
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let rank = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[rank]
}

fn report(contenders: &[Contender], results: &[Vec<Sample>], rounds: usize) {
    let stats: Vec<(f64, f64, f64, f64)> = results
        .iter()
        .map(|samples| {
            let mut ms: Vec<f64> = samples.iter().map(|s| s.wall.as_secs_f64() * 1e3).collect();
            ms.sort_by(f64::total_cmp);
            let mut rss: Vec<f64> = samples
                .iter()
                .map(|s| s.peak_rss_kib as f64 / 1024.0)
                .collect();
            rss.sort_by(f64::total_cmp);
            (
                percentile(&ms, 0.5),
                percentile(&ms, 0.1),
                percentile(&ms, 0.9),
                percentile(&rss, 0.5),
            )
        })
        .collect();
    let crun = contenders
        .iter()
        .position(|c| c.name == "crun")
        .map(|i| stats[i].0);
    println!("\ncreate + start + delete of busybox /bin/true, {rounds} interleaved rounds (after 3 warm-up rounds)");
    println!(
        "{:<24} {:>10} {:>10} {:>10} {:>10} {:>14}",
        "runtime", "median ms", "p10 ms", "p90 ms", "vs crun", "peak RSS MiB"
    );
    for (c, (median, p10, p90, rss)) in contenders.iter().zip(&stats) {
        let ratio = crun.map_or("-".to_owned(), |base| format!("{:.2}x", median / base));
        println!(
            "{:<24} {median:>10.1} {p10:>10.1} {p90:>10.1} {ratio:>10} {rss:>14.1}",
            c.name
        );
    }
}
