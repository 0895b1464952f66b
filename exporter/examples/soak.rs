//! Soak: the `lucid-exporter` binary, with eBPF, runs while real lucid
//! containers are created, started and deleted in a loop; nothing may leak.
//!
//! ```sh
//! cargo run --release -p lucid-exporter --example soak -- \
//!     --lucid target/release/lucid --exporter target/release/lucid-exporter \
//!     [--cycles 200] [--warm-up 50] [--rss-tolerance-kib 256]
//! ```
//! (`cargo xtask bench soak [--cycles N]` builds both and runs this.)
//!
//! Each cycle creates a container, starts it, scrapes `/metrics` and deletes
//! it: even cycles run busybox `true` and are deleted once stopped, odd ones
//! run `sleep 30`, are seen in a scrape while running, and are deleted with
//! `--force`. After `--warm-up` cycles (so that lazily made things, such as
//! the cgroup parent, the pins and the exporter's allocator arenas, exist) it
//! takes a snapshot; after `--cycles` more, another. Both list the exporter's
//! open descriptors and RSS, the cgroups under the soak's parent in every
//! hierarchy (v1 controllers and the unified one), the BPF pins under the
//! soak's pin root, the entries of the eBPF per-container maps (read with
//! `lucid-ebpf`), and the state directories under the soak's state root.
//! Every count must be equal, and the RSS within `--rss-tolerance-kib`;
//! otherwise it exits non-zero. Everything lives under names of its own
//! (state root and bundle in a temporary directory, cgroup parent
//! `lucid-soak-<pid>`, pin root `/sys/fs/bpf/lucid-soak-<pid>`) and is removed
//! at the end, also when a step fails. Needs root, cgroups and BTF.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};

struct Options {
    lucid: PathBuf,
    exporter: PathBuf,
    cycles: usize,
    warm_up: usize,
    rss_tolerance_kib: u64,
}

/// The span spool's bound for the soak's lucid commands. The spool keeps
/// every container's spans until it reaches its bound (16 MiB by default,
/// about a thousand containers), and the exporter's index of it grows with
/// it; a small bound, reached during the warm-up, keeps both at their steady
/// state, so that what grows after it is a leak.
const SPOOL_MAX_BYTES: u64 = 256 * 1024;

const USAGE: &str =
    "usage: soak --lucid PATH --exporter PATH [--cycles N] [--warm-up N] [--rss-tolerance-kib N]";

fn parse_options() -> Result<Options> {
    let mut lucid = None;
    let mut exporter = None;
    let mut o = Options {
        lucid: PathBuf::new(),
        exporter: PathBuf::new(),
        cycles: 200,
        warm_up: 50,
        rss_tolerance_kib: 256,
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = |name: &str| args.next().with_context(|| format!("{name} needs a value"));
        match arg.as_str() {
            "--lucid" => lucid = Some(PathBuf::from(value("--lucid")?)),
            "--exporter" => exporter = Some(PathBuf::from(value("--exporter")?)),
            "--cycles" => {
                o.cycles = value("--cycles")?
                    .parse()
                    .context("--cycles takes a number")?
            }
            "--warm-up" => {
                o.warm_up = value("--warm-up")?
                    .parse()
                    .context("--warm-up takes a number")?
            }
            "--rss-tolerance-kib" => {
                o.rss_tolerance_kib = value("--rss-tolerance-kib")?
                    .parse()
                    .context("--rss-tolerance-kib takes a number")?
            }
            other => bail!("unknown argument {other}\n{USAGE}"),
        }
    }
    o.lucid = lucid.context(USAGE)?;
    o.exporter = exporter.context(USAGE)?;
    ensure!(o.cycles > 0, "--cycles must be at least 1");
    Ok(o)
}

/// What is compared before and after the cycles.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Counts {
    exporter_fds: usize,
    cgroups: usize,
    pins: usize,
    maps: lucid_ebpf::MapEntries,
    state_dirs: usize,
}

#[derive(Debug, Clone)]
struct Snapshot {
    counts: Counts,
    rss_kib: u64,
    /// The spool's `usage` (bytes of batches), which moves between three
    /// quarters of the bound and the bound: shown, not compared.
    spool_bytes: u64,
}

/// Everything the soak made; `Drop` removes it.
struct Soak {
    lucid: PathBuf,
    dir: tempfile::TempDir,
    root: PathBuf,
    pin_root: PathBuf,
    parent: String,
    exporter: Option<Child>,
    port: u16,
}

