//! `cargo xtask vm [--kernel 5.10,6.1,6.12,newest] [--guest initramfs,systemd]
//! [--suite ci|full|bench] [--jobs N] [--keep-run-dir]`: lucid's tests on the hosts its users
//! run (pure cgroup v2, distribution kernels, systemd), booted under qemu.
//!
//! For each kernel (Debian's, [`kernels`]) and kind of guest (busybox in an
//! initramfs, [`initramfs`]; Debian 12 with systemd and podman, [`image`])
//! one guest boots ([`qemu`]: KVM where a probe guest comes up, TCG
//! otherwise), `--jobs` at a time (2 by default), with the workspace shared read-only at its
//! host path, a writable results directory and a scratch virtio disk; it
//! runs the plan's steps ([`plan`]), rebooting where the plan says, and the
//! lane prints a table of every step with its result and duration. Kernels
//! and images are cached under `target/vm/`, each run's logs under
//! `target/vm/run/<time>-<pid>/` (removed after a run where everything
//! passed, unless `--keep-run-dir`).

mod image;
mod initramfs;
mod kernels;
mod plan;
mod qemu;
mod stamp;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context, Result};

use crate::{setup, shell};
use kernels::{Choice, Kernel};
use plan::{Action, Guest, Step, Suite};
use qemu::{Accel, Drive, End, Machine, Share};

/// The step runner, written to each guest's results directory.
const RUNNER: &str = include_str!("guest/runner.sh");
/// The busybox container step.
const CONTAINER: &str = include_str!("guest/container.sh");

/// Each guest's memory and CPUs (the host has two cores; `--jobs` guests run at once).
const MEMORY_MIB: u32 = 2048;
const CPUS: u32 = 2;

/// The scratch disk every guest gets for io limits (sparse).
const SCRATCH_DISK_BYTES: u64 = 256 << 20;

/// From qemu's start to the runner's first marker, under TCG: the
/// initramfs guest needs 3-10 s, systemd 20-60 s.
const BOOT_LIMIT_INITRAMFS: Duration = Duration::from_secs(180);
const BOOT_LIMIT_SYSTEMD: Duration = Duration::from_secs(420);

const USAGE: &str = "usage: cargo xtask vm [--kernel 5.10,6.1,6.12,newest] [--guest initramfs,systemd] [--suite ci|full|bench] [--jobs N] [--keep-run-dir]";

struct Options {
    kernels: Vec<Choice>,
    guests: Vec<Guest>,
    suite: Suite,
    keep_run_dir: bool,
    jobs: usize,
}

/// Guests run at once by default: two, which keeps both cores of a 2-core host busy (a
/// guest's tests mostly run one at a time, on one emulated CPU).
const DEFAULT_JOBS: usize = 2;

fn parse(args: &[String]) -> Result<Options> {
    let mut options = Options {
        kernels: kernels::MATRIX.to_vec(),
        guests: Guest::ALL.to_vec(),
        suite: Suite::Ci,
        keep_run_dir: false,
        jobs: DEFAULT_JOBS,
    };
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--kernel" => {
                let list = it
                    .next()
                    .context("--kernel needs a list, like 6.1,newest")?;
                options.kernels = list
                    .split(',')
                    .map(|name| {
                        kernels::MATRIX
                            .iter()
                            .copied()
                            .find(|c| c.name == name)
                            .with_context(|| {
                                let names: Vec<&str> =
                                    kernels::MATRIX.iter().map(|c| c.name).collect();
                                format!("no kernel {name:?}: use one of {}", names.join(", "))
                            })
                    })
                    .collect::<Result<_>>()?;
            }
            "--guest" => {
                let list = it
                    .next()
                    .context("--guest needs a list, like initramfs,systemd")?;
                options.guests = list
                    .split(',')
                    .map(|name| {
                        Guest::ALL
                            .iter()
                            .copied()
                            .find(|g| g.name() == name)
                            .with_context(|| format!("no guest {name:?}: use initramfs or systemd"))
                    })
                    .collect::<Result<_>>()?;
            }
            "--suite" => {
                options.suite = match it.next().map(String::as_str) {
                    Some("ci") => Suite::Ci,
                    Some("full") => Suite::Full,
                    Some("bench") => Suite::Bench,
                    _ => bail!("--suite needs ci, full or bench"),
                }
            }
            "--keep-run-dir" => options.keep_run_dir = true,
            "--jobs" => {
                options.jobs = it
                    .next()
                    .and_then(|n| n.parse().ok())
                    .filter(|&n| n > 0)
                    .context("--jobs needs a number of guests to run at once, 1 or more")?;
            }
            "-h" | "--help" => bail!("{USAGE}"),
            other => bail!("unknown argument {other:?}\n{USAGE}"),
        }
    }
    Ok(options)
}

