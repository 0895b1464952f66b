//! Span forwarding benchmark: walking a full spool, and shipping it.
//!
//! ```sh
//! cargo run --release -p lucid-exporter --example forward_bench -- \
//!     [--traces 1000] [--batches 2] [--batch-bytes 1048576] [--grpc]
//! ```
//!
//! Writes a spool in a private state root with the runtime's own writer: N
//! traces of B batches shaped like those of `lucid run` (the first of 21 spans
//! and about 9 KB, the others of 9 spans and about 4.5 KB), so that the
//! defaults fill the runtime's default bound of 16 MiB. Then it times a first
//! walk of the spool and walks with nothing changed, and ships the whole spool
//! with the exporter's forwarder to an OTLP/HTTP (or, with `--grpc`, an
//! OTLP/gRPC) receiver in this process that decodes every request. It reports
//! the time to ship, requests, spans per second and the process's RSS (the
//! receiver's share is small: it keeps counts only). Needs no root; removes
//! the state root when it ends.

use std::convert::Infallible;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use lucid_exporter::forward::queue::Queue;
use lucid_exporter::forward::target::{Protocol, Target};
use lucid_exporter::forward::{ForwardSettings, Forwarder};
use lucid_exporter::{Exporter, ScrapeSettings};
use lucid_layout::spool::Spool;
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, InstrumentationScope, KeyValue};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span, Status};
use prost::Message;

struct Options {
    traces: usize,
    batches: usize,
    batch_bytes: u64,
    grpc: bool,
}

fn parse_options() -> anyhow::Result<Options> {
    let mut o = Options {
        traces: 1000,
        batches: 2,
        batch_bytes: lucid_exporter::forward::DEFAULT_BATCH_BYTES,
        grpc: false,
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut num = |name: &str| -> anyhow::Result<u64> {
            args.next()
                .with_context(|| format!("{name} needs a value"))?
                .parse()
                .with_context(|| format!("{name} takes a number"))
        };
        match arg.as_str() {
            "--traces" => o.traces = num("--traces")? as usize,
            "--batches" => o.batches = num("--batches")?.max(1) as usize,
            "--batch-bytes" => o.batch_bytes = num("--batch-bytes")?.max(1),
            "--grpc" => o.grpc = true,
            other => bail!(
                "unknown argument {other}; usage: forward_bench [--traces N] [--batches N] \
                 [--batch-bytes N] [--grpc]"
            ),
        }
    }
    Ok(o)
}

fn text(key: &str, value: &str) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue(value.into())),
        }),
        ..Default::default()
    }
}

fn int(key: &str, value: i64) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(AnyValue {
            value: Some(any_value::Value::IntValue(value)),
        }),
        ..Default::default()
    }
}

/// A batch like one `lucid run` writes: `spans` spans of trace `t`.
fn batch(t: usize, b: usize, spans: usize) -> ExportTraceServiceRequest {
    let trace_id = format!("{t:032x}").into_bytes();
    let trace_id: Vec<u8> = (0..16)
        .map(|i| {
            u8::from_str_radix(
                std::str::from_utf8(&trace_id[i * 2..i * 2 + 2]).unwrap_or("0"),
                16,
            )
            .unwrap_or(0)
        })
        .collect();
    let start = 1_795_000_000_000_000_000u64 + (t as u64) * 1_000_000;
    let spans = (0..spans)
        .map(|i| {
            let mut span_id = [0u8; 8];
            span_id[..4].copy_from_slice(&(t as u32).to_be_bytes());
            span_id[4] = b as u8;
            span_id[5] = i as u8;
            Span {
                trace_id: trace_id.clone(),
                span_id: span_id.to_vec(),
                parent_span_id: vec![1; 8],
                flags: 257,
                name: [
                    "spec.load",
                    "cgroup.create",
                    "init.spawn",
                    "rootfs.mount",
                    "process.setup",
                ][i % 5]
                    .into(),
                kind: 1,
                start_time_unix_nano: start + i as u64 * 1000,
                end_time_unix_nano: start + i as u64 * 1000 + 500,
                attributes: vec![
                    text("container.id", &format!("bench-{t}")),
                    int("process.pid", 4000 + t as i64),
                    int("lucid.cpu_ns", 123_456),
                ],
                status: Some(Status::default()),
                ..Default::default()
            }
        })
        .collect();
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(Resource {
                attributes: vec![
                    text("container.runtime.version", "0.1.0"),
                    text("container.runtime.name", "lucid"),
                    text("telemetry.sdk.version", "0.33.1"),
                    text("telemetry.sdk.language", "rust"),
                    text("service.name", "lucid"),
                    text("telemetry.sdk.name", "opentelemetry"),
                ],
                ..Default::default()
            }),
            scope_spans: vec![ScopeSpans {
                scope: Some(InstrumentationScope {
                    name: "lucid".into(),
                    version: "0.1.0".into(),
                    ..Default::default()
                }),
                spans,
                schema_url: String::new(),
            }],
            schema_url: String::new(),
        }],
    }
}

