//! Domain types shared by every stage. Newtypes keep ids from being mixed up.

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
}
