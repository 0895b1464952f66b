//! The runtime's privileged system calls, through one entry point.
//!
//! Every call of the root filesystem steps that needs privilege (mount(2) in
//! all its forms, umount2, pivot_root, chroot, mknodat, fchownat, the host and
//! domain names), and the working-directory changes made around pivot_root,
//! is a [`Call`] given to [`call`]. Outside tests that is the system call and
//! nothing else. In test builds a thread may set an override (`fake::Fake`)
//! that receives each call instead of the kernel and answers it, so the steps
//! are unit-tested without root; with none set, the real call runs (aya's
//! `sys` module is the model).

use std::ffi::OsStr;
use std::os::fd::BorrowedFd;
use std::path::Path;

use nix::errno::Errno;
use nix::fcntl::AtFlags;
use nix::mount::{MntFlags, MsFlags};
use nix::sys::stat::{Mode, SFlag};
use nix::unistd::{Gid, Uid};

/// One privileged system call, with its arguments.
#[derive(Debug, Clone, Copy)]
pub enum Call<'a> {
    /// mount(2): a new mount, a bind (`MS_BIND`), a remount (`MS_REMOUNT`), a
    /// move (`MS_MOVE`) or a propagation change (`MS_SLAVE`, `MS_PRIVATE`, …).
    Mount {
        /// The source (a device, a path, a filesystem's name), if any.
        source: Option<&'a OsStr>,
        /// The mount point.
        target: &'a Path,
        /// The filesystem type, for a new mount.
        fstype: Option<&'a str>,
        /// `MS_*` flags.
        flags: MsFlags,
        /// Filesystem-specific options.
        data: Option<&'a str>,
    },
    /// umount2(2).
    Umount {
        /// The mount point.
        target: &'a Path,
        /// `MNT_*` flags.
        flags: MntFlags,
    },
    /// pivot_root(2).
    PivotRoot {
        /// The directory that becomes `/`.
        new_root: &'a Path,
        /// Where the old root goes.
        put_old: &'a Path,
    },
    /// chroot(2).
    Chroot {
        /// The new root directory.
        path: &'a Path,
    },
    /// chdir(2): the process's working directory, which pivot_root and
    /// chroot work from.
    Chdir {
        /// The new working directory.
        path: &'a Path,
    },
    /// fchdir(2).
    Fchdir {
        /// The new working directory, open.
        dir: BorrowedFd<'a>,
    },
    /// mknodat(2): a device node, or a FIFO.
    Mknodat {
        /// The directory to make it in.
        dir: BorrowedFd<'a>,
        /// Its name there.
        name: &'a OsStr,
        /// `S_IFCHR`, `S_IFBLK` or `S_IFIFO`.
        kind: SFlag,
        /// Permission bits.
        mode: Mode,
        /// The device number (`makedev`).
        dev: libc::dev_t,
    },
    /// fchownat(2) with `AT_SYMLINK_NOFOLLOW`.
    Fchownat {
        /// The directory holding the file.
        dir: BorrowedFd<'a>,
        /// The file's name there.
        name: &'a OsStr,
        /// The new owner.
        uid: Uid,
        /// The new group.
        gid: Gid,
    },
    /// sethostname(2).
    Sethostname {
        /// The host name.
        name: &'a str,
    },
    /// setdomainname(2).
    Setdomainname {
        /// The NIS domain name.
        name: &'a str,
    },
}

/// Makes `call`: the system call itself, or, in a test that set an override,
/// whatever the override answers.
pub fn call(call: Call<'_>) -> Result<(), Errno> {
    #[cfg(test)]
    if let Some(answer) = fake::answer(&call) {
        return answer;
    }
    real(call)
}

fn real(call: Call<'_>) -> Result<(), Errno> {
    match call {
        Call::Mount {
            source,
            target,
            fstype,
            flags,
            data,
        } => nix::mount::mount(source, target, fstype, flags, data),
        Call::Umount { target, flags } => nix::mount::umount2(target, flags),
        Call::PivotRoot { new_root, put_old } => nix::unistd::pivot_root(new_root, put_old),
        Call::Chroot { path } => nix::unistd::chroot(path),
        Call::Chdir { path } => nix::unistd::chdir(path),
        Call::Fchdir { dir } => nix::unistd::fchdir(dir),
        Call::Mknodat {
            dir,
            name,
            kind,
            mode,
            dev,
        } => nix::sys::stat::mknodat(dir, name, kind, mode, dev),
        Call::Fchownat {
            dir,
            name,
            uid,
            gid,
        } => nix::unistd::fchownat(
            dir,
            name,
            Some(uid),
            Some(gid),
            AtFlags::AT_SYMLINK_NOFOLLOW,
        ),
        Call::Sethostname { name } => nix::unistd::sethostname(name),
        Call::Setdomainname { name } => {
            // SAFETY: the pointer and length describe a live byte slice.
            let ret = unsafe { libc::setdomainname(name.as_ptr().cast(), name.len()) };
            Errno::result(ret).map(drop)
        }
    }
}

