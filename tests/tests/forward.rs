//! `lucid-exporter` shipping the span spool of real containers (made with the
//! `lucid` binary) to a real OTLP receiver on loopback: spans spooled while
//! no collector listened arrive once it is up, each exactly once, also across
//! exporter restarts; retries honour `Retry-After`; an unreachable, wrong or
//! silent endpoint is counted while `/metrics` stays served and the spool and
//! the exporter's memory stay bounded. Needs root.
//!
//! Every exporter and receiver a test starts is stopped (by pid, or by
//! dropping it) when the test ends, also when it fails.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use lucid_tests::otlp::{hex, spooled, Behaviour, Received, Receiver, ReservedPort};
use lucid_tests::otlp_grpc::GrpcReceiver;
use lucid_tests::prometheus::{free_port, wait_for, Exporter};
use lucid_tests::tls::TestPki;
use lucid_tests::{unique_id, Bundle, Runtime};

/// OTEL variables a developer's shell might set, cleared for every process.
const OTEL_VARS: &[&str] = &[
    "OTEL_SDK_DISABLED",
    "OTEL_TRACES_EXPORTER",
    "OTEL_EXPORTER_OTLP_ENDPOINT",
    "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
    "OTEL_EXPORTER_OTLP_PROTOCOL",
    "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
    "OTEL_EXPORTER_OTLP_TIMEOUT",
    "OTEL_EXPORTER_OTLP_TRACES_TIMEOUT",
    "OTEL_EXPORTER_OTLP_HEADERS",
    "OTEL_EXPORTER_OTLP_TRACES_HEADERS",
    "OTEL_EXPORTER_OTLP_COMPRESSION",
    "OTEL_EXPORTER_OTLP_TRACES_COMPRESSION",
    "OTEL_SERVICE_NAME",
    "OTEL_RESOURCE_ATTRIBUTES",
    "OTEL_TRACES_SAMPLER",
    "TRACEPARENT",
    "TRACESTATE",
    "LUCID_SPOOL_MAX_BYTES",
];

// ------------------------------------------------------------- containers

