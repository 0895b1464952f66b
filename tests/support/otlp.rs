//! A real OTLP/HTTP receiver for the tests: a loopback `TcpListener` that
//! decodes each `POST /v1/traces` body (protobuf or JSON) into an
//! `ExportTraceServiceRequest` with the OTLP protobuf types, answers 200, and
//! keeps every span. It stops (and its thread ends) when dropped.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message;

/// How the receiver answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Behaviour {
    /// Decode and answer 200.
    Accept,
    /// Accept the connection, read nothing, never answer.
    Hang,
    /// Answer every request `404 Not Found` (not an OTLP endpoint).
    NotFound,
}

/// A span as received, with the service name of its resource.
#[derive(Debug, Clone)]
pub struct Received {
    /// The span.
    pub span: Span,
    /// `service.name` of its resource.
    pub service: String,
}

/// The receiver.
pub struct Receiver {
    port: u16,
    stop: Arc<AtomicBool>,
    spans: Arc<Mutex<Vec<Received>>>,
    requests: Arc<Mutex<Vec<String>>>,
    thread: Option<JoinHandle<()>>,
}

impl Receiver {
    /// Starts a receiver on a free loopback port.
    pub fn start(behaviour: Behaviour) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("binding a loopback port");
        let port = listener.local_addr().expect("a bound address").port();
        let stop = Arc::new(AtomicBool::new(false));
        let spans = Arc::new(Mutex::new(Vec::new()));
        let requests = Arc::new(Mutex::new(Vec::new()));
        let thread = {
            let (stop, spans, requests) = (stop.clone(), spans.clone(), requests.clone());
            std::thread::spawn(move || {
                let mut held = Vec::new();
                for stream in listener.incoming() {
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                    let Ok(stream) = stream else { continue };
                    match behaviour {
                        Behaviour::Hang => held.push(stream),
                        Behaviour::Accept => serve(stream, &spans, &requests),
                        Behaviour::NotFound => {
                            let mut stream = stream;
                            let mut buf = [0u8; 65536];
                            let _ = stream.set_read_timeout(Some(Duration::from_millis(200)));
                            let _ = stream.read(&mut buf);
                            let _ = stream.write_all(
                                b"HTTP/1.1 404 Not Found\r\nContent-Length: 9\r\nConnection: close\r\n\r\nnot here\n",
                            );
                        }
                    }
                }
            })
        };
        Receiver {
            port,
            stop,
            spans,
            requests,
            thread: Some(thread),
        }
    }

    /// `http://127.0.0.1:PORT`, for `OTEL_EXPORTER_OTLP_ENDPOINT`.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Every span received so far.
    pub fn spans(&self) -> Vec<Received> {
        self.spans.lock().expect("the receiver's lock").clone()
    }

    /// The request lines and content types received (`POST /v1/traces application/x-protobuf`).
    pub fn requests(&self) -> Vec<String> {
        self.requests.lock().expect("the receiver's lock").clone()
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the accept loop.
        let _ = TcpStream::connect(("127.0.0.1", self.port));
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn serve(mut stream: TcpStream, spans: &Mutex<Vec<Received>>, requests: &Mutex<Vec<String>>) {
    let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
    let mut raw = Vec::new();
    let mut buf = [0u8; 65536];
    let (head_end, length) = loop {
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => raw.extend_from_slice(&buf[..n]),
        }
        if let Some(end) = raw.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&raw[..end]).to_string();
            let length = header(&head, "content-length")
                .and_then(|v| v.parse::<usize>().ok())
                .unwrap_or(0);
            break (end + 4, length);
        }
    };
    while raw.len() < head_end + length {
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => raw.extend_from_slice(&buf[..n]),
        }
    }
    let head = String::from_utf8_lossy(&raw[..head_end]).to_string();
    let body = &raw[head_end..head_end + length];
    let content_type = header(&head, "content-type").unwrap_or_default();
    let line = head.lines().next().unwrap_or_default().to_owned();
    requests
        .lock()
        .expect("the receiver's lock")
        .push(format!("{line} {content_type}"));
    let request = if content_type.contains("json") {
        serde_json::from_slice::<ExportTraceServiceRequest>(body).ok()
    } else {
        ExportTraceServiceRequest::decode(body).ok()
    };
    let (status, reply) = match request {
        Some(request) => {
            let mut spans = spans.lock().expect("the receiver's lock");
            spans.extend(flatten(&request));
            (
                "200 OK",
                ExportTraceServiceResponse::default().encode_to_vec(),
            )
        }
        None => ("400 Bad Request", Vec::new()),
    };
    let _ = stream.write_all(
        format!(
            "HTTP/1.1 {status}\r\nContent-Type: application/x-protobuf\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            reply.len()
        )
        .as_bytes(),
    );
    let _ = stream.write_all(&reply);
}

fn header(head: &str, name: &str) -> Option<String> {
    head.lines()
        .filter_map(|l| l.split_once(':'))
        .find(|(k, _)| k.trim().eq_ignore_ascii_case(name))
        .map(|(_, v)| v.trim().to_owned())
}

/// Every span of a request, with its resource's service name.
pub fn flatten(request: &ExportTraceServiceRequest) -> Vec<Received> {
    let mut out = Vec::new();
    for resource in &request.resource_spans {
        let service = resource
            .resource
            .as_ref()
            .and_then(|r| r.attributes.iter().find(|kv| kv.key == "service.name"))
            .and_then(|kv| kv.value.as_ref())
            .and_then(|v| match &v.value {
                Some(opentelemetry_proto::tonic::common::v1::any_value::Value::StringValue(s)) => {
                    Some(s.clone())
                }
                _ => None,
            })
            .unwrap_or_default();
        for scope in &resource.scope_spans {
            for span in &scope.spans {
                out.push(Received {
                    span: span.clone(),
                    service: service.clone(),
                });
            }
        }
    }
    out
}

/// Lowercase hex of an id.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A string attribute of a span.
pub fn attribute(span: &Span, key: &str) -> Option<String> {
    use opentelemetry_proto::tonic::common::v1::any_value::Value;
    let value = span
        .attributes
        .iter()
        .find(|kv| kv.key == key)?
        .value
        .as_ref()?;
    Some(match value.value.as_ref()? {
        Value::StringValue(s) => s.clone(),
        Value::IntValue(i) => i.to_string(),
        Value::BoolValue(b) => b.to_string(),
        other => format!("{other:?}"),
    })
}

/// Every span in a spool directory tree (`<root>/@spool`), for tests that
/// read what lucid wrote without a receiver.
pub fn spooled(root: &std::path::Path, container: &str) -> Vec<Received> {
    let mut out = Vec::new();
    let dir = root.join("@spool").join(container);
    let Ok(traces) = std::fs::read_dir(dir) else {
        return out;
    };
    for trace in traces.flatten() {
        let Ok(files) = std::fs::read_dir(trace.path()) else {
            continue;
        };
        for file in files.flatten() {
            let name = file.file_name().to_string_lossy().into_owned();
            if name.starts_with('.') {
                continue;
            }
            let text = std::fs::read(file.path()).expect("reading a spooled batch");
            let request: ExportTraceServiceRequest =
                serde_json::from_slice(&text).expect("a spooled batch is OTLP-JSON");
            out.extend(flatten(&request));
        }
    }
    out
}
