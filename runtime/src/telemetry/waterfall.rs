//! `lucid trace`: a container's spans, read back from the spool, drawn as a
//! waterfall: in the terminal, as JSON for scripts, or as an SVG picture.

use std::collections::HashMap;
use std::fmt::Write as _;

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::common::v1::KeyValue;
use serde::Serialize;

/// One span, placed in the waterfall.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Bar {
    /// The span's name.
    pub name: String,
    /// Its id (hex).
    pub span_id: String,
    /// Its parent's id (hex), empty for a root.
    pub parent_span_id: String,
    /// How deep it sits in the tree (0 for a root).
    pub depth: usize,
    /// Start, nanoseconds after the first span's start.
    pub offset_ns: u64,
    /// Wall-clock duration in nanoseconds.
    pub duration_ns: u64,
    /// On-CPU time in nanoseconds, where it was measured.
    pub cpu_ns: Option<u64>,
    /// The error that ended it, if it failed.
    pub error: Option<String>,
    /// Whether the init process measured it.
    pub in_init: bool,
    /// Its other attributes, as text.
    pub attributes: Vec<(String, String)>,
}

/// A container's trace, ready to draw.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Waterfall {
    /// The container.
    pub container: String,
    /// The trace id (hex).
    pub trace_id: String,
    /// The first span's start, nanoseconds since the Unix epoch.
    pub start_unix_ns: u64,
    /// From the first start to the last end, in nanoseconds.
    pub duration_ns: u64,
    /// The spans, depth first, children in start order.
    pub spans: Vec<Bar>,
}

fn text_value(value: &Option<Value>) -> String {
    match value {
        Some(Value::StringValue(s)) => s.clone(),
        Some(Value::IntValue(i)) => i.to_string(),
        Some(Value::DoubleValue(d)) => d.to_string(),
        Some(Value::BoolValue(b)) => b.to_string(),
        Some(other) => format!("{other:?}"),
        None => String::new(),
    }
}

fn attribute<'a>(attributes: &'a [KeyValue], key: &str) -> Option<&'a Option<Value>> {
    attributes
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| kv.value.as_ref().map(|v| &v.value))
}

struct Raw {
    name: String,
    span_id: String,
    parent: String,
    start: u64,
    end: u64,
    cpu: Option<u64>,
    error: Option<String>,
    in_init: bool,
    attributes: Vec<(String, String)>,
}

