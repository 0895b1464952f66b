//! Scrape benchmark: `lucid-exporter` with many tracked containers.
//!
//! ```sh
//! cargo run --release -p lucid-exporter --example bench -- \
//!     [--containers 500] [--scrapes 30] [--churn-seconds 0] [--churn-per-second 10] [--no-ebpf]
//! ```
//!
//! Simulated containers: a private state root holding one `state.json` per
//! container, each pointing at real cgroup directories made for it (every v1
//! controller the exporter reads, and the v2 hierarchy) under
//! `lucid-bench-<pid>`. With eBPF (the default) the first 256 of them (the
//! programs' slot limit) are registered under a private pin root and a short
//! process in each makes ~20 distinct syscalls, so they have syscall series.
//! The exporter runs in this process with its HTTP server on loopback; scrapes
//! are timed end to end over HTTP. The process's RSS is the exporter's (the
//! bench itself holds a few KiB).
//!
//! With `--churn-seconds S`, for S seconds `--churn-per-second` containers are
//! deleted and as many created every second, with a scrape after each round,
//! and RSS is reported every 10 % of the run (flat memory is the goal).
//!
//! It also measures the two ways discovery could stay current with the state
//! root, scanning and inotify (docs/exporter.md has the numbers and the choice).
//! Needs root, cgroups and (for eBPF) BTF; removes everything it made when it
//! ends, also when a step fails.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use lucid_exporter::{server, Exporter, ScrapeSettings};

struct Options {
    containers: usize,
    scrapes: usize,
    churn_seconds: u64,
    churn_per_second: usize,
    ebpf: bool,
}

fn parse_options() -> anyhow::Result<Options> {
    let mut o = Options {
        containers: 500,
        scrapes: 30,
        churn_seconds: 0,
        churn_per_second: 10,
        ebpf: true,
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut num = |name: &str| -> anyhow::Result<u64> {
            args.next()
                .with_context(|| format!("{name} needs a value"))?
                .parse()
                .with_context(|| format!("{name} takes a number"))
        };
        match arg.as_str() {
            "--containers" => o.containers = num("--containers")? as usize,
            "--scrapes" => o.scrapes = num("--scrapes")?.max(1) as usize,
            "--churn-seconds" => o.churn_seconds = num("--churn-seconds")?,
            "--churn-per-second" => o.churn_per_second = num("--churn-per-second")? as usize,
            "--no-ebpf" => o.ebpf = false,
            other => bail!(
                "unknown argument {other}; usage: bench [--containers N] [--scrapes N] \
                 [--churn-seconds S] [--churn-per-second N] [--no-ebpf]"
            ),
        }
    }
    Ok(o)
}

/// Everything the bench made, removed by `cleanup` (called on success and failure).
struct Made {
    root: PathBuf,
    parents: Vec<PathBuf>,
    pin_root: Option<PathBuf>,
    bpf: Option<lucid_ebpf::Programs>,
    next_id: usize,
    /// Live containers: ID and v2 cgroup id.
    live: std::collections::VecDeque<(String, Option<u64>)>,
    hierarchies: Vec<lucid_layout::hierarchy::Hierarchy>,
}

const CONTROLLERS: &[&str] = &["cpu", "cpuacct", "memory", "pids"];

impl Made {
    fn new(ebpf: bool) -> anyhow::Result<Self> {
        let pid = std::process::id();
        let hierarchies = lucid_layout::hierarchy::detect().context("reading cgroup mounts")?;
        let parents = hierarchies
            .iter()
            .filter(|h| h.v2 || CONTROLLERS.iter().any(|c| h.has_controller(c)))
            .map(|h| h.mountpoint.join(format!("lucid-bench-{pid}")))
            .collect();
        Ok(Made {
            root: std::env::temp_dir().join(format!("lucid-bench-root-{pid}")),
            parents,
            pin_root: ebpf
                .then(|| PathBuf::from(format!("/sys/fs/bpf/lucid-bench-exporter-{pid}"))),
            bpf: None,
            next_id: 0,
            live: Default::default(),
            hierarchies,
        })
    }

