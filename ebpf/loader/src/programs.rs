//! The handle on the pinned programs and maps: open or load, register and unregister
//! containers, sweep what deleted containers left behind.
// The per-attachment cgroup storage maps are deprecated upstream in favour of
// BPF_MAP_TYPE_CGRP_STORAGE, which is keyed by cgroup alone; per attachment is what we need.
#![allow(deprecated)]
use std::{
    collections::BTreeSet,
    os::fd::AsFd as _,
    path::{Path, PathBuf},
};

use aya::{
    maps::{Array, CgroupStorage, HashMap, Map, MapData, MapError, PerCpuCgroupStorage},
    programs::{
        links::FdLink, BtfTracePoint, CgroupAttachMode, CgroupDevice, CgroupSkb,
        CgroupSkbAttachType, FEntry, FExit, ProgramError,
    },
};
use lucid_ebpf_common::{
    feature, feature_state, ContainerCounters, DeviceRules, FeatureState, Inflight, LatencyHist,
    LatencyKey, NetCounters, SyscallCount, Watch, WatchedCgroup, WatchedLevels, LAYOUT_VERSION,
    MAX_CGROUP_LEVEL, MAX_CONTAINERS, MAX_WATCHED_LEVELS, SYSCALL_SLOTS, WATCHED_TABLE_SIZE,
    WATCHED_TOMBSTONE, WATCH_LATENCY,
};

use crate::{
    cgroup::Cgroup,
    devices::{self, DeviceRule},
    error::Unavailable,
    layout::{self, Layout},
    load,
    settings::Settings,
    sys, watched, Error,
};

/// Attach type numbers the kernel uses in cgroup storage keys.
pub(crate) const BPF_CGROUP_INET_INGRESS: u32 = 0;
pub(crate) const BPF_CGROUP_INET_EGRESS: u32 = 1;
pub(crate) const BPF_CGROUP_DEVICE: u32 = 6;

/// How a container is registered.
#[derive(Clone, Debug, Default)]
pub struct RegisterOptions {
    /// Record a syscall latency histogram (annotation `lucid.ebpf/syscall-latency: "true"`);
    /// every syscall on the host pays a second trampoline while any container has it.
    pub syscall_latency: bool,
    /// Device rules for the cgroup v2 device controller, already in the order to apply (see
    /// [`devices::runc_rules`]); `None` attaches no device filter.
    pub devices: Option<Vec<DeviceRule>>,
}

/// A registered container.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Registered {
    /// The v2 cgroup id, the key of every read.
    pub cgroup_id: u64,
    /// Its row in the counter arrays.
    pub slot: u32,
    /// Its level in the v2 hierarchy.
    pub level: u32,
    /// Whether syscall latency is recorded.
    pub syscall_latency: bool,
    /// Whether a device filter is attached.
    pub devices: bool,
}

/// Whether [`Programs::open_or_load`] found the pins or made them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Opened {
    /// The programs were already loaded and pinned.
    Existing,
    /// This call loaded and pinned them.
    Loaded,
}

/// Which hook counts syscalls (chosen at load: the first the kernel accepts).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SyscallHook {
    /// fexit (and fentry for latency) on `x64_sys_call`: only syscalls pay, on the fast path.
    Fexit,
    /// The `raw_syscalls` BTF tracepoints: every task of the host takes the slow syscall path.
    Tracepoint,
}

/// What [`Programs::sweep`] removed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SweepReport {
    /// Containers unregistered: their registration was cut short, or their cgroup was gone.
    pub containers: Vec<u64>,
    /// Directories of other layout versions removed or emptied.
    pub old_versions: Vec<PathBuf>,
    /// Leftover loads (names without dots: bpffs refuses them) of processes that died mid-load, removed.
    pub abandoned_loads: Vec<PathBuf>,
}

/// The pinned maps, opened; one per process (the runtime) or long-lived (the exporter).
pub struct Programs {
    pub(crate) layout: Layout,
    root: PathBuf,
    opened: Opened,
    pub(crate) watched: Array<MapData, WatchedCgroup>,
    /// A second descriptor of `WATCHED` for batched reads.
    pub(crate) watched_fd: std::os::fd::OwnedFd,
    pub(crate) levels: Array<MapData, WatchedLevels>,
    pub(crate) nested: Array<MapData, u64>,
    pub(crate) syscalls: Array<MapData, SyscallCount>,
    /// A second descriptor of `SYSCALLS` for batched reads, which aya does not offer.
    pub(crate) syscalls_fd: std::os::fd::OwnedFd,
    pub(crate) latency: HashMap<MapData, LatencyKey, LatencyHist>,
    pub(crate) inflight: HashMap<MapData, u32, Inflight>,
    pub(crate) counters: Array<MapData, ContainerCounters>,
    pub(crate) stats: Array<MapData, u64>,
    pub(crate) net: PerCpuCgroupStorage<MapData, NetCounters>,
    pub(crate) device_rules: CgroupStorage<MapData, DeviceRules>,
    pub(crate) features: Array<MapData, FeatureState>,
}

/// Whether a feature works on this host.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Availability {
    /// Loaded and in use, by this program of the object.
    On {
        /// The program the kernel took (e.g. `syscall_exit_tp` for the tracepoint hook).
        program: String,
    },
    /// Loaded, but switched off by the host's settings.
    SwitchedOff {
        /// The setting and its file.
        setting: String,
    },
    /// The kernel took none of the feature's programs.
    Unsupported {
        /// Each program's refusal.
        reason: String,
    },
}

