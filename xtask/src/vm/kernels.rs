//! Debian's kernels for the guests, fetched with a private apt configuration
//! under `target/vm/apt/` (the host's sources, lists and status stay as they
//! are), unpacked under `target/vm/kernels/<package version>/` with the
//! modules' dependency files made by `depmod`.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, SystemTime};

use anyhow::{bail, Context, Result};

use super::stamp;

/// A kernel of the matrix: its name on the command line and the suite whose
/// `linux-image-amd64` metapackage names it.
#[derive(Clone, Copy, Debug)]
pub struct Choice {
    /// The name used with `--kernel` and in reports.
    pub name: &'static str,
    /// The Debian suite (all in `SOURCES`).
    pub suite: &'static str,
}

/// Every kernel the lane knows, oldest first (the default for `--kernel`).
pub const MATRIX: &[Choice] = &[
    Choice {
        name: "5.10",
        suite: "bullseye-security",
    },
    Choice {
        name: "6.1",
        suite: "bookworm-security",
    },
    Choice {
        name: "6.12",
        suite: "bookworm-backports",
    },
    Choice {
        name: "newest",
        suite: "trixie-backports",
    },
];

/// The archive's keyring. Debian 12's debian-archive-keyring holds the keys
/// of bullseye, bookworm and trixie (trixie's were added in 2023.3+deb12u2),
/// which sign every suite below, so signatures are checked as for the host's
/// own sources.
const KEYRING: &str = "/usr/share/keyrings/debian-archive-keyring.gpg";

/// The suites kernels come from.
const SOURCES: &[(&str, &str)] = &[
    ("http://deb.debian.org/debian", "bullseye"),
    ("http://deb.debian.org/debian-security", "bullseye-security"),
    ("http://deb.debian.org/debian", "bookworm"),
    ("http://deb.debian.org/debian-security", "bookworm-security"),
    ("http://deb.debian.org/debian", "bookworm-backports"),
    ("http://deb.debian.org/debian", "trixie-backports"),
];

/// Package lists older than this are fetched again.
const LISTS_MAX_AGE: Duration = Duration::from_secs(24 * 3600);

/// Bumped when the way a kernel is unpacked changes, so cached ones are redone.
const UNPACK_VERSION: &str = "1";

/// A kernel unpacked on the host.
#[derive(Clone, Debug)]
pub struct Kernel {
    /// The matrix name (`6.1`, `newest`).
    pub name: &'static str,
    /// The package version (`6.1.192-3`).
    pub version: String,
    /// What `uname -r` says in the guest (`6.1.0-57-amd64`).
    pub release: String,
    /// The unpacked packages' root.
    pub root: PathBuf,
    /// The bootable image.
    pub vmlinuz: PathBuf,
}

impl Kernel {
    /// `lib/modules/<release>` under the unpacked root (with `modules.dep`).
    pub fn modules(&self) -> PathBuf {
        self.root.join("lib/modules").join(&self.release)
    }
}

/// The private apt configuration: sources, lists, cache and an empty dpkg
/// status, all under `target/vm/apt/`.
pub struct Apt {
    dir: PathBuf,
    vm_dir: PathBuf,
}

impl Apt {
    /// The configuration under `vm_dir/apt`, written if missing or changed.
    pub fn open(vm_dir: &Path) -> Result<Apt> {
        let dir = vm_dir.join("apt");
        for sub in ["lists/partial", "cache/archives/partial", "debs"] {
            std::fs::create_dir_all(dir.join(sub))
                .with_context(|| format!("making {}", dir.join(sub).display()))?;
        }
        let status = dir.join("status");
        if !status.exists() {
            std::fs::write(&status, "").with_context(|| format!("writing {}", status.display()))?;
        }
        let sources: String = SOURCES
            .iter()
            .map(|(uri, suite)| format!("deb [signed-by={KEYRING}] {uri} {suite} main\n"))
            .collect();
        let list = dir.join("sources.list");
        if std::fs::read_to_string(&list).ok().as_deref() != Some(sources.as_str()) {
            std::fs::write(&list, &sources)
                .with_context(|| format!("writing {}", list.display()))?;
            // New sources: the old lists say nothing about them.
            let _ = std::fs::remove_file(dir.join("lists/.updated"));
        }
        Ok(Apt {
            dir,
            vm_dir: vm_dir.to_path_buf(),
        })
    }

    fn options(&self) -> Vec<String> {
        let d = self.dir.display();
        vec![
            format!("-oDir::Etc::SourceList={d}/sources.list"),
            "-oDir::Etc::SourceParts=/dev/null".into(),
            format!("-oDir::State::Lists={d}/lists"),
            format!("-oDir::Cache={d}/cache"),
            format!("-oDir::State::status={d}/status"),
            // The downloads land in a directory root owns; apt's _apt user
            // could not write there and apt would warn on every package.
            "-oAPT::Sandbox::User=root".into(),
        ]
    }

