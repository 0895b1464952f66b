//! Cost of lucid's syscall counting on a getppid loop, inside and outside a watched cgroup,
//! and of its process programs on a fork/exit loop.
//!
//! `cargo run --release -p lucid-ebpf --example bench -- [--rounds R] [--calls N]` (as root).
//!
//! `... --example bench -- --compare-hooks [--rounds R] [--calls N]` compares the two syscall
//! hooks instead, on kernels that take both: each round measures nothing loaded, counting with
//! fexit on `x64_sys_call`, and counting with the `sys_exit` tracepoint (each hook loaded
//! fresh through `ebpf.syscall-hook` in a settings file of its own), and the medians come with
//! the fexit/tracepoint ratio.
//!
//! Each round measures, in this order: nothing loaded; the programs loaded with no container
//! registered; counting (one container registered); latency (the same container asking for
//! it). The medians of the rounds are printed with their ratio to "nothing loaded".
//!
//! Times are the measuring thread's CPU time (`CLOCK_THREAD_CPUTIME_ID`), not wall time: on a
//! shared machine, time spent preempted by other work would otherwise land in the numbers.
//! Any program attached to the `raw_syscalls` tracepoints by someone else puts every task on
//! the slow syscall path and spoils the baseline, so a round during which such a foreign link
//! exists is thrown away and measured again (the count is printed).
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

fn cpu_ns(clock: libc::clockid_t) -> u64 {
    let mut t = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: a valid timespec to fill.
    unsafe { libc::clock_gettime(clock, &mut t) };
    t.tv_sec as u64 * 1_000_000_000 + t.tv_nsec as u64
}

/// CPU time of this process and its reaped children, in ns.
fn process_tree_cpu_ns() -> u64 {
    let mut total = 0;
    for who in [libc::RUSAGE_SELF, libc::RUSAGE_CHILDREN] {
        // SAFETY: a zeroed rusage is a valid buffer for getrusage.
        let mut r: libc::rusage = unsafe { std::mem::zeroed() };
        // SAFETY: as above.
        unsafe { libc::getrusage(who, &mut r) };
        for tv in [r.ru_utime, r.ru_stime] {
            total += tv.tv_sec as u64 * 1_000_000_000 + tv.tv_usec as u64 * 1000;
        }
    }
    total
}

/// Runs `work` in a forked child (moved into `cgroup` first when given) and returns the ns
/// per iteration it reports.
fn in_child(cgroup: Option<&Path>, work: impl FnOnce() -> f64) -> f64 {
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
            let ns = work();
            libc::write(fds[1], (&raw const ns).cast(), 8);
            libc::_exit(0);
        }
    }
    let mut ns = 0f64;
    // SAFETY: reading 8 bytes into an f64, then reaping the child.
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
    ns
}

/// CPU ns per `syscall(SYS_getppid)`.
fn getppid_ns(cgroup: Option<&Path>, calls: usize) -> f64 {
    in_child(cgroup, || {
        let t0 = cpu_ns(libc::CLOCK_THREAD_CPUTIME_ID);
        for _ in 0..calls {
            // SAFETY: getppid has no arguments and cannot fail.
            unsafe { libc::syscall(libc::SYS_getppid) };
        }
        (cpu_ns(libc::CLOCK_THREAD_CPUTIME_ID) - t0) as f64 / calls as f64
    })
}

/// CPU ns (parent and child together) per fork of a child that exits at once.
fn fork_exit_ns(cgroup: Option<&Path>, forks: usize) -> f64 {
    in_child(cgroup, || {
        let t0 = process_tree_cpu_ns();
        for _ in 0..forks {
            // SAFETY: the child leaves with _exit at once; the parent reaps it.
            unsafe {
                let pid = libc::fork();
                if pid == 0 {
                    libc::_exit(0);
                }
                libc::waitpid(pid, std::ptr::null_mut(), 0);
            }
        }
        (process_tree_cpu_ns() - t0) as f64 / forks as f64
    })
}

