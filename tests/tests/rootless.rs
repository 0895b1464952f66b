//! Rootless containers: `lucid spec --rootless` and `lucid run` as an
//! unprivileged user this test creates (and removes), with its state under
//! `$XDG_RUNTIME_DIR/lucid`, its own id as root of the container's user
//! namespace, subordinate ids through newuidmap/newgidmap, and no cgroup of
//! its own where none is delegated. Needs root (to make the user) and
//! Debian's `uidmap` package.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use lucid_tests::{lucid_bin, make_rootfs, require_root};
use serde_json::{json, Value};

/// A user made for one test, removed (with its home) when dropped.
struct TestUser {
    name: String,
    uid: u32,
    gid: u32,
}

impl TestUser {
    fn new() -> TestUser {
        require_root();
        static COUNTER: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let name = format!("lucidrl{}x{n}", std::process::id());
        let out = Command::new("useradd")
            .args(["--create-home", "--shell", "/bin/sh", &name])
            .output()
            .expect("running useradd (Debian's passwd package)");
        assert!(
            out.status.success(),
            "useradd {name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let id = |flag: &str| -> u32 {
            let out = Command::new("id").args([flag, &name]).output().unwrap();
            String::from_utf8_lossy(&out.stdout).trim().parse().unwrap()
        };
        let (uid, gid) = (id("-u"), id("-g"));
        TestUser { name, uid, gid }
    }

    /// `lucid ARGS` as this user, with `XDG_RUNTIME_DIR` set. Output goes
    /// through files: a detached container inherits them, and a pipe would
    /// stay open until it exits.
    fn lucid(&self, xdg: &Path, args: &[&str]) -> Output {
        let mut stdout = tempfile::tempfile().unwrap();
        let mut stderr = tempfile::tempfile().unwrap();
        let status = Command::new("runuser")
            .args(["-u", &self.name, "--", "env"])
            .arg(format!("XDG_RUNTIME_DIR={}", xdg.display()))
            .arg(lucid_bin())
            .args(args)
            .stdin(std::process::Stdio::null())
            .stdout(stdout.try_clone().unwrap())
            .stderr(stderr.try_clone().unwrap())
            .status()
            .expect("running runuser");
        let read = |file: &mut std::fs::File| {
            use std::io::{Read, Seek};
            let mut bytes = Vec::new();
            file.rewind().unwrap();
            file.read_to_end(&mut bytes).unwrap();
            bytes
        };
        Output {
            status,
            stdout: read(&mut stdout),
            stderr: read(&mut stderr),
        }
    }

    fn ok(&self, xdg: &Path, args: &[&str]) -> String {
        let out = self.lucid(xdg, args);
        assert!(
            out.status.success(),
            "lucid {args:?} as {} failed ({}): {}{}",
            self.name,
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// The user's first subordinate id range from /etc/subuid or /etc/subgid.
    fn subordinate(&self, file: &str) -> (u32, u32) {
        let text = std::fs::read_to_string(file).unwrap_or_default();
        text.lines()
            .find_map(|line| {
                let fields: Vec<&str> = line.split(':').collect();
                match fields[..] {
                    [name, start, count] if name == self.name => {
                        Some((start.parse().ok()?, count.parse().ok()?))
                    }
                    _ => None,
                }
            })
            .unwrap_or_else(|| panic!("useradd gave {} no range in {file}", self.name))
    }
}

impl Drop for TestUser {
    fn drop(&mut self) {
        let _ = Command::new("userdel")
            .args(["--remove", &self.name])
            .output();
    }
}

/// A bundle owned by the user, its config.json written by the user's own
/// `lucid spec --rootless`, and a runtime directory for the user's state.
/// Dropping it force-deletes, as the user, every container in that state.
struct RootlessBundle<'u> {
    user: &'u TestUser,
    dir: tempfile::TempDir,
    xdg: tempfile::TempDir,
}

impl Drop for RootlessBundle<'_> {
    fn drop(&mut self) {
        for entry in std::fs::read_dir(self.state_root())
            .into_iter()
            .flatten()
            .flatten()
        {
            let id = entry.file_name().to_string_lossy().into_owned();
            let _ = self
                .user
                .lucid(self.xdg.path(), &["delete", "--force", &id]);
        }
    }
}

impl<'u> RootlessBundle<'u> {
    fn new(user: &'u TestUser, args: &[&str], edit: impl FnOnce(&mut Value)) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("lucid-rl-")
            .tempdir()
            .unwrap();
        let xdg = tempfile::Builder::new()
            .prefix("lucid-xdg-")
            .tempdir()
            .unwrap();
        make_rootfs(&dir.path().join("rootfs"));
        chown_tree(dir.path(), user.uid, user.gid);
        chown_tree(xdg.path(), user.uid, user.gid);
        user.ok(
            xdg.path(),
            &[
                "spec",
                "--rootless",
                "--bundle",
                dir.path().to_str().unwrap(),
            ],
        );
        let path = dir.path().join("config.json");
        let mut config: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        config["process"]["terminal"] = json!(false);
        config["process"]["args"] = json!(args);
        edit(&mut config);
        std::fs::write(&path, config.to_string()).unwrap();
        RootlessBundle { user, dir, xdg }
    }

    fn arg(&self) -> &str {
        self.dir.path().to_str().unwrap()
    }

    fn state_root(&self) -> PathBuf {
        self.xdg.path().join("lucid")
    }
}

