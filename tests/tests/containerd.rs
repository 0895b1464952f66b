//! containerd (Debian's 1.6) running containers through lucid with its runc
//! shim, `io.containerd.runc.v2`, as root.
//!
//! Each test starts a containerd of its own: its socket, root and state
//! directories in a temporary directory, a configuration whose runc runtime
//! options set `BinaryName` to lucid and a lucid `Root` of its own, and a
//! busybox image imported with `ctr image import` from an OCI layout the test
//! builds. `ctr run` is given the same binary and root (`--runc-binary`,
//! `--runc-root`): the CRI plugin's runtime table is what Kubernetes uses,
//! and ctr passes runtime options of its own. Dropping it kills the shims and containerd
//! by pid, unmounts what they left under the directory and removes the
//! cgroup subtree and eBPF pins, also when the test fails.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use lucid_tests::clients::{self, require_installed, trace_span_names};
use lucid_tests::prometheus::{wait_for, Exporter, Process};
use lucid_tests::{lucid_bin, require_root, unique_id, CGROUP_PARENT};
use serde_json::Value;

const CONTAINERD: &str = "/usr/bin/containerd";
const CTR: &str = "/usr/bin/ctr";
const SHIM: &str = "/usr/bin/containerd-shim-runc-v2";
const IMAGE: &str = "localhost/busybox:lucid-test";
/// containerd's namespace for the tests; the shim runs lucid with
/// `--root <Root>/<namespace>`.
const NAMESPACE: &str = "lucid-test";

/// The containerd configuration the tests use (and docs/clients.md shows):
/// the CRI plugin's runtime `lucid`, the runc shim with lucid as its binary.
fn config(dir: &Path, lucid: &Path, lucid_root: &Path) -> String {
    let d = dir.display();
    format!(
        r#"version = 2
root = "{d}/root"
state = "{d}/state"
[grpc]
  address = "{d}/containerd.sock"

[ttrpc]
  address = "{d}/containerd.sock.ttrpc"

# Kubernetes (the CRI plugin) picks a runtime by RuntimeClass handler; the
# tests' containerd has no runc entry, so lucid is its default.
[plugins."io.containerd.grpc.v1.cri".containerd]
  default_runtime_name = "lucid"

[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.lucid]
  runtime_type = "io.containerd.runc.v2"
  [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.lucid.options]
    BinaryName = "{lucid}"
    Root = "{root}"
"#,
        lucid = lucid.display(),
        root = lucid_root.display(),
    )
}

struct Containerd {
    process: Option<Process>,
    pin_root: PathBuf,
    cgroup_parent: String,
    dir: tempfile::TempDir,
}

impl Containerd {
    fn new() -> Self {
        require_root();
        require_installed(CONTAINERD, "containerd");
        require_installed(CTR, "containerd");
        require_installed(SHIM, "containerd");
        let dir = tempfile::Builder::new()
            .prefix("lucid-containerd-")
            .tempdir()
            .expect("a directory for containerd");
        let mut c = Containerd {
            process: None,
            pin_root: PathBuf::from(format!(
                "/sys/fs/bpf/{}",
                unique_id("lucid-test-containerd")
            )),
            cgroup_parent: format!("{CGROUP_PARENT}/{}", unique_id("containerd")),
            dir,
        };
        let config_file = c.dir.path().join("config.toml");
        std::fs::write(
            &config_file,
            config(c.dir.path(), &lucid_bin(), &c.lucid_root()),
        )
        .expect("writing config.toml");
        let log = std::fs::File::create(c.dir.path().join("containerd.log")).expect("a log");
        // The shim and lucid inherit containerd's environment: the pins are the test's.
        let child = Command::new(CONTAINERD)
            .arg("--config")
            .arg(&config_file)
            .env("LUCID_EBPF_PIN_ROOT", &c.pin_root)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("starting containerd");
        c.process = Some(Process::new(child, "containerd"));
        wait_for(30, "containerd to serve its socket", || {
            c.process.as_mut().unwrap().assert_running();
            c.ctr(&["version"]).status.success().then_some(())
        });
        let tar = clients::oci_layout_tar(c.dir.path(), IMAGE);
        c.ok(&["image", "import", tar.to_str().unwrap()]);
        std::fs::remove_file(tar).expect("removing the layout tarball");
        c
    }

