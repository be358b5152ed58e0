//! No `use` cycle among a crate's top-level modules: every workspace crate's module graph is a
//! DAG, so each module can be read, tested and moved with only the ones below it.
//!
//! A module `a` uses `b` when code in `a` (any file below it) names a path starting at `b`
//! through `crate::`, `super::` or `self::`, including grouped imports (`use crate::{b::X}`) and
//! crate-root re-exports (`crate::X` where the root has `pub use b::X`). Comments, string
//! literals and `#[cfg(test)]` items are not code the library runs and do not count. The module
//! tree is followed from the crate root's `mod` declarations, as the compiler does.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// A token of Rust source: only what paths, items and nesting need.
#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Ident(String),
    /// `::`
    PathSep,
    Punct(char),
    /// A literal (number, string, char) or lifetime.
    Other,
}

fn lex(src: &str) -> Vec<Tok> {
    let c: Vec<char> = src.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    let is_id = |ch: char| ch == '_' || ch.is_alphanumeric();
    // Skips a quoted literal starting at the opening quote `q`; returns the index after it.
    let skip_quoted = |mut i: usize, q: char| {
        i += 1;
        while i < c.len() && c[i] != q {
            i += if c[i] == '\\' { 2 } else { 1 };
        }
        i + 1
    };
    // Skips a raw string `#*"..."#*` starting at the first `#` or `"`.
    let skip_raw = |mut i: usize| {
        let mut hashes = 0;
        while c[i] == '#' {
            hashes += 1;
            i += 1;
        }
        i += 1;
        loop {
            if i >= c.len() {
                return i;
            }
            if c[i] == '"' && (0..hashes).all(|k| c.get(i + 1 + k) == Some(&'#')) {
                return i + 1 + hashes;
            }
            i += 1;
        }
    };
    while i < c.len() {
        let ch = c[i];
        if ch.is_whitespace() {
            i += 1;
        } else if ch == '/' && c.get(i + 1) == Some(&'/') {
            while i < c.len() && c[i] != '\n' {
                i += 1;
            }
        } else if ch == '/' && c.get(i + 1) == Some(&'*') {
            let mut depth = 0;
            while i < c.len() {
                if c[i] == '/' && c.get(i + 1) == Some(&'*') {
                    depth += 1;
                    i += 2;
                } else if c[i] == '*' && c.get(i + 1) == Some(&'/') {
                    depth -= 1;
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    i += 1;
                }
            }
        } else if ch == '"' {
            i = skip_quoted(i, '"');
            out.push(Tok::Other);
        } else if ch == '\'' {
            if c.get(i + 1) == Some(&'\\') {
                i = skip_quoted(i, '\'');
            } else if c.get(i + 2) == Some(&'\'') {
                i += 3;
            } else {
                // A lifetime or label.
                i += 1;
                while i < c.len() && is_id(c[i]) {
                    i += 1;
                }
            }
            out.push(Tok::Other);
        } else if ch.is_ascii_digit() {
            while i < c.len()
                && (is_id(c[i]) || (c[i] == '.' && c.get(i + 1).is_some_and(char::is_ascii_digit)))
            {
                i += 1;
            }
            out.push(Tok::Other);
        } else if is_id(ch) {
            let start = i;
            while i < c.len() && is_id(c[i]) {
                i += 1;
            }
            let word: String = c[start..i].iter().collect();
            let next = c.get(i).copied();
            let raw_prefix = matches!(word.as_str(), "r" | "br" | "cr");
            if raw_prefix && (next == Some('"') || next == Some('#')) {
                if next == Some('#') && c.get(i + 1).is_some_and(|&n| is_id(n)) {
                    // A raw identifier, `r#type`.
                    i += 1;
                    let s = i;
                    while i < c.len() && is_id(c[i]) {
                        i += 1;
                    }
                    out.push(Tok::Ident(c[s..i].iter().collect()));
                } else {
                    i = skip_raw(i);
                    out.push(Tok::Other);
                }
            } else if matches!(word.as_str(), "b" | "c") && next == Some('"') {
                i = skip_quoted(i, '"');
                out.push(Tok::Other);
            } else if word == "b" && next == Some('\'') {
                i = skip_quoted(i, '\'');
                out.push(Tok::Other);
            } else {
                out.push(Tok::Ident(word));
            }
        } else if ch == ':' && c.get(i + 1) == Some(&':') {
            out.push(Tok::PathSep);
            i += 2;
        } else {
            out.push(Tok::Punct(ch));
            i += 1;
        }
    }
    out
}

