//! Bad input: deleted cgroups, stale pins of another version, a full slot table, incomplete
//! pins (needs root and BPF; never skipped).
mod support;

use lucid_ebpf::{Error, Programs, RegisterOptions};
use support::{remove_cgroup_tree, run_in_cgroup, TestCgroup, TestPins};

#[test]
fn a_cgroup_deleted_while_registered_is_swept_without_leaks() {
    let pins = TestPins::new("deleted");
    let cgroup = TestCgroup::new("deleted");
    let mut bpf = pins.load();
    let reg = bpf
        .register(&cgroup.path, &RegisterOptions::default())
        .unwrap();
    let mut reader = bpf.events().unwrap();
    assert_eq!(run_in_cgroup(&cgroup.path, || 3), 3);
    // Events of the container are still in the ring when its cgroup goes.
    remove_cgroup_tree(&cgroup.path);
    let events = reader.drain();
    assert!(events.iter().all(|e| e.cgroup_id() == reg.cgroup_id));
    // The kernel releases a removed cgroup (and detaches its links) asynchronously.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        let report = bpf.sweep().unwrap();
        if report.containers == vec![reg.cgroup_id] {
            break;
        }
        assert!(report.containers.is_empty(), "{report:?}");
        assert!(
            std::time::Instant::now() < deadline,
            "deleted cgroup never swept"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert!(bpf.registered().unwrap().is_empty());
    assert!(!bpf
        .pin_dir()
        .join("containers")
        .join(reg.cgroup_id.to_string())
        .exists());
    assert!(matches!(
        bpf.unregister(reg.cgroup_id),
        Err(Error::NotRegistered(_))
    ));
}

#[test]
fn pins_of_an_older_version_are_swept_but_live_containers_keep_their_links() {
    let pins = TestPins::new("stale");
    let live = TestCgroup::new("stale-live");
    let dead = TestCgroup::new("stale-dead");
    let (live_id, dead_id) = {
        let mut bpf = pins.load();
        let l = bpf
            .register(&live.path, &RegisterOptions::default())
            .unwrap();
        let d = bpf
            .register(&dead.path, &RegisterOptions::default())
            .unwrap();
        (l.cgroup_id, d.cgroup_id)
    };
    // Make the current pins look like those of an older layout.
    let old = pins.root.join("v0");
    std::fs::rename(
        pins.root.join(format!("v{}", lucid_ebpf::LAYOUT_VERSION)),
        &old,
    )
    .unwrap();
    drop(dead);
    let bpf = pins.load();
    assert_eq!(bpf.opened(), lucid_ebpf::Opened::Loaded);
    assert!(
        !old.join("maps").exists() && !old.join("links").exists() && !old.join("progs").exists()
    );
    assert!(old
        .join("containers")
        .join(live_id.to_string())
        .join("net_ingress")
        .exists());
    assert!(!old.join("containers").join(dead_id.to_string()).exists());
    drop(live);
    let mut bpf = bpf;
    // The old directory goes once its last container's cgroup is gone.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while old.exists() {
        bpf.sweep().unwrap();
        assert!(
            std::time::Instant::now() < deadline,
            "old version directory left"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

#[test]
fn a_full_slot_table_is_an_error_that_leaves_nothing_behind() {
    let pins = TestPins::new("full");
    let parent = TestCgroup::new("full");
    let mut bpf = pins.load();
    let max = lucid_ebpf_common::MAX_CONTAINERS as usize;
    let mut ids = Vec::new();
    for i in 0..max {
        let dir = parent.child(&format!("c{i}"));
        ids.push(
            bpf.register(&dir, &RegisterOptions::default())
                .unwrap()
                .cgroup_id,
        );
    }
    let extra = parent.child("extra");
    let err = bpf
        .register(&extra, &RegisterOptions::default())
        .unwrap_err();
    assert!(matches!(err, Error::Full(_)), "{err}");
    let extra_id = std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(&extra).unwrap());
    assert!(!bpf
        .pin_dir()
        .join("containers")
        .join(extra_id.to_string())
        .exists());
    for id in ids {
        bpf.unregister(id).unwrap();
    }
    assert!(bpf.registered().unwrap().is_empty());
}

#[test]
fn incomplete_pins_are_reported_not_used() {
    let pins = TestPins::new("incomplete");
    std::fs::create_dir_all(pins.root.join(format!("v{}", lucid_ebpf::LAYOUT_VERSION))).unwrap();
    let err = Programs::open_or_load(&pins.root).err().expect("must fail");
    assert!(matches!(err, Error::IncompletePins(_)), "{err}");
    assert!(!err.is_unavailable());
}
