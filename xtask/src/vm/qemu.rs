//! Booting one guest under qemu: the serial console streamed to the terminal
//! with a `[<kernel> <guest>]` prefix and saved to a log, the runner's
//! markers followed, and qemu's whole process group killed when the guest
//! does not boot, a step runs past its time, or the guest's time is up.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

use super::kernels::Kernel;

/// How a guest's CPU is provided.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Accel {
    /// Hardware virtualisation.
    Kvm,
    /// qemu's emulator (10-40x slower than the host).
    Tcg,
}

impl Accel {
    /// The name in reports.
    pub fn name(self) -> &'static str {
        match self {
            Accel::Kvm => "kvm",
            Accel::Tcg => "tcg",
        }
    }

    fn args(self) -> [&'static str; 4] {
        match self {
            Accel::Kvm => ["-accel", "kvm", "-cpu", "host"],
            Accel::Tcg => ["-accel", "tcg", "-cpu", "max"],
        }
    }
}

/// A directory shared over 9p.
pub struct Share {
    /// The mount tag the guest's init scripts mount.
    pub tag: &'static str,
    /// The host directory.
    pub path: PathBuf,
    /// Whether the guest may only read it.
    pub readonly: bool,
}

/// A virtio disk.
pub struct Drive {
    /// The image file.
    pub path: PathBuf,
    /// `raw` or `qcow2`.
    pub format: &'static str,
}

/// What to boot.
pub struct Machine {
    /// The console prefix, `[<kernel> <guest>]`.
    pub label: String,
    /// The accelerator.
    pub accel: Accel,
    /// Memory in MiB.
    pub memory_mib: u32,
    /// Virtual CPUs.
    pub cpus: u32,
    /// The kernel image.
    pub kernel: PathBuf,
    /// The initramfs.
    pub initrd: PathBuf,
    /// The kernel command line.
    pub append: String,
    /// Disks, `/dev/vda` first.
    pub drives: Vec<Drive>,
    /// 9p shares.
    pub shares: Vec<Share>,
    /// The console log (appended to: every boot of a guest goes in one file).
    pub console_log: PathBuf,
    /// Whether to print the console on the terminal.
    pub echo: bool,
}

/// The time limits of one boot.
pub struct Limits {
    /// From qemu's start to the runner's `booted` marker.
    pub boot: Duration,
    /// Each step's timeout in the guest, by index; the host allows
    /// [`STEP_GRACE`] more before killing the guest.
    pub steps: Vec<Duration>,
    /// When the whole guest (every boot) must be done.
    pub deadline: Instant,
}

/// What the host adds to a step's own timeout (the guest's watchdog
/// should have ended it first) and allows between steps and for power-off.
pub const STEP_GRACE: Duration = Duration::from_secs(120);

/// How long a guest may take to power off or reboot once its runner said
/// `done` or `reboot` (systemd needs 5-10 s under TCG). Past it the guest
/// is killed: the runner synced the results and disks first, and qemu's
/// writes are in the host's page cache, so nothing is lost.
pub const POWER_OFF_GRACE: Duration = Duration::from_secs(60);

/// A step as the console showed it.
#[derive(Clone, Debug)]
pub struct StepSeen {
    /// Its index in the plan.
    pub index: usize,
    /// Its name.
    pub name: String,
    /// Host time from its start marker to its end marker (None: no end).
    pub took: Option<Duration>,
}

/// How a boot ended.
#[derive(Debug)]
pub enum End {
    /// The plan finished and the guest powered off.
    Done,
    /// The plan asked for a reboot; boot the same disks again.
    Reboot,
    /// qemu exited without either (a panic, a failed mount, an init that
    /// gave up): the console log says why.
    Stopped(ExitStatus),
    /// The host killed the guest; the reason names what was running.
    Killed(String),
}