/// What one file contributes: its out-of-line `mod x;` declarations (with the inline module path
/// they sit in) and every path it names, made absolute from the crate root.
#[derive(Debug, Default)]
struct FileScan {
    mods: Vec<(Vec<String>, String)>,
    /// (absolute path, the text as written) for messages.
    paths: Vec<(Vec<String>, String)>,
    /// In the crate root only: `use` names and where they lead (`X` -> `["b", "X"]`).
    root_uses: BTreeMap<String, Vec<String>>,
}

fn ident(t: Option<&Tok>) -> Option<&str> {
    match t {
        Some(Tok::Ident(s)) => Some(s),
        _ => None,
    }
}

/// Index just past the item starting at `i`: its `;` or its outermost `{ ... }` (or, for a
/// field or argument, at the bracket that closes its list).
fn skip_item(toks: &[Tok], mut i: usize) -> usize {
    let mut depth = 0i32;
    while i < toks.len() {
        match toks[i] {
            Tok::Punct('(' | '[' | '{') => depth += 1,
            Tok::Punct(')' | ']' | '}') if depth == 0 => return i,
            Tok::Punct(')' | ']') => depth -= 1,
            Tok::Punct('}') => {
                depth -= 1;
                if depth == 0 {
                    return i + 1;
                }
            }
            Tok::Punct(';') if depth == 0 => return i + 1,
            _ => {}
        }
        i += 1;
    }
    i
}

/// Index just past the bracketed group opening at `i`.
fn skip_group(toks: &[Tok], mut i: usize) -> usize {
    let mut depth = 0i32;
    while i < toks.len() {
        match toks[i] {
            Tok::Punct('(' | '[' | '{') => depth += 1,
            Tok::Punct(')' | ']' | '}') => {
                depth -= 1;
                if depth == 0 {
                    return i + 1;
                }
            }
            _ => {}
        }
        i += 1;
    }
    i
}

/// Parses a use tree at `i` below `base`; pushes each leaf's (path, name it is bound to).
fn use_tree(
    toks: &[Tok],
    mut i: usize,
    base: &[String],
    out: &mut Vec<(Vec<String>, String)>,
) -> usize {
    match toks.get(i) {
        Some(Tok::Punct('{')) => {
            i += 1;
            while i < toks.len() && toks[i] != Tok::Punct('}') {
                i = use_tree(toks, i, base, out);
                if toks.get(i) == Some(&Tok::Punct(',')) {
                    i += 1;
                }
            }
            i + 1
        }
        Some(Tok::Punct('*')) => {
            out.push((base.to_vec(), "*".into()));
            i + 1
        }
        Some(Tok::Ident(name)) => {
            let mut path = base.to_vec();
            if name != "self" {
                path.push(name.clone());
            }
            i += 1;
            if toks.get(i) == Some(&Tok::PathSep) {
                return use_tree(toks, i + 1, &path, out);
            }
            let mut bound = path.last().cloned().unwrap_or_default();
            if ident(toks.get(i)) == Some("as") {
                bound = ident(toks.get(i + 1)).unwrap_or("_").to_string();
                i += 2;
            }
            out.push((path, bound));
            i
        }
        _ => i + 1,
    }
}

/// The module a path's leading `crate` / `super`s / `self` at `i` stand for, from module
/// `module`, and the index after them (at the first named segment).
fn path_base(toks: &[Tok], mut i: usize, module: &[String]) -> Option<(Vec<String>, usize)> {
    match ident(toks.get(i))? {
        "crate" => Some((Vec::new(), i + 2)),
        "self" => Some((module.to_vec(), i + 2)),
        "super" => {
            let mut base = module.to_vec();
            while ident(toks.get(i)) == Some("super") && toks.get(i + 1) == Some(&Tok::PathSep) {
                base.pop()?;
                i += 2;
            }
            Some((base, i))
        }
        _ => None,
    }
}

