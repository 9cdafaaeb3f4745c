//! Real git repositories for the plan tests, made with libgit2 straight from trees (fast,
//! no working copy), served to the code under test over `file://`.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

use git2::{Oid, Repository};

pub const FILE: u32 = 0o100644;
pub const EXEC: u32 = 0o100755;
pub const LINK: u32 = 0o120000;
pub const SUBMODULE: u32 = 0o160000;

/// One change to a tree: write a file (with a mode) or delete a path (and everything under it).
pub enum Edit<'a> {
    Put(&'a [u8], &'a [u8]),
    PutMode(&'a [u8], &'a [u8], u32),
    Delete(&'a str),
}

pub use Edit::{Delete, Put, PutMode};

pub fn put<'a>(path: &'a str, content: &'a str) -> Edit<'a> {
    Put(path.as_bytes(), content.as_bytes())
}

/// A bare repository in a temporary directory.
pub struct TestRepo {
    pub dir: tempfile::TempDir,
    pub repo: Repository,
}

impl TestRepo {
    pub fn new() -> TestRepo {
        let dir = tempfile::tempdir().expect("tmp");
        let repo = Repository::init_bare(dir.path()).expect("init");
        repo.set_head("refs/heads/main").expect("HEAD");
        TestRepo { dir, repo }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn url(&self) -> String {
        format!("file://{}", self.dir.path().display())
    }

    pub fn tip(&self, branch: &str) -> Option<Oid> {
        self.repo
            .find_reference(&format!("refs/heads/{branch}"))
            .ok()
            .and_then(|r| r.target())
    }

    /// Commits `edits` on top of `parent` (or nothing) and points `refname` at the result.
    pub fn commit_on(&self, refname: &str, parent: Option<Oid>, edits: &[Edit<'_>]) -> Oid {
        let mut idx = git2::Index::new().expect("index");
        let parents: Vec<git2::Commit<'_>> = parent
            .map(|p| self.repo.find_commit(p).expect("parent"))
            .into_iter()
            .collect();
        if let Some(p) = parents.first() {
            idx.read_tree(&p.tree().expect("tree")).expect("read tree");
        }
        for e in edits {
            match e {
                Put(path, content) => self.add(&mut idx, path, content, FILE),
                PutMode(path, content, mode) => self.add(&mut idx, path, content, *mode),
                Delete(prefix) => {
                    let gone: Vec<Vec<u8>> = idx
                        .iter()
                        .map(|e| e.path)
                        .filter(|p| {
                            p == prefix.as_bytes() || p.starts_with(format!("{prefix}/").as_bytes())
                        })
                        .collect();
                    for p in gone {
                        idx.remove_path(Path::new(std::str::from_utf8(&p).expect("utf8")))
                            .expect("remove");
                    }
                }
            }
        }
        let tree = idx.write_tree_to(&self.repo).expect("write tree");
        let tree = self.repo.find_tree(tree).expect("tree");
        let sig = git2::Signature::new(
            "Test",
            "test@example.org",
            &git2::Time::new(1_700_000_000, 0),
        )
        .expect("sig");
        let refs: Vec<&git2::Commit<'_>> = parents.iter().collect();
        let oid = self
            .repo
            .commit(None, &sig, &sig, "change", &tree, &refs)
            .expect("commit");
        self.repo
            .reference(refname, oid, true, "test")
            .expect("ref");
        oid
    }

    /// Commits on a branch's tip (creating the branch when it does not exist).
    pub fn commit(&self, branch: &str, edits: &[Edit<'_>]) -> Oid {
        let parent = self.tip(branch);
        self.commit_on(&format!("refs/heads/{branch}"), parent, edits)
    }

    /// Starts `branch` at `at`.
    pub fn branch(&self, branch: &str, at: Oid) {
        self.repo
            .reference(&format!("refs/heads/{branch}"), at, true, "branch")
            .expect("branch");
    }

    fn add(&self, idx: &mut git2::Index, path: &[u8], content: &[u8], mode: u32) {
        let id = if mode == SUBMODULE {
            Oid::from_str(std::str::from_utf8(content).expect("submodule commit id")).expect("oid")
        } else {
            self.repo.blob(content).expect("blob")
        };
        idx.add(&git2::IndexEntry {
            ctime: git2::IndexTime::new(0, 0),
            mtime: git2::IndexTime::new(0, 0),
            dev: 0,
            ino: 0,
            mode,
            uid: 0,
            gid: 0,
            file_size: content.len() as u32,
            id,
            flags: 0,
            flags_extended: 0,
            path: path.to_vec(),
        })
        .expect("add");
    }
}

/// A minimal spec that rpm accepts; `extra` goes before `%description`.
pub fn spec(name: &str, extra: &str) -> String {
    format!(
        "Name: {name}\nVersion: 1.0\nRelease: 1\nSummary: {name}\nLicense: MIT\nBuildArch: noarch\nAutoReqProv: no\n{extra}\n%description\n{name}\n\n%install\nmkdir -p %{{buildroot}}/usr/share/{name}\necho {name} > %{{buildroot}}/usr/share/{name}/{name}.txt\n\n%files\n/usr/share/{name}\n"
    )
}

pub fn oid(s: Oid) -> String {
    s.to_string()
}

/// Options every test planner uses: two targets known, one default.
pub fn options() -> packetary::plan::PlanOptions {
    packetary::plan::PlanOptions {
        default_branch: Some("refs/heads/main".into()),
        default_targets: vec!["bookworm-rpmbuild".into()],
        known_targets: vec!["bookworm-rpmbuild".into(), "other".into()],
    }
}

/// Plans without rpm (selection only).
pub fn select(repo: &TestRepo, change: packetary::plan::Change) -> packetary::plan::Plan {
    packetary::plan::select(&repo.repo, "test", &change, &options())
}

pub fn push(before: Option<Oid>, after: Oid) -> packetary::plan::Change {
    packetary::plan::Change::Push {
        before: before.map(|b| b.to_string()),
        after: after.to_string(),
    }
}

pub fn review(base: &str, head: Oid) -> packetary::plan::Change {
    packetary::plan::Change::Review {
        base: base.to_string(),
        head: head.to_string(),
    }
}

pub fn ids(plan: &packetary::plan::Plan) -> Vec<String> {
    let mut v: Vec<String> = plan.packages.iter().map(|p| p.id.to_string()).collect();
    v.sort();
    v
}

pub fn target_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}