/// Runs a container to its end with `lucid run` (no OTLP endpoint: its spans
/// go to the spool only), with `env` added.
fn run_container(rt: &Runtime, env: &[(&str, &str)]) -> String {
    let id = unique_id("fwd");
    let bundle = Bundle::new(rt, &id, &["true"]);
    let mut command = rt.command();
    command.args(["run", "--bundle", bundle.arg(), &id]);
    for var in OTEL_VARS {
        command.env_remove(var);
    }
    for (k, v) in env {
        command.env(k, v);
    }
    let out = command
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .expect("running lucid");
    assert!(
        out.status.success(),
        "lucid run {id} failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    id
}

/// The batch files of the spool: (waiting `*.json`, shipped `*.json.sent`).
fn spool_files(root: &Path) -> (Vec<PathBuf>, Vec<PathBuf>) {
    let (mut waiting, mut sent) = (Vec::new(), Vec::new());
    let spool = root.join("@spool");
    for container in std::fs::read_dir(&spool).into_iter().flatten().flatten() {
        for trace in std::fs::read_dir(container.path())
            .into_iter()
            .flatten()
            .flatten()
        {
            for file in std::fs::read_dir(trace.path())
                .into_iter()
                .flatten()
                .flatten()
            {
                let name = file.file_name().to_string_lossy().into_owned();
                if name.starts_with('.') {
                    continue;
                }
                if name.ends_with(".json") {
                    waiting.push(file.path());
                } else if name.ends_with(".json.sent") {
                    sent.push(file.path());
                }
            }
        }
    }
    (waiting, sent)
}

/// Bytes of every file in the spool's trace directories.
fn spool_bytes(root: &Path) -> u64 {
    let spool = root.join("@spool");
    let mut total = 0;
    for container in std::fs::read_dir(&spool).into_iter().flatten().flatten() {
        for trace in std::fs::read_dir(container.path())
            .into_iter()
            .flatten()
            .flatten()
        {
            for file in std::fs::read_dir(trace.path())
                .into_iter()
                .flatten()
                .flatten()
            {
                total += file.metadata().map(|m| m.len()).unwrap_or(0);
            }
        }
    }
    total
}

/// Span ids (hex) of every batch in the spool, shipped or not.
fn spooled_span_ids(root: &Path) -> Vec<String> {
    let mut ids = Vec::new();
    for container in std::fs::read_dir(root.join("@spool"))
        .into_iter()
        .flatten()
        .flatten()
    {
        if container.file_type().is_ok_and(|t| t.is_dir()) {
            let name = container.file_name().to_string_lossy().into_owned();
            ids.extend(spooled(root, &name).iter().map(|r| hex(&r.span.span_id)));
        }
    }
    ids.sort();
    ids
}

/// Sorted span ids of what a receiver got.
fn received_ids(spans: &[Received]) -> Vec<String> {
    let mut ids: Vec<String> = spans.iter().map(|r| hex(&r.span.span_id)).collect();
    ids.sort();
    ids
}

/// Fails unless `received` holds each of `expected` exactly once, and nothing else.
fn assert_exactly_once(received: &[String], expected: &[String]) {
    let unique: HashSet<&String> = received.iter().collect();
    assert_eq!(
        unique.len(),
        received.len(),
        "{} spans arrived more than once",
        received.len() - unique.len()
    );
    assert_eq!(
        received, expected,
        "the receiver's spans are not the spool's"
    );
}

// ------------------------------------------------------------- the exporter

/// The exporter's command for the state root `root` (with `rt`'s eBPF pins)
/// and its own state in `state`, with `args`, `env`, and no other `OTEL_*`.
fn exporter_command(
    rt: &Runtime,
    root: &Path,
    state: &Path,
    args: &[&str],
    env: &[(&str, &str)],
) -> Command {
    let mut command = Exporter::command(root, rt.pin_root(), state, args);
    for var in OTEL_VARS {
        command.env_remove(var);
    }
    for (k, v) in env {
        command.env(k, v);
    }
    command
}

/// Starts an exporter on `rt`'s state root; see [`exporter_command`].
fn start_exporter(rt: &Runtime, state: &Path, args: &[&str], env: &[(&str, &str)]) -> Exporter {
    Exporter::start_command(exporter_command(rt, rt.root(), state, args, env), state)
}

/// A sample's value: `series` is `name` or `name{label="value"}`.
fn value(exporter: &mut Exporter, series: &str) -> f64 {
    let text = exporter.metrics();
    sample(&text, series).unwrap_or_else(|| panic!("no {series} in:\n{text}"))
}

/// Stops the exporter with SIGTERM, as systemd does; fails unless it exits cleanly.
fn terminate(mut exporter: Exporter) {
    let status = exporter.process.terminate();
    assert!(
        status.success(),
        "the exporter exited {status}:\n{}",
        exporter.log()
    );
}

/// The value of `series` (`name` or `name{label="value"}`) in an exposition.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.rsplit_once(' '))
        .find(|(s, _)| *s == series)
        .and_then(|(_, v)| v.parse().ok())
}

/// Forwarding flags that keep the tests quick: the spool walked every 100 ms,
/// at most 1 s between attempts.
const QUICK: &[&str] = &["--spool-poll-interval", "100ms", "--otlp-max-backoff", "1s"];

fn args<'a>(endpoint: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
    let mut out = vec!["--otlp-endpoint", endpoint];
    out.extend_from_slice(QUICK);
    out.extend_from_slice(extra);
    out
}

// ------------------------------------------------------------- the tests

