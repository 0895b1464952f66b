//! Bad input gets a one-line error naming the file, field or ID, a non-zero
//! exit, and leaves no state directory, cgroup, mount or process behind.
//! Needs root.

use lucid_tests::{assert_nothing_left, leftovers, unique_id, Bundle, Runtime};
use serde_json::json;

/// Runs `lucid ARGS`, expects failure, returns stderr.
fn fails(rt: &Runtime, args: &[&str]) -> String {
    let out = rt.lucid(args);
    assert!(!out.status.success(), "lucid {args:?} succeeded");
    assert_eq!(out.status.code(), Some(1), "lucid {args:?}: {}", out.status);
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert_eq!(
        stderr.trim_end().lines().count(),
        1,
        "not one line: {stderr}"
    );
    stderr
}

/// Creates a container from a bundle `edit` breaks; returns the error.
fn create_fails(edit: impl FnOnce(&mut Bundle)) -> String {
    let rt = Runtime::new();
    let id = unique_id("bad");
    let mut bundle = Bundle::new(&rt, &id, &["true"]);
    edit(&mut bundle);
    let err = fails(&rt, &["create", "--bundle", bundle.arg(), &id]);
    assert_nothing_left(&rt, &id, bundle.path());
    assert!(
        rt.ids().is_empty(),
        "state left in the root: {:?}",
        rt.ids()
    );
    err
}

#[test]
fn missing_config_json_is_named_with_the_fix() {
    let err = create_fails(|b| std::fs::remove_file(b.path().join("config.json")).unwrap());
    assert!(
        err.contains("config.json: no such file") && err.contains("lucid spec"),
        "{err}"
    );
}

#[test]
fn malformed_config_json_names_the_file() {
    let err = create_fails(|b| {
        std::fs::write(b.path().join("config.json"), "{ \"ociVersion\": ").unwrap()
    });
    assert!(err.contains("config.json") && err.contains("EOF"), "{err}");
}

#[test]
fn unknown_field_value_names_the_field() {
    let err = create_fails(|b| b.edit(|c| c["linux"]["namespaces"][1]["type"] = json!("bogus")));
    assert!(
        err.contains("linux.namespaces[1].type") && err.contains("bogus"),
        "{err}"
    );
}

#[test]
fn unsupported_field_names_the_field() {
    let err = create_fails(|b| b.edit(|c| c["linux"]["intelRdt"] = json!({ "closID": "x" })));
    assert!(
        err.contains("linux.intelRdt") && err.contains("not supported"),
        "{err}"
    );
}

#[test]
fn missing_rootfs_is_named() {
    let err = create_fails(|b| std::fs::remove_dir_all(b.rootfs()).unwrap());
    assert!(
        err.contains("root.path") && err.contains("does not exist"),
        "{err}"
    );
}

#[test]
fn bad_bind_source_names_the_mount() {
    let err = create_fails(|b| {
        b.edit(|c| {
            c["mounts"].as_array_mut().unwrap().push(json!({
                "destination": "/x", "type": "bind", "source": "/no/such/dir", "options": ["bind"]
            }));
        })
    });
    assert!(
        err.contains("rootfs.mount") && err.contains("/no/such/dir"),
        "{err}"
    );
}

#[test]
fn bad_ids_are_refused() {
    let rt = Runtime::new();
    let id = unique_id("ids");
    let bundle = Bundle::new(&rt, &id, &["true"]);
    for bad in ["", "a/b", "..", "../escape", "x y"] {
        let err = fails(&rt, &["create", "--bundle", bundle.arg(), bad]);
        assert!(err.contains("invalid container id"), "{bad:?}: {err}");
    }
    assert!(rt.ids().is_empty(), "{:?}", rt.ids());
    assert!(!rt.root().parent().unwrap().join("escape").exists());
}

