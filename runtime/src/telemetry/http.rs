//! A small blocking HTTP/1.1 client for OTLP export: one POST per flush, plain
//! `http://` only, every step (name resolution included) under one deadline,
//! no thread and no async runtime.

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::time::{Duration, Instant};

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use opentelemetry_http::{Bytes, HttpClient, HttpError, Request, Response};

/// The largest response body read (collectors answer with a few bytes).
const MAX_RESPONSE: usize = 1 << 20;

/// Sends requests with everything bounded by one deadline.
#[derive(Debug, Clone)]
pub struct BlockingClient {
    deadline: Instant,
    /// The last failure, with its cause (the exporter reports less).
    last_error: std::sync::Arc<std::sync::Mutex<Option<String>>>,
}

impl BlockingClient {
    /// A client whose requests must all be done by `deadline`.
    pub fn new(deadline: Instant) -> Self {
        BlockingClient {
            deadline,
            last_error: Default::default(),
        }
    }

    /// What went wrong last, if anything.
    pub fn last_error(&self) -> Option<String> {
        self.last_error
            .lock()
            .map(|e| e.clone())
            .unwrap_or_default()
    }
}

fn timed_out() -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::TimedOut, "the export deadline passed")
}

/// Time left before `deadline`, or a timeout error.
pub fn left(deadline: Instant) -> std::io::Result<Duration> {
    let left = deadline.saturating_duration_since(Instant::now());
    if left.is_zero() {
        Err(timed_out())
    } else {
        Ok(left)
    }
}

/// Connects to `host:port` before `deadline`, trying each address in turn.
pub fn connect(host: &str, port: u16, deadline: Instant) -> std::io::Result<TcpStream> {
    let addrs = resolve(host, port, deadline)?;
    let mut last = None;
    for addr in addrs {
        match TcpStream::connect_timeout(&addr, left(deadline)?) {
            Ok(stream) => {
                stream.set_nodelay(true)?;
                return Ok(stream);
            }
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| {
        std::io::Error::new(
            std::io::ErrorKind::NotFound,
            format!("{host} has no address"),
        )
    }))
}

/// The addresses of `host`. Literal addresses and `localhost` need no
/// lookup; any other name is looked up by a forked child, so that a resolver
/// that does not answer costs no more than the deadline.
fn resolve(host: &str, port: u16, deadline: Instant) -> std::io::Result<Vec<SocketAddr>> {
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    if let Ok(ip) = bare.parse::<IpAddr>() {
        return Ok(vec![SocketAddr::new(ip, port)]);
    }
    if host.eq_ignore_ascii_case("localhost") {
        return Ok(vec![
            SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port),
            SocketAddr::new(IpAddr::V6(Ipv6Addr::LOCALHOST), port),
        ]);
    }
    resolve_in_child(host, port, deadline)
}

fn resolve_in_child(host: &str, port: u16, deadline: Instant) -> std::io::Result<Vec<SocketAddr>> {
    let (read, write) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;
    // SAFETY: the runtime is single-threaded, so the child may call anything;
    // it only resolves, writes to the pipe and _exits.
    match unsafe { nix::unistd::fork() }? {
        nix::unistd::ForkResult::Child => {
            drop(read);
            let text: String = std::net::ToSocketAddrs::to_socket_addrs(&(host, port))
                .map(|addrs| addrs.map(|a| format!("{a}\n")).collect())
                .unwrap_or_default();
            let mut out = std::fs::File::from(write);
            let _ = out.write_all(text.as_bytes());
            // SAFETY: _exit skips the parent's atexit handlers and buffers.
            unsafe { libc::_exit(0) }
        }
        nix::unistd::ForkResult::Parent { child } => {
            drop(write);
            let result = read_until(&read, deadline);
            if result.is_err() {
                let _ = nix::sys::signal::kill(child, nix::sys::signal::Signal::SIGKILL);
            }
            let _ = nix::sys::wait::waitpid(child, None);
            let text = result?;
            let addrs: Vec<SocketAddr> = String::from_utf8_lossy(&text)
                .lines()
                .filter_map(|l| l.parse().ok())
                .collect();
            if addrs.is_empty() {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::NotFound,
                    format!("cannot resolve {host}"),
                ));
            }
            Ok(addrs)
        }
    }
}

