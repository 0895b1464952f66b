//! `cargo xtask bench telemetry`: create + start + delete with telemetry off,
//! spooled (the default) and exported to a local OTLP/HTTP receiver, beside
//! crun, in the same interleaved run as `core`.

use std::io::{Read, Write};
use std::net::TcpListener;

use anyhow::{Context, Result};

use super::{enter_fair_namespace, interleave, report, Contender};
use crate::bundle::Bundle;
use crate::{setup, shell};

/// Runs the telemetry variants for `rounds` rounds.
pub fn run(rounds: usize) -> Result<()> {
    shell::require_root("the telemetry benchmark")?;
    setup::apt_install(setup::APT_PACKAGES)?;
    shell::run("cargo", &["build", "--release", "-p", "lucid"])?;
    let lucid = shell::workspace().join("target/release/lucid");
    // Before any thread: unshare(CLONE_NEWNS) wants a single-threaded process.
    enter_fair_namespace()?;
    let endpoint = start_receiver()?;
    let variant = |name: &str, env: &[(&str, &str)]| Contender {
        name: name.into(),
        bin: lucid.clone(),
        env: env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    };
    let contenders = vec![
        variant("lucid telemetry off", &[("OTEL_SDK_DISABLED", "true")]),
        // An empty endpoint counts as unset, whatever the caller's shell has.
        variant(
            "lucid spooled",
            &[
                ("OTEL_SDK_DISABLED", "false"),
                ("OTEL_TRACES_EXPORTER", "otlp"),
                ("OTEL_EXPORTER_OTLP_ENDPOINT", ""),
                ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", ""),
            ],
        ),
        variant(
            "lucid exported",
            &[
                ("OTEL_SDK_DISABLED", "false"),
                ("OTEL_TRACES_EXPORTER", "otlp"),
                ("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint),
                ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", ""),
                ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"),
            ],
        ),
        Contender {
            name: "crun".into(),
            bin: "crun".into(),
            env: Vec::new(),
        },
    ];
    let bundle = Bundle::new(&lucid, "bench-telemetry", &["/bin/true"])?;
    let results = interleave(&contenders, &bundle, rounds)?;
    report(&contenders, &results, rounds);
    println!("(exported: OTLP/HTTP protobuf to a receiver on {endpoint} that answers 200)");
    Ok(())
}

/// A loopback OTLP/HTTP receiver that reads each request whole and answers
/// 200 with an empty `ExportTraceServiceResponse`; it lives as long as the
/// benchmark process.
fn start_receiver() -> Result<String> {
    let listener = TcpListener::bind("127.0.0.1:0").context("binding a loopback port")?;
    let endpoint = format!("http://{}", listener.local_addr()?);
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let mut stream = stream;
            let mut request = Vec::new();
            let mut buf = [0u8; 65536];
            loop {
                match stream.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => request.extend_from_slice(&buf[..n]),
                }
                if complete(&request) {
                    break;
                }
            }
            let _ = stream.write_all(
                b"HTTP/1.1 200 OK\r\nContent-Type: application/x-protobuf\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            );
        }
    });
    Ok(endpoint)
}

/// Whether the request's head and its Content-Length of body have arrived.
fn complete(request: &[u8]) -> bool {
    let Some(end) = request.windows(4).position(|w| w == b"\r\n\r\n") else {
        return false;
    };
    let head = String::from_utf8_lossy(&request[..end]);
    let length = head
        .lines()
        .filter_map(|l| l.split_once(':'))
        .find(|(k, _)| k.trim().eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.trim().parse::<usize>().ok())
        .unwrap_or(0);
    request.len() >= end + 4 + length
}
