//! `.packetary.toml`: what a repository says about itself (layout, which packages, targets,
//! lookaside). Read from a commit's tree, never from a working copy; for a review it is
//! read at the base commit, so a proposed change cannot widen what it may build.

use serde::{Deserialize, Serialize};

/// The file's name at the repository's root.
pub const CONFIG_FILE: &str = ".packetary.toml";

/// How packages are laid out; `Auto` recognises each of the others from the tree.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum LayoutChoice {
    #[default]
    Auto,
    /// A directory with one spec and its patches and sources.
    Dir,
    /// `SPECS/*.spec` with `SOURCES/`.
    Rpmbuild,
    /// A directory of specs without sources: each spec is its own package.
    Specs,
    /// One package: spec at the root, tarballs listed in `sources`, fetched from a lookaside.
    DistGit,
}

/// The checked contents of `.packetary.toml`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RepoConfig {
    #[serde(default)]
    pub layout: LayoutChoice,
    /// Globs selecting packages by their path (directory, or spec for one-spec packages);
    /// empty: every package. `*` stays within a path component, `**` crosses them.
    #[serde(default)]
    pub packages: Vec<String>,
    /// Globs of packages never built.
    #[serde(default)]
    pub exclude: Vec<String>,
    /// Targets to build for; empty: the service's default targets.
    #[serde(default)]
    pub targets: Vec<String>,
    /// Lookaside URL template for dist-git tarballs, with `{name}`, `{filename}`,
    /// `{hashtype}` and `{hash}` (Fedora: `https://src.fedoraproject.org/repo/pkgs/{name}/{filename}/{hashtype}/{hash}/{filename}`).
    #[serde(default)]
    pub lookaside: Option<String>,
    /// Per-package target lists: the first override whose globs match wins.
    #[serde(default, rename = "override")]
    pub overrides: Vec<Override>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Override {
    pub packages: Vec<String>,
    pub targets: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RepoConfigError {
    #[error("{file}:{line}: unknown key `{key}`\n  fix: {fix}")]
    UnknownKey {
        file: &'static str,
        line: usize,
        key: String,
        fix: String,
    },
    #[error("{file}:{line}: key `{key}`: {problem}")]
    Invalid {
        file: &'static str,
        line: usize,
        key: String,
        problem: String,
    },
}

impl RepoConfig {
    /// Parses the file's text. Unknown keys are refused with their dotted name and the
    /// valid ones, so a typo never silently changes what gets built.
    pub fn parse(text: &str) -> Result<RepoConfig, RepoConfigError> {
        let line_of = |span: Option<std::ops::Range<usize>>| {
            span.map(|r| text[..r.start.min(text.len())].matches('\n').count() + 1)
                .unwrap_or(1)
        };
        let de = toml::de::Deserializer::parse(text).map_err(|e| RepoConfigError::Invalid {
            file: CONFIG_FILE,
            line: line_of(e.span()),
            key: "(syntax)".into(),
            problem: e.message().trim().to_string(),
        })?;
        let cfg: RepoConfig = serde_path_to_error::deserialize(de).map_err(|e| {
            let path = e.path().to_string();
            let inner = e.inner();
            let message = inner.message().trim().to_string();
            let line = line_of(inner.span());
            match unknown_field(&message) {
                Some((field, valid)) => RepoConfigError::UnknownKey {
                    file: CONFIG_FILE,
                    line,
                    key: if path == "." || path.is_empty() || path.ends_with(&field) {
                        if path == "." || path.is_empty() {
                            field
                        } else {
                            path
                        }
                    } else {
                        format!("{path}.{field}")
                    },
                    fix: format!("remove it; valid keys here: {}", valid.join(", ")),
                },
                None => RepoConfigError::Invalid {
                    file: CONFIG_FILE,
                    line,
                    key: if path == "." {
                        "(top level)".into()
                    } else {
                        path
                    },
                    problem: message,
                },
            }
        })?;
        for (i, o) in cfg.overrides.iter().enumerate() {
            if o.packages.is_empty() {
                return Err(RepoConfigError::Invalid {
                    file: CONFIG_FILE,
                    line: 1,
                    key: format!("override[{i}].packages"),
                    problem: "must name at least one package glob".into(),
                });
            }
        }
        if let Some(url) = &cfg.lookaside {
            if !(url.starts_with("https://")
                || url.starts_with("http://")
                || url.starts_with("file://"))
            {
                return Err(RepoConfigError::Invalid {
                    file: CONFIG_FILE,
                    line: text
                        .lines()
                        .position(|l| l.trim_start().starts_with("lookaside"))
                        .map_or(1, |i| i + 1),
                    key: "lookaside".into(),
                    problem: format!("`{url}` is not an http(s):// or file:// URL"),
                });
            }
        }
        Ok(cfg)
    }

    /// Whether the package at `id` (a directory or a spec path) is one this repository builds.
    pub fn selects(&self, id: &str) -> bool {
        let included = self.packages.is_empty() || self.packages.iter().any(|g| glob_covers(g, id));
        included && !self.exclude.iter().any(|g| glob_covers(g, id))
    }

    /// The target names for a package: its override's, else the file's, else `defaults`.
    pub fn targets_for(&self, id: &str, defaults: &[String]) -> Vec<String> {
        if let Some(o) = self
            .overrides
            .iter()
            .find(|o| o.packages.iter().any(|g| glob_covers(g, id)))
        {
            return o.targets.clone();
        }
        if self.targets.is_empty() {
            defaults.to_vec()
        } else {
            self.targets.clone()
        }
    }
}

fn unknown_field(message: &str) -> Option<(String, Vec<String>)> {
    let rest = message.strip_prefix("unknown field `")?;
    let (field, rest) = rest.split_once('`')?;
    let valid = rest
        .split('`')
        .skip(1)
        .step_by(2)
        .map(str::to_string)
        .collect();
    Some((field.to_string(), valid))
}

/// Whether `glob` matches `path` or one of its parent directories (so `rpms/*` selects the
/// package `rpms/foo` and also the spec `rpms/foo/foo.spec`).
pub fn glob_covers(glob: &str, path: &str) -> bool {
    let glob = glob.trim_matches('/');
    if glob.is_empty() || glob == "**" {
        return true;
    }
    let mut p = path;
    loop {
        if glob_match(glob, p) {
            return true;
        }
        match p.rfind('/') {
            Some(i) => p = &p[..i],
            None => return false,
        }
    }
}

/// `*` and `?` within one component, `**` across components.
pub fn glob_match(glob: &str, path: &str) -> bool {
    let g: Vec<&str> = glob.split('/').collect();
    let p: Vec<&str> = if path.is_empty() {
        vec![]
    } else {
        path.split('/').collect()
    };
    match_parts(&g, &p)
}

fn match_parts(g: &[&str], p: &[&str]) -> bool {
    match g.split_first() {
        None => p.is_empty(),
        Some((&"**", rest)) => (0..=p.len()).any(|i| match_parts(rest, &p[i..])),
        Some((first, rest)) => {
            !p.is_empty()
                && match_component(first.as_bytes(), p[0].as_bytes())
                && match_parts(rest, &p[1..])
        }
    }
}

fn match_component(g: &[u8], s: &[u8]) -> bool {
    match g.split_first() {
        None => s.is_empty(),
        Some((b'*', rest)) => (0..=s.len()).any(|i| match_component(rest, &s[i..])),
        Some((b'?', rest)) => !s.is_empty() && match_component(rest, &s[1..]),
        Some((c, rest)) => s.first() == Some(c) && match_component(rest, &s[1..]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_everything() {
        let c = RepoConfig::parse(
            r#"layout = "dist-git"
packages = ["rpms/*"]
exclude = ["rpms/old-*"]
targets = ["t1"]
lookaside = "https://x/{name}/{filename}/{hashtype}/{hash}/{filename}"
[[override]]
packages = ["rpms/kernel"]
targets = ["t2"]
"#,
        )
        .expect("valid");
        assert_eq!(c.layout, LayoutChoice::DistGit);
        assert!(c.selects("rpms/foo") && c.selects("rpms/foo/foo.spec"));
        assert!(!c.selects("rpms/old-foo") && !c.selects("other/x"));
        assert_eq!(c.targets_for("rpms/kernel", &[]), ["t2"]);
        assert_eq!(c.targets_for("rpms/foo", &[]), ["t1"]);
        assert_eq!(
            RepoConfig::parse("")
                .expect("empty")
                .targets_for("x", &["d".into()]),
            ["d"]
        );
    }

    #[test]
    fn unknown_keys_are_named() {
        let e = RepoConfig::parse("layout = \"dir\"\ntargetz = []\n")
            .expect_err("unknown")
            .to_string();
        assert!(
            e.contains("`targetz`") && e.contains(":2:") && e.contains("targets"),
            "{e}"
        );
        let e = RepoConfig::parse("[[override]]\npackages = [\"a\"]\ntargets = []\nwhen = 1\n")
            .expect_err("unknown")
            .to_string();
        assert!(e.contains("override[0].when"), "{e}");
        let e = RepoConfig::parse("layout = \"flat\"\n")
            .expect_err("bad")
            .to_string();
        assert!(e.contains("layout"), "{e}");
        assert!(RepoConfig::parse("lookaside = \"ftp://x\"").is_err());
    }

    #[test]
    fn globs() {
        assert!(glob_match("rpms/*", "rpms/foo"));
        assert!(!glob_match("rpms/*", "rpms/foo/bar"));
        assert!(glob_match("**/*.spec", "a/b/c.spec"));
        assert!(glob_match("**/*.spec", "c.spec"));
        assert!(glob_match("a/?b", "a/xb"));
        assert!(glob_covers("rpms", "rpms/foo/foo.spec"));
        assert!(!glob_covers("rpm", "rpms/foo"));
    }
}
