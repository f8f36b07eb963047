//! The module tree is the architecture: this reads every `crate::` and `super::` path in
//! `src/` and checks that each arrow runs down the layers listed in `lib.rs`, and that
//! no two modules of one parent import each other, directly or around a loop. (Which
//! modules may *name* the database and the cache is kept by privacy, by the compiler.)

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The crate's top-level modules, top to bottom. A module may use the modules of any
/// layer below its own, never one of its own layer or above.
const LAYERS: &[&[&str]] = &[
    &["cli"],
    &["startup"],
    &["dashboard"],
    &["http", "server"],
    &["service"],
    &["view", "redis_link"],
    &[
        "config",
        "domain",
        "metrics",
        "logging",
        "http_client",
        "test_hooks",
        "allocator",
        "access_line",
    ],
    &["error_chain", "stable_hash"],
];

type Module = Vec<String>;

#[test]
fn every_import_runs_down_the_layers() {
    let edges = module_edges(&crate_source());
    let layer_of = |name: &str| LAYERS.iter().position(|layer| layer.contains(&name));
    let mut wrong = Vec::new();
    for (from, to) in &edges {
        let (Some(from_top), Some(to_top)) = (from.first(), to.first()) else {
            continue;
        };
        if from_top == to_top {
            continue;
        }
        match (layer_of(from_top), layer_of(to_top)) {
            (Some(a), Some(b)) if a < b => {}
            (Some(_), Some(_)) => wrong.push(format!("{} -> {}", from.join("::"), to.join("::"))),
            _ => wrong.push(format!(
                "{} or {} is in no layer: add it to LAYERS",
                from_top, to_top
            )),
        }
    }
    assert!(
        wrong.is_empty(),
        "arrows running up or across:\n{}",
        wrong.join("\n")
    );
}

#[test]
fn no_two_sibling_modules_import_each_other() {
    let edges = module_edges(&crate_source());
    // Each arrow, seen from the parent the two ends share: between two of its children.
    let mut siblings: BTreeMap<Module, BTreeSet<(String, String)>> = BTreeMap::new();
    for (from, to) in &edges {
        let shared = from.iter().zip(to).take_while(|(a, b)| a == b).count();
        // An arrow to an ancestor (its interface) or into a descendant is not between
        // siblings.
        if shared < from.len() && shared < to.len() {
            siblings
                .entry(from[..shared].to_vec())
                .or_default()
                .insert((from[shared].clone(), to[shared].clone()));
        }
    }
    let mut cycles = Vec::new();
    for (parent, arrows) in &siblings {
        if let Some(cycle) = find_cycle(arrows) {
            let parent = if parent.is_empty() {
                "crate".to_owned()
            } else {
                parent.join("::")
            };
            cycles.push(format!("in {parent}: {}", cycle.join(" -> ")));
        }
    }
    assert!(cycles.is_empty(), "import cycles:\n{}", cycles.join("\n"));
}

/// The reader must see real arrows, or the two tests above prove nothing.
#[test]
fn the_reader_finds_the_arrows_it_should() {
    let edges = module_edges(&crate_source());
    let has = |from: &str, to: &str| {
        let split = |path: &str| path.split("::").map(str::to_owned).collect::<Module>();
        edges.contains(&(split(from), split(to)))
    };
    assert!(has("http::view_cache", "service::views"), "{edges:?}");
    assert!(has("service::cache::redis", "redis_link"));
    assert!(has("service::cache::keys", "service::cache::values"));
    assert!(has("view::ready", "view::envelope"));
    let (_, source) = parse_paths("use crate::{a::{b, c::D}, e};", "use crate::".len());
    assert_eq!(
        source,
        [vec!["a", "b"], vec!["a", "c", "D"], vec!["e"]]
            .map(|p| p.into_iter().map(str::to_owned).collect::<Vec<_>>())
    );
}

/// Each module of `src/` (the binary's `main.rs` aside) and its source.
fn crate_source() -> BTreeMap<Module, String> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut modules = BTreeMap::new();
    let mut folders = vec![root.clone()];
    while let Some(folder) = folders.pop() {
        for entry in std::fs::read_dir(&folder).expect("src/ is readable") {
            let path: PathBuf = entry.expect("src/ is readable").path();
            if path.is_dir() {
                folders.push(path);
                continue;
            }
            if path.extension().is_none_or(|ext| ext != "rs") || path.ends_with("main.rs") {
                continue;
            }
            let relative = path.strip_prefix(&root).expect("under src/");
            let mut module: Module = relative
                .with_extension("")
                .iter()
                .map(|part| part.to_string_lossy().into_owned())
                .collect();
            if matches!(module.last().map(String::as_str), Some("mod" | "lib")) {
                module.pop();
            }
            let text = std::fs::read_to_string(&path).expect("source is UTF-8");
            modules.insert(module, code_only(&text));
        }
    }
    modules
}

