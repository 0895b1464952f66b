//! The state root against random entries: files, directories, links inside
//! and outside the root and to /dev/zero, FIFOs, sockets, sparse huge files,
//! directories without a state, state files of garbage or naming another
//! container, beside good ones. For each seed, `lucid list`, `lucid state ID`
//! and `lucid delete --force ID` on every entry and one exporter scrape must
//! end in bounded time (a hang fails), the exporter's memory stays bounded,
//! it serves the good containers and nothing else, and nothing outside the
//! root is touched.
//!
//! The seeds are printed; `LUCID_TEST_SEED=N` runs that one seed alone.
//! Root is needed (the exporter pins eBPF programs); everything made is
//! removed by pid and path, also on failure.

use std::collections::BTreeMap;
use std::io::Write;
use std::os::unix::fs::{symlink, MetadataExt};
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::{Duration, Instant};

use lucid_tests::prometheus::{http_get, Exporter};
use lucid_tests::Runtime;
use serde_json::Value;

/// Seeds per run when none is given (about 3 s each here).
const SEEDS: usize = 6;
/// Entries per seed.
const ENTRIES: usize = 20;
/// Deadline of one command: far past what any takes, short of a hang.
const COMMAND_SECS: u64 = 20;

/// splitmix64: small, and the same sequence for a seed everywhere.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
}

/// What an entry of the root is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// A directory with a state lucid could have written.
    Good,
    /// A namespace directory holding a good container (the exporter's
    /// containerd layout; `lucid` sees no container there).
    Namespace,
    /// A directory without a state.
    EmptyDir,
    /// A regular file, a FIFO or a socket where a directory would be.
    TopFile,
    TopFifo,
    TopSocket,
    /// Links where a directory would be: to a directory inside the root, to
    /// one outside holding a good state, to /dev/zero.
    LinkInside,
    LinkOutside,
    LinkZero,
    /// state.json as a link to /dev/zero or to a good state outside, a FIFO,
    /// a socket, a directory, a sparse 1 TiB file.
    StateZero,
    StateOutside,
    StateFifo,
    StateSocket,
    StateDir,
    StateSparse,
    /// state.json of random bytes, of a state naming another container (up
    /// to 100 KB of ID), of JSON cut short.
    StateGarbage,
    StateMismatch,
    StateTruncated,
}

const KINDS: &[Kind] = &[
    Kind::Good,
    Kind::Namespace,
    Kind::EmptyDir,
    Kind::TopFile,
    Kind::TopFifo,
    Kind::TopSocket,
    Kind::LinkInside,
    Kind::LinkOutside,
    Kind::LinkZero,
    Kind::StateZero,
    Kind::StateOutside,
    Kind::StateFifo,
    Kind::StateSocket,
    Kind::StateDir,
    Kind::StateSparse,
    Kind::StateGarbage,
    Kind::StateMismatch,
    Kind::StateTruncated,
];

/// A state as lucid writes it, for a container with no process (above any
/// pid_max) and no cgroup, so that `delete --force` has nothing to kill.
fn good_state(id: &str) -> Value {
    serde_json::json!({
        "ociVersion": "1.0.2",
        "id": id,
        "pid": i32::MAX,
        "status": "running",
        "bundle": "/nonexistent/bundle",
        "rootfs": "/nonexistent/bundle/rootfs",
        "created": "2026-01-01T00:00:00Z",
        "annotations": {"lucid.name": format!("name-{id}")},
        "config": {"ociVersion": "1.0.2"},
    })
}

fn fifo(path: &Path) {
    nix::unistd::mkfifo(path, nix::sys::stat::Mode::from_bits_truncate(0o600))
        .unwrap_or_else(|e| panic!("mkfifo {}: {e}", path.display()));
}

fn socket(path: &Path) {
    // The socket file stays after the listener is closed.
    std::os::unix::net::UnixListener::bind(path)
        .unwrap_or_else(|e| panic!("binding {}: {e}", path.display()));
}

fn write(path: &Path, bytes: &[u8]) {
    std::fs::write(path, bytes).unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
}

/// What is outside the root, which no command may change: its files' and
/// directories' types, sizes, times and contents.
fn snapshot(dir: &Path) -> BTreeMap<PathBuf, (u32, u64, i64, i64, Vec<u8>)> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d)
            .expect("listing outside the root")
            .flatten()
        {
            let path = entry.path();
            let meta = std::fs::symlink_metadata(&path).expect("stat outside the root");
            let text = if meta.is_file() {
                std::fs::read(&path).expect("reading outside the root")
            } else {
                Vec::new()
            };
            if meta.is_dir() {
                stack.push(path.clone());
            }
            out.insert(
                path,
                (
                    meta.mode(),
                    meta.len(),
                    meta.mtime(),
                    meta.mtime_nsec(),
                    text,
                ),
            );
        }
    }
    out
}