/// Writes the spool; returns (spans, bytes).
fn fill(root: &Path, o: &Options) -> anyhow::Result<(u64, u64)> {
    let spool = Spool::with_bound(root, u64::MAX / 2);
    let (mut spans, mut bytes) = (0, 0);
    for t in 0..o.traces {
        for b in 0..o.batches {
            let n = if b == 0 { 21 } else { 9 };
            let json = serde_json::to_vec(&batch(t, b, n))?;
            spool.write(
                &format!("bench-{t}"),
                &format!("{t:032x}-{t:016x}"),
                &json,
                false,
            )?;
            spans += n as u64;
            bytes += json.len() as u64;
        }
    }
    Ok((spans, bytes))
}

/// This thread's CPU time.
fn thread_cpu() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime only writes the timespec it is given.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// Runs `f`; returns its wall and CPU time.
fn timed<E>(f: impl FnOnce() -> Result<(), E>) -> Result<(Duration, Duration), E> {
    let (wall, cpu) = (Instant::now(), thread_cpu());
    f()?;
    Ok((wall.elapsed(), thread_cpu() - cpu))
}

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

#[derive(Default)]
struct Counts {
    spans: AtomicU64,
    requests: AtomicU64,
    bytes: AtomicU64,
}

/// An OTLP/HTTP receiver that decodes every request and counts.
async fn http_receiver(counts: Arc<Counts>) -> anyhow::Result<u16> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let port = listener.local_addr()?.port();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let counts = counts.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(
                    move |req: hyper::Request<hyper::body::Incoming>| {
                        let counts = counts.clone();
                        async move {
                            let body = req
                                .into_body()
                                .collect()
                                .await
                                .map(|b| b.to_bytes())
                                .unwrap_or_default();
                            if let Ok(request) = ExportTraceServiceRequest::decode(body.as_ref()) {
                                counts.spans.fetch_add(
                                    lucid_exporter::forward::batch::span_count(&request),
                                    Ordering::Relaxed,
                                );
                                counts.requests.fetch_add(1, Ordering::Relaxed);
                                counts.bytes.fetch_add(body.len() as u64, Ordering::Relaxed);
                            }
                            let reply = ExportTraceServiceResponse::default().encode_to_vec();
                            Ok::<_, Infallible>(hyper::Response::new(Full::new(Bytes::from(reply))))
                        }
                    },
                );
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    Ok(port)
}

/// An OTLP/gRPC receiver (a hand-rolled unary handler over h2c would be more
/// code than it is worth here): hyper's HTTP/2 server decoding gRPC frames.
async fn grpc_receiver(counts: Arc<Counts>) -> anyhow::Result<u16> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let port = listener.local_addr()?.port();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let counts = counts.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(
                    move |req: hyper::Request<hyper::body::Incoming>| {
                        let counts = counts.clone();
                        async move {
                            let body = req
                                .into_body()
                                .collect()
                                .await
                                .map(|b| b.to_bytes())
                                .unwrap_or_default();
                            // One gRPC message: a flag byte, a 4-byte length, the protobuf.
                            if body.len() >= 5 {
                                if let Ok(request) = ExportTraceServiceRequest::decode(&body[5..]) {
                                    counts.spans.fetch_add(
                                        lucid_exporter::forward::batch::span_count(&request),
                                        Ordering::Relaxed,
                                    );
                                    counts.requests.fetch_add(1, Ordering::Relaxed);
                                    counts.bytes.fetch_add(body.len() as u64, Ordering::Relaxed);
                                }
                            }
                            let reply = ExportTraceServiceResponse::default().encode_to_vec();
                            let mut framed = vec![0u8];
                            framed.extend_from_slice(&(reply.len() as u32).to_be_bytes());
                            framed.extend_from_slice(&reply);
                            let mut response = hyper::Response::new(GrpcBody {
                                data: Some(Bytes::from(framed)),
                                trailers: true,
                            });
                            response.headers_mut().insert(
                                "content-type",
                                "application/grpc".parse().expect("a header value"),
                            );
                            Ok::<_, Infallible>(response)
                        }
                    },
                );
                let _ =
                    hyper::server::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new())
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                        .await;
            });
        }
    });
    Ok(port)
}

/// A gRPC answer: one data frame, then the `grpc-status: 0` trailers.
struct GrpcBody {
    data: Option<Bytes>,
    trailers: bool,
}