/// One line of the summary.
struct Row {
    kernel: &'static str,
    guest: &'static str,
    step: String,
    result: String,
    seconds: Option<f64>,
}

impl Row {
    fn passed(&self) -> bool {
        self.result.starts_with("pass")
    }
}

/// A timed phase (for the report of where the time went).
struct Phase {
    name: String,
    took: Duration,
    note: &'static str,
}

/// What every guest of a run shares.
struct Run {
    workspace: PathBuf,
    vm_dir: PathBuf,
    dir: PathBuf,
    staged: PathBuf,
    profile: String,
    executables: BTreeMap<String, PathBuf>,
    libs: Vec<PathBuf>,
    accel: Accel,
    base_image: Option<std::result::Result<PathBuf, String>>,
}

/// Runs the lane.
pub fn run(args: &[String]) -> Result<()> {
    let options = parse(args)?;
    shell::require_root("booting guests (debootstrap, device nodes in the images)")?;
    setup::vm()?;
    let workspace = shell::workspace();
    if workspace.to_string_lossy().contains(char::is_whitespace) {
        bail!("the workspace path {} has whitespace, which the guests' kernel command line cannot carry: clone it elsewhere", workspace.display());
    }
    if let Some(dir) = std::env::var_os("CARGO_TARGET_DIR") {
        if Path::new(&dir) != workspace.join("target") {
            bail!("CARGO_TARGET_DIR is outside the workspace, which is all the guests see: unset it for cargo xtask vm");
        }
    }
    let vm_dir = workspace.join("target/vm");
    let stamp = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs();
    let run_dir = vm_dir
        .join("run")
        .join(format!("{stamp}-{}", std::process::id()));
    std::fs::create_dir_all(&run_dir).with_context(|| format!("making {}", run_dir.display()))?;
    let mut phases = Vec::new();
    let mut rows = Vec::new();
    let mut failures = Vec::new();

    let plans: Vec<(Guest, Vec<Step>)> = options
        .guests
        .iter()
        .map(|g| (*g, plan::plan(*g, options.suite)))
        .collect();
    let mut tests = Vec::new();
    for (_, steps) in &plans {
        for test in plan::tests(steps) {
            if !tests.contains(&test) {
                tests.push(test);
            }
        }
    }
    let t = Instant::now();
    let (profile_dir, executables) = build(&workspace, &tests)?;
    if options.suite == Suite::Bench {
        shell::run(
            "cargo",
            &[
                "build",
                "--release",
                "-p",
                "lucid-ebpf",
                "--example",
                "bench",
            ],
        )?;
    }
    phases.push(Phase {
        name: "cargo build and test --no-run".into(),
        took: t.elapsed(),
        note: "",
    });
    let t = Instant::now();
    let staged = run_dir.join("bin");
    let staged_files = stage(&profile_dir, &executables, &staged)?;
    let libs = initramfs::libraries(&staged_files)?;
    phases.push(Phase {
        name: "strip and stage the binaries".into(),
        took: t.elapsed(),
        note: "",
    });

    let t = Instant::now();
    let apt = kernels::Apt::open(&vm_dir)?;
    let updated = apt.update()?;
    phases.push(Phase {
        name: "apt-get update (private lists)".into(),
        took: t.elapsed(),
        note: if updated { "fetched" } else { "cached" },
    });
    let mut fetched: Vec<(Choice, std::result::Result<Kernel, String>)> = Vec::new();
    for choice in &options.kernels {
        let t = Instant::now();
        match apt.kernel(choice) {
            Ok((kernel, unpacked)) => {
                phases.push(Phase {
                    name: format!("kernel {} ({})", choice.name, kernel.version),
                    took: t.elapsed(),
                    note: if unpacked { "fetched" } else { "cached" },
                });
                fetched.push((*choice, Ok(kernel)));
            }
            Err(e) => {
                failures.push(format!("kernel {}: {e:#}", choice.name));
                fetched.push((*choice, Err(format!("{e:#}"))));
            }
        }
    }
    let Some(first) = fetched.iter().find_map(|(_, k)| k.as_ref().ok()) else {
        bail!("no kernel could be fetched:\n{}", failures.join("\n"));
    };

    let images = vm_dir.join("images");
    let t = Instant::now();
    let probe = initramfs::probe(&images)?;
    let accel = qemu::accel(&vm_dir, first, &probe)?;
    phases.push(Phase {
        name: "accelerator probe".into(),
        took: t.elapsed(),
        note: "",
    });
    println!(
        "vm: guests run under {} ({})",
        accel.name().to_uppercase(),
        match accel {
            Accel::Kvm => "a KVM probe guest came up",
            Accel::Tcg =>
                "KVM did not bring up a probe guest: emulated, 10-40x slower than the host",
        }
    );

    let base_image = if options.guests.contains(&Guest::Systemd) {
        let t = Instant::now();
        let result = image::base(&vm_dir);
        phases.push(Phase {
            name: "systemd base image".into(),
            took: t.elapsed(),
            note: match &result {
                Ok((_, true)) => "built",
                Ok((_, false)) => "cached",
                Err(_) => "failed",
            },
        });
        Some(result.map(|(path, _)| path).map_err(|e| format!("{e:#}")))
    } else {
        None
    };

    let run = Run {
        workspace,
        vm_dir,
        dir: run_dir.clone(),
        staged,
        profile: profile_dir
            .file_name()
            .context("the profile directory has a name")?
            .to_string_lossy()
            .into_owned(),
        executables,
        libs,
        accel,
        base_image,
    };
    // The guests to run, in report order; `jobs` of them at a time (one for the bench, whose
    // figures another guest beside it would disturb).
    let jobs = if options.suite == Suite::Bench {
        1
    } else {
        options.jobs
    };
    let mut queue = Vec::new();
    for (choice, kernel) in &fetched {
        for (guest, steps) in &plans {
            let label = format!("[{} {}]", choice.name, guest.name());
            match kernel {
                Ok(kernel) => queue.push((label, choice.name, kernel, *guest, steps)),
                Err(e) => {
                    rows.push(Row {
                        kernel: choice.name,
                        guest: guest.name(),
                        step: "fetch the kernel".into(),
                        result: "fail".into(),
                        seconds: None,
                    });
                    failures.push(format!("{label} the kernel could not be fetched: {e}"));
                }
            }
        }
    }
    let next = std::sync::atomic::AtomicUsize::new(0);
    let done = std::sync::Mutex::new(Vec::new());
    std::thread::scope(|scope| {
        for _ in 0..jobs.max(1) {
            scope.spawn(|| loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let Some((label, kernel_name, kernel, guest, steps)) = queue.get(i) else {
                    break;
                };
                let mut report = GuestReport {
                    label: label.clone(),
                    kernel: kernel_name,
                    guest: *guest,
                    rows: Vec::new(),
                    failures: Vec::new(),
                    phases: Vec::new(),
                };
                if let Err(e) = run_guest(&run, kernel, *guest, steps, &mut report) {
                    report.rows.push(Row {
                        kernel: kernel_name,
                        guest: guest.name(),
                        step: "set up the guest".into(),
                        result: "fail".into(),
                        seconds: None,
                    });
                    report.failures.push(format!("{label} {e:#}"));
                }
                done.lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .push((i, report));
            });
        }
    });
    let mut reports = done
        .into_inner()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    reports.sort_by_key(|(i, _)| *i);
    for (_, report) in reports {
        rows.extend(report.rows);
        failures.extend(report.failures);
        phases.extend(report.phases);
    }

    print_summary(&rows, &phases);
    let failed = rows.iter().filter(|r| !r.passed()).count();
    if failed > 0 || !failures.is_empty() {
        println!("\nfailures:");
        for failure in &failures {
            println!("{failure}\n");
        }
        if !options.keep_run_dir {
            remove_disks(&run_dir);
        }
        bail!(
            "vm: {failed} of {} rows failed; logs (console.log, results/steps/N.log) in {}",
            rows.len(),
            run_dir.display()
        );
    }
    if options.keep_run_dir {
        println!("vm: the run directory is kept: {}", run_dir.display());
    } else {
        let _ = std::fs::remove_dir_all(&run_dir);
    }
    println!("vm: every step passed");
    Ok(())
}

