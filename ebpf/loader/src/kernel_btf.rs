//! Offsets of the few kernel struct members the programs read, from the running kernel's BTF.
//!
//! The Rust eBPF toolchain has no CO-RE field relocations, so the loader finds the offsets in
//! `/sys/kernel/btf/vmlinux` and hands them to the programs as a global.
use std::path::Path;

use lucid_ebpf_common::KernelOffsets;

/// Where the kernel exposes its own BTF.
pub const VMLINUX_BTF: &str = "/sys/kernel/btf/vmlinux";

/// Errors reading the kernel's BTF.
#[derive(Debug, thiserror::Error)]
pub enum BtfError {
    /// The file could not be read (no BTF: the kernel lacks CONFIG_DEBUG_INFO_BTF).
    #[error("cannot read kernel BTF at {path}: {source}; the kernel needs CONFIG_DEBUG_INFO_BTF")]
    Read {
        /// The file.
        path: String,
        /// The cause.
        source: std::io::Error,
    },
    /// The data is not BTF this reader understands.
    #[error("malformed kernel BTF: {0}")]
    Malformed(&'static str),
}

const BTF_MAGIC: u16 = 0xeb9f;
const KIND_INT: u32 = 1;
const KIND_ARRAY: u32 = 3;
const KIND_STRUCT: u32 = 4;
const KIND_UNION: u32 = 5;
const KIND_ENUM: u32 = 6;
const KIND_FUNC_PROTO: u32 = 13;
const KIND_VAR: u32 = 14;
const KIND_DATASEC: u32 = 15;
const KIND_DECL_TAG: u32 = 17;
const KIND_ENUM64: u32 = 19;

/// A struct or union: its name and members as (name, type id, bit offset).
struct Composite {
    name: String,
    members: Vec<(String, u32, u32)>,
}

/// Reads [`KernelOffsets`] from the kernel's BTF file.
pub fn kernel_offsets(path: &Path) -> Result<KernelOffsets, BtfError> {
    let data = std::fs::read(path).map_err(|source| BtfError::Read {
        path: path.display().to_string(),
        source,
    })?;
    offsets_from_btf(&data)
}

/// Finds the offsets in raw BTF data (little-endian, as on x86_64).
pub fn offsets_from_btf(data: &[u8]) -> Result<KernelOffsets, BtfError> {
    let types = parse_composites(data)?;
    let find = |strukt: &str, member: &str| -> u32 {
        types
            .iter()
            .filter_map(|(_, c)| c.as_ref())
            .find(|c| c.name == strukt)
            .and_then(|c| member_offset(&types, c, member))
            .unwrap_or(0)
    };
    Ok(KernelOffsets {
        task_real_parent: find("task_struct", "real_parent"),
        task_tgid: find("task_struct", "tgid"),
        task_pid: find("task_struct", "pid"),
        binprm_filename: find("linux_binprm", "filename"),
        task_exit_code: find("task_struct", "exit_code"),
        task_cgroups: find("task_struct", "cgroups"),
        css_set_dfl_cgrp: find("css_set", "dfl_cgrp"),
        cgroup_kn: find("cgroup", "kn"),
        kernfs_node_id: find("kernfs_node", "id"),
        cgroup_level: find("cgroup", "level"),
        cgroup_ancestors: find("cgroup", "ancestors"),
        cgroup_root: find("cgroup", "root"),
        cgroup_root_hierarchy_id: find("cgroup_root", "hierarchy_id"),
        cgroup_ancestor_ids: find("cgroup", "ancestor_ids"),
        task_signal: find("task_struct", "signal"),
        signal_live: find("signal_struct", "live"),
    })
}

/// Byte offset of `member` in `c`, looking into anonymous struct and union members.
fn member_offset(types: &[(u32, Option<Composite>)], c: &Composite, member: &str) -> Option<u32> {
    for (name, type_id, bit_offset) in &c.members {
        if name == member {
            return Some(bit_offset / 8);
        }
        if name.is_empty() {
            let inner = types.get(*type_id as usize).and_then(|(_, c)| c.as_ref())?;
            if let Some(off) = member_offset(types, inner, member) {
                return Some(bit_offset / 8 + off);
            }
        }
    }
    None
}

fn u32_at(data: &[u8], off: usize) -> Result<u32, BtfError> {
    data.get(off..off + 4)
        .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .ok_or(BtfError::Malformed("truncated"))
}

/// Parses the type section; index = type id, with the composite types filled in.
fn parse_composites(data: &[u8]) -> Result<Vec<(u32, Option<Composite>)>, BtfError> {
    let magic = data
        .get(0..2)
        .map(|b| u16::from_le_bytes([b[0], b[1]]))
        .ok_or(BtfError::Malformed("truncated header"))?;
    if magic != BTF_MAGIC {
        return Err(BtfError::Malformed("bad magic (big-endian or not BTF)"));
    }
    let hdr_len = u32_at(data, 4)? as usize;
    let type_off = u32_at(data, 8)? as usize;
    let type_len = u32_at(data, 12)? as usize;
    let str_off = u32_at(data, 16)? as usize;
    let str_len = u32_at(data, 20)? as usize;
    let types_start = hdr_len + type_off;
    let types_end = types_start + type_len;
    let strs_start = hdr_len + str_off;
    let strings = data
        .get(strs_start..strs_start + str_len)
        .ok_or(BtfError::Malformed("string section out of bounds"))?;
    let name_at = |off: u32| -> String {
        let rest = strings.get(off as usize..).unwrap_or(&[]);
        let end = rest.iter().position(|&b| b == 0).unwrap_or(rest.len());
        String::from_utf8_lossy(&rest[..end]).into_owned()
    };
    // Type id 0 is "void".
    let mut types = vec![(0, None)];
    let mut off = types_start;
    while off < types_end {
        let name_off = u32_at(data, off)?;
        let info = u32_at(data, off + 4)?;
        let kind = (info >> 24) & 0x1f;
        let vlen = (info & 0xffff) as usize;
        let kind_flag = info >> 31 == 1;
        off += 12;
        let composite = if kind == KIND_STRUCT || kind == KIND_UNION {
            let mut members = Vec::with_capacity(vlen);
            for i in 0..vlen {
                let m = off + i * 12;
                let raw_offset = u32_at(data, m + 8)?;
                let bit_offset = if kind_flag {
                    raw_offset & 0x00ff_ffff
                } else {
                    raw_offset
                };
                members.push((name_at(u32_at(data, m)?), u32_at(data, m + 4)?, bit_offset));
            }
            Some(Composite {
                name: name_at(name_off),
                members,
            })
        } else {
            None
        };
        off += match kind {
            KIND_INT | KIND_VAR | KIND_DECL_TAG => 4,
            KIND_ARRAY => 12,
            KIND_STRUCT | KIND_UNION | KIND_DATASEC | KIND_ENUM64 => 12 * vlen,
            KIND_ENUM | KIND_FUNC_PROTO => 8 * vlen,
            _ => 0,
        };
        types.push((kind, composite));
    }
    Ok(types)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn running_kernel_btf_gives_task_binprm_and_cgroup_offsets() {
        let offsets = kernel_offsets(Path::new(VMLINUX_BTF)).expect("this host has kernel BTF");
        assert_ne!(offsets.task_real_parent, 0);
        assert_ne!(offsets.task_tgid, 0);
        assert_ne!(offsets.task_pid, 0);
        assert_ne!(offsets.binprm_filename, 0);
        assert_ne!(offsets.task_exit_code, 0);
        // pid and tgid are adjacent pid_t members of task_struct.
        assert_eq!(offsets.task_tgid, offsets.task_pid + 4);
        for (name, offset) in [
            ("task_struct.cgroups", offsets.task_cgroups),
            ("css_set.dfl_cgrp", offsets.css_set_dfl_cgrp),
            ("cgroup.kn", offsets.cgroup_kn),
            ("kernfs_node.id", offsets.kernfs_node_id),
            ("cgroup.level", offsets.cgroup_level),
            ("cgroup.ancestors", offsets.cgroup_ancestors),
            ("cgroup.root", offsets.cgroup_root),
            ("cgroup_root.hierarchy_id", offsets.cgroup_root_hierarchy_id),
        ] {
            assert_ne!(offset, 0, "{name} not found in the kernel's BTF");
        }
        // `ancestors` is the last member of struct cgroup (a flexible array in a union); the
        // older `ancestor_ids` is gone from this kernel.
        assert!(offsets.cgroup_ancestors > offsets.cgroup_level);
        assert_eq!(offsets.cgroup_ancestor_ids, 0);
        assert_ne!(offsets.task_signal, 0, "task_struct.signal");
        // `live` is not the first member of signal_struct.
        assert_ne!(offsets.signal_live, 0, "signal_struct.live");
    }

    #[test]
    fn data_that_is_not_btf_is_an_error() {
        assert!(matches!(
            offsets_from_btf(b"\x7fELF not btf at all, just bytes"),
            Err(BtfError::Malformed(_))
        ));
    }
}