/// What one boot showed.
#[derive(Debug)]
pub struct Boot {
    /// qemu's start to the `booted` marker.
    pub booted_after: Option<Duration>,
    /// qemu's start to the `ready` marker (binaries copied).
    pub ready_after: Option<Duration>,
    /// Whether the runner said it could not copy the binaries.
    pub copy_failed: bool,
    /// Steps started in this boot.
    pub steps: Vec<StepSeen>,
    /// Whether the guest had to be killed after `done` or `reboot` because
    /// it did not power off or reboot by itself.
    pub forced_off: bool,
    /// How it ended.
    pub end: End,
}

impl Boot {
    /// The step that started and did not end (the one running when the
    /// guest stopped).
    pub fn running(&self) -> Option<&StepSeen> {
        self.steps.last().filter(|s| s.took.is_none())
    }
}

/// A marker line of `runner.sh` (`@@lucid-vm@@ …`).
#[derive(Debug, PartialEq)]
enum Marker {
    Booted,
    Ready,
    CopyFailed,
    StepStart(usize, String),
    StepEnd(usize),
    Reboot,
    Done,
}

const MARKER: &str = "@@lucid-vm@@ ";

fn parse_marker(line: &str) -> Option<Marker> {
    let rest = &line[line.find(MARKER)? + MARKER.len()..];
    let mut words = rest.split_whitespace();
    let marker = match words.next()? {
        "booted" => Marker::Booted,
        "ready" => Marker::Ready,
        "copy-failed" => Marker::CopyFailed,
        "step-start" => {
            let index = words.next()?.parse().ok()?;
            Marker::StepStart(index, words.collect::<Vec<_>>().join(" "))
        }
        "step-end" => Marker::StepEnd(words.next()?.parse().ok()?),
        "reboot" => Marker::Reboot,
        "done" => Marker::Done,
        _ => return None,
    };
    Some(marker)
}

enum Event {
    Marker(Marker),
    Eof,
}

/// qemu in a process group of its own, killed whole when dropped.
struct Qemu(Child);

impl Qemu {
    fn kill(&mut self) {
        let pid = self.0.id() as libc::pid_t;
        // SAFETY: kill has no memory effects; -pid is qemu's own group.
        unsafe { libc::kill(-pid, libc::SIGKILL) };
        let _ = self.0.wait();
    }
}

impl Drop for Qemu {
    fn drop(&mut self) {
        if matches!(self.0.try_wait(), Ok(None)) {
            self.kill();
        }
    }
}

fn command(machine: &Machine) -> Command {
    let mut command = Command::new("qemu-system-x86_64");
    command.args(machine.accel.args());
    command
        .args(["-m", &machine.memory_mib.to_string()])
        .args(["-smp", &machine.cpus.to_string()])
        .args(["-nodefaults", "-no-user-config", "-display", "none"])
        .args(["-serial", "stdio", "-no-reboot"])
        .arg("-kernel")
        .arg(&machine.kernel)
        .arg("-initrd")
        .arg(&machine.initrd)
        .args(["-append", &machine.append]);
    for drive in &machine.drives {
        // cache=unsafe: the disks are thrown away after the run; qemu still
        // writes everything out when it exits (a reboot).
        command.arg("-drive").arg(format!(
            "file={},if=virtio,format={},cache=unsafe",
            drive.path.display(),
            drive.format
        ));
    }
    for share in &machine.shares {
        command.arg("-virtfs").arg(format!(
            "local,path={},mount_tag={},security_model=none,multidevs=remap{}",
            share.path.display(),
            share.tag,
            if share.readonly { ",readonly=on" } else { "" }
        ));
    }
    command
}

