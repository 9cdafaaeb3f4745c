//! Ids and names. Newtypes keep them from being mixed up, and their alphabets keep them
//! safe in paths, labels, URLs and SQL.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Identifies one build (one package for one target). Sorts by creation time.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct BuildId(String);

impl BuildId {
    /// A fresh id: creation time in milliseconds, then random bits against collisions.
    pub fn generate() -> Self {
        let millis = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis())
            .unwrap_or_default();
        let salt: u32 = rand::random();
        BuildId(format!("{millis:013x}-{salt:08x}"))
    }

    /// Accepts ids made by [`BuildId::generate`] or by an operator (letters, digits, `-`, `_`).
    pub fn parse(s: &str) -> Result<Self, InvalidName> {
        check_name(s, "build id").map(|()| BuildId(s.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for BuildId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The name of a build environment, as written in the configuration.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct TargetName(String);

impl TargetName {
    pub fn parse(s: &str) -> Result<Self, InvalidName> {
        check_name(s, "target name").map(|()| TargetName(s.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for TargetName {
    type Error = InvalidName;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        TargetName::parse(&s)
    }
}

impl From<TargetName> for String {
    fn from(t: TargetName) -> String {
        t.0
    }
}

impl fmt::Display for TargetName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {what} `{value}`: use 1 to 64 letters, digits, `.`, `_` or `-`, not starting with `.` or `-`")]
pub struct InvalidName {
    pub what: &'static str,
    pub value: String,
}

/// Names end up in paths, container labels and URLs, so they are kept to a safe alphabet.
fn check_name(s: &str, what: &'static str) -> Result<(), InvalidName> {
    let ok = !s.is_empty()
        && s.len() <= 64
        && !s.starts_with(['.', '-'])
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if ok {
        Ok(())
    } else {
        Err(InvalidName {
            what,
            value: s.to_string(),
        })
    }
}

/// A full git object id (40 hex digits for SHA-1, 64 for SHA-256), lower-case.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct CommitSha(String);

impl CommitSha {
    pub fn parse(s: &str) -> Result<Self, InvalidName> {
        let ok = (s.len() == 40 || s.len() == 64) && s.chars().all(|c| c.is_ascii_hexdigit());
        if ok {
            Ok(CommitSha(s.to_ascii_lowercase()))
        } else {
            Err(InvalidName {
                what: "commit id",
                value: s.to_string(),
            })
        }
    }

    /// All zeros: what forges send as `before` of a new branch or `after` of a deletion.
    pub fn is_zero(&self) -> bool {
        self.0.bytes().all(|b| b == b'0')
    }

    pub fn short(&self) -> &str {
        &self.0[..12]
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for CommitSha {
    type Error = InvalidName;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        CommitSha::parse(&s)
    }
}

impl From<CommitSha> for String {
    fn from(c: CommitSha) -> String {
        c.0
    }
}

impl fmt::Display for CommitSha {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Name, epoch, version and release of a source package, as read from its SRPM header.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Nevr {
    pub name: String,
    pub epoch: Option<u32>,
    pub version: String,
    pub release: String,
}

impl Nevr {
    /// The `name-version-release` form used for result directories (epoch left out, like rpm).
    pub fn nvr(&self) -> String {
        format!("{}-{}-{}", self.name, self.version, self.release)
    }

    /// Parses the line written by `rpm -qp --qf '%{NAME}\t%{EPOCH}\t%{VERSION}\t%{RELEASE}'`.
    pub fn parse_query_line(line: &str) -> Option<Nevr> {
        let mut it = line.trim().split('\t');
        let name = it.next()?.to_string();
        let epoch = it.next()?;
        let version = it.next()?.to_string();
        let release = it.next()?.to_string();
        if name.is_empty() || version.is_empty() || release.is_empty() {
            return None;
        }
        let safe = |s: &str| !s.contains(['/', '\0']) && s != "." && s != "..";
        if !(safe(&name) && safe(&version) && safe(&release)) {
            return None;
        }
        Some(Nevr {
            name,
            epoch: epoch.parse().ok(),
            version,
            release,
        })
    }
}

impl fmt::Display for Nevr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.epoch {
            Some(e) => write!(f, "{}-{}:{}-{}", self.name, e, self.version, self.release),
            None => f.write_str(&self.nvr()),
        }
    }
}

/// Which forge a repository lives on: the key of the forge registry, of webhook routes
/// (`/webhooks/<forge>`) and the prefix of a [`RepoId`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ForgeKind {
    GitHub,
    Gerrit,
    /// A repository named on the command line (`packetary build --git`): no forge is told.
    Local,
}

impl ForgeKind {
    pub const ALL: [ForgeKind; 3] = [ForgeKind::GitHub, ForgeKind::Gerrit, ForgeKind::Local];

    pub fn as_str(self) -> &'static str {
        match self {
            ForgeKind::GitHub => "github",
            ForgeKind::Gerrit => "gerrit",
            ForgeKind::Local => "local",
        }
    }

    pub fn parse(s: &str) -> Option<ForgeKind> {
        ForgeKind::ALL.into_iter().find(|f| f.as_str() == s)
    }

    /// Whether the forge ignores case in repository names (GitHub: `Acme/Pkgs` is
    /// `acme/pkgs`); Gerrit's project names are case-sensitive.
    pub fn names_ignore_case(self) -> bool {
        matches!(self, ForgeKind::GitHub)
    }
}

impl fmt::Display for ForgeKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A repository on a forge: `<forge>:<path>`, the path of any depth (`github:owner/name`,
/// `gerrit:openstack/fuel/specs`, GitLab subgroups). Each path segment is kept to a safe
/// alphabet because it ends up in paths, URLs and SQL parameters.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct RepoId {
    forge: ForgeKind,
    /// `forge:path`, kept whole so that `as_str` needs no allocation.
    full: String,
}

/// Deeper paths than this are not repositories any forge makes.
const MAX_REPO_DEPTH: usize = 16;

impl RepoId {
    /// A repository at `path` on `forge`; `path` is `/`-separated, at least one segment.
    pub fn new(forge: ForgeKind, path: &str) -> Result<Self, InvalidName> {
        let bad = || InvalidName {
            what: "repository",
            value: path.to_string(),
        };
        let segments: Vec<&str> = path.split('/').collect();
        if segments.len() > MAX_REPO_DEPTH
            || segments
                .iter()
                .any(|s| check_name(s, "repository path segment").is_err())
        {
            return Err(bad());
        }
        Ok(RepoId {
            forge,
            full: format!("{forge}:{path}"),
        })
    }

    /// Whether this repository is `pattern`: `forge:path`, or `forge:prefix/*` for every
    /// repository under a prefix; names compared as the forge compares them (GitHub
    /// ignores case).
    pub fn matches(&self, pattern: &str) -> bool {
        let fold = |s: &str| {
            if self.forge.names_ignore_case() {
                s.to_ascii_lowercase()
            } else {
                s.to_string()
            }
        };
        let (name, pattern) = (fold(&self.full), fold(pattern));
        match pattern.strip_suffix("/*") {
            Some(prefix) => name
                .strip_prefix(prefix)
                .is_some_and(|rest| rest.starts_with('/')),
            None => pattern == name,
        }
    }

    /// Whether some repository could match both patterns (`forge:path` or
    /// `forge:prefix/*`), names compared as their forge compares them: a release fed by
    /// `github:acme/*` is fed by the private `github:Acme/secret`. A pattern that names no
    /// repository overlaps everything (deny when unsure).
    pub fn patterns_overlap(a: &str, b: &str) -> bool {
        // One repository each pattern matches: itself, or one just under its prefix.
        let probe = |p: &str| match p.strip_suffix("/*") {
            Some(prefix) => RepoId::parse(&format!("{prefix}/x")).ok(),
            None => RepoId::parse(p).ok(),
        };
        match (probe(a), probe(b)) {
            (Some(ra), Some(rb)) => ra.matches(b) || rb.matches(a),
            _ => true,
        }
    }

    /// Parses `forge:path` (as stored and shown).
    pub fn parse(s: &str) -> Result<Self, InvalidName> {
        let (forge, path) = s
            .split_once(':')
            .and_then(|(f, p)| Some((ForgeKind::parse(f)?, p)))
            .ok_or_else(|| InvalidName {
                what: "repository (forge:path)",
                value: s.to_string(),
            })?;
        RepoId::new(forge, path)
    }

    /// A GitHub repository from its `owner/name`, which has exactly two segments.
    pub fn github(full_name: &str) -> Result<Self, InvalidName> {
        if full_name.split('/').count() != 2 {
            return Err(InvalidName {
                what: "GitHub repository (owner/name)",
                value: full_name.to_string(),
            });
        }
        RepoId::new(ForgeKind::GitHub, full_name)
    }

    pub fn forge(&self) -> ForgeKind {
        self.forge
    }

    /// The path on its forge, without the forge prefix: `owner/name` on GitHub.
    pub fn path(&self) -> &str {
        &self.full[self.forge.as_str().len() + 1..]
    }

    pub fn as_str(&self) -> &str {
        &self.full
    }
}

impl TryFrom<String> for RepoId {
    type Error = InvalidName;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        RepoId::parse(&s)
    }
}

impl From<RepoId> for String {
    fn from(r: RepoId) -> String {
        r.full
    }
}

impl fmt::Display for RepoId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.full)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_reject_path_tricks() {
        assert!(TargetName::parse("fedora-43_x86.64").is_ok());
        for bad in [
            "",
            "../x",
            "a/b",
            ".hidden",
            "-flag",
            "sp ace",
            &"x".repeat(65),
        ] {
            assert!(TargetName::parse(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn build_ids_are_unique_and_valid() {
        let a = BuildId::generate();
        let b = BuildId::generate();
        assert_ne!(a, b);
        assert!(BuildId::parse(a.as_str()).is_ok());
    }

    #[test]
    fn repo_ids() {
        let r = RepoId::github("Codertocat/Hello-World").expect("valid");
        assert_eq!(r.as_str(), "github:Codertocat/Hello-World");
        assert_eq!(
            (r.forge(), r.path()),
            (ForgeKind::GitHub, "Codertocat/Hello-World")
        );
        assert_eq!(RepoId::parse(r.as_str()), Ok(r));
        let g = RepoId::parse("gerrit:openstack/fuel/specs").expect("any depth");
        assert_eq!(
            (g.forge(), g.path()),
            (ForgeKind::Gerrit, "openstack/fuel/specs")
        );
        for bad in [
            "",
            "a",
            "a/b",
            "github:",
            "github:a//b",
            "github:../x",
            "github:a/..",
            "github:a/ b",
            "svn:a/b",
        ] {
            assert!(RepoId::parse(bad).is_err(), "{bad:?} accepted");
        }
        for bad in ["a", "a/b/c", "../x"] {
            assert!(
                RepoId::github(bad).is_err(),
                "{bad:?} accepted as a GitHub repository"
            );
        }
    }

    #[test]
    fn commit_ids() {
        let c = CommitSha::parse(&"A".repeat(40)).expect("valid");
        assert_eq!(c.as_str(), "a".repeat(40));
        assert!(CommitSha::parse(&"0".repeat(40)).expect("valid").is_zero());
        assert!(CommitSha::parse("abc").is_err());
        assert!(CommitSha::parse(&"g".repeat(40)).is_err());
    }

    #[test]
    fn nevr_from_rpm_query() {
        let n = Nevr::parse_query_line("hello\t(none)\t1.0\t3.fc43\n").expect("parses");
        assert_eq!(n.nvr(), "hello-1.0-3.fc43");
        assert_eq!(n.epoch, None);
        let n = Nevr::parse_query_line("x\t2\t1\t1").expect("parses");
        assert_eq!(n.to_string(), "x-2:1-1");
        assert!(Nevr::parse_query_line("x\t(none)\t..\t1").is_none());
        assert!(Nevr::parse_query_line("garbage").is_none());
    }

    /// Issue 22 (M4): which release patterns reach a private repository.
    #[test]
    fn patterns_overlap_as_their_forge_compares_names() {
        let o = RepoId::patterns_overlap;
        assert!(o("github:acme/*", "github:Acme/secret"));
        assert!(o("github:acme/secret", "github:ACME/*"));
        assert!(o("github:acme/*", "github:acme/team/*"));
        assert!(o("github:acme/team/*", "github:acme/*"));
        assert!(o("gerrit:fuel/specs", "gerrit:fuel/specs"));
        assert!(!o("gerrit:Fuel/specs", "gerrit:fuel/specs"));
        assert!(!o("github:acme/*", "github:acmecorp/*"));
        assert!(!o("github:acme/pkgs", "gerrit:acme/pkgs"));
        assert!(!o("github:acme/x", "github:acme/x/*"));
        assert!(o("nonsense", "github:acme/x"));
    }
}