/// Reads a pipe to its end before `deadline`.
fn read_until(fd: &OwnedFd, deadline: Instant) -> std::io::Result<Vec<u8>> {
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let millis = left(deadline)?.as_millis().min(i32::MAX as u128) as i32;
        let mut fds = [PollFd::new(fd.as_fd(), PollFlags::POLLIN)];
        match poll(
            &mut fds,
            PollTimeout::try_from(millis).unwrap_or(PollTimeout::MAX),
        ) {
            Ok(0) => return Err(timed_out()),
            Ok(_) => {}
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => return Err(e.into()),
        }
        // SAFETY: reading into a local buffer from a descriptor we own.
        let n = unsafe { libc::read(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
        match n {
            0 => return Ok(out),
            n if n > 0 => out.extend_from_slice(&buf[..n as usize]),
            _ => {
                let e = std::io::Error::last_os_error();
                if e.kind() != std::io::ErrorKind::Interrupted {
                    return Err(e);
                }
            }
        }
    }
}

/// Sets the socket's timeouts to what is left before `deadline`.
pub fn arm(stream: &TcpStream, deadline: Instant) -> std::io::Result<()> {
    let left = left(deadline)?;
    stream.set_read_timeout(Some(left))?;
    stream.set_write_timeout(Some(left))
}

/// Splits an `http://host:port/path` URI into its parts.
pub fn split_uri(uri: &http::Uri) -> std::io::Result<(String, u16, String)> {
    let invalid = |msg: String| std::io::Error::new(std::io::ErrorKind::InvalidInput, msg);
    match uri.scheme_str() {
        Some("http") | None => {}
        Some(other) => {
            return Err(invalid(format!(
                "{other}:// endpoints are not exported directly (lucid speaks plain http); leave OTEL_EXPORTER_OTLP_ENDPOINT unset and let lucid-exporter ship the spool"
            )))
        }
    }
    let host = uri
        .host()
        .ok_or_else(|| invalid(format!("{uri} has no host")))?
        .to_owned();
    let port = uri.port_u16().unwrap_or(80);
    let path = uri
        .path_and_query()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| "/".into());
    Ok((host, port, path))
}

fn post(client: &BlockingClient, request: &Request<Bytes>) -> std::io::Result<Response<Bytes>> {
    let deadline = client.deadline;
    let (host, port, path) = split_uri(request.uri())?;
    let mut stream = connect(&host, port, deadline)?;
    let body = request.body();
    let mut head = format!(
        "POST {path} HTTP/1.1\r\nHost: {}\r\nContent-Length: {}\r\nConnection: close\r\n",
        request
            .uri()
            .authority()
            .map(|a| a.as_str())
            .unwrap_or(&host),
        body.len()
    );
    for (name, value) in request.headers() {
        if let Ok(value) = value.to_str() {
            head.push_str(&format!("{name}: {value}\r\n"));
        }
    }
    head.push_str("\r\n");
    arm(&stream, deadline)?;
    stream.write_all(head.as_bytes())?;
    stream.write_all(body)?;
    let mut raw = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        arm(&stream, deadline)?;
        match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                raw.extend_from_slice(&buf[..n]);
                if raw.len() > MAX_RESPONSE {
                    return Err(std::io::Error::other("the response is larger than 1 MiB"));
                }
                if response_complete(&raw) {
                    break;
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return Err(timed_out()),
            Err(e) => return Err(e),
        }
    }
    parse_response(&raw)
}

