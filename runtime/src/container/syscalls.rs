//! `lucid syscalls`: the syscall table the eBPF programs counted for a
//! container, like `strace -c`.

use std::path::Path;

use crate::state::{read_state, validate_id};
use crate::Result;

/// The container's syscall rows, most called first.
pub fn syscalls(root: &Path, id: &str) -> Result<Vec<lucid_ebpf::SyscallRow>> {
    validate_id(id)?;
    let state = read_state(root, id)?;
    Ok(crate::ebpf::syscalls(id, state.ebpf.as_ref())?)
}
