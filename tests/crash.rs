//! Crash safety: the runtime killed (SIGKILL) at every fail point of
//! `create`, `start` and `delete` (`LUCID_FAILPOINT`, docs/reliability.md),
//! then `lucid delete --force` must leave nothing: no state directory, no
//! cgroup in any hierarchy (each v1 controller and the unified one), no
//! process, no mount, no eBPF registration or pin for the container's
//! cgroup. The fail points come from the binary itself (the error for an
//! unknown name lists them), so a new one is covered, or fails this test
//! until it is. Needs root.

use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;

use lucid_tests::{leftovers, unique_id, Bundle, Runtime, CGROUP_PARENT};

/// Every fail point the binary has, from its own error message.
fn fail_points(rt: &Runtime) -> Vec<String> {
    let out = rt
        .command()
        .env("LUCID_FAILPOINT", "not-a-fail-point")
        .args(["state", "nothing"])
        .stdin(Stdio::null())
        .output()
        .expect("running lucid");
    let stderr = String::from_utf8_lossy(&out.stderr);
    let list = stderr
        .split("one of: ")
        .nth(1)
        .unwrap_or_else(|| panic!("no list of fail points in: {stderr}"));
    let list = list.trim().trim_end_matches(')');
    list.split(", ").map(str::to_owned).collect()
}

/// The cgroup hierarchies of the host (each v1 controller and the unified one).
fn hierarchies() -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir("/sys/fs/cgroup")
        .expect("/sys/fs/cgroup")
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.join(CGROUP_PARENT.trim_start_matches('/')).is_dir())
        .collect();
    dirs.sort();
    dirs
}

fn cgroup_dirs(id: &str) -> Vec<PathBuf> {
    hierarchies()
        .into_iter()
        .map(|h| h.join(CGROUP_PARENT.trim_start_matches('/')).join(id))
        .collect()
}

/// The container's v2 cgroup id, while its directory exists.
fn unified_id(id: &str) -> Option<u64> {
    use std::os::unix::fs::MetadataExt;
    cgroup_dirs(id)
        .into_iter()
        .find(|d| d.join("cgroup.procs").exists() && d.join("cgroup.controllers").exists())
        .and_then(|d| std::fs::metadata(d).ok())
        .map(|m| m.ino())
}

/// Whether the eBPF programs under `pin_root` know cgroup `cgroup_id`:
/// a map entry, or a pin directory of its own.
fn bpf_knows(pin_root: &Path, cgroup_id: u64) -> Vec<String> {
    let mut found = Vec::new();
    if let Ok(programs) = lucid_ebpf::Programs::open(pin_root) {
        let registered = programs.registered().expect("reading the registrations");
        if registered.iter().any(|r| r.cgroup_id == cgroup_id) {
            found.push(format!("map entry for cgroup {cgroup_id}"));
        }
    }
    let name = cgroup_id.to_string();
    let mut stack = vec![pin_root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            let path = entry.path();
            if entry.file_name().to_string_lossy() == name {
                found.push(format!("pin {}", path.display()));
            }
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                stack.push(path);
            }
        }
    }
    found
}

/// Processes whose command line names the container (its lucid:init, a
/// killed runtime's child).
fn processes_naming(id: &str) -> Vec<String> {
    let me = std::process::id().to_string();
    std::fs::read_dir("/proc")
        .expect("/proc")
        .flatten()
        .filter(|e| e.file_name().to_string_lossy() != me)
        .filter_map(|e| {
            let cmdline = std::fs::read(e.path().join("cmdline")).ok()?;
            let text = String::from_utf8_lossy(&cmdline).replace('\0', " ");
            text.split(' ')
                .any(|arg| arg == id)
                .then(|| format!("process {}: {text}", e.file_name().to_string_lossy()))
        })
        .collect()
}

fn mounts_naming(id: &str, bundle: &Path) -> Vec<String> {
    let bundle = bundle.to_string_lossy().into_owned();
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .filter(|l| l.contains(&bundle) || l.contains(id))
        .map(|l| format!("mount {l}"))
        .collect()
}

fn run_ok(rt: &Runtime, args: &[&str]) {
    rt.ok(args);
}

#[test]
fn delete_force_cleans_up_after_a_kill_at_every_fail_point() {
    let rt = Runtime::new();
    let points = fail_points(&rt);
    assert!(points.len() >= 10, "too few fail points: {points:?}");
    let mut report = Vec::new();
    for point in &points {
        let id = unique_id("crash");
        let bundle = Bundle::new(&rt, &id, &["sleep", "1000"]);
        let killed = |args: &[&str]| {
            // Files, not pipes: the container's process inherits them.
            let stderr = tempfile::tempfile().expect("a temporary file");
            let status = rt
                .command()
                .env("LUCID_FAILPOINT", point)
                .args(args)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(stderr.try_clone().expect("dup"))
                .status()
                .expect("running lucid");
            assert_eq!(
                status.signal(),
                Some(libc::SIGKILL),
                "{point}: lucid {args:?} was not killed at its fail point ({status}): {}",
                lucid_tests::read_file(&mut { stderr })
            );
        };
        let create = ["create", "--bundle", bundle.arg(), id.as_str()];
        match point.split('.').next() {
            Some("create") => killed(&create),
            Some("start") => {
                run_ok(&rt, &create);
                killed(&["start", &id]);
            }
            Some("delete") => {
                run_ok(&rt, &create);
                run_ok(&rt, &["start", &id]);
                killed(&["delete", "--force", &id]);
            }
            _ => panic!("fail point {point} belongs to no known command"),
        }
        // What the kill left, to show each check had something to find.
        // The state records the id once the cgroup exists (a delete killed
        // after removing the cgroup leaves only that record).
        let recorded = std::fs::read_to_string(rt.root().join(&id).join("state.json"))
            .ok()
            .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
            .and_then(|v| v["cgroup"]["unified_id"].as_u64());
        let cgroup_id = unified_id(&id).or(recorded);
        let bpf_before = cgroup_id
            .map(|c| bpf_knows(rt.pin_root(), c).len())
            .unwrap_or(0);
        let cgroups_before = cgroup_dirs(&id).iter().filter(|d| d.exists()).count();
        let state_before = rt.root().join(&id).exists();
        let out = rt.lucid(&["delete", "--force", &id]);
        assert!(
            out.status.success(),
            "{point}: delete --force failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let mut found = leftovers(&rt, &id, bundle.path());
        for dir in cgroup_dirs(&id) {
            if dir.exists() && !found.iter().any(|f| f.contains(&*dir.to_string_lossy())) {
                found.push(format!("cgroup {}", dir.display()));
            }
        }
        found.extend(processes_naming(&id));
        found.extend(mounts_naming(&id, bundle.path()));
        if let Some(cgroup_id) = cgroup_id {
            found.extend(bpf_knows(rt.pin_root(), cgroup_id));
        }
        assert!(found.is_empty(), "{point}: delete --force left: {found:#?}");
        report.push(format!(
            "{point:<24} killed; left before delete: state dir {}, {cgroups_before} cgroup dirs, {bpf_before} eBPF entries/pins{}; after: no state dir, none of {} cgroup dirs, no process, no mount, {}",
            if state_before { "yes" } else { "no" },
            cgroup_id.map(|c| format!(" (cgroup id {c})")).unwrap_or_default(),
            cgroup_dirs(&id).len(),
            if cgroup_id.is_some() { "no eBPF entry or pin" } else { "no cgroup id to register" },
        ));
    }
    eprintln!("checked per fail point:\n{}", report.join("\n"));
}
