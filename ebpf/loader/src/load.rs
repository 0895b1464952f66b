//! Loading the object, attaching the global programs and pinning everything (65-120 ms: the
//! BTF parse dominates), done once per host and version by whoever needs the programs first.
use std::path::Path;

use aya::{
    programs::{
        links::FdLink, BtfTracePoint, CgroupDevice, CgroupSkb, FEntry, FExit, ProgramError,
    },
    Btf, EbpfLoader,
};

use crate::{
    error::Unavailable,
    kernel_btf,
    layout::{self, Layout},
    Error, OBJECT,
};

/// Turns a load or attach failure into [`Unavailable`]: the kernel cannot run this program.
fn rejected(program: &str) -> impl FnOnce(ProgramError) -> Error + '_ {
    move |e| {
        let detail = match &e {
            ProgramError::LoadError {
                io_error,
                verifier_log,
            } => format!("{io_error}\n{verifier_log}"),
            other => other.to_string(),
        };
        if detail.contains("Operation not permitted") {
            return Error::Unavailable(Unavailable::NotPermitted(format!("{program}: {detail}")));
        }
        Error::Unavailable(Unavailable::Rejected {
            program: program.to_owned(),
            detail,
        })
    }
}

fn pin_err(path: &Path) -> impl FnOnce(aya::pin::PinError) -> Error + '_ {
    move |e| Error::pin("pinning", path, std::io::Error::other(e.to_string()))
}

fn program<'a, T>(ebpf: &'a mut aya::Ebpf, name: &'static str) -> Result<&'a mut T, Error>
where
    &'a mut T: TryFrom<&'a mut aya::programs::Program, Error = ProgramError>,
{
    let p = ebpf.program_mut(name).ok_or_else(|| Error::Program {
        program: name,
        detail: "missing from the object".to_owned(),
    })?;
    p.try_into().map_err(|e: ProgramError| Error::Program {
        program: name,
        detail: e.to_string(),
    })
}

/// Loads the object and pins maps, programs and global links under `layout.dir`.
pub(crate) fn load_and_pin(layout: &Layout) -> Result<(), Error> {
    let offsets = kernel_btf::kernel_offsets(Path::new(kernel_btf::VMLINUX_BTF))
        .map_err(|e| Error::Unavailable(Unavailable::NoBtf(e)))?;
    let btf = Btf::from_sys_fs().map_err(|e| {
        Error::Unavailable(Unavailable::Rejected {
            program: "(kernel BTF)".to_owned(),
            detail: e.to_string(),
        })
    })?;
    let mut ebpf = EbpfLoader::new()
        .btf(Some(&btf))
        .override_global("KERNEL_OFFSETS", &offsets, true)
        .load(OBJECT)
        .map_err(|e| {
            let detail = e.to_string();
            if detail.contains("Operation not permitted") {
                Error::Unavailable(Unavailable::NotPermitted(detail))
            } else {
                Error::Unavailable(Unavailable::Rejected {
                    program: "(maps)".to_owned(),
                    detail,
                })
            }
        })?;

    for sub in ["maps", "progs", "links", "containers"] {
        let p = layout.dir.join(sub);
        std::fs::create_dir_all(&p).map_err(|e| Error::pin("creating", &p, e))?;
    }
    for &name in layout::MAPS {
        let path = layout.map(name);
        ebpf.map(name)
            .ok_or_else(|| Error::Program {
                program: "(object)",
                detail: format!("map {name} missing from the object"),
            })?
            .pin(&path)
            .map_err(pin_err(&path))?;
    }

    // Syscall counting and latency: loaded and pinned now, attached by `register` while a
    // container is watched (see programs.rs), since every syscall of the host pays for an
    // attached hook. fexit/fentry on the dispatcher where the kernel allows it, else the
    // raw_syscalls tracepoints (see the programs' syscalls.rs for the trade-off).
    let fexit = (|| -> Result<(), Error> {
        let p: &mut FExit = program(&mut ebpf, "syscall_exit")?;
        p.load("x64_sys_call", &btf)
            .map_err(rejected("syscall_exit"))?;
        // Some kernels load fexit programs but cannot attach them (no ftrace direct calls):
        // try once now rather than fail every registration.
        let id = p.attach().map_err(rejected("syscall_exit"))?;
        p.detach(id).map_err(rejected("syscall_exit"))?;
        let path = layout.prog(layout::PROG_SYSCALL_EXIT_FEXIT);
        p.pin(&path).map_err(pin_err(&path))?;
        let p: &mut FEntry = program(&mut ebpf, "syscall_enter")?;
        p.load("x64_sys_call", &btf)
            .map_err(rejected("syscall_enter"))?;
        let path = layout.prog(layout::PROG_SYSCALL_ENTER_FENTRY);
        p.pin(&path).map_err(pin_err(&path))
    })();
    if let Err(e) = fexit {
        log::info!("syscall counting falls back to the raw_syscalls tracepoints: {e}");
        for name in [
            layout::PROG_SYSCALL_EXIT_FEXIT,
            layout::PROG_SYSCALL_ENTER_FENTRY,
        ] {
            let path = layout.prog(name);
            if let Err(e) = std::fs::remove_file(&path) {
                if e.kind() != std::io::ErrorKind::NotFound {
                    return Err(Error::pin("removing", &path, e));
                }
            }
        }
        for (name, tracepoint, pin) in [
            ("syscall_exit_tp", "sys_exit", layout::PROG_SYSCALL_EXIT_TP),
            (
                "syscall_enter_tp",
                "sys_enter",
                layout::PROG_SYSCALL_ENTER_TP,
            ),
        ] {
            let p: &mut BtfTracePoint = program(&mut ebpf, name)?;
            p.load(tracepoint, &btf).map_err(rejected(name))?;
            let path = layout.prog(pin);
            p.pin(&path).map_err(pin_err(&path))?;
        }
    }

    for (name, tracepoint, link_name) in [
        ("process_exec", "sched_process_exec", layout::LINK_EXEC),
        ("oom_mark_victim", "mark_victim", layout::LINK_OOM),
        ("process_exit", "sched_process_exit", layout::LINK_EXIT),
        ("cgroup_mkdir", "cgroup_mkdir", layout::LINK_CGROUP_MKDIR),
    ] {
        let p: &mut BtfTracePoint = program(&mut ebpf, name)?;
        p.load(tracepoint, &btf).map_err(rejected(name))?;
        let id = p.attach().map_err(rejected(name))?;
        let link: FdLink = p.take_link(id).map_err(rejected(name))?.into();
        let path = layout.link(link_name);
        link.pin(&path).map_err(pin_err(&path))?;
    }
    for name in [layout::PROG_NET_INGRESS, layout::PROG_NET_EGRESS] {
        let p: &mut CgroupSkb = program(&mut ebpf, name)?;
        p.load().map_err(rejected(name))?;
        let path = layout.prog(name);
        p.pin(&path).map_err(pin_err(&path))?;
    }
    let p: &mut CgroupDevice = program(&mut ebpf, layout::PROG_DEVICE)?;
    p.load().map_err(rejected(layout::PROG_DEVICE))?;
    let path = layout.prog(layout::PROG_DEVICE);
    p.pin(&path).map_err(pin_err(&path))?;
    Ok(())
}
