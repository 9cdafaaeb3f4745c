//! Package formats: which files a build leaves are its source package and which its binary
//! packages, and how a directory of binary packages becomes a repository that later builds
//! install from. The executor, the queue and the pages ask a [`Format`] instead of looking
//! at file suffixes themselves.
//!
//! RPM is the only format today. Debian source packages would add a variant here (chosen by
//! a `dpkg` backend), a driver in `executor/backend/<format>.rs` beside rpmbuild's and Mock's, a
//! recipe oracle beside `spec` (what `rpmspec` answers for a spec, `dpkg-source` for a
//! `debian/` directory) and a layout in `plan/layout.rs`.

pub mod rpm;

use std::path::Path;

use serde::Serialize;

use crate::config::Backend;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    Rpm,
}

impl Format {
    /// The format a backend builds.
    pub fn of(backend: Backend) -> Format {
        match backend {
            Backend::Rpmbuild | Backend::Mock => Format::Rpm,
        }
    }

    /// Whether `file_name` is any package of this format (what a build's results hold).
    pub fn is_package(self, file_name: &str) -> bool {
        match self {
            Format::Rpm => file_name.len() > ".rpm".len() && file_name.ends_with(".rpm"),
        }
    }

    /// Whether `file_name` is a source package (an SRPM).
    pub fn is_source(self, file_name: &str) -> bool {
        match self {
            Format::Rpm => file_name.ends_with(".src.rpm"),
        }
    }

    /// Whether `file_name` is a binary package, what a repository serves to later builds.
    pub fn is_binary(self, file_name: &str) -> bool {
        self.is_package(file_name) && !self.is_source(file_name)
    }

    /// The command, run in the target's image, that makes `dir` a repository of the binary
    /// packages in it.
    pub fn index_command(self, dir: &str) -> Vec<String> {
        match self {
            Format::Rpm => vec!["createrepo_c".into(), "--quiet".into(), dir.into()],
        }
    }

    /// The media type a package is served with.
    pub fn content_type(self) -> &'static str {
        match self {
            Format::Rpm => "application/x-rpm",
        }
    }

    /// The format of a package file, by its name.
    pub fn of_file(path: &Path) -> Option<Format> {
        let name = path.file_name()?.to_str()?;
        [Format::Rpm].into_iter().find(|f| f.is_package(name))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rpm_files() {
        let f = Format::of(Backend::Mock);
        assert!(f.is_source("a-1-1.src.rpm") && !f.is_binary("a-1-1.src.rpm"));
        assert!(f.is_binary("a-1-1.noarch.rpm") && !f.is_source("a-1-1.noarch.rpm"));
        assert!(!f.is_package(".rpm") && !f.is_package("a.spec"));
        assert_eq!(
            Format::of_file(Path::new("x/a-1-1.x86_64.rpm")),
            Some(Format::Rpm)
        );
        assert_eq!(Format::of_file(Path::new("x/a.tar.gz")), None);
    }
}