impl Soak {
    fn new(o: &Options) -> Result<Soak> {
        let dir = tempfile::Builder::new().prefix("lucid-soak-").tempdir()?;
        let root = dir.path().join("root");
        let pid = std::process::id();
        let mut soak = Soak {
            lucid: o.lucid.clone(),
            root,
            pin_root: PathBuf::from(format!("/sys/fs/bpf/lucid-soak-{pid}")),
            parent: format!("lucid-soak-{pid}"),
            exporter: None,
            port: free_port()?,
            dir,
        };
        for (name, args) in [("exits", &["true"][..]), ("runs", &["sleep", "30"][..])] {
            soak.make_bundle(name, args)?;
        }
        let log = std::fs::File::create(soak.dir.path().join("exporter.log"))?;
        let child = Command::new(&o.exporter)
            .args(["--listen", &format!("127.0.0.1:{}", soak.port)])
            .arg("--root")
            .arg(&soak.root)
            .arg("--bpf-pin-root")
            .arg(&soak.pin_root)
            .arg("--state-dir")
            .arg(soak.dir.path().join("exporter-state"))
            .args(["--log-level", "warn"])
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting {}", o.exporter.display()))?;
        soak.exporter = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        while get(soak.port, "/healthz").is_err() {
            if Instant::now() > deadline {
                bail!(
                    "the exporter did not answer /healthz: {}",
                    soak.exporter_log()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(soak)
    }

    fn exporter_pid(&self) -> u32 {
        self.exporter.as_ref().map_or(0, Child::id)
    }

    fn exporter_log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("exporter.log")).unwrap_or_default()
    }

    fn make_bundle(&self, name: &str, args: &[&str]) -> Result<()> {
        let bundle = self.dir.path().join(name);
        let bin = bundle.join("rootfs/bin");
        std::fs::create_dir_all(&bin)?;
        std::fs::copy("/bin/busybox", bin.join("busybox"))
            .context("copying /bin/busybox (install busybox-static: cargo xtask setup)")?;
        for applet in ["true", "sleep", "sh"] {
            std::os::unix::fs::symlink("busybox", bin.join(applet))?;
        }
        for sub in ["proc", "sys", "dev", "tmp"] {
            std::fs::create_dir_all(bundle.join("rootfs").join(sub))?;
        }
        self.lucid_ok(&["spec", "--bundle", &bundle.to_string_lossy()])?;
        let path = bundle.join("config.json");
        let mut config: serde_json::Value = serde_json::from_slice(&std::fs::read(&path)?)?;
        config["process"]["terminal"] = false.into();
        config["process"]["args"] = serde_json::json!(args);
        std::fs::write(&path, serde_json::to_vec_pretty(&config)?)?;
        Ok(())
    }

    fn lucid(&self, args: &[&str]) -> Result<std::process::Output> {
        Command::new(&self.lucid)
            .arg("--root")
            .arg(&self.root)
            .args(args)
            .env("LUCID_EBPF_PIN_ROOT", &self.pin_root)
            .env("LUCID_SPOOL_MAX_BYTES", SPOOL_MAX_BYTES.to_string())
            .stdin(Stdio::null())
            // The container inherits these: no pipe may stay open behind it.
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(self.dir.path().join("lucid.err"))?)
            .status()
            .map(|status| std::process::Output {
                status,
                stdout: Vec::new(),
                stderr: std::fs::read(self.dir.path().join("lucid.err")).unwrap_or_default(),
            })
            .with_context(|| format!("running {}", self.lucid.display()))
    }