fn scan(src: &str, file_module: &[String]) -> FileScan {
    let toks = lex(src);
    let mut scan = FileScan::default();
    let mut module = file_module.to_vec();
    // Brace depth at which each inline `mod x {` opened.
    let mut inline: Vec<i32> = Vec::new();
    let mut depth = 0i32;
    let mut test_only = false;
    let mut i = 0;
    while i < toks.len() {
        match &toks[i] {
            Tok::Punct('#')
                if toks.get(i + 1) == Some(&Tok::Punct('['))
                    || (toks.get(i + 1) == Some(&Tok::Punct('!'))
                        && toks.get(i + 2) == Some(&Tok::Punct('['))) =>
            {
                let inner = toks.get(i + 1) == Some(&Tok::Punct('!'));
                let open = i + 1 + inner as usize;
                let end = skip_group(&toks, open);
                let cfg_test = [
                    Tok::Ident("cfg".into()),
                    Tok::Punct('('),
                    Tok::Ident("test".into()),
                    Tok::Punct(')'),
                ];
                if !inner && toks.get(open + 1..end - 1) == Some(&cfg_test[..]) {
                    test_only = true;
                }
                i = end;
                continue;
            }
            _ if test_only => {
                i = skip_item(&toks, i);
                test_only = false;
                continue;
            }
            Tok::Punct('{') => depth += 1,
            Tok::Punct('}') => {
                depth -= 1;
                if inline.last() == Some(&depth) {
                    inline.pop();
                    module.pop();
                }
            }
            Tok::Ident(kw) if kw == "mod" => {
                if let Some(name) = ident(toks.get(i + 1)) {
                    match toks.get(i + 2) {
                        Some(Tok::Punct(';')) => {
                            let inner_path = module[file_module.len()..].to_vec();
                            scan.mods.push((inner_path, name.to_string()));
                        }
                        Some(Tok::Punct('{')) => {
                            module.push(name.to_string());
                            inline.push(depth);
                            depth += 1;
                            i += 3;
                            continue;
                        }
                        _ => {}
                    }
                }
            }
            Tok::Ident(kw) if kw == "use" => {
                let start = i + 1;
                let (base, at) = match path_base(&toks, start, &module) {
                    Some(b) => b,
                    // `use x::..`: a child module here (or at the root, a top-level one), or
                    // another crate, whose name is then no module of this crate.
                    None => (module.clone(), start),
                };
                let mut leaves = Vec::new();
                let end = use_tree(&toks, at, &base, &mut leaves);
                for (path, bound) in leaves {
                    if module.is_empty() && bound != "*" {
                        scan.root_uses.insert(bound, path.clone());
                    }
                    scan.paths.push((path, written(&toks[start..end])));
                }
                i = end;
                continue;
            }
            Tok::Ident(kw)
                if matches!(kw.as_str(), "crate" | "super" | "self")
                    && toks.get(i + 1) == Some(&Tok::PathSep)
                    && (i == 0 || toks[i - 1] != Tok::PathSep) =>
            {
                if let Some((mut path, mut at)) = path_base(&toks, i, &module) {
                    while let Some(seg) = ident(toks.get(at)) {
                        path.push(seg.to_string());
                        if toks.get(at + 1) != Some(&Tok::PathSep) {
                            at += 1;
                            break;
                        }
                        at += 2;
                    }
                    scan.paths.push((path, written(&toks[i..at])));
                    i = at;
                    continue;
                }
            }
            _ => {}
        }
        i += 1;
    }
    scan
}

fn written(toks: &[Tok]) -> String {
    toks.iter()
        .map(|t| match t {
            Tok::Ident(s) => s.clone(),
            Tok::PathSep => "::".into(),
            Tok::Punct(c) => c.to_string(),
            Tok::Other => "_".into(),
        })
        .collect()
}

/// One module-to-module use, with the file and path that make it.
#[derive(Debug, Clone)]
struct Edge {
    file: PathBuf,
    path: String,
}

/// The graph of a crate's top-level modules: `graph[a][b]` is one place where `a` uses `b`.
type Graph = BTreeMap<String, BTreeMap<String, Edge>>;

