//! A container's resource figures from its cgroup files, v1 and v2, with
//! cAdvisor's meanings: where the container has a v1 controller's cgroup that is
//! read, otherwise its v2 cgroup.
//!
//! The directories come from the container's state file, which must not send
//! the exporter elsewhere: only plain absolute paths inside the host's cgroup
//! hierarchies are taken ([`CgroupFiles::resolve`]), and a file is opened
//! without blocking and without following a link, read only if it is a
//! regular file, and never past [`MAX_CGROUP_FILE_BYTES`].

use std::fs::File;
use std::io::ErrorKind;
use std::os::unix::fs::{FileExt, MetadataExt, OpenOptionsExt};
use std::path::{Component, Path, PathBuf};

use lucid_layout::hierarchy::Hierarchy;
use lucid_layout::state::CgroupPaths;

/// Why a container's figures could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ResourceError {
    /// The cgroup was removed (the container was deleted) while it was being read.
    #[error("cgroup {0} is gone")]
    Gone(PathBuf),
    /// A cgroup file could not be read or parsed.
    #[error("reading {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The failure.
        source: std::io::Error,
    },
}

/// The most bytes read of one cgroup file (`memory.stat`, the longest read
/// whole, is a few KiB); `cgroup.procs` is counted as it is read, unkept.
pub const MAX_CGROUP_FILE_BYTES: usize = 64 << 10;

/// The most bytes of `cgroup.procs` counted: 8 per process, past any `pid_max`.
const MAX_PROCS_BYTES: u64 = 64 << 20;

/// The longest cgroup directory a state may name (`PATH_MAX`).
const MAX_CGROUP_PATH_BYTES: usize = 4096;

/// A cgroup directory in a state file that the exporter does not read.
#[derive(Debug, thiserror::Error)]
pub enum CgroupPathError {
    /// Not an absolute path made of names only (`..`, `.`), or too long.
    #[error("it names the cgroup directory {0:?}, not an absolute path of names only")]
    NotPlain(String),
    /// The v2 cgroup is in none of the host's v2 hierarchies.
    #[error("its v2 cgroup {0:?} is in none of this host's cgroup v2 hierarchies")]
    Outside(String),
}

/// At most 128 bytes of a path, for messages.
fn shown(path: &Path) -> String {
    let text = path.to_string_lossy();
    match text.char_indices().nth(128) {
        Some((end, _)) => format!("{}…", &text[..end]),
        None => text.into_owned(),
    }
}

fn plain(path: &Path) -> Result<(), CgroupPathError> {
    let ok = path.is_absolute()
        && path.as_os_str().len() <= MAX_CGROUP_PATH_BYTES
        && path
            .components()
            .all(|c| matches!(c, Component::RootDir | Component::Normal(_)));
    if ok {
        Ok(())
    } else {
        Err(CgroupPathError::NotPlain(shown(path)))
    }
}

/// Which directory each controller's files are read from.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CgroupFiles {
    /// v1 `cpuacct` cgroup.
    pub cpuacct: Option<PathBuf>,
    /// v1 `cpu` cgroup.
    pub cpu: Option<PathBuf>,
    /// v1 `memory` cgroup.
    pub memory: Option<PathBuf>,
    /// v1 `pids` cgroup.
    pub pids: Option<PathBuf>,
    /// The v2 cgroup.
    pub unified: Option<PathBuf>,
}

impl CgroupFiles {
    /// Sorts the directories a container's state records by hierarchy. A
    /// directory in none of them is left out (the host's mounts changed), a
    /// path with `..` or `.` refuses the state, and so does a v2 cgroup in no
    /// v2 hierarchy: lucid records none of those.
    pub fn resolve(
        paths: &CgroupPaths,
        hierarchies: &[Hierarchy],
    ) -> Result<Self, CgroupPathError> {
        for dir in paths.dirs.iter().chain(&paths.unified) {
            plain(dir)?;
        }
        if let Some(unified) = &paths.unified {
            if !hierarchies
                .iter()
                .any(|h| h.v2 && unified.starts_with(&h.mountpoint))
            {
                return Err(CgroupPathError::Outside(shown(unified)));
            }
        }
        let mut files = CgroupFiles {
            unified: paths.unified.clone(),
            ..Default::default()
        };
        for dir in &paths.dirs {
            let Some(h) = hierarchies
                .iter()
                .filter(|h| dir.starts_with(&h.mountpoint))
                .max_by_key(|h| h.mountpoint.as_os_str().len())
            else {
                continue;
            };
            if h.v2 {
                files.unified.get_or_insert_with(|| dir.clone());
                continue;
            }
            for (controller, slot) in [
                ("cpuacct", &mut files.cpuacct),
                ("cpu", &mut files.cpu),
                ("memory", &mut files.memory),
                ("pids", &mut files.pids),
            ] {
                if h.has_controller(controller) {
                    *slot = Some(dir.clone());
                }
            }
        }
        Ok(files)
    }

