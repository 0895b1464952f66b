//! `lucid-exporter` and Debian's real Prometheus server, started by a test on
//! loopback ports with private state, and stopped by pid (and their files
//! removed) when the test ends, also when it fails.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::lucid_bin;

/// A process this test started; killed by pid and reaped on drop.
pub struct Process {
    child: Child,
    what: &'static str,
}

impl Process {
    /// Takes charge of `child`, named `what` in failure messages.
    pub fn new(child: Child, what: &'static str) -> Self {
        Process { child, what }
    }

    /// Its pid.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Resident memory in KiB, from /proc/PID/status.
    pub fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid()))
            .unwrap_or_else(|e| panic!("{} (pid {}) is gone: {e}", self.what, self.pid()));
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmRSS in /proc/PID/status")
    }

    /// Fails the test if the process exited.
    pub fn assert_running(&mut self) {
        if let Ok(Some(status)) = self.child.try_wait() {
            panic!("{} exited: {status}", self.what);
        }
    }

    /// Sends SIGTERM and waits (up to 30 s) for the process to exit.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        // SAFETY: kill only sends a signal to the child this value owns.
        let sent = unsafe { libc::kill(self.pid() as libc::pid_t, libc::SIGTERM) };
        assert_eq!(
            sent,
            0,
            "SIGTERM to {}: {}",
            self.what,
            std::io::Error::last_os_error()
        );
        wait_for(30, "the process to stop on SIGTERM", || {
            self.child.try_wait().expect("waiting for the process")
        })
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A loopback port free right now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("binding a loopback port")
}

/// A bare HTTP/1.1 GET on loopback: (status, body).
pub fn http_get(port: u16, path: &str) -> std::io::Result<(u16, String)> {
    let mut stream = TcpStream::connect(("127.0.0.1", port))?;
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw)?;
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| std::io::Error::other(format!("no HTTP header in {text:?}")))?;
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("bad status line in {head:?}")))?;
    let body = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        dechunk(body)
    } else {
        body.to_owned()
    };
    Ok((status, body))
}

fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        body = rest[n..].trim_start_matches("\r\n");
    }
    out
}

/// Percent-encodes everything but RFC 3986's unreserved characters.
pub fn percent_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Polls `check` every 200 ms until it returns `Some`, failing with `what` after `secs`.
pub fn wait_for<T>(secs: u64, what: &str, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = crate::deadline(secs);
    loop {
        if let Some(v) = check() {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {secs} s waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The `lucid-exporter` binary built next to `lucid`.
pub fn exporter_bin() -> PathBuf {
    let bin = lucid_bin().with_file_name("lucid-exporter");
    assert!(
        bin.exists(),
        "{} does not exist: build it first (cargo build -p lucid-exporter)",
        bin.display()
    );
    bin
}

/// A `lucid-exporter` on a loopback port; its log is printed if the test fails.
pub struct Exporter {
    /// The process.
    pub process: Process,
    /// Where `/metrics` is served on 127.0.0.1.
    pub port: u16,
    log: PathBuf,
}

impl Exporter {
    /// Starts one for state root `root`, pin root `pin_root` and its own state in
    /// `state_dir` (its log goes beside it), with `extra` flags; waits for `/healthz`.
    pub fn start(root: &Path, pin_root: &Path, state_dir: &Path, extra: &[&str]) -> Self {
        Self::start_command(Self::command(root, pin_root, state_dir, extra), state_dir)
    }

    /// The command [`Exporter::start`] runs, but for `--listen`: to add
    /// environment to, or to run an exporter expected to refuse its settings.
    pub fn command(root: &Path, pin_root: &Path, state_dir: &Path, extra: &[&str]) -> Command {
        let mut command = Command::new(exporter_bin());
        command
            .arg("--root")
            .arg(root)
            .arg("--bpf-pin-root")
            .arg(pin_root)
            .arg("--state-dir")
            .arg(state_dir)
            .args(["--log-level", "debug"])
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null());
        command
    }

    /// Starts `command` (from [`Exporter::command`]) on a free loopback port,
    /// its log beside `state_dir`; waits for `/healthz`.
    pub fn start_command(mut command: Command, state_dir: &Path) -> Self {
        let port = free_port();
        let log = state_dir.with_extension(format!("{port}.log"));
        let log_file = std::fs::File::create(&log).expect("creating the exporter's log");
        let child = command
            .arg("--listen")
            .arg(format!("127.0.0.1:{port}"))
            .stderr(log_file)
            .spawn()
            .expect("starting lucid-exporter");
        let mut exporter = Exporter {
            process: Process::new(child, "lucid-exporter"),
            port,
            log,
        };
        wait_for(20, "the exporter's /healthz", || {
            exporter.process.assert_running();
            match http_get(port, "/healthz") {
                Ok((200, _)) => Some(()),
                _ => None,
            }
        });
        exporter
    }

    /// GET /metrics.
    pub fn metrics(&mut self) -> String {
        self.process.assert_running();
        let (status, body) = http_get(self.port, "/metrics").expect("GET /metrics");
        assert_eq!(status, 200, "GET /metrics: {body}");
        body
    }

    /// What it logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Exporter {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("lucid-exporter log:\n{}", self.log());
        }
        let _ = std::fs::remove_file(&self.log);
    }
}

