//! Reading what the programs counted, for `lucid syscalls` and the exporter.
use aya::maps::{CgroupStorageKey, MapError};
use lucid_ebpf_common::{stat, LatencyKey, SyscallCount, LATENCY_BUCKETS, SYSCALL_SLOTS};

use crate::{
    programs::{BPF_CGROUP_DEVICE, BPF_CGROUP_INET_EGRESS, BPF_CGROUP_INET_INGRESS},
    sys, syscall_names, Error, Programs,
};

/// A log2 histogram of durations: `buckets[i]` counts calls that took `[2^i, 2^(i+1))` ns.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LatencyHistogram {
    /// Counts per power-of-two bucket.
    pub buckets: [u64; LATENCY_BUCKETS],
}

impl LatencyHistogram {
    /// Calls recorded.
    pub fn samples(&self) -> u64 {
        self.buckets.iter().sum()
    }

    /// Upper bound in ns of the bucket holding quantile `q` (0.0-1.0), `None` when empty.
    pub fn quantile_upper_ns(&self, q: f64) -> Option<u64> {
        let total = self.samples();
        if total == 0 {
            return None;
        }
        let target = (q.clamp(0.0, 1.0) * total as f64).ceil().max(1.0) as u64;
        let mut seen = 0;
        for (i, n) in self.buckets.iter().enumerate() {
            seen += n;
            if seen >= target {
                return Some(1u64 << (i + 1));
            }
        }
        Some(1u64 << LATENCY_BUCKETS)
    }
}

/// One row of a container's syscall table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SyscallRow {
    /// x86_64 syscall number.
    pub nr: u32,
    /// Its name, or `syscall_<nr>` for a number this table does not know.
    pub name: String,
    /// Calls that returned.
    pub count: u64,
    /// Calls that returned an error.
    pub errors: u64,
    /// Latency histogram, when the container records latency.
    pub latency: Option<LatencyHistogram>,
}

/// A container's network and process counters.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ContainerStats {
    /// Bytes received (IP length, headers included).
    pub rx_bytes: u64,
    /// Packets received.
    pub rx_packets: u64,
    /// Bytes sent (IP length, headers included).
    pub tx_bytes: u64,
    /// Packets sent.
    pub tx_packets: u64,
    /// Successful execs.
    pub execs: u64,
    /// Processes that exited.
    pub exits: u64,
    /// Tasks killed by the OOM killer.
    pub oom_kills: u64,
    /// Device accesses the device filter denied (0 without a filter).
    pub devices_denied: u64,
}

/// Host-wide health counters of the programs.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Health {
    /// Exec/exit events dropped because the ring buffer was full.
    pub events_dropped: u64,
    /// Latency samples lost: too many threads in syscalls at once.
    pub inflight_full: u64,
    /// Latency samples lost: the histogram map was full.
    pub latency_full: u64,
    /// Syscalls with a number beyond the table.
    pub unknown_syscalls: u64,
    /// Corrupt watch entries met.
    pub bad_slots: u64,
    /// OOM victims that could not be tracked.
    pub oom_victims_full: u64,
}

/// How many entries lucid's per-container maps hold: what a leak check compares before and
/// after containers come and go (`cargo xtask bench soak`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MapEntries {
    /// Live `WATCHED` entries: registered containers.
    pub watched: usize,
    /// `LATENCY` histograms (container slot × syscall).
    pub latency: usize,
    /// `INFLIGHT` entries (threads inside a timed syscall right now).
    pub inflight: usize,
    /// `NET` and `DEVICE_RULES` per-attachment cgroup storage; the kernel frees these with
    /// their cgroup, shortly after it is removed.
    pub cgroup_storage: usize,
    /// Counter slots no registered container uses that still hold a count (`COUNTERS`,
    /// `SYSCALLS`): `unregister` clears a slot, so this stays 0.
    pub stale_slots: usize,
}

