//! Which containers exist: the runtime's state root, scanned before each
//! scrape. A state file is parsed again only when its inode, size or
//! modification time changed (the runtime replaces it by rename), so a scan of
//! an unchanged root costs one directory listing and one `stat` per container.
//!
//! Scanning was chosen over inotify after measuring both (docs/exporter.md):
//! with 500 containers an unchanged scan takes about a millisecond, needs no
//! watch per container (inotify's per-user watch limit) and cannot miss an event.
//!
//! The root is read the way `lucid` reads it ([`lucid_layout::state::files`]): no
//! symbolic link is followed below it, nothing but a regular file is opened,
//! no open can block, and no file is read past [`MAX_FILE_BYTES`]. An entry
//! that breaks those rules, or whose state is not one lucid writes (another
//! container's ID, a label value past [`crate::labels::MAX_LABEL_BYTES`], a cgroup outside
//! the host's hierarchies), is a bad entry: counted and logged once per
//! version of the file, and never served.

use std::collections::{BTreeMap, HashMap};
use std::os::fd::{AsFd, BorrowedFd};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use lucid_layout::hierarchy::Hierarchy;
use lucid_layout::state::files::{self, EntryError, MAX_FILE_BYTES};
use lucid_layout::state::PhaseTiming;
use lucid_layout::state::{self, StateError, STATE_FILE};
use nix::dir::{Dir, Type};
use nix::sys::stat::{FileStat, SFlag};

use crate::labels::ContainerLabels;
use crate::resources::{CgroupFiles, OpenFiles};

/// The most set-up phases a container's state may record: lucid's init
/// records about a dozen, plus one per hook.
pub const MAX_PHASES: usize = 256;
/// The longest phase name (the `phase` label): lucid's are span names such
/// as `rootfs.mount` or `hook.createContainer`.
pub const MAX_PHASE_NAME_BYTES: usize = 64;
/// The longest `created` time: RFC 3339 with nanoseconds and an offset is 35 bytes.
const MAX_CREATED_BYTES: usize = 64;

/// What the exporter knows of one container.
#[derive(Debug)]
pub struct Container {
    /// The container ID.
    pub id: String,
    /// Its labels.
    pub labels: ContainerLabels,
    /// The labels rendered for the text format, once.
    pub label_text: String,
    /// When `create` began.
    pub created: SystemTime,
    /// `created` as the runtime wrote it (with the ID, identifies this container
    /// among later ones that reuse the ID).
    pub created_text: String,
    /// Where its resource figures are read.
    pub cgroup: CgroupFiles,
    /// Its cgroup files, open between scrapes (one scrape thread at a time uses them).
    pub open_files: Mutex<OpenFiles>,
    /// Its v2 cgroup id, the key of its eBPF counters.
    pub cgroup_id: Option<u64>,
    /// The set-up phases the init process measured (names and times only:
    /// their attributes and errors are not kept).
    pub phases: Vec<PhaseTiming>,
    /// The id of the container's trace (32 hex digits), empty when the
    /// runtime recorded none (telemetry off).
    pub trace_id: String,
}

impl Container {
    /// The key that tells this container from a later one with the same ID.
    pub fn key(&self) -> String {
        format!("{}@{}", self.id, self.created_text)
    }

    /// Seconds from the start of `create` to the end of the last phase, when
    /// phases were recorded.
    pub fn start_duration(&self) -> Option<f64> {
        let end = self.phases.iter().map(|p| p.end_ns).max()?;
        let created = self.created.duration_since(UNIX_EPOCH).ok()?.as_nanos() as u64;
        Some(end.saturating_sub(created) as f64 / 1e9)
    }
}

/// A file's identity: it changes whenever the runtime replaces the file.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct FileKey {
    ino: u64,
    size: i64,
    mtime_ns: i128,
}

impl FileKey {
    fn of(st: &FileStat) -> Self {
        FileKey {
            ino: st.st_ino,
            size: st.st_size,
            mtime_ns: i128::from(st.st_mtime) * 1_000_000_000 + i128::from(st.st_mtime_nsec),
        }
    }

