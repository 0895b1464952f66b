//! The cgroup v2 code path on the real v2 hierarchy of this hybrid machine:
//! each test runs lucid in a private mount namespace where /sys/fs/cgroup is
//! that hierarchy alone (a pure v2 host, as lucid sees it). Needs root, the
//! v2 hierarchy at /sys/fs/cgroup/unified (or /sys/fs/cgroup), and BPF for
//! the device filter. The tests here run one at a time: two of them change
//! which controllers the hierarchy's root delegates.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use lucid_tests::{
    assert_nothing_left, cgroup_path, host_v2_root, run_output, unique_id, Bundle, Runtime, V2View,
    CGROUP_PARENT,
};
use serde_json::json;

static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner())
}

fn host_dir(id: &str) -> PathBuf {
    host_v2_root().join(cgroup_path(id).trim_start_matches('/'))
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
        .trim()
        .to_owned()
}

fn frozen(dir: &Path) -> bool {
    read(&dir.join("cgroup.events"))
        .lines()
        .any(|l| l == "frozen 1")
}

#[test]
fn create_place_freeze_and_remove_work_on_the_real_v2_hierarchy() {
    let _serial = serial();
    let (_guard, view) = view();
    let rt = Runtime::in_view(&view);
    let id = unique_id("v2life");
    let bundle = Bundle::new(&rt, &id, &["sleep", "60"]);
    let log = bundle.path().join("lucid.log");
    let status = rt
        .command()
        .args([
            "--debug",
            "--log",
            log.to_str().unwrap(),
            "run",
            "--detach",
            "--bundle",
            bundle.arg(),
            &id,
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .unwrap();
    let text = read(&log);
    assert!(status.success(), "{text}");
    assert!(
        text.contains("CLONE_INTO_CGROUP"),
        "not placed at birth: {text}"
    );
    let dir = host_dir(&id);
    assert!(dir.is_dir(), "{} was not made", dir.display());
    let pid = rt.state(&id)["pid"].as_i64().unwrap();
    assert_eq!(read(&dir.join("cgroup.procs")), pid.to_string());
    let own = read(Path::new(&format!("/proc/{pid}/cgroup")));
    assert!(own.contains(&format!("0::{}", cgroup_path(&id))), "{own}");

    rt.ok(&["pause", &id]);
    assert_eq!(read(&dir.join("cgroup.freeze")), "1");
    assert!(frozen(&dir));
    assert_eq!(rt.status(&id), "paused");
    rt.ok(&["resume", &id]);
    assert!(!frozen(&dir));
    assert_eq!(rt.status(&id), "running");

    rt.ok(&["pause", &id]);
    rt.ok(&["delete", "--force", &id]);
    assert!(!dir.exists(), "{} outlived delete", dir.display());
    assert_nothing_left(&rt, &id, bundle.path());
}

/// Restores the root's delegated controllers when the test ends.
struct SubtreeGuard {
    root: PathBuf,
    before: String,
}

impl Drop for SubtreeGuard {
    fn drop(&mut self) {
        let now =
            std::fs::read_to_string(self.root.join("cgroup.subtree_control")).unwrap_or_default();
        for c in now.split_whitespace() {
            if !self.before.split_whitespace().any(|b| b == c) {
                let parent = self.root.join(CGROUP_PARENT.trim_start_matches('/'));
                // A removed cgroup lingers a moment (EBUSY meanwhile).
                let deadline = lucid_tests::deadline(3);
                for file in [
                    parent.join("cgroup.subtree_control"),
                    self.root.join("cgroup.subtree_control"),
                ] {
                    while std::fs::write(&file, format!("-{c}")).is_err()
                        && std::time::Instant::now() < deadline
                    {
                        std::thread::sleep(std::time::Duration::from_millis(50));
                    }
                }
            }
        }
    }
}

/// A pure v2 view, and a guard that takes back at the end the controllers
/// lucid delegated from the root (as on a v2 host, it enables every
/// controller the root has down the container's path).
fn view() -> (SubtreeGuard, V2View) {
    let root = host_v2_root();
    let guard = SubtreeGuard {
        before: read(&root.join("cgroup.subtree_control")),
        root,
    };
    (guard, V2View::new())
}

#[test]
fn v2_resources_are_written_and_missing_controllers_named() {
    let _serial = serial();
    let root = host_v2_root();
    let controllers = read(&root.join("cgroup.controllers"));
    assert!(
        controllers.split_whitespace().any(|c| c == "hugetlb"),
        "this test needs the hugetlb controller free for v2 (it is: {controllers:?})"
    );
    let (_guard, view) = view();
    let rt = Runtime::in_view(&view);
    let id = unique_id("v2huge");
    let mut bundle = Bundle::new(&rt, &id, &["sleep", "60"]);
    bundle.edit(|c| {
        c["linux"]["resources"]["hugepageLimits"] =
            json!([{ "pageSize": "2MB", "limit": 4194304 }]);
    });
    rt.ok(&["run", "--detach", "--bundle", bundle.arg(), &id]);
    let dir = host_dir(&id);
    assert_eq!(read(&dir.join("hugetlb.2MB.max")), "4194304");
    assert!(read(&dir.join("cgroup.controllers")).contains("hugetlb"));
    rt.ok(&["delete", "--force", &id]);
    assert_nothing_left(&rt, &id, bundle.path());

    // memory is bound to v1 on this machine: on the v2 hierarchy it is a
    // controller the host lacks.
    let id = unique_id("v2mem");
    let mut bundle = Bundle::new(&rt, &id, &["true"]);
    bundle.edit(|c| c["linux"]["resources"]["memory"] = json!({ "limit": 33554432 }));
    let out = rt.lucid(&["create", "--bundle", bundle.arg(), &id]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("linux.resources.memory") && err.contains("no memory cgroup controller"),
        "{err}"
    );
    assert_nothing_left(&rt, &id, bundle.path());
}

fn null_bundle(rt: &Runtime, id: &str, deny_null: bool) -> Bundle {
    let mut bundle = Bundle::new(
        rt,
        id,
        &[
            "sh",
            "-c",
            "if echo x > /dev/null; then echo WROTE; else echo DENIED; fi",
        ],
    );
    if deny_null {
        bundle.edit(|c| {
            // As runc: a default device the spec lists itself leaves the
            // allow-list, so the spec's rule for it decides.
            c["linux"]["devices"] = json!([{ "path": "/dev/null", "type": "c", "major": 1, "minor": 3, "fileMode": 438 }]);
            c["linux"]["resources"]["devices"]
                .as_array_mut()
                .unwrap()
                .push(json!({ "allow": false, "type": "c", "major": 1, "minor": 3, "access": "rwm" }));
        });
    }
    bundle
}

#[test]
fn a_device_rule_denying_dev_null_fails_inside_the_container_only() {
    let _serial = serial();
    let (_guard, view) = view();
    let rt = Runtime::in_view(&view);
    let denied = unique_id("nonull");
    let bundle = null_bundle(&rt, &denied, true);
    assert_eq!(run_output(&rt, &bundle, &denied).trim(), "DENIED");
    let allowed = unique_id("null");
    let other = null_bundle(&rt, &allowed, false);
    assert_eq!(run_output(&rt, &other, &allowed).trim(), "WROTE");
    std::fs::write("/dev/null", "x").expect("the host can still write /dev/null");
    assert_nothing_left(&rt, &denied, bundle.path());
    assert_nothing_left(&rt, &allowed, other.path());
}

#[test]
fn without_bpf_device_rules_make_create_fail_instead_of_allowing_every_device() {
    let _serial = serial();
    let (_guard, view) = view();
    let mut rt = Runtime::in_view(&view);
    // Not a BPF file system, and none can be mounted there.
    rt.set_pin_root(Path::new("/sys/kernel/lucid-no-bpf"));
    let id = unique_id("nobpfdev");
    let bundle = Bundle::new(&rt, &id, &["true"]);
    let out = rt.lucid(&["create", "--bundle", bundle.arg(), &id]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("linux.resources.devices") && err.contains("every device allowed"),
        "{err}"
    );
    assert_nothing_left(&rt, &id, bundle.path());
}
