//! Cost of lucid's syscall counting on a getppid loop, inside and outside a watched cgroup.
//!
//! `cargo run --release -p lucid-ebpf --example bench -- [--rounds R] [--calls N]` (as root).
//! Each round measures, in this order, with nothing attached, with counting and with latency;
//! the medians of the rounds are printed with their ratio to "nothing attached". It also
//! reports what loading, opening the pins, registering and unregistering cost.
use std::{
    ffi::CString,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use lucid_ebpf::{Programs, RegisterOptions};

fn arg(name: &str, default: usize) -> usize {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// ns per getppid in a forked child, moved into `cgroup` first when given.
fn getppid_ns(cgroup: Option<&Path>, calls: usize) -> f64 {
    let procs = cgroup.map(|c| CString::new(c.join("cgroup.procs").to_str().unwrap()).unwrap());
    let mut fds = [0; 2];
    // SAFETY: a valid two-int array.
    assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
    // SAFETY: the child only makes raw system calls and leaves with _exit.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0);
    if pid == 0 {
        // SAFETY: raw system calls on valid buffers.
        unsafe {
            if let Some(p) = &procs {
                let fd = libc::open(p.as_ptr(), libc::O_WRONLY);
                if fd < 0 || libc::write(fd, b"0".as_ptr().cast(), 1) != 1 {
                    libc::_exit(1);
                }
                libc::close(fd);
            }
            let mut t0 = std::mem::zeroed::<libc::timespec>();
            let mut t1 = std::mem::zeroed::<libc::timespec>();
            libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut t0);
            for _ in 0..calls {
                libc::syscall(libc::SYS_getppid);
            }
            libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut t1);
            let ns: u64 =
                ((t1.tv_sec - t0.tv_sec) * 1_000_000_000 + (t1.tv_nsec - t0.tv_nsec)) as u64;
            libc::write(fds[1], (&raw const ns).cast(), 8);
            libc::_exit(0);
        }
    }
    let mut ns = 0u64;
    // SAFETY: reading 8 bytes into a u64, then reaping the child.
    unsafe {
        libc::close(fds[1]);
        assert_eq!(
            libc::read(fds[0], (&raw mut ns).cast(), 8),
            8,
            "child failed"
        );
        libc::close(fds[0]);
        libc::waitpid(pid, std::ptr::null_mut(), 0);
    }
    ns as f64 / calls as f64
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

struct Cleanup {
    pins: PathBuf,
    cgroup: PathBuf,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        let _ = lucid_ebpf::remove_pin_root(&self.pins);
        let _ = std::fs::remove_dir(&self.cgroup);
    }
}

fn main() {
    let rounds = arg("--rounds", 9);
    let calls = arg("--calls", 300_000);
    let root = ["/sys/fs/cgroup/unified", "/sys/fs/cgroup"]
        .into_iter()
        .map(PathBuf::from)
        .find(|p| p.join("cgroup.subtree_control").exists())
        .expect("a cgroup v2 hierarchy");
    let guard = Cleanup {
        pins: PathBuf::from(format!("/sys/fs/bpf/lucid-bench-{}", std::process::id())),
        cgroup: root.join(format!("lucid-bench-{}", std::process::id())),
    };
    std::fs::create_dir(&guard.cgroup).expect("creating the bench cgroup");

    let conditions = ["none", "counting", "latency"];
    let mut inside: Vec<Vec<f64>> = vec![Vec::new(); 3];
    let mut outside: Vec<Vec<f64>> = vec![Vec::new(); 3];
    let (mut load, mut open, mut register, mut unregister) = (vec![], vec![], vec![], vec![]);
    let mut hook = None;
    for _ in 0..rounds {
        lucid_ebpf::remove_pin_root(&guard.pins).unwrap();
        inside[0].push(getppid_ns(Some(&guard.cgroup), calls));
        outside[0].push(getppid_ns(None, calls));

        let t = Instant::now();
        let mut bpf = Programs::open_or_load(&guard.pins).expect("loading");
        load.push(t.elapsed());
        let t = Instant::now();
        let reopened = Programs::open(&guard.pins).expect("opening pins");
        open.push(t.elapsed());
        drop(reopened);
        hook = Some(bpf.syscall_hook());
        let t = Instant::now();
        let reg = bpf
            .register(&guard.cgroup, &RegisterOptions::default())
            .unwrap();
        register.push(t.elapsed());
        inside[1].push(getppid_ns(Some(&guard.cgroup), calls));
        outside[1].push(getppid_ns(None, calls));

        let latency = RegisterOptions {
            syscall_latency: true,
            ..Default::default()
        };
        bpf.register(&guard.cgroup, &latency).unwrap();
        inside[2].push(getppid_ns(Some(&guard.cgroup), calls));
        outside[2].push(getppid_ns(None, calls));
        let t = Instant::now();
        bpf.unregister(reg.cgroup_id).unwrap();
        unregister.push(t.elapsed());
    }
    let base_in = median(&mut inside[0].clone());
    let base_out = median(&mut outside[0].clone());
    println!(
        "getppid loop, {calls} calls x {rounds} interleaved rounds, medians; syscall hook: {:?}",
        hook.expect("at least one round")
    );
    println!(
        "{:<10} {:>12} {:>8} {:>12} {:>8}",
        "programs", "inside ns", "ratio", "outside ns", "ratio"
    );
    for (i, name) in conditions.iter().enumerate() {
        let ins = median(&mut inside[i]);
        let out = median(&mut outside[i]);
        println!(
            "{name:<10} {ins:>12.1} {:>7.2}x {out:>12.1} {:>7.2}x",
            ins / base_in,
            out / base_out
        );
    }
    let ms = |v: &mut Vec<Duration>| {
        v.sort();
        v[v.len() / 2].as_secs_f64() * 1000.0
    };
    println!(
        "load+pin {:.1} ms, open pins {:.2} ms, register {:.2} ms, unregister {:.2} ms (medians)",
        ms(&mut load),
        ms(&mut open),
        ms(&mut register),
        ms(&mut unregister)
    );
}