    /// The key of the entry `rel` itself, a link included (for counting a
    /// refused entry once; nothing is read through it).
    fn of_entry(root: BorrowedFd<'_>, rel: &str) -> Self {
        nix::sys::stat::fstatat(root, rel, nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW)
            .map(|st| FileKey::of(&st))
            .unwrap_or_default()
    }
}

/// Problems met during a scan, for the error counters.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ScanErrors {
    /// State files that did not parse, or hold what lucid never writes (each
    /// version of a file counted once).
    pub corrupt: u64,
    /// State files or the root that could not be read, and entries that are
    /// not what lucid makes: links, FIFOs, devices, files too large (each
    /// version of an entry counted once).
    pub unreadable: u64,
}

/// Why an entry is refused, and which counter it goes to.
enum Refusal {
    Corrupt(String),
    Unreadable(String),
}

/// One scan's findings.
#[derive(Default)]
struct Pass {
    /// Keys of the containers present.
    seen: Vec<String>,
    /// Keys of the bad entries present.
    seen_bad: Vec<String>,
    errors: ScanErrors,
}

/// The containers under a state root, kept current by [`Inventory::scan`].
pub struct Inventory {
    root: PathBuf,
    hierarchies: Vec<Hierarchy>,
    /// Keyed by the container's directory under the root (`ID`, or
    /// `NAMESPACE/ID` one level down).
    containers: BTreeMap<String, (FileKey, Arc<Container>)>,
    /// Entries refused, so each bad version is counted and logged once.
    bad: HashMap<String, FileKey>,
}

impl Inventory {
    /// An empty inventory of `root`; `hierarchies` are the host's cgroup mounts.
    pub fn new(root: &Path, hierarchies: Vec<Hierarchy>) -> Self {
        Inventory {
            root: root.to_path_buf(),
            hierarchies,
            containers: BTreeMap::new(),
            bad: HashMap::new(),
        }
    }

    /// The state root.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The containers found by the last scan, by ID.
    pub fn containers(&self) -> Vec<Arc<Container>> {
        self.containers.values().map(|(_, c)| c.clone()).collect()
    }