fn chown_tree(path: &Path, uid: u32, gid: u32) {
    let status = Command::new("chown")
        .args(["-R", "-h", &format!("{uid}:{gid}")])
        .arg(path)
        .status()
        .unwrap();
    assert!(status.success());
}

/// The uid of a process as the host sees it.
fn host_uid(pid: i64) -> u32 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap()
}

#[test]
fn rootless_container_runs_as_an_unprivileged_user() {
    let user = TestUser::new();
    let spec_check = RootlessBundle::new(&user, &["true"], |c| {
        assert_eq!(c["linux"]["uidMappings"][0]["hostID"], user.uid);
        assert_eq!(c["linux"]["gidMappings"][0]["hostID"], user.gid);
    });
    drop(spec_check);
    let bundle = RootlessBundle::new(
        &user,
        &["sh", "-c", "id; cat /proc/self/uid_map; echo $$; sleep 30"],
        |_| {},
    );
    let id = "rootless-1";
    user.ok(
        bundle.xdg.path(),
        &["run", "--detach", "--bundle", bundle.arg(), id],
    );
    // The state lives under $XDG_RUNTIME_DIR/lucid, owned by the user.
    assert!(bundle.state_root().join(id).join("state.json").exists());
    let state: Value = serde_json::from_str(&user.ok(bundle.xdg.path(), &["state", id])).unwrap();
    assert_eq!(state["status"], "running");
    let pid = state["pid"].as_i64().unwrap();
    // Root in the container, the user on the host.
    assert_eq!(host_uid(pid), user.uid);
    // No cgroup is delegated to the user here: the container has none of its own.
    for entry in std::fs::read_dir("/sys/fs/cgroup").unwrap().flatten() {
        let dir = entry.path().join("lucid").join(id);
        assert!(!dir.exists(), "a cgroup was made at {}", dir.display());
    }
    user.ok(bundle.xdg.path(), &["kill", id, "KILL"]);
    let deadline = lucid_tests::deadline(10);
    loop {
        let state: Value =
            serde_json::from_str(&user.ok(bundle.xdg.path(), &["state", id])).unwrap();
        if state["status"] == "stopped" {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{state}");
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    user.ok(bundle.xdg.path(), &["delete", id]);
    assert!(!bundle.state_root().join(id).exists());
}

#[test]
fn rootless_container_output_shows_root_mapped_to_the_user() {
    let user = TestUser::new();
    let bundle = RootlessBundle::new(
        &user,
        &["sh", "-c", "id -u; cat /proc/self/uid_map"],
        |_| {},
    );
    let out = user.ok(
        bundle.xdg.path(),
        &["run", "--bundle", bundle.arg(), "rootless-3"],
    );
    let mut lines = out.lines();
    assert_eq!(lines.next(), Some("0"), "{out}");
    let map: Vec<String> = lines
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .map(str::to_owned)
        .collect();
    assert_eq!(map, ["0", &user.uid.to_string(), "1"], "{out}");
    assert!(!bundle.state_root().join("rootless-3").exists());
}

#[test]
fn rootless_subordinate_ids_are_mapped_through_newuidmap() {
    let user = TestUser::new();
    assert!(
        Path::new("/usr/bin/newuidmap").exists() && Path::new("/usr/bin/newgidmap").exists(),
        "newuidmap/newgidmap are missing: install Debian's uidmap package"
    );
    let (sub_uid, uid_count) = user.subordinate("/etc/subuid");
    let (sub_gid, gid_count) = user.subordinate("/etc/subgid");
    let bundle = RootlessBundle::new(
        &user,
        &["sh", "-c", "id; cat /proc/self/uid_map /proc/self/gid_map"],
        |c| {
            c["linux"]["uidMappings"] = json!([
                { "containerID": 0, "hostID": user.uid, "size": 1 },
                { "containerID": 1, "hostID": sub_uid, "size": uid_count }
            ]);
            c["linux"]["gidMappings"] = json!([
                { "containerID": 0, "hostID": user.gid, "size": 1 },
                { "containerID": 1, "hostID": sub_gid, "size": gid_count }
            ]);
            // An id from the subordinate range runs the process.
            c["process"]["user"] = json!({ "uid": 1000, "gid": 1000 });
        },
    );
    let out = user.ok(
        bundle.xdg.path(),
        &["run", "--bundle", bundle.arg(), "rootless-4"],
    );
    assert!(
        out.contains("uid=1000") && out.contains("gid=1000"),
        "{out}"
    );
    let maps: Vec<Vec<&str>> = out
        .lines()
        .skip(1)
        .map(|l| l.split_whitespace().collect())
        .collect();
    let sub_uid = sub_uid.to_string();
    let uid_count = uid_count.to_string();
    assert!(
        maps.contains(&vec!["1", sub_uid.as_str(), uid_count.as_str()]),
        "{out}"
    );
}

#[test]
fn rootless_limit_without_a_delegated_cgroup_is_refused() {
    let user = TestUser::new();
    let bundle = RootlessBundle::new(&user, &["true"], |c| {
        c["linux"]["resources"] = json!({ "pids": { "limit": 10 } });
    });
    let out = user.lucid(
        bundle.xdg.path(),
        &["run", "--bundle", bundle.arg(), "rootless-5"],
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("linux.resources.pids") && err.contains("no cgroup is delegated"),
        "{err}"
    );
    assert!(!bundle.state_root().join("rootless-5").exists());
}