    /// Any directory of the container, to list its processes.
    fn procs_dir(&self) -> Option<&Path> {
        self.unified
            .as_deref()
            .or(self.pids.as_deref())
            .or(self.memory.as_deref())
            .or(self.cpuacct.as_deref())
            .or(self.cpu.as_deref())
    }
}

/// One container's figures; `None` where the host does not provide the file.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ResourceStats {
    /// CPU time, seconds.
    pub cpu_usage: Option<f64>,
    /// User CPU time, seconds.
    pub cpu_user: Option<f64>,
    /// System CPU time, seconds.
    pub cpu_system: Option<f64>,
    /// CFS enforcement periods.
    pub cfs_periods: Option<u64>,
    /// Throttled periods.
    pub cfs_throttled_periods: Option<u64>,
    /// Time throttled, seconds.
    pub cfs_throttled: Option<f64>,
    /// Memory usage, bytes.
    pub memory_usage: Option<u64>,
    /// Usage minus inactive file pages, bytes.
    pub memory_working_set: Option<u64>,
    /// Anonymous memory, bytes.
    pub memory_rss: Option<u64>,
    /// Page cache, bytes.
    pub memory_cache: Option<u64>,
    /// Mapped files, bytes.
    pub memory_mapped_file: Option<u64>,
    /// Swap, bytes.
    pub memory_swap: Option<u64>,
    /// Peak usage, bytes.
    pub memory_max_usage: Option<u64>,
    /// Times usage hit the limit.
    pub memory_failcnt: Option<u64>,
    /// Processes in the cgroup.
    pub processes: Option<u64>,
    /// Tasks (threads) in the cgroup.
    pub threads: Option<u64>,
    /// Task limit, 0 for none.
    pub threads_max: Option<u64>,
}

/// A container's cgroup files, kept open between scrapes: re-reading an open
/// cgroup file from offset 0 makes the kernel generate it afresh, and costs a
/// fraction of an open, read and close (docs/exporter.md has the numbers).
#[derive(Debug, Default)]
pub struct OpenFiles {
    files: Vec<(PathBuf, File)>,
}

/// Reads cgroup files into one reused buffer.
pub struct Reader {
    buf: Vec<u8>,
    clk_tck: f64,
}

impl Default for Reader {
    fn default() -> Self {
        Self::new()
    }
}

/// Opens a cgroup file: without blocking (should it be a FIFO) or following a
/// link, and only a regular file.
fn open_file(path: &Path) -> std::io::Result<File> {
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_CLOEXEC | libc::O_NONBLOCK | libc::O_NOCTTY | libc::O_NOFOLLOW)
        .open(path)?;
    let meta = file.metadata()?;
    if !meta.file_type().is_file() {
        return Err(std::io::Error::new(
            ErrorKind::InvalidData,
            format!(
                "is a {}, not a regular file",
                lucid_layout::state::files::kind(meta.mode())
            ),
        ));
    }
    Ok(file)
}

/// Reads `file` from offset 0 into `buf`, at most [`MAX_CGROUP_FILE_BYTES`].
fn read_from_start(file: &File, buf: &mut Vec<u8>) -> std::io::Result<()> {
    buf.clear();
    let mut len = 0;
    loop {
        if buf.len() < len + 4096 {
            buf.resize(len + 8192, 0);
        }
        let n = file.read_at(&mut buf[len..], len as u64)?;
        len += n;
        if len > MAX_CGROUP_FILE_BYTES {
            buf.clear();
            return Err(std::io::Error::new(
                ErrorKind::InvalidData,
                format!("longer than the {MAX_CGROUP_FILE_BYTES} bytes read of a cgroup file"),
            ));
        }
        // A cgroup file fills the buffer in one read up to its end: a short read is the end.
        if n == 0 || len < buf.len() {
            break;
        }
    }
    buf.truncate(len);
    Ok(())
}

