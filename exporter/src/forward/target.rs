//! Where spooled spans go and how: `--otlp-endpoint` and the standard
//! `OTEL_EXPORTER_OTLP_*` variables, read once at start-up. A value the
//! exporter cannot honour stops it with a message naming the variable, rather
//! than being ignored.

use std::path::PathBuf;
use std::time::Duration;

use http::header::{HeaderName, HeaderValue};
use http::Uri;

pub use lucid_layout::Protocol;

/// The bound on one export request when `OTEL_EXPORTER_OTLP_TIMEOUT` does not
/// say: the OTLP specification's default.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// The path OTLP/HTTP appends to a base endpoint.
const TRACES_PATH: &str = "v1/traces";

/// An OTLP endpoint and how to talk to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// The full URL: the traces path included for OTLP/HTTP, the origin for gRPC.
    pub url: Uri,
    /// The wire protocol.
    pub protocol: Protocol,
    /// Extra request headers (gRPC metadata).
    pub headers: Vec<(HeaderName, HeaderValue)>,
    /// The bound on one export request, connecting included.
    pub timeout: Duration,
    /// TLS settings, for an `https://` endpoint only.
    pub tls: Option<TlsFiles>,
}

/// The certificate files of an `https://` endpoint, each with the variable
/// that named it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsFiles {
    /// CA certificates (PEM) to trust instead of the host's: `OTEL_EXPORTER_OTLP_CERTIFICATE`.
    pub ca: Option<(&'static str, PathBuf)>,
    /// The client's certificate chain (PEM), for mutual TLS: `OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE`.
    pub client_certificate: Option<(&'static str, PathBuf)>,
    /// The client's private key (PEM): `OTEL_EXPORTER_OTLP_CLIENT_KEY`.
    pub client_key: Option<(&'static str, PathBuf)>,
}

/// A setting the exporter cannot use.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TargetError {
    /// The endpoint is not an `http://` or `https://` URL with a host.
    #[error("{source_name}={value}: {why}")]
    Endpoint {
        /// The flag or variable it came from.
        source_name: &'static str,
        /// Its value.
        value: String,
        /// What is wrong.
        why: String,
    },
    /// A certificate setting for an endpoint without TLS.
    #[error("{name} is set, but the endpoint {endpoint} is not https://: use an https:// endpoint, or unset {name}")]
    TlsWithoutHttps {
        /// The variable.
        name: &'static str,
        /// The endpoint.
        endpoint: String,
    },
    /// A client certificate without its key, or the other way round.
    #[error("{given} is set without {missing}: mutual TLS needs both")]
    ClientIdentity {
        /// The variable that is set.
        given: &'static str,
        /// The one missing.
        missing: &'static str,
    },
    /// An unknown protocol.
    #[error("{name}={value}: use grpc, http/protobuf or http/json")]
    Protocol {
        /// The variable.
        name: &'static str,
        /// Its value.
        value: String,
    },
    /// A malformed header list.
    #[error("{name}: {why} (the format is key1=value1,key2=value2, values percent-encoded)")]
    Headers {
        /// The variable.
        name: &'static str,
        /// What is wrong.
        why: String,
    },
    /// A timeout that is not a positive number of milliseconds.
    #[error("{name}={value}: use a positive number of milliseconds")]
    Timeout {
        /// The variable.
        name: &'static str,
        /// Its value.
        value: String,
    },
    /// Compression is not built in.
    #[error(
        "{name}={value}: lucid-exporter sends uncompressed requests; unset it or set it to none"
    )]
    Compression {
        /// The variable.
        name: &'static str,
        /// Its value.
        value: String,
    },
}

/// The flag's name, for messages.
const FLAG: &str = "--otlp-endpoint";