/// Builds the binaries and the plan's test executables; returns the profile
/// directory (`target/debug`) and each test's executable.
fn build(workspace: &Path, tests: &[&str]) -> Result<(PathBuf, BTreeMap<String, PathBuf>)> {
    shell::run("cargo", &["build", "--workspace", "--bins"])?;
    // --workspace as for the build above (and cargo xtask ci): with only
    // -p lucid-tests, features unify differently and each command rebuilds
    // what the other built (tonic, rustls, ...).
    let mut args = vec!["test", "--workspace", "--no-run", "--message-format=json"];
    for test in tests {
        args.extend(["--test", test]);
    }
    eprintln!("+ cargo {}", args.join(" "));
    let out = Command::new("cargo")
        .args(&args)
        .current_dir(workspace)
        .stderr(Stdio::inherit())
        .output()
        .context("running cargo")?;
    if !out.status.success() {
        bail!("cargo {} failed ({})", args.join(" "), out.status);
    }
    let mut executables = BTreeMap::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let Ok(message) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        let is_test = message["target"]["kind"]
            .as_array()
            .is_some_and(|k| k.iter().any(|k| k == "test"));
        if message["reason"] != "compiler-artifact" || !is_test {
            continue;
        }
        if let (Some(name), Some(exe)) = (
            message["target"]["name"].as_str(),
            message["executable"].as_str(),
        ) {
            executables.insert(name.to_owned(), PathBuf::from(exe));
        }
    }
    for test in tests {
        if !executables.contains_key(*test) {
            bail!("cargo test --no-run named no executable for the test {test}");
        }
    }
    let profile_dir = executables
        .values()
        .next()
        .and_then(|exe| exe.parent()?.parent())
        .map(Path::to_path_buf)
        .unwrap_or_else(|| workspace.join("target/debug"));
    Ok((profile_dir, executables))
}