/// Builds the module graph of the crate whose root file is `root`; `read` gives a file's text or
/// `None` when it does not exist.
fn module_graph(root: &Path, read: &dyn Fn(&Path) -> Option<String>) -> Result<Graph, String> {
    let root_src = read(root).ok_or_else(|| format!("{}: cannot read", root.display()))?;
    let root_scan = scan(&root_src, &[]);
    // Each file of the tree with its module path.
    let mut files: Vec<(PathBuf, Vec<String>, FileScan)> = Vec::new();
    let mut pending: Vec<(PathBuf, String, Vec<String>)> = Vec::new();
    let children = |file: &Path, module: &[String], scan: &FileScan| {
        // `mod.rs`, `lib.rs`, `main.rs` own their directory; `x.rs` owns `x/`.
        let stem = file.file_stem().and_then(|s| s.to_str()).unwrap_or("");
        let parent = file.parent().unwrap_or(Path::new(""));
        let own = if module.is_empty() || stem == "mod" {
            parent.to_path_buf()
        } else {
            parent.join(stem)
        };
        let mut out = Vec::new();
        for (inner, name) in &scan.mods {
            let d = inner.iter().fold(own.clone(), |d, s| d.join(s));
            let mut m = module.to_vec();
            m.extend(inner.iter().cloned());
            m.push(name.clone());
            let (a, b) = (d.join(format!("{name}.rs")), d.join(name).join("mod.rs"));
            let found = [&a, &b]
                .into_iter()
                .find_map(|p| Some((p.clone(), read(p)?)));
            match found {
                Some((file, src)) => out.push((file, src, m)),
                None => {
                    return Err(format!(
                        "module {}: neither {} nor {} exists",
                        m.join("::"),
                        a.display(),
                        b.display()
                    ))
                }
            }
        }
        Ok(out)
    };
    pending.extend(children(root, &[], &root_scan)?);
    while let Some((file, src, module)) = pending.pop() {
        let s = scan(&src, &module);
        pending.extend(children(&file, &module, &s)?);
        files.push((file, module, s));
    }
    let tops: BTreeSet<String> = files.iter().map(|(_, m, _)| m[0].clone()).collect();
    // The top-level module a path leads to, following the root's re-exports.
    let resolve = |path: &[String]| {
        let mut path = path.to_vec();
        for _ in 0..8 {
            let first = path.first()?;
            if tops.contains(first) {
                return Some(first.clone());
            }
            path = root_scan.root_uses.get(first)?.clone();
        }
        None
    };
    let mut graph: Graph = tops.iter().map(|t| (t.clone(), BTreeMap::new())).collect();
    for (file, module, s) in &files {
        for (path, text) in &s.paths {
            if let Some(to) = resolve(path) {
                if to != module[0] {
                    graph
                        .get_mut(&module[0])
                        .unwrap()
                        .entry(to)
                        .or_insert(Edge {
                            file: file.clone(),
                            path: text.clone(),
                        });
                }
            }
        }
    }
    Ok(graph)
}

/// Every cycle among the graph's modules, one per strongly connected component, each written
/// `a -> b -> a` with the place each step is made.
fn cycles(graph: &Graph) -> Vec<String> {
    // Two modules are in one component when each reaches the other.
    let reach = |from: &str| {
        let mut seen = BTreeSet::new();
        let mut stack = vec![from.to_string()];
        while let Some(v) = stack.pop() {
            for w in graph[&v].keys() {
                if seen.insert(w.clone()) {
                    stack.push(w.clone());
                }
            }
        }
        seen
    };
    let reaches: BTreeMap<&String, BTreeSet<String>> =
        graph.keys().map(|k| (k, reach(k))).collect();
    let mut done = BTreeSet::new();
    let mut out = Vec::new();
    for start in graph.keys() {
        if done.contains(start) || !reaches[start].contains(start) {
            continue;
        }
        let comp: BTreeSet<&String> = graph
            .keys()
            .filter(|k| reaches[start].contains(*k) && reaches[*k].contains(start))
            .collect();
        done.extend(comp.iter().map(|k| (*k).clone()));
        // Shortest way back to `start` inside the component (breadth first).
        let mut prev: BTreeMap<&String, &String> = BTreeMap::new();
        let mut queue = std::collections::VecDeque::from([start]);
        'bfs: while let Some(v) = queue.pop_front() {
            for w in graph[v].keys() {
                if !comp.contains(w) || prev.contains_key(w) {
                    continue;
                }
                prev.insert(w, v);
                if w == start {
                    break 'bfs;
                }
                queue.push_back(w);
            }
        }
        let mut steps = vec![start];
        let mut v = prev[start];
        while v != start {
            steps.push(v);
            v = prev[v];
        }
        steps.push(start);
        steps.reverse();
        let mut text = format!(
            "{{{}}}: {start}",
            comp.iter()
                .map(|s| s.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        );
        for pair in steps.windows(2) {
            let e = &graph[pair[0]][pair[1]];
            text += &format!(" -> {} ({}: {})", pair[1], e.file.display(), e.path);
        }
        out.push(text);
    }
    out
}

fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The crate roots of the workspace: the root package's `src/lib.rs` and `src/main.rs` and each
/// member's `src/lib.rs` (or `main.rs`), named by member folder.
fn crate_roots() -> Vec<(String, PathBuf)> {
    let root = workspace_root();
    let manifest = std::fs::read_to_string(root.join("Cargo.toml")).unwrap();
    let members = manifest
        .lines()
        .find_map(|l| l.trim().strip_prefix("members = ["))
        .expect("Cargo.toml lists the workspace members on one line");
    let mut out = vec![
        ("tquant (lib)".to_string(), root.join("src/lib.rs")),
        ("tquant (bin)".to_string(), root.join("src/main.rs")),
    ];
    for m in members.trim_end_matches(']').split(',') {
        let m = m.trim().trim_matches('"');
        if m.is_empty() {
            continue;
        }
        let lib = root.join(m).join("src/lib.rs");
        let main = root.join(m).join("src/main.rs");
        out.push((m.to_string(), if lib.exists() { lib } else { main }));
    }
    out
}