    /// lucid's `Root` in the runtime options; the shim adds the namespace.
    fn lucid_root(&self) -> PathBuf {
        self.dir.path().join("lucid")
    }

    fn ctr_command(&self) -> Command {
        let mut c = Command::new(CTR);
        c.arg("--address")
            .arg(self.dir.path().join("containerd.sock"))
            .args(["--namespace", NAMESPACE])
            // A command that hangs (a task that cannot die) fails the test.
            .args(["--timeout", "60s"])
            .stdin(Stdio::null());
        c
    }

    fn ctr(&self, args: &[&str]) -> Output {
        self.ctr_command().args(args).output().expect("running ctr")
    }

    fn ok(&self, args: &[&str]) -> String {
        let out = self.ctr(args);
        assert!(
            out.status.success(),
            "ctr {args:?} failed ({}): {}{}\ncontainerd log:\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            self.log()
        );
        String::from_utf8(out.stdout).expect("ctr prints UTF-8")
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("containerd.log")).unwrap_or_default()
    }

    /// Where ctr makes the containers' stdio FIFOs (not /run/containerd/fifo).
    fn fifo_dir(&self) -> String {
        self.dir.path().join("fifo").to_string_lossy().into_owned()
    }

    /// The arguments of `ctr run` before the image: lucid as the shim's
    /// binary, its root, a cgroup under the test's parent.
    fn run_args(&self, id: &str) -> Vec<String> {
        vec![
            "run".into(),
            "--runc-binary".into(),
            lucid_bin().to_string_lossy().into_owned(),
            "--runc-root".into(),
            self.lucid_root().to_string_lossy().into_owned(),
            "--cgroup".into(),
            format!("{}/{id}", self.cgroup_parent),
            "--fifo-dir".into(),
            self.fifo_dir(),
        ]
    }

    /// `ctr run --rm` of `command` as container `id`, in the foreground: its arguments.
    fn run_rm_args(&self, id: &str, command: &[&str]) -> Vec<String> {
        let mut args = self.run_args(id);
        args.extend(["--rm".into(), IMAGE.into(), id.into()]);
        args.extend(command.iter().map(|s| s.to_string()));
        args
    }

    /// `ctr run -d` of `command` as container `id`.
    fn run_detached(&self, id: &str, command: &[&str]) {
        let mut args = self.run_args(id);
        args.extend(["-d".into(), IMAGE.into(), id.into()]);
        args.extend(command.iter().map(|s| s.to_string()));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        self.ok(&args);
    }

    /// The lucid state root the shim uses for the test's namespace.
    fn namespace_root(&self) -> PathBuf {
        self.lucid_root().join(NAMESPACE)
    }

    /// `lucid state` of a container, or None once it is gone.
    fn lucid_state(&self, id: &str) -> Option<Value> {
        let out = Command::new(lucid_bin())
            .arg("--root")
            .arg(self.namespace_root())
            .args(["state", id])
            .output()
            .expect("running lucid state");
        out.status
            .success()
            .then(|| serde_json::from_slice(&out.stdout).expect("state is JSON"))
    }

    /// The task's status as `ctr task ls` prints it.
    fn task_status(&self, id: &str) -> Option<String> {
        self.ok(&["task", "ls"]).lines().find_map(|l| {
            let fields: Vec<&str> = l.split_whitespace().collect();
            (fields.first() == Some(&id)).then(|| fields[2].to_owned())
        })
    }

    /// Removes the task and the container (`ctr task delete --force`, `ctr container rm`).
    fn remove(&self, id: &str) {
        self.ok(&["task", "delete", "--force", id]);
        self.ok(&["container", "rm", id]);
    }

    /// Fails unless nothing of container `id` is left: lucid's state, its
    /// cgroup, its rootfs mount.
    fn assert_gone(&self, id: &str) {
        assert!(self.lucid_state(id).is_none(), "lucid still has {id}");
        assert!(
            !self.namespace_root().join(id).exists(),
            "lucid's state directory of {id} is left"
        );
        let cgroups = clients::cgroup_dirs(&format!("{}/{id}", self.cgroup_parent));
        assert!(cgroups.is_empty(), "cgroups left: {cgroups:?}");
        let mounts: Vec<String> = clients::mounts_under(self.dir.path())
            .into_iter()
            .filter(|m| m.contains(id))
            .collect();
        assert!(mounts.is_empty(), "mounts left: {mounts:?}");
    }

    /// Pids of the runc shims serving this containerd.
    fn shim_pids(&self) -> Vec<i32> {
        let address = self.dir.path().join("containerd.sock");
        let address = address.to_string_lossy();
        std::fs::read_dir("/proc")
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
            .filter(|pid| {
                let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
                let cmdline = String::from_utf8_lossy(&cmdline);
                cmdline.starts_with(SHIM) && cmdline.contains(address.as_ref())
            })
            .collect()
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("containerd log:\n{}", self.log());
        }
        if self.process.is_some() {
            for line in self
                .ctr(&["task", "ls", "-q"])
                .stdout
                .split(|b| *b == b'\n')
            {
                let id = String::from_utf8_lossy(line).trim().to_owned();
                if !id.is_empty() {
                    let _ = self.ctr(&["task", "delete", "--force", &id]);
                }
            }
        }
        // What the shims did not delete, lucid does.
        for entry in std::fs::read_dir(self.namespace_root())
            .into_iter()
            .flatten()
            .flatten()
        {
            let id = entry.file_name().to_string_lossy().into_owned();
            if !id.starts_with('@') {
                let _ = Command::new(lucid_bin())
                    .arg("--root")
                    .arg(self.namespace_root())
                    .args(["delete", "--force", &id])
                    .env("LUCID_EBPF_PIN_ROOT", &self.pin_root)
                    .output();
            }
        }
        for pid in self.shim_pids() {
            // A killed shim leaves its socket in /run/containerd/s (a
            // directory containerd 1.6 fixes): find it before the kill.
            let sockets = listening_sockets(pid);
            // SAFETY: kill has no memory effects; the pid is a shim of this containerd.
            unsafe { libc::kill(pid, libc::SIGKILL) };
            for socket in sockets {
                let _ = std::fs::remove_file(socket);
            }
        }
        // Dropping the process kills containerd by pid and reaps it.
        self.process = None;
        clients::remove_cgroup_tree(&self.cgroup_parent);
        clients::unmount_under(self.dir.path());
        if self.pin_root.exists() {
            if let Err(e) = lucid_ebpf::remove_pin_root(&self.pin_root) {
                eprintln!("removing {}: {e}", self.pin_root.display());
            }
        }
    }
}

