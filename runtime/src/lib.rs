//! lucid: an OCI container runtime that shows its work.
//!
//! The library holds everything the `lucid` binary does; `main.rs` only parses
//! the command line (in [`cli`]) and reports errors. The dependency arrows run
//! one way: CLI → [`container`] (one file per lifecycle operation) → the
//! concerns ([`spec`], [`state`], [`cgroups`], [`namespaces`], [`rootfs`],
//! [`process`], [`hooks`], [`seccomp`], [`lsm`], [`terminal`], [`telemetry`]).

pub mod cgroups;
pub mod cli;
pub mod container;
pub mod ebpf;
pub mod error;
pub mod exe;
pub mod failpoint;
pub mod features;
pub mod foreground;
pub mod hooks;
pub mod logging;
pub mod lsm;
pub mod namespaces;
pub mod process;
pub mod procfs;
pub mod rootfs;
pub mod seccomp;
pub mod signals;
pub mod spec;
/// The state root and its schema: `lucid-layout`'s, shared with the exporter.
pub use lucid_layout::state;
pub mod sys;
pub mod telemetry;
pub mod terminal;

pub use error::{Error, Result};
