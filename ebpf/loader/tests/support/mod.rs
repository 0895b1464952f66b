//! What the eBPF tests share: root checks, a private pin root and test cgroups, each removed
//! on drop so a failing test leaves nothing behind.
#![allow(dead_code)]

use std::{
    ffi::CString,
    path::{Path, PathBuf},
    time::Duration,
};

use lucid_ebpf::Programs;

/// Where the tests make their cgroups: the v2 hierarchy (hybrid hosts mount it here).
pub fn cgroup2_root() -> PathBuf {
    for candidate in ["/sys/fs/cgroup/unified", "/sys/fs/cgroup"] {
        if Path::new(candidate).join("cgroup.procs").exists()
            && Path::new(candidate).join("cgroup.subtree_control").exists()
        {
            return PathBuf::from(candidate);
        }
    }
    panic!("this test needs a cgroup v2 hierarchy at /sys/fs/cgroup/unified or /sys/fs/cgroup");
}

/// Fails the test loudly unless it runs as root with BPF available.
pub fn require_root_and_bpf() {
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    assert_eq!(
        euid, 0,
        "this test loads eBPF programs and must run as root"
    );
    assert!(
        Path::new("/sys/kernel/btf/vmlinux").exists(),
        "this test needs kernel BTF at /sys/kernel/btf/vmlinux"
    );
}

/// A pin root of its own under /sys/fs/bpf, removed with everything in it on drop.
pub struct TestPins {
    pub root: PathBuf,
}

impl TestPins {
    pub fn new(name: &str) -> Self {
        require_root_and_bpf();
        let root = PathBuf::from(format!(
            "/sys/fs/bpf/lucid-test-{name}-{}",
            std::process::id()
        ));
        let _ = lucid_ebpf::remove_pin_root(&root);
        Self { root }
    }

    pub fn load(&self) -> Programs {
        Programs::open_or_load(&self.root).expect("loading the eBPF programs")
    }
}

impl Drop for TestPins {
    fn drop(&mut self) {
        if let Err(e) = lucid_ebpf::remove_pin_root(&self.root) {
            eprintln!("cleanup: {e}");
        }
    }
}

/// A cgroup v2 directory made for one test; its processes are killed and it is removed on drop.
pub struct TestCgroup {
    pub path: PathBuf,
}

impl TestCgroup {
    pub fn new(name: &str) -> Self {
        let path = cgroup2_root().join(format!("lucid-test-{name}-{}", std::process::id()));
        if path.exists() {
            remove_cgroup_tree(&path);
        }
        std::fs::create_dir(&path).expect("creating the test cgroup");
        Self { path }
    }

    /// A cgroup nested in this one.
    pub fn child(&self, name: &str) -> PathBuf {
        let p = self.path.join(name);
        std::fs::create_dir(&p).expect("creating a nested cgroup");
        p
    }

    pub fn procs_file(&self) -> PathBuf {
        self.path.join("cgroup.procs")
    }
}

impl Drop for TestCgroup {
    fn drop(&mut self) {
        remove_cgroup_tree(&self.path);
    }
}

/// Kills every process in the tree, then removes the cgroups bottom-up.
pub fn remove_cgroup_tree(path: &Path) {
    if let Ok(entries) = std::fs::read_dir(path) {
        for entry in entries.flatten() {
            if entry.path().is_dir() {
                remove_cgroup_tree(&entry.path());
            }
        }
    }
    for _ in 0..100 {
        let procs = std::fs::read_to_string(path.join("cgroup.procs")).unwrap_or_default();
        for pid in procs.lines().filter_map(|l| l.parse::<i32>().ok()) {
            // SAFETY: kill has no memory preconditions.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
        match std::fs::remove_dir(path) {
            Ok(()) => return,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return,
            Err(_) => std::thread::sleep(Duration::from_millis(20)),
        }
    }
    eprintln!("cleanup: could not remove cgroup {}", path.display());
}

/// Forks a child that moves itself into `cgroup_dir`, runs `body` and exits with its result.
/// Returns the child's exit code. `body` must only make raw system calls (the parent may
/// have other threads).
pub fn run_in_cgroup(cgroup_dir: &Path, body: impl FnOnce() -> i32) -> i32 {
    let procs = CString::new(cgroup_dir.join("cgroup.procs").to_str().unwrap()).unwrap();
    // SAFETY: the child only makes raw system calls and leaves with _exit.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork failed");
    if pid == 0 {
        // SAFETY: raw system calls on a NUL-terminated path and a static buffer.
        unsafe {
            let fd = libc::open(procs.as_ptr(), libc::O_WRONLY);
            if fd < 0 || libc::write(fd, b"0".as_ptr().cast(), 1) != 1 {
                libc::_exit(100);
            }
            libc::close(fd);
            libc::_exit(body());
        }
    }
    wait_exit(pid)
}

/// Waits for `pid` and returns its exit code (128 + signal when killed).
pub fn wait_exit(pid: i32) -> i32 {
    let mut status = 0;
    // SAFETY: a valid pointer to an int.
    let rc = unsafe { libc::waitpid(pid, &mut status, 0) };
    assert_eq!(rc, pid, "waitpid");
    if libc::WIFEXITED(status) {
        libc::WEXITSTATUS(status)
    } else {
        128 + libc::WTERMSIG(status)
    }
}

/// `std::process::Command` set up to move the child into `cgroup_dir` before exec.
pub fn command_in_cgroup(cgroup_dir: &Path, program: &str) -> std::process::Command {
    use std::os::unix::process::CommandExt as _;
    let procs = CString::new(cgroup_dir.join("cgroup.procs").to_str().unwrap()).unwrap();
    let mut cmd = std::process::Command::new(program);
    // SAFETY: the closure only makes raw system calls.
    unsafe {
        cmd.pre_exec(move || {
            let fd = libc::open(procs.as_ptr(), libc::O_WRONLY);
            if fd < 0 || libc::write(fd, b"0".as_ptr().cast(), 1) != 1 {
                return Err(std::io::Error::last_os_error());
            }
            libc::close(fd);
            Ok(())
        });
    }
    cmd
}
