//! The Grafana dashboards in `dashboards/`: each is valid for Grafana's
//! dashboard model and takes its data sources from variables, every metric
//! they use is in `docs/metrics.md`, and every panel's query, with the
//! template variables set to real values, parses and returns data from Debian's
//! real Prometheus server after it scraped `lucid-exporter` while real
//! containers ran (as root).
//!
//! The Prometheus test starts its exporter and Prometheus on loopback ports
//! with private state and pins, and stops and removes all of it by pid and
//! path when it ends, also when it fails.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use lucid_tests::prometheus::{percent_encode, wait_for, Exporter, Prometheus};
use lucid_tests::{Bundle, Runtime};
use serde_json::{json, Value};

/// The dashboards, by file name, and the uid each must keep (links and
/// bookmarks use it).
const DASHBOARDS: &[(&str, &str)] = &[
    ("container-startup.json", "lucid-startup"),
    ("container-behaviour.json", "lucid-behaviour"),
    ("lucid-health.json", "lucid-health"),
];

/// Grafana 10.4 and 11 write this version; later ones migrate it on load.
const SCHEMA_VERSION: u64 = 39;

/// Panel types of Grafana's core visualisations.
const PANEL_TYPES: &[&str] = &[
    "row",
    "timeseries",
    "stat",
    "gauge",
    "bargauge",
    "table",
    "heatmap",
    "barchart",
    "piechart",
    "text",
    "state-timeline",
    "status-history",
    "histogram",
];

/// Grafana's built-in variables the dashboards may use.
const GLOBAL_VARIABLES: &[&str] = &[
    "__rate_interval",
    "__interval",
    "__range",
    "__from",
    "__to",
    "__org",
    "__data",
    "__url_time_range",
    "__value",
    "__all",
];

fn dashboards_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../dashboards")
}

/// Every `*.json` in `dashboards/`, by file name.
fn load_dashboards() -> BTreeMap<String, Value> {
    let mut out = BTreeMap::new();
    for entry in std::fs::read_dir(dashboards_dir()).expect("reading dashboards/") {
        let path = entry.expect("a directory entry").path();
        if path.extension().is_some_and(|e| e == "json") {
            let text = std::fs::read_to_string(&path).expect("reading a dashboard");
            let value: Value = serde_json::from_str(&text)
                .unwrap_or_else(|e| panic!("{} is not JSON: {e}", path.display()));
            let name = path.file_name().expect("a file name").to_string_lossy();
            out.insert(name.into_owned(), value);
        }
    }
    let names: BTreeSet<&str> = out.keys().map(String::as_str).collect();
    let expected: BTreeSet<&str> = DASHBOARDS.iter().map(|(f, _)| *f).collect();
    assert_eq!(names, expected, "the dashboards in dashboards/");
    out
}

/// Every panel, rows' nested panels included.
fn all_panels(dashboard: &Value) -> Vec<&Value> {
    let mut out = Vec::new();
    for p in dashboard["panels"].as_array().into_iter().flatten() {
        out.push(p);
        out.extend(p["panels"].as_array().into_iter().flatten());
    }
    out
}

fn variables(dashboard: &Value) -> Vec<&Value> {
    dashboard["templating"]["list"]
        .as_array()
        .map(|l| l.iter().collect())
        .unwrap_or_default()
}

/// The names of the variables `text` refers to (`$name`, `${name}`,
/// `${name:format}`, `${name.field}`, `[[name]]`).
fn referenced_variables(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let bytes = text.as_bytes();
    let ident = |b: u8| b.is_ascii_alphanumeric() || b == b'_';
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'$' && bytes.get(i + 1) == Some(&b'{') {
            let end = text[i..].find('}').map_or(text.len(), |e| i + e);
            let inner = &text[i + 2..end];
            let name = inner.split([':', '.']).next().unwrap_or_default();
            out.push(name.to_owned());
            i = end + 1;
        } else if bytes[i] == b'$' {
            let start = i + 1;
            let mut end = start;
            while end < bytes.len() && ident(bytes[end]) {
                end += 1;
            }
            if end > start {
                out.push(text[start..end].to_owned());
            }
            i = end.max(i + 1);
        } else if text[i..].starts_with("[[") {
            let end = text[i..].find("]]").map_or(text.len(), |e| i + e);
            out.push(
                text[i + 2..end]
                    .split(':')
                    .next()
                    .unwrap_or_default()
                    .to_owned(),
            );
            i = end + 2;
        } else {
            i += 1;
        }
    }
    out
}

/// Every string in `value`, with its JSON path.
fn strings<'a>(value: &'a Value, path: String, out: &mut Vec<(String, &'a str)>) {
    match value {
        Value::String(s) => out.push((path, s)),
        Value::Array(items) => {
            for (i, v) in items.iter().enumerate() {
                strings(v, format!("{path}[{i}]"), out);
            }
        }
        Value::Object(map) => {
            for (k, v) in map {
                strings(v, format!("{path}.{k}"), out);
            }
        }
        _ => {}
    }
}

