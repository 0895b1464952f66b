//! `docs/metrics.md` lists exactly the metrics of `metrics::METRICS`, with the same types and labels.

use std::collections::BTreeMap;

use lucid_exporter::metrics::{CONTAINER_LABELS, METRICS};

/// Rows of the doc's metric tables: name → (type, labels).
fn doc_rows() -> BTreeMap<String, (String, Vec<String>)> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/metrics.md");
    let text = std::fs::read_to_string(path).expect("docs/metrics.md exists");
    let mut rows = BTreeMap::new();
    for line in text.lines() {
        let cells: Vec<&str> = line.split('|').map(str::trim).collect();
        // | `name` | type | labels | meaning | source |
        if cells.len() < 6 || !cells[1].starts_with('`') {
            continue;
        }
        let name = cells[1].trim_matches('`').to_owned();
        let labels = cells[3]
            .split(',')
            .map(|l| l.trim().trim_matches('`'))
            .filter(|l| !l.is_empty() && *l != "-")
            .flat_map(|l| {
                if l == "(container)" {
                    CONTAINER_LABELS.iter().map(|s| s.to_string()).collect()
                } else {
                    vec![l.to_owned()]
                }
            })
            .collect();
        let previous = rows.insert(name.clone(), (cells[2].to_owned(), labels));
        assert!(previous.is_none(), "docs/metrics.md lists {name} twice");
    }
    rows
}

#[test]
fn docs_metrics_md_lists_every_metric_with_its_type_and_labels() {
    let doc = doc_rows();
    let mut problems = Vec::new();
    for m in METRICS {
        match doc.get(m.name) {
            None => problems.push(format!("{} is missing from docs/metrics.md", m.name)),
            Some((kind, labels)) => {
                if kind != m.kind.as_str() {
                    problems.push(format!(
                        "{}: doc says {kind}, code says {}",
                        m.name,
                        m.kind.as_str()
                    ));
                }
                let code: Vec<String> = m.labels.iter().map(|s| s.to_string()).collect();
                if *labels != code {
                    problems.push(format!(
                        "{}: doc labels {labels:?}, code labels {code:?}",
                        m.name
                    ));
                }
            }
        }
    }
    for name in doc.keys() {
        if !METRICS.iter().any(|m| m.name == name) {
            problems.push(format!(
                "docs/metrics.md lists {name}, which the exporter does not serve"
            ));
        }
    }
    assert!(
        problems.is_empty(),
        "docs/metrics.md and METRICS disagree:\n{}",
        problems.join("\n")
    );
}
