//! The `WATCHED` table: an open-addressing hash table in an array map, written only here (under
//! the version directory's lock) and read by the programs with inlined array lookups.
//!
//! Linear probing from [`watched_home`], at most [`WATCHED_PROBES`] entries; removed entries
//! become tombstones, which lookups probe past and registrations reuse, and which turn back into
//! never-used entries once no lookup can need to pass them.
use lucid_ebpf_common::{
    watched_home, WatchedCgroup, WATCHED_PROBES, WATCHED_TABLE_SIZE, WATCHED_TOMBSTONE,
};

/// The entries `cgroup_id`'s lookup probes, in order.
pub(crate) fn probes(cgroup_id: u64) -> impl Iterator<Item = u32> {
    let home = watched_home(cgroup_id);
    (0..WATCHED_PROBES).map(move |i| (home + i) & (WATCHED_TABLE_SIZE - 1))
}

/// The index of `cgroup_id` in `table`, as the programs find it.
pub(crate) fn find(table: &[WatchedCgroup], cgroup_id: u64) -> Option<u32> {
    for index in probes(cgroup_id) {
        let entry = table.get(index as usize)?;
        if entry.cgroup_id == cgroup_id {
            return Some(index);
        }
        if entry.cgroup_id == 0 {
            return None;
        }
    }
    None
}

/// Where to write `cgroup_id`: where it is already, else the first free entry its lookup
/// reaches; `None` when all the entries it may use are taken.
pub(crate) fn insert_index(table: &[WatchedCgroup], cgroup_id: u64) -> Option<u32> {
    if let Some(index) = find(table, cgroup_id) {
        return Some(index);
    }
    probes(cgroup_id).find(|&index| {
        table
            .get(index as usize)
            .is_some_and(|e| e.cgroup_id == 0 || e.cgroup_id == WATCHED_TOMBSTONE)
    })
}

/// The tombstones that may become never-used entries once the entry at `removed` is a
/// tombstone: a run of tombstones ending at `removed` followed by a never-used entry, which no
/// lookup of a present id passes through.
pub(crate) fn reclaimable(table: &[WatchedCgroup], removed: u32) -> Vec<u32> {
    let mask = WATCHED_TABLE_SIZE - 1;
    let next = (removed + 1) & mask;
    if table.get(next as usize).is_none_or(|e| e.cgroup_id != 0) {
        return Vec::new();
    }
    let mut out = Vec::new();
    let mut index = removed;
    while out.len() < WATCHED_TABLE_SIZE as usize
        && table
            .get(index as usize)
            .is_some_and(|e| e.cgroup_id == WATCHED_TOMBSTONE || index == removed)
    {
        out.push(index);
        index = index.wrapping_sub(1) & mask;
    }
    out
}

/// The live entries: (cgroup id, index).
pub(crate) fn live(table: &[WatchedCgroup]) -> impl Iterator<Item = (&WatchedCgroup, u32)> {
    table
        .iter()
        .zip(0u32..)
        .filter(|(e, _)| e.cgroup_id != 0 && e.cgroup_id != WATCHED_TOMBSTONE)
}

#[cfg(test)]
mod tests {
    use lucid_ebpf_common::Watch;

    use super::*;

    fn table() -> Vec<WatchedCgroup> {
        vec![WatchedCgroup::default(); WATCHED_TABLE_SIZE as usize]
    }

    fn put(table: &mut [WatchedCgroup], id: u64, slot: u32) -> u32 {
        let index = insert_index(table, id).expect("room in the table");
        table[index as usize] = WatchedCgroup {
            cgroup_id: id,
            watch: Watch {
                slot,
                ..Watch::default()
            },
        };
        index
    }

    fn remove(table: &mut [WatchedCgroup], id: u64) {
        let index = find(table, id).expect("present");
        table[index as usize].cgroup_id = WATCHED_TOMBSTONE;
        for i in reclaimable(table, index) {
            table[i as usize].cgroup_id = 0;
        }
    }

    /// Ids whose home entry is `home`, found by search (the hash is not invertible by hand).
    fn ids_with_home(home: u32, n: usize) -> Vec<u64> {
        (1u64..)
            .filter(|&id| watched_home(id) == home)
            .take(n)
            .collect()
    }

    #[test]
    fn colliding_ids_are_found_after_an_earlier_one_is_removed() {
        let mut t = table();
        let ids = ids_with_home(7, 3);
        for (slot, &id) in ids.iter().enumerate() {
            put(&mut t, id, slot as u32);
        }
        remove(&mut t, ids[0]);
        assert_eq!(find(&t, ids[0]), None);
        assert_eq!(t[find(&t, ids[1]).unwrap() as usize].watch.slot, 1);
        assert_eq!(t[find(&t, ids[2]).unwrap() as usize].watch.slot, 2);
        // The freed entry is reused, before the never-used one after the chain.
        assert_eq!(insert_index(&t, ids_with_home(7, 4)[3]), Some(7));
    }

    #[test]
    fn tombstones_become_never_used_once_nothing_needs_them() {
        let mut t = table();
        let ids = ids_with_home(4095, 3);
        for (slot, &id) in ids.iter().enumerate() {
            put(&mut t, id, slot as u32);
        }
        // The chain wraps around: 4095, 0, 1.
        assert_eq!(find(&t, ids[2]), Some(1));
        remove(&mut t, ids[1]);
        assert_eq!(t[0].cgroup_id, WATCHED_TOMBSTONE, "ids[2] lies beyond it");
        remove(&mut t, ids[2]);
        assert_eq!((t[0].cgroup_id, t[1].cgroup_id), (0, 0));
        remove(&mut t, ids[0]);
        assert!(t.iter().all(|e| e.cgroup_id == 0));
    }

    #[test]
    fn a_full_probe_window_refuses_one_more_id() {
        let mut t = table();
        let ids = ids_with_home(100, WATCHED_PROBES as usize + 1);
        for (slot, &id) in ids.iter().take(WATCHED_PROBES as usize).enumerate() {
            put(&mut t, id, slot as u32);
        }
        assert_eq!(insert_index(&t, ids[WATCHED_PROBES as usize]), None);
        assert_eq!(live(&t).count(), WATCHED_PROBES as usize);
    }

    #[test]
    fn registering_again_keeps_the_entry_where_it_is() {
        let mut t = table();
        let ids = ids_with_home(9, 2);
        put(&mut t, ids[0], 0);
        let at = put(&mut t, ids[1], 1);
        remove(&mut t, ids[0]);
        assert_eq!(insert_index(&t, ids[1]), Some(at));
    }
}
