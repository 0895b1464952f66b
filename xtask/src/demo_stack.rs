//! `cargo xtask demo`, second part: the metrics stack on loopback.
//!
//! Starts `lucid-exporter` and Debian's Prometheus with private state on
//! loopback ports, runs a few containers (a busy one labelled as a Kubernetes
//! pod with syscall latency on, a batch job, a memory hog the OOM killer
//! hits, short-lived ones), shows what Prometheus has, prints where to point
//! Grafana and the waterfall of one container's start. On a terminal the stack
//! keeps running until Ctrl-C; otherwise it stops at once. Everything it
//! started is stopped by pid and removed by path when it ends, also after an
//! error or a Ctrl-C at any step (a second Ctrl-C stops the demo at once,
//! without cleaning up).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde_json::{json, Value};

use crate::bundle::Bundle;
use crate::{setup, shell};

/// How often Prometheus scrapes the exporter in the demo.
const SCRAPE_SECONDS: u64 = 2;
/// Short-lived containers started, a second apart, for the start-up histograms.
const QUICK_CONTAINERS: usize = 5;

/// Runs the stack with the `lucid` binary `lucid`.
pub fn run(lucid: &Path) -> Result<()> {
    // Ctrl-C (and SIGTERM, SIGHUP) must not kill the demo before it cleans up.
    // What it starts runs in process groups of its own, so a Ctrl-C in the
    // terminal reaches only the demo, which stops them.
    let signals = Signals::catch()?;
    setup::apt_install(&["prometheus"])?;
    shell::run("cargo", &["build", "--release", "-p", "lucid-exporter"])?;
    let exporter = shell::workspace().join("target/release/lucid-exporter");
    let mut stack = Stack::new(lucid);
    let result = stack.show(&exporter, &signals);
    println!("\n== stopping the stack ==");
    drop(stack);
    result
}

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    INTERRUPTED.store(true, Ordering::SeqCst);
}

/// SIGINT, SIGTERM and SIGHUP caught while it lives: the first asks the demo
/// to stop (and clean up) at its next step; the handler then resets itself, so
/// a second one stops it at once, as without the demo.
struct Signals {
    old: Vec<(libc::c_int, libc::sigaction)>,
}

impl Signals {
    fn catch() -> Result<Self> {
        let mut old = Vec::new();
        for sig in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
            // SAFETY: sigaction is plain data; the handler only stores to an
            // atomic, which is async-signal-safe.
            let (rc, previous) = unsafe {
                let mut action: libc::sigaction = std::mem::zeroed();
                action.sa_sigaction = on_signal as extern "C" fn(libc::c_int) as usize;
                action.sa_flags = libc::SA_RESETHAND;
                libc::sigemptyset(&mut action.sa_mask);
                let mut previous: libc::sigaction = std::mem::zeroed();
                (libc::sigaction(sig, &action, &mut previous), previous)
            };
            if rc != 0 {
                bail!("catching signal {sig}: {}", std::io::Error::last_os_error());
            }
            old.push((sig, previous));
        }
        Ok(Signals { old })
    }

    /// Sleeps up to `timeout`; true if a signal came.
    fn wait(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while !INTERRUPTED.load(Ordering::SeqCst) {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            std::thread::sleep(left.min(Duration::from_millis(100)));
        }
        true
    }

    /// Fails if a signal came, so the demo stops (and cleans up) early.
    fn check(&self) -> Result<()> {
        if INTERRUPTED.load(Ordering::SeqCst) {
            bail!("interrupted");
        }
        Ok(())
    }
}

impl Drop for Signals {
    fn drop(&mut self) {
        for (sig, previous) in &self.old {
            // SAFETY: puts back the action saved in `catch`.
            unsafe { libc::sigaction(*sig, previous, std::ptr::null_mut()) };
        }
    }
}

/// A process the demo started, killed by pid and reaped on drop.
struct Started {
    child: Child,
    what: &'static str,
}

