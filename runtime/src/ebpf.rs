//! The runtime's side of lucid's eBPF programs: `ebpf.attach` at create
//! (register the container's v2 cgroup, with the device filter where the host
//! has no v1 devices controller), `ebpf.detach` at delete, and reading a
//! container's syscall table for `lucid syscalls`.
//!
//! The programs are pinned under a pin root, `/sys/fs/bpf/lucid` unless
//! `LUCID_EBPF_PIN_ROOT` names another (tests use their own, so they never
//! touch a real exporter's pins). The first container after boot loads and
//! pins them (about 0.1 s); every later one only opens the pins.
//!
//! Without BPF (no privileges, no BTF, a verifier refusal) containers still
//! run: lucid warns once per state root and reason (a marker file,
//! [`UNAVAILABLE_MARKER`], under the state root, which lives on tmpfs and so
//! is gone after a reboot) and carries on, except that device rules that only
//! the eBPF filter could enforce make `create` fail rather than allow every
//! device.

use std::path::{Path, PathBuf};

use lucid_ebpf::{Programs, RegisterOptions, SyscallHook};
use serde::{Deserialize, Serialize};

use lucid_ebpf::DeviceRule;

/// The environment variable naming the pin root.
pub const PIN_ROOT_ENV: &str = "LUCID_EBPF_PIN_ROOT";
/// The annotation that turns on the syscall latency histogram.
pub const LATENCY_ANNOTATION: &str = "lucid.ebpf/syscall-latency";
/// The file under the state root recording that the "eBPF unavailable"
/// warning was given, holding the reason.
pub const UNAVAILABLE_MARKER: &str = ".ebpf-unavailable";

/// What can go wrong on the eBPF side.
#[derive(Debug, thiserror::Error)]
pub enum EbpfError {
    /// Device rules need the eBPF filter, and eBPF cannot be used.
    #[error(
        "linux.resources.devices: this host has no cgroup v1 devices controller, so lucid enforces \
         device rules with an eBPF cgroup_device program, which cannot be used here ({0}); \
         lucid will not run the container with every device allowed: fix eBPF or remove \
         linux.resources.devices"
    )]
    DeviceFilterUnavailable(Box<lucid_ebpf::Error>),
    /// Registering with the device filter failed.
    #[error("attaching the eBPF device filter to {}: {cause}", path.display())]
    DeviceFilter {
        /// The v2 cgroup.
        path: PathBuf,
        /// The failure.
        cause: Box<lucid_ebpf::Error>,
    },
    /// The latency annotation has a value other than true or false.
    #[error("annotation {LATENCY_ANNOTATION}: {0:?} is neither \"true\" nor \"false\"")]
    BadAnnotation(String),
    /// The container is not watched.
    #[error("container {0} is not watched by lucid's eBPF programs: eBPF was unavailable or failed when it was created (see the warning in lucid's log)")]
    NotWatched(String),
    /// A feature the command needs is off on this host.
    #[error("container {id}: the eBPF {feature} feature is off on this host: {reason}")]
    FeatureOff {
        /// The container.
        id: String,
        /// The feature.
        feature: &'static str,
        /// Why: the kernel's refusals or the setting that switched it off.
        reason: String,
    },
    /// Reading the programs' maps failed.
    #[error("reading the eBPF counters under {}: {cause}", pin_root.display())]
    Read {
        /// The pin root.
        pin_root: PathBuf,
        /// The failure.
        cause: Box<lucid_ebpf::Error>,
    },
}

/// Part of the state's schema (`state.json` keeps it), defined there.
pub use crate::state::Registration;

/// The pin root: `$LUCID_EBPF_PIN_ROOT`, or [`lucid_ebpf::DEFAULT_PIN_ROOT`].
pub fn pin_root() -> PathBuf {
    std::env::var_os(PIN_ROOT_ENV)
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(lucid_ebpf::DEFAULT_PIN_ROOT))
}

/// Whether the spec's annotations ask for the latency histogram.
pub fn wants_latency(
    annotations: &std::collections::HashMap<String, String>,
) -> Result<bool, EbpfError> {
    match annotations.get(LATENCY_ANNOTATION).map(String::as_str) {
        None | Some("false") => Ok(false),
        Some("true") => Ok(true),
        Some(other) => Err(EbpfError::BadAnnotation(other.to_owned())),
    }
}

