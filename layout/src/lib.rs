//! What lucid keeps on the host, and the one definition of how it is laid
//! out, shared by the `lucid` runtime (which writes it) and `lucid-exporter`
//! (which reads it), so the exporter needs none of the runtime's machinery
//! (seccomp, capabilities, the OpenTelemetry SDK):
//!
//! - [`state`]: the state root (`/run/lucid/<id>/`), `state.json`'s schema
//!   and the rules every open under the root follows ([`state::files`]);
//! - [`spool`]: finished spans waiting for the exporter and `lucid trace`
//!   (`docs/spool.md`);
//! - [`hierarchy`]: the host's cgroup hierarchies, from mountinfo;
//! - [`Protocol`]: the OTLP wire protocols, named alike by both.

pub mod hierarchy;
pub mod spool;
pub mod state;

/// The OTLP wire protocols.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// OTLP/HTTP with a protobuf body (`http/protobuf`, the default).
    HttpProtobuf,
    /// OTLP/HTTP with a JSON body (`http/json`).
    HttpJson,
    /// OTLP/gRPC (`grpc`).
    Grpc,
}