    fn add(&mut self) -> anyhow::Result<()> {
        let id = format!("bench-{}", self.next_id);
        self.next_id += 1;
        let mut dirs = Vec::new();
        for parent in &self.parents {
            let dir = parent.join(&id);
            std::fs::create_dir_all(&dir).with_context(|| format!("mkdir {}", dir.display()))?;
            dirs.push(dir);
        }
        let unified = dirs
            .iter()
            .find(|d| {
                self.hierarchies
                    .iter()
                    .any(|h| h.v2 && d.starts_with(&h.mountpoint))
            })
            .cloned();
        let unified_id = match &unified {
            Some(u) => Some(std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(u)?)),
            None => None,
        };
        if let (Some(bpf), Some(u)) = (self.bpf.as_mut(), &unified) {
            if bpf.registered()?.len() < 256 {
                bpf.register(u, &lucid_ebpf::RegisterOptions::default())
                    .with_context(|| format!("registering {}", u.display()))?;
                exercise(u)?;
            }
        }
        let now = std::time::SystemTime::now();
        let base = now
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos() as u64;
        let phases: Vec<serde_json::Value> = ["namespaces.join", "rootfs.mount", "devices", "rootfs.pivot", "process.setup"]
            .iter()
            .enumerate()
            .map(|(i, n)| serde_json::json!({"name": n, "start_ns": base + i as u64 * 1_000_000, "end_ns": base + i as u64 * 1_000_000 + 700_000}))
            .collect();
        let state = serde_json::json!({
            "ociVersion": "1.0.2",
            "id": id,
            "pid": i32::MAX,
            "status": "running",
            "bundle": "/nonexistent",
            "rootfs": "/nonexistent/rootfs",
            "created": humantime::format_rfc3339_nanos(now).to_string(),
            "annotations": {
                "io.kubernetes.cri.container-name": format!("app-{}", self.next_id % 7),
                "io.kubernetes.cri.sandbox-name": format!("pod-{id}"),
                "io.kubernetes.cri.sandbox-namespace": "bench",
            },
            "cgroup": {
                "path": format!("/lucid-bench/{id}"),
                "dirs": dirs,
                "unified": unified,
                "unified_id": unified_id,
            },
            "phases": phases,
            "config": { "ociVersion": "1.0.2" },
        });
        let dir = self.root.join(&id);
        std::fs::create_dir_all(&dir)?;
        std::fs::write(dir.join("state.json"), serde_json::to_vec(&state)?)?;
        self.live.push_back((id, unified_id));
        Ok(())
    }

    fn remove_oldest(&mut self) -> anyhow::Result<()> {
        let Some((id, cgroup_id)) = self.live.pop_front() else {
            return Ok(());
        };
        std::fs::remove_dir_all(self.root.join(&id))?;
        for parent in &self.parents {
            let dir = parent.join(&id);
            std::fs::remove_dir(&dir).with_context(|| format!("rmdir {}", dir.display()))?;
        }
        if let (Some(bpf), Some(cgroup_id)) = (self.bpf.as_mut(), cgroup_id) {
            match bpf.unregister(cgroup_id) {
                Ok(()) | Err(lucid_ebpf::Error::NotRegistered(_)) => {}
                Err(e) => return Err(e).context("unregistering a container"),
            }
        }
        Ok(())
    }

    fn cleanup(&mut self) {
        while !self.live.is_empty() {
            if let Err(e) = self.remove_oldest() {
                eprintln!("bench: cleaning up: {e:#}");
            }
        }
        let _ = std::fs::remove_dir_all(&self.root);
        for p in &self.parents {
            if let Err(e) = std::fs::remove_dir(p) {
                if e.kind() != std::io::ErrorKind::NotFound {
                    eprintln!("bench: rmdir {}: {e}", p.display());
                }
            }
        }
        self.bpf = None;
        if let Some(pins) = &self.pin_root {
            if let Err(e) = lucid_ebpf::remove_pin_root(pins) {
                eprintln!("bench: {e}");
            }
        }
    }
}