/// Debian's Prometheus server.
pub const PROMETHEUS: &str = "/usr/bin/prometheus";

/// Pids of running Debian prometheus binaries.
fn prometheus_pids() -> Vec<u32> {
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read_link(format!("/proc/{pid}/exe"))
                .is_ok_and(|exe| exe == Path::new(PROMETHEUS))
        })
        .collect()
}

/// Installs Debian's prometheus package if missing, with a policy-rc.d that
/// stops the package from starting its own service, and stops any service
/// process the installation started anyway.
pub fn ensure_prometheus_installed() {
    if Path::new(PROMETHEUS).exists() {
        return;
    }
    let policy = Path::new("/usr/sbin/policy-rc.d");
    let own_policy = !policy.exists();
    if own_policy {
        std::fs::write(
            policy,
            "#!/bin/sh\n# no service starts during lucid's tests\nexit 101\n",
        )
        .expect("writing /usr/sbin/policy-rc.d");
        std::fs::set_permissions(policy, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .expect("making policy-rc.d executable");
    }
    let before = prometheus_pids();
    let install = || {
        Command::new("apt-get")
            .args(["install", "-y", "--no-install-recommends", "prometheus"])
            .env("DEBIAN_FRONTEND", "noninteractive")
            .stdin(Stdio::null())
            .output()
            .expect("running apt-get")
    };
    let mut out = install();
    if !out.status.success() {
        let _ = Command::new("apt-get").arg("update").output();
        out = install();
    }
    if own_policy {
        let _ = std::fs::remove_file(policy);
    }
    for pid in prometheus_pids()
        .into_iter()
        .filter(|p| !before.contains(p))
    {
        eprintln!("stopping the prometheus service the package started (pid {pid})");
        // SAFETY: kill has no memory preconditions; pid is a process the installation started.
        unsafe { libc::kill(pid as i32, libc::SIGTERM) };
    }
    assert!(
        out.status.success() && Path::new(PROMETHEUS).exists(),
        "installing Debian's prometheus failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Debian's Prometheus on a loopback port with its own configuration and data
/// directory (removed on drop), scraping one target every second.
pub struct Prometheus {
    /// The process.
    pub process: Process,
    /// Where its HTTP API is served on 127.0.0.1.
    pub port: u16,
    _dir: tempfile::TempDir,
}

impl Prometheus {
    /// Starts Prometheus on loopback, scraping `target_port` every second.
    pub fn start(target_port: u16) -> Self {
        ensure_prometheus_installed();
        let dir = tempfile::Builder::new()
            .prefix("lucid-prometheus-")
            .tempdir()
            .expect("a directory for Prometheus");
        let config = dir.path().join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n\
                 scrape_configs:\n  - job_name: lucid\n    static_configs:\n      - targets: ['127.0.0.1:{target_port}']\n"
            ),
        )
        .expect("writing prometheus.yml");
        let port = free_port();
        let log = std::fs::File::create(dir.path().join("prometheus.log")).expect("a log file");
        let child = Command::new(PROMETHEUS)
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("starting prometheus");
        let mut prometheus = Prometheus {
            process: Process::new(child, "prometheus"),
            port,
            _dir: dir,
        };
        wait_for(60, "Prometheus to be ready", || {
            prometheus.process.assert_running();
            matches!(http_get(port, "/-/ready"), Ok((200, _))).then_some(())
        });
        prometheus
    }

    /// An instant query: each series' labels and value.
    pub fn query(&mut self, promql: &str) -> Vec<(BTreeMap<String, String>, f64)> {
        self.process.assert_running();
        let (status, body) = http_get(
            self.port,
            &format!("/api/v1/query?query={}", percent_encode(promql)),
        )
        .expect("querying Prometheus");
        assert_eq!(status, 200, "query {promql}: {body}");
        let v: Value = serde_json::from_str(&body).expect("Prometheus answers JSON");
        v["data"]["result"]
            .as_array()
            .expect("a vector result")
            .iter()
            .map(|r| {
                let labels = r["metric"]
                    .as_object()
                    .map(|m| {
                        m.iter()
                            .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_owned()))
                            .collect()
                    })
                    .unwrap_or_default();
                let value = r["value"][1]
                    .as_str()
                    .and_then(|s| s.parse().ok())
                    .expect("a sample value");
                (labels, value)
            })
            .collect()
    }

    /// The single series `promql` returns, once it returns exactly one.
    pub fn one(&mut self, promql: &str) -> (BTreeMap<String, String>, f64) {
        wait_for(60, promql, || {
            let mut r = self.query(promql);
            (r.len() == 1).then(|| r.remove(0))
        })
    }

    /// GET `path` of the HTTP API: the `data` of a successful answer, or the
    /// error Prometheus gave (a query that does not parse, for one).
    pub fn api(&mut self, path: &str) -> Result<Value, String> {
        self.process.assert_running();
        let (status, body) = http_get(self.port, path).expect("querying Prometheus");
        let v: Value = serde_json::from_str(&body)
            .map_err(|e| format!("HTTP {status}, not JSON ({e}): {body}"))?;
        if status != 200 || v["status"] != "success" {
            return Err(format!(
                "HTTP {status}: {}: {}",
                v["errorType"].as_str().unwrap_or("?"),
                v["error"].as_str().unwrap_or(&body)
            ));
        }
        Ok(v["data"].clone())
    }
}