/// Copies the binaries the guests run, without their debug sections (a
/// tenth of the size: they cross 9p and live in the guests' memory), into
/// `dir` in the `target/<profile>` layout: `lucid`, `lucid-exporter`,
/// `deps/<test>`.
fn stage(
    profile_dir: &Path,
    executables: &BTreeMap<String, PathBuf>,
    dir: &Path,
) -> Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir.join("deps"))?;
    let mut files = vec![
        (profile_dir.join("lucid"), dir.join("lucid")),
        (
            profile_dir.join("lucid-exporter"),
            dir.join("lucid-exporter"),
        ),
    ];
    for exe in executables.values() {
        let name = exe
            .file_name()
            .context("a test executable has a file name")?;
        files.push((exe.clone(), dir.join("deps").join(name)));
    }
    let mut staged = Vec::new();
    for (from, to) in files {
        let status = Command::new("objcopy")
            .arg("--strip-debug")
            .arg(&from)
            .arg(&to)
            .status()
            .context("running objcopy (install binutils)")?;
        if !status.success() {
            bail!("objcopy --strip-debug {} failed ({status})", from.display());
        }
        staged.push(to);
    }
    Ok(staged)
}

/// What one guest contributed to the report.
struct GuestReport {
    label: String,
    kernel: &'static str,
    guest: Guest,
    rows: Vec<Row>,
    failures: Vec<String>,
    phases: Vec<Phase>,
}

