//! Shared support for the integration tests: a busybox bundle, a private
//! state root, the `lucid` binary, and checks that nothing is left behind.
//!
//! Every test here runs real containers and needs root; it says so and fails
//! (never skips) when it is not root. Everything a test makes is removed by
//! `Drop`, also when the test fails, because the machine is reused.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};

use serde_json::Value;

pub mod clients;
pub mod otlp;
pub mod otlp_grpc;
pub mod taskstats;
pub mod tls;

/// The cgroup parent every test container lives under, so leaks are easy to find.
pub const CGROUP_PARENT: &str = "/lucid-test";

/// Fails the test unless it runs as root with the tools it needs.
pub fn require_root() {
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    assert_eq!(
        euid, 0,
        "this test runs real containers and needs root (run it through `cargo xtask ci` or sudo)"
    );
    assert!(
        Path::new(BUSYBOX).exists(),
        "{BUSYBOX} is missing: install Debian's busybox-static (cargo xtask setup does)"
    );
}

const BUSYBOX: &str = "/bin/busybox";

/// The `lucid` binary under test: `$LUCID_BIN`, or the one built next to this test.
pub fn lucid_bin() -> PathBuf {
    if let Some(path) = std::env::var_os("LUCID_BIN") {
        return PathBuf::from(path);
    }
    let exe = std::env::current_exe().expect("the test knows its own path");
    // target/<profile>/deps/<test> → target/<profile>/lucid
    let bin = exe
        .parent()
        .and_then(Path::parent)
        .map(|dir| dir.join("lucid"))
        .expect("the test binary sits in target/<profile>/deps");
    assert!(
        bin.exists(),
        "{} does not exist: build it first (cargo build -p lucid), or set LUCID_BIN",
        bin.display()
    );
    bin
}

/// The environment variable that stretches the tests' waiting deadlines, for
/// slow hosts such as emulated guests (`cargo xtask vm` sets it): a factor,
/// 1 by default. Deadlines bound waits for things to happen; no test asserts
/// that anything is fast.
pub const TIME_SCALE_ENV: &str = "LUCID_TEST_TIME_SCALE";

/// The factor of [`TIME_SCALE_ENV`].
pub fn time_scale() -> u32 {
    std::env::var(TIME_SCALE_ENV)
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|&n| n > 0)
        .unwrap_or(1)
}

