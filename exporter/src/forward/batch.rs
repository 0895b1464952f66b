//! One export request made of several spooled batches: each file is an
//! OTLP-JSON `ExportTraceServiceRequest` (`docs/spool.md`); their
//! `resourceSpans` are merged, spans of the same resource and scope under one
//! entry, so that the resource's attributes travel once per request.

use std::os::fd::AsFd;
use std::path::{Path, PathBuf};

use lucid_layout::state::files::{self, EntryError, MAX_FILE_BYTES};

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::trace::v1::ResourceSpans;

use super::queue::Waiting;

/// The spooled batches of one request, decoded and merged.
#[derive(Debug, Default)]
pub struct Merged {
    /// The batches it holds (those that could be read).
    pub batches: Vec<Waiting>,
    /// The request.
    pub request: ExportTraceServiceRequest,
    /// Spans in it.
    pub spans: u64,
}

/// A batch that cannot be sent.
#[derive(Debug, thiserror::Error)]
pub enum BatchError {
    /// It could not be read.
    #[error("reading spooled batch {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The failure.
        source: std::io::Error,
    },
    /// It is not OTLP-JSON.
    #[error("spooled batch {path} is not an OTLP-JSON ExportTraceServiceRequest: {message}")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// The parser's message.
        message: String,
    },
}

impl BatchError {
    /// The file.
    pub fn path(&self) -> &PathBuf {
        match self {
            BatchError::Read { path, .. } | BatchError::Corrupt { path, .. } => path,
        }
    }
}

/// Spans in a request.
pub fn span_count(request: &ExportTraceServiceRequest) -> u64 {
    request
        .resource_spans
        .iter()
        .flat_map(|r| &r.scope_spans)
        .map(|s| s.spans.len() as u64)
        .sum()
}

/// What [`read`] found.
#[derive(Debug, Default)]
pub struct Loaded {
    /// The batches that could be read, merged.
    pub merged: Merged,
    /// Those that could not, with why.
    pub errors: Vec<(Waiting, BatchError)>,
    /// Those that are gone (evicted since the walk).
    pub vanished: Vec<Waiting>,
}

/// Reads and merges `batches`, files under the state root `root`. Each is
/// read as lucid reads its state root ([`files`]): no link followed below
/// `root`, only a regular file, opened without blocking, at most
/// [`MAX_FILE_BYTES`] (a batch is a few KiB).
pub fn read(root: &Path, batches: Vec<Waiting>) -> Loaded {
    let mut merged = Merged::default();
    let mut errors = Vec::new();
    let mut vanished = Vec::new();
    let root_fd = files::open_root(root);
    for batch in batches {
        let read = match (&root_fd, batch.path.strip_prefix(root)) {
            (Ok(fd), Ok(rel)) => files::read(fd.as_fd(), rel, MAX_FILE_BYTES),
            (Err(e), _) => Err(EntryError::Io(std::io::Error::new(e.kind(), e.to_string()))),
            (_, Err(_)) => Err(EntryError::Io(std::io::Error::other(format!(
                "not under the state root {}",
                root.display()
            )))),
        };
        let text = match read {
            Ok(text) => text,
            Err(EntryError::Missing) => {
                vanished.push(batch);
                continue;
            }
            Err(e) => {
                let source = match e {
                    EntryError::Io(e) => e,
                    foreign => {
                        std::io::Error::new(std::io::ErrorKind::InvalidData, foreign.to_string())
                    }
                };
                let path = batch.path.clone();
                errors.push((batch, BatchError::Read { path, source }));
                continue;
            }
        };
        match serde_json::from_slice::<ExportTraceServiceRequest>(&text) {
            Ok(request) => {
                merged.spans += span_count(&request);
                merge(&mut merged.request.resource_spans, request.resource_spans);
                merged.batches.push(batch);
            }
            Err(e) => {
                let path = batch.path.clone();
                errors.push((
                    batch,
                    BatchError::Corrupt {
                        path,
                        message: e.to_string(),
                    },
                ));
            }
        }
    }
    Loaded {
        merged,
        errors,
        vanished,
    }
}

