//! What the fuzz targets share: a bundle and a state root to check against.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// A directory with an empty `rootfs/`, made once per fuzzing process
/// (`spec::validate` checks that the root filesystem exists) and doubling as
/// the state root the state target derives statuses under:
/// `$LUCID_FUZZ_SCRATCH` (which `cargo xtask fuzz` sets, and removes
/// afterwards), or a directory in the temporary directory named by pid.
pub fn scratch() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = std::env::var_os("LUCID_FUZZ_SCRATCH").map_or_else(
            || std::env::temp_dir().join(format!("lucid-fuzz-{}", std::process::id())),
            PathBuf::from,
        );
        std::fs::create_dir_all(dir.join("rootfs")).expect("making the fuzz bundle");
        dir
    })
}

/// The process of `lucid spec`'s configuration: what `exec` fills a
/// process.json's missing fields from.
pub fn template_process() -> &'static oci_spec::runtime::Process {
    static PROCESS: OnceLock<oci_spec::runtime::Process> = OnceLock::new();
    PROCESS.get_or_init(|| {
        let spec: oci_spec::runtime::Spec = serde_json::from_value(lucid::spec::template(false))
            .expect("lucid's own template parses");
        spec.process().clone().expect("the template has a process")
    })
}