/// The paths of the unix sockets process `pid` has open under
/// /run/containerd/s (its descriptors' inodes looked up in /proc/net/unix).
fn listening_sockets(pid: i32) -> Vec<PathBuf> {
    let inodes: Vec<String> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|fd| std::fs::read_link(fd.path()).ok())
        .filter_map(|link| {
            let link = link.to_string_lossy().into_owned();
            link.strip_prefix("socket:[")?
                .strip_suffix(']')
                .map(str::to_owned)
        })
        .collect();
    std::fs::read_to_string("/proc/net/unix")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let fields: Vec<&str> = l.split_whitespace().collect();
            let (inode, path) = (fields.get(6)?, fields.get(7)?);
            (inodes.iter().any(|i| i == inode) && path.starts_with("/run/containerd/s/"))
                .then(|| PathBuf::from(path))
        })
        .collect()
}

#[test]
fn containerd_takes_the_lucid_runtime_configuration() {
    let c = Containerd::new();
    // The CRI plugin loaded the runtime table (a bad one fails the plugin).
    let plugins = c.ok(&["plugins", "ls"]);
    let cri = plugins
        .lines()
        .find(|l| l.contains("io.containerd.grpc.v1") && l.split_whitespace().nth(1) == Some("cri"))
        .unwrap_or_else(|| panic!("no CRI plugin in\n{plugins}"));
    assert!(cri.trim_end().ends_with("ok"), "CRI plugin: {cri}");
    let options = format!(
        "Options:map[BinaryName:{} Root:{}]",
        lucid_bin().display(),
        c.lucid_root().display()
    );
    let log = c.log();
    assert!(
        log.lines().any(|l| l.contains("Start cri plugin")
            && l.contains("lucid:{Type:io.containerd.runc.v2")
            && l.contains(&options)),
        "the CRI plugin did not take the lucid runtime ({options})"
    );
}

