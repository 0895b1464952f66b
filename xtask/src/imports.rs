//! `cargo xtask imports [CRATE_SRC]`: the `use crate::` edges between the
//! top-level modules of a crate (`runtime/src` by default), and the cycles
//! among them, which fail the command.
//!
//! A module is a top-level file or folder of the source directory
//! (`state.rs`, `cgroups/`); an edge is any `crate::<module>` path in its
//! code outside `#[cfg(test)]` items (tests may reach across). Cycles are
//! the strongly connected components of more than one module (Tarjan's
//! algorithm), each printed with the places that make its edges.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use crate::shell;

/// Where one module refers to another: `file:line`.
type Places = Vec<String>;

/// The import graph: module → (module it uses → where).
pub type Graph = BTreeMap<String, BTreeMap<String, Places>>;

/// Runs the check on `args[0]` (a crate's `src` directory, relative to the
/// workspace) or `runtime/src`.
pub fn run(args: &[String]) -> Result<()> {
    let src = shell::workspace().join(args.first().map_or("runtime/src", String::as_str));
    let graph = graph(&src)?;
    let cycles = cycles(&graph);
    if cycles.is_empty() {
        println!(
            "imports: no cycle among the {} modules of {}",
            graph.len(),
            src.display()
        );
        return Ok(());
    }
    for cycle in &cycles {
        println!("cycle: {}", cycle.join(" ↔ "));
        for from in cycle {
            for (to, places) in &graph[from] {
                if cycle.contains(to) {
                    println!("  {from} → {to}: {}", places.join(", "));
                }
            }
        }
    }
    bail!(
        "imports: {} cycle(s) among the modules of {}: move the shared items into a leaf module both can use",
        cycles.len(),
        src.display()
    )
}