    fn lucid_ok(&self, args: &[&str]) -> Result<()> {
        let out = self.lucid(args)?;
        ensure!(
            out.status.success(),
            "lucid {args:?} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(())
    }

    fn status(&self, id: &str) -> Result<String> {
        let out = Command::new(&self.lucid)
            .arg("--root")
            .arg(&self.root)
            .args(["state", id])
            .output()?;
        ensure!(
            out.status.success(),
            "lucid state {id}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let state: serde_json::Value = serde_json::from_slice(&out.stdout)?;
        Ok(state["status"].as_str().unwrap_or_default().to_owned())
    }

    /// One container's life; returns whether it was a running one the
    /// exporter listed, and with `probe`, the counts while it ran.
    fn cycle(&self, n: usize, probe: bool) -> Result<(bool, Option<Counts>)> {
        let id = format!("soak-{}-{n}", std::process::id());
        let runs = n % 2 == 1;
        let bundle = self.dir.path().join(if runs { "runs" } else { "exits" });
        let cgroups_path = format!("/{}/{id}", self.parent);
        // The cgroup path goes in through the bundle's config, per container.
        let config_path = bundle.join("config.json");
        let mut config: serde_json::Value = serde_json::from_slice(&std::fs::read(&config_path)?)?;
        config["linux"]["cgroupsPath"] = cgroups_path.into();
        std::fs::write(&config_path, serde_json::to_vec(&config)?)?;
        self.lucid_ok(&["create", "--bundle", &bundle.to_string_lossy(), &id])?;
        if n == 0 {
            let state: serde_json::Value =
                serde_json::from_slice(&std::fs::read(self.root.join(&id).join("state.json"))?)?;
            ensure!(
                state["ebpf"].is_object(),
                "the first container is not watched by eBPF: {}",
                state
            );
        }
        self.lucid_ok(&["start", &id])?;
        let mut during = None;
        let listed = if runs {
            let body = get(self.port, "/metrics")?;
            if probe {
                during = Some(self.counts()?);
            }
            body.contains(&format!("\"{id}\""))
        } else {
            let deadline = Instant::now() + Duration::from_secs(30);
            while self.status(&id)? != "stopped" {
                ensure!(Instant::now() < deadline, "{id} never stopped");
                std::thread::sleep(Duration::from_millis(5));
            }
            get(self.port, "/metrics")?;
            false
        };
        if runs {
            self.lucid_ok(&["delete", "--force", &id])?;
        } else {
            self.lucid_ok(&["delete", &id])?;
        }
        Ok((listed, during))
    }

    fn counts(&self) -> Result<Counts> {
        let pid = self.exporter_pid();
        let exporter_fds = std::fs::read_dir(format!("/proc/{pid}/fd"))
            .context("the exporter is gone")?
            .count();
        let mut cgroups = 0;
        for hierarchy in std::fs::read_dir("/sys/fs/cgroup")?.flatten() {
            cgroups += count_dirs(&hierarchy.path().join(&self.parent));
        }
        let pins = count_entries(&self.pin_root);
        let maps = lucid_ebpf::Programs::open(&self.pin_root)
            .context("opening the soak's pins")?
            .map_entries()
            .context("counting the eBPF map entries")?;
        let state_dirs = lucid_layout::state::list_ids(&self.root)?.len();
        Ok(Counts {
            exporter_fds,
            cgroups,
            pins,
            maps,
            state_dirs,
        })
    }

    /// A snapshot once the exporter has scraped the state as it is and the
    /// kernel has freed what it frees lazily (cgroup storage goes with the
    /// cgroup's RCU-delayed release): up to 10 s for `until` to hold.
    fn settled(&self, until: impl Fn(&Counts) -> bool) -> Result<Snapshot> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            get(self.port, "/metrics")?;
            let counts = self.counts()?;
            if until(&counts) || Instant::now() > deadline {
                let usage =
                    std::fs::read_to_string(self.root.join("@spool/usage")).unwrap_or_default();
                return Ok(Snapshot {
                    counts,
                    rss_kib: rss_kib(self.exporter_pid())?,
                    spool_bytes: usage.trim().parse().unwrap_or(0),
                });
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

impl Drop for Soak {
    fn drop(&mut self) {
        if let Some(mut child) = self.exporter.take() {
            // SAFETY: kill(2) on our own child.
            unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
            let _ = child.wait();
        }
        for id in lucid_layout::state::list_ids(&self.root).unwrap_or_default() {
            let _ = self.lucid(&["delete", "--force", &id]);
        }
        if let Ok(hierarchies) = std::fs::read_dir("/sys/fs/cgroup") {
            for hierarchy in hierarchies.flatten() {
                remove_cgroup_tree(&hierarchy.path().join(&self.parent));
            }
        }
        if self.pin_root.exists() {
            if let Err(e) = lucid_ebpf::remove_pin_root(&self.pin_root) {
                eprintln!("removing {}: {e}", self.pin_root.display());
            }
        }
    }
}

fn remove_cgroup_tree(dir: &Path) {
    if let Ok(entries) = std::fs::read_dir(dir) {
        for entry in entries.flatten() {
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                remove_cgroup_tree(&entry.path());
            }
        }
        let _ = std::fs::remove_dir(dir);
    }
}

/// Cgroups below `dir` (not counting `dir`).
fn count_dirs(dir: &Path) -> usize {
    std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .map(|e| 1 + count_dirs(&e.path()))
        .sum()
}

/// Files and directories below `dir`.
fn count_entries(dir: &Path) -> usize {
    std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| {
            1 + if e.file_type().is_ok_and(|t| t.is_dir()) {
                count_entries(&e.path())
            } else {
                0
            }
        })
        .sum()
}

fn rss_kib(pid: u32) -> Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .context("no VmRSS in /proc/PID/status")
}

fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// An HTTP/1.1 GET on loopback; the body of a 200 answer.
fn get(port: u16, path: &str) -> Result<String> {
    let mut s = TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(30)))?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )?;
    let mut answer = Vec::new();
    s.read_to_end(&mut answer)?;
    let answer = String::from_utf8_lossy(&answer).into_owned();
    ensure!(
        answer.starts_with("HTTP/1.1 200"),
        "GET {path}: {}",
        &answer[..answer.len().min(200)]
    );
    Ok(answer)
}

fn print_row(name: &str, before: impl std::fmt::Display, after: impl std::fmt::Display, ok: bool) {
    println!(
        "{name:<44} {before:>10} {after:>10}  {}",
        if ok { "equal" } else { "DIFFERENT" }
    );
}