#[test]
fn spans_spooled_while_no_collector_listened_reach_it_once_up_exactly_once_across_restarts() {
    let rt = Runtime::new();
    let state = tempfile::tempdir().expect("a state dir");
    let port = ReservedPort::new();
    let endpoint = port.endpoint();
    // Containers live and die while nothing listens on the endpoint.
    let first: Vec<String> = (0..3).map(|_| run_container(&rt, &[])).collect();
    let (waiting, sent) = spool_files(rt.root());
    assert!(
        waiting.len() >= 3 && sent.is_empty(),
        "{waiting:?} {sent:?}"
    );

    let mut exporter = start_exporter(&rt, state.path(), &args(&endpoint, &[]), &[]);
    wait_for(30, "a failed attempt on the closed port", || {
        let text = exporter.metrics();
        (sample(
            &text,
            "lucid_forward_failures_total{reason=\"unreachable\"}",
        )? >= 1.0
            && sample(&text, "lucid_spool_unshipped_batches")? == waiting.len() as f64)
            .then_some(())
    });
    assert!(value(&mut exporter, "lucid_spool_unshipped_bytes") > 0.0);
    assert!(value(&mut exporter, "lucid_spool_oldest_unshipped_age_seconds") > 0.0);
    assert!(
        value(
            &mut exporter,
            "lucid_exporter_errors_total{kind=\"otlp_export\"}"
        ) >= 1.0
    );
    assert_eq!(value(&mut exporter, "lucid_forward_spans_total"), 0.0);
    assert_eq!(
        spool_files(rt.root()).1.len(),
        0,
        "a batch was marked shipped"
    );
    let log = exporter.log();
    assert!(
        log.contains(&endpoint) && log.contains("unreachable"),
        "the failure is not logged with its endpoint and reason:\n{log}"
    );

    // The collector comes up on that port.
    let receiver = Receiver::start_on(port.listen(), Behaviour::Accept);
    wait_for(30, "the spool to be shipped", || {
        (value(&mut exporter, "lucid_spool_unshipped_batches") == 0.0).then_some(())
    });
    let expected = spooled_span_ids(rt.root());
    assert_exactly_once(&received_ids(&receiver.spans()), &expected);
    let (waiting, sent) = spool_files(rt.root());
    assert!(waiting.is_empty(), "not marked shipped: {waiting:?}");
    // Every batch went in one request (they are far below the 1 MiB bound).
    assert_eq!(receiver.requests().len(), 1, "{:?}", receiver.requests());
    assert_eq!(value(&mut exporter, "lucid_forward_requests_total"), 1.0);
    assert_eq!(
        value(&mut exporter, "lucid_forward_spans_total"),
        expected.len() as f64
    );
    assert_eq!(
        value(&mut exporter, "lucid_spool_oldest_unshipped_age_seconds"),
        0.0
    );
    assert_eq!(
        value(&mut exporter, "lucid_spool_evicted_batches_total"),
        0.0
    );
    assert!(
        exporter.log().contains("again, after"),
        "recovery not logged"
    );
    // Shipped batches stay readable by `lucid trace`.
    let trace = rt.ok(&["trace", &first[0]]);
    assert!(trace.contains("init.spawn"), "{trace}");

    // Stopped cleanly; more containers while it is down; a new exporter
    // ships only those.
    terminate(exporter);
    for _ in 0..2 {
        run_container(&rt, &[]);
    }
    let mut second = start_exporter(&rt, state.path(), &args(&endpoint, &[]), &[]);
    wait_for(30, "the new batches to be shipped", || {
        (value(&mut second, "lucid_spool_unshipped_batches") == 0.0
            && value(&mut second, "lucid_forward_requests_total") >= 1.0)
            .then_some(())
    });
    let all = spooled_span_ids(rt.root());
    assert_exactly_once(&received_ids(&receiver.spans()), &all);
    assert_eq!(
        value(&mut second, "lucid_forward_spans_total"),
        (all.len() - expected.len()) as f64,
        "the restarted exporter sent old batches again"
    );
    assert!(spool_files(rt.root()).0.is_empty());
    assert_eq!(spool_files(rt.root()).1.len(), sent.len() + 4);
}

#[test]
fn a_request_in_flight_at_sigterm_is_finished_and_marked_so_a_restart_does_not_resend_it() {
    let rt = Runtime::new();
    let state = tempfile::tempdir().expect("a state dir");
    run_container(&rt, &[]);
    let receiver = Receiver::start(Behaviour::AcceptAfter(Duration::from_secs(2)));
    let endpoint = receiver.endpoint();
    let exporter = start_exporter(&rt, state.path(), &args(&endpoint, &[]), &[]);
    wait_for(30, "the request to arrive", || {
        (!receiver.arrivals().is_empty()).then_some(())
    });
    // Stopped while the receiver has not answered yet.
    terminate(exporter);
    let first = spooled_span_ids(rt.root());
    assert_exactly_once(&received_ids(&receiver.spans()), &first);
    let (waiting, sent) = spool_files(rt.root());
    assert!(
        waiting.is_empty(),
        "not marked shipped at exit: {waiting:?}"
    );

    // A restarted exporter sends what came since, and nothing else.
    run_container(&rt, &[]);
    let mut second = start_exporter(&rt, state.path(), &args(&endpoint, &[]), &[]);
    wait_for(30, "the new batches to be shipped", || {
        (value(&mut second, "lucid_spool_unshipped_batches") == 0.0
            && value(&mut second, "lucid_forward_requests_total") == 1.0)
            .then_some(())
    });
    assert_exactly_once(
        &received_ids(&receiver.spans()),
        &spooled_span_ids(rt.root()),
    );
    assert_eq!(receiver.arrivals().len(), 2);
    let (waiting, sent_now) = spool_files(rt.root());
    assert!(waiting.is_empty() && sent_now.len() > sent.len());
}

