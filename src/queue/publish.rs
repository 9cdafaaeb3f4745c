//! The publish step after `finish` (see [`crate::repos`]): a succeeded build of a pull
//! request goes into the change's repository of its target, one of a push to a release's
//! branch into the release's repository; the repositories a build installs from (the
//! release's current snapshot, the change's own repository); per-change repositories
//! removed when the change closes or has not been published into for a while.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::{Indexing, PlannedBuild, PublishInto, QueueError, ReposConfig};
use crate::config::{Release, Target};
use crate::executor::BuildRepo;
use crate::model::{RepoId, TargetName, Trigger};
use crate::repos::{self, Entry, Policy, Published, RepoDir, SnapshotId};
use crate::store::{BuildRow, Store, StoreError};

/// How many snapshots of a change's repository are kept (the newest, and one for a
/// reader still on the one before).
const CHANGE_SNAPSHOTS: usize = 2;

/// What publishing a succeeded build came to.
pub(super) enum PublishOutcome {
    /// Nowhere to publish (a push to a branch of no release), or nothing to index with.
    Nothing,
    /// Published: a few words for the build's message, the repository's label and the
    /// snapshot made (`None`: the same bytes were already there). The ledger records it
    /// when the build ends.
    Done {
        note: String,
        label: String,
        snapshot: Option<String>,
    },
    /// A publishing rule refused the packages: the build fails with this reason.
    Refused(String),
    /// The machine's fault (Docker, disk): retried like any infrastructure fault.
    Fault(String),
}

/// The publisher stage: where a build's packages belong, and the repositories a build
/// installs from. Holds the indexing port and the releases' configuration.
pub(super) struct Publisher {
    pub store: Store,
    pub indexing: Option<Arc<dyn Indexing>>,
    pub data_dir: PathBuf,
    /// Base of the URLs builds reach `/repos/` at; empty: none (the command line's).
    pub repos_url: String,
    pub targets: Arc<BTreeMap<TargetName, Target>>,
    pub repos: ReposConfig,
}

/// The `.repo` file of the change's package repository for `b`'s target, once something
/// was published into it: the link a review's report gives testers.
pub(super) fn change_repo_url(data_dir: &Path, public_url: &str, b: &BuildRow) -> Option<String> {
    let number = b.pr_number?;
    change_repo(data_dir, b, number)?.latest()?;
    Some(format!(
        "{}/repos/changes/{}/{}/{number}/{}.repo",
        public_url.trim_end_matches('/'),
        b.repo.forge(),
        b.repo.path(),
        b.target
    ))
}

/// Where a build's packages go ([`Publisher::destination`]).
enum Destination<'a> {
    /// Its pull request's (or Gerrit change's) own repository.
    Change { dir: RepoDir, number: u64 },
    /// The release its pushed branch feeds.
    Release(&'a Release),
}

fn change_repo(data_dir: &Path, b: &BuildRow, number: u64) -> Option<RepoDir> {
    repos::change_dir(data_dir, &b.repo, number, b.target.as_str()).map(RepoDir::new)
}

impl Publisher {
    /// The release a push of `repo` to `branch` publishes into for `target`: one with the
    /// branch and the target that `repo` feeds.
    fn release_of_branch(&self, repo: &RepoId, branch: &str, target: &Target) -> Option<&Release> {
        self.repos.releases.values().find(|r| {
            r.branches.iter().any(|b| b == branch)
                && r.targets.contains(&target.name)
                && r.fed_by(repo)
        })
    }

    /// Whether a succeeded build of `b` has somewhere to be published: its change's
    /// repository, or a release its pushed branch feeds. One that has not is ended at once,
    /// with no record kept first (there is no publication for a restart to finish). Errs
    /// on the side of `true`: a record too many costs a statement, one too few a rebuild.
    pub fn publishes(&self, b: &BuildRow) -> bool {
        self.destination(b).is_some()
    }