impl Target {
    /// The target from `--otlp-endpoint` (`flag`, which wins) or the
    /// `OTEL_EXPORTER_OTLP_*` variables read through `var`; `None` when no
    /// endpoint is set (forwarding off).
    ///
    /// As in the OpenTelemetry SDKs, `--otlp-endpoint` and
    /// `OTEL_EXPORTER_OTLP_ENDPOINT` are base URLs to which OTLP/HTTP appends
    /// `v1/traces`, while `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` is used as is.
    pub fn from_settings(
        flag: Option<&str>,
        var: impl Fn(&str) -> Option<String>,
    ) -> Result<Option<Target>, TargetError> {
        let var = |name: &str| {
            var(name)
                .map(|v| v.trim().to_owned())
                .filter(|v| !v.is_empty())
        };
        // The traces-specific variable first, then the general one.
        let pick = |traces: &'static str, general: &'static str| {
            var(traces)
                .map(|v| (traces, v))
                .or_else(|| var(general).map(|v| (general, v)))
        };
        let flag = flag.map(str::trim).filter(|v| !v.is_empty());
        let (source_name, endpoint, is_base) = match flag {
            Some(v) => (FLAG, v.to_owned(), true),
            None => match pick(
                "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
                "OTEL_EXPORTER_OTLP_ENDPOINT",
            ) {
                None => return Ok(None),
                Some((name, v)) => {
                    let is_base = name == "OTEL_EXPORTER_OTLP_ENDPOINT";
                    (name, v, is_base)
                }
            },
        };
        let protocol = match pick(
            "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
            "OTEL_EXPORTER_OTLP_PROTOCOL",
        ) {
            None => Protocol::HttpProtobuf,
            Some((name, value)) => match value.as_str() {
                "http/protobuf" => Protocol::HttpProtobuf,
                "http/json" => Protocol::HttpJson,
                "grpc" => Protocol::Grpc,
                _ => return Err(TargetError::Protocol { name, value }),
            },
        };
        let url = endpoint_url(source_name, &endpoint, is_base, protocol)?;
        let mut headers = Vec::new();
        for name in [
            "OTEL_EXPORTER_OTLP_HEADERS",
            "OTEL_EXPORTER_OTLP_TRACES_HEADERS",
        ] {
            if let Some(list) = var(name) {
                for (key, value) in parse_headers(name, &list)? {
                    // The traces-specific list overrides the general one per key.
                    headers.retain(|(k, _): &(HeaderName, HeaderValue)| *k != key);
                    headers.push((key, value));
                }
            }
        }
        let timeout = match pick(
            "OTEL_EXPORTER_OTLP_TRACES_TIMEOUT",
            "OTEL_EXPORTER_OTLP_TIMEOUT",
        ) {
            None => DEFAULT_TIMEOUT,
            Some((name, value)) => match value.parse::<u64>() {
                Ok(ms) if ms > 0 => Duration::from_millis(ms),
                _ => return Err(TargetError::Timeout { name, value }),
            },
        };
        if let Some((name, value)) = pick(
            "OTEL_EXPORTER_OTLP_TRACES_COMPRESSION",
            "OTEL_EXPORTER_OTLP_COMPRESSION",
        ) {
            if value != "none" {
                return Err(TargetError::Compression { name, value });
            }
        }
        let file = |traces, general| pick(traces, general).map(|(n, v)| (n, PathBuf::from(v)));
        let files = TlsFiles {
            ca: file(
                "OTEL_EXPORTER_OTLP_TRACES_CERTIFICATE",
                "OTEL_EXPORTER_OTLP_CERTIFICATE",
            ),
            client_certificate: file(
                "OTEL_EXPORTER_OTLP_TRACES_CLIENT_CERTIFICATE",
                "OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE",
            ),
            client_key: file(
                "OTEL_EXPORTER_OTLP_TRACES_CLIENT_KEY",
                "OTEL_EXPORTER_OTLP_CLIENT_KEY",
            ),
        };
        match (&files.client_certificate, &files.client_key) {
            (Some((given, _)), None) => {
                return Err(TargetError::ClientIdentity {
                    given,
                    missing: "OTEL_EXPORTER_OTLP_CLIENT_KEY",
                })
            }
            (None, Some((given, _))) => {
                return Err(TargetError::ClientIdentity {
                    given,
                    missing: "OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE",
                })
            }
            _ => {}
        }
        let tls = if url.scheme_str() == Some("https") {
            Some(files)
        } else {
            let set = [&files.ca, &files.client_certificate, &files.client_key]
                .into_iter()
                .flatten()
                .next();
            if let Some((name, _)) = set {
                return Err(TargetError::TlsWithoutHttps {
                    name,
                    endpoint: url.to_string(),
                });
            }
            None
        };
        Ok(Some(Target {
            url,
            protocol,
            headers,
            timeout,
            tls,
        }))
    }
}