/// Counts the lines of `file` from offset 0, in `buf`-sized reads.
fn count_lines(file: &File, buf: &mut Vec<u8>) -> std::io::Result<u64> {
    if buf.len() < 8192 {
        buf.resize(8192, 0);
    }
    let (mut offset, mut lines, mut last) = (0u64, 0u64, b'\n');
    loop {
        if offset > MAX_PROCS_BYTES {
            return Err(std::io::Error::new(
                ErrorKind::InvalidData,
                format!("longer than the {MAX_PROCS_BYTES} bytes counted of cgroup.procs"),
            ));
        }
        let n = file.read_at(buf, offset)?;
        if n == 0 {
            break;
        }
        lines += buf[..n].iter().filter(|&&b| b == b'\n').count() as u64;
        last = buf[n - 1];
        offset += n as u64;
    }
    // A last line without its newline still names a process.
    Ok(lines + u64::from(last != b'\n'))
}

/// The value of `key` in a flat-keyed file (`key value` lines).
fn keyed(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|line| {
        let (k, v) = line.split_once(' ')?;
        (k == key).then(|| v.trim().parse().ok()).flatten()
    })
}

impl Reader {
    /// A reader; USER_HZ comes from `sysconf(_SC_CLK_TCK)`.
    pub fn new() -> Self {
        // SAFETY: sysconf has no preconditions.
        let tck = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
        Reader {
            buf: Vec::with_capacity(8192),
            clk_tck: if tck > 0 { tck as f64 } else { 100.0 },
        }
    }

    /// Reads `dir/name` with `read`, keeping the file open for the next
    /// scrape; `None` when the file does not exist while the directory does (a
    /// controller the host does not have).
    fn read_with<T>(
        &mut self,
        open: &mut OpenFiles,
        dir: &Path,
        name: &str,
        read: fn(&File, &mut Vec<u8>) -> std::io::Result<T>,
    ) -> Result<Option<T>, ResourceError> {
        let path = dir.join(name);
        let cached = open.files.iter().position(|(p, _)| *p == path);
        let result = match cached {
            Some(i) => read(&open.files[i].1, &mut self.buf),
            None => open_file(&path).and_then(|f| {
                let value = read(&f, &mut self.buf)?;
                open.files.push((path.clone(), f));
                Ok(value)
            }),
        };
        match result {
            Ok(value) => Ok(Some(value)),
            Err(e) if e.kind() == ErrorKind::NotFound || e.raw_os_error() == Some(libc::ENODEV) => {
                if let Some(i) = cached {
                    open.files.swap_remove(i);
                }
                if dir.exists() {
                    Ok(None)
                } else {
                    Err(ResourceError::Gone(dir.to_path_buf()))
                }
            }
            // Out of descriptors: read without keeping the file open.
            Err(e) if e.raw_os_error() == Some(libc::EMFILE) && cached.is_none() => {
                open_file(&path)
                    .and_then(|f| read(&f, &mut self.buf))
                    .map(Some)
                    .map_err(|source| ResourceError::Io { path, source })
            }
            Err(source) => Err(ResourceError::Io { path, source }),
        }
    }

    /// The text of `dir/name` (see [`Reader::read_with`]).
    fn file(
        &mut self,
        open: &mut OpenFiles,
        dir: &Path,
        name: &str,
    ) -> Result<Option<&str>, ResourceError> {
        if self.read_with(open, dir, name, read_from_start)?.is_none() {
            return Ok(None);
        }
        std::str::from_utf8(&self.buf)
            .map(Some)
            .map_err(|e| ResourceError::Io {
                path: dir.join(name),
                source: std::io::Error::new(ErrorKind::InvalidData, e),
            })
    }

    fn number(
        &mut self,
        open: &mut OpenFiles,
        dir: &Path,
        name: &str,
    ) -> Result<Option<u64>, ResourceError> {
        let path = dir.join(name);
        match self.file(open, dir, name)? {
            None => Ok(None),
            // `max` means no limit; cAdvisor reports 0 for it.
            Some(text) if text.trim() == "max" => Ok(Some(0)),
            Some(text) => text
                .trim()
                .parse()
                .map(Some)
                .map_err(|e| ResourceError::Io {
                    path,
                    source: std::io::Error::new(ErrorKind::InvalidData, e),
                }),
        }
    }

