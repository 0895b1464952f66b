//! The few raw system calls aya does not wrap.
use std::{
    ffi::CString,
    fs::File,
    io,
    os::{
        fd::{AsRawFd as _, BorrowedFd},
        unix::ffi::OsStrExt as _,
    },
    path::Path,
};

fn c_path(path: &Path) -> io::Result<CString> {
    CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path contains a NUL byte"))
}

/// `statfs(2)`'s `f_type` for `path`.
pub fn statfs_magic(path: &Path) -> io::Result<i64> {
    let c = c_path(path)?;
    let mut buf = std::mem::MaybeUninit::<libc::statfs>::zeroed();
    // SAFETY: `c` is NUL-terminated and `buf` is a writable statfs.
    let rc = unsafe { libc::statfs(c.as_ptr(), buf.as_mut_ptr()) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: statfs succeeded and filled `buf`.
    Ok(unsafe { buf.assume_init() }.f_type)
}

/// Mounts a BPF file system at `target`.
pub fn mount_bpffs(target: &Path) -> io::Result<()> {
    let target = c_path(target)?;
    let fstype = c"bpf";
    // SAFETY: every pointer is a NUL-terminated string that outlives the call.
    let rc = unsafe {
        libc::mount(
            fstype.as_ptr(),
            target.as_ptr(),
            fstype.as_ptr(),
            0,
            c"mode=0700".as_ptr().cast(),
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// An exclusive `flock` held until drop.
#[derive(Debug)]
pub struct DirLock {
    // Held only for the lock it carries.
    _file: File,
}

impl DirLock {
    /// Locks the directory `dir` exclusively, waiting for other holders.
    pub fn exclusive(dir: &Path) -> io::Result<Self> {
        let file = File::open(dir)?;
        // SAFETY: a valid open descriptor.
        let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(Self { _file: file })
    }
}

/// The kernel's `struct bpf_link_info` up to the cgroup member of its union.
#[repr(C)]
#[derive(Default)]
struct LinkInfoCgroup {
    kind: u32,
    id: u32,
    prog_id: u32,
    pad: u32,
    cgroup_id: u64,
    attach_type: u32,
    pad2: u32,
}

/// The cgroup a cgroup link is attached to: `Some(0)` once the cgroup is gone.
pub fn link_cgroup_id(link: BorrowedFd<'_>) -> io::Result<u64> {
    Ok(link_info(link)?.cgroup_id)
}

/// The id of the program link `link` attaches.
pub fn link_prog_id(link: BorrowedFd<'_>) -> io::Result<u32> {
    Ok(link_info(link)?.prog_id)
}

fn link_info(link: BorrowedFd<'_>) -> io::Result<LinkInfoCgroup> {
    obj_info(link)
}

/// `BPF_OBJ_GET_INFO_BY_FD` of `fd` into an `I`: a `#[repr(C)]` prefix of the object's info
/// struct that holds no pointer (the kernel fills as much as `I` has room for).
fn obj_info<I: Default>(fd: BorrowedFd<'_>) -> io::Result<I> {
    const BPF_OBJ_GET_INFO_BY_FD: libc::c_long = 15;
    #[repr(C)]
    struct Attr {
        bpf_fd: u32,
        info_len: u32,
        info: u64,
    }
    let mut info = I::default();
    let mut attr = Attr {
        bpf_fd: fd.as_raw_fd() as u32,
        info_len: std::mem::size_of::<I>() as u32,
        info: (&raw mut info) as u64,
    };
    // SAFETY: `attr.info` points at `info`, alive for the call and as large as `info_len`
    // says; `I` holds no pointer the kernel would write through.
    unsafe { bpf(BPF_OBJ_GET_INFO_BY_FD, &mut attr) }?;
    Ok(info)
}

/// Opens the BPF object pinned at `path` (`BPF_OBJ_GET`).
pub fn obj_get(path: &Path) -> io::Result<std::os::fd::OwnedFd> {
    use std::os::fd::FromRawFd as _;
    const BPF_OBJ_GET: libc::c_long = 7;
    #[repr(C)]
    struct Attr {
        pathname: u64,
        bpf_fd: u32,
        file_flags: u32,
        path_fd: i32,
        pad: u32,
    }
    let c = c_path(path)?;
    let mut attr = Attr {
        pathname: c.as_ptr() as u64,
        bpf_fd: 0,
        file_flags: 0,
        path_fd: 0,
        pad: 0,
    };
    // SAFETY: `attr` points to a NUL-terminated path that outlives the call.
    let rc = unsafe { bpf(BPF_OBJ_GET, &mut attr) }?;
    // SAFETY: the kernel returned a new descriptor that nothing else owns.
    Ok(unsafe { std::os::fd::OwnedFd::from_raw_fd(rc as i32) })
}

/// Attaches program `prog` to cgroup `cgroup` with a BPF link (`BPF_LINK_CREATE`), for attach
/// types aya cannot turn into a pinnable link.
pub fn cgroup_link_create(
    prog: BorrowedFd<'_>,
    cgroup: BorrowedFd<'_>,
    attach_type: u32,
) -> io::Result<std::os::fd::OwnedFd> {
    use std::os::fd::FromRawFd as _;
    const BPF_LINK_CREATE: libc::c_long = 28;
    #[repr(C)]
    struct Attr {
        prog_fd: u32,
        target_fd: u32,
        attach_type: u32,
        flags: u32,
        rest: [u64; 4],
    }
    let mut attr = Attr {
        prog_fd: prog.as_raw_fd() as u32,
        target_fd: cgroup.as_raw_fd() as u32,
        attach_type,
        flags: 0,
        rest: [0; 4],
    };
    // SAFETY: `attr` is a zero-padded bpf_attr prefix valid for the call.
    let rc = unsafe { bpf(BPF_LINK_CREATE, &mut attr) }?;
    // SAFETY: the kernel returned a new descriptor that nothing else owns.
    Ok(unsafe { std::os::fd::OwnedFd::from_raw_fd(rc as i32) })
}

/// Pins BPF object `fd` at `path` (`BPF_OBJ_PIN`).
pub fn obj_pin(fd: BorrowedFd<'_>, path: &Path) -> io::Result<()> {
    const BPF_OBJ_PIN: libc::c_long = 6;
    #[repr(C)]
    struct Attr {
        pathname: u64,
        bpf_fd: u32,
        file_flags: u32,
        path_fd: i32,
        pad: u32,
    }
    let c = c_path(path)?;
    let mut attr = Attr {
        pathname: c.as_ptr() as u64,
        bpf_fd: fd.as_raw_fd() as u32,
        file_flags: 0,
        path_fd: 0,
        pad: 0,
    };
    // SAFETY: `attr` points to a NUL-terminated path that outlives the call.
    unsafe { bpf(BPF_OBJ_PIN, &mut attr) }?;
    Ok(())
}

/// Detaches the link pinned at `path` now (`BPF_LINK_DETACH`), then removes the pin; without
/// the explicit detach the kernel frees the link later, from a work queue.
/// Returns false when there was no pin.
pub fn detach_and_unpin(path: &Path) -> io::Result<bool> {
    const BPF_LINK_DETACH: libc::c_long = 34;
    let fd = match obj_get(path) {
        Ok(fd) => fd,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(e),
    };
    #[repr(C)]
    struct Attr {
        link_fd: u32,
        pad: u32,
    }
    let mut attr = Attr {
        link_fd: fd.as_raw_fd() as u32,
        pad: 0,
    };
    // SAFETY: `attr` is a valid bpf_attr prefix for the call.
    let rc = unsafe { bpf(BPF_LINK_DETACH, &mut attr) };
    // A link whose cgroup is gone is detached already; tracepoint links cannot be detached
    // early (EOPNOTSUPP) and go when the pin and this descriptor are gone.
    if let Err(e) = rc {
        let benign = [libc::ENOLINK, libc::EINVAL, libc::EOPNOTSUPP];
        if !e.raw_os_error().is_some_and(|code| benign.contains(&code)) {
            return Err(e);
        }
    }
    std::fs::remove_file(path)?;
    Ok(true)
}

/// Reads `count` consecutive entries of array map `map` starting at index `start` into
/// `values` (`BPF_MAP_LOOKUP_BATCH`, Linux 5.6+): one call instead of one per entry.
///
/// `values` must hold `count` elements of the map's value type; returns how many were read.
pub fn array_lookup_batch<V: Copy>(
    map: BorrowedFd<'_>,
    start: u32,
    values: &mut [V],
) -> io::Result<usize> {
    const BPF_MAP_LOOKUP_BATCH: libc::c_long = 24;
    #[repr(C)]
    struct Attr {
        in_batch: u64,
        out_batch: u64,
        keys: u64,
        values: u64,
        count: u32,
        map_fd: u32,
        elem_flags: u64,
        flags: u64,
    }
    let mut keys = vec![0u32; values.len()];
    let mut read = 0usize;
    // The cursor is the last key read: the kernel continues after it; none starts at 0.
    let mut in_batch = start.wrapping_sub(1);
    let mut out_batch = 0u32;
    let mut first = true;
    while read < values.len() {
        let rest = &mut values[read..];
        let mut attr = Attr {
            in_batch: (&raw mut in_batch) as u64,
            out_batch: (&raw mut out_batch) as u64,
            keys: keys[read..].as_mut_ptr() as u64,
            values: rest.as_mut_ptr() as u64,
            count: rest.len() as u32,
            map_fd: map.as_raw_fd() as u32,
            elem_flags: 0,
            flags: 0,
        };
        if first && start == 0 {
            attr.in_batch = 0;
        }
        first = false;
        // SAFETY: `attr` points at `keys` and `values`, both with room for `count` entries of
        // the map's key (u32) and value type, and at two u32 cursors, all alive for the call.
        let rc = unsafe { bpf(BPF_MAP_LOOKUP_BATCH, &mut attr) };
        let got = attr.count as usize;
        read += got;
        if let Err(e) = rc {
            // ENOENT: the end of the array, with `count` entries read before it.
            if e.raw_os_error() == Some(libc::ENOENT) {
                break;
            }
            return Err(e);
        }
        if got == 0 {
            break;
        }
        in_batch = out_batch;
    }
    Ok(read)
}

/// `bpf(cmd, attr)` on a zero-padded attr of type `A`; the raw return value or the error. The
/// one place this crate calls `SYS_bpf` itself (aya makes the rest of the calls).
///
/// # Safety
/// `attr` must be a valid, initialised `bpf_attr` prefix for `cmd`, and every pointer in it
/// must be valid for what the kernel reads or writes through it for the call.
unsafe fn bpf<A>(cmd: libc::c_long, attr: &mut A) -> io::Result<libc::c_long> {
    // SAFETY: the caller's contract; the kernel reads and writes at most `size_of::<A>()`
    // bytes of `attr`.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            std::ptr::from_mut(attr),
            std::mem::size_of::<A>(),
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(rc)
}

/// The id of the BPF program `prog` (`BPF_OBJ_GET_INFO_BY_FD`).
pub fn prog_id(prog: BorrowedFd<'_>) -> io::Result<u32> {
    /// `struct bpf_prog_info` up to `id`.
    #[repr(C)]
    #[derive(Default)]
    struct ProgInfo {
        kind: u32,
        id: u32,
    }
    Ok(obj_info::<ProgInfo>(prog)?.id)
}

/// A BPF link of the running kernel, as far as lucid needs to know it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KernelLink {
    /// The link's id.
    pub id: u32,
    /// The id of the program it attaches.
    pub prog_id: u32,
    /// The tracepoint, for raw tracepoint links (`tp_btf` and `raw_tp`); empty otherwise.
    pub tracepoint: String,
}

/// Every BPF link of the running kernel (`BPF_LINK_GET_NEXT_ID`); links that go away while
/// listing are skipped.
pub fn kernel_links() -> io::Result<Vec<KernelLink>> {
    use std::os::fd::FromRawFd as _;
    const BPF_OBJ_GET_INFO_BY_FD: libc::c_long = 15;
    const BPF_LINK_GET_FD_BY_ID: libc::c_long = 30;
    const BPF_LINK_GET_NEXT_ID: libc::c_long = 31;
    const BPF_LINK_TYPE_RAW_TRACEPOINT: u32 = 1;
    #[repr(C)]
    struct IdAttr {
        id: u32,
        next_id: u32,
        open_flags: u32,
    }
    /// `struct bpf_link_info` with the raw tracepoint member of its union.
    #[repr(C)]
    #[derive(Default)]
    struct LinkInfo {
        kind: u32,
        id: u32,
        prog_id: u32,
        pad: u32,
        tp_name: u64,
        tp_name_len: u32,
        pad2: u32,
        rest: [u64; 4],
    }
    #[repr(C)]
    struct InfoAttr {
        bpf_fd: u32,
        info_len: u32,
        info: u64,
    }
    let mut links = Vec::new();
    let mut id = 0;
    loop {
        let mut next = IdAttr {
            id,
            next_id: 0,
            open_flags: 0,
        };
        // SAFETY: an id attr holds no pointer.
        match unsafe { bpf(BPF_LINK_GET_NEXT_ID, &mut next) } {
            Ok(_) => id = next.next_id,
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => return Ok(links),
            Err(e) => return Err(e),
        }
        let mut by_id = IdAttr {
            id,
            next_id: 0,
            open_flags: 0,
        };
        // SAFETY: an id attr holds no pointer.
        let fd = match unsafe { bpf(BPF_LINK_GET_FD_BY_ID, &mut by_id) } {
            // SAFETY: the kernel returned a new descriptor that nothing else owns.
            Ok(fd) => unsafe { std::os::fd::OwnedFd::from_raw_fd(fd as i32) },
            // ENOENT: released meanwhile; EAGAIN: still being set up (or torn down).
            Err(e) if matches!(e.raw_os_error(), Some(libc::ENOENT | libc::EAGAIN)) => continue,
            Err(e) => return Err(e),
        };
        // First without buffers: the kernel fills the union by link type, and some types write
        // through pointers given there.
        let mut info = LinkInfo::default();
        let mut attr = InfoAttr {
            bpf_fd: fd.as_raw_fd() as u32,
            info_len: std::mem::size_of::<LinkInfo>() as u32,
            info: (&raw mut info) as u64,
        };
        // SAFETY: `attr.info` points at `info`, alive and as large as `info_len` says, and
        // `info` holds no pointer yet.
        unsafe { bpf(BPF_OBJ_GET_INFO_BY_FD, &mut attr) }?;
        let mut tracepoint = String::new();
        if info.kind == BPF_LINK_TYPE_RAW_TRACEPOINT {
            let mut name = [0u8; 64];
            info = LinkInfo {
                tp_name: name.as_mut_ptr() as u64,
                tp_name_len: name.len() as u32,
                ..LinkInfo::default()
            };
            attr.info = (&raw mut info) as u64;
            // SAFETY: `attr.info` points at `info`, whose `tp_name` points at `name`, with
            // the length of `name`; both alive for the call.
            unsafe { bpf(BPF_OBJ_GET_INFO_BY_FD, &mut attr) }?;
            let len = name.iter().position(|&b| b == 0).unwrap_or(name.len());
            tracepoint = String::from_utf8_lossy(&name[..len]).into_owned();
        }
        links.push(KernelLink {
            id: info.id,
            prog_id: info.prog_id,
            tracepoint,
        });
    }
}

/// How many keys map `map` holds, walked with `BPF_MAP_GET_NEXT_KEY`; `key_size` is the
/// map's key size in bytes. Works for every map type that has keys to walk (hash maps and
/// cgroup storage, which aya offers no iteration for).
pub fn map_key_count(map: BorrowedFd<'_>, key_size: usize) -> io::Result<usize> {
    const BPF_MAP_GET_NEXT_KEY: libc::c_long = 4;
    #[repr(C)]
    struct Attr {
        map_fd: u32,
        pad: u32,
        key: u64,
        next_key: u64,
    }
    let mut key = vec![0u8; key_size];
    let mut next = vec![0u8; key_size];
    let mut count = 0usize;
    let mut first = true;
    loop {
        let mut attr = Attr {
            map_fd: map.as_raw_fd() as u32,
            pad: 0,
            // A null key asks for the first one.
            key: if first { 0 } else { key.as_ptr() as u64 },
            next_key: next.as_mut_ptr() as u64,
        };
        // SAFETY: `key` and `next` hold `key_size` bytes, the map's key size, and outlive the
        // call.
        match unsafe { bpf(BPF_MAP_GET_NEXT_KEY, &mut attr) } {
            Ok(_) => {}
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => return Ok(count),
            Err(e) => return Err(e),
        }
        count += 1;
        first = false;
        std::mem::swap(&mut key, &mut next);
    }
}