/// Every `datasource` object in `value`, with its JSON path.
fn datasource_refs<'a>(value: &'a Value, path: String, out: &mut Vec<(String, &'a Value)>) {
    match value {
        Value::Array(items) => {
            for (i, v) in items.iter().enumerate() {
                datasource_refs(v, format!("{path}[{i}]"), out);
            }
        }
        Value::Object(map) => {
            for (k, v) in map {
                if k == "datasource" || k == "datasourceUid" {
                    out.push((format!("{path}.{k}"), v));
                }
                datasource_refs(v, format!("{path}.{k}"), out);
            }
        }
        _ => {}
    }
}

/// What is wrong with `dashboard` (file `file`) by Grafana's dashboard model
/// and this project's rules; empty when nothing is.
fn model_problems(file: &str, dashboard: &Value) -> Vec<String> {
    let mut problems = Vec::new();
    let mut problem = |p: String| problems.push(format!("{file}: {p}"));

    if !dashboard["id"].is_null() {
        problem("id must be null (Grafana assigns it on import or provisioning)".into());
    }
    let uid = dashboard["uid"].as_str().unwrap_or_default();
    if uid.is_empty()
        || uid.len() > 40
        || !uid
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        problem(format!(
            "uid {uid:?} must be 1 to 40 of [A-Za-z0-9_-] characters"
        ));
    }
    if dashboard["title"].as_str().unwrap_or_default().is_empty() {
        problem("no title".into());
    }
    if dashboard["schemaVersion"].as_u64() != Some(SCHEMA_VERSION) {
        problem(format!(
            "schemaVersion {} (want {SCHEMA_VERSION})",
            dashboard["schemaVersion"]
        ));
    }
    for key in ["from", "to"] {
        if !dashboard["time"][key].is_string() {
            problem(format!("time.{key} missing"));
        }
    }
    if !dashboard["annotations"]["list"].is_array() {
        problem("annotations.list missing".into());
    }

    // Variables: unique names, data sources by variable, defined before use.
    let vars = variables(dashboard);
    if vars.is_empty() {
        problem("templating.list missing or empty".into());
    }
    let mut defined: Vec<String> = Vec::new();
    let mut datasource_vars: HashSet<String> = HashSet::new();
    for v in &vars {
        let name = v["name"].as_str().unwrap_or_default().to_owned();
        if name.is_empty() || defined.contains(&name) {
            problem(format!("variable {name:?} is unnamed or defined twice"));
        }
        match v["type"].as_str().unwrap_or_default() {
            "datasource" => {
                datasource_vars.insert(name.clone());
                if v["query"].as_str().unwrap_or_default().is_empty() {
                    problem(format!("data source variable {name} names no plugin type"));
                }
            }
            "query" => {
                if v["datasource"] != json!({"type": "prometheus", "uid": "${datasource}"}) {
                    problem(format!(
                        "variable {name} does not query ${{datasource}}: {}",
                        v["datasource"]
                    ));
                }
                let query = v["query"]["query"].as_str().unwrap_or_default();
                if query.is_empty() || v["definition"].as_str() != Some(query) {
                    problem(format!(
                        "variable {name}: query.query and definition must be the same query"
                    ));
                }
                for used in referenced_variables(query) {
                    if !defined.contains(&used) {
                        problem(format!(
                            "variable {name} uses ${used}, not defined before it"
                        ));
                    }
                }
            }
            "custom" => {
                if v["query"].as_str().unwrap_or_default().is_empty() {
                    problem(format!("custom variable {name} has no values"));
                }
            }
            other => problem(format!("variable {name} has unexpected type {other:?}")),
        }
        defined.push(name);
    }
    if vars.first().map(|v| (&v["name"], &v["type"], &v["query"]))
        != Some((
            &json!("datasource"),
            &json!("datasource"),
            &json!("prometheus"),
        ))
    {
        problem("the first variable must be `datasource`, of Prometheus data sources".into());
    }

    // Every data source reference is a data source variable: no hard-coded uid.
    let mut refs = Vec::new();
    datasource_refs(dashboard, String::new(), &mut refs);
    for (path, r) in refs {
        let uid = r["uid"].as_str().or(r.as_str()).unwrap_or_default();
        let names = referenced_variables(uid);
        let by_variable = names.len() == 1
            && datasource_vars.contains(&names[0])
            && (uid == format!("${{{}}}", names[0]) || uid == format!("${}", names[0]));
        if !by_variable {
            problem(format!(
                "{path}: data source {r} is not a data source variable"
            ));
        }
    }

    // Every variable reference anywhere names a variable or a Grafana global.
    let mut texts = Vec::new();
    strings(dashboard, String::new(), &mut texts);
    for (path, text) in texts {
        for used in referenced_variables(text) {
            if !defined.contains(&used) && !GLOBAL_VARIABLES.contains(&used.as_str()) {
                problem(format!("{path}: unknown variable ${used}"));
            }
        }
    }

    // Panels: unique ids, known types, grid positions inside 24 columns, no overlap.
    let panels = all_panels(dashboard);
    if panels.is_empty() {
        problem("no panels".into());
    }
    let mut ids = HashSet::new();
    let mut titles = HashSet::new();
    let mut boxes: Vec<(String, u64, u64, u64, u64)> = Vec::new();
    for p in &panels {
        let title = p["title"].as_str().unwrap_or_default();
        let Some(id) = p["id"].as_u64() else {
            problem(format!("panel {title:?} has no integer id"));
            continue;
        };
        if !ids.insert(id) {
            problem(format!("panel id {id} is used twice"));
        }
        if title.is_empty() {
            problem(format!("panel {id} has no title"));
        }
        let kind = p["type"].as_str().unwrap_or_default();
        if !PANEL_TYPES.contains(&kind) {
            problem(format!("panel {id} has unknown type {kind:?}"));
        }
        let g = &p["gridPos"];
        let (Some(h), Some(w), Some(x), Some(y)) = (
            g["h"].as_u64(),
            g["w"].as_u64(),
            g["x"].as_u64(),
            g["y"].as_u64(),
        ) else {
            problem(format!("panel {id} has no complete gridPos"));
            continue;
        };
        if h == 0 || w == 0 || x + w > 24 {
            problem(format!(
                "panel {id}: gridPos {g} is empty or wider than 24 columns"
            ));
        }
        for (other, ox, oy, ow, oh) in &boxes {
            if x < ox + ow && *ox < x + w && y < oy + oh && *oy < y + h {
                problem(format!("panel {id} overlaps panel {other}"));
            }
        }
        boxes.push((id.to_string(), x, y, w, h));

        if kind == "row" {
            if h != 1 || w != 24 || x != 0 {
                problem(format!("row {id} must be 24 wide and 1 high at x=0"));
            }
            if p["collapsed"] == json!(false) && !p["panels"].as_array().is_some_and(Vec::is_empty)
            {
                problem(format!("open row {id} must hold its panels at top level"));
            }
            continue;
        }
        if !titles.insert(title) {
            problem(format!("two panels are titled {title:?}"));
        }
        if p["description"].as_str().unwrap_or_default().is_empty() {
            problem(format!("panel {id} ({title}) has no description"));
        }
        let ds = json!({"type": "prometheus", "uid": "${datasource}"});
        if p["datasource"] != ds {
            problem(format!(
                "panel {id} ({title}): datasource {} is not ${{datasource}}",
                p["datasource"]
            ));
        }
        let targets = p["targets"].as_array().cloned().unwrap_or_default();
        if targets.is_empty() {
            problem(format!("panel {id} ({title}) has no query"));
        }
        let mut refs = HashSet::new();
        for t in &targets {
            let r = t["refId"].as_str().unwrap_or_default();
            if r.is_empty() || !refs.insert(r.to_owned()) {
                problem(format!("panel {id}: refId {r:?} is empty or used twice"));
            }
            if t["datasource"] != ds {
                problem(format!(
                    "panel {id} target {r}: datasource {} is not ${{datasource}}",
                    t["datasource"]
                ));
            }
            if t["expr"].as_str().unwrap_or_default().trim().is_empty() {
                problem(format!("panel {id} target {r} has no expr"));
            }
        }
    }
    problems
}