#[test]
fn a_receiver_answering_503_or_429_with_retry_after_is_retried_after_that_delay() {
    for (status, reason) in [(503, "unavailable"), (429, "throttled")] {
        let rt = Runtime::new();
        let state = tempfile::tempdir().expect("a state dir");
        run_container(&rt, &[]);
        let receiver = Receiver::start(Behaviour::Refuse {
            status,
            retry_after: Some(2),
            times: 1,
        });
        let endpoint = receiver.endpoint();
        // Backoff alone would wait at most 1 s: the 2 s can only come from Retry-After.
        let mut exporter = start_exporter(&rt, state.path(), &args(&endpoint, &[]), &[]);
        wait_for(30, "the spool to be shipped", || {
            (value(&mut exporter, "lucid_spool_unshipped_batches") == 0.0
                && value(&mut exporter, "lucid_forward_requests_total") == 1.0)
                .then_some(())
        });
        let arrivals = receiver.arrivals();
        assert_eq!(arrivals.len(), 2, "{status}: {:?}", receiver.requests());
        let waited = arrivals[1] - arrivals[0];
        assert!(
            waited >= Duration::from_secs(2),
            "{status}: retried after {waited:?}, before the 2 s Retry-After"
        );
        assert_eq!(
            value(
                &mut exporter,
                &format!("lucid_forward_failures_total{{reason=\"{reason}\"}}")
            ),
            1.0
        );
        assert_exactly_once(
            &received_ids(&receiver.spans()),
            &spooled_span_ids(rt.root()),
        );
    }

    // Without Retry-After: backed off, retried until accepted.
    let rt = Runtime::new();
    let state = tempfile::tempdir().expect("a state dir");
    run_container(&rt, &[]);
    let receiver = Receiver::start(Behaviour::Refuse {
        status: 502,
        retry_after: None,
        times: 3,
    });
    let endpoint = receiver.endpoint();
    let mut exporter = start_exporter(&rt, state.path(), &args(&endpoint, &[]), &[]);
    wait_for(30, "the spool to be shipped", || {
        (value(&mut exporter, "lucid_spool_unshipped_batches") == 0.0
            && value(&mut exporter, "lucid_forward_requests_total") == 1.0)
            .then_some(())
    });
    assert_eq!(receiver.arrivals().len(), 4);
    assert_eq!(
        value(
            &mut exporter,
            "lucid_forward_failures_total{reason=\"unavailable\"}"
        ),
        3.0
    );
    assert_exactly_once(
        &received_ids(&receiver.spans()),
        &spooled_span_ids(rt.root()),
    );
}

#[test]
fn grpc_and_http_json_with_headers_from_the_otel_variables_deliver_every_span_once() {
    // gRPC, configured by the standard variables alone.
    let rt = Runtime::new();
    let state = tempfile::tempdir().expect("a state dir");
    for _ in 0..2 {
        run_container(&rt, &[]);
    }
    let grpc = GrpcReceiver::start();
    let grpc_endpoint = grpc.endpoint();
    let mut exporter = start_exporter(
        &rt,
        state.path(),
        QUICK,
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", grpc_endpoint.as_str()),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
            ("OTEL_EXPORTER_OTLP_HEADERS", "x-lucid-test=grpc"),
        ],
    );
    wait_for(30, "the spool to be shipped over gRPC", || {
        (value(&mut exporter, "lucid_spool_unshipped_batches") == 0.0
            && value(&mut exporter, "lucid_forward_requests_total") >= 1.0)
            .then_some(())
    });
    assert_exactly_once(&received_ids(&grpc.spans()), &spooled_span_ids(rt.root()));
    let metadata = grpc.metadata();
    assert!(
        !metadata.is_empty() && metadata.iter().all(|m| m.contains("x-lucid-test: grpc")),
        "{metadata:?}"
    );
    drop(exporter);

    // OTLP/HTTP with a JSON body to a traces endpoint used as is, with headers.
    let rt = Runtime::new();
    let state = tempfile::tempdir().expect("a state dir");
    run_container(&rt, &[]);
    let receiver = Receiver::start(Behaviour::Accept);
    let traces = format!("{}/v1/traces", receiver.endpoint());
    let mut exporter = start_exporter(
        &rt,
        state.path(),
        QUICK,
        &[
            ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", traces.as_str()),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json"),
            (
                "OTEL_EXPORTER_OTLP_HEADERS",
                "x-lucid-test=sent%20as%20is,X-Tenant=a",
            ),
        ],
    );
    wait_for(30, "the spool to be shipped as JSON", || {
        (value(&mut exporter, "lucid_spool_unshipped_batches") == 0.0
            && value(&mut exporter, "lucid_forward_requests_total") >= 1.0)
            .then_some(())
    });
    assert_exactly_once(
        &received_ids(&receiver.spans()),
        &spooled_span_ids(rt.root()),
    );
    assert!(
        receiver
            .requests()
            .iter()
            .all(|r| r == "POST /v1/traces HTTP/1.1 application/json"),
        "{:?}",
        receiver.requests()
    );
    let head = receiver.heads().join("\n").to_ascii_lowercase();
    assert!(
        head.contains("x-lucid-test: sent as is") && head.contains("x-tenant: a"),
        "{head}"
    );
}

