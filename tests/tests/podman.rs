//! podman (Debian's 4.3) running containers through lucid, as root.
//!
//! Each test has a podman of its own: storage (`--root`, `--runroot`, vfs),
//! `--tmpdir` and lucid's state root in a temporary directory (the root and a
//! private eBPF pin root are given by a two-line script podman runs as its
//! `--runtime`, see `clients::lucid_with_roots`), the cgroupfs manager with a cgroup parent under the tests'
//! `/lucid-test`, the file events backend, and an image imported from a
//! busybox tarball. Dropping it removes every container, the mounts podman
//! made under its directories, the cgroup subtree and the eBPF pins, also
//! when the test fails.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use lucid_tests::clients::{self, require_installed, trace_span_names};
use lucid_tests::prometheus::{wait_for, Exporter};
use lucid_tests::{require_root, unique_id, CGROUP_PARENT};
use serde_json::Value;

const PODMAN: &str = "/usr/bin/podman";
const IMAGE: &str = "localhost/busybox:lucid-test";
/// The limits and network this host needs (no raising hard rlimits, no CNI).
const RUN_FLAGS: &[&str] = &[
    "--ulimit",
    "nofile=20000:20000",
    "--ulimit",
    "nproc=32768:32768",
    "--network",
    "none",
];

struct Podman {
    dir: tempfile::TempDir,
    runtime: PathBuf,
    pin_root: PathBuf,
    cgroup_parent: String,
}

impl Podman {
    fn new() -> Self {
        require_root();
        require_installed(PODMAN, "podman");
        require_installed("/usr/bin/conmon", "conmon");
        let dir = tempfile::Builder::new()
            .prefix("lucid-podman-")
            .tempdir()
            .expect("a directory for podman");
        for sub in ["root", "runroot", "tmp", "lucid", "bin"] {
            std::fs::create_dir(dir.path().join(sub)).expect("making podman's directories");
        }
        let pin_root = PathBuf::from(format!("/sys/fs/bpf/{}", unique_id("lucid-test-podman")));
        let runtime = clients::lucid_with_roots(
            &dir.path().join("bin"),
            &dir.path().join("lucid"),
            &pin_root,
        );
        let podman = Podman {
            cgroup_parent: format!("{CGROUP_PARENT}/{}", unique_id("podman")),
            dir,
            runtime,
            pin_root,
        };
        let tar = clients::busybox_tar(podman.dir.path());
        podman.ok(&["import", tar.to_str().unwrap(), IMAGE]);
        std::fs::remove_file(tar).expect("removing the image tarball");
        podman
    }

    /// lucid's state root for podman's containers.
    fn lucid_root(&self) -> PathBuf {
        self.dir.path().join("lucid")
    }

    fn command(&self) -> Command {
        let path = |sub: &str| self.dir.path().join(sub);
        let mut c = Command::new(PODMAN);
        c.arg("--root")
            .arg(path("root"))
            .arg("--runroot")
            .arg(path("runroot"))
            .arg("--tmpdir")
            .arg(path("tmp"))
            .args(["--storage-driver", "vfs"])
            .args(["--cgroup-manager", "cgroupfs"])
            .args(["--events-backend", "file"])
            .arg("--runtime")
            .arg(&self.runtime)
            .stdin(Stdio::null());
        c
    }

    /// Runs `podman ARGS`; one that hangs past two minutes is killed and
    /// fails the test.
    fn podman(&self, args: &[&str]) -> Output {
        self.podman_bounded(args)
            .unwrap_or_else(|| panic!("podman {args:?} did not finish in two minutes"))
    }