/// The URL requests go to: for OTLP/HTTP a base endpoint gets `v1/traces`
/// appended to its path; gRPC takes the origin only.
fn endpoint_url(
    source_name: &'static str,
    value: &str,
    is_base: bool,
    protocol: Protocol,
) -> Result<Uri, TargetError> {
    let bad = |why: &str| TargetError::Endpoint {
        source_name,
        value: value.to_owned(),
        why: why.to_owned(),
    };
    let uri: Uri = value
        .parse()
        .map_err(|e| bad(&format!("not a URL ({e})")))?;
    let scheme = match uri.scheme_str() {
        Some(scheme @ ("http" | "https")) => scheme.to_owned(),
        _ => {
            return Err(bad(
                "use an http:// or https:// URL, for example http://127.0.0.1:4318",
            ))
        }
    };
    let Some(authority) = uri.authority().filter(|a| !a.host().is_empty()) else {
        return Err(bad("the URL names no host"));
    };
    let path = uri.path();
    let (path, query) = match protocol {
        Protocol::Grpc => {
            if path != "/" && !path.is_empty() {
                return Err(bad(
                    "a gRPC endpoint has no path (the service's path is fixed): use http://HOST:PORT",
                ));
            }
            ("/".to_owned(), None)
        }
        Protocol::HttpProtobuf | Protocol::HttpJson if is_base => {
            let base = path.trim_end_matches('/');
            (format!("{base}/{TRACES_PATH}"), uri.query())
        }
        Protocol::HttpProtobuf | Protocol::HttpJson => (path.to_owned(), uri.query()),
    };
    let path_and_query = match query {
        Some(q) => format!("{path}?{q}"),
        None => path,
    };
    Uri::builder()
        .scheme(scheme.as_str())
        .authority(authority.clone())
        .path_and_query(path_and_query)
        .build()
        .map_err(|e| bad(&e.to_string()))
}

/// Parses `key1=value1,key2=value2` (the W3C baggage format the OTLP
/// exporters use: values percent-encoded).
fn parse_headers(
    name: &'static str,
    list: &str,
) -> Result<Vec<(HeaderName, HeaderValue)>, TargetError> {
    let bad = |why: String| TargetError::Headers { name, why };
    let mut out = Vec::new();
    for entry in list.split(',').map(str::trim).filter(|e| !e.is_empty()) {
        let Some((key, value)) = entry.split_once('=') else {
            return Err(bad(format!("{entry:?} has no '='")));
        };
        let key = percent_decode(key.trim()).map_err(|why| bad(format!("{entry:?}: {why}")))?;
        let value = percent_decode(value.trim()).map_err(|why| bad(format!("{entry:?}: {why}")))?;
        let key = HeaderName::from_bytes(key.to_ascii_lowercase().as_bytes())
            .map_err(|_| bad(format!("{key:?} is not a header name")))?;
        let value = HeaderValue::from_str(&value)
            .map_err(|_| bad(format!("the value of {key} is not a valid header value")))?;
        out.push((key, value));
    }
    Ok(out)
}