impl GuestReport {
    fn row(&mut self, step: impl Into<String>, result: impl Into<String>, seconds: Option<f64>) {
        self.rows.push(Row {
            kernel: self.kernel,
            guest: self.guest.name(),
            step: step.into(),
            result: result.into(),
            seconds,
        });
    }
}

/// The environment every step sees (`env.sh`, sourced by `runner.sh`).
fn env_file(
    run: &Run,
    kernel: &Kernel,
    guest: Guest,
    block_device: &str,
    steps: &[Step],
) -> Result<String> {
    let q = |s: &str| plan::quote(s);
    // The test executables this guest's plan runs: the runner copies only those.
    let mut tests = Vec::new();
    for test in plan::tests(steps) {
        let exe = run
            .executables
            .get(test)
            .with_context(|| format!("no executable was built for the test {test}"))?;
        tests.push(
            exe.file_name()
                .context("a test executable has a file name")?
                .to_string_lossy()
                .into_owned(),
        );
    }
    let vars = [
        (
            "LUCID_VM_WORKSPACE",
            run.workspace.to_string_lossy().into_owned(),
        ),
        ("LUCID_VM_PROFILE", run.profile.clone()),
        ("LUCID_VM_STAGED", run.staged.to_string_lossy().into_owned()),
        ("LUCID_VM_TESTS", tests.join(" ")),
        ("LUCID_VM_RESULTS", "/lucid-vm/results".to_owned()),
        ("LUCID_VM_BLOCK_DEVICE", block_device.to_owned()),
        // The tests' deadlines bound waits, never speed: stretched for an emulated guest.
        (
            "LUCID_TEST_TIME_SCALE",
            match run.accel {
                Accel::Kvm => "2",
                Accel::Tcg => "10",
            }
            .to_owned(),
        ),
        ("LUCID_VM_KERNEL", kernel.name.to_owned()),
        ("LUCID_VM_GUEST", guest.name().to_owned()),
    ];
    let mut out = String::from("# Written by cargo xtask vm.\n");
    for (name, value) in vars {
        let _ = writeln!(out, "export {name}={}", q(&value));
    }
    Ok(out)
}