/// One feature and whether it works here.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FeatureStatus {
    /// Its name (`devices`, `network`, `syscalls`, ...).
    pub name: &'static str,
    /// Whether it works.
    pub availability: Availability,
}

impl FeatureStatus {
    /// Whether the feature is on.
    pub fn is_on(&self) -> bool {
        matches!(self.availability, Availability::On { .. })
    }

    /// Why it is off, if it is.
    pub fn why_off(&self) -> Option<&str> {
        match &self.availability {
            Availability::On { .. } => None,
            Availability::SwitchedOff { setting } => Some(setting),
            Availability::Unsupported { reason } => Some(reason),
        }
    }
}

fn open_map<T>(layout: &Layout, name: &'static str) -> Result<T, Error>
where
    T: TryFrom<Map, Error = MapError>,
{
    let path = layout.map(name);
    let data = MapData::from_pin(&path).map_err(|e| match e {
        MapError::SyscallError(s) => Error::pin("opening", &path, s.io_error),
        other => Error::map(name)(other),
    })?;
    let map = Map::from_map_data(data).map_err(Error::map(name))?;
    T::try_from(map).map_err(Error::map(name))
}

fn program_err(program: &'static str) -> impl FnOnce(ProgramError) -> Error {
    move |e| Error::Program {
        program,
        detail: e.to_string(),
    }
}

/// Detaches the link pinned at `path` at once and removes the pin.
fn remove_pin(path: &Path) -> Result<bool, Error> {
    match sys::detach_and_unpin(path) {
        Ok(removed) => Ok(removed),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(Error::pin("detaching", path, e)),
    }
}

impl Programs {
    /// Opens the programs pinned under `pin_root` (e.g. [`crate::DEFAULT_PIN_ROOT`]) by an
    /// earlier load; fails with [`Error::IncompletePins`] or a `Pin` error when there are none.
    ///
    /// This is the runtime's normal path: no object parsing, no verifier, a few bpf(2) calls.
    pub fn open(pin_root: &Path) -> Result<Self, Error> {
        let layout = Layout::current(pin_root);
        Self::open_layout(pin_root, layout, Opened::Existing)
    }

    fn open_layout(root: &Path, layout: Layout, opened: Opened) -> Result<Self, Error> {
        Ok(Self {
            watched: open_map(&layout, "WATCHED")?,
            watched_fd: {
                let path = layout.map("WATCHED");
                sys::obj_get(&path).map_err(|e| Error::pin("opening", &path, e))?
            },
            levels: open_map(&layout, "LEVELS")?,
            nested: open_map(&layout, "NESTED")?,
            syscalls: open_map(&layout, "SYSCALLS")?,
            syscalls_fd: {
                let path = layout.map("SYSCALLS");
                sys::obj_get(&path).map_err(|e| Error::pin("opening", &path, e))?
            },
            latency: open_map(&layout, "LATENCY")?,
            inflight: open_map(&layout, "INFLIGHT")?,
            counters: open_map(&layout, "COUNTERS")?,
            stats: open_map(&layout, "STATS")?,
            net: open_map(&layout, "NET")?,
            device_rules: open_map(&layout, "DEVICE_RULES")?,
            features: open_map(&layout, "FEATURES")?,
            root: root.to_owned(),
            layout,
            opened,
        })
    }

    /// Opens the pinned programs, or loads, attaches and pins them first if this version is
    /// not pinned yet (then also sweeps pins of other versions and of deleted containers).
    ///
    /// Safe to call from several processes at once: each loads into a private directory and
    /// the first to rename it into place wins; the others drop theirs and open the winner's.
    pub fn open_or_load(pin_root: &Path) -> Result<Self, Error> {
        let layout = Layout::current(pin_root);
        if layout.dir.exists() {
            if layout.required_pins().iter().any(|p| !p.exists()) {
                return Err(Error::IncompletePins(layout.dir.clone()));
            }
            let mut programs = Self::open(pin_root)?;
            if let Err(e) = programs.sweep_cut_short() {
                log::warn!(
                    "sweeping registrations cut short under {}: {e}",
                    layout.dir.display()
                );
            }
            return Ok(programs);
        }
        layout::ensure_bpffs(pin_root)?;
        let staging =
            Layout::new(pin_root.join(format!("loading-v{LAYOUT_VERSION}-{}", std::process::id())));
        let settings = Settings::load()?;
        let loaded = load::load_and_pin(&staging, &settings);
        if let Err(e) = loaded {
            if let Err(cleanup) = layout::remove_pin_root(&staging.dir) {
                log::warn!("{cleanup}");
            }
            return Err(e);
        }
        let opened = match std::fs::rename(&staging.dir, &layout.dir) {
            Ok(()) => Opened::Loaded,
            Err(e) if layout.dir.exists() => {
                log::debug!(
                    "another process pinned {} first ({e})",
                    layout.dir.display()
                );
                layout::remove_pin_root(&staging.dir)?;
                Opened::Existing
            }
            Err(e) => {
                layout::remove_pin_root(&staging.dir)?;
                return Err(Error::pin("publishing", &layout.dir, e));
            }
        };
        let mut programs = Self::open_layout(pin_root, layout, opened)?;
        if opened == Opened::Loaded {
            let report = programs.sweep()?;
            if report != SweepReport::default() {
                log::info!("removed stale eBPF pins: {report:?}");
            }
        }
        Ok(programs)
    }

    /// The hook counting syscalls on this host, or `None` when the kernel took neither.
    pub fn syscall_hook(&self) -> Option<SyscallHook> {
        if self.layout.prog(layout::PROG_SYSCALL_EXIT_FEXIT).exists() {
            Some(SyscallHook::Fexit)
        } else if self.layout.prog(layout::PROG_SYSCALL_EXIT_TP).exists() {
            Some(SyscallHook::Tracepoint)
        } else {
            None
        }
    }

    /// What the load made of each feature, with the host's settings applied (a feature the
    /// kernel took but the settings switch off is [`Availability::SwitchedOff`]).
    pub fn features(&self) -> Result<Vec<FeatureStatus>, Error> {
        let settings = Settings::load()?;
        let mut out = Vec::with_capacity(feature::COUNT as usize);
        for index in 0..feature::COUNT {
            let record = self
                .features
                .get(&index, 0)
                .map_err(Error::map("FEATURES"))?;
            let text = |bytes: &[u8]| {
                let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
                String::from_utf8_lossy(&bytes[..end]).into_owned()
            };
            let syscall_feature = index == feature::SYSCALLS || index == feature::SYSCALL_LATENCY;
            let availability = match record.state {
                feature_state::LOADED if syscall_feature && !settings.syscalls => {
                    Availability::SwitchedOff {
                        setting: format!("ebpf.syscalls = off in {}", settings.describe_source()),
                    }
                }
                feature_state::LOADED => Availability::On {
                    program: text(&record.program),
                },
                feature_state::UNSUPPORTED => Availability::Unsupported {
                    reason: text(&record.reason),
                },
                _ => Availability::Unsupported {
                    reason: "not recorded by the load (an interrupted load: remove the pins)"
                        .to_owned(),
                },
            };
            out.push(FeatureStatus {
                name: feature::NAMES[index as usize],
                availability,
            });
        }
        Ok(out)
    }

    /// The status of one feature (a [`lucid_ebpf_common::feature`] index).
    pub fn feature(&self, index: u32) -> Result<FeatureStatus, Error> {
        self.features()?
            .into_iter()
            .nth(index as usize)
            .ok_or_else(|| Error::Program {
                program: "(features)",
                detail: format!("no feature {index}"),
            })
    }

    /// The kernel ids of this version's syscall programs (counting and latency), to tell
    /// lucid's links apart from others in [`crate::syscall_tracepoint_links`].
    pub fn syscall_program_ids(&self) -> Result<Vec<u32>, Error> {
        let mut ids = Vec::new();
        let progs = self.layout.dir.join("progs");
        let links = self.layout.dir.join("links");
        for (dir, is_link) in [(progs, false), (links, true)] {
            let entries = std::fs::read_dir(&dir).map_err(|e| Error::pin("listing", &dir, e))?;
            for entry in entries.flatten() {
                if !entry.file_name().to_string_lossy().starts_with("syscall_") {
                    continue;
                }
                let path = entry.path();
                let fd = sys::obj_get(&path).map_err(|e| Error::pin("opening", &path, e))?;
                let id = if is_link {
                    sys::link_prog_id(fd.as_fd())
                } else {
                    sys::prog_id(fd.as_fd())
                };
                ids.push(id.map_err(|e| Error::pin("inspecting", &path, e))?);
            }
        }
        ids.sort_unstable();
        ids.dedup();
        Ok(ids)
    }

    /// Whether this handle found the programs pinned or loaded them.
    pub fn opened(&self) -> Opened {
        self.opened
    }

    /// The version directory holding the pins (`<pin root>/v<LAYOUT_VERSION>`).
    pub fn pin_dir(&self) -> &Path {
        &self.layout.dir
    }

    /// Watches the container whose v2 cgroup directory is `cgroup_dir`: its processes (also in
    /// cgroups nested below) are counted, its network traffic counted, and its device filter
    /// attached if `options.devices` is set. The links are pinned, so they outlive this process.
    ///
    /// Registering an already registered cgroup updates its options and re-attaches missing links.
    /// A new registration that fails leaves nothing; one cut short by a kill is removed by the
    /// next [`Programs::register`], [`Programs::unregister`] or [`Programs::open_or_load`].
    pub fn register(
        &mut self,
        cgroup_dir: &Path,
        options: &RegisterOptions,
    ) -> Result<Registered, Error> {
        let cgroup = Cgroup::from_path(cgroup_dir)?;
        if cgroup.level > MAX_CGROUP_LEVEL {
            return Err(Error::TooDeep {
                path: cgroup.path,
                level: cgroup.level,
                max: MAX_CGROUP_LEVEL,
            });
        }
        let device_table = options
            .devices
            .as_deref()
            .map(devices::compile)
            .transpose()?;
        let _lock = sys::DirLock::exclusive(&self.layout.dir)
            .map_err(|e| Error::pin("locking", &self.layout.dir, e))?;
        let mut table = self.watched_table()?;
        if !self.sweep_cut_short_locked(&table).is_empty() {
            table = self.watched_table()?;
        }
        let new = watched::find(&table, cgroup.id).is_none();
        let registered = self.register_locked(&cgroup, options, device_table.as_ref(), &table);
        if registered.is_err() && new {
            // A new container is registered completely or not at all.
            match self.unregister_locked(cgroup.id) {
                Ok(()) | Err(Error::NotRegistered(_)) => {}
                Err(cleanup) => log::warn!(
                    "undoing the registration of cgroup {}: {cleanup}",
                    cgroup.id
                ),
            }
        }
        registered
    }

    /// [`Programs::register`] under the version directory's lock, with the `WATCHED` table
    /// as read under it. Pins the links first and records the entry last, so a registration
    /// cut short (an error, undone by the caller; a kill, swept by the next holder of the
    /// lock) has a pin directory and no entry.
    fn register_locked(
        &mut self,
        cgroup: &Cgroup,
        options: &RegisterOptions,
        device_table: Option<&DeviceRules>,
        table: &[WatchedCgroup],
    ) -> Result<Registered, Error> {
        let existing = entries(table);
        let index =
            watched::insert_index(table, cgroup.id).ok_or(Error::WatchedTableFull(cgroup.id))?;
        let previous = existing
            .iter()
            .find(|(id, _)| *id == cgroup.id)
            .map(|(_, w)| *w);
        let slot = match previous {
            Some(w) => w.slot,
            None => {
                let used: BTreeSet<u32> = existing.iter().map(|(_, w)| w.slot).collect();
                let slot = (0..MAX_CONTAINERS)
                    .find(|s| !used.contains(s))
                    .ok_or(Error::Full(MAX_CONTAINERS))?;
                // Counts a deleted container's last in-flight syscalls may have left behind.
                self.clear_slot(slot)?;
                slot
            }
        };
        let watch = Watch {
            slot,
            flags: if options.syscall_latency {
                WATCH_LATENCY
            } else {
                0
            },
            level: cgroup.level,
            reserved: 0,
        };
        let mut all: Vec<(u64, Watch)> = existing
            .into_iter()
            .filter(|(id, _)| *id != cgroup.id)
            .collect();
        all.push((cgroup.id, watch));
        let levels = levels_of(&all)?;

        let dir = self.layout.container(cgroup.id);
        std::fs::create_dir_all(&dir).map_err(|e| Error::pin("creating", &dir, e))?;
        let cgroup_fd = std::fs::File::open(&cgroup.path)
            .map_err(|e| Error::pin("opening cgroup", &cgroup.path, e))?;
        for (prog, attach) in [
            (layout::PROG_NET_INGRESS, CgroupSkbAttachType::Ingress),
            (layout::PROG_NET_EGRESS, CgroupSkbAttachType::Egress),
        ] {
            let pin = dir.join(prog);
            // Not pinned: the kernel refused the network feature (FEATURES says why).
            if pin.exists() || !self.layout.prog(prog).exists() {
                continue;
            }
            let mut p =
                CgroupSkb::from_pin(self.layout.prog(prog), attach).map_err(program_err(prog))?;
            let id = p
                // BPF links always stack with other programs; the link API takes no ALLOW_MULTI flag.
                .attach(cgroup_fd.as_fd(), attach, CgroupAttachMode::Single)
                .map_err(program_err(prog))?;
            let link =
                FdLink::try_from(p.take_link(id).map_err(program_err(prog))?).map_err(|e| {
                    Error::Program {
                        program: prog,
                        detail: e.to_string(),
                    }
                })?;
            link.pin(&pin)
                .map_err(|e| Error::pin("pinning", &pin, std::io::Error::other(e.to_string())))?;
        }
        let device_pin = dir.join(layout::PROG_DEVICE);
        if let Some(rules) = device_table {
            if !self.layout.prog(layout::PROG_DEVICE).exists() {
                let reason = self
                    .feature(feature::DEVICES)?
                    .why_off()
                    .unwrap_or("not pinned")
                    .to_owned();
                return Err(Error::Unavailable(Unavailable::Feature {
                    feature: "devices",
                    reason,
                }));
            }
            if !device_pin.exists() {
                let p = CgroupDevice::from_pin(self.layout.prog(layout::PROG_DEVICE))
                    .map_err(program_err(layout::PROG_DEVICE))?;
                let prog_fd = p.fd().map_err(program_err(layout::PROG_DEVICE))?;
                // aya 0.14 cannot turn a cgroup_device link into a pinnable FdLink.
                let link =
                    sys::cgroup_link_create(prog_fd.as_fd(), cgroup_fd.as_fd(), BPF_CGROUP_DEVICE)
                        .map_err(|e| Error::Program {
                            program: layout::PROG_DEVICE,
                            detail: format!("attaching to {}: {e}", cgroup.path.display()),
                        })?;
                sys::obj_pin(link.as_fd(), &device_pin)
                    .map_err(|e| Error::pin("pinning", &device_pin, e))?;
            }
            // Until this write the storage is zero: no rule, default deny.
            let key = aya::maps::CgroupStorageKey::new(cgroup.id, BPF_CGROUP_DEVICE);
            self.device_rules
                .insert(key, rules, 0)
                .map_err(Error::map("DEVICE_RULES"))?;
        } else if remove_pin(&device_pin)? {
            log::debug!("device filter of cgroup {} removed", cgroup.id);
        }

        // Counting starts only once the entry is in; the level list goes after it so the
        // programs never look at a level with no entry to find.
        self.write_watched(table, index, cgroup.id, watch)?;
        self.levels
            .set(0, levels, 0)
            .map_err(Error::map("LEVELS"))?;
        // Cgroups made below the container's before its entry was in; the cgroup_mkdir program
        // notes those made from now on.
        let descendants = crate::cgroup::descendants(&cgroup.path)
            .map_err(|e| Error::pin("reading cgroup.stat of", &cgroup.path, e))?;
        if descendants > 0 {
            self.note_nested(slot, descendants)?;
        }
        // A new container the kernel will not count is not left registered (the caller undoes it).
        self.sync_syscall_links(&all)?;
        Ok(Registered {
            cgroup_id: cgroup.id,
            slot,
            level: cgroup.level,
            syscall_latency: options.syscall_latency,
            devices: device_table.is_some(),
        })
    }

    /// Stops watching cgroup `cgroup_id`: removes its links (and so its network counters and
    /// device filter), its pins and every map entry it had. Unregistering an unknown id removes
    /// whatever pins it left and returns [`Error::NotRegistered`].
    pub fn unregister(&mut self, cgroup_id: u64) -> Result<(), Error> {
        let _lock = sys::DirLock::exclusive(&self.layout.dir)
            .map_err(|e| Error::pin("locking", &self.layout.dir, e))?;
        let table = self.watched_table()?;
        self.sweep_cut_short_locked(&table);
        self.unregister_locked(cgroup_id)
    }

    /// Whether `cgroup_id` has a pin directory: it is registered, or a registration of it was
    /// cut short (its process killed between pinning and recording; see
    /// [`Programs::sweep_cut_short`]).
    pub fn has_pins(&self, cgroup_id: u64) -> bool {
        self.layout.container(cgroup_id).exists()
    }

    /// Removes what registrations and unregistrations cut short by a dead process left: a pin
    /// directory with no `WATCHED` entry (its links detached, its storage zeroed) and an entry
    /// with no pin directory. Returns their cgroup ids.
    ///
    /// Both are only seen outside the version directory's lock when the process that held it
    /// died, so this runs under that lock; [`Programs::register`] and
    /// [`Programs::unregister`] do it first, and [`Programs::open_or_load`] on opening.
    pub fn sweep_cut_short(&mut self) -> Result<Vec<u64>, Error> {
        let _lock = sys::DirLock::exclusive(&self.layout.dir)
            .map_err(|e| Error::pin("locking", &self.layout.dir, e))?;
        let table = self.watched_table()?;
        Ok(self.sweep_cut_short_locked(&table))
    }

    /// [`Programs::sweep_cut_short`] under the lock, with the `WATCHED` table as read under
    /// it. What cannot be removed is logged and left for a later sweep: it never fails the
    /// registration or unregistration of another container.
    fn sweep_cut_short_locked(&mut self, table: &[WatchedCgroup]) -> Vec<u64> {
        let dir = self.layout.containers();
        let listing = match std::fs::read_dir(&dir) {
            Ok(listing) => listing,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Vec::new(),
            Err(e) => {
                log::warn!("listing {}: {e}", dir.display());
                return Vec::new();
            }
        };
        let pinned: BTreeSet<u64> = listing
            .flatten()
            .filter_map(|entry| entry.file_name().to_str()?.parse().ok())
            .collect();
        let recorded: BTreeSet<u64> = entries(table).into_iter().map(|(id, _)| id).collect();
        let mut swept = Vec::new();
        for &id in pinned.symmetric_difference(&recorded) {
            match self.unregister_locked(id) {
                Ok(()) | Err(Error::NotRegistered(_)) => swept.push(id),
                Err(e) => log::warn!("removing the registration of cgroup {id} cut short: {e}"),
            }
        }
        if !swept.is_empty() {
            log::info!(
                "removed the eBPF pins and entries of registrations cut short: cgroups {swept:?}"
            );
        }
        swept
    }

    fn unregister_locked(&mut self, cgroup_id: u64) -> Result<(), Error> {
        let dir = self.layout.container(cgroup_id);
        let had_pins = dir.exists();
        if had_pins {
            for prog in [
                layout::PROG_NET_INGRESS,
                layout::PROG_NET_EGRESS,
                layout::PROG_DEVICE,
            ] {
                remove_pin(&dir.join(prog))?;
            }
            std::fs::remove_dir(&dir).map_err(|e| Error::pin("removing", &dir, e))?;
        }
        self.zero_cgroup_storage(cgroup_id)?;
        let mut table = self.watched_table()?;
        let Some(index) = watched::find(&table, cgroup_id) else {
            return Err(Error::NotRegistered(cgroup_id));
        };
        let watch = table[index as usize].watch;
        let rest: Vec<(u64, Watch)> = entries(&table)
            .into_iter()
            .filter(|(id, _)| *id != cgroup_id)
            .collect();
        // Levels first, so no program looks for an entry about to go.
        let levels = levels_of(&rest)?;
        self.levels
            .set(0, levels, 0)
            .map_err(Error::map("LEVELS"))?;
        table[index as usize].cgroup_id = WATCHED_TOMBSTONE;
        self.set_watched(index, table[index as usize])?;
        for free in watched::reclaimable(&table, index) {
            table[free as usize].cgroup_id = 0;
            self.set_watched(free, table[free as usize])?;
        }
        self.sync_nested(&rest)?;
        self.sync_syscall_links(&rest)?;
        self.clear_slot(watch.slot)?;
        Ok(())
    }

    /// The whole `WATCHED` table, in one batched read.
    fn watched_table(&self) -> Result<Vec<WatchedCgroup>, Error> {
        let mut table = vec![WatchedCgroup::default(); WATCHED_TABLE_SIZE as usize];
        let read = sys::array_lookup_batch(self.watched_fd.as_fd(), 0, &mut table)
            .map_err(|e| Error::pin("reading", &self.layout.map("WATCHED"), e))?;
        if read != table.len() {
            return Err(Error::pin(
                "reading",
                &self.layout.map("WATCHED"),
                std::io::Error::other(format!("{read} of {} entries read", table.len())),
            ));
        }
        Ok(table)
    }

    fn set_watched(&mut self, index: u32, entry: WatchedCgroup) -> Result<(), Error> {
        self.watched
            .set(index, entry, 0)
            .map_err(Error::map("WATCHED"))
    }

    /// Writes `cgroup_id`'s entry at `index`. A program may read an entry while user space
    /// writes it (a plain copy): the options go in first under the entry's old id, so a program
    /// never sees the new id with another container's slot.
    fn write_watched(
        &mut self,
        table: &[WatchedCgroup],
        index: u32,
        cgroup_id: u64,
        watch: Watch,
    ) -> Result<(), Error> {
        let old = table[index as usize].cgroup_id;
        if old != cgroup_id {
            self.set_watched(
                index,
                WatchedCgroup {
                    cgroup_id: old,
                    watch,
                },
            )?;
        }
        self.set_watched(index, WatchedCgroup { cgroup_id, watch })
    }

    /// Counts `descendants` cgroups below the container in `slot` and raises `NESTED`.
    fn note_nested(&mut self, slot: u32, descendants: u64) -> Result<(), Error> {
        let mut counters = self
            .counters
            .get(&slot, 0)
            .map_err(Error::map("COUNTERS"))?;
        if counters.nested_cgroups == 0 {
            counters.nested_cgroups = descendants;
            self.counters
                .set(slot, counters, 0)
                .map_err(Error::map("COUNTERS"))?;
        }
        self.nested.set(0, 1, 0).map_err(Error::map("NESTED"))
    }

    /// Clears `NESTED` unless a container of `rest` has nested cgroups. The cgroup_mkdir
    /// program counts a container's nested cgroup before it raises `NESTED`, so reading the
    /// counts again after clearing catches one made meanwhile.
    fn sync_nested(&mut self, rest: &[(u64, Watch)]) -> Result<(), Error> {
        let any_nested = |programs: &Self| -> Result<bool, Error> {
            for (_, w) in rest {
                let counters = programs
                    .counters
                    .get(&w.slot, 0)
                    .map_err(Error::map("COUNTERS"))?;
                if counters.nested_cgroups != 0 {
                    return Ok(true);
                }
            }
            Ok(false)
        };
        if any_nested(self)? {
            return self.nested.set(0, 1, 0).map_err(Error::map("NESTED"));
        }
        self.nested.set(0, 0, 0).map_err(Error::map("NESTED"))?;
        if any_nested(self)? {
            self.nested.set(0, 1, 0).map_err(Error::map("NESTED"))?;
        }
        Ok(())
    }

    /// Zeroes the container's per-attachment storage (network counters, device rules). The
    /// kernel keeps those entries until the cgroup itself is freed, and cannot delete them.
    fn zero_cgroup_storage(&mut self, cgroup_id: u64) -> Result<(), Error> {
        let cpus = aya::util::nr_cpus().map_err(|(_, e)| {
            Error::pin("reading", Path::new("/sys/devices/system/cpu/possible"), e)
        })?;
        for attach in [BPF_CGROUP_INET_INGRESS, BPF_CGROUP_INET_EGRESS] {
            let key = aya::maps::CgroupStorageKey::new(cgroup_id, attach);
            let zeros = aya::maps::PerCpuValues::try_from(vec![NetCounters::default(); cpus])
                .map_err(|e| Error::pin("sizing per-CPU values for", Path::new("NET"), e))?;
            match self.net.insert(key, zeros, 0) {
                Ok(()) | Err(MapError::KeyNotFound) => {}
                Err(MapError::SyscallError(e))
                    if e.io_error.raw_os_error() == Some(libc::ENOENT) => {}
                Err(e) => return Err(Error::map("NET")(e)),
            }
        }
        let key = aya::maps::CgroupStorageKey::new(cgroup_id, BPF_CGROUP_DEVICE);
        match self.device_rules.insert(key, DeviceRules::default(), 0) {
            Ok(()) | Err(MapError::KeyNotFound) => {}
            Err(MapError::SyscallError(e)) if e.io_error.raw_os_error() == Some(libc::ENOENT) => {}
            Err(e) => return Err(Error::map("DEVICE_RULES")(e)),
        }
        Ok(())
    }

    /// Zeroes a slot's counters and removes its latency and in-flight entries.
    fn clear_slot(&mut self, slot: u32) -> Result<(), Error> {
        let zero = SyscallCount::default();
        for nr in 0..SYSCALL_SLOTS {
            let index = slot * SYSCALL_SLOTS + nr;
            let current = self
                .syscalls
                .get(&index, 0)
                .map_err(Error::map("SYSCALLS"))?;
            if current != zero {
                self.syscalls
                    .set(index, zero, 0)
                    .map_err(Error::map("SYSCALLS"))?;
            }
        }
        self.counters
            .set(slot, ContainerCounters::default(), 0)
            .map_err(Error::map("COUNTERS"))?;
        let keys: Vec<LatencyKey> = self
            .latency
            .keys()
            .filter_map(Result::ok)
            .filter(|k| k.slot == slot)
            .collect();
        for key in keys {
            match self.latency.remove(&key) {
                Ok(()) | Err(MapError::KeyNotFound) => {}
                Err(e) => return Err(Error::map("LATENCY")(e)),
            }
        }
        let tids: Vec<u32> = self
            .inflight
            .iter()
            .filter_map(Result::ok)
            .filter(|(_, v)| v.slot == slot)
            .map(|(k, _)| k)
            .collect();
        for tid in tids {
            match self.inflight.remove(&tid) {
                Ok(()) | Err(MapError::KeyNotFound) => {}
                Err(e) => return Err(Error::map("INFLIGHT")(e)),
            }
        }
        Ok(())
    }

    /// Attaches the syscall programs while they have work and detaches them otherwise: the
    /// counting program while any container is registered, the latency entry program while one
    /// asks for latency. Every syscall of the host pays for an attached hook (on the
    /// tracepoints, even the syscalls of tasks outside any container), so with nothing
    /// registered none is attached. Called under the version directory's lock.
    fn sync_syscall_links(&mut self, all: &[(u64, Watch)]) -> Result<(), Error> {
        // Switched off host-wide: as if no container were registered.
        let all = if Settings::load()?.syscalls { all } else { &[] };
        let latency = all.iter().any(|(_, w)| w.flags & WATCH_LATENCY != 0);
        // Entry before exit when attaching, so that no exit finds a missing start; the reverse
        // when detaching.
        if !latency {
            remove_pin(&self.layout.link(layout::LINK_SYSCALL_ENTER))?;
        }
        let exit = self.layout.link(layout::LINK_SYSCALL_EXIT);
        if all.is_empty() {
            remove_pin(&exit)?;
        }
        if latency {
            self.attach_syscall_program(
                layout::LINK_SYSCALL_ENTER,
                layout::PROG_SYSCALL_ENTER_FENTRY,
                layout::PROG_SYSCALL_ENTER_TP,
                true,
            )?;
        }
        if !all.is_empty() {
            self.attach_syscall_program(
                layout::LINK_SYSCALL_EXIT,
                layout::PROG_SYSCALL_EXIT_FEXIT,
                layout::PROG_SYSCALL_EXIT_TP,
                false,
            )?;
        }
        Ok(())
    }

    /// Attaches the pinned program (`trampoline_prog`, fentry if `entry` else fexit, where the
    /// kernel took those; else `tp_prog`) and pins the link at `links/<link>`, unless it is
    /// pinned already.
    fn attach_syscall_program(
        &self,
        link: &'static str,
        trampoline_prog: &'static str,
        tp_prog: &'static str,
        entry: bool,
    ) -> Result<(), Error> {
        let pin = self.layout.link(link);
        if pin.exists() {
            return Ok(());
        }
        let trampoline = self.layout.prog(trampoline_prog);
        if !trampoline.exists() && !self.layout.prog(tp_prog).exists() {
            // The kernel took neither hook: the feature is off (FEATURES says why).
            return Ok(());
        }
        let fd_link: FdLink = if trampoline.exists() {
            if entry {
                let mut p = FEntry::from_pin(trampoline).map_err(program_err(trampoline_prog))?;
                let id = p.attach().map_err(program_err(trampoline_prog))?;
                p.take_link(id)
                    .map_err(program_err(trampoline_prog))?
                    .into()
            } else {
                let mut p = FExit::from_pin(trampoline).map_err(program_err(trampoline_prog))?;
                let id = p.attach().map_err(program_err(trampoline_prog))?;
                p.take_link(id)
                    .map_err(program_err(trampoline_prog))?
                    .into()
            }
        } else {
            let mut p =
                BtfTracePoint::from_pin(self.layout.prog(tp_prog)).map_err(program_err(tp_prog))?;
            let id = p.attach().map_err(program_err(tp_prog))?;
            p.take_link(id).map_err(program_err(tp_prog))?.into()
        };
        fd_link
            .pin(&pin)
            .map_err(|e| Error::pin("pinning", &pin, std::io::Error::other(e.to_string())))?;
        Ok(())
    }

    /// The registered cgroup ids with their slots and options, for discovery by the exporter.
    pub fn registered(&self) -> Result<Vec<Registered>, Error> {
        let mut out: Vec<Registered> = self
            .watched_entries()?
            .into_iter()
            .map(|(id, w)| Registered {
                cgroup_id: id,
                slot: w.slot,
                level: w.level,
                syscall_latency: w.flags & WATCH_LATENCY != 0,
                devices: self.layout.container(id).join(layout::PROG_DEVICE).exists(),
            })
            .collect();
        out.sort_by_key(|r| r.cgroup_id);
        Ok(out)
    }

    pub(crate) fn watched_entries(&self) -> Result<Vec<(u64, Watch)>, Error> {
        Ok(entries(&self.watched_table()?))
    }

    /// The watch of `cgroup_id`, reading only the entries its lookup probes (readers such as
    /// the exporter call this per container and scrape).
    pub(crate) fn watch_of(&self, cgroup_id: u64) -> Result<Watch, Error> {
        for index in watched::probes(cgroup_id) {
            let entry = self.watched.get(&index, 0).map_err(Error::map("WATCHED"))?;
            if entry.cgroup_id == cgroup_id {
                return Ok(entry.watch);
            }
            if entry.cgroup_id == 0 {
                break;
            }
        }
        Err(Error::NotRegistered(cgroup_id))
    }

    /// Removes what deleted containers and other versions left: registrations cut short (see
    /// [`Programs::sweep_cut_short`]) and containers whose cgroup is gone (found through their
    /// links) are unregistered, directories of other layout versions lose their global pins
    /// and stale containers, abandoned loads are removed.
    ///
    /// A container of another version whose cgroup still exists keeps its links (its device
    /// filter keeps working) until its cgroup goes and a later sweep removes them.
    pub fn sweep(&mut self) -> Result<SweepReport, Error> {
        let mut report = SweepReport::default();
        {
            let _lock = sys::DirLock::exclusive(&self.layout.dir)
                .map_err(|e| Error::pin("locking", &self.layout.dir, e))?;
            let table = self.watched_table()?;
            report.containers = self.sweep_cut_short_locked(&table);
            for id in stale_containers(&self.layout)? {
                match self.unregister_locked(id) {
                    Ok(()) | Err(Error::NotRegistered(_)) => report.containers.push(id),
                    Err(e) => return Err(e),
                }
            }
            // A process that died between a map update and the matching attach or detach.
            let rest = self.watched_entries()?;
            self.sync_syscall_links(&rest)?;
        }
        let entries = match std::fs::read_dir(&self.root) {
            Ok(entries) => entries,
            Err(e) => return Err(Error::pin("listing", &self.root, e)),
        };
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let path = entry.path();
            if path == self.layout.dir {
                continue;
            }
            if let Some(pid) = name
                .strip_prefix("loading-v")
                .and_then(|rest| rest.split_once('-'))
                .and_then(|(_, pid)| pid.parse::<i32>().ok())
            {
                if !Path::new(&format!("/proc/{pid}")).exists() {
                    layout::remove_pin_root(&path)?;
                    report.abandoned_loads.push(path);
                }
                continue;
            }
            if name.starts_with('v') && name[1..].parse::<u32>().is_ok() {
                sweep_old_version(&Layout::new(path.clone()))?;
                report.old_versions.push(path);
            }
        }
        Ok(report)
    }
}