fn percent_decode(s: &str) -> Result<String, String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes
                .get(i + 1..i + 3)
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or_else(|| format!("a bad percent escape in {s:?}"))?;
            out.push(hex);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| format!("{s:?} does not decode to UTF-8"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(flag: Option<&str>, vars: &[(&str, &str)]) -> Result<Option<Target>, TargetError> {
        let vars: Vec<(String, String)> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Target::from_settings(flag, |name| {
            vars.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone())
        })
    }

    #[test]
    fn no_endpoint_means_no_forwarding() {
        assert_eq!(target(None, &[]), Ok(None));
        assert_eq!(
            target(Some(" "), &[("OTEL_EXPORTER_OTLP_ENDPOINT", "")]),
            Ok(None)
        );
    }

    #[test]
    fn base_endpoints_get_the_traces_path_and_the_traces_endpoint_is_used_as_is() {
        let url = |flag, vars| target(flag, vars).unwrap().unwrap().url.to_string();
        assert_eq!(
            url(Some("http://127.0.0.1:4318"), &[]),
            "http://127.0.0.1:4318/v1/traces"
        );
        assert_eq!(
            url(
                None,
                &[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318/otlp/")]
            ),
            "http://c:4318/otlp/v1/traces"
        );
        assert_eq!(
            url(
                None,
                &[
                    ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://ignored:1"),
                    (
                        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
                        "http://c:9/ingest?k=v"
                    ),
                ]
            ),
            "http://c:9/ingest?k=v"
        );
        // The flag wins over the variables.
        assert_eq!(
            url(
                Some("http://flag:4318"),
                &[("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://env:1/x")]
            ),
            "http://flag:4318/v1/traces"
        );
        assert_eq!(
            url(
                Some("http://c:4317"),
                &[("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")]
            ),
            "http://c:4317/"
        );
    }

    #[test]
    fn protocol_headers_and_timeout_come_from_the_standard_variables() {
        let t = target(
            Some("http://c:4318"),
            &[
                ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
                ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "http/json"),
                ("OTEL_EXPORTER_OTLP_HEADERS", "api-key=a%20b, X-Tenant=one"),
                ("OTEL_EXPORTER_OTLP_TRACES_HEADERS", "x-tenant=two"),
                ("OTEL_EXPORTER_OTLP_TIMEOUT", "2500"),
            ],
        )
        .unwrap()
        .unwrap();
        assert_eq!(t.protocol, Protocol::HttpJson);
        assert_eq!(t.timeout, Duration::from_millis(2500));
        let headers: Vec<(String, String)> = t
            .headers
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_str().unwrap().to_owned()))
            .collect();
        assert_eq!(
            headers,
            [
                ("api-key".to_owned(), "a b".to_owned()),
                ("x-tenant".to_owned(), "two".to_owned())
            ]
        );
        let t = target(Some("http://c:4318"), &[]).unwrap().unwrap();
        assert_eq!(t.protocol, Protocol::HttpProtobuf);
        assert_eq!(t.timeout, DEFAULT_TIMEOUT);
    }

    #[test]
    fn an_https_endpoint_takes_the_certificate_variables() {
        let t = target(
            None,
            &[
                ("OTEL_EXPORTER_OTLP_ENDPOINT", "https://c:4318"),
                ("OTEL_EXPORTER_OTLP_CERTIFICATE", "/etc/ca.pem"),
                ("OTEL_EXPORTER_OTLP_TRACES_CLIENT_CERTIFICATE", "/c.pem"),
                ("OTEL_EXPORTER_OTLP_CLIENT_KEY", "/k.pem"),
            ],
        )
        .unwrap()
        .unwrap();
        assert_eq!(t.url.to_string(), "https://c:4318/v1/traces");
        let tls = t.tls.unwrap();
        assert_eq!(
            tls.ca,
            Some(("OTEL_EXPORTER_OTLP_CERTIFICATE", "/etc/ca.pem".into()))
        );
        assert_eq!(
            tls.client_certificate,
            Some((
                "OTEL_EXPORTER_OTLP_TRACES_CLIENT_CERTIFICATE",
                "/c.pem".into()
            ))
        );
        assert!(tls.client_key.is_some());
        // The host's roots when no CA is named.
        let t = target(Some("https://c:4318"), &[]).unwrap().unwrap();
        assert_eq!(t.tls, Some(TlsFiles::default()));
        assert_eq!(
            target(Some("http://c:4318"), &[]).unwrap().unwrap().tls,
            None
        );
    }

    #[test]
    fn what_cannot_be_honoured_is_refused_by_name() {
        let err = |flag, vars| target(flag, vars).unwrap_err().to_string();
        assert!(err(
            Some("http://c:4318"),
            &[("OTEL_EXPORTER_OTLP_CERTIFICATE", "/ca.pem")]
        )
        .contains("OTEL_EXPORTER_OTLP_CERTIFICATE is set, but the endpoint"));
        assert!(err(
            Some("https://c:4318"),
            &[("OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE", "/c.pem")]
        )
        .contains("without OTEL_EXPORTER_OTLP_CLIENT_KEY"));
        assert!(err(Some("c:4318"), &[]).starts_with("--otlp-endpoint=c:4318"));
        assert!(err(Some("http:///x"), &[]).contains("--otlp-endpoint"));
        assert!(err(
            Some("http://c:4317/v1/traces"),
            &[("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")]
        )
        .contains("gRPC endpoint has no path"));
        assert!(err(
            Some("http://c"),
            &[("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "thrift")]
        )
        .starts_with("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL=thrift"));
        assert!(err(
            Some("http://c"),
            &[("OTEL_EXPORTER_OTLP_HEADERS", "novalue")]
        )
        .starts_with("OTEL_EXPORTER_OTLP_HEADERS"));
        assert!(
            err(Some("http://c"), &[("OTEL_EXPORTER_OTLP_HEADERS", "k=%zz")]).contains("percent")
        );
        assert!(
            err(Some("http://c"), &[("OTEL_EXPORTER_OTLP_TIMEOUT", "0")])
                .starts_with("OTEL_EXPORTER_OTLP_TIMEOUT=0")
        );
        assert!(err(
            Some("http://c"),
            &[("OTEL_EXPORTER_OTLP_COMPRESSION", "gzip")]
        )
        .contains("uncompressed"));
        assert!(target(
            Some("http://c"),
            &[("OTEL_EXPORTER_OTLP_COMPRESSION", "none")]
        )
        .is_ok());
    }
}