/// runc's ID rule (letters, digits, `_ + - .`, not `.` or `..`): every ID it
/// accepts runs to the end and leaves nothing, the dotted ones included
/// (`.adv` once failed on its session keyring's name); one byte over the
/// longest file name is refused up front.
#[test]
fn every_id_by_runcs_rules_can_be_created_run_and_deleted() {
    let rt = Runtime::new();
    let long = format!("long-{}-{}", std::process::id(), "x".repeat(255));
    let long = &long[..255];
    let pid = std::process::id();
    let ids = [
        "...".to_owned(),
        format!(".adv{pid}"),
        format!("_+.-{pid}"),
        format!("{pid}.."),
        long.to_owned(),
    ];
    for id in &ids {
        let bundle = Bundle::new(&rt, &unique_id("idrule"), &["true"]);
        let out = rt.lucid(&["run", "--bundle", bundle.arg(), id]);
        assert!(
            out.status.success(),
            "run {id:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_nothing_left(&rt, id, bundle.path());
    }
    let too_long = format!("{long}y");
    let bundle = Bundle::new(&rt, &unique_id("idrule"), &["true"]);
    let err = fails(&rt, &["create", "--bundle", bundle.arg(), &too_long]);
    assert!(err.contains("invalid container id"), "{err}");
}

#[test]
fn taken_id_is_refused_and_the_first_container_is_untouched() {
    let rt = Runtime::new();
    let id = unique_id("taken");
    let bundle = Bundle::new(&rt, &id, &["sleep", "30"]);
    rt.ok(&["create", "--bundle", bundle.arg(), &id]);
    let before = rt.state(&id);
    let err = fails(&rt, &["create", "--bundle", bundle.arg(), &id]);
    assert!(err.contains(&id) && err.contains("already exists"), "{err}");
    assert_eq!(rt.state(&id), before);
    rt.ok(&["delete", &id]);
    assert_nothing_left(&rt, &id, bundle.path());
}

#[test]
fn failing_create_runtime_hook_fails_create_and_runs_poststop() {
    let marker = tempfile::tempdir().unwrap();
    let poststop = marker.path().join("poststop-ran");
    let err = create_fails(|b| {
        b.edit(|c| {
            c["hooks"] = json!({
                "createRuntime": [{ "path": "/bin/sh", "args": ["sh", "-c", "echo nope >&2; exit 3"] }],
                "poststop": [{ "path": "/bin/sh", "args": ["sh", "-c", format!("touch {}", poststop.display())] }]
            });
        })
    });
    assert!(
        err.contains("createRuntime hook /bin/sh failed") && err.contains("nope"),
        "{err}"
    );
    assert!(
        poststop.exists(),
        "poststop hooks did not run after the failed create"
    );
}

#[test]
fn hook_past_its_timeout_fails_create() {
    let err = create_fails(|b| {
        b.edit(|c| {
            c["hooks"] = json!({
                "createRuntime": [{ "path": "/bin/sh", "args": ["sh", "-c", "sleep 60"], "timeout": 1 }]
            });
        })
    });
    assert!(err.contains("timed out after 1s"), "{err}");
}

#[test]
fn init_dying_during_set_up_is_reported() {
    // The createRuntime hook reads the init pid from its stdin and kills it.
    let err = create_fails(|b| {
        b.edit(|c| {
            c["hooks"] = json!({
                "createRuntime": [{
                    "path": "/bin/sh",
                    "args": ["sh", "-c", "pid=$(sed 's/.*\"pid\":\\([0-9]*\\).*/\\1/'); kill -9 $pid"]
                }]
            });
        })
    });
    assert!(
        err.contains("init process exited during set-up") && err.contains("SIGKILL"),
        "{err}"
    );
}

#[test]
fn start_of_a_container_that_is_not_created_is_refused() {
    let rt = Runtime::new();
    let id = unique_id("startbad");
    let bundle = Bundle::new(&rt, &id, &["sleep", "30"]);
    rt.ok(&["run", "-d", "--bundle", bundle.arg(), &id]);
    let err = fails(&rt, &["start", &id]);
    assert!(err.contains("already running"), "{err}");
    rt.ok(&["kill", &id, "KILL"]);
    rt.wait_status(&id, "stopped");
    let err = fails(&rt, &["start", &id]);
    assert!(err.contains("stopped"), "{err}");
    let err = fails(&rt, &["start", "no-such-container"]);
    assert!(err.contains("no-such-container does not exist"), "{err}");
    rt.ok(&["delete", &id]);
    assert_nothing_left(&rt, &id, bundle.path());
}

#[test]
fn delete_of_a_running_container_needs_force() {
    let rt = Runtime::new();
    let id = unique_id("delbad");
    let bundle = Bundle::new(&rt, &id, &["sleep", "30"]);
    rt.ok(&["run", "-d", "--bundle", bundle.arg(), &id]);
    let err = fails(&rt, &["delete", &id]);
    assert!(
        err.contains("not stopped") && err.contains("--force"),
        "{err}"
    );
    // Refusing changed nothing: the container still runs, with its cgroup.
    assert_eq!(rt.status(&id), "running");
    assert!(!leftovers(&rt, &id, bundle.path()).is_empty());
    rt.ok(&["delete", "--force", &id]);
    assert_nothing_left(&rt, &id, bundle.path());
}

/// A container directory that is a symbolic link to a copy of another
/// container's state (made by hand, or by anyone who can write the root):
/// once `delete`, `delete --force` and `kill` spun on it at 100 % CPU and
/// `state` followed it. Now every command names the link and ends at once;
/// the copy it points to and the real container are untouched.
#[test]
fn a_state_directory_that_is_a_symlink_is_refused_at_once() {
    let rt = Runtime::new();
    let id = unique_id("real");
    let bundle = Bundle::new(&rt, &id, &["sleep", "30"]);
    rt.ok(&["create", "--bundle", bundle.arg(), &id]);
    let elsewhere = tempfile::tempdir().unwrap();
    let copy = elsewhere.path().join("state.json");
    std::fs::copy(rt.root().join(&id).join("state.json"), &copy).unwrap();
    let before = std::fs::read(&copy).unwrap();
    let other = unique_id("other");
    std::os::unix::fs::symlink(elsewhere.path(), rt.root().join(&other)).unwrap();
    for args in [
        vec!["delete", "--force", &other],
        vec!["delete", &other],
        vec!["kill", &other, "KILL"],
        vec!["state", &other],
        vec!["start", &other],
        vec!["pause", &other],
        vec!["events", "--stats", &other],
    ] {
        let out = rt
            .lucid_within(10, &args)
            .unwrap_or_else(|| panic!("lucid {args:?} did not end within 10 s"));
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success() && err.contains("symbolic link"),
            "lucid {args:?} ({}): {err}",
            out.status
        );
    }
    assert_eq!(
        std::fs::read(&copy).unwrap(),
        before,
        "the copy was changed"
    );
    assert!(rt.ids().iter().all(|i| *i != other), "list shows the link");
    assert_eq!(rt.status(&id), "created");
    std::fs::remove_file(rt.root().join(&other)).unwrap();
    rt.ok(&["delete", "--force", &id]);
    assert_nothing_left(&rt, &id, bundle.path());
}