    /// Where a succeeded build of `b` is published, with its target: its change's
    /// repository, or the release its pushed branch feeds. `None`: nowhere (no indexing,
    /// an unknown target, a branch that feeds no release).
    fn destination(&self, b: &BuildRow) -> Option<(&Target, Destination<'_>)> {
        self.indexing.as_ref()?;
        let target = self.targets.get(&b.target)?;
        let d = match b.pr_number {
            Some(number) => Destination::Change {
                dir: self.change_repo(b, number)?,
                number,
            },
            None => {
                let branch = b.ref_name.strip_prefix("refs/heads/")?;
                Destination::Release(self.release_of_branch(&b.repo, branch, target)?)
            }
        };
        Some((target, d))
    }

    /// The release a build on `branch` of `repo` publishes into for `target`, with its
    /// label (`<release>/<target>`).
    fn release_label(
        &self,
        repo: &RepoId,
        branch: &str,
        target: &Target,
    ) -> Option<(&Release, String)> {
        let r = self.release_of_branch(repo, branch, target)?;
        Some((r, label_of(r, target)))
    }

    /// A refusal when `package` in the release labelled `label` comes from another
    /// repository than `repo`.
    async fn owned_elsewhere(
        &self,
        label: &str,
        package: &str,
        repo: &RepoId,
    ) -> Result<Option<String>, StoreError> {
        Ok(self
            .store
            .package_owner(label, package, repo)
            .await?
            .map(|owner| {
                format!(
                    "rename the package or change it in {owner}: `{package}` in {label} comes from there\nNot published into {label}. A package name in a release belongs to the repository that first published it; {repo} may not replace what every build of the release installs."
                )
            }))
    }

    /// For a pull request against a release's branch: whether the release would refuse its
    /// packages once merged (other bytes under a published version, a downgrade, a name
    /// another repository owns). `None`: it would take them, or no release is involved.
    async fn merge_refusal(
        &self,
        b: &BuildRow,
        target: &Target,
        packages: &[PathBuf],
    ) -> Result<Option<PublishOutcome>, QueueError> {
        let Some(branch) = self.branch_of(b).await? else {
            return Ok(None);
        };
        let Some((release, label)) = self.release_label(&b.repo, &branch, target) else {
            return Ok(None);
        };
        if let Some(why) = self.owned_elsewhere(&label, &b.package, &b.repo).await? {
            return Ok(Some(PublishOutcome::Refused(why)));
        }
        let dir = RepoDir::new(repos::release_dir(
            &self.data_dir,
            release.name.as_str(),
            target.name.as_str(),
        ));
        let pkgs = packages.to_vec();
        let checked = tokio::task::spawn_blocking(move || dir.check(&pkgs, Policy::Release)).await;
        Ok(match checked {
            Err(e) => Some(PublishOutcome::Fault(format!(
                "checking {label}'s rules: {e}"
            ))),
            Ok(Ok(())) => None,
            Ok(Err(e)) if e.is_refusal() => Some(PublishOutcome::Refused(refusal_in(&label, &e))),
            Ok(Err(e)) => Some(PublishOutcome::Fault(format!(
                "checking {label}'s rules: {e}"
            ))),
        })
    }

