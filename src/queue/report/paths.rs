//! Pages never show where the service keeps things on its disk: an error text that names a
//! path under the data directory (or one of the service's temporary directories) shows it
//! relative to the build it belongs to (`<results>/logs/build.log`, `<work>/src/x.spec`)
//! or under a name (`<data_dir>/mirrors/...`, `<tmp>/packetary-plan-...`). Paths are
//! matched as given and as resolved (a data directory reached through a symbolic link).

use std::path::Path;

use crate::queue::results_root;
use crate::store::BuildRow;

/// The service's directories a page's texts may name, each with the name it is shown as.
#[derive(Clone)]
pub struct DiskPaths {
    /// The data directory as given and as resolved (when it differs).
    data_dirs: Vec<String>,
    /// (absolute prefix, shown as, whether it may end inside a name), longest first.
    prefixes: Vec<(String, &'static str, bool)>,
}

/// A directory as a prefix: its path without a trailing `/`, if absolute and not the root
/// (which would match too much).
fn prefix_of(p: &Path) -> Option<String> {
    let s = p.to_string_lossy();
    let s = s.trim_end_matches('/');
    (s.len() > 1 && s.starts_with('/')).then(|| s.to_string())
}

impl DiskPaths {
    /// What texts must not show of `data_dir` (resolved once here: [`DiskPaths::of_build`]
    /// adds a build's directories without touching the disk).
    pub fn new(data_dir: &Path) -> DiskPaths {
        let mut data_dirs: Vec<String> = vec![];
        for d in [Some(data_dir.to_path_buf()), data_dir.canonicalize().ok()]
            .into_iter()
            .flatten()
        {
            if let Some(s) = prefix_of(&d).filter(|s| !data_dirs.contains(s)) {
                data_dirs.push(s);
            }
        }
        let tmp = std::env::temp_dir();
        let mut p = DiskPaths {
            data_dirs: data_dirs.clone(),
            prefixes: vec![],
        };
        for t in [Some(tmp.clone()), tmp.canonicalize().ok()]
            .into_iter()
            .flatten()
        {
            if let Some(t) = prefix_of(&t) {
                p.add(format!("{t}/packetary-"), "<tmp>/packetary-", true);
            }
        }
        for d in data_dirs {
            p.add(d, "<data_dir>", false);
        }
        p
    }

    /// These paths and those of `b`'s own directories, shown relative to it: its results
    /// (`<results>`) and its work tree (`<work>`).
    pub fn of_build(&self, b: &BuildRow) -> DiskPaths {
        let mut p = self.clone();
        if let Some(r) = b.result_dir.as_deref().and_then(prefix_of) {
            // Resolved too, when it lies under the data directory as given.
            let resolved: Vec<String> = self
                .data_dirs
                .iter()
                .skip(1)
                .filter_map(|c| {
                    r.strip_prefix(self.data_dirs[0].as_str())
                        .filter(|rest| rest.starts_with('/'))
                        .map(|rest| format!("{c}{rest}"))
                })
                .collect();
            p.add(r, "<results>", false);
            for r in resolved {
                p.add(r, "<results>", false);
            }
        }
        for d in &self.data_dirs {
            let root = Path::new(d);
            if let Some(r) = prefix_of(&results_root(root, &b.id)) {
                p.add(r, "<results>", false);
            }
            if let Some(w) = prefix_of(&root.join("work").join(b.id.as_str())) {
                p.add(w, "<work>", false);
            }
        }
        p
    }

    fn add(&mut self, prefix: String, name: &'static str, open: bool) {
        if !self.prefixes.iter().any(|(p, _, _)| *p == prefix) {
            self.prefixes.push((prefix, name, open));
            self.prefixes
                .sort_by_key(|(p, _, _)| std::cmp::Reverse(p.len()));
        }
    }

