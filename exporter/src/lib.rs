//! `lucid-exporter`: Prometheus metrics for every lucid container on the host.
//!
//! At each scrape the exporter finds the containers in the runtime's state
//! root ([`discovery`]), reads their cgroups ([`resources`], cAdvisor's metric
//! names and meanings) and the counters lucid's eBPF programs keep for them
//! ([`bpf`]), feeds the lifecycle histograms from the phases each container
//! recorded ([`lifecycle`]), measures the runtime's span spool ([`spool`]),
//! and serves the lot over HTTP ([`server`]). Every metric is listed once, in
//! [`metrics::METRICS`], which `docs/metrics.md` is checked against. With an
//! OTLP endpoint, it also ships the spool there ([`forward`]).

pub mod bpf;
pub mod discovery;
pub mod forward;
pub mod labels;
pub mod lifecycle;
pub mod metrics;
pub mod resources;
pub mod scrape;
pub mod server;
pub mod spool;

pub use scrape::{Exporter, ScrapeSettings};