    fn command(&self, program: &str) -> Command {
        let mut command = Command::new(program);
        command.args(self.options());
        command
    }

    /// Fetches the package lists unless they are recent; returns whether it did.
    pub fn update(&self) -> Result<bool> {
        let marker = self.dir.join("lists/.updated");
        let recent = std::fs::metadata(&marker)
            .and_then(|m| m.modified())
            .is_ok_and(|t| {
                SystemTime::now()
                    .duration_since(t)
                    .is_ok_and(|age| age < LISTS_MAX_AGE)
            });
        if recent {
            return Ok(false);
        }
        eprintln!("+ apt-get update (private lists in {})", self.dir.display());
        let out = self
            .command("apt-get")
            .args(["-q", "update"])
            .output()
            .context("running apt-get")?;
        let stderr = String::from_utf8_lossy(&out.stderr);
        // apt-get update exits 0 on a signature it could not check; refuse it.
        if !out.status.success() || stderr.contains("W: GPG error") || stderr.contains("E: ") {
            let have_lists = std::fs::read_dir(self.dir.join("lists")).is_ok_and(|d| {
                d.flatten()
                    .any(|e| e.file_name().to_string_lossy().ends_with("_Packages"))
            });
            if have_lists {
                eprintln!(
                    "vm: refreshing Debian's package lists failed, using the old ones:\n{stderr}"
                );
                return Ok(false);
            }
            bail!("fetching Debian's package lists failed (check the network to deb.debian.org): {stderr}");
        }
        std::fs::write(&marker, "").with_context(|| format!("writing {}", marker.display()))?;
        Ok(true)
    }

