//! The syscall hook is attached only while a container is registered, also with several
//! processes registering at once; nested cgroups made after registration count (needs root
//! and BPF; never skipped).
mod support;

use std::{
    path::Path,
    time::{Duration, Instant},
};

use lucid_ebpf::{Programs, RegisterOptions};
use support::{remove_cgroup_tree, run_in_cgroup, TestCgroup, TestPins};

/// How many kernel links attach this version's syscall programs.
fn hook_links(bpf: &Programs) -> usize {
    let ours = bpf.syscall_program_ids().unwrap();
    assert!(!ours.is_empty(), "no syscall program pinned");
    lucid_ebpf::syscall_tracepoint_links()
        .unwrap()
        .iter()
        .filter(|l| ours.contains(&l.prog_id))
        .count()
        + trampoline_links(bpf)
}

/// Links of the fexit/fentry programs, on kernels that took them (not raw tracepoints).
fn trampoline_links(bpf: &Programs) -> usize {
    if bpf.syscall_hook() != Some(lucid_ebpf::SyscallHook::Fexit) {
        return 0;
    }
    ["syscall_exit", "syscall_enter"]
        .iter()
        .filter(|l| bpf.pin_dir().join("links").join(l).exists())
        .count()
}

/// The value of the one-entry `NESTED` map.
fn nested_flag(bpf: &Programs) -> u64 {
    let data = aya::maps::MapData::from_pin(bpf.pin_dir().join("maps/NESTED")).unwrap();
    let array: aya::maps::Array<_, u64> =
        aya::maps::Array::try_from(aya::maps::Map::Array(data)).unwrap();
    array.get(&0, 0).unwrap()
}

fn getppid(n: usize) -> i32 {
    for _ in 0..n {
        // SAFETY: getppid has no arguments and cannot fail.
        unsafe { libc::syscall(libc::SYS_getppid) };
    }
    0
}

fn getppid_count(bpf: &Programs, cgroup_id: u64) -> u64 {
    bpf.syscalls(cgroup_id)
        .unwrap()
        .iter()
        .find(|r| r.name == "getppid")
        .map_or(0, |r| r.count)
}