/// Lays out every span of the batches (one trace: the most common trace id
/// wins if several are mixed).
pub fn build(container: &str, batches: &[ExportTraceServiceRequest]) -> Waterfall {
    let mut raws = Vec::new();
    let mut traces: HashMap<String, usize> = HashMap::new();
    for batch in batches {
        for resource in &batch.resource_spans {
            for scope in &resource.scope_spans {
                for span in &scope.spans {
                    let trace_id = hex(&span.trace_id);
                    *traces.entry(trace_id.clone()).or_default() += 1;
                    let cpu = match attribute(&span.attributes, super::CPU_ATTRIBUTE) {
                        Some(Some(Value::IntValue(ns))) => Some(*ns as u64),
                        _ => None,
                    };
                    let in_init = matches!(
                        attribute(&span.attributes, "lucid.in_init"),
                        Some(Some(Value::BoolValue(true)))
                    );
                    let error = span
                        .status
                        .as_ref()
                        .filter(|s| s.code == 2)
                        .map(|s| s.message.clone());
                    let attributes = span
                        .attributes
                        .iter()
                        .filter(|kv| kv.key != super::CPU_ATTRIBUTE && kv.key != "lucid.in_init")
                        .map(|kv| {
                            (
                                kv.key.clone(),
                                text_value(&kv.value.as_ref().and_then(|v| v.value.clone())),
                            )
                        })
                        .collect();
                    raws.push((
                        trace_id,
                        Raw {
                            name: span.name.clone(),
                            span_id: hex(&span.span_id),
                            parent: hex(&span.parent_span_id),
                            start: span.start_time_unix_nano,
                            end: span.end_time_unix_nano.max(span.start_time_unix_nano),
                            cpu,
                            error,
                            in_init,
                            attributes,
                        },
                    ));
                }
            }
        }
    }
    let trace_id = traces
        .into_iter()
        .max_by_key(|(id, n)| (*n, id.clone()))
        .map(|(id, _)| id)
        .unwrap_or_default();
    let raws: Vec<Raw> = raws
        .into_iter()
        .filter(|(t, _)| *t == trace_id)
        .map(|(_, r)| r)
        .collect();
    let start = raws.iter().map(|r| r.start).min().unwrap_or_default();
    let end = raws.iter().map(|r| r.end).max().unwrap_or(start);
    let ids: std::collections::HashSet<&str> = raws.iter().map(|r| r.span_id.as_str()).collect();
    let mut children: HashMap<&str, Vec<usize>> = HashMap::new();
    let mut roots = Vec::new();
    for (i, raw) in raws.iter().enumerate() {
        if ids.contains(raw.parent.as_str()) && raw.parent != raw.span_id {
            children.entry(raw.parent.as_str()).or_default().push(i);
        } else {
            roots.push(i);
        }
    }
    let by_start = |list: &mut Vec<usize>| list.sort_by_key(|i| (raws[*i].start, raws[*i].end));
    by_start(&mut roots);
    for list in children.values_mut() {
        by_start(list);
    }
    let mut spans = Vec::new();
    let mut stack: Vec<(usize, usize)> = roots.iter().rev().map(|i| (*i, 0)).collect();
    let mut seen = vec![false; raws.len()];
    while let Some((i, depth)) = stack.pop() {
        if std::mem::replace(&mut seen[i], true) {
            continue;
        }
        let raw = &raws[i];
        spans.push(Bar {
            name: raw.name.clone(),
            span_id: raw.span_id.clone(),
            parent_span_id: raw.parent.clone(),
            depth,
            offset_ns: raw.start - start,
            duration_ns: raw.end - raw.start,
            cpu_ns: raw.cpu,
            error: raw.error.clone(),
            in_init: raw.in_init,
            attributes: raw.attributes.clone(),
        });
        if let Some(kids) = children.get(raw.span_id.as_str()) {
            stack.extend(kids.iter().rev().map(|k| (*k, depth + 1)));
        }
    }
    Waterfall {
        container: container.to_owned(),
        trace_id,
        start_unix_ns: start,
        duration_ns: end - start,
        spans,
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Milliseconds with a precision that suits the value.
fn ms(ns: u64) -> String {
    let ms = ns as f64 / 1e6;
    if ms >= 100.0 {
        format!("{ms:.0}ms")
    } else if ms >= 10.0 {
        format!("{ms:.1}ms")
    } else {
        format!("{ms:.2}ms")
    }
}

/// A short label for a span: its name and the attribute that tells it apart.
fn label(bar: &Bar) -> String {
    let detail = bar
        .attributes
        .iter()
        .find(|(k, _)| k == "hook.path")
        .map(|(_, v)| format!(" {v}"))
        .unwrap_or_default();
    format!("{}{}{detail}", "  ".repeat(bar.depth), bar.name)
}

/// The waterfall for a terminal `width` columns wide.
pub fn text(waterfall: &Waterfall, width: usize) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "container {}  trace {}  {} spans over {}",
        waterfall.container,
        waterfall.trace_id,
        waterfall.spans.len(),
        ms(waterfall.duration_ns)
    );
    let names: Vec<String> = waterfall.spans.iter().map(label).collect();
    let name_width = names
        .iter()
        .map(|n| n.chars().count())
        .max()
        .unwrap_or(4)
        .clamp(4, 48);
    let fixed = name_width + 3 * 10 + 4;
    let bar_width = width.saturating_sub(fixed).max(10);
    let _ = writeln!(
        out,
        "{:<name_width$} {:>9} {:>9} {:>9}  WATERFALL",
        "SPAN", "START", "WALL", "CPU"
    );
    let total = waterfall.duration_ns.max(1) as f64;
    for (bar, name) in waterfall.spans.iter().zip(&names) {
        let name: String = name.chars().take(name_width).collect();
        let begin = bar.offset_ns as f64 / total * bar_width as f64;
        let length = (bar.duration_ns as f64 / total * bar_width as f64).max(1.0 / 8.0);
        let cells = cells(begin, begin + length, bar_width);
        let cpu = bar.cpu_ns.map(ms).unwrap_or_else(|| "-".into());
        let mark = if bar.error.is_some() { " ✗" } else { "" };
        let _ = writeln!(
            out,
            "{name:<name_width$} {:>9} {:>9} {cpu:>9}  {}{mark}",
            format!("+{}", ms(bar.offset_ns)),
            ms(bar.duration_ns),
            cells.trim_end()
        );
    }
    for bar in waterfall.spans.iter().filter(|b| b.error.is_some()) {
        let _ = writeln!(
            out,
            "✗ {}: {}",
            bar.name,
            bar.error.as_deref().unwrap_or_default()
        );
    }
    let _ = writeln!(
        out,
        "WALL is elapsed time; CPU is on-CPU time of lucid (or of the init process, for its own steps)"
    );
    out
}

