//! The runc lifecycle through the `lucid` binary: spec, run, create, start,
//! state, list, kill, delete, with real busybox containers. Needs root.

use lucid_tests::{assert_nothing_left, cgroup_path, unique_id, wait_until, Bundle, Runtime};

#[test]
fn run_returns_the_container_exit_code() {
    let rt = Runtime::new();
    let id = unique_id("exit3");
    let bundle = Bundle::new(&rt, &id, &["sh", "-c", "exit 3"]);
    let out = rt.lucid(&["run", "--bundle", bundle.arg(), &id]);
    assert_eq!(
        out.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_nothing_left(&rt, &id, bundle.path());
}

#[test]
fn run_reports_a_signal_death_as_128_plus_n() {
    let rt = Runtime::new();
    let id = unique_id("sig");
    let mut bundle = Bundle::new(&rt, &id, &["sh", "-c", "kill -9 $$"]);
    // Without its own pid namespace the shell is not a pid 1 (which would be
    // immune to signals sent from inside its namespace).
    bundle.edit(|c| {
        c["linux"]["namespaces"]
            .as_array_mut()
            .unwrap()
            .retain(|ns| ns["type"] != "pid");
    });
    let out = rt.lucid(&["run", "--bundle", bundle.arg(), &id]);
    assert_eq!(out.status.code(), Some(128 + 9));
    assert_nothing_left(&rt, &id, bundle.path());
}

#[test]
fn run_forwards_signals_to_the_container() {
    let rt = Runtime::new();
    let id = unique_id("fwd");
    let bundle = Bundle::new(
        &rt,
        &id,
        &[
            "sh",
            "-c",
            "trap 'exit 42' TERM; echo ready; while true; do sleep 0.05; done",
        ],
    );
    let mut child = rt
        .command()
        .args(["run", "--bundle", bundle.arg(), &id])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Wait until the trap is installed.
    let mut stdout = child.stdout.take().unwrap();
    let mut buf = [0u8; 6];
    std::io::Read::read_exact(&mut stdout, &mut buf).unwrap();
    assert_eq!(&buf, b"ready\n");
    // SAFETY: kill(2) on our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(42));
    assert_nothing_left(&rt, &id, bundle.path());
}

#[test]
fn create_start_state_list_delete_follow_the_oci_statuses() {
    let rt = Runtime::new();
    let id = unique_id("life");
    // Long enough to be seen running after `start`, also on a slow (emulated) host.
    let nap = format!("{:.1}", 0.3 * f64::from(lucid_tests::time_scale()));
    let bundle = Bundle::new(&rt, &id, &["sleep", &nap]);
    rt.ok(&["create", "--bundle", bundle.arg(), &id]);

    let state = rt.state(&id);
    assert_eq!(state["status"], "created");
    assert_eq!(state["id"], id.as_str());
    assert_eq!(state["bundle"], bundle.arg());
    assert_eq!(state["rootfs"], bundle.rootfs().to_str().unwrap());
    let pid = state["pid"].as_i64().unwrap();
    assert!(pid > 0);
    // The init pid is a live process on the host, waiting to be started.
    assert!(std::path::Path::new(&format!("/proc/{pid}")).exists());
    for field in ["ociVersion", "created", "owner"] {
        assert!(state.get(field).is_some(), "state lacks {field}: {state}");
    }
    let list = rt.ok(&["list"]);
    assert!(list.starts_with("ID "), "{list}");
    assert!(
        list.lines()
            .any(|l| l.starts_with(&id) && l.contains("created")),
        "{list}"
    );

    rt.ok(&["start", &id]);
    assert_eq!(rt.status(&id), "running");
    let list: serde_json::Value =
        serde_json::from_str(&rt.ok(&["list", "--format", "json"])).unwrap();
    assert_eq!(list[0]["status"], "running");
    assert_eq!(list[0]["owner"], "root");

    rt.wait_status(&id, "stopped");
    assert_eq!(rt.state(&id)["pid"], 0);
    assert!(rt.ok(&["list", "-q"]).lines().any(|l| l == id));

    rt.ok(&["delete", &id]);
    let out = rt.lucid(&["state", &id]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("does not exist"));
    assert_eq!(rt.ok(&["list", "-q"]), "");
    assert_nothing_left(&rt, &id, bundle.path());
}

#[test]
fn run_detach_leaves_a_running_container() {
    let rt = Runtime::new();
    let id = unique_id("detach");
    let bundle = Bundle::new(&rt, &id, &["sleep", "30"]);
    rt.ok(&["run", "--detach", "--bundle", bundle.arg(), &id]);
    assert_eq!(rt.status(&id), "running");
    rt.ok(&["delete", "--force", &id]);
    assert_nothing_left(&rt, &id, bundle.path());
}

#[test]
fn pid_file_holds_the_init_pid() {
    let rt = Runtime::new();
    let id = unique_id("pidfile");
    let bundle = Bundle::new(&rt, &id, &["true"]);
    let pid_file = bundle.path().join("init.pid");
    rt.ok(&[
        "create",
        "--bundle",
        bundle.arg(),
        "--pid-file",
        pid_file.to_str().unwrap(),
        &id,
    ]);
    let written: i64 = std::fs::read_to_string(&pid_file)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert_eq!(rt.state(&id)["pid"], written);
    rt.ok(&["delete", &id]);
    assert_nothing_left(&rt, &id, bundle.path());
}

/// A container whose shell records the signals it gets in a bind-mounted dir.
fn signal_recorder(rt: &Runtime, id: &str) -> (Bundle, tempfile::TempDir) {
    let out = tempfile::tempdir().unwrap();
    let mut bundle = Bundle::new(
        rt,
        id,
        &[
            "sh",
            "-c",
            "trap 'echo usr1 >> /out/got' USR1; trap 'echo usr2 >> /out/got' USR2; \
             trap 'echo term >> /out/got; exit 0' TERM; touch /out/ready; \
             while true; do sleep 0.05; done",
        ],
    );
    let source = out.path().to_str().unwrap().to_owned();
    bundle.edit(|c| {
        c["mounts"].as_array_mut().unwrap().push(serde_json::json!({
            "destination": "/out", "type": "bind", "source": source, "options": ["rbind", "rw"]
        }));
        c["root"]["readonly"] = serde_json::json!(false);
    });
    (bundle, out)
}

fn wait_for_file(path: &std::path::Path) {
    let deadline = lucid_tests::deadline(10);
    while !path.exists() {
        assert!(
            std::time::Instant::now() < deadline,
            "{} never appeared",
            path.display()
        );
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
}

fn wait_for_content(path: &std::path::Path, want: &str) {
    let deadline = lucid_tests::deadline(10);
    loop {
        let got = std::fs::read_to_string(path).unwrap_or_default();
        if got == want {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{} holds {got:?}, want {want:?}",
            path.display()
        );
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
}

#[test]
fn kill_sends_named_and_numbered_signals_to_init() {
    let rt = Runtime::new();
    let id = unique_id("kill");
    let (bundle, out) = signal_recorder(&rt, &id);
    rt.ok(&["run", "--detach", "--bundle", bundle.arg(), &id]);
    wait_for_file(&out.path().join("ready"));
    let got = out.path().join("got");
    rt.ok(&["kill", &id, "USR1"]);
    wait_for_content(&got, "usr1\n");
    rt.ok(&["kill", &id, &libc::SIGUSR2.to_string()]);
    wait_for_content(&got, "usr1\nusr2\n");
    rt.ok(&["kill", &id, "SIGTERM"]);
    wait_for_content(&got, "usr1\nusr2\nterm\n");
    rt.wait_status(&id, "stopped");
    // A stopped container takes no more signals.
    let again = rt.lucid(&["kill", &id, "KILL"]);
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("not running"));
    rt.ok(&["delete", &id]);
    assert_nothing_left(&rt, &id, bundle.path());
}

#[test]
fn kill_all_reaches_every_process_of_the_container() {
    // Without its own pid namespace, a container's other processes outlive
    // its init: only `--all` reaches them. A plain kill beside it shows the
    // difference (in a pid namespace, init's end would kill them all anyway).
    let rt = Runtime::new();
    let in_cgroup = |id: &str| -> Vec<String> {
        let cgroup = cgroup_path(id);
        std::fs::read_dir("/proc")
            .unwrap()
            .flatten()
            .filter(|entry| {
                std::fs::read_to_string(entry.path().join("cgroup"))
                    .is_ok_and(|text| text.lines().any(|l| l.ends_with(&cgroup)))
            })
            // A dead init waiting to be reaped is no process of the container.
            .filter(|entry| {
                std::fs::read_to_string(entry.path().join("stat"))
                    .is_ok_and(|stat| !stat.contains(") Z "))
            })
            .map(|entry| entry.file_name().to_string_lossy().into_owned())
            .collect()
    };
    let mut ends = Vec::new();
    for all in [false, true] {
        let id = unique_id("killall");
        let mut bundle = Bundle::new(&rt, &id, &["sh", "-c", "sleep 30 & sleep 30 & wait"]);
        bundle.edit(|c| {
            c["linux"]["namespaces"]
                .as_array_mut()
                .unwrap()
                .retain(|ns| ns["type"] != "pid");
        });
        rt.ok(&["run", "--detach", "--bundle", bundle.arg(), &id]);
        wait_until(10, "three processes in the container", || {
            in_cgroup(&id).len() == 3
        });
        let args: &[&str] = if all {
            &["kill", "--all", &id, "KILL"]
        } else {
            &["kill", &id, "KILL"]
        };
        rt.ok(args);
        rt.wait_status(&id, "stopped");
        if all {
            wait_until(10, "every process of the container gone", || {
                in_cgroup(&id).is_empty()
            });
        }
        ends.push(in_cgroup(&id).len());
        rt.ok(&["delete", &id]);
        assert_nothing_left(&rt, &id, bundle.path());
    }
    assert_eq!(
        ends,
        [2, 0],
        "processes left after a plain kill, then after kill --all"
    );
}

#[test]
fn delete_of_a_created_container_kills_its_init() {
    let rt = Runtime::new();
    let id = unique_id("delcreated");
    let bundle = Bundle::new(&rt, &id, &["true"]);
    rt.ok(&["create", "--bundle", bundle.arg(), &id]);
    let pid = rt.state(&id)["pid"].as_i64().unwrap();
    rt.ok(&["delete", &id]);
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    assert!(
        stat.is_empty() || stat.contains(") Z"),
        "init {pid} still runs: {stat}"
    );
    assert_nothing_left(&rt, &id, bundle.path());
}

#[test]
fn delete_force_removes_a_running_container() {
    let rt = Runtime::new();
    let id = unique_id("delforce");
    let bundle = Bundle::new(&rt, &id, &["sleep", "30"]);
    rt.ok(&["run", "-d", "--bundle", bundle.arg(), &id]);
    rt.ok(&["delete", "--force", &id]);
    assert_nothing_left(&rt, &id, bundle.path());
}

#[test]
fn spec_writes_runcs_default_and_refuses_to_overwrite() {
    let rt = Runtime::new();
    let dir = tempfile::tempdir().unwrap();
    rt.ok(&["spec", "--bundle", dir.path().to_str().unwrap()]);
    let config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("config.json")).unwrap())
            .unwrap();
    assert_eq!(config["process"]["args"][0], "sh");
    assert_eq!(config["root"]["path"], "rootfs");
    let again = rt.lucid(&["spec", "--bundle", dir.path().to_str().unwrap()]);
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("exists"));
    let rootless = tempfile::tempdir().unwrap();
    rt.ok(&[
        "spec",
        "--rootless",
        "--bundle",
        rootless.path().to_str().unwrap(),
    ]);
    let config: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(rootless.path().join("config.json")).unwrap(),
    )
    .unwrap();
    assert!(config["linux"]["uidMappings"].is_array());
}

#[test]
fn json_log_lines_carry_the_error() {
    let rt = Runtime::new();
    let log = tempfile::NamedTempFile::new().unwrap();
    let out = rt.lucid(&[
        "--log",
        log.path().to_str().unwrap(),
        "--log-format",
        "json",
        "state",
        "no-such-container",
    ]);
    assert!(!out.status.success());
    let text = std::fs::read_to_string(log.path()).unwrap();
    let line: serde_json::Value = serde_json::from_str(text.lines().last().unwrap()).unwrap();
    assert_eq!(line["level"], "error");
    assert!(line["msg"].as_str().unwrap().contains("does not exist"));
    assert!(line["time"].is_string());
}
