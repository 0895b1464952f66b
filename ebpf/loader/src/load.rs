//! Loading the object, attaching the global programs and pinning everything (65-120 ms here,
//! 1-2 s in an emulated guest: the BTF parse dominates), done once per host and version by
//! whoever needs the programs first.
//!
//! Each feature loads on its own: its programs are tried in order of preference (faster hook
//! first, then the flavours older kernels take) and the first the kernel accepts is pinned. A
//! feature whose every program is refused is off, with the refusals recorded in `FEATURES`,
//! and never takes another feature down; only the maps (and bpf(2) itself) are needed by all.
use std::path::Path;

use aya::{
    maps::Array,
    programs::{
        links::FdLink, BtfTracePoint, CgroupDevice, CgroupSkb, FEntry, FExit, ProgramError,
    },
    Btf, Ebpf, EbpfLoader,
};
use lucid_ebpf_common::{
    feature, feature_state, FeatureState, KernelOffsets, FEATURE_PROGRAM_LEN, FEATURE_REASON_LEN,
};

use crate::{
    error::Unavailable,
    kernel_btf,
    layout::{self, Layout},
    settings::{HookChoice, Settings},
    Error, OBJECT,
};

/// The kernel's refusal of one program, in a line: the error and the verifier's verdict
/// (its last line that is not statistics).
fn refusal(program: &str, e: &ProgramError) -> String {
    let detail = match e {
        ProgramError::LoadError {
            io_error,
            verifier_log,
        } => {
            let log = verifier_log.to_string();
            let verdict = log
                .lines()
                .rev()
                .map(str::trim)
                .find(|l| {
                    !l.is_empty()
                        && !l.starts_with("verification time")
                        && !l.starts_with("stack depth")
                        && !l.starts_with("processed ")
                        && !l.starts_with("R") // register state lines
                })
                .unwrap_or("");
            if verdict.is_empty() {
                io_error.to_string()
            } else {
                format!("{io_error}: {verdict}")
            }
        }
        other => other.to_string(),
    };
    format!("{program}: {detail}")
}

fn pin_err(path: &Path) -> impl FnOnce(aya::pin::PinError) -> Error + '_ {
    move |e| Error::pin("pinning", path, std::io::Error::other(e.to_string()))
}

fn program<'a, T>(ebpf: &'a mut Ebpf, name: &str) -> Result<&'a mut T, String>
where
    &'a mut T: TryFrom<&'a mut aya::programs::Program, Error = ProgramError>,
{
    let p = ebpf
        .program_mut(name)
        .ok_or_else(|| format!("{name}: missing from the object"))?;
    p.try_into().map_err(|e: ProgramError| refusal(name, &e))
}

