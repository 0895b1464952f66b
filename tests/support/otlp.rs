//! A real OTLP/HTTP receiver for the tests: a loopback `TcpListener` that
//! decodes each `POST /v1/traces` body (protobuf or JSON) into an
//! `ExportTraceServiceRequest` with the OTLP protobuf types, answers 200, and
//! keeps every span. It stops (and its thread ends) when dropped.
//!
//! [`ReservedPort`] holds a loopback port on which nothing listens yet
//! (connections are refused), for a receiver that comes up later.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::fd::{FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

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
    /// As [`Behaviour::Accept`], but answer only after this long (the spans
    /// are kept when the request has been read).
    AcceptAfter(Duration),
    /// Answer the first `times` requests with `status` (and `Retry-After:
    /// retry_after` seconds when given), without keeping their spans; then
    /// accept as [`Behaviour::Accept`].
    Refuse {
        /// The HTTP status.
        status: u16,
        /// The `Retry-After` header's seconds.
        retry_after: Option<u32>,
        /// How many requests are refused.
        times: usize,
    },
}

/// A span as received, with the service name of its resource.
#[derive(Debug, Clone)]
pub struct Received {
    /// The span.
    pub span: Span,
    /// `service.name` of its resource.
    pub service: String,
}

/// What the receiver saw, shared with its thread.
#[derive(Default)]
struct Seen {
    spans: Mutex<Vec<Received>>,
    requests: Mutex<Vec<String>>,
    heads: Mutex<Vec<String>>,
    arrivals: Mutex<Vec<Instant>>,
}

/// The receiver.
pub struct Receiver {
    port: u16,
    stop: Arc<AtomicBool>,
    seen: Arc<Seen>,
    thread: Option<JoinHandle<()>>,
}