/// Boots `guest` on `kernel` as often as its plan needs and reports each step.
fn run_guest(
    run: &Run,
    kernel: &Kernel,
    guest: Guest,
    steps: &[Step],
    report: &mut GuestReport,
) -> Result<()> {
    let label = report.label.clone();
    let dir = run.dir.join(format!("{}-{}", kernel.name, guest.name()));
    let results = dir.join("results");
    std::fs::create_dir_all(results.join("steps"))?;
    let images = run.vm_dir.join("images");

    let t = Instant::now();
    let (initrd, built) = match guest {
        Guest::Initramfs => initramfs::guest(&images, kernel, &run.libs)?,
        Guest::Systemd => initramfs::boot(&images, kernel)?,
    };
    report.phases.push(Phase {
        name: format!("{label} initramfs"),
        took: t.elapsed(),
        note: if built { "built" } else { "cached" },
    });

    let scratch = dir.join("scratch.raw");
    std::fs::File::create(&scratch)
        .and_then(|f| f.set_len(SCRATCH_DISK_BYTES))
        .with_context(|| format!("making {}", scratch.display()))?;
    // ext4 on it, for tests that need a directory on a real block device (io limits).
    shell::run(
        "mkfs.ext4",
        &["-q", "-F", "-L", "scratch", &scratch.to_string_lossy()],
    )?;
    let mut drives = Vec::new();
    let mut shares = vec![
        Share {
            tag: "lucid-ws",
            path: run.workspace.clone(),
            readonly: true,
        },
        Share {
            tag: "lucid-results",
            path: results.clone(),
            readonly: false,
        },
    ];
    let mut append = format!(
        "console=ttyS0 panic=-1 quiet lucid_vm.workspace={}",
        run.workspace.display()
    );
    let block_device;
    let boot_limit;
    match guest {
        Guest::Initramfs => {
            append.push_str(" cgroup_no_v1=all");
            block_device = "/dev/vda";
            boot_limit = BOOT_LIMIT_INITRAMFS;
        }
        Guest::Systemd => {
            let base = match &run.base_image {
                Some(Ok(base)) => base,
                Some(Err(e)) => bail!("the systemd image could not be built: {e}"),
                None => bail!("the systemd image was not built"),
            };
            let overlay = dir.join("root.qcow2");
            let status = Command::new("qemu-img")
                .args(["create", "-q", "-f", "qcow2", "-F", "raw", "-b"])
                .arg(base)
                .arg(&overlay)
                .status()
                .context("running qemu-img (install qemu-utils)")?;
            if !status.success() {
                bail!("qemu-img create of {} failed ({status})", overlay.display());
            }
            drives.push(Drive {
                path: overlay,
                format: "qcow2",
            });
            shares.push(Share {
                tag: "lucid-modules",
                path: kernel.modules(),
                readonly: true,
            });
            append
                .push_str(" systemd.unit=lucid-vm.target systemd.mask=serial-getty@ttyS0.service");
            block_device = "/dev/vdb";
            boot_limit = BOOT_LIMIT_SYSTEMD;
        }
    }
    drives.push(Drive {
        path: scratch,
        format: "raw",
    });

    std::fs::write(results.join("runner.sh"), RUNNER)?;
    std::fs::write(results.join("container.sh"), CONTAINER)?;
    std::fs::write(
        results.join("env.sh"),
        env_file(run, kernel, guest, block_device, steps)?,
    )?;
    std::fs::write(
        results.join("plan.sh"),
        plan::render(steps, &run.executables)?,
    )?;

    let machine = Machine {
        label: label.clone(),
        accel: run.accel,
        memory_mib: MEMORY_MIB,
        cpus: CPUS,
        kernel: kernel.vmlinuz.clone(),
        initrd,
        append,
        drives,
        shares,
        console_log: dir.join("console.log"),
        echo: true,
    };
    let reboots = steps
        .iter()
        .filter(|s| matches!(s.action, Action::Reboot))
        .count();
    let step_total: Duration = steps
        .iter()
        .map(|s| Duration::from_secs(s.timeout_s.into()))
        .sum();
    let limits = qemu::Limits {
        boot: boot_limit,
        steps: steps
            .iter()
            .map(|s| Duration::from_secs(s.timeout_s.into()))
            .collect(),
        deadline: Instant::now()
            + boot_limit * (reboots as u32 + 1)
            + step_total
            + qemu::STEP_GRACE * 2,
    };

    let mut stopped: Option<String> = None;
    // The step running when a boot ended without finishing its plan.
    let mut cut_short: Option<usize> = None;
    for boot_number in 1..=reboots + 1 {
        let boot = qemu::boot(&machine, &limits)?;
        let booted = boot.booted_after.map(|d| d.as_secs_f64());
        report.row(
            format!("boot {boot_number}"),
            if booted.is_some() { "pass" } else { "fail" },
            booted,
        );
        if let (Some(booted), Some(ready)) = (boot.booted_after, boot.ready_after) {
            let result = if boot.copy_failed { "fail" } else { "pass" };
            report.row(
                format!("copy binaries ({boot_number})"),
                result,
                Some((ready - booted).as_secs_f64()),
            );
        }
        if boot.forced_off {
            let grace = qemu::POWER_OFF_GRACE.as_secs();
            report.row(
                format!("power off ({boot_number})"),
                format!("pass (killed {grace} s after its runner ended)"),
                None,
            );
        }
        let running = boot
            .running()
            .map(|s| format!("step {} ({})", s.index, s.name));
        if matches!(boot.end, End::Stopped(_) | End::Killed(_)) {
            cut_short = boot.running().map(|s| s.index);
        }
        match boot.end {
            End::Done => break,
            End::Reboot if boot_number <= reboots => continue,
            End::Reboot => {
                stopped = Some(format!("{label} rebooted more often than its plan asks"));
                break;
            }
            End::Stopped(status) => {
                let what = match (&running, booted) {
                    (Some(step), _) => format!("while running {step}"),
                    (None, None) => "before its runner started (it never booted)".into(),
                    (None, Some(_)) => "between steps".into(),
                };
                stopped = Some(format!(
                    "{label} qemu exited ({status}) {what}: see the console log"
                ));
                break;
            }
            End::Killed(reason) => {
                let what = if booted.is_none() {
                    " (the guest never booted)"
                } else {
                    ""
                };
                stopped = Some(format!("{reason}{what}"));
                break;
            }
        }
    }

    for (i, step) in steps.iter().enumerate() {
        let rc = std::fs::read_to_string(results.join(format!("steps/{i}.rc"))).unwrap_or_default();
        let mut fields = rc.split_whitespace();
        let (status, seconds) = (
            fields.next(),
            fields.next().and_then(|s| s.parse::<f64>().ok()),
        );
        let result = match status {
            Some("0") => "pass".to_owned(),
            Some("timeout") => format!("timeout ({} s)", step.timeout_s),
            Some(code) => format!("fail ({code})"),
            None if cut_short == Some(i) => "killed".to_owned(),
            None => "not run".to_owned(),
        };
        if result != "pass" && result != "not run" {
            let log =
                std::fs::read_to_string(results.join(format!("steps/{i}.log"))).unwrap_or_default();
            report.failures.push(format!(
                "{label} {}: {result}\n{}",
                step.name,
                key_lines(&log)
            ));
        }
        report.row(step.name, result, seconds);
    }
    if let Some(stopped) = stopped {
        let console = std::fs::read_to_string(&machine.console_log).unwrap_or_default();
        let tail: Vec<&str> = console.lines().rev().take(15).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        report.failures.push(format!(
            "{stopped}\nlast console lines:\n{}",
            tail.join("\n")
        ));
        report.row("guest", "fail", None);
    }
    Ok(())
}

