//! Crash safety: the runtime killed (SIGKILL) at every fail point of
//! `create`, `start` and `delete` (`LUCID_FAILPOINT`, docs/reliability.md),
//! then `lucid delete --force` must leave nothing: no state directory, no
//! cgroup in any hierarchy (each v1 controller and the unified one), no
//! process, no mount, no eBPF registration or pin for the container's
//! cgroup. The fail points come from the binary itself (the error for an
//! unknown name lists them), so a new one is covered, or fails this test
//! until it is. A second test kills `create` from outside, polling for the
//! moment its eBPF pins appear, mid-way through the registration. Needs
//! root and eBPF.

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

/// Loads the eBPF programs under the runtime's pin root, as an exporter
/// would, so that every check can open them; fails the test when eBPF does
/// not work here.
fn load_pins(rt: &Runtime) -> lucid_ebpf::Programs {
    lucid_ebpf::Programs::open_or_load(rt.pin_root()).unwrap_or_else(|e| {
        panic!(
            "this test needs eBPF (root, a BPF file system at /sys/fs/bpf, kernel BTF): loading the programs under {} failed: {e}",
            rt.pin_root().display()
        )
    })
}

/// Whether the eBPF programs under `pin_root` (loaded by [`load_pins`]) know
/// cgroup `cgroup_id`: a map entry, or a pin directory of its own.
fn bpf_knows(pin_root: &Path, cgroup_id: u64) -> Vec<String> {
    let mut found = Vec::new();
    let programs = lucid_ebpf::Programs::open(pin_root)
        .unwrap_or_else(|e| panic!("opening the pins under {}: {e}", pin_root.display()));
    let registered = programs.registered().expect("reading the registrations");
    if registered.iter().any(|r| r.cgroup_id == cgroup_id) {
        found.push(format!("map entry for cgroup {cgroup_id}"));
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

/// What a kill at `point` leaves for `delete --force`: (cgroup directories,
/// an eBPF registration or pin). The state directory is left at every point.
/// A new fail point fails the test until it is listed here.
fn left_at(point: &str) -> (bool, bool) {
    match point {
        "create.state-dir" | "create.state-written" => (false, false),
        "create.cgroup" => (true, false),
        "create.ebpf" | "create.init-cloned" | "create.mounts" | "create.ready"
        | "start.state-read" | "start.released" | "delete.state-read" | "delete.killed" => {
            (true, true)
        }
        "delete.cgroup-removed" => (false, true),
        "delete.ebpf-detached" => (false, false),
        _ => panic!("fail point {point}: say in left_at what a kill there leaves"),
    }
}

#[test]
fn delete_force_cleans_up_after_a_kill_at_every_fail_point() {
    let rt = Runtime::new();
    let programs = load_pins(&rt);
    let containers = programs.pin_dir().join("containers");
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
        // Each check below must have had something to find where the kill
        // leaves it, or it proves nothing.
        let (cgroups_left, bpf_left) = left_at(point);
        assert!(state_before, "{point}: the kill left no state directory");
        assert_eq!(
            cgroups_before,
            if cgroups_left {
                cgroup_dirs(&id).len()
            } else {
                0
            },
            "{point}: cgroup directories left by the kill (of {:?})",
            cgroup_dirs(&id)
        );
        assert_eq!(
            bpf_before > 0,
            bpf_left,
            "{point}: eBPF entries or pins left by the kill: {bpf_before} (cgroup id {cgroup_id:?})"
        );
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
        // The runtime has no other container: no pin directory may be left at all.
        found.extend(
            pin_dir_names(&containers)
                .into_iter()
                .map(|name| format!("pin directory {}", containers.join(name).display())),
        );
        found.extend(
            programs
                .registered()
                .expect("reading the registrations")
                .into_iter()
                .map(|r| format!("map entry for cgroup {}", r.cgroup_id)),
        );
        found.sort();
        found.dedup();
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

/// Kills the `lucid create` it holds when dropped, so a failing try leaves
/// no runtime behind (the container's state and cgroups go with `Runtime`).
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The names in `dir` (the containers' pin directories), failing the test
/// when it cannot be read: the pins were loaded before, so it must exist.
fn pin_dir_names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("listing {}: {e}", dir.display()))
        .map(|e| {
            e.unwrap_or_else(|e| panic!("listing {}: {e}", dir.display()))
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    names.sort();
    names
}

/// The attack on registration: `lucid create` SIGKILLed as soon as the
/// container's pin directory (`<pin root>/v<N>/containers/<cgroup id>`)
/// appears, mid-way through `Programs::register`, before or after its links
/// are pinned and its `WATCHED` entry written; then `delete --force`. No
/// pin directory (with links of a cgroup now gone) and no map entry may be
/// left, after the delete and after a later create/delete cycle. Needs root
/// and eBPF (the programs are loaded first, and that must work).
#[test]
fn delete_force_removes_the_pins_of_a_create_killed_while_registering() {
    const TRIES: usize = 20;
    let rt = Runtime::new();
    let programs = load_pins(&rt);
    let containers = programs.pin_dir().join("containers");
    assert_eq!(
        pin_dir_names(&containers),
        Vec::<String>::new(),
        "a fresh pin root has no container"
    );
    let mut tries = 0;
    let mut caught = 0;
    let mut before_entry = 0;
    let mut with_links_before_entry = 0;
    let mut left = Vec::new();
    // More tries, up to three times as many, until one lands mid-registration.
    for attempt in 0..3 * TRIES {
        if attempt >= TRIES && before_entry > 0 {
            break;
        }
        tries += 1;
        let id = unique_id("regkill");
        // What earlier tries left is reported there, not taken for this one.
        let earlier = pin_dir_names(&containers);
        let bundle = Bundle::new(&rt, &id, &["sleep", "1000"]);
        let stderr = tempfile::tempfile().expect("a temporary file");
        let mut create = KillOnDrop(
            rt.command()
                .args(["create", "--bundle", bundle.arg(), &id])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(stderr.try_clone().expect("dup"))
                .spawn()
                .expect("running lucid create"),
        );
        let deadline = lucid_tests::deadline(30);
        // Busy: the window between the directory and the map entry is short.
        let seen = loop {
            if let Some(name) = std::fs::read_dir(&containers)
                .into_iter()
                .flatten()
                .flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .find(|name| !earlier.contains(name))
            {
                // SAFETY: kill(2) has no memory effects; the pid is our unreaped child.
                unsafe { libc::kill(create.0.id() as i32, libc::SIGKILL) };
                break Some(name);
            }
            if create.0.try_wait().expect("waiting for create").is_some() {
                break None;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "try {attempt}: no pin directory appeared under {}",
                containers.display()
            );
        };
        let status = create.0.wait().expect("waiting for create");
        let Some(cgroup_id) = seen.filter(|_| status.signal() == Some(libc::SIGKILL)) else {
            // create finished (or failed) before the kill: not this attack.
            assert!(
                status.success(),
                "try {attempt}: create failed: {}",
                lucid_tests::read_file(&mut { stderr })
            );
            rt.ok(&["delete", "--force", &id]);
            continue;
        };
        caught += 1;
        let cgroup_id: u64 = cgroup_id.parse().expect("pin directories are cgroup ids");
        let registered = programs
            .registered()
            .expect("reading the registrations")
            .iter()
            .any(|r| r.cgroup_id == cgroup_id);
        if !registered {
            before_entry += 1;
        }
        let pins = pin_dir_names(&containers.join(cgroup_id.to_string()));
        if !pins.is_empty() && !registered {
            with_links_before_entry += 1;
        }
        let out = rt.lucid(&["delete", "--force", &id]);
        assert!(
            out.status.success(),
            "try {attempt}: delete --force failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let dir_left = containers.join(cgroup_id.to_string()).exists();
        let entry_left = programs
            .registered()
            .expect("reading the registrations")
            .iter()
            .any(|r| r.cgroup_id == cgroup_id);
        if dir_left || entry_left {
            left.push(format!(
                "try {attempt}: cgroup {cgroup_id} killed with pins {pins:?} and map entry {registered}; after delete --force: pin directory {}, map entry {entry_left}",
                if dir_left {
                    format!("{:?}", pin_dir_names(&containers.join(cgroup_id.to_string())))
                } else {
                    "gone".to_owned()
                },
            ));
        }
    }
    // A later container's whole life must not leave (or keep) any either.
    let id = unique_id("regkill-after");
    let bundle = Bundle::new(&rt, &id, &["sleep", "1000"]);
    rt.ok(&["create", "--bundle", bundle.arg(), &id]);
    rt.ok(&["delete", "--force", &id]);
    let after_cycle = pin_dir_names(&containers);
    let entries_after_cycle = programs.registered().expect("reading the registrations");
    eprintln!(
        "{caught} of {tries} creates killed with their pin directory made ({before_entry} before the map entry, {with_links_before_entry} of them with links pinned); {} left pins or entries",
        left.len()
    );
    assert!(
        caught > 0 && before_entry > 0,
        "no create was killed mid-registration ({caught} after the directory appeared, {before_entry} before the map entry): the attack never landed"
    );
    assert!(
        left.is_empty() && after_cycle.is_empty() && entries_after_cycle.is_empty(),
        "{} of {caught} killed creates left eBPF state after delete --force: {left:#?}\nafter a later create/delete: pin dirs {after_cycle:?}, map entries {:?}",
        left.len(),
        entries_after_cycle
            .iter()
            .map(|r| r.cgroup_id)
            .collect::<Vec<_>>()
    );
}