/// A bar from `begin` to `end` (in cells) drawn in `width` cells, with
/// eighth-cell precision where it ends and half-cell where it begins.
fn cells(begin: f64, end: f64, width: usize) -> String {
    const EIGHTHS: [char; 8] = [' ', '▏', '▎', '▍', '▌', '▋', '▊', '▉'];
    let mut out = String::new();
    for cell in 0..width {
        let (from, to) = (cell as f64, cell as f64 + 1.0);
        let covered = end.min(to) - begin.max(from);
        out.push(if covered <= 0.0 {
            ' '
        } else if covered >= 0.999 {
            '█'
        } else if begin > from {
            // The bar starts inside this cell.
            if covered >= 0.5 {
                '▐'
            } else {
                '▕'
            }
        } else {
            EIGHTHS[((covered * 8.0).round() as usize).clamp(1, 7)]
        });
    }
    out
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// The waterfall as a standalone SVG document.
pub fn svg(waterfall: &Waterfall) -> String {
    const ROW: f64 = 22.0;
    const LABEL: f64 = 300.0;
    const CHART: f64 = 760.0;
    const TOP: f64 = 56.0;
    let rows = waterfall.spans.len() as f64;
    let width = LABEL + CHART + 150.0;
    let height = TOP + rows * ROW + 40.0;
    let total = waterfall.duration_ns.max(1) as f64;
    let x = |ns: u64| LABEL + ns as f64 / total * CHART;
    let mut out = String::new();
    let _ = writeln!(
        out,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" viewBox="0 0 {width} {height}" font-family="monospace" font-size="12">"#
    );
    let _ = writeln!(out, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let _ = writeln!(
        out,
        r#"<text x="10" y="20" font-size="14" font-weight="bold">container {} · trace {} · {}</text>"#,
        escape(&waterfall.container),
        waterfall.trace_id,
        ms(waterfall.duration_ns)
    );
    // A time axis with ten ticks.
    for tick in 0..=10 {
        let ns = waterfall.duration_ns / 10 * tick;
        let tx = x(ns);
        let _ = writeln!(
            out,
            r##"<line x1="{tx:.1}" y1="{}" x2="{tx:.1}" y2="{}" stroke="#ddd"/><text x="{tx:.1}" y="{}" text-anchor="middle" fill="#555">{}</text>"##,
            TOP - 8.0,
            TOP + rows * ROW,
            TOP - 12.0,
            ms(ns)
        );
    }
    // The root and the commands hanging off it are drawn apart from steps.
    let roots: std::collections::HashSet<&str> = waterfall
        .spans
        .iter()
        .filter(|b| b.depth == 0)
        .map(|b| b.span_id.as_str())
        .collect();
    for (i, bar) in waterfall.spans.iter().enumerate() {
        let y = TOP + i as f64 * ROW;
        let bx = x(bar.offset_ns);
        let bw = (bar.duration_ns as f64 / total * CHART).max(1.0);
        let fill = if bar.error.is_some() {
            "#d9534f"
        } else if bar.in_init {
            "#5cb85c"
        } else if bar.depth == 0 || roots.contains(bar.parent_span_id.as_str()) {
            "#6c757d"
        } else {
            "#428bca"
        };
        let mut title = format!(
            "{}: start +{}, wall {}",
            bar.name,
            ms(bar.offset_ns),
            ms(bar.duration_ns)
        );
        if let Some(cpu) = bar.cpu_ns {
            let _ = write!(title, ", cpu {}", ms(cpu));
        }
        if let Some(error) = &bar.error {
            let _ = write!(title, "\nerror: {error}");
        }
        for (k, v) in &bar.attributes {
            let _ = write!(title, "\n{k} = {v}");
        }
        let _ = writeln!(
            out,
            r##"<g><title>{}</title><text x="{:.1}" y="{:.1}">{}</text><rect x="{bx:.1}" y="{:.1}" width="{bw:.1}" height="{:.1}" rx="2" fill="{fill}"/><text x="{:.1}" y="{:.1}" fill="#333">{}</text></g>"##,
            escape(&title),
            10.0 + bar.depth as f64 * 12.0,
            y + 15.0,
            escape(&bar.name),
            y + 4.0,
            ROW - 8.0,
            bx + bw + 4.0,
            y + 15.0,
            ms(bar.duration_ns)
        );
    }
    let legend_y = TOP + rows * ROW + 25.0;
    for (i, (color, text)) in [
        ("#6c757d", "command / container"),
        ("#428bca", "runtime step"),
        ("#5cb85c", "inside the init process"),
        ("#d9534f", "failed"),
    ]
    .iter()
    .enumerate()
    {
        let lx = 10.0 + i as f64 * 220.0;
        let _ = writeln!(
            out,
            r#"<rect x="{lx}" y="{}" width="12" height="12" fill="{color}"/><text x="{}" y="{}">{text}</text>"#,
            legend_y - 10.0,
            lx + 16.0,
            legend_y
        );
    }
    out.push_str("</svg>\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request() -> ExportTraceServiceRequest {
        serde_json::from_value(serde_json::json!({
            "resourceSpans": [{
                "resource": {"attributes": []},
                "scopeSpans": [{
                    "scope": {"name": "lucid"},
                    "spans": [
                        {"traceId": "0102030405060708090a0b0c0d0e0f10", "spanId": "0000000000000002",
                         "parentSpanId": "0000000000000001", "name": "create", "kind": 1,
                         "startTimeUnixNano": "1000", "endTimeUnixNano": "9000",
                         "attributes": [], "status": {"code": 0, "message": ""}},
                        {"traceId": "0102030405060708090a0b0c0d0e0f10", "spanId": "0000000000000003",
                         "parentSpanId": "0000000000000002", "name": "rootfs.mount", "kind": 1,
                         "startTimeUnixNano": "3000", "endTimeUnixNano": "5000",
                         "attributes": [{"key": "lucid.cpu_ns", "value": {"intValue": "1500"}},
                                        {"key": "lucid.in_init", "value": {"boolValue": true}}],
                         "status": {"code": 2, "message": "mount <proc> failed"}},
                        {"traceId": "0102030405060708090a0b0c0d0e0f10", "spanId": "0000000000000004",
                         "parentSpanId": "0000000000000002", "name": "spec.load", "kind": 1,
                         "startTimeUnixNano": "1000", "endTimeUnixNano": "2000",
                         "attributes": [], "status": {}}
                    ]
                }]
            }]
        }))
        .unwrap()
    }

    #[test]
    fn spans_are_laid_out_depth_first_in_start_order() {
        let w = build("c1", &[request()]);
        let names: Vec<_> = w.spans.iter().map(|b| (b.name.as_str(), b.depth)).collect();
        assert_eq!(
            names,
            [("create", 0), ("spec.load", 1), ("rootfs.mount", 1)]
        );
        assert_eq!(w.duration_ns, 8000);
        let mount = &w.spans[2];
        assert_eq!((mount.offset_ns, mount.duration_ns), (2000, 2000));
        assert_eq!(mount.cpu_ns, Some(1500));
        assert!(mount.in_init);
        assert_eq!(mount.error.as_deref(), Some("mount <proc> failed"));
    }

    #[test]
    fn text_has_a_row_per_span_and_names_the_error() {
        let out = text(&build("c1", &[request()]), 100);
        assert!(out.contains("  rootfs.mount"), "{out}");
        assert!(out.contains("✗ rootfs.mount: mount <proc> failed"), "{out}");
        assert!(out.lines().all(|l| l.chars().count() <= 100), "{out}");
    }

    #[test]
    fn svg_escapes_text_and_draws_every_span() {
        let out = svg(&build("c<1>", &[request()]));
        assert!(out.starts_with("<svg") && out.trim_end().ends_with("</svg>"));
        assert!(out.contains("c&lt;1&gt;") && out.contains("&lt;proc&gt;"));
        assert_eq!(out.matches("<g><title>").count(), 3);
    }
}