fn run(o: &Options, soak: &Soak) -> Result<bool> {
    let started = Instant::now();
    for n in 0..o.warm_up {
        soak.cycle(n, false)?;
    }
    let before = soak.settled(|c| c.maps.cgroup_storage == 0 && c.cgroups == 0)?;
    let mut listed = 0;
    let mut rss_trend = Vec::new();
    let loop_start = Instant::now();
    let mut during = None;
    for n in 0..o.cycles {
        let (seen, probed) = soak.cycle(o.warm_up + n, during.is_none())?;
        listed += usize::from(seen);
        during = during.or(probed);
        if (n + 1) % (o.cycles / 10).max(1) == 0 {
            rss_trend.push(rss_kib(soak.exporter_pid())?);
        }
    }
    let loop_time = loop_start.elapsed();
    let after = soak.settled(|c| *c == before.counts)?;
    let running = (o.warm_up..o.warm_up + o.cycles)
        .filter(|n| n % 2 == 1)
        .count();
    // The same probes see a running container, so equal counts are not
    // probes that see nothing.
    let during = during.context("no running container was probed: give --cycles 2 or more")?;
    ensure!(
        during.cgroups > 0
            && during.maps.watched == 1
            && during.pins > before.counts.pins
            && during.state_dirs == 1
            && during.exporter_fds >= before.counts.exporter_fds,
        "the probes did not see a running container: {during:?}"
    );
    println!(
        "\nsoak: {} cycles after {} warm-up cycles in {:.1} s ({:.0} ms a cycle); the exporter listed {listed} of the {running} running containers in a scrape",
        o.cycles,
        o.warm_up,
        loop_time.as_secs_f64(),
        loop_time.as_secs_f64() * 1e3 / o.cycles as f64
    );
    println!(
        "{:<44} {:>10} {:>10}   (one running container: fds {}, cgroups {}, pins {}, WATCHED {}, cgroup storage {}, state dirs {})",
        "",
        "before",
        "after",
        during.exporter_fds,
        during.cgroups,
        during.pins,
        during.maps.watched,
        during.maps.cgroup_storage,
        during.state_dirs
    );
    let (b, a) = (&before.counts, &after.counts);
    let rows: [(&str, usize, usize); 10] = [
        ("exporter open descriptors", b.exporter_fds, a.exporter_fds),
        (
            "cgroups under the parent (v1 + unified)",
            b.cgroups,
            a.cgroups,
        ),
        ("BPF pins under the pin root", b.pins, a.pins),
        ("eBPF WATCHED entries", b.maps.watched, a.maps.watched),
        ("eBPF LATENCY entries", b.maps.latency, a.maps.latency),
        ("eBPF INFLIGHT entries", b.maps.inflight, a.maps.inflight),
        (
            "eBPF cgroup storage (NET, DEVICE_RULES)",
            b.maps.cgroup_storage,
            a.maps.cgroup_storage,
        ),
        (
            "eBPF counter slots dirty without a container",
            b.maps.stale_slots,
            a.maps.stale_slots,
        ),
        ("state directories", b.state_dirs, a.state_dirs),
        ("containers listed / running", listed, running),
    ];
    let mut ok = true;
    for (name, before, after) in rows {
        print_row(name, before, after, before == after);
        ok &= before == after;
    }
    let grew = after.rss_kib.saturating_sub(before.rss_kib);
    let rss_ok = grew <= o.rss_tolerance_kib;
    println!(
        "{:<44} {:>10} {:>10}  {}",
        "exporter RSS (KiB)",
        before.rss_kib,
        after.rss_kib,
        if rss_ok {
            format!("within {} KiB", o.rss_tolerance_kib)
        } else {
            format!("GREW {grew} KiB (tolerance {} KiB)", o.rss_tolerance_kib)
        }
    );
    println!("exporter RSS every 10 % of the cycles (KiB): {rss_trend:?}");
    println!(
        "span spool: {} bytes before, {} after (bound {SPOOL_MAX_BYTES}, evicted down to three quarters)",
        before.spool_bytes, after.spool_bytes
    );
    println!("total {:.1} s", started.elapsed().as_secs_f64());
    Ok(ok && rss_ok)
}

fn main() -> Result<()> {
    let o = parse_options()?;
    // SAFETY: geteuid has no preconditions.
    ensure!(
        unsafe { libc::geteuid() } == 0,
        "the soak runs real containers and needs root"
    );
    let soak = Soak::new(&o)?;
    let result = run(&o, &soak);
    if result.is_err() {
        eprintln!("exporter log:\n{}", soak.exporter_log());
    }
    drop(soak);
    if !result? {
        bail!("the soak found a leak: see the table above");
    }
    Ok(())
}