    /// The publishing rules a planned build of `t` can be held to before it runs, so that
    /// a build whose packages its release would refuse does not start: a package name
    /// another repository owns there, a version lower than the published one, or the
    /// published version again from another commit (its bytes would differ). One answer
    /// per planned build, `Some` with the refusal (its first line starts with the fix).
    pub async fn refusals_before_build(
        &self,
        t: &Trigger,
        planned: &[PlannedBuild],
    ) -> Result<Vec<Option<String>>, StoreError> {
        let branch = match t.pr_number {
            Some(_) => t.base_ref.as_deref(),
            None => t.ref_name.strip_prefix("refs/heads/"),
        };
        let mut out = Vec::with_capacity(planned.len());
        // Each release's manifest is read once per plan, not once per package.
        let mut newest: BTreeMap<String, BTreeMap<String, Entry>> = BTreeMap::new();
        for p in planned {
            let release = match (&self.indexing, branch, self.targets.get(&p.target)) {
                (Some(_), Some(branch), Some(target)) if p.error.is_none() => {
                    self.release_label(&t.repo, branch, target)
                }
                _ => None,
            };
            let Some((release, label)) = release else {
                out.push(None);
                continue;
            };
            if let Some(why) = self.owned_elsewhere(&label, &p.package, &t.repo).await? {
                out.push(Some(why));
                continue;
            }
            let Some(nevr) = &p.nevr else {
                out.push(None);
                continue;
            };
            let sources = newest.entry(label.clone()).or_insert_with(|| {
                newest_sources(&repos::release_dir(
                    &self.data_dir,
                    release.name.as_str(),
                    p.target.as_str(),
                ))
            });
            let Some(published) = sources.get(&nevr.name) else {
                out.push(None);
                continue;
            };
            let planned_evr = (nevr.epoch, nevr.version.as_str(), nevr.release.as_str());
            let published_evr = (
                published.epoch,
                published.version.as_str(),
                published.release.as_str(),
            );
            let given = repos::nevra(&nevr.name, nevr.epoch, &nevr.version, &nevr.release, "src");
            let why = match crate::repos::evrcmp(planned_evr, published_evr) {
                std::cmp::Ordering::Less => {
                    Some(refusal_in(&label, &repos::downgrade(&given, &published.nevra())))
                }
                std::cmp::Ordering::Equal => self
                    .store
                    .last_publisher_commit(&label, &p.package)
                    .await?
                    .filter(|c| *c != t.head)
                    .map(|c| {
                        format!(
                            "raise Release: {given} is published already, from commit {}\nNot published into {label}. This commit changes the package but not its version; a release never takes other bytes under a published version (whoever installed it would not get the change). Raise the package's Release (or Version).",
                            c.short()
                        )
                    }),
                std::cmp::Ordering::Greater => None,
            };
            out.push(why);
        }
        Ok(out)
    }

    /// The branch a build's packages belong to: the pushed branch, or a pull request's base.
    async fn branch_of(&self, b: &BuildRow) -> Result<Option<String>, StoreError> {
        if b.pr_number.is_some() {
            return self.store.trigger_base_ref(b.trigger_id).await;
        }
        Ok(b.ref_name.strip_prefix("refs/heads/").map(str::to_string))
    }

    fn change_repo(&self, b: &BuildRow, number: u64) -> Option<RepoDir> {
        change_repo(&self.data_dir, b, number)
    }

    /// Publishes a succeeded build's packages (SRPM and RPMs) where they belong.
    pub async fn publish_build(
        &self,
        b: &BuildRow,
        source: &Path,
        binaries: &[PathBuf],
    ) -> Result<PublishOutcome, QueueError> {
        let (Some(indexing), Some((target, destination))) = (&self.indexing, self.destination(b))
        else {
            return Ok(PublishOutcome::Nothing);
        };
        let mut packages = vec![source.to_path_buf()];
        packages.extend(binaries.iter().cloned());
        let data_dir = &self.data_dir;
        let (label, result) = match destination {
            Destination::Change { dir, number } => {
                // What the merge would publish is checked now, so that a pull request that
                // cannot be published once merged is red before the merge, not after.
                if let Some(refused) = self.merge_refusal(b, target, &packages).await? {
                    return Ok(refused);
                }
                let into = PublishInto::Change {
                    dir: &dir,
                    target,
                    keep: CHANGE_SNAPSHOTS,
                };
                let r = indexing.publish(into, &packages).await;
                self.sweep_change_repos();
                (
                    format!(
                        "changes/{}/{}/{number}/{}",
                        b.repo.forge(),
                        b.repo.path(),
                        b.target.as_str()
                    ),
                    r,
                )
            }
            Destination::Release(release) => {
                let label = label_of(release, target);
                // A package name belongs to the repository that first published it here: a
                // push of another repository may not replace what every build installs.
                if let Some(why) = self.owned_elsewhere(&label, &b.package, &b.repo).await? {
                    return Ok(PublishOutcome::Refused(why));
                }
                let dir = repos::release_dir(data_dir, release.name.as_str(), target.name.as_str());
                let protected = self.snapshots_in_use(&dir).await?;
                let into = PublishInto::Release {
                    release,
                    target,
                    protected: &protected,
                };
                let r = indexing.publish(into, &packages).await;
                (label, r)
            }
        };
        Ok(match result {
            Ok(p) => {
                let snapshot = p.snapshot().map(|s| s.as_str().to_string());
                let note = match p {
                    Published::Snapshot { id, .. } => format!("published into {label} ({id})"),
                    Published::Unchanged { .. } => format!("already in {label}"),
                };
                PublishOutcome::Done {
                    note,
                    label,
                    snapshot,
                }
            }
            Err(e) if e.is_refusal() => PublishOutcome::Refused(refusal_in(&label, &e)),
            Err(e) => PublishOutcome::Fault(format!("publishing into {label}: {e}")),
        })
    }