/// A short process in the cgroup makes ~20 distinct syscalls, then exits.
fn exercise(cgroup: &Path) -> anyhow::Result<()> {
    // SAFETY: the child only makes raw system calls and leaves with _exit.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        bail!("fork: {}", std::io::Error::last_os_error());
    }
    if pid == 0 {
        let procs = std::ffi::CString::new(
            cgroup
                .join("cgroup.procs")
                .into_os_string()
                .into_encoded_bytes(),
        )
        .unwrap_or_default();
        // SAFETY: raw syscalls on valid buffers; the child exits without unwinding.
        unsafe {
            let fd = libc::open(procs.as_ptr(), libc::O_WRONLY);
            if fd >= 0 {
                libc::write(fd, b"0".as_ptr().cast(), 1);
                libc::close(fd);
            }
            for nr in [
                libc::SYS_getppid,
                libc::SYS_getpid,
                libc::SYS_getuid,
                libc::SYS_getgid,
                libc::SYS_geteuid,
                libc::SYS_getegid,
                libc::SYS_gettid,
                libc::SYS_getpgrp,
                libc::SYS_sched_yield,
                libc::SYS_getsid,
                libc::SYS_umask,
                libc::SYS_getpriority,
                libc::SYS_sync,
                libc::SYS_getcwd,
                libc::SYS_uname,
                libc::SYS_sysinfo,
                libc::SYS_times,
                libc::SYS_getrusage,
                libc::SYS_personality,
                libc::SYS_close,
            ] {
                libc::syscall(nr, 0, 0);
            }
            libc::_exit(0);
        }
    }
    let mut status = 0;
    // SAFETY: waiting for the child just forked.
    unsafe { libc::waitpid(pid, &mut status, 0) };
    Ok(())
}

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

