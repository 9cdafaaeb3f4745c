//! `packetary build [PATH]`: every package under PATH for each target, planned like a
//! change (names and BuildRequires from rpm, the same order as the service's planner) and
//! built in its stages through the service's queue ([`super::staged`]): a later stage
//! installs what the earlier ones built.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use futures_util::future::BoxFuture;

use packetary::config::Config;
use packetary::docker::Engine;
use packetary::model::{ChangeKind, CommitSha, ForgeKind, RepoId, Trigger};
use packetary::plan;
use packetary::queue::{local, SourceError, SourceProvider};
use packetary::spec::{SpecCache, SpecOracle};

use super::staged::{self, Staged};
use super::{absolute, extra_repos, infra, progress_line, usage, BuildArgs, CliError};

pub async fn run(config: Config, args: BuildArgs) -> Result<u8, CliError> {
    // Made while the directory is planned, as the connection to Docker.
    let store = local::TempStore::open_ahead();
    let connecting = {
        let host = config.docker_host.clone();
        tokio::spawn(async move { Engine::connect(host.as_deref()).await })
    };
    let targets = config.select_targets(&args.targets).map_err(usage)?;
    let out = args.out.clone().unwrap_or_else(|| config.out_dir.clone());
    let out = absolute(&out).map_err(usage)?;
    let root = &args.path;
    if !root.is_dir() {
        return Err(usage(anyhow::anyhow!(
            "{} is not a directory\n  fix: pass the directory that holds the package(s)",
            root.display()
        )));
    }
    let packages = match &args.spec {
        Some(spec) => {
            let spec = if spec.is_absolute() || spec.exists() {
                spec.clone()
            } else {
                root.join(spec)
            };
            vec![plan::package_for_spec(root, &spec).map_err(usage)?]
        }
        None => plan::discover(root, std::slice::from_ref(&out)).map_err(usage)?,
    };
    let extra_repos = extra_repos(&args)?;
    let names: Vec<_> = targets.iter().map(|t| t.name.clone()).collect();
    let publish = match &args.publish {
        Some(r) => Some((
            super::publish::check_build_publish(&config, r, &names)?,
            args.data_dir.clone(),
        )),
        None => None,
    };
    let parallel = args.parallel.unwrap_or(config.parallel).max(1);
    // One package has nothing to be ordered after: rpm is not asked, and Docker is
    // needed only once it is planned.
    let mut connecting = Some(connecting);
    let asked = if packages.len() > 1 && !args.git_opts.no_spec {
        let engine = connected(connecting.take()).await?;
        super::ensure_images(&engine, &config, targets.iter()).await?;
        Some(engine)
    } else {
        None
    };
    let oracle = asked.as_ref().map(|engine| {
        SpecOracle::with_engine(
            SpecCache::new(super::plan::cache_dir(&args.git_opts).join("specs")),
            engine.clone(),
        )
    });
    let selected: BTreeMap<_, _> = targets
        .iter()
        .map(|t| (t.name.clone(), t.clone()))
        .collect();
    let plan = plan::plan_dir(&packages, &selected, oracle.as_ref()).await;
    let engine = match asked {
        Some(e) => e,
        None => connected(connecting).await?,
    };
    for n in &plan.notices {
        progress_line(&format!("note: {n}"));
    }
    for p in plan.packages.iter() {
        if let Some(e) = &p.error {
            progress_line(&format!(
                "note: {}: {}; it builds in the first stage",
                p.spec,
                e.replace('\n', " ")
            ));
        }
    }
    let root = packages
        .first()
        .map(|p| p.root.clone())
        .unwrap_or_else(|| root.clone());
    staged::run(
        &config,
        Staged {
            store,
            trigger: trigger(&root).map_err(infra)?,
            builds: staged::builds_of(&plan, None, true),
            after: staged::after_of(&plan),
            sources: Arc::new(DirSource { root }),
            engine,
            extra_repos,
            parallel,
            out,
            publish,
            json: args.json,
        },
    )
    .await
}

