//! The guests' initramfs images, as newc cpio archives under
//! `target/vm/images/`: busybox, the kernel modules the guest needs before
//! it can reach its disks and shares (loaded with busybox `insmod`, so
//! dependencies are ordered and modules decompressed here), and for the
//! initramfs guest the shared libraries of the binaries it runs.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

use super::kernels::Kernel;
use super::stamp;

/// `/init` of the initramfs guest (mounts, then the plan's runner).
const GUEST_INIT: &str = include_str!("guest/init.sh");
/// `/init` of the systemd guest's initramfs (mounts the root, then systemd).
const BOOT_INIT: &str = include_str!("guest/boot.sh");
/// `/init` of the KVM probe: prints a marker and powers off.
const PROBE_INIT: &str = include_str!("guest/probe.sh");

/// Bumped when the layout of the images changes, so cached ones are redone.
const LAYOUT_VERSION: &str = "1";

/// The host's busybox (Debian's busybox-static), copied into every image.
const BUSYBOX: &str = "/bin/busybox";

/// Modules the initramfs guest loads: the disk for io limits, the 9p shares
/// (with netfs/fscache where the kernel has them as modules) and overlayfs
/// for lucid's binary protection.
const GUEST_MODULES: &[&str] = &[
    "virtio_pci",
    "virtio_blk",
    "9pnet_virtio",
    "9p",
    "overlay",
    "ext4",
];

/// Modules the systemd guest's initramfs loads to mount its ext4 root and
/// the 9p shares (the rest comes from `/lib/modules` through udev).
/// A name ending in `?` is loaded where the kernel has it (ext4's crc32c is
/// a module on some kernels, built in or a library on others).
const BOOT_MODULES: &[&str] = &[
    "virtio_pci",
    "virtio_blk",
    "crc32c?",
    "ext4",
    "9pnet_virtio",
    "9p",
];

/// The directory inside an image holding the modules, named `NN-name.ko` in
/// load order.
const MODULE_DIR: &str = "lib/modules/lucid-vm";

/// A directory tree being made into a cpio archive; removed when dropped.
struct Tree {
    root: PathBuf,
}

impl Tree {
    /// An empty tree with the merged-/usr layout of Debian 12, busybox,
    /// `/dev/console` (the kernel opens it for `/init`'s stdio) and the
    /// usual `/etc` files.
    fn new(dir: PathBuf) -> Result<Tree> {
        let _ = std::fs::remove_dir_all(&dir);
        let tree = Tree { root: dir };
        for sub in [
            "usr/bin",
            "usr/sbin",
            "usr/lib",
            "usr/lib64",
            "dev",
            "proc",
            "sys",
            "etc",
            "tmp",
            "run",
            "root",
        ] {
            tree.dir(sub)?;
        }
        for (link, target) in [
            ("bin", "usr/bin"),
            ("sbin", "usr/sbin"),
            ("lib", "usr/lib"),
            ("lib64", "usr/lib64"),
        ] {
            std::os::unix::fs::symlink(target, tree.root.join(link))?;
        }
        tree.copy(Path::new(BUSYBOX), "usr/bin/busybox")
            .context("copying busybox (install busybox-static: cargo xtask vm installs it)")?;
        tree.node("dev/console", libc::S_IFCHR | 0o600, libc::makedev(5, 1))?;
        tree.node("dev/null", libc::S_IFCHR | 0o666, libc::makedev(1, 3))?;
        tree.file(
            "etc/passwd",
            "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n",
            0o644,
        )?;
        tree.file("etc/group", "root:x:0:\nnogroup:x:65534:\n", 0o644)?;
        tree.file("etc/hosts", "127.0.0.1 localhost\n::1 localhost\n", 0o644)?;
        Ok(tree)
    }

    fn path(&self, dest: &str) -> PathBuf {
        self.root.join(dest.trim_start_matches('/'))
    }

    fn dir(&self, dest: &str) -> Result<()> {
        let path = self.path(dest);
        std::fs::create_dir_all(&path).with_context(|| format!("making {}", path.display()))
    }