fn scrape(port: u16) -> anyhow::Result<(Duration, usize)> {
    let started = Instant::now();
    let mut s = TcpStream::connect(("127.0.0.1", port))?;
    write!(
        s,
        "GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )?;
    let mut body = Vec::new();
    s.read_to_end(&mut body)?;
    let took = started.elapsed();
    if !body.starts_with(b"HTTP/1.1 200") {
        bail!(
            "scrape failed: {}",
            String::from_utf8_lossy(&body[..body.len().min(200)])
        );
    }
    let series = body
        .split(|b| *b == b'\n')
        .filter(|l| !l.is_empty() && l[0] != b'#')
        .count();
    Ok((took, series))
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// Scan vs inotify, measured on the bench's state root.
fn compare_discovery(made: &Made) -> anyhow::Result<()> {
    let hierarchies = lucid_layout::hierarchy::detect()?;
    let mut inv = lucid_exporter::discovery::Inventory::new(&made.root, hierarchies);
    let t = Instant::now();
    inv.scan();
    let first = t.elapsed();
    let rounds = 100;
    let t = Instant::now();
    for _ in 0..rounds {
        inv.scan();
    }
    let unchanged = t.elapsed() / rounds;
    // inotify: a watch on the root (containers come and go) and one per container
    // directory (state.json is replaced by rename).
    // SAFETY: inotify_init1 has no preconditions.
    let fd = unsafe { libc::inotify_init1(libc::IN_NONBLOCK | libc::IN_CLOEXEC) };
    if fd < 0 {
        bail!("inotify_init1: {}", std::io::Error::last_os_error());
    }
    let mask = libc::IN_CREATE | libc::IN_DELETE | libc::IN_MOVED_TO | libc::IN_CLOSE_WRITE;
    let t = Instant::now();
    let mut watches = 0;
    for dir in
        std::iter::once(made.root.clone()).chain(made.live.iter().map(|(id, _)| made.root.join(id)))
    {
        let c = std::ffi::CString::new(dir.into_os_string().into_encoded_bytes())?;
        // SAFETY: fd is an inotify descriptor, c a NUL-terminated path.
        if unsafe { libc::inotify_add_watch(fd, c.as_ptr(), mask) } >= 0 {
            watches += 1;
        }
    }
    let setup = t.elapsed();
    let mut buf = [0u8; 4096];
    let t = Instant::now();
    for _ in 0..rounds {
        // SAFETY: reading into a buffer of its size; EAGAIN when nothing happened.
        unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
    }
    let idle = t.elapsed() / rounds;
    // SAFETY: closing the descriptor opened above.
    unsafe { libc::close(fd) };
    println!(
        "discovery, {} containers: scan first {:.2} ms, scan unchanged {:.3} ms; \
         inotify set-up {:.2} ms for {watches} watches, idle check {:.4} ms",
        made.live.len(),
        ms(first),
        ms(unchanged),
        ms(setup),
        ms(idle)
    );
    Ok(())
}

fn run(o: &Options, made: &mut Made) -> anyhow::Result<()> {
    std::fs::create_dir_all(&made.root)?;
    if let Some(pins) = &made.pin_root {
        made.bpf =
            Some(lucid_ebpf::Programs::open_or_load(pins).context("loading the eBPF programs")?);
    }
    let t = Instant::now();
    for _ in 0..o.containers {
        made.add()?;
    }
    println!(
        "set up {} simulated containers ({} registered with eBPF) in {:.1} s",
        o.containers,
        made.bpf
            .as_ref()
            .map_or(Ok(0), |b| b.registered().map(|r| r.len()))?,
        t.elapsed().as_secs_f64()
    );
    compare_discovery(made)?;

    let state_dir = made.root.with_extension("exporter-state");
    let settings = ScrapeSettings {
        root: made.root.clone(),
        bpf_pin_root: made
            .pin_root
            .clone()
            .unwrap_or_else(|| PathBuf::from("/nonexistent/lucid-bench-no-ebpf")),
        state_dir: Some(state_dir.clone()),
        syscall_top_n: 32,
        threads: std::thread::available_parallelism().map_or(1, |n| n.get().min(4)),
    };
    let exporter = Arc::new(Exporter::new(&settings)?);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let listener = runtime.block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))?;
    let port = listener.local_addr()?.port();
    let metrics = server::Metrics::new(exporter);
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    runtime.spawn(server::serve(listener, metrics, async {
        let _ = stop_rx.await;
    }));

    let result = (|| -> anyhow::Result<()> {
        let (first, series) = scrape(port)?;
        println!(
            "first scrape (parses every state file): {:.1} ms, {series} series",
            ms(first)
        );
        let mut times = Vec::new();
        for _ in 0..o.scrapes {
            times.push(scrape(port)?.0);
        }
        times.sort();
        println!(
            "scrape latency over {} scrapes, {} containers: p50 {:.1} ms, p90 {:.1} ms, max {:.1} ms (goal < 50 ms)",
            o.scrapes,
            o.containers,
            ms(percentile(&times, 0.5)),
            ms(percentile(&times, 0.9)),
            ms(*times.last().unwrap_or(&Duration::ZERO))
        );
        println!(
            "exporter RSS after {} scrapes: {} KiB",
            o.scrapes + 1,
            rss_kib()
        );

        if o.churn_seconds > 0 {
            let start_rss = rss_kib();
            let started = Instant::now();
            let mut next_report = 0;
            let mut churned = 0;
            let mut worst = Duration::ZERO;
            let mut max_rss = start_rss;
            while started.elapsed() < Duration::from_secs(o.churn_seconds) {
                let round = Instant::now();
                for _ in 0..o.churn_per_second {
                    made.remove_oldest()?;
                    made.add()?;
                    churned += 1;
                }
                worst = worst.max(scrape(port)?.0);
                let rss = rss_kib();
                max_rss = max_rss.max(rss);
                let pct = started.elapsed().as_secs() * 10 / o.churn_seconds;
                if pct >= next_report {
                    println!(
                        "churn {:>4} s: {churned} containers replaced, RSS {rss} KiB",
                        started.elapsed().as_secs()
                    );
                    next_report = pct + 1;
                }
                if let Some(rest) = Duration::from_secs(1).checked_sub(round.elapsed()) {
                    std::thread::sleep(rest);
                }
            }
            let end_rss = rss_kib();
            println!(
                "churn: {churned} containers replaced in {} s; RSS start {start_rss} KiB, end {end_rss} KiB, max {max_rss} KiB \
                 ({:+.1} %); slowest scrape {:.1} ms",
                o.churn_seconds,
                (end_rss as f64 - start_rss as f64) * 100.0 / start_rss.max(1) as f64,
                ms(worst)
            );
        }
        Ok(())
    })();
    let _ = stop_tx.send(());
    runtime.shutdown_timeout(Duration::from_secs(2));
    let _ = std::fs::remove_dir_all(&state_dir);
    result
}

fn main() -> anyhow::Result<()> {
    let o = parse_options()?;
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        bail!("the bench makes cgroups and loads eBPF programs: run it as root");
    }
    let mut made = Made::new(o.ebpf)?;
    let result = run(&o, &mut made);
    made.cleanup();
    result
}
