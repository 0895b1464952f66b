//! A container's labels: its ID, a name, and the Kubernetes pod, namespace and
//! container name when the engine that created it put them in the OCI annotations.

use std::collections::HashMap;
use std::os::fd::AsFd;
use std::path::Path;

use lucid_layout::state::files;
use serde::Deserialize;

use crate::metrics::{render_labels, CONTAINER_LABELS};

/// The longest label value the exporter serves. Kubernetes names are at most
/// 253 bytes, image references a few hundred; a longer value is not a name
/// but a state file made to bloat every series (and Prometheus with it).
pub const MAX_LABEL_BYTES: usize = 1024;

/// The most bytes read of containers/storage's `containers.json`: about
/// 16,000 containers' records.
pub const MAX_STORAGE_BYTES: u64 = 16 << 20;

/// A label value the exporter does not serve.
#[derive(Debug, thiserror::Error)]
#[error("its {label} label would be {bytes} bytes long, more than the {MAX_LABEL_BYTES} the exporter serves")]
pub struct LabelError {
    /// The label.
    pub label: &'static str,
    /// The value's length.
    pub bytes: usize,
}

/// Annotations naming the container, first found wins: containerd's CRI plugin,
/// CRI-O, nerdctl, and `lucid.name` (`--annotation lucid.name=NAME` with any
/// engine). podman 4 puts no name in the annotations: see [`podman_storage`].
const NAME_KEYS: &[&str] = &[
    "io.kubernetes.cri.container-name",
    "io.kubernetes.container.name",
    "nerdctl/name",
    "lucid.name",
];
/// Annotations naming the pod (containerd's CRI plugin, CRI-O).
const POD_KEYS: &[&str] = &["io.kubernetes.cri.sandbox-name", "io.kubernetes.pod.name"];
/// Annotations naming the pod's namespace (containerd's CRI plugin, CRI-O).
const NAMESPACE_KEYS: &[&str] = &[
    "io.kubernetes.cri.sandbox-namespace",
    "io.kubernetes.pod.namespace",
];
/// Annotations naming the image (containerd's CRI plugin, CRI-O, nerdctl).
const IMAGE_KEYS: &[&str] = &[
    "io.kubernetes.cri.image-name",
    "io.kubernetes.cri-o.ImageName",
    "nerdctl/image",
    "org.opencontainers.image.ref.name",
];
/// Annotations saying a container is a pod's sandbox (pause) container.
const SANDBOX_KEYS: &[(&str, &str)] = &[
    ("io.kubernetes.cri.container-type", "sandbox"),
    ("io.kubernetes.cri-o.ContainerType", "sandbox"),
];

/// The label values of one container, in [`CONTAINER_LABELS`] order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerLabels {
    /// The container ID (`container_id`).
    pub container_id: String,
    /// The best name known: the Kubernetes or engine's container name, else the ID (`name`).
    pub name: String,
    /// The Kubernetes container name, empty outside Kubernetes and for sandboxes (`container`).
    pub container: String,
    /// The Kubernetes pod (`pod`).
    pub pod: String,
    /// The Kubernetes namespace (`namespace`).
    pub namespace: String,
    /// The image, where an annotation names it (`image`).
    pub image: String,
}

fn first(annotations: &HashMap<String, String>, keys: &[&str]) -> Option<String> {
    keys.iter()
        .find_map(|k| annotations.get(*k))
        .filter(|v| !v.is_empty())
        .cloned()
}

impl ContainerLabels {
    /// The labels of container `id` with these OCI annotations.
    pub fn from_annotations(id: &str, annotations: &HashMap<String, String>) -> Self {
        let sandbox = SANDBOX_KEYS
            .iter()
            .any(|(k, v)| annotations.get(*k).is_some_and(|a| a == v));
        let kube_container = if sandbox {
            None
        } else {
            first(annotations, &NAME_KEYS[..2])
        };
        let pod = first(annotations, POD_KEYS).unwrap_or_default();
        let name = first(annotations, NAME_KEYS)
            .filter(|_| !sandbox)
            .or_else(|| (sandbox && !pod.is_empty()).then(|| format!("{pod}-sandbox")))
            .unwrap_or_else(|| id.to_owned());
        ContainerLabels {
            container_id: id.to_owned(),
            name,
            container: kube_container.unwrap_or_default(),
            pod,
            namespace: first(annotations, NAMESPACE_KEYS).unwrap_or_default(),
            image: first(annotations, IMAGE_KEYS).unwrap_or_default(),
        }
    }