/// Boots `machine` once and follows it until it powers off, reboots or is killed.
pub fn boot(machine: &Machine, limits: &Limits) -> Result<Boot> {
    let mut log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&machine.console_log)
        .with_context(|| format!("opening {}", machine.console_log.display()))?;
    let stderr_path = machine.console_log.with_extension("qemu-stderr.log");
    let stderr = std::fs::File::create(&stderr_path)
        .with_context(|| format!("creating {}", stderr_path.display()))?;
    let mut command = command(machine);
    command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(stderr)
        .process_group(0);
    // SAFETY: the closure only calls prctl, which is async-signal-safe. qemu
    // is killed if this process dies (its group does not get the terminal's
    // Ctrl-C).
    unsafe {
        command.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            Ok(())
        });
    }
    let started = Instant::now();
    let mut child = command
        .spawn()
        .context("starting qemu-system-x86_64 (install qemu-system-x86)")?;
    let stdout = child.stdout.take().context("qemu's stdout is piped")?;
    let mut qemu = Qemu(child);

    let (tx, rx) = mpsc::channel();
    let label = machine.label.clone();
    let echo = machine.echo;
    writeln!(log, "==== boot at {:?} ====", std::time::SystemTime::now())?;
    let reader = std::thread::spawn(move || {
        let mut reader = BufReader::new(stdout);
        let mut line = Vec::new();
        loop {
            line.clear();
            match reader.read_until(b'\n', &mut line) {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
            let _ = log.write_all(&line);
            let text = String::from_utf8_lossy(&line);
            let text = text.trim_end_matches(['\n', '\r']);
            if echo {
                println!("{label} {text}");
            }
            if let Some(marker) = parse_marker(text) {
                let _ = tx.send(Event::Marker(marker));
            }
        }
        let _ = tx.send(Event::Eof);
    });

    let mut seen = Boot {
        booted_after: None,
        ready_after: None,
        copy_failed: false,
        steps: Vec::new(),
        forced_off: false,
        end: End::Done,
    };
    let mut finished = false; // done or reboot marker seen
    let mut reboot = false;
    let mut step_started: Option<(usize, Instant)> = None;
    let mut phase_deadline = started + limits.boot;
    let mut phase = String::from("booting (no marker from the runner yet)");
    loop {
        let deadline = phase_deadline.min(limits.deadline);
        let wait = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(wait) {
            Ok(Event::Marker(marker)) => {
                let now = Instant::now();
                match marker {
                    Marker::Booted => {
                        seen.booted_after = Some(now - started);
                        phase = "copying the binaries".into();
                        phase_deadline = now + STEP_GRACE;
                    }
                    Marker::Ready => {
                        seen.ready_after = Some(now - started);
                        phase = "between steps".into();
                        phase_deadline = now + STEP_GRACE;
                    }
                    Marker::CopyFailed => seen.copy_failed = true,
                    Marker::StepStart(index, name) => {
                        let limit = limits.steps.get(index).copied().unwrap_or_default();
                        phase = format!("step {index} ({name}), {} s allowed", limit.as_secs());
                        phase_deadline = now + limit + STEP_GRACE;
                        step_started = Some((index, now));
                        seen.steps.push(StepSeen {
                            index,
                            name,
                            took: None,
                        });
                    }
                    Marker::StepEnd(index) => {
                        if let (Some((i, at)), Some(last)) =
                            (step_started.take(), seen.steps.last_mut())
                        {
                            if i == index {
                                last.took = Some(now - at);
                            }
                        }
                        phase = "between steps".into();
                        phase_deadline = now + STEP_GRACE;
                    }
                    Marker::Reboot | Marker::Done => {
                        finished = true;
                        reboot = marker == Marker::Reboot;
                        phase = if reboot { "rebooting" } else { "powering off" }.into();
                        phase_deadline = now + POWER_OFF_GRACE;
                    }
                }
            }
            Ok(Event::Eof) | Err(mpsc::RecvTimeoutError::Disconnected) => break,
            Err(mpsc::RecvTimeoutError::Timeout) => {
                qemu.kill();
                let _ = reader.join();
                if finished {
                    seen.forced_off = true;
                    seen.end = if reboot { End::Reboot } else { End::Done };
                    return Ok(seen);
                }
                let why = if Instant::now() >= limits.deadline {
                    "the guest's overall time ran out"
                } else {
                    "no progress in time"
                };
                seen.end = End::Killed(format!("{} killed while {phase}: {why}", machine.label));
                return Ok(seen);
            }
        }
    }
    let _ = reader.join();
    let status = qemu.0.wait().context("waiting for qemu")?;
    seen.end = match (finished, reboot) {
        (true, true) => End::Reboot,
        (true, false) => End::Done,
        _ => End::Stopped(status),
    };
    if !finished && seen.booted_after.is_none() {
        let stderr = std::fs::read_to_string(&stderr_path).unwrap_or_default();
        if !stderr.trim().is_empty() {
            seen.end = End::Killed(format!("qemu failed ({status}): {}", stderr.trim()));
        }
    }
    Ok(seen)
}

