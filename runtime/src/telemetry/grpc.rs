//! OTLP/gRPC export without an async runtime: one unary call
//! (`TraceService/Export`) over cleartext HTTP/2 with prior knowledge (h2c),
//! on a blocking socket, everything under one deadline. Enough of HTTP/2 for
//! a single request: settings, flow control, ping, the response's headers
//! and trailers (HPACK-decoded), reset and go-away.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Instant;

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use prost::Message;

use super::http::{arm, connect, left};

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const PATH: &str = "/opentelemetry.proto.collector.trace.v1.TraceService/Export";
const DEFAULT_PORT: u16 = 4317;

const DATA: u8 = 0x0;
const HEADERS: u8 = 0x1;
const RST_STREAM: u8 = 0x3;
const SETTINGS: u8 = 0x4;
const PING: u8 = 0x6;
const GOAWAY: u8 = 0x7;
const WINDOW_UPDATE: u8 = 0x8;
const CONTINUATION: u8 = 0x9;

const END_STREAM: u8 = 0x1;
const ACK: u8 = 0x1;
const END_HEADERS: u8 = 0x4;
const PADDED: u8 = 0x8;
const PRIORITY: u8 = 0x20;

const STREAM: u32 = 1;

struct Frame {
    kind: u8,
    flags: u8,
    stream: u32,
    payload: Vec<u8>,
}

/// One HTTP/2 connection carrying one call.
struct Connection {
    stream: TcpStream,
    deadline: Instant,
    max_frame: usize,
    /// What the server lets us send: on the connection, and on our stream.
    send_window: i64,
    stream_window: i64,
    hpack: loona_hpack::Decoder<'static>,
    /// The header block being assembled (HEADERS + CONTINUATION).
    block: Vec<u8>,
    block_ends_stream: bool,
    /// Response headers and trailers decoded so far.
    headers: Vec<(String, String)>,
    done: bool,
}

impl Connection {
    fn write_frame(
        &mut self,
        kind: u8,
        flags: u8,
        stream: u32,
        payload: &[u8],
    ) -> std::io::Result<()> {
        let len = payload.len() as u32;
        let mut frame = Vec::with_capacity(9 + payload.len());
        frame.extend_from_slice(&len.to_be_bytes()[1..]);
        frame.push(kind);
        frame.push(flags);
        frame.extend_from_slice(&(stream & 0x7fff_ffff).to_be_bytes());
        frame.extend_from_slice(payload);
        arm(&self.stream, self.deadline)?;
        self.stream.write_all(&frame)
    }