/// mount(2) through [`call`], with nix's argument shapes.
pub fn mount<S, T>(
    source: Option<&S>,
    target: &T,
    fstype: Option<&str>,
    flags: MsFlags,
    data: Option<&str>,
) -> Result<(), Errno>
where
    S: AsRef<OsStr> + ?Sized,
    T: AsRef<Path> + ?Sized,
{
    call(Call::Mount {
        source: source.map(AsRef::as_ref),
        target: target.as_ref(),
        fstype,
        flags,
        data,
    })
}

#[cfg(test)]
pub(crate) mod fake {
    //! The test override: a [`Fake`] set on a thread answers that thread's
    //! calls and records them, until it is dropped.

    use std::cell::RefCell;
    use std::os::fd::AsRawFd;
    use std::path::PathBuf;
    use std::rc::Rc;

    use super::*;

    type Handler = Box<dyn FnMut(&Call<'_>) -> Result<(), Errno>>;

    thread_local! {
        static OVERRIDE: RefCell<Option<Handler>> = const { RefCell::new(None) };
    }

    /// The override's answer to `call`, or `None` when no override is set.
    pub(super) fn answer(call: &Call<'_>) -> Option<Result<(), Errno>> {
        OVERRIDE.with(|slot| slot.borrow_mut().as_mut().map(|handler| handler(call)))
    }

    /// A call as a test sees it: owned, with each descriptor and each
    /// `/proc/self/fd/N` path replaced by the path it names.
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub(crate) enum Recorded {
        Mount {
            source: Option<PathBuf>,
            target: PathBuf,
            fstype: Option<String>,
            flags: MsFlags,
            data: Option<String>,
        },
        Umount {
            target: PathBuf,
            flags: MntFlags,
        },
        PivotRoot {
            new_root: PathBuf,
            put_old: PathBuf,
        },
        Chroot {
            path: PathBuf,
        },
        Chdir {
            path: PathBuf,
        },
        Fchdir {
            dir: PathBuf,
        },
        Mknodat {
            path: PathBuf,
            kind: SFlag,
            mode: Mode,
            dev: libc::dev_t,
        },
        Fchownat {
            path: PathBuf,
            uid: u32,
            gid: u32,
        },
        Sethostname {
            name: String,
        },
        Setdomainname {
            name: String,
        },
    }

    /// What a descriptor names.
    fn fd_path(fd: &impl AsRawFd) -> PathBuf {
        std::fs::read_link(format!("/proc/self/fd/{}", fd.as_raw_fd()))
            .expect("a descriptor given to a call is open")
    }

    /// `path`, or what it names when it is a `/proc/self/fd/N` path.
    fn resolved(path: &Path) -> PathBuf {
        if path.starts_with("/proc/self/fd") {
            std::fs::read_link(path).expect("a descriptor given to a call is open")
        } else {
            path.to_path_buf()
        }
    }

    impl Recorded {
        fn of(call: &Call<'_>) -> Self {
            match *call {
                Call::Mount {
                    source,
                    target,
                    fstype,
                    flags,
                    data,
                } => Recorded::Mount {
                    source: source.map(|s| resolved(Path::new(s))),
                    target: resolved(target),
                    fstype: fstype.map(str::to_owned),
                    flags,
                    data: data.map(str::to_owned),
                },
                Call::Umount { target, flags } => Recorded::Umount {
                    target: resolved(target),
                    flags,
                },
                Call::PivotRoot { new_root, put_old } => Recorded::PivotRoot {
                    new_root: resolved(new_root),
                    put_old: resolved(put_old),
                },
                Call::Chroot { path } => Recorded::Chroot {
                    path: resolved(path),
                },
                Call::Chdir { path } => Recorded::Chdir {
                    path: resolved(path),
                },
                Call::Fchdir { dir } => Recorded::Fchdir { dir: fd_path(&dir) },
                Call::Mknodat {
                    dir,
                    name,
                    kind,
                    mode,
                    dev,
                } => Recorded::Mknodat {
                    path: fd_path(&dir).join(name),
                    kind,
                    mode,
                    dev,
                },
                Call::Fchownat {
                    dir,
                    name,
                    uid,
                    gid,
                } => Recorded::Fchownat {
                    path: fd_path(&dir).join(name),
                    uid: uid.as_raw(),
                    gid: gid.as_raw(),
                },
                Call::Sethostname { name } => Recorded::Sethostname {
                    name: name.to_owned(),
                },
                Call::Setdomainname { name } => Recorded::Setdomainname {
                    name: name.to_owned(),
                },
            }
        }

        /// A recorded mount(2), for comparing against.
        pub(crate) fn mount(
            source: Option<&str>,
            target: impl Into<PathBuf>,
            fstype: Option<&str>,
            flags: MsFlags,
            data: Option<&str>,
        ) -> Self {
            Recorded::Mount {
                source: source.map(PathBuf::from),
                target: target.into(),
                fstype: fstype.map(str::to_owned),
                flags,
                data: data.map(str::to_owned),
            }
        }
    }

    /// The override of the current thread while it lives: every call is
    /// recorded and answered by the function it was made with. Dropping it
    /// puts back the override it replaced (none, mostly).
    pub(crate) struct Fake {
        calls: Rc<RefCell<Vec<Recorded>>>,
        replaced: Option<Handler>,
    }

    impl Fake {
        /// Every call succeeds and does nothing.
        pub(crate) fn new() -> Self {
            Self::answering(|_| Ok(()))
        }

        /// Each call is answered by `answer`, which sees it as recorded.
        pub(crate) fn answering(
            mut answer: impl FnMut(&Recorded) -> Result<(), Errno> + 'static,
        ) -> Self {
            let calls = Rc::new(RefCell::new(Vec::new()));
            let log = Rc::clone(&calls);
            let handler: Handler = Box::new(move |call| {
                let recorded = Recorded::of(call);
                let result = answer(&recorded);
                log.borrow_mut().push(recorded);
                result
            });
            let replaced = OVERRIDE.with(|slot| slot.borrow_mut().replace(handler));
            Fake { calls, replaced }
        }

        /// The calls made so far, in order.
        pub(crate) fn calls(&self) -> Vec<Recorded> {
            self.calls.borrow().clone()
        }
    }

    impl Drop for Fake {
        fn drop(&mut self) {
            let replaced = self.replaced.take();
            OVERRIDE.with(|slot| *slot.borrow_mut() = replaced);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::os::fd::AsFd;
    use std::os::unix::fs::FileTypeExt;

    use super::fake::{Fake, Recorded};
    use super::*;

    fn make_fifo(dir: &Path, name: &str) -> Result<(), Errno> {
        let dir = std::fs::File::open(dir).unwrap();
        call(Call::Mknodat {
            dir: dir.as_fd(),
            name: OsStr::new(name),
            kind: SFlag::S_IFIFO,
            mode: Mode::from_bits_truncate(0o600),
            dev: 0,
        })
    }

    fn is_fifo(path: &Path) -> bool {
        std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_fifo())
    }

    #[test]
    fn without_an_override_the_real_call_runs() {
        // A FIFO needs no privilege, so the real mknodat shows itself here.
        let dir = tempfile::tempdir().unwrap();
        make_fifo(dir.path(), "real").unwrap();
        assert!(is_fifo(&dir.path().join("real")));
    }

    #[test]
    fn an_override_answers_instead_of_the_kernel_and_records_the_call() {
        let dir = tempfile::tempdir().unwrap();
        let fake = Fake::answering(|_| Err(Errno::EROFS));
        assert_eq!(make_fifo(dir.path(), "faked"), Err(Errno::EROFS));
        assert!(!dir.path().join("faked").exists());
        assert_eq!(
            fake.calls(),
            [Recorded::Mknodat {
                path: dir.path().canonicalize().unwrap().join("faked"),
                kind: SFlag::S_IFIFO,
                mode: Mode::from_bits_truncate(0o600),
                dev: 0,
            }]
        );
    }

    #[test]
    fn dropping_an_override_puts_back_the_one_it_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let outer = Fake::new();
        {
            let inner = Fake::answering(|_| Err(Errno::EPERM));
            assert_eq!(make_fifo(dir.path(), "a"), Err(Errno::EPERM));
            assert_eq!(inner.calls().len(), 1);
        }
        make_fifo(dir.path(), "b").unwrap();
        assert_eq!(outer.calls().len(), 1);
        drop(outer);
        make_fifo(dir.path(), "c").unwrap();
        assert!(!is_fifo(&dir.path().join("a")) && !is_fifo(&dir.path().join("b")));
        assert!(is_fifo(&dir.path().join("c")));
    }

    #[test]
    fn an_override_is_for_its_thread_alone() {
        let dir = tempfile::tempdir().unwrap();
        let fake = Fake::answering(|_| Err(Errno::EPERM));
        let path = dir.path().to_path_buf();
        std::thread::spawn(move || make_fifo(&path, "other").unwrap())
            .join()
            .unwrap();
        assert!(is_fifo(&dir.path().join("other")));
        assert!(fake.calls().is_empty());
    }

    #[test]
    fn descriptor_paths_are_recorded_as_what_they_name() {
        let dir = tempfile::tempdir().unwrap();
        let target = std::fs::File::open(dir.path()).unwrap();
        let fake = Fake::new();
        mount(
            Some("tmpfs"),
            &format!("/proc/self/fd/{}", std::os::fd::AsRawFd::as_raw_fd(&target)),
            Some("tmpfs"),
            MsFlags::MS_NOSUID,
            Some("size=0k"),
        )
        .unwrap();
        assert_eq!(
            fake.calls(),
            [Recorded::mount(
                Some("tmpfs"),
                dir.path().canonicalize().unwrap(),
                Some("tmpfs"),
                MsFlags::MS_NOSUID,
                Some("size=0k"),
            )]
        );
    }
}