    fn file(&self, dest: &str, contents: impl AsRef<[u8]>, mode: u32) -> Result<()> {
        let path = self.path(dest);
        std::fs::write(&path, contents).with_context(|| format!("writing {}", path.display()))?;
        std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(mode))?;
        Ok(())
    }

    fn copy(&self, src: &Path, dest: &str) -> Result<()> {
        let path = self.path(dest);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::copy(src, &path)
            .with_context(|| format!("copying {} to {}", src.display(), path.display()))?;
        Ok(())
    }

    fn node(&self, dest: &str, mode: u32, dev: libc::dev_t) -> Result<()> {
        let path = self.path(dest);
        let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes())?;
        // SAFETY: mknod reads the NUL-terminated path only.
        if unsafe { libc::mknod(c.as_ptr(), mode, dev) } != 0 {
            return Err(std::io::Error::last_os_error()).with_context(|| {
                format!("making the device node {} (needs root)", path.display())
            });
        }
        Ok(())
    }

    /// Copies a host file to the same path in the tree, recreating each
    /// symlink on the way (`libc.so.6`, `/lib64/ld-linux-x86-64.so.2`).
    fn copy_as_named(&self, path: &Path) -> Result<()> {
        let mut path = path.to_path_buf();
        for _ in 0..16 {
            // The directories may be symlinks on the host (/lib → usr/lib);
            // the tree has the same ones, so the real directory is used.
            let parent = path.parent().context("a library path has a directory")?;
            let parent = parent
                .canonicalize()
                .with_context(|| format!("resolving {}", parent.display()))?;
            let name = path.file_name().context("a library path has a file name")?;
            let real = parent.join(name);
            let dest = self.path(&real.to_string_lossy());
            let meta = std::fs::symlink_metadata(&real)
                .with_context(|| format!("reading {}", real.display()))?;
            if !meta.file_type().is_symlink() {
                if !dest.exists() {
                    self.copy(&real, &real.to_string_lossy())?;
                }
                return Ok(());
            }
            let target = std::fs::read_link(&real)?;
            if let Some(dir) = dest.parent() {
                std::fs::create_dir_all(dir)?;
            }
            if std::fs::symlink_metadata(&dest).is_err() {
                std::os::unix::fs::symlink(&target, &dest)?;
            }
            path = parent.join(target);
        }
        bail!("{}: too many levels of symbolic links", path.display())
    }

    /// Adds the modules (decompressed, in load order) as `NN-name.ko`.
    fn modules(&self, modules: &[PathBuf]) -> Result<()> {
        self.dir(MODULE_DIR)?;
        for (i, module) in modules.iter().enumerate() {
            let file = module
                .file_name()
                .context("a module path has a file name")?
                .to_string_lossy();
            let base = file.split(".ko").next().unwrap_or(&file);
            let dest = self.path(&format!("{MODULE_DIR}/{i:02}-{base}.ko"));
            let decompress = match module.extension().and_then(|e| e.to_str()) {
                Some("xz") => Some("xz"),
                Some("zst") => Some("zstd"),
                Some("gz") => Some("gzip"),
                _ => None,
            };
            match decompress {
                Some(tool) => {
                    let out = std::fs::File::create(&dest)?;
                    let status = Command::new(tool)
                        .arg("-dc")
                        .arg(module)
                        .stdout(out)
                        .status()
                        .with_context(|| format!("running {tool}"))?;
                    if !status.success() {
                        bail!("decompressing {} failed ({status})", module.display());
                    }
                }
                None => {
                    std::fs::copy(module, &dest)?;
                }
            }
        }
        Ok(())
    }

    /// Writes the tree as a newc cpio to `out` (through a temporary file and
    /// a rename), owned by root.
    fn pack(&self, out: &Path) -> Result<()> {
        let tmp = out.with_extension("cpio.tmp");
        let status = Command::new("sh")
            .arg("-c")
            .arg("cd \"$1\" && find . -print0 | LC_ALL=C sort -z | cpio --null --create --format=newc --owner=0:0 --quiet > \"$2\"")
            .arg("pack")
            .arg(&self.root)
            .arg(&tmp)
            .status()
            .context("running cpio (install cpio)")?;
        if !status.success() {
            let _ = std::fs::remove_file(&tmp);
            bail!("packing {} failed ({status})", self.root.display());
        }
        std::fs::rename(&tmp, out).with_context(|| format!("renaming {}", tmp.display()))
    }
}

impl Drop for Tree {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.root);
    }
}