impl Drop for Started {
    fn drop(&mut self) {
        println!("stopping {} (pid {})", self.what, self.child.id());
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Everything the demo made; dropping it stops and removes all of it.
struct Stack {
    lucid: PathBuf,
    /// The state root of the demo's containers.
    root: PathBuf,
    /// Where the eBPF programs are pinned for them (not the host's default).
    pin_root: PathBuf,
    /// The exporter's state, Prometheus's configuration and data.
    work: PathBuf,
    /// Prometheus first, so it stops before the exporter it scrapes.
    processes: Vec<Started>,
    containers: Vec<String>,
    bundles: Vec<Bundle>,
}

impl Stack {
    fn new(lucid: &Path) -> Self {
        let pid = std::process::id();
        Stack {
            lucid: lucid.to_path_buf(),
            root: PathBuf::from(format!("/run/lucid-demo-stack-{pid}")),
            pin_root: PathBuf::from(format!("/sys/fs/bpf/lucid-demo-stack-{pid}")),
            work: std::env::temp_dir().join(format!("lucid-demo-stack-{pid}")),
            processes: Vec::new(),
            containers: Vec::new(),
            bundles: Vec::new(),
        }
    }

    fn lucid(&self) -> Command {
        let mut c = Command::new(&self.lucid);
        c.arg("--root")
            .arg(&self.root)
            .env("LUCID_EBPF_PIN_ROOT", &self.pin_root)
            .process_group(0);
        c
    }

    fn show(&mut self, exporter_bin: &Path, signals: &Signals) -> Result<()> {
        std::fs::create_dir_all(&self.work)
            .with_context(|| format!("making {}", self.work.display()))?;
        println!("\n== the metrics stack: lucid-exporter and Prometheus on loopback ==");
        let exporter_port = free_port()?;
        let log = std::fs::File::create(self.work.join("exporter.log"))?;
        let child = Command::new(exporter_bin)
            .arg("--listen")
            .arg(format!("127.0.0.1:{exporter_port}"))
            .arg("--root")
            .arg(&self.root)
            .arg("--bpf-pin-root")
            .arg(&self.pin_root)
            .arg("--state-dir")
            .arg(self.work.join("exporter"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .process_group(0)
            .spawn()
            .context("starting lucid-exporter")?;
        self.processes.insert(
            0,
            Started {
                child,
                what: "lucid-exporter",
            },
        );
        wait_until(20, "lucid-exporter's /healthz", signals, || {
            Ok(matches!(http_get(exporter_port, "/healthz"), Ok((200, _))))
        })?;
        println!("lucid-exporter: http://127.0.0.1:{exporter_port}/metrics");

        let prometheus_port = free_port()?;
        let config = self.work.join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: {SCRAPE_SECONDS}s\n\
                 scrape_configs:\n  - job_name: lucid\n    static_configs:\n      - targets: ['127.0.0.1:{exporter_port}']\n"
            ),
        )?;
        let log = std::fs::File::create(self.work.join("prometheus.log"))?;
        let child = Command::new("/usr/bin/prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                self.work.join("prometheus").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{prometheus_port}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .process_group(0)
            .spawn()
            .context("starting prometheus (Debian's prometheus package)")?;
        self.processes.insert(
            0,
            Started {
                child,
                what: "prometheus",
            },
        );
        wait_until(60, "Prometheus to be ready", signals, || {
            Ok(matches!(
                http_get(prometheus_port, "/-/ready"),
                Ok((200, _))
            ))
        })?;
        println!(
            "Prometheus: http://127.0.0.1:{prometheus_port} (scraping every {SCRAPE_SECONDS} s)"
        );
        // The start-up histograms at zero first, so every start below is an increase.
        wait_until(30, "the first scrape", signals, || {
            Ok(!query(
                prometheus_port,
                "lucid_container_start_duration_seconds_count",
            )?
            .is_empty())
        })?;

        println!("\n== a few containers ==");
        self.start_container(
            "web",
            &[
                "sh",
                "-c",
                "while true; do ls -R /proc/self >/dev/null 2>&1; cat /no-such-file 2>/dev/null; sleep 0.2; done",
            ],
            json!({
                "io.kubernetes.cri.container-type": "container",
                "io.kubernetes.cri.container-name": "web",
                "io.kubernetes.cri.sandbox-name": "web-6f7d",
                "io.kubernetes.cri.sandbox-namespace": "shop",
                "io.kubernetes.cri.image-name": "example/web:1",
                "lucid.ebpf/syscall-latency": "true",
            }),
            None,
        )?;
        self.start_container(
            "report",
            &[
                "sh",
                "-c",
                "while true; do dd if=/dev/zero of=/dev/null bs=64k count=4000 2>/dev/null; sleep 1; done",
            ],
            json!({
                "io.kubernetes.cri.container-name": "report",
                "io.kubernetes.cri.sandbox-name": "report-28f1",
                "io.kubernetes.cri.sandbox-namespace": "batch",
            }),
            None,
        )?;
        // tail keeps a line that never ends: it grows until the limit kills it.
        self.start_container(
            "hog",
            &["sh", "-c", "while true; do tail /dev/zero; sleep 5; done"],
            json!({ "lucid.name": "hog" }),
            Some(json!({ "memory": { "limit": 33554432, "swap": 33554432 } })),
        )?;
        for i in 1..=QUICK_CONTAINERS {
            signals.check()?;
            std::thread::sleep(Duration::from_secs(1));
            self.start_container(&format!("quick-{i}"), &["true"], json!({}), None)?;
        }
        let started = self.containers.len();
        wait_until(60, "Prometheus to see every start", signals, || {
            let r = query(
                prometheus_port,
                &format!("lucid_container_start_duration_seconds_count >= {started}"),
            )?;
            Ok(!r.is_empty())
        })?;
        // Two more scrapes, so rates over the last starts have samples after them.
        if signals.wait(Duration::from_secs(2 * SCRAPE_SECONDS)) {
            bail!("interrupted");
        }

        println!("\n== what Prometheus has (PromQL the dashboards use) ==");
        let show = |label: &str, promql: &str, unit: &str, scale: f64| -> Result<()> {
            for (labels, v) in query(prometheus_port, promql)? {
                let name = labels
                    .get("syscall")
                    .or(labels.get("name"))
                    .and_then(Value::as_str)
                    .unwrap_or_default();
                println!("  {label:<34} {name:<14} {:>10.2} {unit}", v * scale);
            }
            Ok(())
        };
        show(
            "containers started",
            "round(sum(increase(lucid_container_start_duration_seconds_count[10m])))",
            "",
            1.0,
        )?;
        show(
            "start p50",
            "histogram_quantile(0.5, sum by (le) (increase(lucid_container_start_duration_seconds_bucket[10m])))",
            "ms",
            1e3,
        )?;
        show(
            "slowest start",
            "topk(1, lucid_container_startup_seconds)",
            "ms",
            1e3,
        )?;
        show(
            "web's top syscalls",
            r#"topk(3, sum by (syscall) (rate(lucid_container_syscalls_total{name="web"}[1m])))"#,
            "/s",
            1.0,
        )?;
        show(
            "busiest containers (CPU)",
            r#"topk(3, sum by (name) (rate(container_cpu_usage_seconds_total{container_id!=""}[1m])))"#,
            "% of a core",
            100.0,
        )?;
        show(
            "OOM kills",
            r#"sum by (name) (lucid_container_oom_kills_total{name="hog"})"#,
            "",
            1.0,
        )?;

        println!("\n== point Grafana at it ==");
        let dashboards = shell::workspace().join("dashboards");
        println!(
            "Add a Prometheus data source with URL http://127.0.0.1:{prometheus_port} (scrape interval {SCRAPE_SECONDS}s),\n\
             then import {}/*.json (Dashboards > New > Import), or provision both:\n\
             \n  cp {dir}/provisioning/datasources/lucid.yaml /etc/grafana/provisioning/datasources/\n  \
             cp {dir}/provisioning/dashboards/lucid.yaml /etc/grafana/provisioning/dashboards/\n  \
             LUCID_PROMETHEUS_URL=http://127.0.0.1:{prometheus_port} LUCID_DASHBOARDS_DIR={dir} grafana-server ...\n\
             \nIn the dashboards, pick namespace \"shop\", pod \"web-6f7d\", container \"web\" to see one container.\n\
             docs/dashboards.md describes every panel.",
            dashboards.display(),
            dir = dashboards.display(),
        );

        println!("\n== the start of container web ==");
        self.print_waterfall("web")?;

        // SAFETY: isatty only inspects the descriptor.
        if unsafe { libc::isatty(0) } == 1 {
            println!("\nThe stack keeps running; press Ctrl-C to stop it and remove everything.");
            while !signals.wait(Duration::from_secs(3600)) {}
        } else {
            println!("\nstdin is not a terminal: stopping the stack now.");
        }
        Ok(())
    }

    /// Creates and starts container `id` running `args`, with `annotations`
    /// and `resources` (the spec's `linux.resources`).
    fn start_container(
        &mut self,
        id: &str,
        args: &[&str],
        annotations: Value,
        resources: Option<Value>,
    ) -> Result<()> {
        let bundle = Bundle::new(&self.lucid, &format!("demo-stack-{id}"), args)?;
        let path = bundle.dir.join("config.json");
        let mut config: Value = serde_json::from_str(&std::fs::read_to_string(&path)?)?;
        config["annotations"] = annotations;
        if let Some(r) = resources {
            config["linux"]["resources"] = r;
        }
        std::fs::write(&path, serde_json::to_vec_pretty(&config)?)?;
        let arg = bundle.arg().to_owned();
        self.bundles.push(bundle);
        // Recorded before create, so a create cut short is still deleted.
        self.containers.push(id.to_owned());
        // Errors go to a file, not a pipe: the container's process inherits the
        // descriptor, and a pipe would stay open (and a reader blocked) until it exits.
        let errors = self.work.join("lucid.stderr");
        for step in [vec!["create", "--bundle", &arg, id], vec!["start", id]] {
            let status = self
                .lucid()
                .args(&step)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(std::fs::File::create(&errors)?)
                .status()
                .with_context(|| format!("running lucid {}", step.join(" ")))?;
            if !status.success() {
                bail!(
                    "lucid {} failed ({status}): {}",
                    step.join(" "),
                    std::fs::read_to_string(&errors).unwrap_or_default().trim()
                );
            }
        }
        println!(
            "$ lucid create && lucid start {id:<10}  # {}",
            args.join(" ")
        );
        Ok(())
    }

    /// `lucid trace ID` where the runtime has it, else the phases the init
    /// process recorded in the state.
    fn print_waterfall(&self, id: &str) -> Result<()> {
        let has_trace = self
            .lucid()
            .args(["trace", "--help"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if has_trace {
            println!("$ lucid trace {id}");
            let status = self.lucid().args(["trace", id]).status()?;
            if !status.success() {
                bail!("lucid trace {id} failed ({status})");
            }
            return Ok(());
        }
        println!("(this lucid has no `lucid trace`: the phases it recorded instead)");
        super::print_phases(&self.root, id)
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        // Prometheus, then the exporter, by pid.
        self.processes.clear();
        for id in self.containers.iter().rev() {
            let deleted = self
                .lucid()
                .args(["delete", "--force", id])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success());
            if !deleted {
                eprintln!(
                    "could not delete container {id}: lucid --root {} delete --force {id}",
                    self.root.display()
                );
            }
        }
        for dir in [&self.root, &self.pin_root, &self.work] {
            match std::fs::remove_dir_all(dir) {
                Ok(()) => println!("removed {}", dir.display()),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => eprintln!("removing {}: {e}", dir.display()),
            }
        }
    }
}

fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// Polls `ready` every 200 ms for up to `secs`, stopping early on a signal.
fn wait_until(
    secs: u64,
    what: &str,
    signals: &Signals,
    mut ready: impl FnMut() -> Result<bool>,
) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !ready()? {
        if Instant::now() > deadline {
            bail!("timed out after {secs} s waiting for {what}");
        }
        if signals.wait(Duration::from_millis(200)) {
            bail!("interrupted");
        }
    }
    Ok(())
}

/// A bare HTTP/1.0 GET on loopback (no chunked answers): (status, body).
fn http_get(port: u16, path: &str) -> std::io::Result<(u16, String)> {
    let mut stream = TcpStream::connect(("127.0.0.1", port))?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")?;
    let mut text = String::new();
    stream.read_to_string(&mut text)?;
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    Ok((status, body.to_owned()))
}

/// An instant PromQL query: each series' labels and value.
fn query(port: u16, promql: &str) -> Result<Vec<(serde_json::Map<String, Value>, f64)>> {
    let encoded: String = promql
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect();
    let (status, body) =
        http_get(port, &format!("/api/v1/query?query={encoded}")).context("querying Prometheus")?;
    let v: Value = serde_json::from_str(&body)
        .with_context(|| format!("Prometheus answered {status}: {body}"))?;
    if v["status"] != "success" {
        bail!("query {promql}: {}", v["error"]);
    }
    Ok(v["data"]["result"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|r| {
            let value = r["value"][1].as_str()?.parse().ok()?;
            Some((r["metric"].as_object()?.clone(), value))
        })
        .collect())
}