#[test]
fn the_syscall_hook_is_attached_only_while_a_container_is_registered() {
    let pins = TestPins::new("hook");
    let a = TestCgroup::new("hook-a");
    let b = TestCgroup::new("hook-b");
    let mut bpf = pins.load();
    let exit_link = bpf.pin_dir().join("links/syscall_exit");
    assert_eq!(hook_links(&bpf), 0, "attached with nothing registered");
    assert!(!exit_link.exists());

    let ra = bpf.register(&a.path, &RegisterOptions::default()).unwrap();
    assert_eq!(hook_links(&bpf), 1, "counting attached once");
    assert!(exit_link.exists());
    let latency = RegisterOptions {
        syscall_latency: true,
        ..RegisterOptions::default()
    };
    let rb = bpf.register(&b.path, &latency).unwrap();
    assert_eq!(hook_links(&bpf), 2, "counting and latency");
    bpf.unregister(ra.cgroup_id).unwrap();
    assert_eq!(hook_links(&bpf), 2, "b is still registered");
    bpf.register(&b.path, &RegisterOptions::default()).unwrap();
    assert_eq!(hook_links(&bpf), 1, "latency no longer asked for");
    bpf.unregister(rb.cgroup_id).unwrap();
    assert_eq!(hook_links(&bpf), 0, "detached with the last container");
    assert!(!exit_link.exists());

    // The sweep that unregisters the last (deleted) container detaches it too.
    let c = TestCgroup::new("hook-c");
    let rc = bpf.register(&c.path, &RegisterOptions::default()).unwrap();
    assert_eq!(hook_links(&bpf), 1);
    remove_cgroup_tree(&c.path);
    let deadline = Instant::now() + Duration::from_secs(5);
    while bpf.sweep().unwrap().containers != vec![rc.cgroup_id] {
        assert!(Instant::now() < deadline, "deleted cgroup never swept");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(hook_links(&bpf), 0, "detached by the sweep");
    assert!(!exit_link.exists());
}

#[test]
fn concurrent_registrations_keep_the_hook_attached_exactly_while_needed() {
    const WORKERS: usize = 4;
    const CYCLES: usize = 15;
    let pins = TestPins::new("hook-race");
    let cgroups: Vec<TestCgroup> = (0..WORKERS)
        .map(|i| TestCgroup::new(&format!("hook-race-{i}")))
        .collect();
    drop(pins.load());
    let root = pins.root.clone();
    std::thread::scope(|scope| {
        for cgroup in &cgroups {
            let root = &root;
            scope.spawn(move || {
                // A handle of its own, as another lucid process would have.
                let mut bpf = Programs::open(root).unwrap();
                for _ in 0..CYCLES {
                    let reg = bpf
                        .register(&cgroup.path, &RegisterOptions::default())
                        .unwrap();
                    assert_eq!(
                        run_in_cgroup(&cgroup.path, || getppid(100)),
                        0,
                        "worker child"
                    );
                    assert!(
                        getppid_count(&bpf, reg.cgroup_id) >= 100,
                        "counted while registered"
                    );
                    assert_eq!(
                        hook_links(&bpf),
                        1,
                        "one counting link, whoever attached it"
                    );
                    bpf.unregister(reg.cgroup_id).unwrap();
                }
            });
        }
    });
    let bpf = Programs::open(&root).unwrap();
    assert!(bpf.registered().unwrap().is_empty());
    assert_eq!(
        hook_links(&bpf),
        0,
        "left attached after the last unregister"
    );
}

#[test]
fn cgroups_made_below_a_registered_container_count_for_it() {
    let pins = TestPins::new("nested-late");
    let cgroup = TestCgroup::new("nested-late");
    let unwatched = TestCgroup::new("nested-late-other");
    let mut bpf = pins.load();
    let reg = bpf
        .register(&cgroup.path, &RegisterOptions::default())
        .unwrap();
    assert_eq!(nested_flag(&bpf), 0, "no nested cgroup yet");
    unwatched.child("inner");
    assert_eq!(nested_flag(&bpf), 0, "a cgroup below an unwatched one");

    let inner = cgroup.child("inner");
    let deeper = Path::new(&inner).join("deeper");
    std::fs::create_dir(&deeper).unwrap();
    assert_eq!(nested_flag(&bpf), 1, "raised by the cgroup_mkdir program");
    assert_eq!(run_in_cgroup(&deeper, || getppid(1000)), 0);
    assert_eq!(
        run_in_cgroup(unwatched.path.join("inner").as_path(), || getppid(1000)),
        0
    );
    assert_eq!(getppid_count(&bpf, reg.cgroup_id), 1000);

    bpf.unregister(reg.cgroup_id).unwrap();
    assert_eq!(nested_flag(&bpf), 0, "cleared with the container");
}

#[test]
fn nested_cgroups_of_one_container_keep_ancestor_lookups_after_another_goes() {
    let pins = TestPins::new("nested-keep");
    let with = TestCgroup::new("nested-keep-with");
    let without = TestCgroup::new("nested-keep-without");
    let mut bpf = pins.load();
    let inner = with.child("inner");
    let reg_with = bpf
        .register(&with.path, &RegisterOptions::default())
        .unwrap();
    assert_eq!(
        nested_flag(&bpf),
        1,
        "a nested cgroup made before registration"
    );
    let reg_without = bpf
        .register(&without.path, &RegisterOptions::default())
        .unwrap();
    bpf.unregister(reg_without.cgroup_id).unwrap();
    assert_eq!(nested_flag(&bpf), 1, "kept for the other container");
    assert_eq!(run_in_cgroup(&inner, || getppid(500)), 0);
    assert_eq!(getppid_count(&bpf, reg_with.cgroup_id), 500);
    bpf.unregister(reg_with.cgroup_id).unwrap();
    assert_eq!(nested_flag(&bpf), 0);
}
