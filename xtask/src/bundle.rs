//! A busybox bundle (from Debian's busybox-static) for the demo and benchmarks.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result};

/// A bundle in a temporary directory, removed on drop.
pub struct Bundle {
    pub dir: PathBuf,
}

impl Bundle {
    /// Makes a bundle whose container runs `args`, using `lucid spec` for the
    /// configuration (runc's default) with the terminal turned off.
    pub fn new(lucid: &Path, name: &str, args: &[&str]) -> Result<Bundle> {
        let dir = std::env::temp_dir().join(format!("lucid-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let rootfs = dir.join("rootfs");
        let bin = rootfs.join("bin");
        std::fs::create_dir_all(&bin).with_context(|| format!("making {}", bin.display()))?;
        std::fs::set_permissions(&dir, std::os::unix::fs::PermissionsExt::from_mode(0o755))?;
        std::fs::copy("/bin/busybox", bin.join("busybox"))
            .context("copying /bin/busybox (install busybox-static: cargo xtask setup)")?;
        let list = Command::new("/bin/busybox").arg("--list").output()?;
        for applet in String::from_utf8_lossy(&list.stdout).lines() {
            let link = bin.join(applet);
            if !link.exists() {
                std::os::unix::fs::symlink("busybox", &link)?;
            }
        }
        for sub in ["proc", "sys", "dev", "etc", "tmp"] {
            std::fs::create_dir_all(rootfs.join(sub))?;
        }
        std::fs::write(rootfs.join("etc/passwd"), "root:x:0:0:root:/root:/bin/sh\n")?;
        let status = Command::new(lucid)
            .arg("spec")
            .arg("--bundle")
            .arg(&dir)
            .status()?;
        anyhow::ensure!(status.success(), "lucid spec failed");
        let path = dir.join("config.json");
        let mut config: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&path)?)?;
        config["process"]["terminal"] = serde_json::json!(false);
        config["process"]["args"] = serde_json::json!(args);
        std::fs::write(&path, serde_json::to_vec_pretty(&config)?)?;
        Ok(Bundle { dir })
    }

    /// The bundle directory as an argument.
    pub fn arg(&self) -> &str {
        self.dir.to_str().expect("temporary paths are UTF-8")
    }
}

impl Drop for Bundle {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