#[test]
fn https_and_grpc_over_tls_deliver_with_the_certificate_variables_and_bad_tls_is_counted() {
    let pki = TestPki::new();
    let path = |p: &Path| p.to_str().expect("a UTF-8 path").to_owned();
    let (ca, client_cert, client_key) = (
        path(&pki.ca_file),
        path(&pki.client_cert_file),
        path(&pki.client_key_file),
    );
    let shipped = |exporter: &mut Exporter| {
        wait_for(30, "the spool to be shipped", || {
            (value(exporter, "lucid_spool_unshipped_batches") == 0.0
                && value(exporter, "lucid_forward_requests_total") >= 1.0)
                .then_some(())
        });
    };

    // OTLP/HTTPS with mutual TLS: the CA and the client's certificate from the variables.
    let rt = Runtime::new();
    let state = tempfile::tempdir().expect("a state dir");
    run_container(&rt, &[]);
    let receiver = Receiver::start_tls(Behaviour::Accept, pki.server_config(true));
    let endpoint = receiver.tls_endpoint();
    let mut exporter = start_exporter(
        &rt,
        state.path(),
        QUICK,
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str()),
            ("OTEL_EXPORTER_OTLP_CERTIFICATE", ca.as_str()),
            (
                "OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE",
                client_cert.as_str(),
            ),
            ("OTEL_EXPORTER_OTLP_CLIENT_KEY", client_key.as_str()),
        ],
    );
    shipped(&mut exporter);
    assert_exactly_once(
        &received_ids(&receiver.spans()),
        &spooled_span_ids(rt.root()),
    );
    drop(exporter);

    // OTLP/gRPC over TLS.
    let rt = Runtime::new();
    let state = tempfile::tempdir().expect("a state dir");
    run_container(&rt, &[]);
    let grpc = GrpcReceiver::start_tls(pki.server_pem.clone());
    let grpc_endpoint = grpc.tls_endpoint();
    let mut exporter = start_exporter(
        &rt,
        state.path(),
        QUICK,
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", grpc_endpoint.as_str()),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
            ("OTEL_EXPORTER_OTLP_CERTIFICATE", ca.as_str()),
        ],
    );
    shipped(&mut exporter);
    assert_exactly_once(&received_ids(&grpc.spans()), &spooled_span_ids(rt.root()));
    drop(exporter);

    // A server the host's roots do not trust, and a client without the
    // certificate the server asks for: counted as TLS failures, nothing sent.
    let rt = Runtime::new();
    run_container(&rt, &[]);
    let strict = Receiver::start_tls(Behaviour::Accept, pki.server_config(true));
    let strict_endpoint = strict.tls_endpoint();
    for (name, env) in [
        (
            "untrusted",
            vec![("OTEL_EXPORTER_OTLP_ENDPOINT", strict_endpoint.as_str())],
        ),
        (
            "no client certificate",
            vec![
                ("OTEL_EXPORTER_OTLP_ENDPOINT", strict_endpoint.as_str()),
                ("OTEL_EXPORTER_OTLP_CERTIFICATE", ca.as_str()),
            ],
        ),
    ] {
        let state = tempfile::tempdir().expect("a state dir");
        let mut exporter = start_exporter(&rt, state.path(), QUICK, &env);
        wait_for(30, "a TLS failure", || {
            (value(
                &mut exporter,
                "lucid_forward_failures_total{reason=\"tls\"}",
            ) >= 1.0)
                .then_some(())
        });
        assert_eq!(
            value(&mut exporter, "lucid_forward_spans_total"),
            0.0,
            "{name}"
        );
        assert!(
            value(&mut exporter, "lucid_spool_unshipped_batches") > 0.0,
            "{name}"
        );
        let log = exporter.log();
        assert!(log.contains("(tls)"), "{name}: {log}");
    }
    assert!(strict.spans().is_empty());
    assert!(spool_files(rt.root()).1.is_empty());
}