/// The top-level module a file of `src` belongs to (`None` for the crate
/// root files).
fn module_of(src: &Path, file: &Path) -> Option<String> {
    let rel = file.strip_prefix(src).ok()?;
    let first = rel.components().next()?.as_os_str().to_string_lossy();
    let name = first.strip_suffix(".rs").unwrap_or(&first).to_owned();
    (!matches!(name.as_str(), "main" | "lib")).then_some(name)
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
    for entry in std::fs::read_dir(dir).with_context(|| format!("listing {}", dir.display()))? {
        let path = entry?.path();
        if path.is_dir() {
            rust_files(&path, out)?;
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
    Ok(())
}

/// The code of a file without its `#[cfg(test)]` items: from such an
/// attribute, lines are skipped until the braces it opened close again.
fn without_tests(text: &str) -> Vec<(usize, &str)> {
    let mut out = Vec::new();
    let mut skipping = false;
    let mut depth = 0i64;
    let mut opened = false;
    for (n, line) in text.lines().enumerate() {
        if !skipping && line.trim_start().starts_with("#[cfg(test)]") {
            skipping = true;
            depth = 0;
            opened = false;
            continue;
        }
        if skipping {
            for c in line.chars() {
                match c {
                    '{' => {
                        depth += 1;
                        opened = true;
                    }
                    '}' => depth -= 1,
                    _ => {}
                }
            }
            // An item without braces (`use …;`) ends at its semicolon.
            if (opened && depth <= 0) || (!opened && line.trim_end().ends_with(';')) {
                skipping = false;
            }
            continue;
        }
        out.push((n + 1, line));
    }
    out
}

/// The modules each line refers to through `crate::<module>`, also inside
/// `use crate::{a, b::c}` groups.
fn referenced<'a>(line: &'a str, modules: &'a BTreeSet<String>) -> Vec<&'a str> {
    let code = line.split("//").next().unwrap_or("");
    let mut found = Vec::new();
    let mut rest = code;
    while let Some(at) = rest.find("crate::") {
        rest = &rest[at + "crate::".len()..];
        let names: Vec<&str> = if let Some(group) = rest.strip_prefix('{') {
            let end = group.find('}').unwrap_or(group.len());
            group[..end]
                .split(',')
                .map(|part| part.trim().split("::").next().unwrap_or("").trim())
                .collect()
        } else {
            vec![rest
                .split(|c: char| !(c.is_alphanumeric() || c == '_'))
                .next()
                .unwrap_or("")]
        };
        for name in names {
            if let Some(m) = modules.get(name) {
                found.push(m.as_str());
            }
        }
    }
    found
}

/// The import graph of the crate whose sources are in `src`.
pub fn graph(src: &Path) -> Result<Graph> {
    let mut files = Vec::new();
    rust_files(src, &mut files)?;
    files.sort();
    let modules: BTreeSet<String> = files.iter().filter_map(|f| module_of(src, f)).collect();
    let mut graph: Graph = modules
        .iter()
        .map(|m| (m.clone(), BTreeMap::new()))
        .collect();
    for file in &files {
        let Some(from) = module_of(src, file) else {
            continue;
        };
        let text =
            std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
        let shown = file.strip_prefix(src).unwrap_or(file).display().to_string();
        for (n, line) in without_tests(&text) {
            for to in referenced(line, &modules) {
                if to != from {
                    graph
                        .get_mut(&from)
                        .expect("every module has an entry")
                        .entry(to.to_owned())
                        .or_default()
                        .push(format!("{shown}:{n}"));
                }
            }
        }
    }
    Ok(graph)
}

/// The strongly connected components of more than one module, each sorted.
pub fn cycles(graph: &Graph) -> Vec<Vec<String>> {
    struct Tarjan<'g> {
        graph: &'g Graph,
        index: BTreeMap<&'g str, usize>,
        low: BTreeMap<&'g str, usize>,
        stack: Vec<&'g str>,
        on_stack: BTreeSet<&'g str>,
        next: usize,
        found: Vec<Vec<String>>,
    }
    impl<'g> Tarjan<'g> {
        fn visit(&mut self, v: &'g str) {
            self.index.insert(v, self.next);
            self.low.insert(v, self.next);
            self.next += 1;
            self.stack.push(v);
            self.on_stack.insert(v);
            for w in self.graph[v].keys() {
                let w = w.as_str();
                if !self.index.contains_key(w) {
                    self.visit(w);
                    let low = self.low[v].min(self.low[w]);
                    self.low.insert(v, low);
                } else if self.on_stack.contains(w) {
                    let low = self.low[v].min(self.index[w]);
                    self.low.insert(v, low);
                }
            }
            if self.low[v] == self.index[v] {
                let mut component = Vec::new();
                while let Some(w) = self.stack.pop() {
                    self.on_stack.remove(w);
                    component.push(w.to_owned());
                    if w == v {
                        break;
                    }
                }
                if component.len() > 1 {
                    component.sort();
                    self.found.push(component);
                }
            }
        }
    }
    let mut t = Tarjan {
        graph,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on_stack: BTreeSet::new(),
        next: 0,
        found: Vec::new(),
    };
    for v in graph.keys() {
        if !t.index.contains_key(v.as_str()) {
            t.visit(v);
        }
    }
    t.found.sort();
    t.found
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, file: &str, text: &str) {
        let path = dir.join(file);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }

    #[test]
    fn a_ring_of_uses_is_one_cycle_and_test_code_does_not_count() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        write(dir, "main.rs", "mod a; mod b; mod c; mod leaf;\n");
        write(dir, "a.rs", "use crate::b::Thing;\n");
        write(dir, "b/mod.rs", "use crate::{c, leaf::X};\n");
        write(dir, "c.rs", "fn f() { crate::a::g(); }\n");
        write(
            dir,
            "leaf.rs",
            "// crate::a in a comment\n#[cfg(test)]\nmod tests {\n    use crate::a;\n}\n",
        );
        let graph = graph(dir).unwrap();
        assert_eq!(graph["b"].keys().collect::<Vec<_>>(), ["c", "leaf"]);
        assert!(graph["leaf"].is_empty(), "{graph:?}");
        assert_eq!(cycles(&graph), vec![vec!["a", "b", "c"]]);
        assert_eq!(graph["a"]["b"], vec!["a.rs:1"]);
    }

    #[test]
    fn a_one_way_order_has_no_cycle() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        write(dir, "lib.rs", "pub mod top; pub mod low;\n");
        write(dir, "top.rs", "use crate::low;\n");
        write(dir, "low.rs", "pub fn f() {}\n");
        assert!(cycles(&graph(dir).unwrap()).is_empty());
    }
}