/// Makes the entry `name` of kind `kind` under `root`; returns the IDs of
/// the good containers it holds for the exporter (`ID` or `NAMESPACE/ID`).
fn make(root: &Path, outside: &Path, name: &str, kind: Kind, rng: &mut Rng) -> Vec<String> {
    let dir = root.join(name);
    let state = dir.join("state.json");
    let mkdir = || std::fs::create_dir(&dir).expect("a state directory");
    match kind {
        Kind::Good => {
            mkdir();
            write(
                &state,
                &serde_json::to_vec(&good_state(name)).expect("JSON"),
            );
            return vec![name.to_owned()];
        }
        Kind::Namespace => {
            let inner = dir.join("inner");
            std::fs::create_dir_all(&inner).expect("a namespace directory");
            write(
                &inner.join("state.json"),
                &serde_json::to_vec(&good_state("inner")).expect("JSON"),
            );
            return vec!["inner".to_owned()];
        }
        Kind::EmptyDir => mkdir(),
        Kind::TopFile => write(&dir, &rng.bytes(100)),
        Kind::TopFifo => fifo(&dir),
        Kind::TopSocket => socket(&dir),
        Kind::LinkInside => {
            let target = root.join(format!("{name}-target"));
            std::fs::create_dir(&target).expect("a directory");
            write(
                &target.join("state.json"),
                &serde_json::to_vec(&good_state(name)).expect("JSON"),
            );
            symlink(&target, &dir).expect("a link");
        }
        Kind::LinkOutside => {
            let target = outside.join(name);
            std::fs::create_dir(&target).expect("a directory");
            write(
                &target.join("state.json"),
                &serde_json::to_vec(&good_state(name)).expect("JSON"),
            );
            symlink(&target, &dir).expect("a link");
        }
        Kind::LinkZero => symlink("/dev/zero", &dir).expect("a link"),
        Kind::StateZero => {
            mkdir();
            symlink("/dev/zero", &state).expect("a link");
        }
        Kind::StateOutside => {
            mkdir();
            let target = outside.join(format!("{name}.json"));
            write(
                &target,
                &serde_json::to_vec(&good_state(name)).expect("JSON"),
            );
            symlink(&target, &state).expect("a link");
        }
        Kind::StateFifo => {
            mkdir();
            fifo(&state);
        }
        Kind::StateSocket => {
            mkdir();
            socket(&state);
        }
        Kind::StateDir => {
            mkdir();
            std::fs::create_dir(&state).expect("a directory");
        }
        Kind::StateSparse => {
            mkdir();
            std::fs::File::create(&state)
                .and_then(|f| f.set_len(1 << 40))
                .expect("a sparse file");
        }
        Kind::StateGarbage => {
            mkdir();
            let n = rng.below(64 << 10) as usize;
            write(&state, &rng.bytes(n));
        }
        Kind::StateMismatch => {
            mkdir();
            let n = 1 + rng.below(100_000) as usize;
            let id: String = (0..n)
                .map(|_| (b'a' + rng.below(26) as u8) as char)
                .collect();
            write(&state, &serde_json::to_vec(&good_state(&id)).expect("JSON"));
        }
        Kind::StateTruncated => {
            mkdir();
            let text = serde_json::to_vec(&good_state(name)).expect("JSON");
            let cut = rng.below(text.len() as u64 - 1) as usize;
            write(&state, &text[..cut]);
        }
    }
    Vec::new()
}

/// Runs `lucid ARGS`, killing it (by pid) and failing the test if it has not
/// ended within [`COMMAND_SECS`].
fn bounded(rt: &Runtime, args: &[&str], seed: u64) -> Output {
    rt.lucid_within(COMMAND_SECS, args).unwrap_or_else(|| {
        panic!("seed {seed}: lucid {args:?} did not end within {COMMAND_SECS} s")
    })
}

/// The exporter's peak resident memory so far (VmHWM), in KiB.
fn peak_rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_else(|e| panic!("the exporter (pid {pid}) is gone: {e}"))
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM in /proc/PID/status")
}

