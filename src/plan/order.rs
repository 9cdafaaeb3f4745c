//! Build order inside one plan: a package whose BuildRequires another plan package
//! provides is built after it. Versions are not compared (a mismatch shows up as a failed
//! dependency install, with rpm's own message); file requirements are not matched.

use std::collections::{BTreeMap, BTreeSet};

use super::layout::PackageId;

/// The capability names in one BuildRequires entry: `foo-devel >= 2` → `foo-devel`,
/// `(a >= 1 or pkgconfig(b))` → `a`, `pkgconfig(b)`.
pub fn requirement_names(dep: &str) -> Vec<String> {
    let dep = dep.trim();
    if !dep.starts_with('(') {
        return dep
            .split_whitespace()
            .next()
            .map(|s| vec![s.to_string()])
            .unwrap_or_default();
    }
    // A rich dependency: drop the boolean operators and the versions after comparisons.
    let mut names = Vec::new();
    let mut skip_next = false;
    for tok in dep.split_whitespace() {
        let t = trim_parens(tok);
        if skip_next {
            skip_next = false;
            continue;
        }
        match t {
            "" | "and" | "or" | "if" | "else" | "with" | "without" | "unless" => {}
            "<" | "<=" | "=" | "==" | ">" | ">=" => skip_next = true,
            name => names.push(name.to_string()),
        }
    }
    names
}

/// Strips the grouping parentheses of a rich dependency, keeping those of `pkgconfig(x)`.
fn trim_parens(tok: &str) -> &str {
    let mut t = tok.trim_start_matches('(');
    while t.ends_with(')') && t.matches('(').count() < t.matches(')').count() {
        t = &t[..t.len() - 1];
    }
    t
}

/// The capability a Provides line names: `foo(x86-64) = 1.0-1` → `foo(x86-64)`.
pub fn provide_name(p: &str) -> &str {
    p.split_whitespace().next().unwrap_or("")
}

/// What the orderer needs of each package.
#[derive(Debug, Clone, Default)]
pub struct Node {
    pub build_requires: Vec<String>,
    pub provides: Vec<String>,
}

/// The result: each package's stage (0 first) and the plan packages it waits for, or a
/// cycle message for packages that cannot be ordered.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Ordering {
    pub stage: BTreeMap<PackageId, usize>,
    pub depends_on: BTreeMap<PackageId, Vec<PackageId>>,
    pub cycles: BTreeMap<PackageId, String>,
}

pub fn order(nodes: &BTreeMap<PackageId, Node>) -> Ordering {
    let mut provider: BTreeMap<&str, BTreeSet<&PackageId>> = BTreeMap::new();
    for (id, n) in nodes {
        for p in &n.provides {
            provider.entry(provide_name(p)).or_default().insert(id);
        }
    }
    let mut deps: BTreeMap<&PackageId, BTreeSet<&PackageId>> = BTreeMap::new();
    for (id, n) in nodes {
        let set = deps.entry(id).or_default();
        for br in &n.build_requires {
            for name in requirement_names(br) {
                if let Some(ps) = provider.get(name.as_str()) {
                    set.extend(ps.iter().filter(|p| **p != id));
                }
            }
        }
    }
    let mut out = Ordering::default();
    for (id, d) in &deps {
        out.depends_on
            .insert((*id).clone(), d.iter().map(|p| (*p).clone()).collect());
    }
    // Kahn's algorithm by levels; whatever is left waits on a cycle.
    let mut left: BTreeMap<&PackageId, BTreeSet<&PackageId>> = deps.clone();
    let mut level = 0;
    loop {
        let ready: Vec<&PackageId> = left
            .iter()
            .filter(|(_, d)| d.is_empty())
            .map(|(id, _)| *id)
            .collect();
        if ready.is_empty() {
            break;
        }
        for id in &ready {
            left.remove(id);
            out.stage.insert((*id).clone(), level);
        }
        for d in left.values_mut() {
            for id in &ready {
                d.remove(id);
            }
        }
        level += 1;
    }
    for id in left.keys() {
        let msg = match find_cycle(id, &left) {
            Some(c) if c.contains(id) => format!(
                "dependency cycle: {}\n  fix: break it (bootstrap one package with a conditional BuildRequires), or build them in separate changes",
                c.iter().chain(c.first()).map(|p| p.as_str()).collect::<Vec<_>>().join(" → ")
            ),
            Some(c) => format!(
                "depends on a dependency cycle: {}",
                c.iter().chain(c.first()).map(|p| p.as_str()).collect::<Vec<_>>().join(" → ")
            ),
            None => "depends on a package that cannot be ordered".to_string(),
        };
        out.cycles.insert((*id).clone(), msg);
    }
    out
}

/// A cycle reachable from `start` among the unordered packages (each has a dependency left).
fn find_cycle<'a>(
    start: &'a PackageId,
    left: &BTreeMap<&'a PackageId, BTreeSet<&'a PackageId>>,
) -> Option<Vec<&'a PackageId>> {
    let mut path: Vec<&PackageId> = vec![start];
    let mut cur = start;
    loop {
        let next = left.get(cur)?.iter().next()?;
        if let Some(pos) = path.iter().position(|p| p == next) {
            return Some(path[pos..].to_vec());
        }
        path.push(next);
        cur = next;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(br: &[&str], prov: &[&str]) -> Node {
        Node {
            build_requires: br.iter().map(|s| s.to_string()).collect(),
            provides: prov.iter().map(|s| s.to_string()).collect(),
        }
    }

    fn id(s: &str) -> PackageId {
        PackageId::new(s)
    }

    #[test]
    fn names_of_requirements() {
        assert_eq!(requirement_names("foo-devel >= 2.0"), ["foo-devel"]);
        assert_eq!(
            requirement_names("pkgconfig(glib-2.0)"),
            ["pkgconfig(glib-2.0)"]
        );
        assert_eq!(
            requirement_names("(a >= 1 or pkgconfig(b))"),
            ["a", "pkgconfig(b)"]
        );
        assert_eq!(provide_name("lib(x86-64) = 1-1"), "lib(x86-64)");
    }

    #[test]
    fn dependencies_come_first() {
        let mut n = BTreeMap::new();
        n.insert(
            id("app"),
            node(&["gcc", "libfoo-devel >= 1"], &["app = 1-1"]),
        );
        n.insert(
            id("libfoo"),
            node(&["gcc"], &["libfoo = 1-1", "libfoo-devel = 1-1"]),
        );
        n.insert(id("other"), node(&[], &["other = 1"]));
        let o = order(&n);
        assert_eq!(o.stage[&id("libfoo")], 0);
        assert_eq!(o.stage[&id("other")], 0);
        assert_eq!(o.stage[&id("app")], 1);
        assert_eq!(o.depends_on[&id("app")], [id("libfoo")]);
        assert!(o.cycles.is_empty());
    }

    #[test]
    fn cycles_are_reported() {
        let mut n = BTreeMap::new();
        n.insert(id("a"), node(&["b"], &["a"]));
        n.insert(id("b"), node(&["a"], &["b"]));
        n.insert(id("c"), node(&["a"], &["c"]));
        n.insert(id("d"), node(&[], &["d"]));
        let o = order(&n);
        assert_eq!(o.stage.len(), 1);
        assert!(o.cycles[&id("a")].contains("a → b → a"), "{:?}", o.cycles);
        assert!(
            o.cycles[&id("c")].starts_with("depends on a dependency cycle"),
            "{:?}",
            o.cycles
        );
    }
}