/// The lines of a failed step's log worth reading first: errors and panics,
/// else its end.
fn key_lines(log: &str) -> String {
    let keys: Vec<&str> = log
        .lines()
        .filter(|l| {
            let l = l.to_ascii_lowercase();
            l.contains("error")
                || l.contains("panicked")
                || l.contains("failed")
                || l.contains("test result")
        })
        .take(15)
        .collect();
    let lines: Vec<&str> = if keys.is_empty() {
        let tail: Vec<&str> = log.lines().rev().take(15).collect();
        tail.into_iter().rev().collect()
    } else {
        keys
    };
    lines
        .iter()
        .map(|l| format!("    {l}"))
        .collect::<Vec<_>>()
        .join("\n")
}

fn print_summary(rows: &[Row], phases: &[Phase]) {
    println!(
        "\n{:<8} {:<10} {:<40} {:<16} {:>9}",
        "kernel", "guest", "step", "result", "seconds"
    );
    for row in rows {
        let seconds = row
            .seconds
            .map_or_else(|| "-".to_owned(), |s| format!("{s:.1}"));
        println!(
            "{:<8} {:<10} {:<40} {:<16} {:>9}",
            row.kernel, row.guest, row.step, row.result, seconds
        );
    }
    println!("\n{:<58} {:>9}  note", "phase (host)", "seconds");
    for phase in phases {
        println!(
            "{:<58} {:>9.1}  {}",
            phase.name,
            phase.took.as_secs_f64(),
            phase.note
        );
    }
}

/// Removes the disks and staged binaries of a run (the logs stay).
fn remove_disks(run_dir: &Path) {
    let _ = std::fs::remove_dir_all(run_dir.join("bin"));
    for entry in std::fs::read_dir(run_dir).into_iter().flatten().flatten() {
        for disk in ["scratch.raw", "root.qcow2"] {
            let _ = std::fs::remove_file(entry.path().join(disk));
        }
    }
}