    /// `text` with each of the directories replaced by its name, where it starts a path (the
    /// temporary directories' prefix, `packetary-`, matches any name it begins).
    pub fn hide(&self, text: &str) -> String {
        let mut out = String::with_capacity(text.len());
        let mut i = 0;
        let mut prev: Option<char> = None;
        while i < text.len() {
            let rest = &text[i..];
            let at_start = prev.is_none_or(|c| !is_path_char(c));
            let hit = at_start
                .then(|| {
                    self.prefixes.iter().find(|(p, _, open)| {
                        rest.starts_with(p.as_str())
                            && (*open
                                || rest[p.len()..]
                                    .chars()
                                    .next()
                                    .is_none_or(|c| c == '/' || !is_path_char(c)))
                    })
                })
                .flatten();
            if let Some((p, name, _)) = hit {
                out.push_str(name);
                i += p.len();
                prev = Some('>');
                continue;
            }
            let c = rest.chars().next().unwrap_or(' ');
            out.push(c);
            i += c.len_utf8();
            prev = Some(c);
        }
        out
    }
}

/// A character of a file name, or the separator: what may come right before or after a
/// directory's path without it ending there.
fn is_path_char(c: char) -> bool {
    c.is_alphanumeric() || matches!(c, '.' | '_' | '-' | '/' | '+' | '~' | '@')
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{BuildId, BuildState, CommitSha, RepoId, TargetName};
    use crate::store::{Millis, TriggerId};

    fn build(id: &BuildId, result_dir: Option<std::path::PathBuf>) -> BuildRow {
        BuildRow {
            seq: 1,
            id: id.clone(),
            trigger_id: TriggerId(1),
            repo: RepoId::github("o/r").expect("repo"),
            clone_url: String::new(),
            commit: CommitSha::parse(&"a".repeat(40)).expect("sha"),
            ref_name: "refs/heads/main".into(),
            pr_number: None,
            package: "x".into(),
            spec_path: "x.spec".into(),
            target: TargetName::parse("t").expect("target"),
            state: BuildState::Failed,
            attempts: 1,
            next_attempt_at: Millis(0),
            container_id: None,
            created_at: Millis(0),
            started_at: None,
            finished_at: None,
            result_dir,
            phase: None,
            message: None,
            stage: 0,
        }
    }

    #[test]
    fn data_dir_paths_become_names_and_build_paths_relative() {
        let data = Path::new("/var/lib/packetary");
        let p = DiskPaths::new(data);
        assert_eq!(
            p.hide("fetch /var/lib/packetary/mirrors/o/r.git: corrupt"),
            "fetch <data_dir>/mirrors/o/r.git: corrupt"
        );
        assert_eq!(p.hide("'/var/lib/packetary'"), "'<data_dir>'");
        // Not a path of the data directory, nor inside another path.
        assert_eq!(
            p.hide("/var/lib/packetary2/x /x/var/lib/packetary/y /var/tmp/rpm-tmp.1"),
            "/var/lib/packetary2/x /x/var/lib/packetary/y /var/tmp/rpm-tmp.1"
        );
        let tmp = std::env::temp_dir().join("packetary-plan-1/a.spec");
        assert_eq!(
            p.hide(&format!("cannot read {}", tmp.display())),
            "cannot read <tmp>/packetary-plan-1/a.spec"
        );
        assert_eq!(p.hide("ünïcode → ok"), "ünïcode → ok");
    }

    #[test]
    fn a_build_s_own_directories_are_shown_relative_to_it() {
        let data = Path::new("/srv/p");
        let id = BuildId::generate();
        let text = format!(
            "link /srv/p/work/{id}/src: gone; /srv/p/results/{id}/t/x-1-1/logs/build.log; /srv/p/results/other"
        );
        let b = build(&id, Some(format!("/srv/p/results/{id}/t/x-1-1").into()));
        let p = DiskPaths::new(data).of_build(&b);
        assert_eq!(
            p.hide(&text),
            "link <work>/src: gone; <results>/logs/build.log; <data_dir>/results/other"
        );
    }
}