    /// Fills the name and image from the engine's own record when no
    /// annotation gave them.
    pub fn with_engine_record(mut self, record: EngineRecord) -> Self {
        if self.name == self.container_id {
            if let Some(name) = record.name {
                self.name = name;
            }
        }
        if self.image.is_empty() {
            self.image = record.image.unwrap_or_default();
        }
        self
    }

    /// The values in [`CONTAINER_LABELS`] order.
    pub fn values(&self) -> [&str; 6] {
        [
            &self.container_id,
            &self.name,
            &self.container,
            &self.pod,
            &self.namespace,
            &self.image,
        ]
    }

    /// Refuses a container whose label values are too long to serve.
    pub fn check(&self) -> Result<(), LabelError> {
        match CONTAINER_LABELS
            .iter()
            .zip(self.values())
            .find(|(_, v)| v.len() > MAX_LABEL_BYTES)
        {
            Some((label, value)) => Err(LabelError {
                label,
                bytes: value.len(),
            }),
            None => Ok(()),
        }
    }

    /// The labels as the text format writes them (`container_id="…",name="…",…`).
    pub fn render(&self) -> String {
        let pairs: Vec<(&str, &str)> = CONTAINER_LABELS
            .iter()
            .copied()
            .zip(self.values())
            .collect();
        render_labels(&pairs)
    }
}

/// A container's name and image as its engine recorded them.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct EngineRecord {
    /// The engine's name for the container.
    pub name: Option<String>,
    /// The image it was made from.
    pub image: Option<String>,
}

/// The annotation podman (libpod) sets on every container it makes.
const PODMAN_MANAGER: (&str, &str) = ("io.container.manager", "libpod");