    /// Brings the inventory up to date with the state root.
    ///
    /// A directory of the root without a `state.json` may be a namespace
    /// directory: containerd's runc shim gives the runtime `--root
    /// <Root>/<namespace>` (`/run/containerd/lucid/k8s.io`), so the containers
    /// one level down are found too when the exporter watches `<Root>`.
    pub fn scan(&mut self) -> ScanErrors {
        let mut pass = Pass::default();
        match files::open_root(&self.root) {
            Ok(root) => {
                if let Err(e) = self.scan_dir(root.as_fd(), None, &mut pass) {
                    log::warn!("listing {}: {e}", self.root.display());
                    pass.errors.unreadable += 1;
                    return pass.errors;
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                log::warn!("opening {}: {e}", self.root.display());
                pass.errors.unreadable += 1;
                return pass.errors;
            }
        }
        pass.seen.sort_unstable();
        self.containers
            .retain(|key, _| pass.seen.binary_search(key).is_ok());
        pass.seen_bad.sort_unstable();
        self.bad
            .retain(|key, _| pass.seen_bad.binary_search(key).is_ok());
        pass.errors
    }

    /// Scans the entries of the root (`namespace` none) or of one namespace
    /// directory under it. Containers are keyed by their path under the root.
    fn scan_dir(
        &mut self,
        root: BorrowedFd<'_>,
        namespace: Option<&str>,
        pass: &mut Pass,
    ) -> Result<(), EntryError> {
        let dir = files::open_dir(root, Path::new(namespace.unwrap_or(".")))?;
        let mut dir = Dir::from_fd(dir).map_err(EntryError::from)?;
        for entry in dir.iter() {
            let entry = entry.map_err(EntryError::from)?;
            let Ok(name) = entry.file_name().to_str() else {
                continue;
            };
            if state::validate_id(name).is_err() {
                continue;
            }
            self.scan_entry(root, namespace, name, entry.file_type(), pass);
        }
        Ok(())
    }

    /// Looks at one entry named like a container ID.
    fn scan_entry(
        &mut self,
        root: BorrowedFd<'_>,
        namespace: Option<&str>,
        name: &str,
        kind: Option<Type>,
        pass: &mut Pass,
    ) {
        let rel = match namespace {
            Some(ns) => format!("{ns}/{name}"),
            None => name.to_owned(),
        };
        let kind = kind.or_else(|| entry_type(root, &rel));
        if kind == Some(Type::Symlink) {
            let key = FileKey::of_entry(root, &rel);
            let why = format!(
                "{}: {}",
                self.root.join(&rel).display(),
                EntryError::Symlink
            );
            self.refuse(rel, key, Refusal::Unreadable(why), pass);
            return;
        }
        if kind != Some(Type::Directory) {
            // A stray file named like a container: not one, as `lucid list` sees it.
            return;
        }
        let state_rel = format!("{rel}/{STATE_FILE}");
        let path = self.root.join(&state_rel);
        // One `fstatat` that follows no link at the end: the key that tells a
        // new version of the file, and what it is. (Should the directory have
        // been swapped for a link since it was listed, the key is of the
        // file elsewhere; it is still read only through `files`.)
        let st = match nix::sys::stat::fstatat(
            root,
            state_rel.as_str(),
            nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
        ) {
            Ok(st) => st,
            // Being created or deleted, not a container directory, or (at the
            // top) a namespace directory.
            Err(nix::errno::Errno::ENOENT) => {
                if namespace.is_none() {
                    // A namespace directory that went away or became something
                    // else meanwhile has no containers.
                    let _ = self.scan_dir(root, Some(name), pass);
                }
                return;
            }
            Err(nix::errno::Errno::ENOTDIR) => return,
            Err(e) => {
                log::warn!("{}: {e}", path.display());
                pass.errors.unreadable += 1;
                return;
            }
        };
        let file = FileKey::of(&st);
        if self.containers.get(&rel).is_some_and(|(k, _)| *k == file) {
            pass.seen.push(rel);
            return;
        }
        if self.bad.get(&rel) == Some(&file) {
            pass.seen_bad.push(rel);
            return;
        }
        // Refused from its status alone, never opened: a link, a FIFO, a
        // device, a file larger than lucid writes.
        let size = u64::try_from(st.st_size).unwrap_or(0);
        let file_type = st.st_mode & SFlag::S_IFMT.bits();
        let foreign = if file_type == SFlag::S_IFLNK.bits() {
            Some(EntryError::Symlink)
        } else if file_type != SFlag::S_IFREG.bits() {
            Some(EntryError::NotRegular(files::kind(st.st_mode)))
        } else if size > MAX_FILE_BYTES {
            Some(EntryError::TooLarge {
                size,
                limit: MAX_FILE_BYTES,
            })
        } else {
            None
        };
        if let Some(e) = foreign {
            let why = format!("{}: {e}", path.display());
            self.refuse(rel, file, Refusal::Unreadable(why), pass);
            return;
        }
        let read = files::open_dir(root, Path::new(&rel))
            .map_err(|cause| match cause {
                EntryError::Missing => StateError::NotFound(name.to_owned()),
                cause => StateError::Foreign {
                    path: self.root.join(&rel),
                    cause,
                },
            })
            .and_then(|dir| state::read_state_in(dir.as_fd(), &self.root.join(&rel), name));
        let refusal = match read {
            Ok(st) => match self.container_of(st) {
                Ok(container) => {
                    self.containers
                        .insert(rel.clone(), (file, Arc::new(container)));
                    pass.seen.push(rel);
                    return;
                }
                Err(why) => Refusal::Corrupt(format!("{}: {why}", path.display())),
            },
            // Deleted meanwhile.
            Err(StateError::NotFound(_)) => return,
            Err(e @ StateError::Corrupt { .. }) => Refusal::Corrupt(e.to_string()),
            Err(e @ StateError::Foreign { .. }) => Refusal::Unreadable(e.to_string()),
            // Perhaps passing (EACCES, EIO): tried again at the next scrape.
            Err(e) => {
                log::warn!("{e}");
                pass.errors.unreadable += 1;
                return;
            }
        };
        self.refuse(rel, file, refusal, pass);
    }

    /// Counts and logs a bad entry, unless this version of it was refused before.
    fn refuse(&mut self, rel: String, key: FileKey, why: Refusal, pass: &mut Pass) {
        let counted = self.bad.get(&rel) == Some(&key);
        if !counted {
            match why {
                Refusal::Corrupt(why) => {
                    log::warn!("{why}; the container is not served");
                    pass.errors.corrupt += 1;
                }
                Refusal::Unreadable(why) => {
                    log::warn!("{why}; not served");
                    pass.errors.unreadable += 1;
                }
            }
            self.bad.insert(rel.clone(), key);
        }
        pass.seen_bad.push(rel);
    }

    /// What the exporter keeps of a container's state, or why the state is
    /// not one lucid writes.
    fn container_of(&self, st: state::ContainerState) -> Result<Container, String> {
        if st.created.len() > MAX_CREATED_BYTES {
            return Err(format!(
                "its creation time is {} bytes long, not an RFC 3339 time",
                st.created.len()
            ));
        }
        let phases = kept_phases(st.phases)?;
        let cgroup =
            CgroupFiles::resolve(&st.cgroup, &self.hierarchies).map_err(|e| e.to_string())?;
        let created = humantime::parse_rfc3339(&st.created).unwrap_or(UNIX_EPOCH);
        let mut labels = ContainerLabels::from_annotations(&st.id, &st.annotations);
        labels.check().map_err(|e| e.to_string())?;
        if let Some(record) = crate::labels::podman_storage(&st.id, &st.annotations, &st.bundle) {
            labels = labels.with_engine_record(record);
            labels.check().map_err(|e| e.to_string())?;
        }
        Ok(Container {
            label_text: labels.render(),
            labels,
            created,
            created_text: st.created,
            cgroup,
            open_files: Mutex::default(),
            cgroup_id: st.cgroup.unified_id,
            phases,
            trace_id: st
                .trace
                .map(|t| t.trace_id)
                .filter(|t| t.len() == 32 && t.bytes().all(|b| b.is_ascii_hexdigit()))
                .unwrap_or_default(),
            id: st.id,
        })
    }
}

/// The type of the entry `rel` itself, where the listing did not say.
fn entry_type(root: BorrowedFd<'_>, rel: &str) -> Option<Type> {
    let st = nix::sys::stat::fstatat(root, rel, nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW).ok()?;
    match SFlag::from_bits_truncate(st.st_mode & SFlag::S_IFMT.bits()) {
        SFlag::S_IFDIR => Some(Type::Directory),
        SFlag::S_IFLNK => Some(Type::Symlink),
        _ => Some(Type::File),
    }
}

/// The phases as the exporter keeps them (names and times), or why they are
/// not what lucid records: too many, or a name that is no span name.
fn kept_phases(phases: Vec<PhaseTiming>) -> Result<Vec<PhaseTiming>, String> {
    if phases.len() > MAX_PHASES {
        return Err(format!(
            "it records {} phases, more than the {MAX_PHASES} the exporter takes",
            phases.len()
        ));
    }
    phases
        .into_iter()
        .map(|p| {
            let name_ok = !p.name.is_empty()
                && p.name.len() <= MAX_PHASE_NAME_BYTES
                && p.name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
            if !name_ok {
                return Err(format!(
                    "a phase name of {} bytes is not a span name (up to {MAX_PHASE_NAME_BYTES} \
                     letters, digits and . _ -)",
                    p.name.len()
                ));
            }
            Ok(PhaseTiming {
                name: p.name,
                start_ns: p.start_ns,
                end_ns: p.end_ns,
                ..Default::default()
            })
        })
        .collect()
}

/// Seconds since the Unix epoch.
pub fn unix_seconds(t: SystemTime) -> f64 {
    t.duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_secs_f64()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::labels::MAX_LABEL_BYTES;

    fn write_state(root: &Path, id: &str, trace: serde_json::Value) {
        let dir = root.join(id);
        std::fs::create_dir_all(&dir).unwrap();
        let mut state = serde_json::json!({
            "ociVersion": "1.0.2",
            "id": id,
            "pid": 1,
            "status": "running",
            "bundle": "/b",
            "rootfs": "/b/rootfs",
            "created": "2026-01-01T00:00:00Z",
            "config": { "ociVersion": "1.0.2" },
        });
        if !trace.is_null() {
            state["trace"] = trace;
        }
        std::fs::write(dir.join(STATE_FILE), serde_json::to_vec(&state).unwrap()).unwrap();
    }

    #[test]
    fn the_trace_id_is_read_from_the_state_when_recorded() {
        let root = tempfile::tempdir().unwrap();
        let id = "4bf92f3577b34da6a3ce929d0e0e4736";
        write_state(
            root.path(),
            "with",
            serde_json::json!({"trace_id": id, "span_id": "00f067aa0ba902b7", "sampled": true}),
        );
        write_state(root.path(), "without", serde_json::Value::Null);
        write_state(
            root.path(),
            "bad",
            serde_json::json!({"trace_id": "not hex"}),
        );
        let mut inventory = Inventory::new(root.path(), Vec::new());
        assert_eq!(inventory.scan(), ScanErrors::default());
        let traces: Vec<(String, String)> = inventory
            .containers()
            .iter()
            .map(|c| (c.id.clone(), c.trace_id.clone()))
            .collect();
        assert_eq!(
            traces,
            [
                ("bad".to_owned(), String::new()),
                ("with".to_owned(), id.to_owned()),
                ("without".to_owned(), String::new())
            ]
        );
    }

    #[test]
    fn containers_one_namespace_directory_down_are_found() {
        let root = tempfile::tempdir().unwrap();
        write_state(root.path(), "top", serde_json::Value::Null);
        write_state(&root.path().join("k8s.io"), "pod1", serde_json::Value::Null);
        write_state(&root.path().join("default"), "c1", serde_json::Value::Null);
        // Two levels down is not a namespace of this root.
        write_state(
            &root.path().join("a").join("b"),
            "deep",
            serde_json::Value::Null,
        );
        let mut inventory = Inventory::new(root.path(), Vec::new());
        assert_eq!(inventory.scan(), ScanErrors::default());
        let ids: Vec<String> = inventory
            .containers()
            .iter()
            .map(|c| c.id.clone())
            .collect();
        assert_eq!(ids, ["c1", "pod1", "top"]);
        std::fs::remove_dir_all(root.path().join("k8s.io").join("pod1")).unwrap();
        inventory.scan();
        assert_eq!(inventory.containers().len(), 2);
    }

    fn errors(inventory: &mut Inventory) -> (u64, u64) {
        let e = inventory.scan();
        (e.corrupt, e.unreadable)
    }

    fn ids(inventory: &Inventory) -> Vec<String> {
        inventory
            .containers()
            .iter()
            .map(|c| c.id.clone())
            .collect()
    }

    #[test]
    fn entries_lucid_never_makes_are_counted_once_and_never_read() {
        use std::os::unix::fs::symlink;
        let root = tempfile::tempdir().unwrap();
        let elsewhere = tempfile::tempdir().unwrap();
        write_state(root.path(), "good", serde_json::Value::Null);
        write_state(elsewhere.path(), "linked", serde_json::Value::Null);
        // A link to /dev/zero, a FIFO no one writes, a sparse file past the bound.
        for name in ["zero", "fifo", "huge", "linked"] {
            std::fs::create_dir(root.path().join(name)).unwrap();
        }
        symlink("/dev/zero", root.path().join("zero").join(STATE_FILE)).unwrap();
        nix::unistd::mkfifo(
            &root.path().join("fifo").join(STATE_FILE),
            nix::sys::stat::Mode::from_bits_truncate(0o600),
        )
        .unwrap();
        std::fs::File::create(root.path().join("huge").join(STATE_FILE))
            .unwrap()
            .set_len(1 << 40)
            .unwrap();
        symlink(
            elsewhere.path().join("linked").join(STATE_FILE),
            root.path().join("linked").join(STATE_FILE),
        )
        .unwrap();
        // A container directory that is a link, and a namespace directory that is one.
        symlink(elsewhere.path().join("linked"), root.path().join("dirlink")).unwrap();
        symlink(elsewhere.path(), root.path().join("nslink")).unwrap();
        let mut inventory = Inventory::new(root.path(), Vec::new());
        assert_eq!(errors(&mut inventory), (0, 6));
        assert_eq!(ids(&inventory), ["good"]);
        // Each version of a bad entry is counted once.
        assert_eq!(errors(&mut inventory), (0, 0));
        assert_eq!(ids(&inventory), ["good"]);
        // A new version is counted again; a removed one is forgotten.
        std::fs::File::create(root.path().join("huge").join(STATE_FILE))
            .unwrap()
            .set_len(1 << 41)
            .unwrap();
        std::fs::remove_dir_all(root.path().join("fifo")).unwrap();
        assert_eq!(errors(&mut inventory), (0, 1));
        assert_eq!(inventory.bad.len(), 5);
    }

    fn write_with(root: &Path, dir: &str, edit: impl FnOnce(&mut serde_json::Value)) {
        write_state(root, dir, serde_json::Value::Null);
        let path = root.join(dir).join(STATE_FILE);
        let mut state: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        edit(&mut state);
        std::fs::write(&path, serde_json::to_vec(&state).unwrap()).unwrap();
    }

    #[test]
    fn states_lucid_never_writes_are_counted_once_and_not_served() {
        let root = tempfile::tempdir().unwrap();
        write_state(root.path(), "good", serde_json::Value::Null);
        // Another container's ID, 100 KB of it.
        write_with(root.path(), "long-id", |s| {
            s["id"] = "x".repeat(100_000).into()
        });
        write_with(root.path(), "other-id", |s| s["id"] = "good".into());
        // A label value past the bound.
        write_with(root.path(), "long-name", |s| {
            s["annotations"] = serde_json::json!({"lucid.name": "n".repeat(MAX_LABEL_BYTES + 1)})
        });
        // Cgroups outside every hierarchy, or reached through `..`.
        write_with(root.path(), "cgroup-outside", |s| {
            s["cgroup"] = serde_json::json!({"path": "/x", "dirs": [], "unified": "/tmp/x"})
        });
        write_with(
            root.path(),
            "cgroup-dotdot",
            |s| {
                s["cgroup"] =
                    serde_json::json!({"path": "/x", "dirs": ["/sys/fs/cgroup/../../tmp/x"]})
            },
        );
        // Phases that are no span names, or too many of them.
        write_with(
            root.path(),
            "phase-name",
            |s| {
                s["phases"] =
                    serde_json::json!([{"name": "p".repeat(100), "start_ns": 1, "end_ns": 2}])
            },
        );
        write_with(root.path(), "phases", |s| {
            s["phases"] = (0..=MAX_PHASES)
                .map(|_| serde_json::json!({"name": "p", "start_ns": 1, "end_ns": 2}))
                .collect();
        });
        write_with(root.path(), "created", |s| {
            s["created"] = "9".repeat(100).into()
        });
        let mut inventory = Inventory::new(root.path(), Vec::new());
        assert_eq!(errors(&mut inventory), (8, 0));
        assert_eq!(ids(&inventory), ["good"]);
        assert_eq!(errors(&mut inventory), (0, 0));
    }

    #[test]
    fn a_label_up_to_the_bound_is_served_and_phases_keep_names_and_times_only() {
        let root = tempfile::tempdir().unwrap();
        write_with(root.path(), "c", |s| {
            s["annotations"] = serde_json::json!({"lucid.name": "n".repeat(MAX_LABEL_BYTES)});
            s["phases"] = serde_json::json!([{"name": "rootfs.mount", "start_ns": 1, "end_ns": 2,
                "attributes": [["k", "v".repeat(100_000)]], "error": "e"}]);
        });
        let mut inventory = Inventory::new(root.path(), Vec::new());
        assert_eq!(errors(&mut inventory), (0, 0));
        let c = &inventory.containers()[0];
        assert_eq!(c.labels.name.len(), MAX_LABEL_BYTES);
        assert_eq!(c.phases[0].name, "rootfs.mount");
        assert!(c.phases[0].attributes.is_empty() && c.phases[0].error.is_none());
    }
}