fn crate_cycles(name: &str, root: &Path) -> Vec<String> {
    let mut graph = module_graph(root, &|p| std::fs::read_to_string(p).ok())
        .unwrap_or_else(|e| panic!("{name}: {e}"));
    let ws = workspace_root();
    for edge in graph.values_mut().flat_map(|m| m.values_mut()) {
        if let Ok(rel) = edge.file.strip_prefix(&ws) {
            edge.file = rel.to_path_buf();
        }
    }
    cycles(&graph)
        .into_iter()
        .map(|c| format!("{name}: {c}"))
        .collect()
}

fn in_memory(files: &[(&str, &str)]) -> Graph {
    let files: BTreeMap<PathBuf, String> = files
        .iter()
        .map(|(p, s)| (PathBuf::from(p), s.to_string()))
        .collect();
    module_graph(Path::new("src/lib.rs"), &|p| files.get(p).cloned()).unwrap()
}

fn uses(graph: &Graph, from: &str) -> Vec<String> {
    graph[from].keys().cloned().collect()
}

#[test]
fn module_cycle_check_finds_a_cycle() {
    let graph = in_memory(&[
        ("src/lib.rs", "mod a;\nmod b;\nmod c;\npub use c::Thing;\n"),
        ("src/a.rs", "use crate::{b::X, c};\npub struct Y;\n"),
        ("src/b/mod.rs", "mod inner;\n"),
        // A grouped import through a crate-root re-export, two levels down.
        ("src/b/inner.rs", "use super::super::{Thing as T, a::Y};\n"),
        ("src/c.rs", "pub struct Thing;\n"),
    ]);
    assert_eq!(uses(&graph, "a"), ["b", "c"]);
    assert_eq!(uses(&graph, "b"), ["a", "c"]);
    assert_eq!(uses(&graph, "c"), Vec::<String>::new());
    let found = cycles(&graph);
    assert_eq!(found.len(), 1, "{found:?}");
    assert!(
        found[0].starts_with("{a, b}: a -> b (src/a.rs: crate::{b::X,c}) -> a (src/b/inner.rs:"),
        "{}",
        found[0]
    );
}

#[test]
fn module_cycle_check_skips_tests_comments_and_own_paths() {
    let graph = in_memory(&[
        ("src/lib.rs", "mod a;\nmod b;\n#[cfg(test)]\nmod testing;\n"),
        (
            "src/a.rs",
            concat!(
                "//! Uses [`crate::b`] in a comment only.\n",
                "mod x { fn f() { super::y::g(); self::h(); } fn h() {} }\n",
                "mod y { pub fn g() { let s = \"crate::b::f\"; let c = '{'; } }\n",
                "/* crate::b::f /* nested */ crate::b */\n",
                "#[cfg(test)]\n#[allow(unused)]\nmod tests { use crate::b::f; }\n",
                "#[cfg(test)]\nfn helper() -> [u8; 2] { crate::b::f(); [0; 2] }\n",
                "fn after() -> r#\"crate::b\"# {}\n",
            ),
        ),
        ("src/b.rs", "pub fn f() { crate::a::after(); }\n"),
    ]);
    assert_eq!(uses(&graph, "a"), Vec::<String>::new());
    assert_eq!(uses(&graph, "b"), ["a"]);
    assert!(!graph.contains_key("testing"));
    assert!(cycles(&graph).is_empty());
}

#[test]
fn module_cycle_check_reports_a_missing_module_file() {
    let files: BTreeMap<PathBuf, String> = [(PathBuf::from("src/lib.rs"), "mod gone;".to_string())]
        .into_iter()
        .collect();
    let err = module_graph(Path::new("src/lib.rs"), &|p| files.get(p).cloned()).unwrap_err();
    assert_eq!(
        err,
        "module gone: neither src/gone.rs nor src/gone/mod.rs exists"
    );
}

#[test]
fn crate_modules_have_no_use_cycle() {
    let roots = crate_roots();
    assert!(roots.len() >= 8, "{roots:?}");
    let found: Vec<String> = roots
        .iter()
        .flat_map(|(name, root)| crate_cycles(name, root))
        .collect();
    assert!(found.is_empty(), "module use cycles:\n{}", found.join("\n"));
}
