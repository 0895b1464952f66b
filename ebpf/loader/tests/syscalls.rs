//! Syscall counting against real cgroups (needs root and BPF; never skipped).
mod support;

use lucid_ebpf::{syscall_names, RegisterOptions};
use support::{run_in_cgroup, TestCgroup, TestPins};

const N: usize = 1000;

fn getppid_and_failing_open(n: usize) -> i32 {
    let missing = c"/nonexistent/lucid-test";
    for _ in 0..n {
        // SAFETY: raw syscalls with a NUL-terminated path.
        unsafe {
            libc::syscall(libc::SYS_getppid);
            libc::syscall(libc::SYS_open, missing.as_ptr(), libc::O_RDONLY);
        }
    }
    0
}

fn row(rows: &[lucid_ebpf::SyscallRow], name: &str) -> Option<lucid_ebpf::SyscallRow> {
    rows.iter().find(|r| r.name == name).cloned()
}

#[test]
fn getppid_and_failing_open_are_counted_exactly_and_outsiders_are_not() {
    let pins = TestPins::new("syscalls");
    let cgroup = TestCgroup::new("syscalls");
    let mut bpf = pins.load();
    let reg = bpf
        .register(&cgroup.path, &RegisterOptions::default())
        .unwrap();

    // The test process itself, outside the cgroup, makes the same calls meanwhile.
    let outside = std::thread::spawn(|| getppid_and_failing_open(N));
    assert_eq!(
        run_in_cgroup(&cgroup.path, || getppid_and_failing_open(N)),
        0
    );
    outside.join().unwrap();

    let rows = bpf.syscalls(reg.cgroup_id).unwrap();
    let getppid = row(&rows, "getppid").expect("getppid counted");
    assert_eq!((getppid.count, getppid.errors), (N as u64, 0));
    let open = row(&rows, "open").expect("open counted");
    assert_eq!((open.count, open.errors), (N as u64, N as u64));
    assert!(getppid.latency.is_none(), "latency was not asked for");
    assert_eq!(bpf.container_stats(reg.cgroup_id).unwrap().exits, 1);
    bpf.unregister(reg.cgroup_id).unwrap();
}

#[test]
fn processes_in_nested_cgroups_count_for_the_container() {
    let pins = TestPins::new("nested");
    let cgroup = TestCgroup::new("nested");
    let inner = cgroup.child("inner");
    let deeper = {
        let p = inner.join("deeper");
        std::fs::create_dir(&p).unwrap();
        p
    };
    let mut bpf = pins.load();
    let reg = bpf
        .register(&cgroup.path, &RegisterOptions::default())
        .unwrap();
    assert_eq!(run_in_cgroup(&inner, || getppid_and_failing_open(N)), 0);
    assert_eq!(run_in_cgroup(&deeper, || getppid_and_failing_open(N)), 0);
    let rows = bpf.syscalls(reg.cgroup_id).unwrap();
    assert_eq!(row(&rows, "getppid").unwrap().count, 2 * N as u64);
    assert_eq!(row(&rows, "open").unwrap().errors, 2 * N as u64);
    bpf.unregister(reg.cgroup_id).unwrap();
}

#[test]
fn latency_histogram_has_one_sample_per_call_when_asked() {
    let pins = TestPins::new("latency");
    let cgroup = TestCgroup::new("latency");
    let mut bpf = pins.load();
    let options = RegisterOptions {
        syscall_latency: true,
        ..Default::default()
    };
    let reg = bpf.register(&cgroup.path, &options).unwrap();
    assert!(bpf.pin_dir().join("links/syscall_enter").exists());
    assert_eq!(
        run_in_cgroup(&cgroup.path, || getppid_and_failing_open(N)),
        0
    );
    let rows = bpf.syscalls(reg.cgroup_id).unwrap();
    let getppid = row(&rows, "getppid").unwrap();
    let hist = getppid.latency.expect("latency recorded");
    assert_eq!(hist.samples(), N as u64);
    assert!(
        hist.quantile_upper_ns(0.5).unwrap() < 1_000_000,
        "getppid takes under 1 ms"
    );
    bpf.unregister(reg.cgroup_id).unwrap();
    assert!(
        !bpf.pin_dir().join("links/syscall_enter").exists(),
        "the latency hook goes with the last container that asked for it"
    );
}

#[test]
fn unassigned_syscall_numbers_are_counted_under_a_made_up_name() {
    let pins = TestPins::new("unknown-nr");
    let cgroup = TestCgroup::new("unknown-nr");
    let mut bpf = pins.load();
    let reg = bpf
        .register(&cgroup.path, &RegisterOptions::default())
        .unwrap();
    // 400 is in the x86_64 table's gap; far beyond the table the kernel never dispatches.
    assert_eq!(syscall_names::name(400), None);
    let code = run_in_cgroup(&cgroup.path, || {
        for _ in 0..10 {
            // SAFETY: an unassigned syscall number returns -ENOSYS.
            unsafe { libc::syscall(400) };
            // SAFETY: as above.
            unsafe { libc::syscall(100_000) };
        }
        0
    });
    assert_eq!(code, 0);
    let rows = bpf.syscalls(reg.cgroup_id).unwrap();
    let unknown = row(&rows, "syscall_400").expect("counted under syscall_400");
    assert_eq!((unknown.count, unknown.errors), (10, 10));
    bpf.unregister(reg.cgroup_id).unwrap();
}