/// Adds `more` to `into`, under the entries of the same resource and scope.
fn merge(into: &mut Vec<ResourceSpans>, more: Vec<ResourceSpans>) {
    for resource in more {
        let same = into
            .iter_mut()
            .find(|r| r.resource == resource.resource && r.schema_url == resource.schema_url);
        let Some(existing) = same else {
            into.push(resource);
            continue;
        };
        for scope in resource.scope_spans {
            let same = existing
                .scope_spans
                .iter_mut()
                .find(|s| s.scope == scope.scope && s.schema_url == scope.schema_url);
            match same {
                Some(s) => s.spans.extend(scope.spans),
                None => existing.scope_spans.push(scope),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use lucid_layout::spool::Spool;

    fn request(service: &str, scope: &str, names: &[&str]) -> serde_json::Value {
        let spans: Vec<serde_json::Value> = names
            .iter()
            .enumerate()
            .map(|(i, name)| {
                serde_json::json!({
                    "traceId": "0af7651916cd43dd8448eb211c80319c",
                    "spanId": format!("b7ad6b71692033{i:02x}"),
                    "name": name, "kind": 1,
                    "startTimeUnixNano": "1", "endTimeUnixNano": "2",
                })
            })
            .collect();
        serde_json::json!({"resourceSpans": [{
            "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": service}}]},
            "scopeSpans": [{"scope": {"name": scope}, "spans": spans}],
        }]})
    }

    fn write(spool: &Spool, trace: &str, value: &serde_json::Value) {
        spool
            .write("c", trace, &serde_json::to_vec(value).unwrap(), false)
            .unwrap();
    }

    fn waiting(root: &std::path::Path) -> Vec<Waiting> {
        let mut queue = super::super::queue::Queue::new(root);
        queue.walk().unwrap();
        queue.next(u64::MAX)
    }

    #[test]
    fn batches_of_one_resource_and_scope_merge_into_one_entry() {
        let root = tempfile::tempdir().unwrap();
        let spool = Spool::with_bound(root.path(), 1 << 20);
        write(
            &spool,
            "t1-s1",
            &request("lucid", "lucid", &["create", "spec.load"]),
        );
        write(&spool, "t2-s2", &request("lucid", "lucid", &["start"]));
        write(&spool, "t2-s2", &request("lucid", "other", &["x"]));
        write(&spool, "t3-s3", &request("elsewhere", "lucid", &["delete"]));
        let Loaded { merged, errors, .. } = read(root.path(), waiting(root.path()));
        assert!(errors.is_empty(), "{errors:?}");
        assert_eq!(merged.batches.len(), 4);
        assert_eq!(merged.spans, 5);
        assert_eq!(span_count(&merged.request), 5);
        let resources = &merged.request.resource_spans;
        assert_eq!(resources.len(), 2);
        assert_eq!(resources[0].scope_spans.len(), 2);
        let names: Vec<&str> = resources[0].scope_spans[0]
            .spans
            .iter()
            .map(|s| s.name.as_str())
            .collect();
        assert_eq!(names, ["create", "spec.load", "start"]);
    }

    #[test]
    fn a_corrupt_batch_is_reported_and_a_vanished_one_skipped() {
        let root = tempfile::tempdir().unwrap();
        let spool = Spool::with_bound(root.path(), 1 << 20);
        write(&spool, "t1-s1", &request("lucid", "lucid", &["create"]));
        spool.write("c", "t2-s2", b"{not json", false).unwrap();
        write(&spool, "t3-s3", &request("lucid", "lucid", &["delete"]));
        let all = waiting(root.path());
        std::fs::remove_dir_all(all[2].path.parent().unwrap()).unwrap();
        let Loaded {
            merged,
            errors,
            vanished,
        } = read(root.path(), all);
        assert_eq!(merged.spans, 1);
        assert_eq!(vanished.len(), 1);
        assert_eq!(errors.len(), 1);
        assert!(matches!(errors[0].1, BatchError::Corrupt { .. }));
    }
}