/// The figures of one failing exporter.
struct Failing {
    exporter: Exporter,
    reason: &'static str,
    rss_after_warm_up: u64,
}

#[test]
fn an_unreachable_wrong_or_silent_endpoint_is_counted_while_metrics_stay_served_and_bounded() {
    const BOUND: u64 = 96 * 1024;
    let bound = BOUND.to_string();
    let spool_env = [("LUCID_SPOOL_MAX_BYTES", bound.as_str())];
    let rt = Runtime::new();
    let state = tempfile::tempdir().expect("a state dir");
    let closed = ReservedPort::new();
    let wrong = Receiver::start(Behaviour::NotFound);
    let silent = Receiver::start(Behaviour::Hang);
    let (closed_endpoint, wrong_endpoint, silent_endpoint) =
        (closed.endpoint(), wrong.endpoint(), silent.endpoint());
    let mut failing = Vec::new();
    for (name, endpoint, reason, env) in [
        (
            "unreachable",
            closed_endpoint.as_str(),
            "unreachable",
            vec![],
        ),
        ("wrong", wrong_endpoint.as_str(), "refused", vec![]),
        (
            "silent",
            silent_endpoint.as_str(),
            "timeout",
            vec![("OTEL_EXPORTER_OTLP_TIMEOUT", "300")],
        ),
    ] {
        let dir = state.path().join(name);
        std::fs::create_dir(&dir).expect("a state dir");
        failing.push(Failing {
            exporter: start_exporter(&rt, &dir, &args(endpoint, &[]), &env),
            reason,
            rss_after_warm_up: 0,
        });
    }

    // Fill the spool past its bound, scraping every exporter after each container.
    let mut traces_written = 0;
    let mut run_and_scrape = |n: usize, failing: &mut Vec<Failing>| {
        for _ in 0..n {
            run_container(&rt, &spool_env);
            traces_written += 1;
            for f in failing.iter_mut() {
                f.exporter.metrics();
            }
            let bytes = spool_bytes(rt.root());
            assert!(
                bytes <= BOUND,
                "the spool holds {bytes} bytes, over {BOUND}"
            );
        }
    };
    run_and_scrape(10, &mut failing);
    for f in failing.iter_mut() {
        f.rss_after_warm_up = f.exporter.process.rss_kib();
    }
    run_and_scrape(30, &mut failing);
    let traces_left = std::fs::read_dir(rt.root().join("@spool"))
        .expect("the spool")
        .flatten()
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .count();
    assert!(
        traces_left < traces_written,
        "nothing was evicted ({traces_left} of {traces_written} traces left): raise the container count"
    );
    // Let every exporter see the last evictions.
    std::thread::sleep(Duration::from_millis(500));

    for f in failing.iter_mut() {
        let text = f.exporter.metrics();
        let failures = sample(
            &text,
            &format!("lucid_forward_failures_total{{reason=\"{}\"}}", f.reason),
        )
        .expect("the failure counter");
        assert!(failures >= 1.0, "{}: no failure counted:\n{text}", f.reason);
        let all: f64 = text
            .lines()
            .filter(|l| l.starts_with("lucid_forward_failures_total{"))
            .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
            .sum();
        assert_eq!(
            all, failures,
            "{}: failures of other reasons:\n{text}",
            f.reason
        );
        assert_eq!(
            sample(&text, "lucid_exporter_errors_total{kind=\"otlp_export\"}"),
            Some(failures)
        );
        assert_eq!(sample(&text, "lucid_forward_spans_total"), Some(0.0));
        let evicted = sample(&text, "lucid_spool_evicted_batches_total").expect("evicted");
        assert!(evicted >= 1.0, "{}: no eviction counted", f.reason);
        let unshipped = sample(&text, "lucid_spool_unshipped_bytes").expect("unshipped bytes");
        assert!(unshipped > 0.0 && unshipped <= BOUND as f64, "{unshipped}");
        assert!(sample(&text, "lucid_spool_oldest_unshipped_age_seconds").expect("age") > 0.0);
        // One warning for the whole streak, the rest at debug level.
        let log = f.exporter.log();
        let warnings = log
            .lines()
            .filter(|l| l.contains(": warn: shipping spans to"))
            .count();
        assert_eq!(warnings, 1, "{}: {warnings} warnings:\n{log}", f.reason);
        let grown = f
            .exporter
            .process
            .rss_kib()
            .saturating_sub(f.rss_after_warm_up);
        assert!(
            grown < 4 * 1024,
            "{}: RSS grew {grown} KiB while 30 more containers were spooled and evicted",
            f.reason
        );
    }
    // Nothing was marked shipped.
    assert!(spool_files(rt.root()).1.is_empty());
}

