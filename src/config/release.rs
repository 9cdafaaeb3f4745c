//! `[releases.NAME]`: which branches publish into which targets' package repositories, and
//! how many snapshots of each repository are kept.

use std::collections::BTreeMap;
use std::fmt;

use serde::Deserialize;

use super::{ConfigError, Target};
use crate::model::{InvalidName, TargetName};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRelease {
    #[serde(default)]
    branches: Vec<String>,
    #[serde(default)]
    targets: Vec<String>,
    keep_snapshots: Option<i64>,
    repositories: Option<Vec<String>>,
}

/// A release's name: a directory under `<data_dir>/repos/` and a part of URLs, so it keeps
/// to the same alphabet as target names; `changes` is taken by the per-change repositories
/// and `stages` by the repositories of a change's earlier stages.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ReleaseName(String);

impl ReleaseName {
    pub fn parse(s: &str) -> Result<ReleaseName, BadReleaseName> {
        TargetName::parse(s)?;
        if s == "changes" || s == "stages" {
            return Err(BadReleaseName::Reserved);
        }
        Ok(ReleaseName(s.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Why a release name is not taken.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BadReleaseName {
    #[error(transparent)]
    Invalid(#[from] InvalidName),
    #[error("`changes` and `stages` are reserved for the per-change repositories")]
    Reserved,
}

impl fmt::Display for ReleaseName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A checked `[releases.NAME]`.
#[derive(Debug, Clone)]
pub struct Release {
    pub name: ReleaseName,
    /// Branch names (without `refs/heads/`) whose pushes publish into this release.
    pub branches: Vec<String>,
    pub targets: Vec<TargetName>,
    /// Snapshots kept per target (older ones are pruned unless a kept build used them).
    pub keep_snapshots: usize,
    /// The repositories whose pushes feed the release (`forge:path` or `forge:prefix/*`);
    /// empty: every repository the service acts for (warned about at start).
    pub repositories: Vec<String>,
}

impl Release {
    /// Whether pushes of `repo` publish into this release (and its builds install from it).
    pub fn fed_by(&self, repo: &crate::model::RepoId) -> bool {
        self.repositories.is_empty() || self.repositories.iter().any(|p| repo.matches(p))
    }
}

pub(super) fn parse_releases(
    raw: BTreeMap<String, RawRelease>,
    targets: &BTreeMap<TargetName, Target>,
    invalid: &dyn Fn(&str, String, &str) -> ConfigError,
) -> Result<BTreeMap<ReleaseName, Release>, ConfigError> {
    let mut out = BTreeMap::new();
    let mut branch_owner: BTreeMap<String, String> = BTreeMap::new();
    for (name, r) in raw {
        let key = |k: &str| format!("releases.{name}.{k}");
        let rname = ReleaseName::parse(&name).map_err(|e| {
            invalid(
                &format!("releases.{name}"),
                e.to_string(),
                "rename the [releases.NAME] table (letters, digits, `.`, `_`, `-`)",
            )
        })?;
        if r.branches.is_empty() {
            return Err(invalid(
                &key("branches"),
                "is empty or missing: no push would publish into this release".into(),
                "list the branches whose pushes publish, e.g. branches = [\"main\"]",
            ));
        }
        for b in &r.branches {
            let b = b.strip_prefix("refs/heads/").unwrap_or(b);
            if b.is_empty() || b.contains(['*', ' ', '\n']) {
                return Err(invalid(
                    &key("branches"),
                    format!("`{b}` is not a branch name"),
                    "write branch names as git shows them, e.g. \"main\" or \"stable/2.0\"",
                ));
            }
            if let Some(other) = branch_owner.insert(b.to_string(), name.clone()) {
                return Err(invalid(
                    &key("branches"),
                    format!("branch `{b}` is also a branch of release `{other}`"),
                    "give each branch to one release only",
                ));
            }
        }
        if r.targets.is_empty() {
            return Err(invalid(
                &key("targets"),
                "is empty or missing: the release would have no repository".into(),
                &format!(
                    "list the targets to publish for, among: {}",
                    names(targets.keys())
                ),
            ));
        }
        let mut ts = Vec::new();
        for t in &r.targets {
            let tn = TargetName::parse(t)
                .ok()
                .filter(|tn| targets.contains_key(tn))
                .ok_or_else(|| {
                    invalid(
                        &key("targets"),
                        format!("names `{t}`, which is not a target of this file"),
                        &format!("use one of: {}", names(targets.keys())),
                    )
                })?;
            if !ts.contains(&tn) {
                ts.push(tn);
            }
        }
        let keep = r.keep_snapshots.unwrap_or(10);
        if !(1..=100_000).contains(&keep) {
            return Err(invalid(
                &key("keep_snapshots"),
                format!("{keep} is not a number of snapshots to keep"),
                "use at least 1 (the default is 10)",
            ));
        }
        let repositories = r.repositories.unwrap_or_default();
        for p in &repositories {
            let whole = p.strip_suffix("/*").unwrap_or(p);
            if crate::model::RepoId::parse(whole).is_err() {
                return Err(invalid(
                    &key("repositories"),
                    format!("`{p}` is not a repository"),
                    "write `forge:path` or `forge:prefix/*`, e.g. \"github:acme/pkgs\" or \"gerrit:fuel/*\"",
                ));
            }
        }
        out.insert(
            rname.clone(),
            Release {
                name: rname,
                branches: r
                    .branches
                    .iter()
                    .map(|b| b.strip_prefix("refs/heads/").unwrap_or(b).to_string())
                    .collect(),
                targets: ts,
                keep_snapshots: keep as usize,
                repositories,
            },
        );
    }
    Ok(out)
}

fn names<'a>(it: impl Iterator<Item = &'a TargetName>) -> String {
    it.map(|t| t.as_str()).collect::<Vec<_>>().join(", ")
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use crate::config::Config;

    const BASE: &str = "[targets.t]\nbackend = \"rpmbuild\"\nimage = \"x\"\n";

    fn err(extra: &str) -> String {
        Config::parse(&format!("{BASE}{extra}"), Some(Path::new("test.toml")))
            .expect_err("should be rejected")
            .to_string()
    }

    #[test]
    fn releases_parse_with_defaults() {
        let c = Config::parse(
            &format!("{BASE}[releases.stable]\nbranches = [\"main\", \"refs/heads/v2\"]\ntargets = [\"t\"]\n"),
            None,
        )
        .expect("valid");
        let r = c.releases.values().next().expect("one release");
        assert_eq!(r.name.as_str(), "stable");
        assert_eq!(r.branches, ["main", "v2"]);
        assert_eq!(r.keep_snapshots, 10);
        assert!(r.repositories.is_empty());
        let c = Config::parse(
            &format!("{BASE}[releases.stable]\nbranches = [\"main\"]\ntargets = [\"t\"]\nrepositories = [\"github:acme/*\", \"gerrit:fuel-specs\"]\n"),
            None,
        )
        .expect("valid");
        let r = c.releases.values().next().expect("one release");
        let repo = |s: &str| crate::model::RepoId::parse(s).expect("repo");
        assert!(r.fed_by(&repo("github:Acme/pkgs")));
        assert!(r.fed_by(&repo("gerrit:fuel-specs")));
        assert!(!r.fed_by(&repo("github:other/pkgs")));
    }

    #[test]
    fn release_errors_name_file_key_and_fix() {
        let e = err("[releases.stable]\nbranches = [\"main\"]\ntargets = [\"nope\"]\n");
        assert!(
            e.contains("test.toml:6") && e.contains("releases.stable.targets"),
            "{e}"
        );
        assert!(
            e.contains("`nope`") && e.contains("fix: use one of: t"),
            "{e}"
        );
        let e = err("[releases.stable]\ntargets = [\"t\"]\n");
        assert!(
            e.contains("releases.stable.branches") && e.contains("fix:"),
            "{e}"
        );
        let e = err(
            "[releases.stable]\nbranches = [\"main\"]\ntargets = [\"t\"]\nkeep_snapshots = 0\n",
        );
        assert!(
            e.contains("releases.stable.keep_snapshots") && e.contains("at least 1"),
            "{e}"
        );
        let e = err("[releases.changes]\nbranches = [\"main\"]\ntargets = [\"t\"]\n");
        assert!(e.contains("reserved"), "{e}");
        let e = err("[releases.a]\nbranches = [\"main\"]\ntargets = [\"t\"]\n[releases.b]\nbranches = [\"main\"]\ntargets = [\"t\"]\n");
        assert!(e.contains("also a branch of release `a`"), "{e}");
        let e = err("[releases.a]\nbranches = [\"main\"]\ntargets = [\"t\"]\nrepositories = [\"acme/pkgs\"]\n");
        assert!(
            e.contains("releases.a.repositories") && e.contains("forge:path"),
            "{e}"
        );
        let e = err("[releases.a]\nbranchs = [\"main\"]\n");
        assert!(e.contains("did you mean `branches`"), "{e}");
    }
}