    /// Reads every figure of one container.
    /// `open` keeps the container's files open for the next scrape.
    pub fn read(
        &mut self,
        files: &CgroupFiles,
        open: &mut OpenFiles,
    ) -> Result<ResourceStats, ResourceError> {
        let mut s = ResourceStats::default();
        let unified = files.unified.as_deref();

        // The v2 cpu.stat has usage, user and system in one file, and exists for every v2
        // cgroup (also on hybrid hosts, where it has no controller): cpuacct only without it.
        if let (Some(dir), None) = (files.cpuacct.as_deref(), unified) {
            s.cpu_usage = self
                .number(open, dir, "cpuacct.usage")?
                .map(|ns| ns as f64 / 1e9);
            let tck = self.clk_tck;
            if let Some(text) = self.file(open, dir, "cpuacct.stat")? {
                s.cpu_user = keyed(text, "user").map(|t| t as f64 / tck);
                s.cpu_system = keyed(text, "system").map(|t| t as f64 / tck);
            }
        }
        if let Some(dir) = files.cpu.as_deref() {
            if let Some(text) = self.file(open, dir, "cpu.stat")? {
                s.cfs_periods = keyed(text, "nr_periods");
                s.cfs_throttled_periods = keyed(text, "nr_throttled");
                s.cfs_throttled = keyed(text, "throttled_time").map(|ns| ns as f64 / 1e9);
            }
        }
        if let Some(dir) = unified {
            if let Some(text) = self.file(open, dir, "cpu.stat")? {
                let usec = |key| keyed(text, key).map(|us| us as f64 / 1e6);
                {
                    s.cpu_usage = usec("usage_usec");
                    s.cpu_user = usec("user_usec");
                    s.cpu_system = usec("system_usec");
                }
                if files.cpu.is_none() {
                    s.cfs_periods = keyed(text, "nr_periods");
                    s.cfs_throttled_periods = keyed(text, "nr_throttled");
                    s.cfs_throttled = usec("throttled_usec");
                }
            }
        }

        if let Some(dir) = files.memory.as_deref() {
            s.memory_usage = self.number(open, dir, "memory.usage_in_bytes")?;
            s.memory_max_usage = self.number(open, dir, "memory.max_usage_in_bytes")?;
            s.memory_failcnt = self.number(open, dir, "memory.failcnt")?;
            if let Some(text) = self.file(open, dir, "memory.stat")? {
                s.memory_rss = keyed(text, "total_rss");
                s.memory_cache = keyed(text, "total_cache");
                s.memory_mapped_file = keyed(text, "total_mapped_file");
                s.memory_swap = keyed(text, "total_swap");
                let inactive = keyed(text, "total_inactive_file").unwrap_or(0);
                s.memory_working_set = s.memory_usage.map(|u| u.saturating_sub(inactive));
            }
        } else if let Some(dir) = unified {
            s.memory_usage = self.number(open, dir, "memory.current")?;
            s.memory_max_usage = self.number(open, dir, "memory.peak")?;
            s.memory_swap = self.number(open, dir, "memory.swap.current")?;
            if let Some(text) = self.file(open, dir, "memory.events")? {
                s.memory_failcnt = keyed(text, "max");
            }
            if let Some(text) = self.file(open, dir, "memory.stat")? {
                s.memory_rss = keyed(text, "anon");
                s.memory_cache = keyed(text, "file");
                s.memory_mapped_file = keyed(text, "file_mapped");
                let inactive = keyed(text, "inactive_file").unwrap_or(0);
                s.memory_working_set = s.memory_usage.map(|u| u.saturating_sub(inactive));
            }
        }

        if let Some(dir) = files.pids.as_deref().or(unified) {
            s.threads = self.number(open, dir, "pids.current")?;
            s.threads_max = self.number(open, dir, "pids.max")?;
        }
        if let Some(dir) = files.procs_dir() {
            s.processes = self.read_with(open, dir, "cgroup.procs", count_lines)?;
        }
        Ok(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hierarchies() -> Vec<Hierarchy> {
        lucid_layout::hierarchy::parse_mountinfo(
            "30 25 0:26 / /sys/fs/cgroup/unified rw - cgroup2 cgroup2 rw\n\
             31 25 0:27 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory\n\
             32 25 0:28 / /sys/fs/cgroup/cpuacct rw - cgroup cgroup rw,cpuacct\n\
             33 25 0:29 / /sys/fs/cgroup/cpu rw - cgroup cgroup rw,cpu\n\
             34 25 0:30 / /sys/fs/cgroup/pids rw - cgroup cgroup rw,pids\n",
        )
    }

    #[test]
    fn hybrid_dirs_are_sorted_by_controller() {
        let paths = CgroupPaths {
            path: "/lucid/a".into(),
            dirs: vec![
                "/sys/fs/cgroup/memory/lucid/a".into(),
                "/sys/fs/cgroup/cpuacct/lucid/a".into(),
                "/sys/fs/cgroup/cpu/lucid/a".into(),
                "/sys/fs/cgroup/pids/lucid/a".into(),
                "/sys/fs/cgroup/unified/lucid/a".into(),
            ],
            unified: Some("/sys/fs/cgroup/unified/lucid/a".into()),
            unified_id: Some(7),
        };
        let f = CgroupFiles::resolve(&paths, &hierarchies()).unwrap();
        assert_eq!(
            f.memory.as_deref(),
            Some(Path::new("/sys/fs/cgroup/memory/lucid/a"))
        );
        assert_eq!(
            f.cpuacct.as_deref(),
            Some(Path::new("/sys/fs/cgroup/cpuacct/lucid/a"))
        );
        assert_eq!(
            f.cpu.as_deref(),
            Some(Path::new("/sys/fs/cgroup/cpu/lucid/a"))
        );
        assert_eq!(
            f.pids.as_deref(),
            Some(Path::new("/sys/fs/cgroup/pids/lucid/a"))
        );
        assert_eq!(
            f.unified.as_deref(),
            Some(Path::new("/sys/fs/cgroup/unified/lucid/a"))
        );
    }

    fn write(dir: &Path, files: &[(&str, &str)]) {
        std::fs::create_dir_all(dir).unwrap();
        for (name, text) in files {
            std::fs::write(dir.join(name), text).unwrap();
        }
    }

    #[test]
    fn v2_files_give_cadvisor_figures() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("c");
        write(
            &dir,
            &[
                ("cpu.stat", "usage_usec 2500000\nuser_usec 2000000\nsystem_usec 500000\nnr_periods 10\nnr_throttled 3\nthrottled_usec 1500000\n"),
                ("memory.current", "1000000\n"),
                ("memory.peak", "2000000\n"),
                ("memory.stat", "anon 600000\nfile 300000\nfile_mapped 4096\ninactive_file 250000\n"),
                ("memory.events", "low 0\nhigh 0\nmax 4\noom 1\noom_kill 1\n"),
                ("pids.current", "3\n"),
                ("pids.max", "max\n"),
                ("cgroup.procs", "10\n11\n"),
            ],
        );
        let files = CgroupFiles {
            unified: Some(dir),
            ..Default::default()
        };
        let s = Reader::new()
            .read(&files, &mut OpenFiles::default())
            .unwrap();
        assert_eq!(s.cpu_usage, Some(2.5));
        assert_eq!(s.cpu_user, Some(2.0));
        assert_eq!(s.cpu_system, Some(0.5));
        assert_eq!(s.cfs_periods, Some(10));
        assert_eq!(s.cfs_throttled_periods, Some(3));
        assert_eq!(s.cfs_throttled, Some(1.5));
        assert_eq!(s.memory_usage, Some(1_000_000));
        assert_eq!(s.memory_working_set, Some(750_000));
        assert_eq!(s.memory_rss, Some(600_000));
        assert_eq!(s.memory_cache, Some(300_000));
        assert_eq!(s.memory_mapped_file, Some(4096));
        assert_eq!(s.memory_max_usage, Some(2_000_000));
        assert_eq!(s.memory_swap, None);
        assert_eq!(s.memory_failcnt, Some(4));
        assert_eq!(s.threads, Some(3));
        assert_eq!(s.threads_max, Some(0));
        assert_eq!(s.processes, Some(2));
    }

    #[test]
    fn v1_files_give_cadvisor_figures() {
        let tmp = tempfile::tempdir().unwrap();
        let (acct, cpu, mem) = (
            tmp.path().join("a"),
            tmp.path().join("c"),
            tmp.path().join("m"),
        );
        write(
            &acct,
            &[
                ("cpuacct.usage", "3000000000\n"),
                ("cpuacct.stat", "user 200\nsystem 100\n"),
            ],
        );
        write(
            &cpu,
            &[(
                "cpu.stat",
                "nr_periods 5\nnr_throttled 2\nthrottled_time 250000000\n",
            )],
        );
        write(
            &mem,
            &[
                ("memory.usage_in_bytes", "500\n"),
                ("memory.max_usage_in_bytes", "900\n"),
                ("memory.failcnt", "0\n"),
                ("memory.stat", "cache 1\nrss 2\ntotal_cache 100\ntotal_rss 300\ntotal_mapped_file 7\ntotal_swap 0\ntotal_inactive_file 600\n"),
                ("cgroup.procs", "1\n"),
            ],
        );
        let files = CgroupFiles {
            cpuacct: Some(acct),
            cpu: Some(cpu),
            memory: Some(mem),
            ..Default::default()
        };
        let mut reader = Reader::new();
        let tck = reader.clk_tck;
        let s = reader.read(&files, &mut OpenFiles::default()).unwrap();
        assert_eq!(s.cpu_usage, Some(3.0));
        assert_eq!(s.cpu_user, Some(200.0 / tck));
        assert_eq!(s.cpu_system, Some(100.0 / tck));
        assert_eq!(s.cfs_throttled, Some(0.25));
        assert_eq!(s.memory_usage, Some(500));
        // Inactive file above usage: the working set stops at 0, as cAdvisor's does.
        assert_eq!(s.memory_working_set, Some(0));
        assert_eq!(s.memory_rss, Some(300));
        assert_eq!(s.memory_cache, Some(100));
        assert_eq!(s.processes, Some(1));
        assert_eq!(s.threads, None);
    }

    #[test]
    fn a_removed_cgroup_reads_as_gone() {
        let tmp = tempfile::tempdir().unwrap();
        let files = CgroupFiles {
            unified: Some(tmp.path().join("deleted")),
            ..Default::default()
        };
        let err = Reader::new()
            .read(&files, &mut OpenFiles::default())
            .unwrap_err();
        assert!(matches!(err, ResourceError::Gone(_)), "{err}");
    }

    #[test]
    fn only_plain_paths_in_the_hosts_hierarchies_are_taken() {
        let paths = |dirs: &[&str], unified: Option<&str>| CgroupPaths {
            dirs: dirs.iter().map(PathBuf::from).collect(),
            unified: unified.map(PathBuf::from),
            ..Default::default()
        };
        for bad in [
            paths(&["/sys/fs/cgroup/memory/../../../tmp/x"], None),
            paths(&["relative/x"], None),
            paths(&[], Some("/tmp/x")),
            paths(&[], Some("/sys/fs/cgroup/memory/x")),
        ] {
            assert!(
                CgroupFiles::resolve(&bad, &hierarchies()).is_err(),
                "{bad:?}"
            );
        }
        // A directory in no hierarchy is left out, as before.
        let f = CgroupFiles::resolve(&paths(&["/elsewhere/x"], None), &hierarchies()).unwrap();
        assert_eq!(f, CgroupFiles::default());
    }

    #[test]
    fn a_fifo_a_link_or_a_long_file_is_refused_without_waiting_or_reading_it_all() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("c");
        std::fs::create_dir(&dir).unwrap();
        nix::unistd::mkfifo(
            &dir.join("cpu.stat"),
            nix::sys::stat::Mode::from_bits_truncate(0o600),
        )
        .unwrap();
        std::os::unix::fs::symlink("/dev/zero", dir.join("memory.current")).unwrap();
        std::fs::write(
            dir.join("memory.stat"),
            vec![b'x'; MAX_CGROUP_FILE_BYTES + 1],
        )
        .unwrap();
        let mut reader = Reader::new();
        let mut open = OpenFiles::default();
        for name in ["cpu.stat", "memory.current", "memory.stat"] {
            let err = reader.file(&mut open, &dir, name).unwrap_err();
            assert!(matches!(err, ResourceError::Io { .. }), "{name}: {err}");
        }
        assert!(reader.buf.capacity() <= 2 * MAX_CGROUP_FILE_BYTES);
    }

    #[test]
    fn processes_are_counted_across_reads() {
        let tmp = tempfile::tempdir().unwrap();
        let procs = tmp.path().join("cgroup.procs");
        let text: String = (0..20_000).map(|i| format!("{i}\n")).collect();
        std::fs::write(&procs, text + "20000").unwrap();
        let file = File::open(&procs).unwrap();
        assert_eq!(count_lines(&file, &mut Vec::new()).unwrap(), 20_001);
    }
}