/// One exporter scrape of the root, within a deadline; checks what it serves.
fn scrape(rt: &Runtime, good: &[String], seed: u64) {
    let state = tempfile::tempdir().expect("a state dir");
    let mut exporter = Exporter::start(rt.root(), rt.pin_root(), state.path(), &[]);
    let port = exporter.port;
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(http_get(port, "/metrics"));
    });
    let secs = COMMAND_SECS * u64::from(lucid_tests::time_scale());
    let (status, text) = rx
        .recv_timeout(Duration::from_secs(secs))
        .unwrap_or_else(|_| {
            panic!(
                "seed {seed}: no answer to /metrics within {secs} s:\n{}",
                exporter.log()
            )
        })
        .expect("GET /metrics");
    assert_eq!(status, 200, "seed {seed}: {text}");
    let served: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("container_start_time_seconds{"))
        .filter_map(|l| l.split("container_id=\"").nth(1)?.split('"').next())
        .collect();
    let mut expected: Vec<&str> = good.iter().map(String::as_str).collect();
    expected.sort_unstable();
    let mut served_sorted = served.clone();
    served_sorted.sort_unstable();
    assert_eq!(
        served_sorted,
        expected,
        "seed {seed}: the exporter served other containers than the good ones:\n{}",
        exporter.log()
    );
    assert!(
        text.lines().all(|l| l.len() < 4096),
        "seed {seed}: a series longer than 4 KiB was served"
    );
    let rss = peak_rss_kib(exporter.process.pid());
    assert!(
        rss < 64 * 1024,
        "seed {seed}: the exporter's peak RSS reached {rss} KiB"
    );
    exporter.process.assert_running();
}

fn run_seed(seed: u64) {
    let started = Instant::now();
    let mut rng = Rng(seed);
    let rt = Runtime::new();
    let outside = tempfile::Builder::new()
        .prefix("lucid-outside-")
        .tempdir()
        .expect("a directory outside the root");
    let mut entries = Vec::new();
    let mut good = Vec::new();
    for i in 0..ENTRIES {
        let kind = KINDS[rng.below(KINDS.len() as u64) as usize];
        // A namespace directory's container is `inner`: one per root.
        if kind == Kind::Namespace && entries.iter().any(|(_, k)| *k == Kind::Namespace) {
            continue;
        }
        let name = format!("e{i}");
        good.extend(make(rt.root(), outside.path(), &name, kind, &mut rng));
        entries.push((name, kind));
    }
    println!("seed {seed}: {entries:?}");
    let before = snapshot(outside.path());

    scrape(&rt, &good, seed);
    let list = bounded(&rt, &["list", "--format", "json"], seed);
    assert!(
        list.status.success(),
        "seed {seed}: lucid list failed: {}",
        String::from_utf8_lossy(&list.stderr)
    );
    let listed: Vec<Value> = serde_json::from_slice(&list.stdout).unwrap_or_default();
    let mut listed: Vec<&str> = listed.iter().filter_map(|s| s["id"].as_str()).collect();
    listed.sort_unstable();
    let mut top_good: Vec<&str> = entries
        .iter()
        .filter(|(_, k)| *k == Kind::Good)
        .map(|(n, _)| n.as_str())
        .collect();
    top_good.sort_unstable();
    assert_eq!(listed, top_good, "seed {seed}: lucid list");
    for (name, kind) in &entries {
        let state = bounded(&rt, &["state", name], seed);
        assert_eq!(
            state.status.success(),
            *kind == Kind::Good,
            "seed {seed}: lucid state {name} ({kind:?}): {}",
            String::from_utf8_lossy(&state.stderr)
        );
        bounded(&rt, &["delete", "--force", name], seed);
        // As runc: --force removes a container, and a directory with no state
        // or a corrupt one; it refuses what lucid never makes.
        let removed = matches!(
            kind,
            Kind::Good
                | Kind::EmptyDir
                | Kind::StateGarbage
                | Kind::StateMismatch
                | Kind::StateTruncated
        );
        if removed {
            assert!(
                std::fs::symlink_metadata(rt.root().join(name)).is_err(),
                "seed {seed}: delete --force left {name} ({kind:?})"
            );
        }
    }
    assert_eq!(
        before,
        snapshot(outside.path()),
        "seed {seed}: something outside the root changed"
    );
    println!("seed {seed}: {:?}", started.elapsed());
}

#[test]
fn random_state_root_entries_never_hang_bloat_or_reach_outside_the_root() {
    lucid_tests::require_root();
    let seeds: Vec<u64> = match std::env::var("LUCID_TEST_SEED") {
        Ok(seed) => vec![seed.parse().expect("LUCID_TEST_SEED is a number")],
        Err(_) => {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos() as u64);
            let mut rng = Rng(now ^ u64::from(std::process::id()));
            (0..SEEDS).map(|_| rng.next()).collect()
        }
    };
    println!("seeds: {seeds:?} (LUCID_TEST_SEED=N runs one)");
    for seed in seeds {
        run_seed(seed);
    }
    let _ = std::io::stdout().flush();
}
