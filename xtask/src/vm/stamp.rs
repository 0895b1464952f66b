//! Stamps beside cached artefacts (kernels, images): a hash of everything
//! the artefact was made from, so it is rebuilt when an input changes and
//! reused otherwise.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use sha2::{Digest, Sha256};

/// The inputs of one artefact, hashed in the order they are added.
#[derive(Default)]
pub struct Inputs(Sha256);

impl Inputs {
    /// Adds a named input (the name keeps `("a", "bc")` apart from `("ab", "c")`).
    pub fn add(&mut self, name: &str, value: impl AsRef<[u8]>) -> &mut Self {
        let value = value.as_ref();
        self.0.update(name.as_bytes());
        self.0.update((value.len() as u64).to_le_bytes());
        self.0.update(value);
        self
    }

    /// The hash, as hex.
    pub fn hex(&self) -> String {
        self.0
            .clone()
            .finalize()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }
}

fn stamp_path(artefact: &Path) -> PathBuf {
    let mut name = artefact.as_os_str().to_owned();
    name.push(".stamp");
    PathBuf::from(name)
}

/// Whether `artefact` exists and was made from inputs hashing to `hash`.
pub fn fresh(artefact: &Path, hash: &str) -> bool {
    artefact.exists()
        && std::fs::read_to_string(stamp_path(artefact)).is_ok_and(|s| s.trim() == hash)
}

/// Records that `artefact` (already in place) was made from `hash`. Written
/// after the artefact: a crash in between leaves a stale stamp, so the next
/// run rebuilds rather than trusting a half-made artefact.
pub fn mark(artefact: &Path, hash: &str) -> Result<()> {
    let path = stamp_path(artefact);
    std::fs::write(&path, format!("{hash}\n"))
        .with_context(|| format!("writing {}", path.display()))
}

/// Removes a stamp (before rebuilding its artefact in place).
pub fn clear(artefact: &Path) {
    let _ = std::fs::remove_file(stamp_path(artefact));
}