/// Opens the pinned programs, loading and pinning them first if this boot
/// has none yet.
fn open(pin_root: &Path) -> Result<Programs, lucid_ebpf::Error> {
    match Programs::open(pin_root) {
        Ok(programs) => Ok(programs),
        Err(first) => {
            log::debug!(
                "no usable eBPF pins under {} ({first}): loading",
                pin_root.display()
            );
            Programs::open_or_load(pin_root)
        }
    }
}

/// What the container asks of the eBPF side.
pub struct AttachRequest<'a> {
    /// The state root (for the warn-once marker).
    pub state_root: &'a Path,
    /// The container's v2 cgroup, if the host has a v2 hierarchy.
    pub cgroup_dir: Option<&'a Path>,
    /// The device rules, when only the eBPF filter can enforce them.
    pub devices: Option<Vec<DeviceRule>>,
    /// Whether to record syscall latency.
    pub syscall_latency: bool,
}

/// The `ebpf.attach` step. Returns the registration, or `None` when the
/// container runs unwatched (eBPF unavailable, said once in the log).
pub fn attach(request: &AttachRequest) -> Result<Option<Registration>, EbpfError> {
    let pin_root = pin_root();
    let Some(cgroup_dir) = request.cgroup_dir else {
        warn_once(
            request.state_root,
            "running containers without eBPF (no syscall, network or process counts): this host \
             has no cgroup v2 hierarchy, which lucid's eBPF programs find containers by",
        );
        return Ok(None);
    };
    let devices = &request.devices;
    let mut programs = match open(&pin_root) {
        Ok(programs) => programs,
        Err(e) if e.is_unavailable() => {
            if devices.is_some() {
                return Err(EbpfError::DeviceFilterUnavailable(Box::new(e)));
            }
            warn_once(
                request.state_root,
                &format!(
                    "running containers without eBPF (no syscall, network or process counts): {e}"
                ),
            );
            return Ok(None);
        }
        Err(e) => return unwatched(devices.is_some(), cgroup_dir, &pin_root, e),
    };
    match programs.features() {
        Ok(features) => {
            let off = features_off(&features);
            if off.is_empty() {
                clear_warning(request.state_root);
            } else {
                warn_once(
                    request.state_root,
                    &format!("eBPF features off on this host: {off}"),
                );
            }
        }
        Err(e) => return unwatched(devices.is_some(), cgroup_dir, &pin_root, e),
    }
    let options = RegisterOptions {
        syscall_latency: request.syscall_latency,
        devices: devices.clone(),
    };
    match programs.register(cgroup_dir, &options) {
        Ok(registered) => Ok(Some(Registration {
            pin_root,
            cgroup_id: registered.cgroup_id,
            syscall_latency: registered.syscall_latency,
            devices: registered.devices,
        })),
        Err(e) => unwatched(devices.is_some(), cgroup_dir, &pin_root, e),
    }
}

/// A failure that concerns this container only: fatal when the device
/// filter depends on it, a warning otherwise.
fn unwatched(
    needs_devices: bool,
    cgroup_dir: &Path,
    pin_root: &Path,
    e: lucid_ebpf::Error,
) -> Result<Option<Registration>, EbpfError> {
    if needs_devices {
        return Err(EbpfError::DeviceFilter {
            path: cgroup_dir.to_path_buf(),
            cause: Box::new(e),
        });
    }
    log::warn!(
        "the container's cgroup {} is not watched by eBPF (pins under {}): {e}",
        cgroup_dir.display(),
        pin_root.display()
    );
    Ok(None)
}

/// The `ebpf.detach` step: removes the container's links, pins and map
/// entries. Failures are logged: delete goes on, and the next registration
/// or unregistration (or load) sweeps what is left.
pub fn detach(registration: &Registration) {
    let mut programs = match Programs::open(&registration.pin_root) {
        Ok(programs) => programs,
        Err(e) => {
            // No pins: nothing of the container can be left either.
            log::debug!(
                "no eBPF pins under {} to detach from: {e}",
                registration.pin_root.display()
            );
            return;
        }
    };
    match programs.unregister(registration.cgroup_id) {
        Ok(()) | Err(lucid_ebpf::Error::NotRegistered(_)) => {}
        Err(e) => log::warn!(
            "detaching cgroup {} from the eBPF programs under {}: {e}",
            registration.cgroup_id,
            registration.pin_root.display()
        ),
    }
}