/// The live entries of the `WATCHED` table: (cgroup id, watch).
fn entries(table: &[WatchedCgroup]) -> Vec<(u64, Watch)> {
    watched::live(table)
        .map(|(e, _)| (e.cgroup_id, e.watch))
        .collect()
}

/// The distinct levels of `entries`, deepest first.
fn levels_of(entries: &[(u64, Watch)]) -> Result<WatchedLevels, Error> {
    let set: BTreeSet<u32> = entries.iter().map(|(_, w)| w.level).collect();
    if set.len() > MAX_WATCHED_LEVELS {
        return Err(Error::TooManyLevels(MAX_WATCHED_LEVELS));
    }
    let mut levels = WatchedLevels::default();
    for (i, level) in set.iter().rev().enumerate() {
        levels.levels[i] = *level;
    }
    levels.len = set.len() as u32;
    Ok(levels)
}

/// Containers of `layout` whose cgroup is gone: every link left is detached from its cgroup.
fn stale_containers(layout: &Layout) -> Result<Vec<u64>, Error> {
    let dir = layout.containers();
    let entries = match std::fs::read_dir(&dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(Error::pin("listing", &dir, e)),
    };
    let mut stale = Vec::new();
    for entry in entries.flatten() {
        let Ok(id) = entry.file_name().to_string_lossy().parse::<u64>() else {
            continue;
        };
        if container_links_dead(&entry.path())? {
            stale.push(id);
        }
    }
    Ok(stale)
}

/// True when no link under `dir` is attached to a live cgroup.
fn container_links_dead(dir: &Path) -> Result<bool, Error> {
    let entries = std::fs::read_dir(dir).map_err(|e| Error::pin("listing", dir, e))?;
    for entry in entries.flatten() {
        // A pin that is not a link (or unreadable) does not keep the container alive.
        let Ok(fd) = sys::obj_get(&entry.path()) else {
            continue;
        };
        let alive = sys::link_cgroup_id(fd.as_fd())
            .map(|id| id != 0)
            .unwrap_or(false);
        if alive {
            return Ok(false);
        }
    }
    Ok(true)
}

/// Strips an old version directory of its global pins and dead containers; removes it when
/// nothing is left.
fn sweep_old_version(old: &Layout) -> Result<(), Error> {
    for sub in ["links", "progs", "maps"] {
        layout::remove_pin_root(&old.dir.join(sub))?;
    }
    for id in stale_containers(old)? {
        layout::remove_pin_root(&old.container(id))?;
    }
    let containers = old.containers();
    let empty = std::fs::read_dir(&containers)
        .map(|mut d| d.next().is_none())
        .unwrap_or(true);
    if empty {
        layout::remove_pin_root(&old.dir)?;
    }
    Ok(())
}