/// The Docker connection started at the command's start.
async fn connected(
    connecting: Option<tokio::task::JoinHandle<Result<Engine, packetary::docker::InfraError>>>,
) -> Result<Engine, CliError> {
    let Some(connecting) = connecting else {
        return Err(infra(anyhow::anyhow!(
            "the Docker connection was taken twice"
        )));
    };
    connecting
        .await
        .map_err(|e| infra(anyhow::anyhow!("connecting to Docker: {e}")))?
        .map_err(infra)
}

/// The directory as a change of the local forge: its "commit" is a digest of its path
/// (there is none), which only keeps the temporary store's rows apart.
fn trigger(root: &Path) -> anyhow::Result<Trigger> {
    use sha2::Digest;
    let digest = sha2::Sha256::digest(root.as_os_str().as_encoded_bytes());
    Ok(Trigger {
        repo: RepoId::new(ForgeKind::Local, "cli")?,
        clone_url: root.display().to_string(),
        kind: ChangeKind::Push,
        ref_name: "refs/heads/cli".into(),
        base: None,
        head: CommitSha::parse(&hex::encode(digest))?,
        pr_number: None,
        base_ref: None,
        from_fork: false,
        sender: "cli".into(),
        only_package: None,
        only_target: None,
    })
}

/// The directory being built, as it is: each build's tree is a link to it, so a build sees
/// (and mounts read-only) the user's own files, with their times and modes, as before the
/// queue; nothing is copied, and the queue's clean-up removes only the link.
struct DirSource {
    root: PathBuf,
}

impl SourceProvider for DirSource {
    fn export<'a>(
        &'a self,
        _clone_url: &'a str,
        _repo: &'a RepoId,
        _commit: &'a CommitSha,
        dest: &'a Path,
    ) -> BoxFuture<'a, Result<(), SourceError>> {
        Box::pin(async move {
            link_tree(&self.root, dest)
                .await
                .map_err(|e| SourceError::Infra(format!("link {}: {e}", dest.display())))
        })
    }
}

/// Makes `dest` (which must not exist) a symbolic link to `root`.
async fn link_tree(root: &Path, dest: &Path) -> std::io::Result<()> {
    if let Some(parent) = dest.parent() {
        tokio::fs::create_dir_all(parent).await?;
    }
    tokio::fs::symlink(root, dest).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_build_sees_the_directory_and_its_clean_up_leaves_it() {
        let tmp = tempfile::tempdir().expect("tmp");
        let root = tmp.path().join("pkgs");
        std::fs::create_dir_all(root.join("a")).expect("mkdir");
        std::fs::write(root.join("a/a.spec"), "Name: a\n").expect("write");
        let work = tmp.path().join("work/b1");
        let src = work.join("src");
        let source = DirSource { root: root.clone() };
        let commit = trigger(&root).expect("trigger").head;
        let repo = RepoId::new(ForgeKind::Local, "cli").expect("repo");
        source
            .export("", &repo, &commit, &src)
            .await
            .expect("export");
        // The scheduler finds the package in the exported tree: the user's own files.
        let p = plan::package_for_spec(&src, &src.join("a/a.spec")).expect("package");
        assert_eq!(p.root, root.canonicalize().expect("canonical"));
        assert_eq!(p.relative_spec(), Path::new("a/a.spec"));
        // ... and removes its work directory afterwards: the link goes, the files stay.
        tokio::fs::remove_dir_all(&work).await.expect("rm");
        assert!(root.join("a/a.spec").is_file());
    }

    #[test]
    fn the_trigger_of_a_directory_is_a_local_push() {
        let t = trigger(Path::new("/some/dir")).expect("trigger");
        assert_eq!(t.repo.to_string(), "local:cli");
        assert_eq!(t.head.as_str().len(), 64);
        assert_ne!(t.head, trigger(Path::new("/other")).expect("trigger").head);
    }
}