    /// `apt-cache show PACKAGE` (one version: `name/suite` or `name=version`).
    fn show(&self, package: &str) -> Result<String> {
        let out = self
            .command("apt-cache")
            .args(["show", package])
            .output()
            .context("running apt-cache")?;
        if !out.status.success() {
            bail!(
                "apt-cache show {package} failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }
}

/// A `Depends:` entry pinned to one version: `name (= version)`.
fn pinned_depends(record: &str) -> Vec<(String, String)> {
    let Some(line) = record.lines().find_map(|l| l.strip_prefix("Depends:")) else {
        return Vec::new();
    };
    line.split(',')
        .filter(|alt| !alt.contains('|'))
        .filter_map(|dep| {
            let (name, rest) = dep.trim().split_once(' ')?;
            let version = rest.trim().strip_prefix("(=")?.strip_suffix(')')?.trim();
            Some((name.to_owned(), version.to_owned()))
        })
        .collect()
}

/// The packages that make up `choice`'s kernel: the versioned image package
/// named by the suite's `linux-image-amd64`, and the packages it is split
/// into (trixie's `linux-binary-*`, `linux-modules-*`, `linux-base-*`: the
/// image's dependencies pinned to its own version).
fn resolve(apt: &Apt, choice: &Choice) -> Result<(String, Vec<String>)> {
    let meta = apt
        .show(&format!("linux-image-amd64/{}", choice.suite))
        .with_context(|| format!("finding the {} kernel in {}", choice.name, choice.suite))?;
    let (image, version) = pinned_depends(&meta)
        .into_iter()
        .find(|(name, _)| name.starts_with("linux-image-") && name.ends_with("-amd64"))
        .with_context(|| {
            format!(
                "linux-image-amd64 in {} depends on no linux-image-*-amd64 package",
                choice.suite
            )
        })?;
    let record = apt.show(&format!("{image}={version}"))?;
    let mut packages = vec![format!("{image}={version}")];
    for (name, pinned) in pinned_depends(&record) {
        if name.starts_with("linux-") && pinned == version {
            packages.push(format!("{name}={version}"));
        }
    }
    Ok((version, packages))
}

impl Apt {
    /// `choice`'s kernel, fetched and unpacked unless cached; also returns
    /// whether it was fetched now.
    pub fn kernel(&self, choice: &Choice) -> Result<(Kernel, bool)> {
        let (version, packages) = resolve(self, choice)?;
        let root = self.vm_dir.join("kernels").join(&version);
        let mut inputs = stamp::Inputs::default();
        inputs.add("unpack", UNPACK_VERSION);
        for package in &packages {
            inputs.add("package", package);
        }
        let hash = inputs.hex();
        let fetched = !stamp::fresh(&root, &hash);
        if fetched {
            unpack(self, choice, &version, &packages, &root)?;
            stamp::mark(&root, &hash)?;
        }
        let release = release_of(&root)?;
        let vmlinuz = [
            root.join("boot").join(format!("vmlinuz-{release}")),
            root.join("lib/modules").join(&release).join("vmlinuz"),
        ]
        .into_iter()
        .find(|p| p.exists())
        .with_context(|| format!("no vmlinuz for {release} in {}", root.display()))?;
        let kernel = Kernel {
            name: choice.name,
            version,
            release,
            root,
            vmlinuz,
        };
        Ok((kernel, fetched))
    }
}

/// Downloads the packages and unpacks them into a temporary directory,
/// renamed to `root` once complete.
fn unpack(
    apt: &Apt,
    choice: &Choice,
    version: &str,
    packages: &[String],
    root: &Path,
) -> Result<()> {
    eprintln!(
        "vm: fetching the {} kernel ({version}): {}",
        choice.name,
        packages.join(" ")
    );
    let debs = apt.dir.join("debs");
    let out = apt
        .command("apt-get")
        .args(["-q", "download"])
        .args(packages)
        .current_dir(&debs)
        .output()
        .context("running apt-get download")?;
    if !out.status.success() {
        bail!(
            "downloading the {} kernel's packages ({}) failed: {}",
            choice.name,
            packages.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    let parent = root
        .parent()
        .context("kernel directories sit in target/vm/kernels")?;
    std::fs::create_dir_all(parent)?;
    let tmp = parent.join(format!(".unpack-{version}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp)?;
    let result = (|| {
        for package in packages {
            let (name, _) = package
                .split_once('=')
                .context("packages are name=version")?;
            let deb = find_deb(&debs, name, version)?;
            let status = Command::new("dpkg-deb")
                .arg("-x")
                .arg(&deb)
                .arg(&tmp)
                .status()
                .context("running dpkg-deb")?;
            if !status.success() {
                bail!("unpacking {} failed ({status}): the file may be damaged, remove it and run again", deb.display());
            }
        }
        // trixie's packages put modules in /usr/lib/modules; depmod -b and the
        // guests look in /lib/modules.
        if !tmp.join("lib").exists() && tmp.join("usr/lib/modules").exists() {
            std::os::unix::fs::symlink("usr/lib", tmp.join("lib"))?;
        }
        let release = release_of(&tmp)?;
        let status = Command::new("depmod")
            .arg("-b")
            .arg(&tmp)
            .arg(&release)
            .status()
            .context("running depmod (install kmod)")?;
        if !status.success() {
            bail!(
                "depmod for the {} kernel ({release}) failed ({status})",
                choice.name
            );
        }
        Ok(())
    })();
    if let Err(e) = result {
        let _ = std::fs::remove_dir_all(&tmp);
        return Err(e);
    }
    stamp::clear(root);
    let _ = std::fs::remove_dir_all(root);
    std::fs::rename(&tmp, root)
        .with_context(|| format!("renaming {} to {}", tmp.display(), root.display()))
}

/// The `.deb` apt-get download wrote for `name` at `version` (the file name
/// escapes the version's `:` as `%3a`).
fn find_deb(debs: &Path, name: &str, version: &str) -> Result<PathBuf> {
    let version = version.replace(':', "%3a");
    let path = debs.join(format!("{name}_{version}_amd64.deb"));
    if path.exists() {
        return Ok(path);
    }
    let all = debs.join(format!("{name}_{version}_all.deb"));
    if all.exists() {
        return Ok(all);
    }
    bail!(
        "apt-get download left no {} in {}",
        path.display(),
        debs.display()
    )
}

/// The one release directory under `lib/modules`.
fn release_of(root: &Path) -> Result<String> {
    let dir = root.join("lib/modules");
    let mut releases: Vec<String> = std::fs::read_dir(&dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .flatten()
        .filter(|e| e.path().join("kernel").is_dir())
        .filter_map(|e| e.file_name().into_string().ok())
        .collect();
    match releases.len() {
        1 => Ok(releases.remove(0)),
        n => bail!(
            "{} holds {n} kernel releases, expected one: remove it and run again",
            dir.display()
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pinned_depends_keeps_exact_versions_only() {
        let record = "Package: linux-image-7.3.4+deb13-amd64\n\
            Depends: dracut | initramfs-tools (>= 0.120+deb8u2) | linux-initramfs-tool, linux-base-7.3.4+deb13-amd64 (= 7.3.4-1~bpo13+1), linux-binary-7.3.4+deb13-amd64 (= 7.3.4-1~bpo13+1), kmod\n";
        assert_eq!(
            pinned_depends(record),
            vec![
                (
                    "linux-base-7.3.4+deb13-amd64".to_owned(),
                    "7.3.4-1~bpo13+1".to_owned()
                ),
                (
                    "linux-binary-7.3.4+deb13-amd64".to_owned(),
                    "7.3.4-1~bpo13+1".to_owned()
                ),
            ]
        );
    }
}