/// A read-only tmpfs mounted for the test, unmounted on drop.
struct ReadOnlyMount(tempfile::TempDir);

impl ReadOnlyMount {
    fn new() -> Self {
        let dir = tempfile::tempdir().expect("a mount point");
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", "ro,size=1m", "lucid-test-ro"])
            .arg(dir.path())
            .status()
            .expect("running mount");
        assert!(status.success(), "mounting a read-only tmpfs");
        ReadOnlyMount(dir)
    }
}

impl Drop for ReadOnlyMount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.0.path()).status();
    }
}

#[test]
fn forwarding_refuses_what_it_cannot_honour_by_name() {
    let rt = Runtime::new();
    let state = tempfile::tempdir().expect("a state dir");
    // Each must exit at once with an error; one that starts serving is killed.
    let refused = |args: &[&str], env: &[(&str, &str)], root: Option<&Path>| -> String {
        let log = state.path().join("refused.log");
        let listen = format!("127.0.0.1:{}", free_port());
        let mut child = exporter_command(&rt, root.unwrap_or(rt.root()), state.path(), args, env)
            .args(["--listen", &listen])
            .stderr(std::fs::File::create(&log).expect("a log file"))
            .spawn()
            .expect("starting lucid-exporter");
        let deadline = lucid_tests::deadline(20);
        let status = loop {
            if let Some(status) = child.try_wait().expect("waiting for lucid-exporter") {
                break status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!("lucid-exporter {args:?} {env:?} started instead of refusing");
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        assert!(!status.success(), "{args:?} {env:?} exited 0");
        std::fs::read_to_string(&log).expect("the log")
    };
    // A spool it cannot mark shipped batches in: they would be sent again.
    let read_only = ReadOnlyMount::new();
    let err = refused(
        &["--otlp-endpoint", "http://127.0.0.1:4318"],
        &[],
        Some(read_only.0.path()),
    );
    assert!(err.contains("not writable"), "{err}");
    // Certificates for an endpoint without TLS, a certificate file that is
    // not one, compression, tuning flags without an endpoint.
    let err = refused(
        &["--otlp-endpoint", "http://127.0.0.1:4318"],
        &[(
            "OTEL_EXPORTER_OTLP_CERTIFICATE",
            "/etc/ssl/certs/ca-certificates.crt",
        )],
        None,
    );
    assert!(err.contains("is not https://"), "{err}");
    let err = refused(
        &["--otlp-endpoint", "https://127.0.0.1:4318"],
        &[("OTEL_EXPORTER_OTLP_CERTIFICATE", "/etc/hostname")],
        None,
    );
    assert!(
        err.contains("OTEL_EXPORTER_OTLP_CERTIFICATE=/etc/hostname"),
        "{err}"
    );
    let err = refused(
        &[],
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4318"),
            ("OTEL_EXPORTER_OTLP_COMPRESSION", "gzip"),
        ],
        None,
    );
    assert!(err.contains("OTEL_EXPORTER_OTLP_COMPRESSION=gzip"), "{err}");
    let err = refused(&["--otlp-batch-bytes", "1000"], &[], None);
    assert!(err.contains("--otlp-batch-bytes only applies"), "{err}");
    // And forwarding off is the default: no forwarding metric is served.
    let mut exporter = start_exporter(&rt, state.path(), &[], &[]);
    let text = exporter.metrics();
    assert!(!text.contains("lucid_forward_"), "{text}");
}