/// The `.ko` files to load for `wanted`, dependencies first, each once;
/// built-in modules need nothing. A name ending in `?` may be missing.
fn resolve_modules(kernel: &Kernel, wanted: &[&str]) -> Result<Vec<PathBuf>> {
    let mut order: Vec<PathBuf> = Vec::new();
    for name in wanted {
        let (module, optional) = match name.strip_suffix('?') {
            Some(module) => (module, true),
            None => (*name, false),
        };
        let out = Command::new("modprobe")
            .arg("--show-depends")
            .arg("-d")
            .arg(&kernel.root)
            .arg("-S")
            .arg(&kernel.release)
            .arg(module)
            .output()
            .context("running modprobe (install kmod)")?;
        if !out.status.success() {
            if optional {
                continue;
            }
            bail!(
                "the {} kernel ({}) has no module {module}: {}",
                kernel.name,
                kernel.release,
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        for line in String::from_utf8_lossy(&out.stdout).lines() {
            let mut fields = line.split_whitespace();
            if fields.next() != Some("insmod") {
                continue;
            }
            let Some(path) = fields.next() else { continue };
            let path = PathBuf::from(path);
            if !order.contains(&path) {
                order.push(path);
            }
        }
    }
    Ok(order)
}

/// The shared libraries `binaries` load, as `ldd` names them.
pub fn libraries(binaries: &[PathBuf]) -> Result<Vec<PathBuf>> {
    let mut libs: Vec<PathBuf> = Vec::new();
    for binary in binaries {
        let out = Command::new("ldd")
            .arg(binary)
            .output()
            .context("running ldd")?;
        // ldd fails on a static binary; it needs no libraries.
        for line in String::from_utf8_lossy(&out.stdout).lines() {
            let path = match line.split_once("=>") {
                Some((_, right)) => right.split_whitespace().next(),
                None => line.split_whitespace().next(),
            };
            if let Some(path) = path.filter(|p| p.starts_with('/')) {
                let path = PathBuf::from(path);
                if !libs.contains(&path) {
                    libs.push(path);
                }
            }
        }
    }
    libs.sort();
    Ok(libs)
}

fn common_inputs(kernel: Option<&Kernel>, script: &str, modules: &[&str]) -> Result<stamp::Inputs> {
    let mut inputs = stamp::Inputs::default();
    inputs.add("layout", LAYOUT_VERSION);
    inputs.add(
        "busybox",
        std::fs::read(BUSYBOX).context("reading /bin/busybox (install busybox-static)")?,
    );
    inputs.add("init", script);
    if let Some(kernel) = kernel {
        inputs.add("kernel", &kernel.version);
    }
    for module in modules {
        inputs.add("module", module);
    }
    Ok(inputs)
}

/// Builds `out` with `fill` unless its stamp matches `inputs`.
fn cached(
    out: &Path,
    inputs: &stamp::Inputs,
    fill: impl FnOnce(&Tree) -> Result<()>,
) -> Result<bool> {
    let hash = inputs.hex();
    if stamp::fresh(out, &hash) {
        return Ok(false);
    }
    let dir = out.parent().context("images sit in target/vm/images")?;
    std::fs::create_dir_all(dir)?;
    let name = out
        .file_name()
        .context("an image has a file name")?
        .to_string_lossy();
    let tree = Tree::new(dir.join(format!(".tree-{name}-{}", std::process::id())))?;
    fill(&tree)?;
    stamp::clear(out);
    tree.pack(out)?;
    stamp::mark(out, &hash)?;
    Ok(true)
}

/// The initramfs guest's image for `kernel`, with the libraries `libs`.
/// Returns its path and whether it was built now.
pub fn guest(images: &Path, kernel: &Kernel, libs: &[PathBuf]) -> Result<(PathBuf, bool)> {
    let out = images.join(format!("initramfs-{}.cpio", kernel.version));
    let mut inputs = common_inputs(Some(kernel), GUEST_INIT, GUEST_MODULES)?;
    for lib in libs {
        inputs.add("lib", lib.as_os_str().as_encoded_bytes());
        inputs.add(
            "lib-bytes",
            std::fs::read(lib).with_context(|| format!("reading {}", lib.display()))?,
        );
    }
    let modules = resolve_modules(kernel, GUEST_MODULES)?;
    let built = cached(&out, &inputs, |tree| {
        tree.file("init", GUEST_INIT, 0o755)?;
        tree.modules(&modules)?;
        for lib in libs {
            tree.copy_as_named(lib)?;
        }
        Ok(())
    })?;
    Ok((out, built))
}

/// The systemd guest's initramfs for `kernel`: mounts `/dev/vda` and the
/// shares, then hands over to systemd.
pub fn boot(images: &Path, kernel: &Kernel) -> Result<(PathBuf, bool)> {
    let out = images.join(format!("boot-{}.cpio", kernel.version));
    let inputs = common_inputs(Some(kernel), BOOT_INIT, BOOT_MODULES)?;
    let modules = resolve_modules(kernel, BOOT_MODULES)?;
    let built = cached(&out, &inputs, |tree| {
        tree.file("init", BOOT_INIT, 0o755)?;
        tree.modules(&modules)
    })?;
    Ok((out, built))
}

/// The KVM probe's image (any kernel boots it).
pub fn probe(images: &Path) -> Result<PathBuf> {
    let out = images.join("probe.cpio");
    let inputs = common_inputs(None, PROBE_INIT, &[])?;
    cached(&out, &inputs, |tree| tree.file("init", PROBE_INIT, 0o755))?;
    Ok(out)
}