#[test]
fn run_prints_the_output_and_returns_the_exit_code() {
    let c = Containerd::new();
    let id = unique_id("run");
    let args = c.run_rm_args(&id, &["sh", "-c", "echo hello from lucid; exit 3"]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = c.ctr(&args);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "hello from lucid\n",
        "{out:?}"
    );
    assert_eq!(out.status.code(), Some(3), "{out:?}");
    // The shim ran lucid with the pins given to containerd's environment.
    assert!(c.pin_root.exists(), "lucid did not use the test's pin root");
    c.assert_gone(&id);
    // The whole life is one trace in lucid's spool, which the shim's second,
    // forced delete of the container already gone does not replace.
    let names = trace_span_names(&c.namespace_root(), &id);
    for span in ["container", "create", "init.exec", "start", "delete"] {
        assert!(
            names.iter().any(|n| n == span),
            "no {span} span in {names:?}"
        );
    }
}

#[test]
fn exec_prints_the_output_and_returns_the_exit_code() {
    let c = Containerd::new();
    let id = unique_id("exec");
    c.run_detached(&id, &["sleep", "600"]);
    let out = c.ctr(&[
        "task",
        "exec",
        "--exec-id",
        "e1",
        &id,
        "sh",
        "-c",
        "echo in $(hostname); exit 4",
    ]);
    assert_eq!(out.status.code(), Some(4), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stdout).starts_with("in "),
        "{out:?}"
    );
    // The exec'd process ran inside the container: lucid saw it among its pids.
    let ps = c.ok(&["task", "ps", &id]);
    assert_eq!(ps.lines().count(), 2, "only the init process is left: {ps}");
    c.remove(&id);
    c.assert_gone(&id);
}

/// A foreground `ctr run`, killed and reaped if the test fails first.
struct Foreground(std::process::Child);