impl Programs {
    /// Counts the entries of the per-container maps.
    pub fn map_entries(&self) -> Result<MapEntries, Error> {
        use std::os::fd::AsFd as _;
        let keys = |name: &'static str, key_size: usize| -> Result<usize, Error> {
            let path = self.layout.map(name);
            let fd = sys::obj_get(&path).map_err(|e| Error::pin("opening", &path, e))?;
            sys::map_key_count(fd.as_fd(), key_size).map_err(|e| Error::pin("walking", &path, e))
        };
        // struct bpf_cgroup_storage_key: u64 cgroup inode id, u32 attach type, padding.
        let storage_key = 16;
        let watched = self.watched_entries()?;
        let used: std::collections::BTreeSet<u32> = watched.iter().map(|(_, w)| w.slot).collect();
        let mut stale_slots = 0;
        for slot in 0..lucid_ebpf_common::MAX_CONTAINERS {
            if used.contains(&slot) {
                continue;
            }
            let counters = self
                .counters
                .get(&slot, 0)
                .map_err(Error::map("COUNTERS"))?;
            let syscalls = self.slot_counts(slot)?;
            if counters != Default::default() || syscalls.iter().any(|c| c.count != 0) {
                stale_slots += 1;
            }
        }
        Ok(MapEntries {
            watched: watched.len(),
            latency: keys("LATENCY", std::mem::size_of::<LatencyKey>())?,
            inflight: keys("INFLIGHT", std::mem::size_of::<u32>())?,
            cgroup_storage: keys("NET", storage_key)? + keys("DEVICE_RULES", storage_key)?,
            stale_slots,
        })
    }

    /// The syscall table of a registered container: every syscall it made since registration,
    /// by count, highest first (the rows `lucid syscalls` prints, like `strace -c`).
    pub fn syscalls(&self, cgroup_id: u64) -> Result<Vec<SyscallRow>, Error> {
        let watch = self.watch_of(cgroup_id)?;
        let counts = self.slot_counts(watch.slot)?;
        let mut rows = Vec::new();
        for (nr, c) in (0..SYSCALL_SLOTS).zip(counts) {
            if c.count == 0 {
                continue;
            }
            let latency = if watch.flags & lucid_ebpf_common::WATCH_LATENCY != 0 {
                match self.latency.get(
                    &LatencyKey {
                        slot: watch.slot,
                        nr,
                    },
                    0,
                ) {
                    Ok(h) => Some(LatencyHistogram { buckets: h.buckets }),
                    Err(MapError::KeyNotFound) => Some(LatencyHistogram {
                        buckets: [0; LATENCY_BUCKETS],
                    }),
                    Err(e) => return Err(Error::map("LATENCY")(e)),
                }
            } else {
                None
            };
            rows.push(SyscallRow {
                nr,
                name: syscall_names::name(nr)
                    .map(str::to_owned)
                    .unwrap_or_else(|| format!("syscall_{nr}")),
                count: c.count,
                errors: c.errors,
                latency,
            });
        }
        rows.sort_by(|a, b| b.count.cmp(&a.count).then(a.nr.cmp(&b.nr)));
        Ok(rows)
    }

    /// The slot's row of the `SYSCALLS` array: one batched read (the exporter reads every
    /// container each scrape), or one lookup per entry where the kernel has no batch lookup.
    fn slot_counts(&self, slot: u32) -> Result<Vec<SyscallCount>, Error> {
        use std::os::fd::AsFd as _;
        let mut counts = vec![SyscallCount::default(); SYSCALL_SLOTS as usize];
        match sys::array_lookup_batch(self.syscalls_fd.as_fd(), slot * SYSCALL_SLOTS, &mut counts) {
            Ok(n) if n == counts.len() => return Ok(counts),
            Ok(n) => log::debug!("batched SYSCALLS read returned {n} entries; reading one by one"),
            Err(e) => log::debug!("batched SYSCALLS read failed ({e}); reading one by one"),
        }
        for (nr, c) in (0..SYSCALL_SLOTS).zip(counts.iter_mut()) {
            *c = self
                .syscalls
                .get(&(slot * SYSCALL_SLOTS + nr), 0)
                .map_err(Error::map("SYSCALLS"))?;
        }
        Ok(counts)
    }

    /// Network and process counters of a registered container.
    pub fn container_stats(&self, cgroup_id: u64) -> Result<ContainerStats, Error> {
        let watch = self.watch_of(cgroup_id)?;
        let c = self
            .counters
            .get(&watch.slot, 0)
            .map_err(Error::map("COUNTERS"))?;
        let net = |attach| -> Result<(u64, u64), Error> {
            match self.net.get(CgroupStorageKey::new(cgroup_id, attach), 0) {
                Ok(per_cpu) => Ok(per_cpu
                    .iter()
                    .fold((0, 0), |(b, p), n| (b + n.bytes, p + n.packets))),
                Err(MapError::KeyNotFound) => Ok((0, 0)),
                Err(e) => Err(Error::map("NET")(e)),
            }
        };
        let (rx_bytes, rx_packets) = net(BPF_CGROUP_INET_INGRESS)?;
        let (tx_bytes, tx_packets) = net(BPF_CGROUP_INET_EGRESS)?;
        let devices_denied = match self
            .device_rules
            .get(CgroupStorageKey::new(cgroup_id, BPF_CGROUP_DEVICE), 0)
        {
            Ok(rules) => rules.denied,
            Err(MapError::KeyNotFound) => 0,
            Err(e) => return Err(Error::map("DEVICE_RULES")(e)),
        };
        Ok(ContainerStats {
            rx_bytes,
            rx_packets,
            tx_bytes,
            tx_packets,
            execs: c.execs,
            exits: c.exits,
            oom_kills: c.oom_kills,
            devices_denied,
        })
    }

    /// Health counters shared by all containers.
    pub fn health(&self) -> Result<Health, Error> {
        let get = |i| self.stats.get(&i, 0).map_err(Error::map("STATS"));
        Ok(Health {
            events_dropped: get(stat::EVENTS_DROPPED)?,
            inflight_full: get(stat::INFLIGHT_FULL)?,
            latency_full: get(stat::LATENCY_FULL)?,
            unknown_syscalls: get(stat::UNKNOWN_SYSCALL)?,
            bad_slots: get(stat::BAD_SLOT)?,
            oom_victims_full: get(stat::OOM_VICTIMS_FULL)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantile_points_at_the_bucket_upper_bound() {
        let mut buckets = [0; LATENCY_BUCKETS];
        buckets[6] = 90; // 64-127 ns
        buckets[12] = 10; // 4-8 us
        let h = LatencyHistogram { buckets };
        assert_eq!(h.samples(), 100);
        assert_eq!(h.quantile_upper_ns(0.5), Some(128));
        assert_eq!(h.quantile_upper_ns(0.99), Some(8192));
        let empty = LatencyHistogram {
            buckets: [0; LATENCY_BUCKETS],
        };
        assert_eq!(empty.quantile_upper_ns(0.5), None);
    }
}