/// How one feature's load went: the program pinned, or why none could be.
enum Outcome {
    Loaded(&'static str),
    Refused(String),
}

/// A failure while trying one program: the kernel refused it (try the next), or pinning it
/// failed (a host problem: stop).
enum Attempt {
    Refused(String),
    Fatal(Error),
}

impl From<String> for Attempt {
    fn from(refusal: String) -> Self {
        Self::Refused(refusal)
    }
}

impl From<Error> for Attempt {
    fn from(e: Error) -> Self {
        Self::Fatal(e)
    }
}

/// Tries `programs` in order with `load` and keeps the first the kernel takes.
fn first_accepted(
    ebpf: &mut Ebpf,
    programs: &[&'static str],
    mut load: impl FnMut(&mut Ebpf, &'static str) -> Result<(), Attempt>,
) -> Result<Outcome, Error> {
    let mut refusals = Vec::new();
    for &name in programs {
        match load(ebpf, name) {
            Ok(()) => return Ok(Outcome::Loaded(name)),
            Err(Attempt::Refused(why)) => refusals.push(why),
            Err(Attempt::Fatal(e)) => return Err(e),
        }
    }
    Ok(Outcome::Refused(refusals.join("; ")))
}

/// Loads a `tp_btf` program, attaches it and pins the link at `links/<link>`.
fn attach_tracepoint(
    ebpf: &mut Ebpf,
    btf: Option<&Btf>,
    name: &'static str,
    tracepoint: &str,
    link_path: &Path,
) -> Result<(), Attempt> {
    let btf = btf.ok_or_else(no_btf)?;
    let p: &mut BtfTracePoint = program(ebpf, name)?;
    p.load(tracepoint, btf).map_err(|e| refusal(name, &e))?;
    let id = p.attach().map_err(|e| refusal(name, &e))?;
    let link: FdLink = p.take_link(id).map_err(|e| refusal(name, &e))?.into();
    link.pin(link_path).map_err(pin_err(link_path))?;
    Ok(())
}

/// Loads an fentry program, attaches it and pins the link.
fn attach_fentry(
    ebpf: &mut Ebpf,
    btf: Option<&Btf>,
    name: &'static str,
    function: &str,
    link_path: &Path,
) -> Result<(), Attempt> {
    let btf = btf.ok_or_else(no_btf)?;
    let p: &mut FEntry = program(ebpf, name)?;
    p.load(function, btf).map_err(|e| refusal(name, &e))?;
    let id = p.attach().map_err(|e| refusal(name, &e))?;
    let link: FdLink = p.take_link(id).map_err(|e| refusal(name, &e))?.into();
    link.pin(link_path).map_err(pin_err(link_path))?;
    Ok(())
}

fn no_btf() -> String {
    format!(
        "the kernel has no BTF at {} (CONFIG_DEBUG_INFO_BTF), which tracing programs need",
        kernel_btf::VMLINUX_BTF
    )
}

/// The syscall counting programs in the order to try them.
fn syscall_exit_programs(choice: HookChoice) -> &'static [&'static str] {
    match choice {
        HookChoice::Auto => &[
            "syscall_exit",
            "syscall_exit_compat",
            "syscall_exit_tp",
            "syscall_exit_tp_compat",
        ],
        HookChoice::Fexit => &["syscall_exit", "syscall_exit_compat"],
        HookChoice::Tracepoint => &["syscall_exit_tp", "syscall_exit_tp_compat"],
    }
}

/// The latency entry programs in the order to try them: the counting program's hook first.
fn syscall_enter_programs(exit: &str) -> &'static [&'static str] {
    if exit.starts_with("syscall_exit_tp") {
        &[
            "syscall_enter_tp",
            "syscall_enter_tp_compat",
            "syscall_enter",
            "syscall_enter_compat",
        ]
    } else {
        &[
            "syscall_enter",
            "syscall_enter_compat",
            "syscall_enter_tp",
            "syscall_enter_tp_compat",
        ]
    }
}

/// The function the syscall trampolines attach to.
const SYSCALL_DISPATCHER: &str = "x64_sys_call";

/// Loads a syscall program (fexit/fentry on the dispatcher, or a `raw_syscalls` tracepoint)
/// and pins it at `progs/<pin>`; the trampoline kinds are attached and detached once, since
/// some kernels load them but cannot attach them (the dispatcher not ftrace-traceable).
fn load_syscall_program(
    ebpf: &mut Ebpf,
    btf: Option<&Btf>,
    layout: &Layout,
    name: &'static str,
) -> Result<(), Attempt> {
    let btf = btf.ok_or_else(no_btf)?;
    let refused = |e: ProgramError| Attempt::Refused(refusal(name, &e));
    let (pin, tracepoint) = match name {
        "syscall_exit" | "syscall_exit_compat" => (layout::PROG_SYSCALL_EXIT_FEXIT, None),
        "syscall_enter" | "syscall_enter_compat" => (layout::PROG_SYSCALL_ENTER_FENTRY, None),
        "syscall_exit_tp" | "syscall_exit_tp_compat" => {
            (layout::PROG_SYSCALL_EXIT_TP, Some("sys_exit"))
        }
        _ => (layout::PROG_SYSCALL_ENTER_TP, Some("sys_enter")),
    };
    let path = layout.prog(pin);
    match tracepoint {
        Some(tracepoint) => {
            let p: &mut BtfTracePoint = program(ebpf, name)?;
            p.load(tracepoint, btf).map_err(refused)?;
            p.pin(&path).map_err(pin_err(&path))?;
        }
        None if name.starts_with("syscall_exit") => {
            let p: &mut FExit = program(ebpf, name)?;
            p.load(SYSCALL_DISPATCHER, btf).map_err(refused)?;
            let id = p.attach().map_err(refused)?;
            p.detach(id).map_err(refused)?;
            p.pin(&path).map_err(pin_err(&path))?;
        }
        None => {
            let p: &mut FEntry = program(ebpf, name)?;
            p.load(SYSCALL_DISPATCHER, btf).map_err(refused)?;
            let id = p.attach().map_err(refused)?;
            p.detach(id).map_err(refused)?;
            p.pin(&path).map_err(pin_err(&path))?;
        }
    }
    Ok(())
}

/// Loads the object and pins maps, the programs of every feature the kernel takes and the
/// global links under `layout.dir`, recording each feature's outcome in `FEATURES`.
///
/// Fails only when nothing can work: bpf(2) refused, no BPF file system, or a pin that cannot
/// be written.
pub(crate) fn load_and_pin(layout: &Layout, settings: &Settings) -> Result<(), Error> {
    // Without BTF the tracing features are off; the cgroup programs need none.
    let (offsets, btf) = match kernel_btf::kernel_offsets(Path::new(kernel_btf::VMLINUX_BTF)) {
        Ok(offsets) => (
            offsets,
            Btf::from_sys_fs()
                .map_err(|e| log::debug!("kernel BTF: {e}"))
                .ok(),
        ),
        Err(e) => {
            log::debug!("kernel BTF: {e}");
            (KernelOffsets::default(), None)
        }
    };
    let mut ebpf = EbpfLoader::new()
        .btf(btf.as_ref())
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

    let btf = btf.as_ref();
    let mut outcomes: Vec<(u32, Outcome)> = Vec::new();

    outcomes.push((
        feature::DEVICES,
        first_accepted(&mut ebpf, &[layout::PROG_DEVICE], |ebpf, name| {
            let p: &mut CgroupDevice = program(ebpf, name)?;
            p.load().map_err(|e| refusal(name, &e))?;
            let path = layout.prog(name);
            p.pin(&path).map_err(pin_err(&path))?;
            Ok(())
        })?,
    ));
    outcomes.push((
        feature::NETWORK,
        first_accepted(&mut ebpf, &["net_ingress"], |ebpf, _| {
            for name in [layout::PROG_NET_INGRESS, layout::PROG_NET_EGRESS] {
                let p: &mut CgroupSkb = program(ebpf, name)?;
                p.load().map_err(|e| refusal(name, &e))?;
                let path = layout.prog(name);
                p.pin(&path).map_err(pin_err(&path))?;
            }
            Ok(())
        })?,
    ));

    // Syscall counting and latency: loaded and pinned now, attached by `register` while a
    // container is watched (see programs.rs), since every syscall of the host pays for an
    // attached hook.
    let exit = first_accepted(
        &mut ebpf,
        syscall_exit_programs(settings.syscall_hook),
        |ebpf, name| load_syscall_program(ebpf, btf, layout, name),
    )?;
    let latency = match &exit {
        Outcome::Loaded(exit) => {
            first_accepted(&mut ebpf, syscall_enter_programs(exit), |ebpf, name| {
                load_syscall_program(ebpf, btf, layout, name)
            })?
        }
        Outcome::Refused(_) => Outcome::Refused("needs the syscalls feature".to_owned()),
    };
    outcomes.push((feature::SYSCALLS, exit));
    outcomes.push((feature::SYSCALL_LATENCY, latency));

    let link = |name| layout.link(name);
    outcomes.push((
        feature::EXEC,
        first_accepted(
            &mut ebpf,
            &["process_exec", "process_exec_compat"],
            |ebpf, name| {
                attach_tracepoint(
                    ebpf,
                    btf,
                    name,
                    "sched_process_exec",
                    &link(layout::LINK_EXEC),
                )
            },
        )?,
    ));
    let exit_events = first_accepted(
        &mut ebpf,
        &[
            "process_exit",
            "process_exit_fentry",
            "process_exit_fentry_compat",
            "process_exit_leader",
        ],
        |ebpf, name| {
            let path = link(layout::LINK_EXIT);
            if name.starts_with("process_exit_fentry") {
                attach_fentry(ebpf, btf, name, "taskstats_exit", &path)
            } else {
                attach_tracepoint(ebpf, btf, name, "sched_process_exit", &path)
            }
        },
    )?;
    let oom = match &exit_events {
        Outcome::Loaded(_) => first_accepted(&mut ebpf, &["oom_mark_victim"], |ebpf, name| {
            attach_tracepoint(ebpf, btf, name, "mark_victim", &link(layout::LINK_OOM))
        })?,
        Outcome::Refused(_) => {
            Outcome::Refused("needs the exit feature (victims are counted as they exit)".into())
        }
    };
    outcomes.push((feature::EXIT, exit_events));
    outcomes.push((feature::OOM, oom));
    outcomes.push((
        feature::NESTED,
        first_accepted(&mut ebpf, &["cgroup_mkdir"], |ebpf, name| {
            attach_tracepoint(
                ebpf,
                btf,
                name,
                "cgroup_mkdir",
                &link(layout::LINK_CGROUP_MKDIR),
            )
        })?,
    ));

    let map = ebpf.map_mut("FEATURES").ok_or_else(|| Error::Program {
        program: "(object)",
        detail: "map FEATURES missing from the object".to_owned(),
    })?;
    let mut features: Array<_, FeatureState> =
        Array::try_from(map).map_err(Error::map("FEATURES"))?;
    for (index, outcome) in outcomes {
        let state = feature_record(&outcome);
        if let Outcome::Refused(why) = &outcome {
            log::info!(
                "eBPF feature {} is off on this kernel: {why}",
                feature::NAMES[index as usize]
            );
        }
        features
            .set(index, state, 0)
            .map_err(Error::map("FEATURES"))?;
    }
    Ok(())
}

/// The `FEATURES` entry for an outcome (strings cut to fit, at a character boundary).
fn feature_record(outcome: &Outcome) -> FeatureState {
    let mut state = FeatureState::default();
    match outcome {
        Outcome::Loaded(program) => {
            state.state = feature_state::LOADED;
            copy_cut(program, &mut state.program[..FEATURE_PROGRAM_LEN - 1]);
        }
        Outcome::Refused(why) => {
            state.state = feature_state::UNSUPPORTED;
            copy_cut(why, &mut state.reason[..FEATURE_REASON_LEN - 1]);
        }
    }
    state
}

/// Copies as much of `text` as fits in `out`, ending at a character boundary.
fn copy_cut(text: &str, out: &mut [u8]) {
    let mut end = text.len().min(out.len());
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    out[..end].copy_from_slice(&text.as_bytes()[..end]);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_long_reason_is_cut_at_a_character_boundary() {
        let reason = "é".repeat(FEATURE_REASON_LEN);
        let state = feature_record(&Outcome::Refused(reason));
        let end = state.reason.iter().position(|&b| b == 0).unwrap();
        assert!(end < FEATURE_REASON_LEN);
        assert!(std::str::from_utf8(&state.reason[..end]).is_ok());
    }

    #[test]
    fn latency_prefers_the_counting_programs_hook() {
        assert_eq!(
            syscall_enter_programs("syscall_exit_tp")[0],
            "syscall_enter_tp"
        );
        assert_eq!(
            syscall_enter_programs("syscall_exit_compat")[0],
            "syscall_enter"
        );
        assert_eq!(
            syscall_exit_programs(HookChoice::Tracepoint),
            &["syscall_exit_tp", "syscall_exit_tp_compat"]
        );
    }
}