/// The instant `secs` seconds from now, stretched by [`time_scale`].
pub fn deadline(secs: u64) -> std::time::Instant {
    std::time::Instant::now() + std::time::Duration::from_secs(secs * u64::from(time_scale()))
}

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// A container ID unique to this test process.
pub fn unique_id(prefix: &str) -> String {
    format!(
        "{prefix}-{}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

/// A state root of its own, and a BPF pin root of its own (so tests never
/// touch the pins of a real exporter); dropping it force-deletes every
/// container in it, then removes the pins.
pub struct Runtime {
    root: tempfile::TempDir,
    pin_root: PathBuf,
    prefix: Vec<String>,
    bin: Option<PathBuf>,
    env: Vec<(String, String)>,
}

impl Default for Runtime {
    fn default() -> Self {
        Self::new()
    }
}

impl Runtime {
    /// A new, empty state root.
    pub fn new() -> Self {
        require_root();
        Runtime {
            root: tempfile::Builder::new()
                .prefix("lucid-root-")
                .tempdir()
                .expect("making a state root"),
            pin_root: PathBuf::from(format!(
                "/sys/fs/bpf/lucid-test-rt-{}-{}",
                std::process::id(),
                COUNTER.fetch_add(1, Ordering::Relaxed)
            )),
            prefix: Vec::new(),
            bin: None,
            env: Vec::new(),
        }
    }

    /// Runs `bin` instead of [`lucid_bin`] (a copy a test may see attacked).
    pub fn set_bin(&mut self, bin: &Path) {
        self.bin = Some(bin.to_path_buf());
    }

    /// Sets an environment variable for every `lucid` command.
    pub fn set_env(&mut self, key: &str, value: &str) {
        self.env.push((key.to_owned(), value.to_owned()));
    }

    /// A runtime whose every `lucid` command runs inside `view` (a pure
    /// cgroup v2 host as lucid sees it). Drop it before the view.
    pub fn in_view(view: &V2View) -> Self {
        let mut rt = Self::new();
        rt.prefix = view.prefix();
        rt
    }

    /// Points `LUCID_EBPF_PIN_ROOT` elsewhere (a path where eBPF cannot work,
    /// to test running without it).
    pub fn set_pin_root(&mut self, pin_root: &Path) {
        self.pin_root = pin_root.to_path_buf();
    }

    /// The BPF pin root this runtime's containers use (`LUCID_EBPF_PIN_ROOT`).
    pub fn pin_root(&self) -> &Path {
        &self.pin_root
    }

    /// The state root.
    pub fn root(&self) -> &Path {
        self.root.path()
    }

    /// A `lucid` command with `--root` set.
    pub fn command(&self) -> Command {
        let bin = self.bin.clone().unwrap_or_else(lucid_bin);
        let mut command = match self.prefix.split_first() {
            Some((program, args)) => {
                let mut c = Command::new(program);
                c.args(args).arg(bin);
                c
            }
            None => Command::new(bin),
        };
        command.arg("--root").arg(self.root());
        command.env("LUCID_EBPF_PIN_ROOT", &self.pin_root);
        command.envs(self.env.iter().map(|(k, v)| (k, v)));
        command
    }

    /// Runs `lucid ARGS` and returns its output (stdin closed).
    ///
    /// Output goes through files, not pipes: a container's process inherits
    /// them, and a pipe would stay open (and a reader blocked) until the
    /// container exits.
    pub fn lucid(&self, args: &[&str]) -> Output {
        let mut stdout = tempfile::tempfile().expect("a temporary file");
        let mut stderr = tempfile::tempfile().expect("a temporary file");
        let status = self
            .command()
            .args(args)
            .stdin(Stdio::null())
            .stdout(stdout.try_clone().expect("duplicating a descriptor"))
            .stderr(stderr.try_clone().expect("duplicating a descriptor"))
            .status()
            .expect("running lucid");
        Output {
            status,
            stdout: read_all(&mut stdout),
            stderr: read_all(&mut stderr),
        }
    }

    /// Runs `lucid ARGS` as [`Runtime::lucid`] does, but kills it if it has
    /// not ended within `secs` (stretched by [`time_scale`]): `None` then.
    /// For commands that must not hang, whatever they are given.
    pub fn lucid_within(&self, secs: u64, args: &[&str]) -> Option<Output> {
        let mut stdout = tempfile::tempfile().expect("a temporary file");
        let mut stderr = tempfile::tempfile().expect("a temporary file");
        let mut child = self
            .command()
            .args(args)
            .stdin(Stdio::null())
            .stdout(stdout.try_clone().expect("duplicating a descriptor"))
            .stderr(stderr.try_clone().expect("duplicating a descriptor"))
            .spawn()
            .expect("running lucid");
        let until = deadline(secs);
        let status = loop {
            if let Some(status) = child.try_wait().expect("waiting for lucid") {
                break status;
            }
            if std::time::Instant::now() >= until {
                let _ = child.kill();
                let _ = child.wait();
                return None;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        };
        Some(Output {
            status,
            stdout: read_all(&mut stdout),
            stderr: read_all(&mut stderr),
        })
    }

    /// Runs `lucid ARGS`, failing the test unless it succeeds; returns stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.lucid(args);
        assert!(
            out.status.success(),
            "lucid {args:?} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).expect("lucid prints UTF-8")
    }

    /// `lucid state ID` as JSON.
    pub fn state(&self, id: &str) -> Value {
        serde_json::from_str(&self.ok(&["state", id])).expect("state is JSON")
    }

    /// The container's status.
    pub fn status(&self, id: &str) -> String {
        self.state(id)["status"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    /// Waits (up to 10 s) until the container reaches `status`.
    pub fn wait_status(&self, id: &str, status: &str) {
        let deadline = deadline(10);
        loop {
            let now = self.status(id);
            if now == status {
                return;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "container {id} stayed {now}, never became {status}"
            );
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
    }

    /// The IDs of the containers in this root (not the span spool, `@spool`:
    /// `@` is never in a container ID).
    pub fn ids(&self) -> Vec<String> {
        std::fs::read_dir(self.root())
            .map(|entries| {
                entries
                    .flatten()
                    .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
                    .filter_map(|e| e.file_name().into_string().ok())
                    .filter(|name| !name.contains('@'))
                    .collect()
            })
            .unwrap_or_default()
    }
}

impl Drop for Runtime {
    fn drop(&mut self) {
        // Clean up with the build's own binary: a test's may be broken.
        self.bin = None;
        for id in self.ids() {
            let _ = self.lucid(&["delete", "--force", &id]);
        }
        if self.pin_root.exists() {
            if let Err(e) = lucid_ebpf::remove_pin_root(&self.pin_root) {
                eprintln!("removing {}: {e}", self.pin_root.display());
            }
        }
    }
}

fn read_all(file: &mut std::fs::File) -> Vec<u8> {
    use std::io::{Read, Seek};
    let mut bytes = Vec::new();
    file.rewind().expect("rewinding a temporary file");
    file.read_to_end(&mut bytes)
        .expect("reading a temporary file");
    bytes
}

/// A bundle: a busybox rootfs and a config.json made by `lucid spec`,
/// adjusted to run without a terminal in a test cgroup.
pub struct Bundle {
    dir: tempfile::TempDir,
    /// The configuration, written by [`Bundle::write`] (and by `new`).
    pub config: Value,
}

impl Bundle {
    /// A bundle whose container runs `args`, with the cgroup path of `id`.
    pub fn new(rt: &Runtime, id: &str, args: &[&str]) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("lucid-bundle-")
            .tempdir()
            .expect("making a bundle");
        // A container in a user namespace is not the host's root: it must be
        // able to reach its rootfs.
        std::fs::set_permissions(
            dir.path(),
            std::os::unix::fs::PermissionsExt::from_mode(0o755),
        )
        .expect("opening up the bundle");
        make_rootfs(&dir.path().join("rootfs"));
        rt.ok(&[
            "spec",
            "--bundle",
            dir.path().to_str().expect("utf-8 temp path"),
        ]);
        let text = std::fs::read_to_string(dir.path().join("config.json"))
            .expect("spec wrote config.json");
        let mut config: Value = serde_json::from_str(&text).expect("config.json is JSON");
        config["process"]["terminal"] = Value::Bool(false);
        config["process"]["args"] = serde_json::json!(args);
        config["linux"]["cgroupsPath"] = Value::String(cgroup_path(id));
        let bundle = Bundle { dir, config };
        bundle.write();
        bundle
    }

    /// The bundle directory.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// The bundle directory as a string argument.
    pub fn arg(&self) -> &str {
        self.path().to_str().expect("utf-8 temp path")
    }

    /// The rootfs directory.
    pub fn rootfs(&self) -> PathBuf {
        self.path().join("rootfs")
    }

    /// Writes `config` to config.json.
    pub fn write(&self) {
        std::fs::write(
            self.path().join("config.json"),
            serde_json::to_vec_pretty(&self.config).expect("a Value serializes"),
        )
        .expect("writing config.json");
    }

    /// Changes the configuration and writes it.
    pub fn edit(&mut self, f: impl FnOnce(&mut Value)) {
        f(&mut self.config);
        self.write();
    }
}

/// The cgroup path test containers get.
pub fn cgroup_path(id: &str) -> String {
    format!("{CGROUP_PARENT}/{id}")
}

/// Makes a busybox rootfs: the static binary, a link per applet, the usual
/// directories and an /etc/passwd and /etc/group.
pub fn make_rootfs(rootfs: &Path) {
    let bin = rootfs.join("bin");
    std::fs::create_dir_all(&bin).expect("making rootfs/bin");
    std::fs::copy(BUSYBOX, bin.join("busybox")).expect("copying busybox");
    let list = Command::new(BUSYBOX)
        .arg("--list")
        .output()
        .expect("busybox --list");
    for applet in String::from_utf8_lossy(&list.stdout).lines() {
        let link = bin.join(applet);
        if !link.exists() {
            std::os::unix::fs::symlink("busybox", &link).expect("linking an applet");
        }
    }
    for dir in ["proc", "sys", "dev", "etc", "tmp", "root", "home/user"] {
        std::fs::create_dir_all(rootfs.join(dir)).expect("making a rootfs directory");
    }
    std::fs::write(
        rootfs.join("etc/passwd"),
        "root:x:0:0:root:/root:/bin/sh\nuser:x:1000:1000:user:/home/user:/bin/sh\n",
    )
    .expect("writing /etc/passwd");
    std::fs::write(rootfs.join("etc/group"), "root:x:0:\nuser:x:1000:\n")
        .expect("writing /etc/group");
}

/// Runs the bundle's container in the foreground with `lucid run` and
/// returns what it printed; fails the test on a non-zero exit.
pub fn run_output(rt: &Runtime, bundle: &Bundle, id: &str) -> String {
    let out = rt.lucid(&["run", "--bundle", bundle.arg(), id]);
    assert!(
        out.status.success(),
        "lucid run {id} failed ({}): {}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("the container printed UTF-8")
}

/// What a container may leave behind, checked after it is gone: its state
/// directory, its cgroup in every hierarchy, a process in that cgroup, a
/// mount of its bundle on the host. Returns what was found (empty if clean).
pub fn leftovers(rt: &Runtime, id: &str, bundle: &Path) -> Vec<String> {
    let mut found = Vec::new();
    if rt.root().join(id).exists() {
        found.push(format!("state directory {}", rt.root().join(id).display()));
    }
    let cgroup = cgroup_path(id);
    if let Ok(entries) = std::fs::read_dir("/sys/fs/cgroup") {
        for entry in entries.flatten() {
            let dir = entry.path().join(cgroup.trim_start_matches('/'));
            if dir.exists() {
                found.push(format!("cgroup {}", dir.display()));
            }
        }
    }
    if let Ok(entries) = std::fs::read_dir("/proc") {
        for entry in entries.flatten() {
            let path = entry.path().join("cgroup");
            if let Ok(text) = std::fs::read_to_string(&path) {
                if text.lines().any(|l| l.ends_with(&cgroup)) {
                    found.push(format!("process {}", entry.file_name().to_string_lossy()));
                }
            }
        }
    }
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let bundle = bundle.to_string_lossy();
    for line in mounts.lines().filter(|l| l.contains(bundle.as_ref())) {
        found.push(format!("mount {line}"));
    }
    found
}

/// Fails the test if the container left anything behind.
pub fn assert_nothing_left(rt: &Runtime, id: &str, bundle: &Path) {
    let found = leftovers(rt, id, bundle);
    assert!(found.is_empty(), "container {id} left behind: {found:#?}");
}

/// Whether the host has a cgroup v1 devices controller (a hybrid host); on a
/// pure v2 host only lucid's eBPF filter can enforce device rules.
pub fn host_has_v1_devices() -> bool {
    Path::new("/sys/fs/cgroup/devices/devices.allow").exists()
}

/// The host's cgroup v2 hierarchy as the host sees it.
pub fn host_v2_root() -> PathBuf {
    let unified = Path::new("/sys/fs/cgroup/unified");
    if unified.join("cgroup.procs").exists() {
        unified.to_path_buf()
    } else {
        PathBuf::from("/sys/fs/cgroup")
    }
}

/// A persistent private mount namespace in which /sys/fs/cgroup is the
/// host's cgroup v2 hierarchy and nothing else: a pure v2 host, as lucid sees
/// it, on a hybrid machine. The cgroups made in it are the host's v2 ones
/// (under [`host_v2_root`]). Dropping it unmounts everything it made.
pub struct V2View {
    dir: tempfile::TempDir,
}

fn must(command: &mut Command) {
    let out = command.output().expect("running a set-up command");
    assert!(
        out.status.success(),
        "{command:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

impl V2View {
    /// Makes the namespace.
    pub fn new() -> Self {
        require_root();
        let dir = tempfile::Builder::new()
            .prefix("lucid-v2view-")
            .tempdir()
            .expect("a temporary directory");
        let ns = dir.path().join("mnt");
        // A namespace file can only be bound on a private mount.
        must(
            Command::new("mount")
                .arg("--bind")
                .arg(dir.path())
                .arg(dir.path()),
        );
        let view = V2View { dir };
        must(
            Command::new("mount")
                .arg("--make-private")
                .arg(view.dir.path()),
        );
        std::fs::write(&ns, "").expect("making the namespace file");
        must(
            Command::new("unshare")
                .arg(format!("--mount={}", ns.display()))
                .args([
                    "--propagation",
                    "private",
                    "sh",
                    "-c",
                    // The v1 mounts must go, not just be covered: lucid reads mountinfo. On a
                    // pure v2 host the view is the host's own hierarchy already.
                    "[ -e /sys/fs/cgroup/cgroup.controllers ] \
                     || { umount -R /sys/fs/cgroup && mount -t cgroup2 cgroup2 /sys/fs/cgroup; }",
                ]),
        );
        view
    }

    /// The command prefix that runs a program inside the namespace.
    pub fn prefix(&self) -> Vec<String> {
        vec![
            "nsenter".into(),
            format!("--mount={}", self.dir.path().join("mnt").display()),
            "--".into(),
        ]
    }
}

impl Default for V2View {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for V2View {
    fn drop(&mut self) {
        let _ = Command::new("umount")
            .arg(self.dir.path().join("mnt"))
            .status();
        let _ = Command::new("umount").arg(self.dir.path()).status();
    }
}

/// Runs `lucid ARGS` in the background with stdout to a file; returns the
/// child and the file.
pub fn spawn_lucid(rt: &Runtime, args: &[&str]) -> (std::process::Child, std::fs::File) {
    let stdout = tempfile::tempfile().expect("a temporary file");
    let child = rt
        .command()
        .args(args)
        .stdin(Stdio::null())
        .stdout(stdout.try_clone().expect("duplicating a descriptor"))
        .stderr(Stdio::inherit())
        .spawn()
        .expect("running lucid");
    (child, stdout)
}

/// Everything written to a file so far.
pub fn read_file(file: &mut std::fs::File) -> String {
    String::from_utf8(read_all(file)).expect("UTF-8")
}

/// Waits (up to `secs`) for a condition.
pub fn wait_until(secs: u64, what: &str, mut ok: impl FnMut() -> bool) {
    let deadline = deadline(secs);
    while !ok() {
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting: {what}"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// Reads `lucid state`'s file for the cgroup id the eBPF side knows the
/// container by (its v2 cgroup's inode number).
pub fn cgroup_id(rt: &Runtime, id: &str) -> u64 {
    let text = std::fs::read_to_string(rt.root().join(id).join("state.json")).expect("state.json");
    let state: Value = serde_json::from_str(&text).expect("state.json is JSON");
    state["cgroup"]["unified_id"]
        .as_u64()
        .expect("the state records the v2 cgroup id")
}

/// A busybox bundle running `args` with the host binary `helper` bound at
/// `/syscall-loop` (and the host's libraries read-only at /lib and /lib64),
/// with `annotations`. Tests pass `env!("CARGO_BIN_EXE_syscall-loop")`.
pub fn helper_bundle(
    rt: &Runtime,
    id: &str,
    helper: &str,
    args: &[&str],
    annotations: Value,
) -> Bundle {
    let mut bundle = Bundle::new(rt, id, args);
    let rootfs = bundle.rootfs();
    for dir in ["lib", "lib64"] {
        std::fs::create_dir_all(rootfs.join(dir)).expect("making lib dirs");
    }
    std::fs::write(rootfs.join("syscall-loop"), "").expect("a mount point for the helper");
    bundle.edit(|c| {
        let mounts = c["mounts"].as_array_mut().expect("mounts");
        for (source, destination) in [
            ("/usr/lib", "/lib"),
            ("/usr/lib64", "/lib64"),
            (helper, "/syscall-loop"),
        ] {
            mounts.push(serde_json::json!({
                "destination": destination, "type": "bind", "source": source,
                "options": ["rbind", "ro"]
            }));
        }
        c["annotations"] = annotations;
    });
    bundle
}

pub mod prometheus;

#[cfg(test)]
mod tests {
    /// Cargo runs every file of `tests/tests/` as a test target of its own
    /// (this package is `tests/`, so that is its `tests` directory). A file
    /// put beside it, in `tests/` itself, would never run, and neither would
    /// any file if the manifest listed targets by hand or turned discovery
    /// off: this fails then.
    #[test]
    fn every_test_file_is_found_by_cargo() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
        let manifest = std::fs::read_to_string(dir.join("Cargo.toml")).unwrap();
        assert!(
            !manifest.contains("[[test]]") && !manifest.contains("autotests"),
            "tests/Cargo.toml lists test targets or turns discovery off"
        );
        let rs = |sub: &str| -> Vec<String> {
            let mut files: Vec<String> = std::fs::read_dir(dir.join(sub))
                .unwrap()
                .map(|entry| entry.unwrap().file_name().into_string().unwrap())
                .filter(|name| name.ends_with(".rs"))
                .collect();
            files.sort();
            files
        };
        assert!(
            rs(".").is_empty(),
            "test files in tests/ itself never run (move them to tests/tests/): {:?}",
            rs(".")
        );
        assert!(rs("tests").len() > 10, "found only {:?}", rs("tests"));
    }
}