/// A record of containers/storage's `containers.json`, the fields read
/// (the others are skipped unkept).
#[derive(Debug, Deserialize)]
struct StorageRecord {
    id: Option<String>,
    names: Option<Vec<String>>,
    /// JSON in a string: `{"image-name": …, "name": …}`.
    metadata: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
struct StorageMetadata {
    #[serde(rename = "image-name")]
    image_name: Option<String>,
}

/// podman 4 passes the runtime no container name: its annotations carry
/// `io.container.manager=libpod` and flags, but the name lives in
/// containers/storage's `containers.json`, two levels above the bundle podman
/// gives the runtime (`<graphroot>/<driver>-containers/<id>/userdata`), with
/// the image in the record's metadata. Read once per new container, as the
/// state root is: the storage directory is followed (the operator may have
/// moved the graph root), the file itself only if it is a regular file of at
/// most [`MAX_STORAGE_BYTES`], opened without blocking.
pub fn podman_storage(
    id: &str,
    annotations: &HashMap<String, String>,
    bundle: &Path,
) -> Option<EngineRecord> {
    if annotations.get(PODMAN_MANAGER.0).map(String::as_str) != Some(PODMAN_MANAGER.1) {
        return None;
    }
    if !bundle.is_absolute() {
        return None;
    }
    let dir = bundle.parent()?.parent()?;
    let file = dir.join("containers.json");
    let text = match files::open_root(dir)
        .map_err(files::EntryError::Io)
        .and_then(|fd| files::read(fd.as_fd(), Path::new("containers.json"), MAX_STORAGE_BYTES))
    {
        Ok(text) => text,
        Err(e) if e.is_foreign() => {
            log::warn!(
                "{}: {e}; container {id} is served without its podman name",
                file.display()
            );
            return None;
        }
        Err(e) => {
            log::debug!("{}: {e}", file.display());
            return None;
        }
    };
    let records: Vec<StorageRecord> = match serde_json::from_slice(&text) {
        Ok(records) => records,
        Err(e) => {
            log::debug!("{}: {e}", file.display());
            return None;
        }
    };
    let record = records.into_iter().find(|r| r.id.as_deref() == Some(id))?;
    let metadata: StorageMetadata = record
        .metadata
        .and_then(|m| serde_json::from_str(&m).ok())
        .unwrap_or_default();
    Some(EngineRecord {
        name: record.names.and_then(|n| n.into_iter().next()),
        image: metadata.image_name,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ann(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn containerd_cri_annotations_give_pod_namespace_and_container() {
        let l = ContainerLabels::from_annotations(
            "abc",
            &ann(&[
                ("io.kubernetes.cri.container-type", "container"),
                ("io.kubernetes.cri.container-name", "web"),
                ("io.kubernetes.cri.sandbox-name", "web-7d9"),
                ("io.kubernetes.cri.sandbox-namespace", "shop"),
                ("io.kubernetes.cri.image-name", "nginx:1.27"),
            ]),
        );
        assert_eq!(
            l.values(),
            ["abc", "web", "web", "web-7d9", "shop", "nginx:1.27"]
        );
    }

    #[test]
    fn crio_annotations_give_pod_namespace_and_container() {
        let l = ContainerLabels::from_annotations(
            "abc",
            &ann(&[
                ("io.kubernetes.container.name", "db"),
                ("io.kubernetes.pod.name", "db-0"),
                ("io.kubernetes.pod.namespace", "data"),
            ]),
        );
        assert_eq!(l.values(), ["abc", "db", "db", "db-0", "data", ""]);
    }

    #[test]
    fn a_sandbox_has_no_container_label() {
        let l = ContainerLabels::from_annotations(
            "p1",
            &ann(&[
                ("io.kubernetes.cri.container-type", "sandbox"),
                ("io.kubernetes.cri.sandbox-name", "web-7d9"),
                ("io.kubernetes.cri.sandbox-namespace", "shop"),
            ]),
        );
        assert_eq!(l.container, "");
        assert_eq!(l.name, "web-7d9-sandbox");
        assert_eq!(l.pod, "web-7d9");
    }

    #[test]
    fn podman_names_come_from_containers_storage_beside_the_bundle() {
        let graph = tempfile::tempdir().unwrap();
        let bundle = graph.path().join("vfs-containers/abc/userdata");
        std::fs::create_dir_all(&bundle).unwrap();
        std::fs::write(
            graph.path().join("vfs-containers/containers.json"),
            r#"[{"id":"other","names":["x"]},{"id":"abc","names":["web"],
                "metadata":"{\"image-name\":\"localhost/busybox:test\",\"name\":\"web\"}"}]"#,
        )
        .unwrap();
        let podman = ann(&[("io.container.manager", "libpod")]);
        let record = podman_storage("abc", &podman, &bundle).unwrap();
        let l = ContainerLabels::from_annotations("abc", &podman).with_engine_record(record);
        assert_eq!(
            l.values(),
            ["abc", "web", "", "", "", "localhost/busybox:test"]
        );
        // An annotation wins; other engines' bundles are not looked at.
        let named = ann(&[("io.container.manager", "libpod"), ("lucid.name", "n")]);
        let record = podman_storage("abc", &named, &bundle).unwrap();
        let l = ContainerLabels::from_annotations("abc", &named).with_engine_record(record);
        assert_eq!(l.name, "n");
        assert!(podman_storage("abc", &HashMap::new(), &bundle).is_none());
    }

    #[test]
    fn without_annotations_the_name_is_the_id() {
        let l = ContainerLabels::from_annotations("plain", &HashMap::new());
        assert_eq!(l.values(), ["plain", "plain", "", "", "", ""]);
    }

    #[test]
    fn a_containers_json_that_is_no_regular_file_or_too_large_is_not_read() {
        use std::os::unix::fs::symlink;
        let podman = ann(&[("io.container.manager", "libpod")]);
        let graph = tempfile::tempdir().unwrap();
        type Plant = fn(&Path);
        let plants: [(&str, Plant); 3] = [
            ("zero", |f| symlink("/dev/zero", f).unwrap()),
            ("fifo", |f| {
                nix::unistd::mkfifo(f, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap()
            }),
            ("huge", |f| {
                std::fs::File::create(f)
                    .unwrap()
                    .set_len(MAX_STORAGE_BYTES + 1)
                    .unwrap()
            }),
        ];
        for (driver, plant) in plants {
            let bundle = graph.path().join(driver).join("c/abc/userdata");
            std::fs::create_dir_all(&bundle).unwrap();
            plant(&graph.path().join(driver).join("c/containers.json"));
            assert!(
                podman_storage("abc", &podman, &bundle).is_none(),
                "{driver}"
            );
        }
    }

    #[test]
    fn label_values_past_the_bound_are_refused() {
        let long = "n".repeat(MAX_LABEL_BYTES + 1);
        let l = ContainerLabels::from_annotations("abc", &ann(&[("lucid.name", &long)]));
        let err = l.check().unwrap_err();
        assert_eq!((err.label, err.bytes), ("name", MAX_LABEL_BYTES + 1));
        let ok = "n".repeat(MAX_LABEL_BYTES);
        ContainerLabels::from_annotations("abc", &ann(&[("io.kubernetes.pod.name", &ok)]))
            .check()
            .unwrap();
    }
}
