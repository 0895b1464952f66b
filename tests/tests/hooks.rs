//! OCI hooks: order, the state on stdin, args and env, and the failure
//! semantics of each hook point. Needs root.

use lucid_tests::{assert_nothing_left, unique_id, Bundle, Runtime};
use serde_json::{json, Value};

const KINDS: [&str; 6] = [
    "prestart",
    "createRuntime",
    "createContainer",
    "startContainer",
    "poststart",
    "poststop",
];

/// A hook that appends `KIND <stdin>` to `log`.
fn recorder(kind: &str, shell: &str, log: &str) -> Value {
    json!({
        "path": shell,
        "args": ["sh", "-c", format!("printf '%s %s %s\\n' \"$0\" \"$HOOKVAR\" \"$(cat)\" >> {log}"), kind],
        "env": [format!("HOOKVAR=var-{kind}")]
    })
}

/// A bundle whose hooks all record into a log the test can read, and whose
/// container sleeps until signalled.
fn recording_bundle(rt: &Runtime, id: &str) -> (Bundle, tempfile::TempDir) {
    let logdir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(
        logdir.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o777),
    )
    .unwrap();
    let host_log = logdir.path().join("log").to_str().unwrap().to_owned();
    let mut bundle = Bundle::new(rt, id, &["sleep", "0.2"]);
    let source = logdir.path().to_str().unwrap().to_owned();
    bundle.edit(|c| {
        c["mounts"].as_array_mut().unwrap().push(json!({
            "destination": "/hooklog", "type": "bind", "source": source, "options": ["bind", "rw"]
        }));
        let mut hooks = serde_json::Map::new();
        for kind in KINDS {
            // startContainer runs after pivot_root: its path and log are the container's.
            let hook = if kind == "startContainer" {
                recorder(kind, "/bin/sh", "/hooklog/log")
            } else {
                recorder(kind, "/bin/sh", &host_log)
            };
            hooks.insert(kind.to_owned(), json!([hook]));
        }
        c["hooks"] = Value::Object(hooks);
    });
    (bundle, logdir)
}

fn read_log(dir: &tempfile::TempDir) -> Vec<(String, String, Value)> {
    std::fs::read_to_string(dir.path().join("log"))
        .unwrap_or_default()
        .lines()
        .map(|line| {
            let mut parts = line.splitn(3, ' ');
            let kind = parts.next().unwrap().to_owned();
            let var = parts.next().unwrap().to_owned();
            let state: Value = serde_json::from_str(parts.next().unwrap()).unwrap();
            (kind, var, state)
        })
        .collect()
}

#[test]
fn every_hook_runs_in_order_with_the_state_on_stdin() {
    let rt = Runtime::new();
    let id = unique_id("hooks");
    let (bundle, logdir) = recording_bundle(&rt, &id);
    rt.ok(&["create", "--bundle", bundle.arg(), &id]);
    let pid = rt.state(&id)["pid"].as_i64().unwrap();
    rt.ok(&["start", &id]);
    rt.wait_status(&id, "stopped");
    rt.ok(&["delete", &id]);

    let log = read_log(&logdir);
    let kinds: Vec<&str> = log.iter().map(|(k, _, _)| k.as_str()).collect();
    assert_eq!(kinds, KINDS, "{log:#?}");
    let expected_status = [
        "creating", "creating", "creating", "created", "running", "stopped",
    ];
    for ((kind, var, state), status) in log.iter().zip(expected_status) {
        assert_eq!(var, &format!("var-{kind}"), "{kind} did not get its env");
        assert_eq!(state["id"], id.as_str(), "{kind}: {state}");
        assert_eq!(state["status"], status, "{kind}: {state}");
        assert_eq!(state["bundle"], bundle.arg(), "{kind}: {state}");
        assert!(state["ociVersion"].is_string(), "{kind}: {state}");
        if *kind == "poststop" {
            assert!(state.get("pid").is_none(), "{kind}: {state}");
        } else {
            assert_eq!(state["pid"], pid, "{kind}: {state}");
        }
    }
    assert_nothing_left(&rt, &id, bundle.path());
}

fn failing(kind: &str) -> Value {
    json!({ "path": "/bin/sh", "args": ["sh", "-c", format!("echo {kind}-broke >&2; exit 1")] })
}

#[test]
fn failing_poststart_and_poststop_hooks_only_warn() {
    let rt = Runtime::new();
    let id = unique_id("softhooks");
    let mut bundle = Bundle::new(&rt, &id, &["sh", "-c", "exit 5"]);
    bundle.edit(|c| {
        c["hooks"] =
            json!({ "poststart": [failing("poststart")], "poststop": [failing("poststop")] });
    });
    let out = rt.lucid(&["run", "--bundle", bundle.arg(), &id]);
    assert_eq!(
        out.status.code(),
        Some(5),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("poststart-broke") && stderr.contains("poststop-broke"),
        "{stderr}"
    );
    assert_nothing_left(&rt, &id, bundle.path());
}

#[test]
fn failing_start_container_hook_fails_start_and_stops_the_container() {
    let rt = Runtime::new();
    let id = unique_id("starthook");
    let mut bundle = Bundle::new(&rt, &id, &["sleep", "30"]);
    bundle.edit(|c| c["hooks"] = json!({ "startContainer": [failing("startContainer")] }));
    rt.ok(&["create", "--bundle", bundle.arg(), &id]);
    let out = rt.lucid(&["start", &id]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("startContainer") && stderr.contains("startContainer-broke"),
        "{stderr}"
    );
    rt.wait_status(&id, "stopped");
    rt.ok(&["delete", &id]);
    assert_nothing_left(&rt, &id, bundle.path());
}