impl hyper::body::Body for GrpcBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Bytes>, Infallible>>> {
        if let Some(data) = self.data.take() {
            return std::task::Poll::Ready(Some(Ok(hyper::body::Frame::data(data))));
        }
        if self.trailers {
            self.trailers = false;
            let mut trailers = http::HeaderMap::new();
            trailers.insert("grpc-status", "0".parse().expect("a header value"));
            return std::task::Poll::Ready(Some(Ok(hyper::body::Frame::trailers(trailers))));
        }
        std::task::Poll::Ready(None)
    }
}

fn main() -> anyhow::Result<()> {
    let o = parse_options()?;
    let root = tempfile::Builder::new()
        .prefix("lucid-forward-bench-")
        .tempdir()
        .context("making a state root")?;
    let started = Instant::now();
    let (spans, bytes) = fill(root.path(), &o)?;
    println!(
        "spool: {} traces, {} batches, {spans} spans, {:.1} MiB (written in {:.1} s)",
        o.traces,
        o.traces * o.batches,
        bytes as f64 / (1 << 20) as f64,
        started.elapsed().as_secs_f64()
    );

    // Walks, timed on the wall and on this thread's CPU clock (the machine is shared).
    std::thread::sleep(Duration::from_millis(1200));
    let mut queue = Queue::new(root.path());
    let first = timed(|| queue.walk().map(|_| ()))?;
    let found = queue.depth().batches;
    let mut quiet = Vec::new();
    for _ in 0..20 {
        quiet.push(timed(|| queue.walk().map(|_| ()))?);
    }
    let spool = Spool::with_bound(root.path(), u64::MAX / 2);
    let mut changed = Vec::new();
    for i in 0..20 {
        let t = (i * 37) % o.traces.max(1);
        let json = serde_json::to_vec(&batch(t, 100 + i, 9))?;
        spool.write(
            &format!("bench-{t}"),
            &format!("{t:032x}-{t:016x}"),
            &json,
            false,
        )?;
        changed.push(timed(|| queue.walk().map(|_| ()))?);
    }
    let report = |what: &str, mut times: Vec<(Duration, Duration)>| {
        times.sort();
        let (wall, cpu) = times[times.len() / 2];
        println!(
            "walk, {what}: median {:.3} ms wall, {:.3} ms CPU",
            wall.as_secs_f64() * 1e3,
            cpu.as_secs_f64() * 1e3
        );
    };
    println!(
        "walk, first (lists everything): {:.2} ms wall, {:.2} ms CPU ({found} batches waiting)",
        first.0.as_secs_f64() * 1e3,
        first.1.as_secs_f64() * 1e3,
    );
    report("nothing written since (usage unchanged)", quiet);
    report("after one new batch (directories compared)", changed);
    let spans = spans + 20 * 9;
    drop(queue);

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let rss_before = rss_kib();
    runtime.block_on(async {
        let counts = Arc::new(Counts::default());
        let (port, protocol, path) = if o.grpc {
            (grpc_receiver(counts.clone()).await?, Protocol::Grpc, "/")
        } else {
            (http_receiver(counts.clone()).await?, Protocol::HttpProtobuf, "/v1/traces")
        };
        let exporter = Exporter::new(&ScrapeSettings {
            root: root.path().to_path_buf(),
            bpf_pin_root: root.path().join("no-bpf"),
            state_dir: None,
            syscall_top_n: 32,
            threads: 1,
        })?;
        let forwarder = Forwarder::new(
            ForwardSettings {
                target: Target {
                    url: format!("http://127.0.0.1:{port}{path}").parse()?,
                    protocol,
                    headers: Vec::new(),
                    timeout: Duration::from_secs(10),
                    tls: None,
                },
                root: root.path().to_path_buf(),
                batch_bytes: o.batch_bytes,
                poll_interval: Duration::from_secs(2),
                max_backoff: Duration::from_secs(1),
            },
            exporter.self_metrics(),
        )?;
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let started = Instant::now();
        let task = tokio::spawn(forwarder.run(stopped));
        let mut peak = rss_kib();
        while counts.spans.load(Ordering::Relaxed) < spans {
            if started.elapsed() > Duration::from_secs(600) {
                bail!("the spool was not shipped within 10 minutes");
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
            peak = peak.max(rss_kib());
        }
        let took = started.elapsed();
        let _ = stop.send(true);
        let _ = task.await;
        let requests = counts.requests.load(Ordering::Relaxed);
        println!(
            "ship ({}): {spans} spans in {requests} requests ({:.1} MiB on the wire) in {:.2} s: {:.0} spans/s",
            if o.grpc { "grpc" } else { "http/protobuf" },
            counts.bytes.load(Ordering::Relaxed) as f64 / (1 << 20) as f64,
            took.as_secs_f64(),
            spans as f64 / took.as_secs_f64()
        );
        println!(
            "RSS: {:.1} MiB before shipping, peak {:.1} MiB while shipping",
            rss_before as f64 / 1024.0,
            peak as f64 / 1024.0
        );
        anyhow::Ok(())
    })?;
    Ok(())
}