impl Drop for Foreground {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn kill_delivers_the_signal_and_the_exit_code_reaches_ctr() {
    let c = Containerd::new();
    let id = unique_id("kill");
    let args = c.run_rm_args(
        &id,
        &[
            "sh",
            "-c",
            "trap 'echo got TERM; exit 9' TERM; echo ready; while :; do sleep 0.1; done",
        ],
    );
    let out = tempfile::NamedTempFile::new().expect("a file for ctr's output");
    let child = c
        .ctr_command()
        .args(&args)
        .stdout(out.reopen().expect("reopening"))
        .stderr(Stdio::inherit())
        .spawn()
        .expect("running ctr run");
    let mut run = Foreground(child);
    wait_for(30, "the container to set its trap", || {
        std::fs::read_to_string(out.path())
            .unwrap_or_default()
            .contains("ready")
            .then_some(())
    });
    assert_eq!(c.task_status(&id).as_deref(), Some("RUNNING"));
    c.ok(&["task", "kill", "--signal", "SIGTERM", &id]);
    let status = wait_for(30, "ctr run to end", || {
        run.0.try_wait().expect("waiting for ctr run")
    });
    assert_eq!(status.code(), Some(9), "ctr run's exit code");
    assert!(std::fs::read_to_string(out.path())
        .unwrap()
        .contains("got TERM"));
    wait_for(30, "the task to be removed", || {
        c.task_status(&id).is_none().then_some(())
    });
    c.assert_gone(&id);
}

#[test]
fn delete_removes_a_stopped_task_from_lucid() {
    let c = Containerd::new();
    let id = unique_id("delete");
    c.run_detached(&id, &["sleep", "600"]);
    assert_eq!(c.lucid_state(&id).unwrap()["status"], "running");
    c.ok(&["task", "kill", "--signal", "SIGKILL", &id]);
    wait_for(30, "the task to stop", || {
        (c.task_status(&id).as_deref() == Some("STOPPED")).then_some(())
    });
    assert_eq!(c.lucid_state(&id).unwrap()["status"], "stopped");
    c.ok(&["task", "delete", &id]);
    assert!(c.task_status(&id).is_none());
    c.assert_gone(&id);
    c.ok(&["container", "rm", &id]);
}

#[test]
fn task_metrics_come_from_the_containers_cgroups() {
    let c = Containerd::new();
    let id = unique_id("metrics");
    c.run_detached(&id, &["sh", "-c", "sleep 600 & exec sleep 601"]);
    wait_for(30, "both processes", || {
        (c.ok(&["task", "ps", &id]).lines().count() == 3).then_some(())
    });
    let metrics: Value = serde_json::from_str(&c.ok(&["task", "metrics", "--format", "json", &id]))
        .expect("metrics JSON");
    // On this host (v1 controllers) the shim reads the v1 cgroups lucid made.
    let data = &metrics;
    assert_eq!(data["pids"]["current"], 2, "{metrics}");
    assert!(
        data["memory"]["usage"]["usage"].as_u64().unwrap_or(0) > 0,
        "{metrics}"
    );
    assert!(
        data["cpu"]["usage"]["total"].as_u64().unwrap_or(0) > 0,
        "{metrics}"
    );
    // The same pids lucid lists for the container.
    let pids: Vec<u64> = serde_json::from_str(
        &String::from_utf8(
            Command::new(lucid_bin())
                .arg("--root")
                .arg(c.namespace_root())
                .args(["ps", "--format", "json", &id])
                .output()
                .expect("lucid ps")
                .stdout,
        )
        .unwrap(),
    )
    .expect("lucid ps JSON");
    assert_eq!(pids.len(), 2);
    c.remove(&id);
    c.assert_gone(&id);
}

#[test]
fn the_exporter_finds_containers_in_the_namespace_directories_of_the_shims_root() {
    let c = Containerd::new();
    let id = unique_id("exported");
    c.run_detached(&id, &["sleep", "600"]);
    let state = tempfile::tempdir().expect("a state dir");
    // Pointed at the runtime options' Root, not at <Root>/<namespace>.
    let mut exporter = Exporter::start(&c.lucid_root(), &c.pin_root, state.path(), &[]);
    let series = format!(r#"container_id="{id}""#);
    wait_for(30, "the container's memory series", || {
        exporter
            .metrics()
            .lines()
            .any(|l| l.starts_with("container_memory_usage_bytes{") && l.contains(&series))
            .then_some(())
    });
    drop(exporter);
    c.remove(&id);
    c.assert_gone(&id);
}

#[test]
fn lucids_error_reaches_ctr_through_the_json_log() {
    let c = Containerd::new();
    let id = unique_id("badexec");
    let args = c.run_rm_args(&id, &["/no/such/program"]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = c.ctr(&args);
    assert!(!out.status.success(), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    // The shim reads lucid's message from `--log … --log-format json` and ctr prints it.
    let message = format!("creating container {id}: init process failed in process.setup");
    assert!(err.contains(&message), "{err}");
    assert!(err.contains("/no/such/program"), "{err}");
    c.assert_gone(&id);
}

#[test]
fn delete_force_removes_a_paused_task() {
    let c = Containerd::new();
    let id = unique_id("pausedel");
    c.run_detached(&id, &["sleep", "600"]);
    c.ok(&["task", "pause", &id]);
    assert_eq!(c.task_status(&id).as_deref(), Some("PAUSED"));
    assert_eq!(c.lucid_state(&id).unwrap()["status"], "paused");
    // The shim sends SIGKILL and waits for the exit: lucid thaws the frozen
    // container after the signal, as runc does, so it can die.
    c.remove(&id);
    c.assert_gone(&id);
}