impl Receiver {
    /// Starts a receiver on a free loopback port.
    pub fn start(behaviour: Behaviour) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("binding a loopback port");
        Self::start_on(listener, behaviour)
    }

    /// Starts a receiver on `listener` (from [`ReservedPort::listen`]).
    pub fn start_on(listener: TcpListener, behaviour: Behaviour) -> Self {
        Self::start_with(listener, behaviour, None)
    }

    /// Starts an OTLP/HTTPS receiver on a free loopback port (`https://127.0.0.1:PORT`).
    pub fn start_tls(behaviour: Behaviour, tls: Arc<rustls::ServerConfig>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("binding a loopback port");
        Self::start_with(listener, behaviour, Some(tls))
    }

    fn start_with(
        listener: TcpListener,
        behaviour: Behaviour,
        tls: Option<Arc<rustls::ServerConfig>>,
    ) -> Self {
        let port = listener.local_addr().expect("a bound address").port();
        let stop = Arc::new(AtomicBool::new(false));
        let seen = Arc::new(Seen::default());
        let thread = {
            let (stop, seen) = (stop.clone(), seen.clone());
            std::thread::spawn(move || {
                let mut held = Vec::new();
                let mut refused = 0;
                for stream in listener.incoming() {
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                    let Ok(stream) = stream else { continue };
                    seen.arrivals
                        .lock()
                        .expect("the receiver's lock")
                        .push(Instant::now());
                    let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
                    let mut stream = match &tls {
                        None => Stream::Plain(stream),
                        Some(config) => {
                            let Ok(conn) = rustls::ServerConnection::new(config.clone()) else {
                                continue;
                            };
                            Stream::Tls(Box::new(rustls::StreamOwned::new(conn, stream)))
                        }
                    };
                    match behaviour {
                        Behaviour::Hang => held.push(stream),
                        Behaviour::Accept => serve(&mut stream, &seen, None, Duration::ZERO),
                        Behaviour::AcceptAfter(delay) => serve(&mut stream, &seen, None, delay),
                        Behaviour::Refuse {
                            status,
                            retry_after,
                            times,
                        } => {
                            if refused < times {
                                refused += 1;
                                serve(
                                    &mut stream,
                                    &seen,
                                    Some((status, retry_after)),
                                    Duration::ZERO,
                                );
                            } else {
                                serve(&mut stream, &seen, None, Duration::ZERO);
                            }
                        }
                        Behaviour::NotFound => {
                            let mut buf = [0u8; 65536];
                            stream.set_read_timeout(Duration::from_millis(200));
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
            seen,
            thread: Some(thread),
        }
    }

    /// `http://127.0.0.1:PORT`, for `OTEL_EXPORTER_OTLP_ENDPOINT`.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// `https://127.0.0.1:PORT`, for a receiver started with [`Receiver::start_tls`].
    pub fn tls_endpoint(&self) -> String {
        format!("https://127.0.0.1:{}", self.port)
    }

    /// Every span received so far (not those of refused requests).
    pub fn spans(&self) -> Vec<Received> {
        self.seen.spans.lock().expect("the receiver's lock").clone()
    }

    /// The request lines and content types received (`POST /v1/traces application/x-protobuf`).
    pub fn requests(&self) -> Vec<String> {
        self.seen
            .requests
            .lock()
            .expect("the receiver's lock")
            .clone()
    }

    /// The request heads (request line and headers) received.
    pub fn heads(&self) -> Vec<String> {
        self.seen.heads.lock().expect("the receiver's lock").clone()
    }

    /// When each connection was accepted.
    pub fn arrivals(&self) -> Vec<Instant> {
        self.seen
            .arrivals
            .lock()
            .expect("the receiver's lock")
            .clone()
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

/// A connection, plain or TLS.
enum Stream {
    Plain(TcpStream),
    Tls(Box<rustls::StreamOwned<rustls::ServerConnection, TcpStream>>),
}

impl Stream {
    fn set_read_timeout(&self, timeout: Duration) {
        let tcp = match self {
            Stream::Plain(s) => s,
            Stream::Tls(s) => &s.sock,
        };
        let _ = tcp.set_read_timeout(Some(timeout));
    }
}

impl Drop for Stream {
    fn drop(&mut self) {
        if let Stream::Tls(s) = self {
            s.conn.send_close_notify();
            let _ = s.flush();
        }
    }
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self {
            Stream::Plain(s) => s.read(buf),
            Stream::Tls(s) => s.read(buf),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self {
            Stream::Plain(s) => s.write(buf),
            Stream::Tls(s) => s.write(buf),
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        match self {
            Stream::Plain(s) => s.flush(),
            Stream::Tls(s) => s.flush(),
        }
    }
}

/// Reads one request; answers `refuse` (status, Retry-After) or, without it,
/// decodes the spans and answers 200 after `delay`.
fn serve(stream: &mut Stream, seen: &Seen, refuse: Option<(u16, Option<u32>)>, delay: Duration) {
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
    seen.requests
        .lock()
        .expect("the receiver's lock")
        .push(format!("{line} {content_type}"));
    seen.heads
        .lock()
        .expect("the receiver's lock")
        .push(head.clone());
    if let Some((status, retry_after)) = refuse {
        let retry_after = retry_after
            .map(|s| format!("Retry-After: {s}\r\n"))
            .unwrap_or_default();
        let _ = stream.write_all(
            format!(
                "HTTP/1.1 {status} Refused\r\n{retry_after}Content-Length: 5\r\nConnection: close\r\n\r\nbusy\n"
            )
            .as_bytes(),
        );
        return;
    }
    let request = if content_type.contains("json") {
        serde_json::from_slice::<ExportTraceServiceRequest>(body).ok()
    } else {
        ExportTraceServiceRequest::decode(body).ok()
    };
    let (status, reply) = match request {
        Some(request) => {
            let mut spans = seen.spans.lock().expect("the receiver's lock");
            spans.extend(flatten(&request));
            (
                "200 OK",
                ExportTraceServiceResponse::default().encode_to_vec(),
            )
        }
        None => ("400 Bad Request", Vec::new()),
    };
    std::thread::sleep(delay);
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

/// A loopback port bound but not listening: connecting to it is refused
/// until [`ReservedPort::listen`], and no other process can take it meanwhile.
pub struct ReservedPort {
    socket: OwnedFd,
    port: u16,
}

impl Default for ReservedPort {
    fn default() -> Self {
        Self::new()
    }
}

impl ReservedPort {
    /// Binds a free loopback port.
    pub fn new() -> Self {
        // SAFETY: socket has no memory preconditions; the result is checked.
        let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) };
        assert!(fd >= 0, "socket: {}", std::io::Error::last_os_error());
        // SAFETY: fd is a new descriptor that nothing else owns.
        let socket = unsafe { OwnedFd::from_raw_fd(fd) };
        let mut addr = libc::sockaddr_in {
            sin_family: libc::AF_INET as libc::sa_family_t,
            sin_port: 0,
            sin_addr: libc::in_addr {
                s_addr: u32::from(std::net::Ipv4Addr::LOCALHOST).to_be(),
            },
            sin_zero: [0; 8],
        };
        let mut len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
        // SAFETY: addr is a valid sockaddr_in of the length passed.
        let bound = unsafe {
            libc::bind(
                fd,
                std::ptr::addr_of!(addr).cast(),
                std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
            )
        };
        assert_eq!(bound, 0, "bind: {}", std::io::Error::last_os_error());
        // SAFETY: addr and len describe a writable sockaddr_in.
        let named = unsafe { libc::getsockname(fd, std::ptr::addr_of_mut!(addr).cast(), &mut len) };
        assert_eq!(named, 0, "getsockname: {}", std::io::Error::last_os_error());
        ReservedPort {
            socket,
            port: u16::from_be(addr.sin_port),
        }
    }

    /// `http://127.0.0.1:PORT`.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Starts listening: connections are accepted from now on.
    pub fn listen(self) -> TcpListener {
        use std::os::fd::AsRawFd;
        // SAFETY: the descriptor is a bound stream socket this value owns.
        let listening = unsafe { libc::listen(self.socket.as_raw_fd(), 128) };
        assert_eq!(listening, 0, "listen: {}", std::io::Error::last_os_error());
        TcpListener::from(self.socket)
    }
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