/// The registration of the v2 cgroup `cgroup_dir` under the pin root, if it
/// is registered, or has pins, without the state saying so (a `create`
/// killed in `Programs::register`, which pins before it records, or between
/// it and the state write). The cgroup's id is its directory's inode number.
pub fn unrecorded_registration(cgroup_dir: Option<&Path>) -> Option<Registration> {
    use std::os::unix::fs::MetadataExt;
    let cgroup_id = std::fs::metadata(cgroup_dir?).ok()?.ino();
    let pin_root = pin_root();
    let programs = Programs::open(&pin_root).ok()?;
    let registered = programs
        .registered()
        .ok()?
        .into_iter()
        .find(|r| r.cgroup_id == cgroup_id);
    if registered.is_none() && !programs.has_pins(cgroup_id) {
        return None;
    }
    log::debug!(
        "cgroup {cgroup_id} has eBPF pins or entries but is not in the state: detaching it"
    );
    Some(Registration {
        pin_root,
        cgroup_id,
        syscall_latency: registered.as_ref().is_some_and(|r| r.syscall_latency),
        devices: registered.is_some_and(|r| r.devices),
    })
}

/// The container's syscall table.
pub fn syscalls(
    id: &str,
    registration: Option<&Registration>,
) -> Result<Vec<lucid_ebpf::SyscallRow>, EbpfError> {
    let registration = registration.ok_or_else(|| EbpfError::NotWatched(id.to_owned()))?;
    let read_err = |source| EbpfError::Read {
        pin_root: registration.pin_root.clone(),
        cause: Box::new(source),
    };
    let programs = Programs::open(&registration.pin_root).map_err(read_err)?;
    let counting = programs
        .feature(lucid_ebpf::feature::SYSCALLS)
        .map_err(read_err)?;
    if let Some(reason) = counting.why_off() {
        return Err(EbpfError::FeatureOff {
            id: id.to_owned(),
            feature: counting.name,
            reason: reason.to_owned(),
        });
    }
    programs
        .syscalls(registration.cgroup_id)
        .map_err(|e| match e {
            lucid_ebpf::Error::NotRegistered(_) => EbpfError::NotWatched(id.to_owned()),
            e => read_err(e),
        })
}

/// The features that are off, each with why, in one line (empty when all are on).
fn features_off(features: &[lucid_ebpf::FeatureStatus]) -> String {
    features
        .iter()
        .filter_map(|f| f.why_off().map(|why| format!("{} ({why})", f.name)))
        .collect::<Vec<_>>()
        .join("; ")
}

/// Logs `message` (what eBPF cannot do here, and why), once per state root
/// and message.
fn warn_once(state_root: &Path, message: &str) {
    let marker = state_root.join(UNAVAILABLE_MARKER);
    if std::fs::read_to_string(&marker).is_ok_and(|said| said == message) {
        log::debug!("{message}");
        return;
    }
    log::warn!(
        "{message}; this warning is given once (until {} is removed)",
        marker.display()
    );
    if let Err(e) = std::fs::write(&marker, message) {
        log::debug!("writing {}: {e}", marker.display());
    }
}

/// What eBPF does on this host, for `lucid features`: each feature's state, the
/// syscall hook, or why eBPF cannot be used at all. Opens the pins, loading
/// the programs first if this boot has none (as the first `create` would).
pub fn host_features(
) -> Result<(Vec<lucid_ebpf::FeatureStatus>, Option<SyscallHook>), lucid_ebpf::Error> {
    let programs = open(&pin_root())?;
    Ok((programs.features()?, programs.syscall_hook()))
}

/// eBPF works again: a later failure deserves a new warning.
fn clear_warning(state_root: &Path) {
    let _ = std::fs::remove_file(state_root.join(UNAVAILABLE_MARKER));
}