    /// Runs `podman ARGS`, killing it after two minutes (None). Output goes
    /// through files, which a container's conmon cannot hold open the way it
    /// would a pipe.
    fn podman_bounded(&self, args: &[&str]) -> Option<Output> {
        let mut stdout = tempfile::tempfile().expect("a temporary file");
        let mut stderr = tempfile::tempfile().expect("a temporary file");
        let mut child = self
            .command()
            .args(args)
            .stdout(stdout.try_clone().expect("duplicating a descriptor"))
            .stderr(stderr.try_clone().expect("duplicating a descriptor"))
            .spawn()
            .expect("running podman");
        let deadline = lucid_tests::deadline(120);
        let status = loop {
            if let Ok(Some(status)) = child.try_wait() {
                break status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                return None;
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        Some(Output {
            status,
            stdout: lucid_tests::read_file(&mut stdout).into_bytes(),
            stderr: lucid_tests::read_file(&mut stderr).into_bytes(),
        })
    }

    fn ok(&self, args: &[&str]) -> String {
        let out = self.podman(args);
        assert!(
            out.status.success(),
            "podman {args:?} failed ({}): {}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).expect("podman prints UTF-8")
    }

    /// `podman run ARGS` with this host's flags and the test cgroup parent.
    fn run(&self, args: &[&str]) -> Output {
        let mut all = vec!["run", "--cgroup-parent", &self.cgroup_parent];
        all.extend_from_slice(RUN_FLAGS);
        all.extend_from_slice(args);
        self.podman(&all)
    }

    /// Starts a detached container named `name` running `command`; returns its ID.
    fn run_detached(&self, name: &str, command: &[&str]) -> String {
        let mut args = vec!["-d", "--name", name, IMAGE];
        args.extend_from_slice(command);
        let out = self.run(&args);
        assert!(
            out.status.success(),
            "podman run -d failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap().trim().to_owned()
    }

    fn inspect(&self, name: &str, format: &str) -> String {
        self.ok(&["inspect", "--format", format, name])
            .trim()
            .to_owned()
    }

    /// `lucid state` of a container in podman's lucid root, or None once gone.
    fn lucid_state(&self, id: &str) -> Option<Value> {
        let out = Command::new(lucid_tests::lucid_bin())
            .arg("--root")
            .arg(self.lucid_root())
            .args(["state", id])
            .output()
            .expect("running lucid state");
        out.status
            .success()
            .then(|| serde_json::from_slice(&out.stdout).expect("state is JSON"))
    }

    fn lucid_ids(&self) -> Vec<String> {
        std::fs::read_dir(self.lucid_root())
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| e.file_name().into_string().ok())
            .filter(|n| !n.starts_with('@'))
            .collect()
    }

    /// Fails unless podman and lucid have no container left and nothing of
    /// the container's cgroups, processes or mounts remains.
    fn assert_clean(&self) {
        assert_eq!(
            self.ok(&["ps", "-aq"]).trim(),
            "",
            "podman lists containers"
        );
        assert_eq!(
            self.lucid_ids(),
            Vec::<String>::new(),
            "lucid has state left"
        );
        let mounts: Vec<String> = clients::mounts_under(self.dir.path())
            .into_iter()
            .filter(|m| m.ends_with("/shm"))
            .collect();
        assert!(mounts.is_empty(), "mounts left: {mounts:?}");
        for dir in clients::cgroup_dirs(&self.cgroup_parent) {
            let mut entries: Vec<String> = std::fs::read_dir(&dir)
                .unwrap()
                .flatten()
                .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect();
            // conmon's own cgroup stays for the next container, as podman leaves it.
            entries.retain(|e| e != "conmon");
            assert!(
                entries.is_empty(),
                "cgroups left in {}: {entries:?}",
                dir.display()
            );
        }
    }
}

impl Drop for Podman {
    fn drop(&mut self) {
        if self
            .podman_bounded(&["rm", "--all", "--force", "--time", "0"])
            .is_none()
        {
            eprintln!("podman rm --all did not finish; removing by hand");
        }
        for id in self.lucid_ids() {
            let _ = Command::new(lucid_tests::lucid_bin())
                .arg("--root")
                .arg(self.lucid_root())
                .args(["delete", "--force", &id])
                .env("LUCID_EBPF_PIN_ROOT", &self.pin_root)
                .output();
        }
        clients::remove_cgroup_tree(&self.cgroup_parent);
        clients::unmount_under(self.dir.path());
        if self.pin_root.exists() {
            if let Err(e) = lucid_ebpf::remove_pin_root(&self.pin_root) {
                eprintln!("removing {}: {e}", self.pin_root.display());
            }
        }
    }
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn run_rm_prints_the_output_and_returns_the_exit_code() {
    let p = Podman::new();
    let out = p.run(&["--rm", IMAGE, "sh", "-c", "echo hello from lucid; exit 3"]);
    assert_eq!(stdout(&out), "hello from lucid\n", "{out:?}");
    assert_eq!(out.status.code(), Some(3), "{out:?}");
    p.assert_clean();
}

#[test]
fn run_detached_container_is_a_running_lucid_container() {
    let p = Podman::new();
    let name = unique_id("detached");
    let id = p.run_detached(&name, &["sleep", "600"]);
    assert_eq!(p.inspect(&name, "{{.State.Status}}"), "running");
    assert_eq!(
        p.inspect(&name, "{{.OCIRuntime}}"),
        p.runtime.to_str().unwrap()
    );
    let state = p.lucid_state(&id).expect("lucid knows podman's container");
    assert_eq!(state["status"], "running");
    assert_eq!(
        state["pid"].as_i64(),
        p.inspect(&name, "{{.State.Pid}}").parse().ok(),
        "podman and lucid agree on the init pid"
    );
    p.ok(&["rm", "--force", "--time", "0", &name]);
    p.assert_clean();
}

#[test]
fn exec_prints_the_output_and_returns_the_exit_code() {
    let p = Podman::new();
    let name = unique_id("exec");
    p.run_detached(&name, &["sleep", "600"]);
    let out = p.podman(&["exec", &name, "sh", "-c", "echo in $(hostname); exit 4"]);
    assert_eq!(out.status.code(), Some(4), "{out:?}");
    let hostname = p.inspect(&name, "{{.Config.Hostname}}");
    assert_eq!(stdout(&out), format!("in {hostname}\n"));
    p.ok(&["rm", "--force", "--time", "0", &name]);
    p.assert_clean();
}

#[test]
fn exec_tty_gives_the_process_a_terminal() {
    let p = Podman::new();
    let name = unique_id("exectty");
    p.run_detached(&name, &["sleep", "600"]);
    let out = p.podman(&["exec", "-t", &name, "sh", "-c", "tty; exit 5"]);
    assert_eq!(out.status.code(), Some(5), "{out:?}");
    let text = stdout(&out);
    assert!(text.starts_with("/dev/pts/"), "no terminal: {text:?}");
    // Without -t the same command has none.
    let out = p.podman(&["exec", &name, "tty"]);
    assert_eq!(stdout(&out).trim(), "not a tty");
    p.ok(&["rm", "--force", "--time", "0", &name]);
    p.assert_clean();
}

#[test]
fn stop_sends_the_stop_signal_and_keeps_the_exit_code() {
    let p = Podman::new();
    let name = unique_id("stop");
    let id = p.run_detached(
        &name,
        &[
            "sh",
            "-c",
            "trap 'echo got TERM; exit 7' TERM; echo ready; while :; do sleep 0.1; done",
        ],
    );
    wait_for(20, "the container to set its trap", || {
        p.ok(&["logs", &name]).contains("ready").then_some(())
    });
    p.ok(&["stop", "--time", "20", &name]);
    assert_eq!(p.inspect(&name, "{{.State.Status}}"), "exited");
    assert_eq!(p.inspect(&name, "{{.State.ExitCode}}"), "7");
    assert!(p.ok(&["logs", &name]).contains("got TERM"));
    assert!(
        p.lucid_state(&id).is_none(),
        "lucid's container outlived podman stop"
    );
    p.ok(&["rm", &name]);
    p.assert_clean();
}

#[test]
fn pause_and_unpause_freeze_and_thaw_the_container() {
    let p = Podman::new();
    let name = unique_id("pause");
    let id = p.run_detached(
        &name,
        &[
            "sh",
            "-c",
            "while :; do date +%s%N > /tmp/tick; sleep 0.05; done",
        ],
    );
    let tick = || p.ok(&["exec", &name, "cat", "/tmp/tick"]);
    wait_for(20, "the first tick", || {
        p.podman(&["exec", &name, "cat", "/tmp/tick"])
            .status
            .success()
            .then_some(())
    });
    p.ok(&["pause", &name]);
    assert_eq!(p.inspect(&name, "{{.State.Status}}"), "paused");
    assert_eq!(p.lucid_state(&id).unwrap()["status"], "paused");
    // Frozen: the init process's freezer says so, and exec is refused.
    let out = p.podman(&["exec", &name, "true"]);
    assert!(!out.status.success(), "exec ran in a paused container");
    p.ok(&["unpause", &name]);
    assert_eq!(p.inspect(&name, "{{.State.Status}}"), "running");
    assert_eq!(p.lucid_state(&id).unwrap()["status"], "running");
    let before = tick();
    wait_for(20, "the container to tick again", || {
        (tick() != before).then_some(())
    });
    p.ok(&["rm", "--force", "--time", "0", &name]);
    p.assert_clean();
}

#[test]
fn top_lists_the_processes_of_the_container() {
    let p = Podman::new();
    let name = unique_id("top");
    p.run_detached(&name, &["sh", "-c", "sleep 600 & sleep 700"]);
    let text = wait_for(20, "both sleeps", || {
        let text = p.ok(&["top", &name, "pid", "args"]);
        (text.contains("sleep 600") && text.contains("sleep 700")).then_some(text)
    });
    assert!(text.lines().next().unwrap().contains("PID"), "{text}");
    p.ok(&["rm", "--force", "--time", "0", &name]);
    p.assert_clean();
}

#[test]
fn logs_hold_what_the_container_wrote_to_stdout_and_stderr() {
    let p = Podman::new();
    let name = unique_id("logs");
    p.run_detached(
        &name,
        &["sh", "-c", "echo line one; echo line two >&2; exit 0"],
    );
    wait_for(20, "the container to exit", || {
        (p.inspect(&name, "{{.State.Status}}") == "exited").then_some(())
    });
    let out = p.podman(&["logs", &name]);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(stdout(&out), "line one\n");
    assert_eq!(String::from_utf8_lossy(&out.stderr), "line two\n");
    p.ok(&["rm", &name]);
    p.assert_clean();
}

#[test]
fn rm_force_removes_a_running_container_everywhere() {
    let p = Podman::new();
    let name = unique_id("rm");
    let id = p.run_detached(&name, &["sleep", "600"]);
    let pid: i32 = p.inspect(&name, "{{.State.Pid}}").parse().unwrap();
    p.ok(&["rm", "--force", "--time", "0", &name]);
    assert!(p.lucid_state(&id).is_none(), "lucid still has {id}");
    assert!(
        !Path::new(&format!("/proc/{pid}")).exists(),
        "the container's process {pid} survived rm"
    );
    p.assert_clean();
}

/// Done-when 3: the spans of a podman container in `lucid trace`, and its
/// series in the exporter named with podman's name.
#[test]
fn podman_containers_show_in_lucid_trace_and_in_the_exporter_by_name() {
    let p = Podman::new();
    let name = unique_id("observed");
    let id = p.run_detached(&name, &["sh", "-c", "while :; do :; done"]);
    let state = tempfile::tempdir().expect("a state dir");
    let mut exporter = Exporter::start(&p.lucid_root(), &p.pin_root, state.path(), &[]);
    let series = format!(r#"container_id="{id}",name="{name}""#);
    let text = wait_for(30, "the container's CPU series with podman's name", || {
        let text = exporter.metrics();
        text.lines()
            .any(|l| l.starts_with("container_cpu_usage_seconds_total{") && l.contains(&series))
            .then_some(text)
    });
    assert!(
        text.contains(&format!(r#"image="{IMAGE}""#)),
        "no image label for {id}"
    );
    assert!(
        text.lines()
            .any(|l| l.starts_with("lucid_container_syscalls_total{") && l.contains(&series)),
        "no syscall series for {name}"
    );
    drop(exporter);
    p.ok(&["rm", "--force", "--time", "0", &name]);
    let names = trace_span_names(&p.lucid_root(), &id);
    for span in [
        "container",
        "create",
        "rootfs.mount",
        "init.exec",
        "start",
        "kill",
        "delete",
    ] {
        assert!(
            names.iter().any(|n| n == span),
            "no {span} span in {names:?}"
        );
    }
    p.assert_clean();
}

#[test]
fn lucids_error_reaches_podman_which_reads_it_as_runcs() {
    let p = Podman::new();
    let out = p.run(&["--rm", IMAGE, "/no/such/program"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("init process failed in process.setup")
            && err.contains("\"/no/such/program\": no such file or directory"),
        "{err}"
    );
    // podman recognises runc's wording of a missing program: exit code 127.
    assert_eq!(out.status.code(), Some(127), "{err}");
    p.assert_clean();
}

#[test]
fn rm_force_removes_a_paused_container() {
    let p = Podman::new();
    let name = unique_id("pausedrm");
    let id = p.run_detached(&name, &["sleep", "600"]);
    p.ok(&["pause", &name]);
    assert_eq!(p.lucid_state(&id).unwrap()["status"], "paused");
    p.ok(&["rm", "--force", "--time", "0", &name]);
    assert!(p.lucid_state(&id).is_none(), "lucid still has {id}");
    p.assert_clean();
}