    fn read_exact(&mut self, buf: &mut [u8]) -> std::io::Result<()> {
        let mut read = 0;
        while read < buf.len() {
            arm(&self.stream, self.deadline)?;
            match self.stream.read(&mut buf[read..]) {
                Ok(0) => {
                    return Err(std::io::Error::new(
                        std::io::ErrorKind::UnexpectedEof,
                        "the server closed the connection",
                    ))
                }
                Ok(n) => read += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    left(self.deadline)?;
                }
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    fn read_frame(&mut self) -> std::io::Result<Frame> {
        let mut head = [0u8; 9];
        self.read_exact(&mut head)?;
        let len = u32::from_be_bytes([0, head[0], head[1], head[2]]) as usize;
        if len > 1 << 24 {
            return Err(invalid("a frame larger than 16 MiB"));
        }
        let mut payload = vec![0u8; len];
        self.read_exact(&mut payload)?;
        Ok(Frame {
            kind: head[3],
            flags: head[4],
            stream: u32::from_be_bytes([head[5], head[6], head[7], head[8]]) & 0x7fff_ffff,
            payload,
        })
    }

    /// Handles one frame from the server.
    fn handle(&mut self, frame: Frame) -> Result<(), String> {
        match frame.kind {
            SETTINGS if frame.flags & ACK == 0 => {
                for setting in frame.payload.chunks_exact(6) {
                    let id = u16::from_be_bytes([setting[0], setting[1]]);
                    let value =
                        u32::from_be_bytes([setting[2], setting[3], setting[4], setting[5]]);
                    match id {
                        // SETTINGS_INITIAL_WINDOW_SIZE
                        0x4 => self.stream_window = i64::from(value),
                        // SETTINGS_MAX_FRAME_SIZE
                        0x5 => self.max_frame = value as usize,
                        _ => {}
                    }
                }
                self.write_frame(SETTINGS, ACK, 0, &[])
                    .map_err(|e| e.to_string())
            }
            PING if frame.flags & ACK == 0 => self
                .write_frame(PING, ACK, 0, &frame.payload)
                .map_err(|e| e.to_string()),
            WINDOW_UPDATE if frame.payload.len() == 4 => {
                let increment = u32::from_be_bytes([
                    frame.payload[0],
                    frame.payload[1],
                    frame.payload[2],
                    frame.payload[3],
                ]) & 0x7fff_ffff;
                if frame.stream == 0 {
                    self.send_window += i64::from(increment);
                } else if frame.stream == STREAM {
                    self.stream_window += i64::from(increment);
                }
                Ok(())
            }
            HEADERS if frame.stream == STREAM => {
                let mut payload = frame.payload.as_slice();
                if frame.flags & PADDED != 0 {
                    let pad = *payload.first().ok_or("an empty padded frame")? as usize;
                    payload = payload
                        .get(1..payload.len().saturating_sub(pad))
                        .ok_or("bad padding")?;
                }
                if frame.flags & PRIORITY != 0 {
                    payload = payload.get(5..).ok_or("a short priority block")?;
                }
                self.block.extend_from_slice(payload);
                self.block_ends_stream = frame.flags & END_STREAM != 0;
                if frame.flags & END_HEADERS != 0 {
                    self.decode_block()?;
                }
                Ok(())
            }
            CONTINUATION if frame.stream == STREAM => {
                self.block.extend_from_slice(&frame.payload);
                if frame.flags & END_HEADERS != 0 {
                    self.decode_block()?;
                }
                Ok(())
            }
            DATA if frame.stream == STREAM => {
                if frame.flags & END_STREAM != 0 {
                    self.done = true;
                }
                Ok(())
            }
            RST_STREAM if frame.stream == STREAM => Err(format!(
                "the server reset the call (HTTP/2 error {})",
                code(&frame.payload)
            )),
            GOAWAY => Err(format!(
                "the server closed the connection (HTTP/2 error {}{})",
                code(frame.payload.get(4..).unwrap_or_default()),
                String::from_utf8_lossy(frame.payload.get(8..).unwrap_or_default())
                    .chars()
                    .take(200)
                    .collect::<String>()
                    .split_once('\0')
                    .map_or_else(String::new, |(s, _)| format!(": {s}"))
            )),
            _ => Ok(()),
        }
    }

    fn decode_block(&mut self) -> Result<(), String> {
        let block = std::mem::take(&mut self.block);
        let headers = self
            .hpack
            .decode(&block)
            .map_err(|e| format!("a malformed response header block: {e:?}"))?;
        for (name, value) in headers {
            self.headers.push((
                String::from_utf8_lossy(&name).into_owned(),
                String::from_utf8_lossy(&value).into_owned(),
            ));
        }
        if self.block_ends_stream {
            self.done = true;
        }
        Ok(())
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .rev()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

fn code(payload: &[u8]) -> u32 {
    payload
        .get(..4)
        .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
        .unwrap_or_default()
}

fn invalid(what: &str) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, what.to_owned())
}

/// Sends `request` to the gRPC `endpoint` (`http://host:port`); done by `deadline`.
pub fn export(
    endpoint: &str,
    request: &ExportTraceServiceRequest,
    deadline: Instant,
) -> Result<(), String> {
    let uri: http::Uri = endpoint
        .parse()
        .map_err(|e| format!("invalid endpoint {endpoint:?}: {e}"))?;
    let (host, port, _) = super::http::split_uri(&uri).map_err(|e| e.to_string())?;
    let port = uri.port_u16().map_or(DEFAULT_PORT, |_| port);
    let authority = uri
        .authority()
        .map(|a| a.as_str().to_owned())
        .unwrap_or_else(|| host.clone());
    let stream = connect(&host, port, deadline).map_err(|e| e.to_string())?;
    let mut connection = Connection {
        stream,
        deadline,
        max_frame: 16_384,
        send_window: 65_535,
        stream_window: 65_535,
        hpack: loona_hpack::Decoder::new(),
        block: Vec::new(),
        block_ends_stream: false,
        headers: Vec::new(),
        done: false,
    };
    call(&mut connection, &authority, request)
}

fn call(
    connection: &mut Connection,
    authority: &str,
    request: &ExportTraceServiceRequest,
) -> Result<(), String> {
    let io = |e: std::io::Error| e.to_string();
    let mut message = Vec::with_capacity(5 + request.encoded_len());
    message.push(0);
    message.extend_from_slice(&(request.encoded_len() as u32).to_be_bytes());
    request
        .encode(&mut message)
        .map_err(|e| format!("encoding the request: {e}"))?;
    let millis = left(connection.deadline).map_err(io)?.as_millis().max(1);
    let timeout = format!("{millis}m");
    let mut headers: Vec<(Vec<u8>, Vec<u8>)> = vec![
        (b":method".to_vec(), b"POST".to_vec()),
        (b":scheme".to_vec(), b"http".to_vec()),
        (b":path".to_vec(), PATH.as_bytes().to_vec()),
        (b":authority".to_vec(), authority.as_bytes().to_vec()),
        (b"content-type".to_vec(), b"application/grpc".to_vec()),
        (b"te".to_vec(), b"trailers".to_vec()),
        (b"grpc-timeout".to_vec(), timeout.into_bytes()),
    ];
    headers.extend(extra_headers());
    let block = loona_hpack::Encoder::new()
        .encode(headers.iter().map(|(n, v)| (n.as_slice(), v.as_slice())));
    connection.stream.write_all(PREFACE).map_err(io)?;
    connection.write_frame(SETTINGS, 0, 0, &[]).map_err(io)?;
    // One HEADERS frame: the block is small (no CONTINUATION needed below 16 KiB).
    if block.len() > connection.max_frame {
        return Err("the request headers are larger than one frame".into());
    }
    connection
        .write_frame(HEADERS, END_HEADERS, STREAM, &block)
        .map_err(io)?;
    let mut sent = 0;
    while sent < message.len() {
        let window = connection.send_window.min(connection.stream_window);
        if window <= 0 {
            let frame = connection.read_frame().map_err(io)?;
            connection.handle(frame)?;
            if connection.done {
                break;
            }
            continue;
        }
        let n = (message.len() - sent)
            .min(connection.max_frame)
            .min(window as usize);
        let last = sent + n == message.len();
        let chunk = message[sent..sent + n].to_vec();
        connection
            .write_frame(DATA, if last { END_STREAM } else { 0 }, STREAM, &chunk)
            .map_err(io)?;
        connection.send_window -= n as i64;
        connection.stream_window -= n as i64;
        sent += n;
    }
    while !connection.done {
        let frame = connection.read_frame().map_err(io)?;
        connection.handle(frame)?;
    }
    let status = connection.header(":status").unwrap_or_default().to_owned();
    if status != "200" {
        return Err(format!("the server answered HTTP status {status:?}"));
    }
    match connection.header("grpc-status") {
        Some("0") => Ok(()),
        Some(code) => Err(format!(
            "grpc-status {code}: {}",
            connection.header("grpc-message").unwrap_or_default()
        )),
        None => Err("the response has no grpc-status".into()),
    }
}

/// `OTEL_EXPORTER_OTLP_(TRACES_)HEADERS` as gRPC metadata (`k=v,k2=v2`, percent-decoded).
fn extra_headers() -> Vec<(Vec<u8>, Vec<u8>)> {
    let value = std::env::var("OTEL_EXPORTER_OTLP_TRACES_HEADERS")
        .or_else(|_| std::env::var("OTEL_EXPORTER_OTLP_HEADERS"))
        .unwrap_or_default();
    value
        .split(',')
        .filter_map(|pair| pair.split_once('='))
        .map(|(k, v)| {
            (
                k.trim().to_ascii_lowercase().into_bytes(),
                percent_decode(v.trim()),
            )
        })
        .filter(|(k, _)| !k.is_empty())
        .collect()
}

fn percent_decode(text: &str) -> Vec<u8> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            if let Ok(b) = u8::from_str_radix(&text[i + 1..i + 3], 16) {
                out.push(b);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_values_are_percent_decoded() {
        assert_eq!(percent_decode("a%20b%2Cc"), b"a b,c");
        assert_eq!(percent_decode("100%"), b"100%");
    }
}