    /// The snapshots of the repository at `dir` that builds in the store used.
    async fn snapshots_in_use(&self, dir: &Path) -> Result<BTreeSet<SnapshotId>, QueueError> {
        let used = self.store.snapshot_locations_in_use().await?;
        Ok(repos::snapshots_named(&used)
            .remove(dir)
            .unwrap_or_default())
    }

    /// The package repositories a build installs from besides its target's: the current
    /// snapshot of its branch's release (by the snapshot's own directory, so the build
    /// records which snapshot it used, and pruning keeps it), and for a pull request the
    /// change's own repository.
    pub async fn published_repos(
        &self,
        b: &BuildRow,
        target: &Target,
    ) -> Result<Vec<BuildRepo>, StoreError> {
        let mut out = Vec::new();
        if let Some(branch) = self.branch_of(b).await? {
            if let Some(release) = self.release_of_branch(&b.repo, &branch, target) {
                let dir = RepoDir::new(repos::release_dir(
                    &self.data_dir,
                    release.name.as_str(),
                    target.name.as_str(),
                ));
                if let Some(id) = dir.latest() {
                    let snap = dir.snapshot_dir(&id);
                    self.store
                        .record_snapshot_use(&b.id, &snap.display().to_string())
                        .await?;
                    out.push(self.served(&format!("release-{}", release.name), &snap));
                }
            }
        }
        if let Some(number) = b.pr_number {
            if let Some(dir) = self.change_repo(b, number) {
                if let Some(id) = dir.latest() {
                    out.push(self.served("change-published", &dir.snapshot_dir(&id)));
                }
            }
        }
        Ok(out)
    }

    /// A repository under `<data_dir>/repos/` as a build gets it: its URL under
    /// `repos_url` (which a build anywhere reaches), and the directory (which an executor
    /// on this host mounts instead). Without a `repos_url`, a `file://` URL for the record.
    pub fn served(&self, name: &str, dir: &Path) -> BuildRepo {
        match repos::served_url(&self.data_dir, &self.repos_url, dir) {
            Some(url) => BuildRepo {
                name: name.to_string(),
                url,
                local: Some(dir.to_path_buf()),
            },
            None => BuildRepo::local_only(name, dir),
        }
    }

    /// A pull request closed: its repositories go (every target's).
    pub fn remove_change_repos(&self, repo: &RepoId, number: u64) {
        let Some(dir) = repos::change_dir(&self.data_dir, repo, number, "x")
            .and_then(|d| d.parent().map(Path::to_path_buf))
        else {
            return;
        };
        if dir.is_dir() {
            match std::fs::remove_dir_all(&dir) {
                Ok(()) => {
                    tracing::info!(%repo, number, "removed the change's package repositories")
                }
                Err(e) => tracing::warn!(%repo, number, "cannot remove {}: {e}", dir.display()),
            }
        }
    }