/// The accelerator to use: KVM if a tiny guest boots with it within a few
/// seconds, else TCG. The answer is kept in `target/vm/accel` for the
/// host's boot (`/proc/sys/kernel/random/boot_id`).
pub fn accel(vm_dir: &Path, kernel: &Kernel, probe_initrd: &Path) -> Result<Accel> {
    let boot_id = std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .context("reading /proc/sys/kernel/random/boot_id")?;
    let boot_id = boot_id.trim();
    let cache = vm_dir.join("accel");
    if let Ok(text) = std::fs::read_to_string(&cache) {
        match text.split_whitespace().collect::<Vec<_>>()[..] {
            [id, "kvm"] if id == boot_id => return Ok(Accel::Kvm),
            [id, "tcg"] if id == boot_id => return Ok(Accel::Tcg),
            _ => {}
        }
    }
    let accel = if Path::new("/dev/kvm").exists() {
        let dir = vm_dir.join("probe");
        std::fs::create_dir_all(&dir)?;
        let machine = Machine {
            label: "[kvm probe]".into(),
            accel: Accel::Kvm,
            memory_mib: 256,
            cpus: 1,
            kernel: kernel.vmlinuz.clone(),
            initrd: probe_initrd.to_path_buf(),
            append: "console=ttyS0 panic=-1 quiet".into(),
            drives: Vec::new(),
            shares: Vec::new(),
            console_log: dir.join("console.log"),
            echo: false,
        };
        let _ = std::fs::remove_file(&machine.console_log);
        let limits = Limits {
            boot: Duration::from_secs(20),
            steps: Vec::new(),
            deadline: Instant::now() + Duration::from_secs(25),
        };
        let boot = boot(&machine, &limits)?;
        if boot.ready_after.is_some() {
            Accel::Kvm
        } else {
            let why = match boot.end {
                End::Killed(reason) => reason,
                End::Stopped(status) => format!("qemu exited ({status}) before the probe's marker"),
                End::Done | End::Reboot => "no marker".to_owned(),
            };
            eprintln!("vm: the KVM probe guest did not come up, using TCG: {why}");
            Accel::Tcg
        }
    } else {
        Accel::Tcg
    };
    std::fs::write(&cache, format!("{boot_id} {}\n", accel.name()))
        .with_context(|| format!("writing {}", cache.display()))?;
    Ok(accel)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markers_are_found_after_kernel_noise_on_the_same_line() {
        assert_eq!(
            parse_marker("@@lucid-vm@@ booted 6.1.0-57-amd64"),
            Some(Marker::Booted)
        );
        assert_eq!(
            parse_marker(
                "[   12.3] audit: x@@lucid-vm@@ step-start 3 busybox container with limits"
            ),
            Some(Marker::StepStart(3, "busybox container with limits".into()))
        );
        assert_eq!(
            parse_marker("@@lucid-vm@@ step-end 3 a b 0 1.50"),
            Some(Marker::StepEnd(3))
        );
        assert_eq!(parse_marker("lucid-vm: ready"), None);
    }
}
