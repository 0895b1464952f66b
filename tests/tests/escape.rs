//! Escapes runc has suffered, one test per class, each set up as the attack
//! and shown to fail against lucid. Needs root; every test cleans up what it
//! made, also on failure.
//!
//! - CVE-2019-5736: the container overwrites the runtime binary through
//!   `/proc/<pid>/exe` of a runtime image it made run inside the container.
//! - CVE-2024-21626: `process.cwd` aimed at a runtime descriptor through
//!   `/proc/self/fd/N`, which leaves the process's cwd on the host.
//! - CVE-2021-30465 class: a symlink in the rootfs at a mount target,
//!   pointing outside the rootfs (absolute and `../..`).
//! - A symlink in the rootfs leading a bind mount into the container's
//!   `/proc` (`/evil -> /proc/sys/kernel/core_pattern`): runc refuses
//!   destinations inside `/proc` but for the few lxcfs emulates.

use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use lucid_tests::{assert_nothing_left, lucid_bin, run_output, unique_id, Bundle, Runtime};
use serde_json::json;

fn sha(path: &Path) -> Vec<u8> {
    std::fs::read(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

/// A pipe whose buffer is full, so that a process writing to it blocks
/// until it is killed: it keeps a runtime image alive in the container.
/// The read end is kept (never read) so the writer blocks rather than
/// getting EPIPE.
struct FullPipe {
    _read: OwnedFd,
    write: OwnedFd,
}

impl FullPipe {
    fn new() -> Self {
        let (read, write) = nix::unistd::pipe().expect("pipe");
        let fd = write.as_raw_fd();
        // SAFETY: fcntl on our own descriptor.
        unsafe {
            let flags = libc::fcntl(fd, libc::F_GETFL);
            libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK);
            let chunk = [b'x'; 4096];
            while libc::write(fd, chunk.as_ptr().cast(), chunk.len()) > 0 {}
            libc::fcntl(fd, libc::F_SETFL, flags);
        }
        FullPipe { _read: read, write }
    }

    fn stdio(&self) -> Stdio {
        Stdio::from(self.write.try_clone().expect("dup"))
    }
}

/// A copy of the lucid binary the attack aims at (never the build's own).
fn victim_binary(dir: &Path) -> PathBuf {
    let bin = dir.join("lucid");
    std::fs::copy(lucid_bin(), &bin).expect("copying lucid");
    bin
}

/// The attacker: opens the runtime image's `/proc/PID/exe` (read-only,
/// which the kernel allows while it runs), kills that process so nothing
/// executes the binary any more (a naive runtime's binary is then no longer
/// "text busy"), and tries for two seconds to reopen it for writing through
/// its own `/proc/self/fd/3`, as the published exploit does. It logs each
/// step to `/attack.log` and ends with `DONE`.
const ATTACK: &str = r#"
log=/attack.log
exe=$(readlink /proc/$1/exe)
echo "target exe: $exe" >> $log
exec 3< /proc/$1/exe || { echo "OPEN-FAILED" >> $log; echo DONE >> $log; exit 0; }
echo "OPENED" >> $log
kill -9 $1
i=0
while [ $i -lt 20 ]; do
  if ( exec 4<> /proc/self/fd/3 && echo PWNED >&4 ) 2>> $log; then
    echo "WROTE" >> $log
    break
  fi
  i=$((i+1))
  sleep 0.1
done
echo DONE >> $log
"#;

/// Rootfs files for the attack: `/evil`, a script run by
/// `#!/proc/self/exe`, so that whichever lucid process execs it runs the
/// runtime's own image inside the container (the kernel resolves the
/// interpreter in the exec'ing process); the attacker script; and the
/// dynamic loader and libraries lucid's image needs (an image with glibc,
/// as the published exploit used).
/// x86_64's glibc dynamic loader, as lucid's image names it.
const DYNAMIC_LOADER: &str = "/lib64/ld-linux-x86-64.so.2";

fn plant(bundle: &mut Bundle, bin: &Path) {
    // The attacker logs to its rootfs.
    bundle.edit(|c| c["root"]["readonly"] = json!(false));
    let rootfs = bundle.rootfs();
    // What ldd prints, from the dynamic loader itself (ldd is a bash script that some hosts,
    // such as a minimal guest, lack).
    let ldd = std::process::Command::new(DYNAMIC_LOADER)
        .arg("--list")
        .arg(bin)
        .output()
        .unwrap_or_else(|e| panic!("{DYNAMIC_LOADER} --list: {e}"));
    for lib in String::from_utf8_lossy(&ldd.stdout)
        .split_whitespace()
        .filter(|w| w.starts_with('/'))
    {
        let dest = rootfs.join(lib.trim_start_matches('/'));
        std::fs::create_dir_all(dest.parent().unwrap()).unwrap();
        std::fs::copy(lib, &dest).unwrap_or_else(|e| panic!("copying {lib}: {e}"));
    }
    std::fs::write(rootfs.join("evil"), "#!/proc/self/exe\n").unwrap();
    std::fs::write(rootfs.join("attack.sh"), ATTACK).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(rootfs.join("evil"), std::fs::Permissions::from_mode(0o755)).unwrap();
}

fn wait_for_log(bundle: &Bundle) -> String {
    let log = bundle.rootfs().join("attack.log");
    let deadline = lucid_tests::deadline(20);
    loop {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        if text.contains("DONE") {
            return text;
        }
        assert!(
            Instant::now() < deadline,
            "the attacker never finished: {text}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The pid, in the container's pid namespace, of host pid `pid`.
fn inner_pid(pid: i32) -> i32 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status
        .lines()
        .find(|l| l.starts_with("NSpid:"))
        .expect("NSpid");
    line.split_whitespace().last().unwrap().parse().unwrap()
}

fn read_pid_file(path: &Path) -> i32 {
    let deadline = lucid_tests::deadline(10);
    loop {
        if let Ok(text) = std::fs::read_to_string(path) {
            if let Ok(pid) = text.trim().parse() {
                return pid;
            }
        }
        assert!(Instant::now() < deadline, "no pid in {}", path.display());
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn check_attack(log: &str, bin: &Path, before: &[u8]) {
    eprintln!("attacker's log:\n{log}");
    // Without "OPENED" the test proves nothing: the attacker must have
    // held the runtime image the container could reach.
    assert!(
        log.contains("OPENED"),
        "the attacker never got the image: {log}"
    );
    assert!(
        !log.contains("WROTE"),
        "the container wrote to lucid's image: {log}"
    );
    assert_eq!(sha(bin), before, "the host's lucid binary changed: {log}");
}

/// A runtime whose binary is a copy made for the attack, and that copy's hash.
struct Victim {
    dir: tempfile::TempDir,
    bin: PathBuf,
    before: Vec<u8>,
    rt: Runtime,
    /// The protection that must have run: the one forced, else `overlay`.
    method: &'static str,
}

/// Which protected image host process `pid` runs, seen from outside: a
/// sealed memfd (`/memfd:` name) or a file on an overlayfs, or what else.
fn image_of(pid: i32) -> String {
    let exe = format!("/proc/{pid}/exe");
    let name = std::fs::read_link(&exe).unwrap_or_default();
    if name.to_string_lossy().starts_with("/memfd:") {
        return "memfd".into();
    }
    match nix::sys::statfs::statfs(exe.as_str()) {
        Ok(fs) if fs.filesystem_type() == nix::sys::statfs::OVERLAYFS_SUPER_MAGIC => {
            "overlay".into()
        }
        Ok(fs) => format!("{} on {:?}", name.display(), fs.filesystem_type()),
        Err(e) => format!("{exe}: {e}"),
    }
}

impl Victim {
    /// `method` forces a binary protection (`LUCID_EXE_PROTECTION`).
    fn new(method: Option<&'static str>) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let bin = victim_binary(dir.path());
        let before = sha(&bin);
        let mut rt = Runtime::new();
        rt.set_bin(&bin);
        if let Some(method) = method {
            rt.set_env("LUCID_EXE_PROTECTION", method);
        }
        Victim {
            dir,
            bin,
            before,
            rt,
            method: method.unwrap_or("overlay"),
        }
    }

    /// Fails unless host process `pid`, running lucid's image in the
    /// container, runs it from the protection asked for.
    fn check_image(&self, pid: i32) {
        assert_eq!(
            image_of(pid),
            self.method,
            "process {pid} runs lucid's image from something else than {}",
            self.method
        );
    }

    /// Starts the attacker in the container against the process `target`
    /// (which runs lucid's image), checks the binary survived, and removes
    /// the container.
    fn attack(&self, log_arg: &str, id: &str, bundle: &Bundle, target: i64) {
        self.rt.ok(&[
            "--log",
            log_arg,
            "exec",
            "-d",
            id,
            "sh",
            "/attack.sh",
            &target.to_string(),
        ]);
        let text = wait_for_log(bundle);
        check_attack(&text, &self.bin, &self.before);
        self.rt.ok(&["delete", "--force", id]);
        assert_nothing_left(&self.rt, id, bundle.path());
    }
}

/// CVE-2019-5736 through `lucid exec`: `lucid exec -d ID /evil` makes the
/// exec'd lucid process run its own image in the container; a process of
/// the container opens that image and writes it once it is free. A naive
/// runtime (exec'ing its own on-disk binary) has its host binary
/// overwritten here: the attacker's reopen succeeds once no process runs it.
fn exe_attack_via_exec(method: Option<&'static str>) {
    let v = Victim::new(method);
    let (dir, bin, rt) = (&v.dir, &v.bin, &v.rt);
    let id = unique_id("exe-exec");
    let mut bundle = Bundle::new(rt, &id, &["sleep", "1000"]);
    plant(&mut bundle, bin);
    let log = dir.path().join("lucid.log");
    let log_arg = log.to_str().unwrap();
    rt.ok(&["--log", log_arg, "run", "-d", "--bundle", bundle.arg(), &id]);
    // The victim: lucid's image in the container, blocked writing its
    // usage error to a full pipe.
    let pipe = FullPipe::new();
    let pid_file = dir.path().join("victim.pid");
    let status = rt
        .command()
        .args(["--log", log_arg, "exec", "-d", "--pid-file"])
        .arg(&pid_file)
        .args([&id, "/evil"])
        .stdin(Stdio::null())
        .stdout(pipe.stdio())
        .stderr(pipe.stdio())
        .status()
        .unwrap();
    assert!(
        status.success(),
        "exec /evil: {}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    let host_pid = read_pid_file(&pid_file);
    v.check_image(host_pid);
    let victim = inner_pid(host_pid);
    v.attack(log_arg, &id, &bundle, victim.into());
}

/// The same through the init process: the container's own program is
/// `/evil`, so the init process (a clone of `lucid create`) runs lucid's
/// image as the container's first process. The container has no pid
/// namespace of its own, so the attacker, started with `lucid exec`, can
/// kill it and live on. A naive runtime's binary is overwritten.
fn exe_attack_via_init(method: Option<&'static str>) {
    let v = Victim::new(method);
    let (dir, bin, rt) = (&v.dir, &v.bin, &v.rt);
    let id = unique_id("exe-init");
    let mut bundle = Bundle::new(rt, &id, &["/evil"]);
    bundle.edit(|c| {
        let ns = c["linux"]["namespaces"].as_array_mut().unwrap();
        ns.retain(|n| n["type"] != "pid");
    });
    plant(&mut bundle, bin);
    let log = dir.path().join("lucid.log");
    let log_arg = log.to_str().unwrap();
    let pipe = FullPipe::new();
    let status = rt
        .command()
        .args(["--log", log_arg, "run", "-d", "--bundle", bundle.arg(), &id])
        .stdin(Stdio::null())
        .stdout(pipe.stdio())
        .stderr(pipe.stdio())
        .status()
        .unwrap();
    assert!(
        status.success(),
        "run /evil: {}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    let init = rt.state(&id)["pid"].as_i64().unwrap();
    v.check_image(init as i32);
    v.attack(log_arg, &id, &bundle, init);
}

#[test]
fn the_container_cannot_write_lucid_through_an_exec_process() {
    exe_attack_via_exec(None);
    exe_attack_via_exec(Some("memfd"));
}

#[test]
fn the_container_cannot_write_lucid_through_the_init_process() {
    exe_attack_via_init(None);
    exe_attack_via_init(Some("memfd"));
}

/// A file on the host the container must never read.
struct Secret {
    dir: tempfile::TempDir,
}

impl Secret {
    fn new() -> Self {
        let dir = tempfile::Builder::new()
            .prefix("lucid-secret-")
            .tempdir()
            .unwrap();
        std::fs::write(dir.path().join("secret"), "HOST-SECRET-5a1d").unwrap();
        // A host program: run from the container, it prints its marker.
        std::fs::write(
            dir.path().join("leak.sh"),
            "#!/bin/sh\necho HOST-SCRIPT-RAN\n",
        )
        .unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(
            dir.path().join("leak.sh"),
            std::fs::Permissions::from_mode(0o755),
        )
        .unwrap();
        Secret { dir }
    }

    /// The secret's path from a cwd anywhere on the host: enough `..` to
    /// reach `/`, then the absolute path.
    fn path_from_anywhere(&self) -> String {
        format!("{}{}/secret", "../".repeat(12), self.dir.path().display())
    }
}

/// CVE-2024-21626: runc leaked a host directory's descriptor into its init
/// process, and `process.cwd` = `/proc/self/fd/N` made the container start
/// with its cwd on the host (`../../..` then reaches the host's `/`). lucid's
/// init process is a clone of the runtime and holds its descriptors until
/// exec (the v2 cgroup's, a namespace's, the exec FIFO's), so every low
/// number is tried. A naive runtime (plain chdir, no check) lets the
/// container read the host's secret. lucid refuses each (create fails), or
/// the process starts inside its root.
#[test]
fn a_cwd_through_proc_self_fd_never_reaches_the_host() {
    let secret = Secret::new();
    let rt = Runtime::new();
    let script = format!(
        "cat {} 2>/dev/null; echo; ls /proc/self/fd | tr '\\n' ' '",
        secret.path_from_anywhere()
    );
    for n in 3..16 {
        let id = unique_id("cwd-fd");
        let mut bundle = Bundle::new(&rt, &id, &["sh", "-c", &script]);
        bundle.edit(|c| c["process"]["cwd"] = json!(format!("/proc/self/fd/{n}")));
        let out = rt.lucid(&["run", "--bundle", bundle.arg(), &id]);
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            !stdout.contains("HOST-SECRET"),
            "cwd /proc/self/fd/{n} reached the host: {stdout}"
        );
        assert!(
            !out.status.success(),
            "cwd /proc/self/fd/{n} was accepted: {stdout}"
        );
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains("process.cwd"), "fd {n}: {stderr}");
        let _ = rt.lucid(&["delete", "--force", &id]);
        assert_nothing_left(&rt, &id, bundle.path());
    }
}

/// The same through `lucid exec --cwd`, and a cwd climbing with `..`: the
/// `..` stops at the container's root, so the directory is looked up in the
/// rootfs (where it does not exist) and never on the host. The container's
/// processes hold only their stdio: no descriptor of the runtime's is left.
#[test]
fn exec_cwds_and_dotdot_never_reach_the_host() {
    let secret = Secret::new();
    let rt = Runtime::new();
    let id = unique_id("cwd-exec");
    let bundle = Bundle::new(&rt, &id, &["sleep", "1000"]);
    rt.ok(&["run", "-d", "--bundle", bundle.arg(), &id]);
    let script = format!("cat {} 2>/dev/null; echo; pwd", secret.path_from_anywhere());
    for n in 3..16 {
        let cwd = format!("/proc/self/fd/{n}");
        let out = rt.lucid(&["exec", "--cwd", &cwd, &id, "sh", "-c", &script]);
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            !stdout.contains("HOST-SECRET"),
            "exec --cwd {cwd}: {stdout}"
        );
        assert!(
            !out.status.success(),
            "exec --cwd {cwd} was accepted: {stdout}"
        );
    }
    // The program itself through a runtime descriptor (runc's attack 3):
    // a host program must not run.
    for n in 3..16 {
        let program = format!(
            "/proc/self/fd/{n}/{}{}/leak.sh",
            "../".repeat(12),
            secret.dir.path().display()
        );
        let out = rt.lucid(&["exec", &id, &program]);
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            !stdout.contains("HOST-SCRIPT-RAN"),
            "exec {program}: {stdout}"
        );
    }
    // `..` above the root: the host directory (the secret's) is not reached.
    let climb = format!("/../../../..{}", secret.dir.path().display());
    let out = rt.lucid(&["exec", "--cwd", &climb, &id, "cat", "secret"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        !stdout.contains("HOST-SECRET"),
        "exec --cwd {climb}: {stdout}"
    );
    assert!(
        !out.status.success(),
        "{climb} exists only on the host: {stdout}"
    );
    // What the container's processes hold: 0, 1, 2 (and ls's own listing).
    let fds = rt.ok(&["exec", &id, "ls", "/proc/1/fd"]);
    let fds: Vec<&str> = fds.split_whitespace().collect();
    assert_eq!(
        fds,
        ["0", "1", "2"],
        "the init process holds more than stdio"
    );
    // `; true` keeps the shell from exec'ing ls, so $$ is the shell itself.
    let fds = rt.ok(&["exec", &id, "sh", "-c", "ls /proc/$$/fd; true"]);
    let fds: Vec<&str> = fds.split_whitespace().collect();
    assert_eq!(
        fds,
        ["0", "1", "2"],
        "an exec'd process holds more than stdio"
    );
    rt.ok(&["delete", "--force", &id]);
    assert_nothing_left(&rt, &id, bundle.path());
}

/// A shared tmpfs on the host, so that a mount made on it in the
/// container's (shared) mount namespace would show on the host. Dropping it
/// unmounts everything under it.
struct SharedDir {
    dir: tempfile::TempDir,
}

impl SharedDir {
    fn new() -> Self {
        let dir = tempfile::Builder::new()
            .prefix("lucid-shared-")
            .tempdir()
            .unwrap();
        let path = dir.path().to_str().unwrap();
        for args in [
            vec!["-t", "tmpfs", "tmpfs", path],
            vec!["--make-shared", path],
        ] {
            let ok = std::process::Command::new("mount")
                .args(&args)
                .status()
                .unwrap()
                .success();
            assert!(ok, "mount {args:?}");
        }
        std::fs::create_dir(dir.path().join("target")).unwrap();
        SharedDir { dir }
    }

    fn target(&self) -> PathBuf {
        self.dir.path().join("target")
    }
}

impl Drop for SharedDir {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .args(["-R", "-l"])
            .arg(self.dir.path())
            .status();
    }
}

fn host_mounts_on(path: &Path) -> Vec<String> {
    let path = path.to_str().unwrap();
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .filter(|l| l.split_whitespace().nth(4) == Some(path))
        .map(str::to_owned)
        .collect()
}

/// CVE-2021-30465 class: mount targets that are symlinks in the rootfs,
/// pointing at a host directory, absolutely and with `../..`. The
/// container's mounts are shared with the host (`rootfsPropagation:
/// rshared`), so a naive runtime (mounting on `rootfs + destination`, which
/// follows the symlink on the host) puts a tmpfs and a bind mount on the
/// host's directory, which the host then sees. lucid resolves each target
/// inside the rootfs: the mounts land in the rootfs, the host path stays
/// bare and empty.
#[test]
fn symlinked_mount_targets_stay_inside_the_rootfs() {
    let shared = SharedDir::new();
    let target = shared.target();
    let source = tempfile::tempdir().unwrap();
    std::fs::write(source.path().join("from-source"), "x").unwrap();
    let rt = Runtime::new();
    let id = unique_id("symlink");
    let script = "cat /proc/self/mountinfo";
    let mut bundle = Bundle::new(&rt, &id, &["sh", "-c", script]);
    let rootfs = bundle.rootfs();
    let depth = rootfs.components().count() + 2;
    let relative = format!("{}{}", "../".repeat(depth), target.display());
    // The mount points exist on the host, and the same paths inside the
    // rootfs (an image can hold anything), so the symlinks resolve on both
    // sides: a naive runtime mounts on the host's, lucid on the rootfs's.
    for sub in ["a", "r", "bound"] {
        std::fs::create_dir_all(target.join(sub)).unwrap();
        std::fs::create_dir_all(rootfs.join(target.strip_prefix("/").unwrap()).join(sub)).unwrap();
    }
    std::os::unix::fs::symlink(&target, rootfs.join("abs")).unwrap();
    std::os::unix::fs::symlink(&relative, rootfs.join("rel")).unwrap();
    std::os::unix::fs::symlink(format!("{}/bound", target.display()), rootfs.join("bound"))
        .unwrap();
    let src = source.path().to_str().unwrap().to_owned();
    bundle.edit(|c| {
        c["linux"]["rootfsPropagation"] = json!("rshared");
        let mounts = c["mounts"].as_array_mut().unwrap();
        mounts.push(json!({"destination": "/abs/a", "type": "tmpfs", "source": "tmpfs", "options": ["size=1m"]}));
        mounts.push(json!({"destination": "/rel/r", "type": "tmpfs", "source": "tmpfs", "options": ["size=1m"]}));
        mounts.push(json!({"destination": "/bound", "type": "bind", "source": src, "options": ["rbind"]}));
    });
    let out = run_output(&rt, &bundle, &id);
    // Inside: the mounts are where the symlinks lead within the rootfs.
    let inside = format!("{}", target.display());
    for sub in ["a", "r", "bound"] {
        let want = format!(" {inside}/{sub} ");
        assert!(
            out.contains(&want),
            "no mount on {inside}/{sub} inside: {out}"
        );
        assert!(
            rootfs
                .join(inside.trim_start_matches('/'))
                .join(sub)
                .is_dir(),
            "{sub} was not made inside the rootfs"
        );
    }
    // Outside: nothing was mounted on, or written to, the host's directories.
    for sub in ["a", "r", "bound"] {
        let host = target.join(sub);
        assert!(
            host_mounts_on(&host).is_empty(),
            "mounted on the host's {}",
            host.display()
        );
        assert_eq!(
            std::fs::read_dir(&host).unwrap().count(),
            0,
            "{} is not empty",
            host.display()
        );
    }
    assert_nothing_left(&rt, &id, bundle.path());
}

/// A rootfs link `/evil -> /proc/sys/kernel/core_pattern` and a bind mount on
/// `/evil`: the mount would cover the container's `core_pattern` (and with a
/// writable source, a later `/proc` write would go to a file of the
/// attacker's choosing). As runc, lucid judges where the link leads and
/// refuses a destination inside `/proc`, before anything runs; runc's
/// exceptions (the files lxcfs emulates) still take a bind.
#[test]
fn a_bind_mount_led_into_proc_by_a_link_is_refused() {
    let rt = Runtime::new();
    let host_pattern = std::fs::read("/proc/sys/kernel/core_pattern").unwrap();
    let source = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(source.path(), "|/attacker %p\n").unwrap();
    let src = source.path().to_str().unwrap().to_owned();
    for (link, target) in [
        ("evil", "/proc/sys/kernel/core_pattern"),
        ("evil2", "../proc/sys/vm/overcommit_memory"),
    ] {
        let id = unique_id("procmount");
        let mut bundle = Bundle::new(&rt, &id, &["cat", "/proc/sys/kernel/core_pattern"]);
        std::os::unix::fs::symlink(target, bundle.rootfs().join(link)).unwrap();
        bundle.edit(|c| {
            c["mounts"].as_array_mut().unwrap().push(
                json!({"destination": format!("/{link}"), "type": "bind", "source": src, "options": ["bind"]}),
            );
        });
        let out = rt.lucid(&["run", "--bundle", bundle.arg(), &id]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success() && err.contains("cannot be mounted because it is inside /proc"),
            "{link} -> {target} ({}): {}{err}",
            out.status,
            String::from_utf8_lossy(&out.stdout)
        );
        assert_nothing_left(&rt, &id, bundle.path());
    }
    assert_eq!(
        std::fs::read("/proc/sys/kernel/core_pattern").unwrap(),
        host_pattern
    );
    // An exception, reached through a link too: the bind lands.
    let id = unique_id("procmount");
    let mut bundle = Bundle::new(&rt, &id, &["cat", "/proc/uptime"]);
    std::fs::write(source.path(), "12345.67 8.9\n").unwrap();
    std::os::unix::fs::symlink("/proc/uptime", bundle.rootfs().join("uptime")).unwrap();
    bundle.edit(|c| {
        c["mounts"].as_array_mut().unwrap().push(
            json!({"destination": "/uptime", "type": "bind", "source": src, "options": ["bind"]}),
        );
    });
    assert_eq!(run_output(&rt, &bundle, &id), "12345.67 8.9\n");
    assert_nothing_left(&rt, &id, bundle.path());
}