#[test]
fn every_dashboard_is_valid_for_grafana_and_takes_its_data_sources_from_variables() {
    let dashboards = load_dashboards();
    let mut problems = Vec::new();
    let mut uids = HashSet::new();
    let mut titles = HashSet::new();
    for (file, dashboard) in &dashboards {
        problems.extend(model_problems(file, dashboard));
        let uid = dashboard["uid"].as_str().unwrap_or_default();
        let expected = DASHBOARDS.iter().find(|(f, _)| f == file).map(|(_, u)| *u);
        if Some(uid) != expected {
            problems.push(format!("{file}: uid {uid:?}, expected {expected:?}"));
        }
        if !uids.insert(uid.to_owned()) {
            problems.push(format!("{file}: uid {uid} is used by another dashboard"));
        }
        if !titles.insert(dashboard["title"].as_str().unwrap_or_default().to_owned()) {
            problems.push(format!("{file}: its title is another dashboard's"));
        }
    }
    // Links between dashboards name uids that exist.
    for (file, dashboard) in &dashboards {
        let mut texts = Vec::new();
        strings(dashboard, String::new(), &mut texts);
        for (path, text) in texts {
            if let Some(rest) = text.strip_prefix("/d/") {
                let target = rest.split(['/', '?']).next().unwrap_or_default();
                if !uids.contains(target) {
                    problems.push(format!("{file}{path}: links to unknown dashboard {target}"));
                }
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn the_provisioning_files_load_this_directory_and_name_no_dashboard_data_source() {
    let dir = dashboards_dir().join("provisioning");
    let datasources = std::fs::read_to_string(dir.join("datasources/lucid.yaml"))
        .expect("dashboards/provisioning/datasources/lucid.yaml");
    let providers = std::fs::read_to_string(dir.join("dashboards/lucid.yaml"))
        .expect("dashboards/provisioning/dashboards/lucid.yaml");
    for (file, text, needles) in [
        (
            "datasources/lucid.yaml",
            &datasources,
            &[
                "apiVersion: 1",
                "type: prometheus",
                "url: ${LUCID_PROMETHEUS_URL}",
            ][..],
        ),
        (
            "dashboards/lucid.yaml",
            &providers,
            &[
                "apiVersion: 1",
                "type: file",
                "path: ${LUCID_DASHBOARDS_DIR}",
                "folder: lucid",
            ][..],
        ),
    ] {
        for needle in needles {
            assert!(
                text.lines().any(|l| l.trim() == *needle),
                "{file} lacks the line {needle:?}"
            );
        }
    }
    // The provisioned data source has no fixed uid a dashboard could depend on.
    assert!(
        !datasources.lines().any(|l| l.trim().starts_with("uid:")),
        "datasources/lucid.yaml fixes a uid"
    );
}

// ---------------------------------------------------------------- metrics

/// The metric names and types `docs/metrics.md` lists.
fn documented_metrics() -> BTreeMap<String, String> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/metrics.md");
    let text = std::fs::read_to_string(path).expect("docs/metrics.md");
    text.lines()
        .filter_map(|line| {
            let cells: Vec<&str> = line.split('|').map(str::trim).collect();
            (cells.len() >= 6 && cells[1].starts_with('`'))
                .then(|| (cells[1].trim_matches('`').to_owned(), cells[2].to_owned()))
        })
        .collect()
}

/// PromQL's functions, aggregations and keywords the dashboards may use.
const PROMQL_WORDS: &[&str] = &[
    "sum",
    "max",
    "min",
    "avg",
    "count",
    "topk",
    "bottomk",
    "rate",
    "irate",
    "increase",
    "max_over_time",
    "min_over_time",
    "avg_over_time",
    "histogram_quantile",
    "round",
    "sort_desc",
    "sort",
    "clamp_min",
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "and",
    "or",
    "unless",
    "bool",
    "offset",
];

/// The metric names in a PromQL expression: the identifiers left once
/// strings, label matchers, ranges, variables, the label lists of
/// by/without/on/ignoring/group_left/group_right and PromQL's own words are
/// taken out.
fn metric_names(expr: &str) -> Vec<String> {
    let expr = without_label_lists(expr);
    let mut plain = String::new();
    let mut chars = expr.chars().peekable();
    let (mut braces, mut brackets) = (0, 0);
    while let Some(c) = chars.next() {
        match c {
            '"' => {
                while let Some(s) = chars.next() {
                    match s {
                        '\\' => {
                            chars.next();
                        }
                        '"' => break,
                        _ => {}
                    }
                }
                plain.push(' ');
            }
            '{' => braces += 1,
            '}' => braces -= 1,
            '[' => brackets += 1,
            ']' => brackets -= 1,
            '$' => {
                while chars
                    .peek()
                    .is_some_and(|n| n.is_ascii_alphanumeric() || *n == '_')
                {
                    chars.next();
                }
                plain.push(' ');
            }
            c if braces == 0 && brackets == 0 => plain.push(c),
            _ => plain.push(' '),
        }
    }
    plain
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
        .filter(|w| !w.is_empty() && !w.starts_with(|c: char| c.is_ascii_digit()))
        .filter(|w| !PROMQL_WORDS.contains(w))
        .map(str::to_owned)
        .collect()
}

/// Removes the label lists that follow by/without/on/ignoring/group_left/group_right.
fn without_label_lists(expr: &str) -> String {
    let mut out = String::new();
    let mut rest = expr;
    'outer: while !rest.is_empty() {
        let boundary = !out
            .chars()
            .last()
            .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_');
        for kw in [
            "by",
            "without",
            "on",
            "ignoring",
            "group_left",
            "group_right",
        ] {
            if let Some(after) = rest.strip_prefix(kw) {
                let list = after.trim_start();
                if boundary && list.starts_with('(') {
                    let close = list.find(')').map_or(list.len(), |i| i + 1);
                    out.push_str(kw);
                    out.push(' ');
                    rest = &list[close..];
                    continue 'outer;
                }
            }
        }
        let mut chars = rest.chars();
        if let Some(c) = chars.next() {
            out.push(c);
        }
        rest = chars.as_str();
    }
    out
}

/// The selector of a `label_values(selector, label)` variable query.
fn label_values_selector(query: &str) -> Option<(&str, &str)> {
    let inner = query
        .trim()
        .strip_prefix("label_values(")?
        .strip_suffix(')')?;
    let (selector, label) = inner.rsplit_once(',')?;
    Some((selector.trim(), label.trim()))
}

/// Every query of a dashboard: (where, PromQL), variable queries included.
fn queries(dashboard: &Value) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for v in variables(dashboard) {
        if v["type"] == "query" {
            let query = v["query"]["query"].as_str().unwrap_or_default();
            out.push((
                format!("variable {}", v["name"].as_str().unwrap_or_default()),
                label_values_selector(query)
                    .map_or(query, |(s, _)| s)
                    .to_owned(),
            ));
        }
    }
    for p in all_panels(dashboard) {
        for t in p["targets"].as_array().into_iter().flatten() {
            out.push((
                format!(
                    "panel {:?} target {}",
                    p["title"].as_str().unwrap_or_default(),
                    t["refId"].as_str().unwrap_or_default()
                ),
                t["expr"].as_str().unwrap_or_default().to_owned(),
            ));
        }
    }
    out
}

#[test]
fn every_metric_a_dashboard_uses_is_in_docs_metrics_md() {
    let documented = documented_metrics();
    assert!(
        documented.len() > 40,
        "docs/metrics.md lists only {} metrics",
        documented.len()
    );
    let mut problems = Vec::new();
    let mut used = BTreeSet::new();
    for (file, dashboard) in load_dashboards() {
        for (place, expr) in queries(&dashboard) {
            let names = metric_names(&expr);
            if names.is_empty() {
                problems.push(format!("{file} {place}: no metric in {expr}"));
            }
            for name in names {
                let histogram_base = ["_bucket", "_sum", "_count"]
                    .iter()
                    .find_map(|s| name.strip_suffix(s))
                    .filter(|base| documented.get(*base).is_some_and(|t| t == "histogram"));
                if !documented.contains_key(&name) && histogram_base.is_none() {
                    problems.push(format!(
                        "{file} {place}: {name} is not in docs/metrics.md ({expr})"
                    ));
                }
                used.insert(histogram_base.map_or(name.clone(), str::to_owned));
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    // The parser finds what the dashboards are about.
    for name in [
        "lucid_container_start_duration_seconds",
        "lucid_phase_duration_seconds",
        "lucid_container_info",
        "container_cpu_usage_seconds_total",
        "lucid_container_syscalls_total",
        "lucid_exporter_scrape_duration_seconds",
        "lucid_spool_unshipped_batches",
    ] {
        assert!(
            used.contains(name),
            "{name} not found in any dashboard query"
        );
    }
}

#[test]
fn the_metric_name_parser_skips_labels_functions_and_variables() {
    let expr = r#"topk($topn, sum by (instance, container_id) (rate(lucid_container_syscalls_total{container_id!="", name=~"$container"}[$__rate_interval]))) * on (instance) group_left (trace_id) lucid_container_info"#;
    assert_eq!(
        metric_names(expr),
        ["lucid_container_syscalls_total", "lucid_container_info"]
    );
    let (selector, label) = label_values_selector(
        r#"label_values(container_start_time_seconds{instance=~"$instance"}, namespace)"#,
    )
    .expect("a label_values query");
    assert_eq!(label, "namespace");
    assert_eq!(metric_names(selector), ["container_start_time_seconds"]);
    assert_eq!(
        metric_names(
            r#"histogram_quantile(0.99, sum by (le) (rate(a_bucket{x="y"}[5m]))) / on () b"#
        ),
        ["a_bucket", "b"]
    );
}

// ---------------------------------------------------------------- queries against Prometheus

/// `kernel.bpf_stats_enabled` set to 1 while it lives, as an operator turns
/// BPF run-time statistics on; the value before is put back on drop, also when
/// the test fails. (A `BPF_ENABLE_STATS` descriptor would turn the statistics
/// on without touching the setting, but the sysctl, which the exporter reads,
/// would still say 0.)
struct BpfStats {
    before: String,
}

const BPF_STATS_SYSCTL: &str = "/proc/sys/kernel/bpf_stats_enabled";

impl BpfStats {
    fn enable() -> Self {
        let before = std::fs::read_to_string(BPF_STATS_SYSCTL)
            .unwrap_or_else(|e| panic!("reading {BPF_STATS_SYSCTL}: {e}"));
        std::fs::write(BPF_STATS_SYSCTL, "1")
            .unwrap_or_else(|e| panic!("writing 1 to {BPF_STATS_SYSCTL} (needs root): {e}"));
        BpfStats { before }
    }
}

impl Drop for BpfStats {
    fn drop(&mut self) {
        if let Err(e) = std::fs::write(BPF_STATS_SYSCTL, self.before.trim()) {
            eprintln!(
                "restoring {BPF_STATS_SYSCTL} to {}: {e}",
                self.before.trim()
            );
        }
    }
}

const HELPER: &str = env!("CARGO_BIN_EXE_syscall-loop");

fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("the clock is after 1970")
        .as_secs_f64()
}

/// A container's bundle in the host's network namespace (whose loopback is up).
fn host_network(bundle: &mut Bundle) {
    bundle.edit(|c| {
        c["linux"]["namespaces"]
            .as_array_mut()
            .expect("namespaces")
            .retain(|ns| ns["type"] != "network");
    });
}

/// Grafana's regex escaping of a value of a multi-value variable inside a
/// PromQL string (`prometheusSpecialRegexEscape`).
fn regex_escape(value: &str) -> String {
    let mut out = String::new();
    for c in value.chars() {
        if "\\^$*+?.()|{}[]'".contains(c) {
            out.push_str("\\\\");
        }
        out.push(c);
    }
    out
}

/// Replaces every variable in `text` by its value; fails on an unknown one.
fn interpolate(text: &str, values: &BTreeMap<String, String>) -> Result<String, String> {
    let mut out = String::new();
    let mut rest = text;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        let after = &rest[at + 1..];
        let (name, len) = if let Some(braced) = after.strip_prefix('{') {
            let end = braced
                .find('}')
                .ok_or_else(|| format!("unclosed ${{ in {text}"))?;
            (&braced[..end], end + 2)
        } else {
            let end = after
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(after.len());
            (&after[..end], end)
        };
        let value = values
            .get(name)
            .ok_or_else(|| format!("no value for ${name} in {text}"))?;
        out.push_str(value);
        rest = &after[len..];
    }
    out.push_str(rest);
    Ok(out)
}

/// Whether a query answer holds at least one finite sample.
fn has_finite_sample(data: &Value) -> bool {
    let finite = |v: &Value| {
        v[1].as_str()
            .and_then(|s| s.parse::<f64>().ok())
            .is_some_and(f64::is_finite)
    };
    data["result"].as_array().is_some_and(|series| {
        series.iter().any(|s| {
            s["values"]
                .as_array()
                .is_some_and(|vs| vs.iter().any(finite))
                || finite(&s["value"])
        })
    })
}

/// The time range the dashboards are evaluated over, as Grafana would pass it.
struct Range {
    start: f64,
    end: f64,
    step: u64,
}

impl Range {
    /// Grafana's built-in interval variables for this range, with Prometheus
    /// scraping every `scrape` seconds (the data source's `timeInterval`).
    fn builtins(&self, scrape: u64) -> BTreeMap<String, String> {
        let range = (self.end - self.start).ceil() as u64;
        // $__rate_interval = max($__interval + scrape interval, 4 × scrape interval).
        let rate = (self.step + scrape).max(4 * scrape);
        BTreeMap::from([
            ("__interval".to_owned(), format!("{}s", self.step)),
            ("__rate_interval".to_owned(), format!("{rate}s")),
            ("__range".to_owned(), format!("{range}s")),
        ])
    }
}

/// Evaluates a panel target as Grafana does: an instant query at the end of
/// the range, or a range query over it.
fn evaluate(
    prom: &mut Prometheus,
    expr: &str,
    instant: bool,
    range: &Range,
) -> Result<Value, String> {
    let q = percent_encode(expr);
    if instant {
        prom.api(&format!("/api/v1/query?query={q}&time={}", range.end))
    } else {
        prom.api(&format!(
            "/api/v1/query_range?query={q}&start={}&end={}&step={}",
            range.start, range.end, range.step
        ))
    }
}

/// The values Prometheus gives a `label_values(selector, label)` variable, as
/// Grafana asks for them (`/api/v1/label/<label>/values?match[]=`).
fn variable_values(
    prom: &mut Prometheus,
    query: &str,
    range: &Range,
) -> Result<Vec<String>, String> {
    let (selector, label) =
        label_values_selector(query).ok_or_else(|| format!("not a label_values query: {query}"))?;
    let data = prom.api(&format!(
        "/api/v1/label/{label}/values?match[]={}&start={}&end={}",
        percent_encode(selector),
        range.start,
        range.end
    ))?;
    Ok(data
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|v| v.as_str().map(str::to_owned))
        .collect())
}

/// Sets every variable of `dashboard` as a user would pick it: `choice` names
/// the value wanted for some variables (it must be among the values the
/// variable's own query returns), the others are "All"; custom variables keep
/// their current value. Returns the values to substitute, built-ins included.
fn pick_variables(
    prom: &mut Prometheus,
    dashboard: &Value,
    choice: &BTreeMap<&str, String>,
    range: &Range,
    builtins: &BTreeMap<String, String>,
) -> Result<BTreeMap<String, String>, String> {
    let mut values = builtins.clone();
    for v in variables(dashboard) {
        let name = v["name"].as_str().unwrap_or_default().to_owned();
        match v["type"].as_str().unwrap_or_default() {
            "query" => {
                let query = interpolate(v["query"]["query"].as_str().unwrap_or_default(), &values)?;
                let found = variable_values(prom, &query, range)?;
                if found.is_empty() {
                    return Err(format!("variable {name}: {query} found no values"));
                }
                let value = match choice.get(name.as_str()) {
                    Some(wanted) if found.contains(wanted) => regex_escape(wanted),
                    Some(wanted) => {
                        return Err(format!(
                            "variable {name}: {query} found {found:?}, not {wanted:?}"
                        ))
                    }
                    None => v["allValue"].as_str().unwrap_or(".*").to_owned(),
                };
                values.insert(name, value);
            }
            "custom" => {
                let current = v["current"]["value"].as_str().unwrap_or_default();
                values.insert(name, current.to_owned());
            }
            _ => {}
        }
    }
    Ok(values)
}

#[test]
fn every_panel_query_returns_data_from_prometheus_scraping_real_containers() {
    const SCRAPE_SECONDS: u64 = 1;
    let dashboards = load_dashboards();
    let _stats = BpfStats::enable();
    let rt = Runtime::new();
    let state = tempfile::tempdir().expect("a state dir for the exporter");
    let exporter = Exporter::start(rt.root(), rt.pin_root(), state.path(), &[]);
    let instance = format!("127.0.0.1:{}", exporter.port);
    let mut prom = Prometheus::start(exporter.port);
    let start = unix_now();
    // Prometheus has the lifecycle histograms at zero before any container starts,
    // so every start below is an increase it sees.
    prom.one("lucid_container_start_duration_seconds_count == 0");

    // A Kubernetes-labelled container that keeps busy: syscalls (some failing),
    // execs, exits, loopback traffic, with the syscall latency histogram on.
    let web = lucid_tests::unique_id("web");
    let mut web_bundle = lucid_tests::helper_bundle(
        &rt,
        &web,
        HELPER,
        &[
            "sh",
            "-c",
            "while true; do /syscall-loop 2000; /syscall-loop tcp 20000 >/dev/null; sleep 0.3; done",
        ],
        json!({
            "io.kubernetes.cri.container-type": "container",
            "io.kubernetes.cri.container-name": "web",
            "io.kubernetes.cri.sandbox-name": "web-6f7d",
            "io.kubernetes.cri.sandbox-namespace": "shop",
            "io.kubernetes.cri.image-name": "example/web:1",
            "lucid.ebpf/syscall-latency": "true",
        }),
    );
    host_network(&mut web_bundle);
    // A container in another namespace, and one whose memory limit OOM-kills a process.
    let report = lucid_tests::unique_id("report");
    let mut report_bundle = Bundle::new(
        &rt,
        &report,
        &["sh", "-c", "while true; do ls / >/dev/null; sleep 1; done"],
    );
    report_bundle.edit(|c| {
        c["annotations"] = json!({
            "io.kubernetes.cri.container-name": "report",
            "io.kubernetes.cri.sandbox-name": "report-28f1",
            "io.kubernetes.cri.sandbox-namespace": "batch",
        });
    });
    let hog = lucid_tests::unique_id("hog");
    // tail keeps a line that never ends: it grows until the limit kills it.
    let mut hog_bundle = Bundle::new(&rt, &hog, &["sh", "-c", "tail /dev/zero; sleep 600"]);
    hog_bundle.edit(|c| {
        c["annotations"] = json!({ "lucid.name": "hog" });
        c["linux"]["resources"]["memory"] = json!({ "limit": 33554432, "swap": 33554432 });
    });
    // Short-lived containers, started a second or two apart, for the start-up histograms.
    let quick: Vec<String> = (0..4).map(|_| lucid_tests::unique_id("quick")).collect();
    let quick_bundles: Vec<Bundle> = quick
        .iter()
        .map(|id| Bundle::new(&rt, id, &["true"]))
        .collect();

    for (bundle, id) in [
        (&web_bundle, &web),
        (&report_bundle, &report),
        (&hog_bundle, &hog),
    ] {
        rt.ok(&["create", "--bundle", bundle.arg(), id]);
        rt.ok(&["start", id]);
        std::thread::sleep(Duration::from_millis(1500));
    }
    for (bundle, id) in quick_bundles.iter().zip(&quick) {
        rt.ok(&["create", "--bundle", bundle.arg(), id]);
        rt.ok(&["start", id]);
        std::thread::sleep(Duration::from_millis(1500));
    }
    let containers = 3 + quick.len();

    // Wait until Prometheus has everything the panels show.
    for (what, promql) in [
        (
            "every start counted",
            format!("lucid_container_start_duration_seconds_count == {containers}"),
        ),
        (
            "the OOM kill",
            format!(r#"lucid_container_oom_kills_total{{container_id="{hog}"}} >= 1"#),
        ),
        (
            "web's syscall latency",
            format!(
                r#"sum(lucid_container_syscall_duration_seconds_count{{container_id="{web}"}}) > 0"#
            ),
        ),
        (
            "web's traffic",
            format!(r#"container_network_transmit_bytes_total{{container_id="{web}"}} > 0"#),
        ),
        (
            "BPF program run time",
            "sum(lucid_bpf_program_runs_total) > 0".to_owned(),
        ),
        (
            "the spooled spans",
            "lucid_spool_unshipped_batches > 0 and lucid_spool_unshipped_bytes > 0".to_owned(),
        ),
    ] {
        wait_for(90, what, || (!prom.query(&promql).is_empty()).then_some(()));
    }
    // A few more scrapes, so every rate window after the last start has two samples.
    std::thread::sleep(Duration::from_secs(6 * SCRAPE_SECONDS));
    let range = Range {
        start: start.floor(),
        end: unix_now().floor(),
        step: SCRAPE_SECONDS,
    };
    let builtins = range.builtins(SCRAPE_SECONDS);

    // Each dashboard with every variable on "All", then with one container picked.
    let picks: [BTreeMap<&str, String>; 2] = [
        BTreeMap::new(),
        BTreeMap::from([
            ("instance", instance.clone()),
            ("namespace", "shop".to_owned()),
            ("pod", "web-6f7d".to_owned()),
            ("container", "web".to_owned()),
        ]),
    ];
    let mut failures = Vec::new();
    let mut evaluated = 0;
    for (file, dashboard) in &dashboards {
        for pick in &picks {
            let values = match pick_variables(&mut prom, dashboard, pick, &range, &builtins) {
                Ok(values) => values,
                Err(e) => {
                    failures.push(format!("{file} with {pick:?}: {e}"));
                    continue;
                }
            };
            for p in all_panels(dashboard) {
                let title = p["title"].as_str().unwrap_or_default();
                for t in p["targets"].as_array().into_iter().flatten() {
                    let place = format!(
                        "{file} panel {title:?} target {} with {pick:?}",
                        t["refId"].as_str().unwrap_or_default()
                    );
                    let expr = match interpolate(t["expr"].as_str().unwrap_or_default(), &values) {
                        Ok(expr) => expr,
                        Err(e) => {
                            failures.push(format!("{place}: {e}"));
                            continue;
                        }
                    };
                    let instant = t["instant"] == json!(true);
                    evaluated += 1;
                    match evaluate(&mut prom, &expr, instant, &range) {
                        Err(e) => failures.push(format!("{place}: {expr}: {e}")),
                        Ok(data) if !has_finite_sample(&data) => {
                            failures.push(format!("{place}: {expr}: no data"))
                        }
                        Ok(_) => {}
                    }
                }
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {evaluated} queries failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
    assert!(evaluated > 80, "only {evaluated} queries evaluated");

    // The slowest-containers table carries the trace id the runtime recorded,
    // which its Tempo and Jaeger links open.
    let startup = &dashboards["container-startup.json"];
    let table = all_panels(startup)
        .into_iter()
        .find(|p| p["type"] == "table" && p["title"] == "Slowest recent containers")
        .expect("the slowest containers table");
    let values = pick_variables(&mut prom, startup, &picks[1], &range, &builtins)
        .expect("the variables resolve");
    let expr = interpolate(
        table["targets"][0]["expr"].as_str().expect("an expr"),
        &values,
    )
    .expect("the variables interpolate");
    let rows = evaluate(&mut prom, &expr, true, &range).expect("the table's query");
    let state: Value = serde_json::from_str(
        &std::fs::read_to_string(rt.root().join(&web).join("state.json")).expect("web's state"),
    )
    .expect("state.json is JSON");
    let recorded = state["trace"]["trace_id"].as_str().unwrap_or_default();
    assert_eq!(recorded.len(), 32, "web's state records no trace: {state}");
    let row = &rows["result"][0]["metric"];
    assert_eq!(row["container_id"], json!(web), "{rows}");
    assert_eq!(row["trace_id"], json!(recorded), "{rows}");
    eprintln!("{evaluated} panel queries returned data");
}