fn median(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

/// Links on the raw syscall tracepoints that are not lucid's (`ours`).
fn foreign_syscall_links(ours: &[u32]) -> usize {
    lucid_ebpf::syscall_tracepoint_links()
        .expect("listing BPF links")
        .iter()
        .filter(|l| !ours.contains(&l.prog_id))
        .count()
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

/// One measurement of every workload under one condition.
#[derive(Clone, Copy, Default)]
struct Sample {
    inside: f64,
    outside: f64,
    fork_outside: f64,
}

/// Measures `Sample` with `ours` the lucid program ids; `None` when a foreign syscall hook was
/// attached at any point.
fn sample(cgroup: &Path, calls: usize, forks: usize, ours: &[u32]) -> Option<Sample> {
    if foreign_syscall_links(ours) != 0 {
        return None;
    }
    let s = Sample {
        inside: getppid_ns(Some(cgroup), calls),
        outside: getppid_ns(None, calls),
        fork_outside: fork_exit_ns(None, forks),
    };
    (foreign_syscall_links(ours) == 0).then_some(s)
}

const CONDITIONS: [&str; 4] = ["none", "loaded", "counting", "latency"];

/// Loads the programs under `pins` with the syscall hook `hook` (a settings file in `dir`),
/// registers `cgroup` and measures getppid inside and outside it; `None` when a foreign
/// syscall hook spoiled the measurement.
fn counting_with(
    hook: &str,
    dir: &Path,
    pins: &Path,
    cgroup: &Path,
    calls: usize,
) -> Option<(f64, f64)> {
    let conf = dir.join(format!("{hook}.conf"));
    std::fs::write(&conf, format!("ebpf.syscall-hook = {hook}\n")).expect("writing settings");
    std::env::set_var(lucid_ebpf::settings::CONFIG_ENV, &conf);
    lucid_ebpf::remove_pin_root(pins).unwrap();
    let mut bpf = Programs::open_or_load(pins).expect("loading");
    let counting = bpf
        .feature(lucid_ebpf::feature::SYSCALLS)
        .expect("reading features");
    if let Some(why) = counting.why_off() {
        eprintln!("this kernel does not take the {hook} hook: {why}");
        std::process::exit(2);
    }
    let reg = bpf
        .register(cgroup, &RegisterOptions::default())
        .expect("registering");
    let ours = bpf.syscall_program_ids().expect("program ids");
    let measured = (foreign_syscall_links(&ours) == 0)
        .then(|| (getppid_ns(Some(cgroup), calls), getppid_ns(None, calls)));
    let clean = foreign_syscall_links(&ours) == 0;
    bpf.unregister(reg.cgroup_id).expect("unregistering");
    drop(bpf);
    lucid_ebpf::remove_pin_root(pins).unwrap();
    measured.filter(|_| clean)
}

/// `--compare-hooks`: fexit against the tracepoint, interleaved.
fn compare_hooks(guard: &Cleanup, rounds: usize, calls: usize) {
    let settings = std::env::temp_dir().join(format!("lucid-bench-{}", std::process::id()));
    std::fs::create_dir_all(&settings).expect("a settings directory");
    let mut rows: Vec<[(f64, f64); 3]> = Vec::new();
    let mut discarded = 0;
    while rows.len() < rounds {
        assert!(
            discarded <= 20 * rounds,
            "foreign programs stay attached to the raw_syscalls tracepoints"
        );
        let none = (
            getppid_ns(Some(&guard.cgroup), calls),
            getppid_ns(None, calls),
        );
        let fexit = counting_with("fexit", &settings, &guard.pins, &guard.cgroup, calls);
        let tp = counting_with("tracepoint", &settings, &guard.pins, &guard.cgroup, calls);
        match (fexit, tp) {
            (Some(fexit), Some(tp)) => rows.push([none, fexit, tp]),
            _ => discarded += 1,
        }
    }
    let _ = std::fs::remove_dir_all(&settings);
    let col = |c: usize, inside: bool| {
        median(
            &rows
                .iter()
                .map(|r| if inside { r[c].0 } else { r[c].1 })
                .collect::<Vec<_>>(),
        )
    };
    println!(
        "{calls} getppid per measurement, {rounds} interleaved rounds ({discarded} thrown away), \
         medians of CPU time"
    );
    println!(
        "{:<12} {:>10} {:>7} {:>11} {:>7}",
        "hook", "inside ns", "ratio", "outside ns", "ratio"
    );
    for (c, name) in ["none", "fexit", "tracepoint"].iter().enumerate() {
        println!(
            "{name:<12} {:>10.1} {:>6.2}x {:>11.1} {:>6.2}x",
            col(c, true),
            col(c, true) / col(0, true),
            col(c, false),
            col(c, false) / col(0, false)
        );
    }
    println!(
        "fexit/tracepoint: inside {:.2}, outside {:.2}",
        col(1, true) / col(2, true),
        col(1, false) / col(2, false)
    );
}

fn main() {
    let rounds = arg("--rounds", 9);
    let calls = arg("--calls", 300_000);
    let forks = arg("--forks", 300);
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
    if std::env::args().any(|a| a == "--compare-hooks") {
        compare_hooks(&guard, rounds, calls);
        return;
    }

    let mut samples: Vec<[Sample; 4]> = Vec::new();
    let (mut load, mut open, mut register, mut unregister) = (vec![], vec![], vec![], vec![]);
    let mut hook = None;
    let mut discarded = 0;
    let mut attached_when_idle = 0;
    while samples.len() < rounds {
        if discarded > 20 * rounds {
            panic!(
                "foreign programs stay attached to the raw_syscalls tracepoints; \
                 the baseline cannot be measured"
            );
        }
        let mut round = [Sample::default(); 4];
        lucid_ebpf::remove_pin_root(&guard.pins).unwrap();
        let Some(none) = sample(&guard.cgroup, calls, forks, &[]) else {
            discarded += 1;
            std::thread::sleep(Duration::from_secs(1));
            continue;
        };
        round[0] = none;

        let t = Instant::now();
        let mut bpf = Programs::open_or_load(&guard.pins).expect("loading");
        load.push(t.elapsed());
        let t = Instant::now();
        let reopened = Programs::open(&guard.pins).expect("opening pins");
        open.push(t.elapsed());
        drop(reopened);
        hook = bpf.syscall_hook();
        let ours = bpf.syscall_program_ids().expect("program ids");
        attached_when_idle += lucid_ebpf::syscall_tracepoint_links()
            .expect("listing BPF links")
            .iter()
            .filter(|l| ours.contains(&l.prog_id))
            .count();
        let measured = (|| {
            round[1] = sample(&guard.cgroup, calls, forks, &ours)?;
            let t = Instant::now();
            let reg = bpf
                .register(&guard.cgroup, &RegisterOptions::default())
                .unwrap();
            register.push(t.elapsed());
            let ours = bpf.syscall_program_ids().expect("program ids");
            round[2] = sample(&guard.cgroup, calls, forks, &ours)?;
            let latency = RegisterOptions {
                syscall_latency: true,
                ..Default::default()
            };
            bpf.register(&guard.cgroup, &latency).unwrap();
            let ours = bpf.syscall_program_ids().expect("program ids");
            round[3] = sample(&guard.cgroup, calls, forks, &ours)?;
            let t = Instant::now();
            bpf.unregister(reg.cgroup_id).unwrap();
            unregister.push(t.elapsed());
            Some(())
        })();
        if measured.is_none() {
            discarded += 1;
            std::thread::sleep(Duration::from_secs(1));
            continue;
        }
        samples.push(round);
    }
    let column = |c: usize, f: fn(&Sample) -> f64| -> f64 {
        median(&samples.iter().map(|r| f(&r[c])).collect::<Vec<_>>())
    };
    println!(
        "{calls} getppid and {forks} fork+exit per measurement, {rounds} interleaved rounds \
         ({discarded} thrown away: foreign syscall hooks), medians of CPU time; syscall hook: {:?}",
        hook
    );
    println!(
        "lucid syscall links attached with nothing registered: {attached_when_idle} over {rounds} loads"
    );
    println!(
        "{:<10} {:>10} {:>7} {:>11} {:>7} {:>13} {:>7}",
        "programs", "inside ns", "ratio", "outside ns", "ratio", "fork+exit us", "ratio"
    );
    let base = (
        column(0, |s| s.inside),
        column(0, |s| s.outside),
        column(0, |s| s.fork_outside),
    );
    for (i, name) in CONDITIONS.iter().enumerate() {
        let ins = column(i, |s| s.inside);
        let out = column(i, |s| s.outside);
        let fork = column(i, |s| s.fork_outside);
        println!(
            "{name:<10} {ins:>10.1} {:>6.2}x {out:>11.1} {:>6.2}x {:>13.1} {:>6.3}x",
            ins / base.0,
            out / base.1,
            fork / 1000.0,
            fork / base.2,
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
