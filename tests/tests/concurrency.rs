//! Many commands at once: parallel lifecycles of different containers, and
//! commands racing on one container. Every command on an ID holds the state
//! directory's `flock`; state is written by rename; a waiter that wakes on a
//! directory `delete` removed finds no container (or the new one a racing
//! `create` made), never a stale one. Needs root.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use lucid_tests::{cgroup_path, leftovers, unique_id, Bundle, Runtime};
use serde_json::Value;

/// A bundle of its own for one container (config.json with the container's
/// cgroup path), sharing the read-only busybox rootfs of `base`.
struct SharedBundle {
    dir: tempfile::TempDir,
}

impl SharedBundle {
    fn new(base: &Bundle, id: &str, args: &[&str]) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("lucid-bundle-")
            .tempdir()
            .expect("making a bundle");
        let mut config = base.config.clone();
        assert_eq!(
            config["root"]["readonly"], true,
            "containers share this rootfs only read-only"
        );
        config["root"]["path"] = Value::String(base.rootfs().to_string_lossy().into_owned());
        config["process"]["args"] = serde_json::json!(args);
        config["linux"]["cgroupsPath"] = Value::String(cgroup_path(id));
        std::fs::write(
            dir.path().join("config.json"),
            serde_json::to_vec_pretty(&config).expect("a Value serializes"),
        )
        .expect("writing config.json");
        SharedBundle { dir }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn arg(&self) -> &str {
        self.path().to_str().expect("utf-8 temp path")
    }
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// The BPF pins of containers still registered under the runtime's pin root
/// (`<pin root>/v<N>/containers/<cgroup id>`). Fails the test when there is
/// no such directory to look in, or it cannot be read: the containers ran
/// with eBPF, so the current version's pins must be there.
fn registered_pins(rt: &Runtime) -> Vec<PathBuf> {
    let listing = |dir: &Path| -> Vec<PathBuf> {
        std::fs::read_dir(dir)
            .unwrap_or_else(|e| panic!("listing {} (eBPF pins expected): {e}", dir.display()))
            .map(|e| {
                e.unwrap_or_else(|e| panic!("listing {}: {e}", dir.display()))
                    .path()
            })
            .collect()
    };
    let current = rt
        .pin_root()
        .join(format!("v{}", lucid_ebpf::LAYOUT_VERSION));
    let mut found = Vec::new();
    let mut looked_in_current = false;
    for version in listing(rt.pin_root()) {
        let containers = version.join("containers");
        if version == current || containers.exists() {
            looked_in_current |= version == current;
            found.extend(listing(&containers));
        }
    }
    assert!(
        looked_in_current,
        "no eBPF pins of this version under {}: the containers ran without eBPF",
        rt.pin_root().display()
    );
    found
}

/// Create, start, exit, delete of one container, each step checked; the
/// container prints its ID into a file, which proves it ran.
fn lifecycle(rt: &Runtime, base: &Bundle, id: &str) -> Result<(), String> {
    let bundle = SharedBundle::new(base, id, &["echo", id]);
    let stdout_path = bundle.path().join("stdout");
    // Files, not pipes: the container inherits create's stdio and keeps it
    // until it exits, long after create returns.
    let stdout = File::create(&stdout_path).map_err(|e| e.to_string())?;
    let stderr = tempfile::tempfile().map_err(|e| e.to_string())?;
    let created = rt
        .command()
        .args(["create", "--bundle", bundle.arg(), id])
        .stdin(Stdio::null())
        .stdout(stdout)
        .stderr(stderr.try_clone().map_err(|e| e.to_string())?)
        .status()
        .map_err(|e| e.to_string())?;
    if !created.success() {
        let mut stderr = stderr;
        let mut message = String::new();
        use std::io::{Read, Seek};
        let _ = stderr.rewind();
        let _ = stderr.read_to_string(&mut message);
        return Err(format!("create {id} failed ({created}): {message}"));
    }
    let state = state_of(rt, id)?;
    if state["status"] != "created" || state["pid"].as_i64().unwrap_or(0) <= 0 {
        return Err(format!("{id} after create: {state}"));
    }
    let out = rt.lucid(&["start", id]);
    if !out.status.success() {
        return Err(format!(
            "start {id} failed ({}): {}",
            out.status,
            text(&out.stderr)
        ));
    }
    let deadline = lucid_tests::deadline(60);
    loop {
        let state = state_of(rt, id)?;
        if state["status"] == "stopped" {
            break;
        }
        if Instant::now() > deadline {
            return Err(format!("{id} never stopped: {state}"));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let printed = std::fs::read_to_string(&stdout_path).map_err(|e| e.to_string())?;
    if printed.trim() != id {
        return Err(format!("{id} printed {printed:?}, not its ID"));
    }
    let out = rt.lucid(&["delete", id]);
    if !out.status.success() {
        return Err(format!(
            "delete {id} failed ({}): {}",
            out.status,
            text(&out.stderr)
        ));
    }
    let out = rt.lucid(&["state", id]);
    if out.status.success() || !text(&out.stderr).contains("does not exist") {
        return Err(format!(
            "state {id} after delete: {}{}",
            text(&out.stdout),
            text(&out.stderr)
        ));
    }
    let left = leftovers(rt, id, bundle.path());
    if !left.is_empty() {
        return Err(format!("{id} left behind: {left:?}"));
    }
    Ok(())
}

fn state_of(rt: &Runtime, id: &str) -> Result<Value, String> {
    let out = rt.lucid(&["state", id]);
    if !out.status.success() {
        return Err(format!(
            "state {id} failed ({}): {}",
            out.status,
            text(&out.stderr)
        ));
    }
    serde_json::from_slice(&out.stdout)
        .map_err(|e| format!("state {id} printed no JSON ({e}): {}", text(&out.stdout)))
}

#[test]
fn fifty_parallel_lifecycles_account_for_every_container() {
    const CONTAINERS: usize = 50;
    let rt = Arc::new(Runtime::new());
    let base = Arc::new(Bundle::new(&rt, "base", &["true"]));
    let barrier = Arc::new(Barrier::new(CONTAINERS));
    let ids: Vec<String> = (0..CONTAINERS).map(|_| unique_id("par")).collect();
    let threads: Vec<_> = ids
        .iter()
        .cloned()
        .map(|id| {
            let (rt, base, barrier) = (rt.clone(), base.clone(), barrier.clone());
            std::thread::spawn(move || {
                barrier.wait();
                lifecycle(&rt, &base, &id)
            })
        })
        .collect();
    let failures: Vec<String> = threads
        .into_iter()
        .filter_map(|t| t.join().expect("a lifecycle thread panicked").err())
        .collect();
    assert!(
        failures.is_empty(),
        "{} of {CONTAINERS} lifecycles failed: {failures:#?}",
        failures.len()
    );
    // Every container was created, started, exited and deleted (checked in
    // each thread); nothing of any of them is left.
    assert_eq!(rt.ids(), Vec::<String>::new(), "state directories left");
    let left: Vec<String> = ids
        .iter()
        .flat_map(|id| leftovers(&rt, id, base.path()))
        .collect();
    assert!(left.is_empty(), "left behind: {left:#?}");
    assert_eq!(registered_pins(&rt), Vec::<PathBuf>::new(), "BPF pins left");
}

#[test]
fn create_of_one_id_from_many_callers_makes_exactly_one_container() {
    const CALLERS: usize = 12;
    let rt = Arc::new(Runtime::new());
    let id = unique_id("dup");
    let bundle = Arc::new(Bundle::new(&rt, &id, &["sleep", "30"]));
    let barrier = Arc::new(Barrier::new(CALLERS));
    let threads: Vec<_> = (0..CALLERS)
        .map(|_| {
            let (rt, bundle, barrier, id) =
                (rt.clone(), bundle.clone(), barrier.clone(), id.clone());
            std::thread::spawn(move || {
                barrier.wait();
                rt.lucid(&["create", "--bundle", bundle.arg(), &id])
            })
        })
        .collect();
    let outputs: Vec<Output> = threads
        .into_iter()
        .map(|t| t.join().expect("a create thread panicked"))
        .collect();
    let made = outputs.iter().filter(|o| o.status.success()).count();
    assert_eq!(made, 1, "{made} creates of {id} succeeded");
    for out in outputs.iter().filter(|o| !o.status.success()) {
        let stderr = text(&out.stderr);
        assert_eq!(
            stderr.trim(),
            format!("lucid: creating container {id}: container {id} already exists"),
            "a losing create failed unclearly"
        );
    }
    assert_eq!(rt.status(&id), "created");
    rt.ok(&["delete", &id]);
    let left = leftovers(&rt, &id, bundle.path());
    assert!(left.is_empty(), "left behind: {left:#?}");
}

/// The commands racing on one container (`create` gets the bundle too).
const RACERS: [&[&str]; 6] = [
    &["start"],
    &["delete"],
    &["kill", "KILL"],
    &["state"],
    &["delete", "--force"],
    &["create"],
];

/// Whether a failed command said clearly why, on one line: the container is
/// gone, exists already, or is in a status the command does not apply to.
fn clear_failure(id: &str, stderr: &str) -> bool {
    let stderr = stderr.trim();
    stderr.starts_with("lucid: ")
        && !stderr.contains('\n')
        && (stderr.ends_with(&format!("container {id} does not exist"))
            || stderr.ends_with(&format!("container {id} already exists"))
            || ["created", "running", "stopped", "creating"]
                .iter()
                .any(|status| stderr.contains(&format!("container {id} is {status}: "))))
}

#[test]
fn racing_commands_on_one_id_never_corrupt_its_state() {
    const ROUNDS: usize = 12;
    const THREADS: usize = 8;
    const OPS_PER_THREAD: usize = 3;
    let rt = Arc::new(Runtime::new());
    let mut problems = Vec::new();
    let mut outcomes = std::collections::BTreeMap::<String, (usize, usize)>::new();
    let mut state_reads = 0;
    for round in 0..ROUNDS {
        let id = unique_id("race");
        let bundle = Arc::new(Bundle::new(&rt, &id, &["sleep", "30"]));
        rt.ok(&["create", "--bundle", bundle.arg(), &id]);
        let barrier = Arc::new(Barrier::new(THREADS + 1));
        let done = Arc::new(AtomicBool::new(false));
        let reads = Arc::new(AtomicUsize::new(0));
        // Reads state.json as the exporter and `state` do (no lock): it must
        // always be a whole file.
        let reader = {
            let (rt, barrier, done, reads, id) = (
                rt.clone(),
                barrier.clone(),
                done.clone(),
                reads.clone(),
                id.clone(),
            );
            std::thread::spawn(move || -> Vec<String> {
                let path = rt.root().join(&id).join("state.json");
                let mut bad = Vec::new();
                barrier.wait();
                while !done.load(Ordering::Relaxed) {
                    if let Ok(bytes) = std::fs::read(&path) {
                        reads.fetch_add(1, Ordering::Relaxed);
                        match serde_json::from_slice::<Value>(&bytes) {
                            Ok(v) if v["id"] == id.as_str() => {}
                            Ok(v) => bad.push(format!("state.json of {id} names {}", v["id"])),
                            Err(e) => bad.push(format!("state.json of {id} does not parse: {e}")),
                        }
                    }
                    std::thread::yield_now();
                }
                bad
            })
        };
        let threads: Vec<_> = (0..THREADS)
            .map(|t| {
                let (rt, bundle, barrier, id) =
                    (rt.clone(), bundle.clone(), barrier.clone(), id.clone());
                std::thread::spawn(move || {
                    barrier.wait();
                    // Each thread a different rotation through the commands, so
                    // every pair meets in some order over the rounds.
                    (0..OPS_PER_THREAD)
                        .map(|k| {
                            let op = RACERS[(t + k * 5 + round) % RACERS.len()];
                            let mut args: Vec<&str> = op.to_vec();
                            if op == ["create"] {
                                args.extend(["--bundle", bundle.arg()]);
                            }
                            // Flags before the ID, a signal after it.
                            let at = args
                                .iter()
                                .rposition(|a| a.starts_with("--"))
                                .map_or(1, |i| i + 1);
                            let at = if op == ["create"] { args.len() } else { at };
                            args.insert(at, &id);
                            let out = rt.lucid(&args);
                            (op.join(" "), out)
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        for t in threads {
            for (op, out) in t.join().expect("a racing thread panicked") {
                let entry = outcomes.entry(op.clone()).or_default();
                let stderr = text(&out.stderr);
                if out.status.success() {
                    entry.0 += 1;
                    if op == "state" {
                        if let Err(e) = serde_json::from_slice::<Value>(&out.stdout) {
                            problems.push(format!("state of {id} printed no JSON: {e}"));
                        }
                    }
                } else {
                    entry.1 += 1;
                    if out.status.code() != Some(1) || !clear_failure(&id, &stderr) {
                        problems.push(format!("{op} {id}: {}: {stderr}", out.status));
                    }
                }
            }
        }
        done.store(true, Ordering::Relaxed);
        problems.extend(reader.join().expect("the reader panicked"));
        state_reads += reads.load(Ordering::Relaxed);
        // Whatever won, what is left is consistent and fully removable.
        let out = rt.lucid(&["state", &id]);
        if out.status.success() {
            match serde_json::from_slice::<Value>(&out.stdout) {
                Ok(state) => {
                    let status = state["status"].as_str().unwrap_or_default().to_owned();
                    let pid = state["pid"].as_i64().unwrap_or(0) as i32;
                    let alive = pid > 0
                        // SAFETY: signal 0 only checks that the process exists.
                        && unsafe { libc::kill(pid, 0) } == 0;
                    let consistent = match status.as_str() {
                        "created" | "running" => alive,
                        "stopped" => pid == 0,
                        _ => false,
                    };
                    if !consistent {
                        problems.push(format!("{id} ended inconsistent: {state}"));
                    }
                }
                Err(e) => problems.push(format!("final state of {id} is not JSON: {e}")),
            }
            let out = rt.lucid(&["delete", "--force", &id]);
            if !out.status.success() {
                problems.push(format!("delete --force {id}: {}", text(&out.stderr)));
            }
        } else if !text(&out.stderr).contains("does not exist") {
            problems.push(format!("final state of {id}: {}", text(&out.stderr)));
        }
        problems.extend(leftovers(&rt, &id, bundle.path()));
    }
    eprintln!("outcomes (succeeded, failed) over {ROUNDS} rounds: {outcomes:?}; {state_reads} unlocked state.json reads");
    assert!(problems.is_empty(), "{problems:#?}");
    assert!(state_reads > 0, "the reader never saw a state file");
    for op in RACERS {
        let (ok, _) = outcomes[&op.join(" ")];
        assert!(
            ok > 0,
            "`{}` never succeeded: the race did not exercise it",
            op.join(" ")
        );
    }
    assert_eq!(rt.ids(), Vec::<String>::new(), "state directories left");
    assert_eq!(registered_pins(&rt), Vec::<PathBuf>::new(), "BPF pins left");
}