    /// Removes change repositories not published into for longer than the configured age.
    fn sweep_change_repos(&self) {
        let age = self.repos.change_max_age;
        if age.is_zero() {
            return;
        }
        let root = self.data_dir.join("repos").join("changes");
        for d in repos::stale_change_repos(&root, age) {
            match std::fs::remove_dir_all(&d) {
                Ok(()) => tracing::info!(
                    "removed {}: no publication for {}",
                    d.display(),
                    humantime::format_duration(age)
                ),
                Err(e) => tracing::warn!("cannot remove {}: {e}", d.display()),
            }
        }
    }
}

/// A publishing refusal as a build's message: its first line (which starts with the fix)
/// first, then where it was refused and why.
fn refusal_in(label: &str, e: &repos::PublishError) -> String {
    let text = e.to_string();
    let (first, rest) = text.split_once('\n').unwrap_or((text.as_str(), ""));
    if rest.starts_with("Not published into") {
        return text;
    }
    format!("{first}\nNot published into {label}. {rest}")
        .trim_end()
        .to_string()
}

/// The newest published source package of each name in the latest snapshot of the
/// repository at `dir` (empty when it has none or its manifest cannot be read: the
/// publication itself then says why).
fn newest_sources(dir: &Path) -> BTreeMap<String, Entry> {
    let dir = RepoDir::new(dir);
    let Some(manifest) = dir.latest().and_then(|id| dir.manifest(&id).ok()) else {
        return BTreeMap::new();
    };
    repos::newest_by_name(manifest.packages.iter().filter(|e| e.arch == "src"))
        .into_iter()
        .map(|(name, e)| (name.to_string(), e.clone()))
        .collect()
}