/// Formats syscall rows like `strace -c`: calls, errors, and, when latency is
/// recorded, the upper bounds of the p50 and p99 buckets.
pub fn table(rows: &[lucid_ebpf::SyscallRow]) -> String {
    let latency = rows.iter().any(|r| r.latency.is_some());
    let mut out = String::new();
    let rule = if latency {
        "---------- ---------- ---------- ---------- ----------------\n"
    } else {
        "---------- ---------- ----------------\n"
    };
    if latency {
        out += &format!(
            "{:>10} {:>10} {:>10} {:>10} {}\n",
            "p50(ns)", "p99(ns)", "calls", "errors", "syscall"
        );
    } else {
        out += &format!("{:>10} {:>10} {}\n", "calls", "errors", "syscall");
    }
    out += rule;
    let bound = |h: Option<&lucid_ebpf::LatencyHistogram>, q| {
        h.and_then(|h| h.quantile_upper_ns(q))
            .map_or("-".to_owned(), |ns| format!("<{ns}"))
    };
    for r in rows {
        let errors = if r.errors == 0 {
            String::new()
        } else {
            r.errors.to_string()
        };
        if latency {
            out += &format!(
                "{:>10} {:>10} {:>10} {:>10} {}\n",
                bound(r.latency.as_ref(), 0.5),
                bound(r.latency.as_ref(), 0.99),
                r.count,
                errors,
                r.name
            );
        } else {
            out += &format!("{:>10} {:>10} {}\n", r.count, errors, r.name);
        }
    }
    out += rule;
    let calls: u64 = rows.iter().map(|r| r.count).sum();
    let errors: u64 = rows.iter().map(|r| r.errors).sum();
    if latency {
        out += &format!("{:>10} {:>10} {:>10} {:>10} total\n", "", "", calls, errors);
    } else {
        out += &format!("{calls:>10} {errors:>10} total\n");
    }
    out
}

/// One row as `lucid syscalls --format json` prints it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct SyscallJson {
    /// The syscall number (x86_64).
    pub nr: u32,
    /// Its name.
    pub name: String,
    /// Calls that returned.
    pub calls: u64,
    /// Calls that returned an error.
    pub errors: u64,
    /// The log2 latency histogram (`buckets[i]` counts calls of 2^i to
    /// 2^(i+1) ns), when recorded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency_buckets: Option<Vec<u64>>,
}

impl From<&lucid_ebpf::SyscallRow> for SyscallJson {
    fn from(r: &lucid_ebpf::SyscallRow) -> Self {
        SyscallJson {
            nr: r.nr,
            name: r.name.clone(),
            calls: r.count,
            errors: r.errors,
            latency_buckets: r.latency.as_ref().map(|h| h.buckets.to_vec()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latency_annotation_is_strict() {
        let mut a = std::collections::HashMap::new();
        assert!(!wants_latency(&a).unwrap());
        a.insert(LATENCY_ANNOTATION.to_owned(), "true".to_owned());
        assert!(wants_latency(&a).unwrap());
        a.insert(LATENCY_ANNOTATION.to_owned(), "yes".to_owned());
        assert!(matches!(
            wants_latency(&a),
            Err(EbpfError::BadAnnotation(_))
        ));
    }

    #[test]
    fn warning_is_given_once_per_reason() {
        let root = tempfile::tempdir().unwrap();
        warn_once(
            root.path(),
            "eBPF features off on this host: exit (no hook)",
        );
        let marker = root.path().join(UNAVAILABLE_MARKER);
        assert_eq!(
            std::fs::read_to_string(&marker).unwrap(),
            "eBPF features off on this host: exit (no hook)"
        );
        clear_warning(root.path());
        assert!(!marker.exists());
    }

    #[test]
    fn table_totals_calls_and_errors() {
        let rows = vec![lucid_ebpf::SyscallRow {
            nr: 110,
            name: "getppid".into(),
            count: 7,
            errors: 2,
            latency: None,
        }];
        let text = table(&rows);
        assert!(text.contains("getppid"), "{text}");
        assert!(text.lines().last().unwrap().contains("7"), "{text}");
    }
}