/// Whether a response with a Content-Length has arrived whole (otherwise the
/// server's close marks the end).
fn response_complete(raw: &[u8]) -> bool {
    let Some(end) = find(raw, b"\r\n\r\n") else {
        return false;
    };
    let head = String::from_utf8_lossy(&raw[..end]);
    head.lines()
        .filter_map(|l| l.split_once(':'))
        .find(|(k, _)| k.trim().eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.trim().parse::<usize>().ok())
        .is_some_and(|len| raw.len() >= end + 4 + len)
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

fn parse_response(raw: &[u8]) -> std::io::Result<Response<Bytes>> {
    let bad = |what: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, what.to_owned());
    let end =
        find(raw, b"\r\n\r\n").ok_or_else(|| bad("the server closed before a whole response"))?;
    let head = String::from_utf8_lossy(&raw[..end]);
    let mut lines = head.lines();
    let status: u16 = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| bad("not an HTTP response"))?;
    let mut builder = Response::builder().status(status);
    let mut chunked = false;
    let mut length = None;
    for line in lines {
        if let Some((k, v)) = line.split_once(':') {
            let (k, v) = (k.trim(), v.trim());
            if k.eq_ignore_ascii_case("transfer-encoding") && v.eq_ignore_ascii_case("chunked") {
                chunked = true;
            }
            if k.eq_ignore_ascii_case("content-length") {
                length = v.parse::<usize>().ok();
            }
            builder = builder.header(k, v);
        }
    }
    let mut body = raw[end + 4..].to_vec();
    if chunked {
        body = dechunk(&body).ok_or_else(|| bad("a malformed chunked body"))?;
    } else if let Some(len) = length {
        body.truncate(len);
    }
    builder
        .body(Bytes::from(body))
        .map_err(|e| bad(&e.to_string()))
}

fn dechunk(mut body: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let line_end = find(body, b"\r\n")?;
        let size_text = String::from_utf8_lossy(&body[..line_end]);
        let size = usize::from_str_radix(size_text.split(';').next()?.trim(), 16).ok()?;
        body = &body[line_end + 2..];
        if size == 0 {
            return Some(out);
        }
        out.extend_from_slice(body.get(..size)?);
        body = body.get(size + 2..)?;
    }
}

#[async_trait::async_trait]
impl HttpClient for BlockingClient {
    async fn send_bytes(&self, request: Request<Bytes>) -> Result<Response<Bytes>, HttpError> {
        let response = post(self, &request);
        if let Err(e) = &response {
            if let Ok(mut last) = self.last_error.lock() {
                *last = Some(e.to_string());
            }
        }
        Ok(response?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_response_with_a_length_is_complete_and_parsed() {
        let raw = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Type: x\r\n\r\nok";
        assert!(response_complete(raw));
        let response = parse_response(raw).unwrap();
        assert_eq!(response.status(), 200);
        assert_eq!(response.body().as_ref(), b"ok");
    }

    #[test]
    fn a_chunked_body_is_joined() {
        let raw = b"HTTP/1.1 400 Bad\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n";
        let response = parse_response(raw).unwrap();
        assert_eq!(response.status(), 400);
        assert_eq!(response.body().as_ref(), b"abcde");
    }

    #[test]
    fn https_endpoints_are_refused_with_what_to_do() {
        let uri: http::Uri = "https://collector:4318/v1/traces".parse().unwrap();
        let err = split_uri(&uri).unwrap_err().to_string();
        assert!(err.contains("lucid-exporter"), "{err}");
    }

    #[test]
    fn a_closed_port_fails_at_once() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        drop(listener);
        let started = Instant::now();
        let err = connect("127.0.0.1", port, Instant::now() + Duration::from_secs(5)).unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::ConnectionRefused);
        assert!(started.elapsed() < Duration::from_secs(5));
    }

    #[test]
    fn a_name_is_resolved_in_a_child_within_the_deadline() {
        let addrs = resolve("ip6-localhost", 80, Instant::now() + Duration::from_secs(5))
            .or_else(|_| resolve(&hostname(), 80, Instant::now() + Duration::from_secs(5)))
            .unwrap();
        assert!(!addrs.is_empty());
        let err = resolve("name.invalid", 80, Instant::now() + Duration::from_secs(5));
        assert!(err.is_err());
    }

    fn hostname() -> String {
        nix::unistd::gethostname().unwrap().into_string().unwrap()
    }
}