/// The text without comments, string literals and unit tests (which may use anything).
fn code_only(text: &str) -> String {
    let text = text.split("#[cfg(test)]\nmod tests").next().unwrap_or(text);
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '/' if chars.peek() == Some(&'/') => {
                for c in chars.by_ref() {
                    if c == '\n' {
                        out.push('\n');
                        break;
                    }
                }
            }
            'r' if matches!(chars.peek(), Some('"' | '#'))
                && !out.ends_with(|p: char| p.is_alphanumeric() || p == '_') =>
            {
                let mut hashes = 0;
                while chars.peek() == Some(&'#') {
                    chars.next();
                    hashes += 1;
                }
                if chars.next() != Some('"') {
                    out.push('r');
                    continue;
                }
                let closing: String = std::iter::once('"')
                    .chain(std::iter::repeat_n('#', hashes))
                    .collect();
                let mut seen = String::new();
                for c in chars.by_ref() {
                    seen.push(c);
                    if seen.ends_with(&closing) {
                        break;
                    }
                }
                out.push_str("\"\"");
            }
            '"' => {
                let mut escaped = false;
                for c in chars.by_ref() {
                    match c {
                        '\\' if !escaped => escaped = true,
                        '"' if !escaped => break,
                        _ => escaped = false,
                    }
                }
                out.push_str("\"\"");
            }
            // A char literal such as '"' must not open a string; lifetimes pass as is.
            '\'' => {
                let ahead: String = chars.clone().take(3).collect();
                if ahead.starts_with("\\") {
                    for c in chars.by_ref() {
                        if c == '\'' {
                            break;
                        }
                    }
                } else if ahead.chars().nth(1) == Some('\'') {
                    chars.next();
                    chars.next();
                } else {
                    out.push('\'');
                }
            }
            _ => out.push(c),
        }
    }
    out
}

/// Every arrow from a module to the deepest module a `crate::`/`super::` path of it names.
fn module_edges(source: &BTreeMap<Module, String>) -> BTreeSet<(Module, Module)> {
    let mut edges = BTreeSet::new();
    for (module, text) in source {
        let mut rest = text.as_str();
        while let Some(at) = next_anchor(rest) {
            let (anchor, after) = (&rest[at.0..at.1], at.1);
            let base: Module = if anchor.trim_start_matches('$').starts_with("crate") {
                Vec::new()
            } else {
                module[..module.len().saturating_sub(1)].to_vec()
            };
            let (used, paths) = parse_paths(rest, after);
            for path in paths {
                let full: Module = base.iter().cloned().chain(path).collect();
                let target = (0..=full.len())
                    .rev()
                    .map(|n| full[..n].to_vec())
                    .find(|prefix| source.contains_key(prefix))
                    .unwrap_or_default();
                if &target != module {
                    edges.insert((module.clone(), target));
                }
            }
            rest = &rest[after + used.max(1)..];
        }
    }
    edges
}

/// Where the next `crate::`, `$crate::` or `super::` starts and where its `::` ends.
fn next_anchor(text: &str) -> Option<(usize, usize)> {
    let mut from = 0;
    loop {
        let found = ["crate::", "super::"]
            .iter()
            .filter_map(|anchor| Some((text[from..].find(anchor)? + from, anchor.len())))
            .min()?;
        let (start, len) = found;
        let before = text[..start].chars().next_back();
        let starts_a_word = before.is_none_or(|c| !(c.is_alphanumeric() || c == '_'));
        if starts_a_word {
            let start = if before == Some('$') {
                start - 1
            } else {
                start
            };
            return Some((start, found.0 + len));
        }
        from = start + len;
    }
}

/// The paths written at `text[at..]`: `a::b::C`, or a `{…}` group, nested or not.
/// Returns how many bytes were read, and the paths.
fn parse_paths(text: &str, at: usize) -> (usize, Vec<Vec<String>>) {
    let rest = &text[at..];
    let mut prefix = Vec::new();
    let mut read = 0;
    loop {
        let tail = &rest[read..];
        let trimmed = tail.trim_start();
        read += tail.len() - trimmed.len();
        let word: String = trimmed
            .chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_')
            .collect();
        if word.is_empty() {
            break;
        }
        let after_word = &trimmed[word.len()..];
        let after_spaces = after_word.trim_start();
        prefix.push(word.clone());
        if after_spaces.starts_with("::") {
            read += word.len() + (after_word.len() - after_spaces.len()) + 2;
        } else {
            read += word.len();
            return (read, vec![prefix]);
        }
    }
    let tail = &rest[read..];
    if !tail.starts_with('{') {
        return (read, vec![prefix]);
    }
    let mut paths = Vec::new();
    let mut depth = 0;
    let mut start = 1;
    for (i, c) in tail.char_indices() {
        match c {
            '{' => depth += 1,
            '}' | ',' if depth == 1 => {
                let part = &tail[start..i];
                if !part.trim().is_empty() && part.trim() != "self" {
                    let (_, inner) = parse_paths(part, 0);
                    paths.extend(
                        inner
                            .into_iter()
                            .map(|path| prefix.iter().cloned().chain(path).collect()),
                    );
                } else {
                    paths.push(prefix.clone());
                }
                start = i + 1;
                if c == '}' {
                    return (read + i + 1, paths);
                }
            }
            '}' => depth -= 1,
            _ => {}
        }
    }
    (read + tail.len(), paths)
}

/// A loop among `arrows`, as the modules it passes through, if there is one.
fn find_cycle(arrows: &BTreeSet<(String, String)>) -> Option<Vec<String>> {
    let nodes: BTreeSet<&String> = arrows.iter().flat_map(|(a, b)| [a, b]).collect();
    for start in nodes {
        let mut stack = vec![vec![start.clone()]];
        let mut seen = BTreeSet::new();
        while let Some(path) = stack.pop() {
            let last = path.last().cloned().unwrap_or_default();
            for (_, next) in arrows.iter().filter(|(from, _)| *from == last) {
                if next == start {
                    let mut cycle = path.clone();
                    cycle.push(next.clone());
                    return Some(cycle);
                }
                if seen.insert(next.clone()) {
                    let mut longer = path.clone();
                    longer.push(next.clone());
                    stack.push(longer);
                }
            }
        }
    }
    None
}