/// The release label of `release` for `target`: `<release>/<target>`, as publications
/// and messages name it.
fn label_of(release: &Release, target: &Target) -> String {
    format!("{}/{}", release.name, target.name)
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use futures_util::future::BoxFuture;

    use super::*;
    use crate::model::{BuildId, BuildState, ChangeKind, CommitSha, Trigger};
    use crate::queue::MakeRepoError;
    use crate::repos::PublishError;
    use crate::store::ledger::{self, BuildEnd};
    use crate::store::{Millis, NewBuild, TriggerState};

    /// Counts publications and answers a new snapshot.
    #[derive(Default)]
    struct Counting(AtomicUsize);

    impl Indexing for Counting {
        fn make_repo(
            &self,
            _: String,
            _: PathBuf,
            _: Vec<PathBuf>,
        ) -> BoxFuture<'static, Result<(), MakeRepoError>> {
            Box::pin(async { Ok(()) })
        }

        fn publish<'a>(
            &'a self,
            _: PublishInto<'a>,
            _: &'a [PathBuf],
        ) -> BoxFuture<'a, Result<Published, PublishError>> {
            self.0.fetch_add(1, Ordering::SeqCst);
            Box::pin(async { Ok(Published::Unchanged { id: None }) })
        }
    }

    fn publisher(store: &Store, dir: &Path, repositories: &str, idx: Arc<Counting>) -> Publisher {
        let c = crate::config::Config::parse(
            &format!("[targets.t]\nbackend = \"rpmbuild\"\nimage = \"x\"\n[releases.stable]\nbranches = [\"main\"]\ntargets = [\"t\"]\n{repositories}"),
            None,
        )
        .expect("config");
        Publisher {
            store: store.clone(),
            indexing: Some(idx),
            data_dir: dir.to_path_buf(),
            repos_url: "http://repos.test:8080".into(),
            targets: Arc::new(c.targets),
            repos: ReposConfig {
                releases: c.releases,
                change_max_age: std::time::Duration::ZERO,
            },
        }
    }

    /// A push of `repo` to main at the commit `head` (repeated).
    fn push(repo: &str, head: char) -> Trigger {
        Trigger {
            repo: RepoId::parse(repo).expect("repo"),
            clone_url: "https://example.invalid/x.git".into(),
            kind: ChangeKind::Push,
            ref_name: "refs/heads/main".into(),
            base: None,
            head: CommitSha::parse(&head.to_string().repeat(40)).expect("sha"),
            pr_number: None,
            base_ref: None,
            from_fork: false,
            sender: "alice".into(),
            only_package: None,
            only_target: None,
        }
    }

    /// Pull request 7 of `repo` against main, its head at `head`.
    fn pull_request(repo: &str, head: char) -> Trigger {
        Trigger {
            kind: ChangeKind::PullRequest,
            ref_name: "refs/pull/7/head".into(),
            pr_number: Some(7),
            base_ref: Some("main".into()),
            ..push(repo, head)
        }
    }

    /// A running build of `hello` from a push of `repo` to main.
    async fn running(store: &Store, repo: &str, head: char) -> BuildRow {
        running_of(store, push(repo, head)).await
    }

    async fn running_of(store: &Store, t: Trigger) -> BuildRow {
        store
            .insert_trigger(&t, TriggerState::New)
            .await
            .expect("trigger");
        let st = store.next_new_trigger().await.expect("read").expect("one");
        let b = NewBuild {
            id: BuildId::generate(),
            package: "hello".into(),
            spec_path: "hello.spec".into(),
            target: crate::model::TargetName::parse("t").expect("t"),
            error: None,
            stage: 0,
        };
        assert!(store.insert_builds(&st, &[b]).await.expect("plan"));
        store
            .claim_next_build(Millis::now())
            .await
            .expect("claim")
            .expect("claimed")
    }

    /// Issue 22 (M4): a push of one repository may not replace a package another
    /// repository publishes into a release (every build installs from it as root).
    #[tokio::test]
    async fn a_package_name_published_by_one_repository_is_refused_from_another() {
        let dir = tempfile::tempdir().expect("tmp");
        let store = Store::open(dir.path()).await.expect("store");
        let idx = Arc::new(Counting::default());
        let p = publisher(&store, dir.path(), "", idx.clone());
        let first = running(&store, "github:acme/pkgs", 'a').await;
        ended_published(&store, &first, "s1").await;

        let same = running(&store, "github:acme/pkgs", 'b').await;
        let got = p.publish_build(&same, Path::new("a.src.rpm"), &[]).await;
        assert!(matches!(got, Ok(PublishOutcome::Done { .. })));
        let other = running(&store, "github:mallory/pkgs", 'c').await;
        match p.publish_build(&other, Path::new("a.src.rpm"), &[]).await {
            Ok(PublishOutcome::Refused(why)) => {
                assert!(
                    why.starts_with("rename the package or change it in github:acme/pkgs: "),
                    "{why}"
                )
            }
            _ => panic!("published from another repository"),
        }
        assert_eq!(idx.0.load(Ordering::SeqCst), 1, "indexed only the owner's");
    }

    /// Issue 22 (M4): a release that names its repositories takes pushes of those only.
    #[tokio::test]
    async fn a_release_takes_pushes_of_the_repositories_it_names() {
        let dir = tempfile::tempdir().expect("tmp");
        let store = Store::open(dir.path()).await.expect("store");
        let idx = Arc::new(Counting::default());
        let p = publisher(
            &store,
            dir.path(),
            "repositories = [\"github:acme/*\"]\n",
            idx.clone(),
        );
        let other = running(&store, "github:mallory/pkgs", 'c').await;
        let got = p.publish_build(&other, Path::new("a.src.rpm"), &[]).await;
        assert!(matches!(got, Ok(PublishOutcome::Nothing)));
        let fed = running(&store, "github:Acme/pkgs", 'd').await;
        let got = p.publish_build(&fed, Path::new("a.src.rpm"), &[]).await;
        assert!(matches!(got, Ok(PublishOutcome::Done { .. })));
        assert_eq!(idx.0.load(Ordering::SeqCst), 1);
    }

    /// A repository a build installs from is named by its URL under `repos_url`, with
    /// its directory for an executor on this host; without a base, a `file://` URL.
    #[tokio::test]
    async fn served_repositories_have_a_url_under_repos_url() {
        let dir = tempfile::tempdir().expect("tmp");
        let store = Store::open(dir.path()).await.expect("store");
        let mut p = publisher(&store, dir.path(), "", Arc::new(Counting::default()));
        let id = BuildId::parse("b1").expect("id");
        let stage = repos::stage_dir(dir.path(), &id);
        let r = p.served("change", &stage);
        assert_eq!(r.url, "http://repos.test:8080/repos/stages/b1/");
        assert_eq!(r.local.as_deref(), Some(stage.as_path()));
        p.repos_url = String::new();
        let r = p.served("change", &stage);
        assert_eq!(r.url, format!("file://{}", stage.display()));
        assert_eq!(r.local.as_deref(), Some(stage.as_path()));
    }

    /// Publishes `packages` into the release `stable` of target `t` as a build of `hello`
    /// at commit `head` of `repo` would have: the snapshot and its publication record.
    async fn published(store: &Store, dir: &Path, repo: &str, head: char, packages: &[PathBuf]) {
        let release = RepoDir::new(repos::release_dir(dir, "stable", "t"));
        let id =
            crate::repos::tests::stage_ok(&release, packages, Policy::Release).expect("a snapshot");
        let b = running(store, repo, head).await;
        ended_published(store, &b, id.as_str()).await;
    }

    /// Ends `b` succeeded with its publication into `stable/t` as `snapshot` recorded.
    async fn ended_published(store: &Store, b: &BuildRow, snapshot: &str) {
        let mut tx = store.tx().await.expect("tx");
        ledger::end(
            &mut tx,
            &BuildEnd {
                id: &b.id,
                state: BuildState::Succeeded,
                message: "built",
                phase: None,
                result_dir: None,
                phases: &[],
                provides: None,
                publication: Some(("stable/t", Some(snapshot))),
            },
        )
        .await
        .expect("end");
        tx.commit().await.expect("commit");
    }

    fn rpm(dir: &Path, version: &str, release: &str, arch: &str, bytes: &str) -> PathBuf {
        std::fs::create_dir_all(dir).expect("mkdir");
        crate::repos::tests::fake_rpm(dir, "hello", None, version, release, arch, bytes)
    }

    /// Issue 23: a pull request against a release's branch is red before the merge when
    /// the release would refuse what it built (here other bytes under the published
    /// version), with the fix first and no path of this host; a raised Release passes.
    #[tokio::test]
    async fn a_pull_request_gets_the_release_s_refusal_before_the_merge() {
        let dir = tempfile::tempdir().expect("tmp");
        let store = Store::open(dir.path()).await.expect("store");
        let idx = Arc::new(Counting::default());
        let p = publisher(&store, dir.path(), "", idx.clone());
        let pk = dir.path().join("pk");
        let src = rpm(&pk, "1.0", "1", "src", "published");
        published(&store, dir.path(), "github:acme/pkgs", 'a', &[src]).await;

        let b = running_of(&store, pull_request("github:acme/pkgs", 'b')).await;
        let unbumped = rpm(&pk.join("b"), "1.0", "1", "src", "changed");
        match p.publish_build(&b, &unbumped, &[]).await {
            Ok(PublishOutcome::Refused(why)) => {
                assert!(
                    why.starts_with(
                        "raise Release: hello-1.0-1.src is published with other contents\nNot published into stable/t."
                    ),
                    "{why}"
                );
                assert!(!why.contains(&*dir.path().to_string_lossy()), "{why}");
            }
            _ => panic!("an unbumped pull request passed"),
        }
        assert_eq!(idx.0.load(Ordering::SeqCst), 0, "nothing published");

        let c = running_of(&store, pull_request("github:acme/pkgs", 'c')).await;
        let down = rpm(&pk.join("c"), "0.9", "1", "src", "older");
        match p.publish_build(&c, &down, &[]).await {
            Ok(PublishOutcome::Refused(why)) => assert!(
                why.starts_with("raise Version or Release: hello-0.9-1.src is lower than the published hello-1.0-1.src"),
                "{why}"
            ),
            _ => panic!("a downgrade passed"),
        }

        let d = running_of(&store, pull_request("github:acme/pkgs", 'd')).await;
        let bumped = rpm(&pk.join("d"), "1.0", "2", "src", "changed");
        let got = p.publish_build(&d, &bumped, &[]).await;
        assert!(matches!(got, Ok(PublishOutcome::Done { .. })));
        assert_eq!(
            idx.0.load(Ordering::SeqCst),
            1,
            "into the change's repository"
        );
    }

    /// Issue 23: what the plan knows (names, versions) is checked before a build starts:
    /// a downgrade, the published version again from another commit, a name another
    /// repository owns. The same commit again (a rebuild) and a raise pass.
    #[tokio::test]
    async fn doomed_builds_are_refused_before_they_start() {
        let dir = tempfile::tempdir().expect("tmp");
        let store = Store::open(dir.path()).await.expect("store");
        let p = publisher(&store, dir.path(), "", Arc::new(Counting::default()));
        let src = rpm(&dir.path().join("pk"), "1.0", "1", "src", "published");
        published(&store, dir.path(), "github:acme/pkgs", 'a', &[src]).await;

        let planned = |version: &str, release: &str| PlannedBuild {
            package: "hello".into(),
            spec_path: "hello.spec".into(),
            target: crate::model::TargetName::parse("t").expect("t"),
            error: None,
            stage: 0,
            nevr: Some(crate::model::Nevr {
                name: "hello".into(),
                epoch: None,
                version: version.into(),
                release: release.into(),
            }),
        };
        let all = [
            planned("0.9", "1"),
            planned("1.0", "1"),
            planned("1.0", "2"),
        ];
        let got = p
            .refusals_before_build(&push("github:acme/pkgs", 'b'), &all)
            .await
            .expect("checked");
        let lower = got[0].as_deref().unwrap_or_default();
        assert!(
            lower.starts_with("raise Version or Release: hello-0.9-1.src is lower than the published hello-1.0-1.src\n"),
            "{lower}"
        );
        let again = got[1].as_deref().unwrap_or_default();
        assert!(
            again.starts_with(
                "raise Release: hello-1.0-1.src is published already, from commit aaaaaaa"
            ),
            "{again}"
        );
        assert_eq!(got[2], None);

        // The publishing commit itself (a rebuild) may try: the same bytes change nothing.
        let same = p
            .refusals_before_build(&push("github:acme/pkgs", 'a'), &all[1..2])
            .await
            .expect("checked");
        assert_eq!(same, vec![None]);
        // A pull request against main is held to the same rules.
        let pr = p
            .refusals_before_build(&pull_request("github:acme/pkgs", 'c'), &all[..1])
            .await
            .expect("checked");
        assert!(pr[0].is_some(), "{pr:?}");
        // Another repository may not take the name, whatever the version.
        let other = p
            .refusals_before_build(&push("github:mallory/pkgs", 'e'), &all[2..])
            .await
            .expect("checked");
        assert!(
            other[0].as_deref().is_some_and(
                |w| w.starts_with("rename the package or change it in github:acme/pkgs")
            ),
            "{other:?}"
        );
        // A branch that feeds no release, or a plan without versions: nothing to check.
        let mut feature = push("github:acme/pkgs", 'f');
        feature.ref_name = "refs/heads/feature".into();
        let none = p
            .refusals_before_build(&feature, &all)
            .await
            .expect("checked");
        assert!(none.iter().all(Option::is_none), "{none:?}");
    }
}
