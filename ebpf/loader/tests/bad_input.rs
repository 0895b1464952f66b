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

/// Leaves `cgroup` as a registration killed after pinning its links and before recording it:
/// a pin directory with live links and no `WATCHED` entry. Returns its cgroup id.
fn cut_short_before_the_entry(bpf: &mut Programs, cgroup: &std::path::Path) -> u64 {
    use aya::maps::{Array, Map, MapData};
    use lucid_ebpf_common::{WatchedCgroup, WATCHED_TABLE_SIZE};
    let id = bpf
        .register(cgroup, &RegisterOptions::default())
        .unwrap()
        .cgroup_id;
    let pin = bpf.pin_dir().join("maps/WATCHED");
    let map = Map::from_map_data(MapData::from_pin(&pin).unwrap()).unwrap();
    let mut watched: Array<_, WatchedCgroup> = map.try_into().unwrap();
    let index = (0..WATCHED_TABLE_SIZE)
        .find(|&i| watched.get(&i, 0).unwrap().cgroup_id == id)
        .expect("the entry register wrote");
    watched.set(index, WatchedCgroup::default(), 0).unwrap();
    assert!(bpf.registered().unwrap().iter().all(|r| r.cgroup_id != id));
    let links = std::fs::read_dir(container_pins(bpf, id)).unwrap().count();
    assert!(links >= 2, "the network links are pinned ({links})");
    id
}

/// Leaves `cgroup` as an unregistration killed after removing its pins and before its entry.
fn cut_short_after_the_pins(bpf: &mut Programs, cgroup: &std::path::Path) -> u64 {
    let id = bpf
        .register(cgroup, &RegisterOptions::default())
        .unwrap()
        .cgroup_id;
    // Unpinning the only reference of a link detaches it.
    std::fs::remove_dir_all(container_pins(bpf, id)).unwrap();
    assert!(bpf.registered().unwrap().iter().any(|r| r.cgroup_id == id));
    id
}

fn container_pins(bpf: &Programs, cgroup_id: u64) -> std::path::PathBuf {
    bpf.pin_dir().join("containers").join(cgroup_id.to_string())
}

#[test]
fn registrations_cut_short_are_swept_by_the_next_register_unregister_or_open() {
    let pins = TestPins::new("cut-short");
    let victim = TestCgroup::new("cut-short-victim");
    let other = TestCgroup::new("cut-short-other");
    let mut bpf = pins.load();
    let nothing_of = |bpf: &Programs, id: u64| {
        assert!(!bpf.has_pins(id), "pins of cgroup {id} left");
        assert!(!container_pins(bpf, id).exists());
        assert!(
            bpf.registered().unwrap().iter().all(|r| r.cgroup_id != id),
            "entry of cgroup {id} left"
        );
    };

    // The next registration of another container.
    let id = cut_short_before_the_entry(&mut bpf, &victim.path);
    assert!(bpf.has_pins(id));
    let other_id = bpf
        .register(&other.path, &RegisterOptions::default())
        .unwrap()
        .cgroup_id;
    nothing_of(&bpf, id);

    // The next unregistration of another container.
    let id = cut_short_before_the_entry(&mut bpf, &victim.path);
    bpf.unregister(other_id).unwrap();
    nothing_of(&bpf, id);
    nothing_of(&bpf, other_id);

    // The next opening by the exporter (which opens with open_or_load).
    let id = cut_short_before_the_entry(&mut bpf, &victim.path);
    drop(bpf);
    let bpf = Programs::open_or_load(&pins.root).unwrap();
    assert_eq!(bpf.opened(), lucid_ebpf::Opened::Existing);
    nothing_of(&bpf, id);

    // An entry whose pins are gone, both ways asked for.
    let mut bpf = bpf;
    let id = cut_short_after_the_pins(&mut bpf, &victim.path);
    assert_eq!(bpf.sweep_cut_short().unwrap(), vec![id]);
    nothing_of(&bpf, id);
    assert_eq!(bpf.sweep_cut_short().unwrap(), Vec::<u64>::new());
    let entries = bpf.map_entries().unwrap();
    assert_eq!(entries.watched, 0, "{entries:?}");
}
