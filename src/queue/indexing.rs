//! The indexing port: what the queue asks of whatever makes package repositories — the
//! stage repository of a change's earlier builds, and publications into a change's or a
//! release's repository. The queue never sees the engine that runs createrepo_c; the
//! service wires [`DockerIndexing`] (the local Docker engine), and a runner on another
//! engine needs no change here.

use std::collections::BTreeSet;
use std::path::PathBuf;

use futures_util::future::BoxFuture;

use super::MakeRepoError;
use crate::config::{Release, Target};
use crate::docker::Engine;
use crate::repos::{self, Indexer, Policy, PublishError, Published, RepoDir, SnapshotId};

/// Where a succeeded build's packages go.
pub enum PublishInto<'a> {
    /// A change's repository of one target (rules of [`Policy::Change`]).
    Change {
        dir: &'a RepoDir,
        target: &'a Target,
        keep: usize,
    },
    /// A release's repository of one target, keeping the snapshots builds still use.
    Release {
        release: &'a Release,
        target: &'a Target,
        protected: &'a BTreeSet<SnapshotId>,
    },
}

pub trait Indexing: Send + Sync {
    /// Makes `dir` a repository of `packages` that builds in `image` can install from.
    fn make_repo(
        &self,
        image: String,
        dir: PathBuf,
        packages: Vec<PathBuf>,
    ) -> BoxFuture<'static, Result<(), MakeRepoError>>;

    /// Publishes `packages` into a repository under its rules.
    fn publish<'a>(
        &'a self,
        into: PublishInto<'a>,
        packages: &'a [PathBuf],
    ) -> BoxFuture<'a, Result<Published, PublishError>>;
}

/// Indexing on the local Docker engine, in the target's own image.
pub struct DockerIndexing {
    pub engine: Engine,
    /// The service's data directory, under which release repositories live.
    pub data_dir: PathBuf,
}

impl Indexing for DockerIndexing {
    fn make_repo(
        &self,
        image: String,
        dir: PathBuf,
        packages: Vec<PathBuf>,
    ) -> BoxFuture<'static, Result<(), MakeRepoError>> {
        let engine = self.engine.clone();
        Box::pin(async move {
            crate::executor::local_repo(&engine, &image, &dir, &packages)
                .await
                .map_err(MakeRepoError::from)
        })
    }

    fn publish<'a>(
        &'a self,
        into: PublishInto<'a>,
        packages: &'a [PathBuf],
    ) -> BoxFuture<'a, Result<Published, PublishError>> {
        Box::pin(async move {
            match into {
                PublishInto::Change { dir, target, keep } => {
                    let indexer = Indexer {
                        engine: self.engine.clone(),
                        image: target.image.clone(),
                    };
                    dir.publish(&indexer, packages, Policy::Change, keep, &BTreeSet::new())
                        .await
                }
                PublishInto::Release {
                    release,
                    target,
                    protected,
                } => {
                    repos::publish_release(
                        &self.engine,
                        &self.data_dir,
                        release,
                        target,
                        packages,
                        protected,
                    )
                    .await
                }
            }
        })
    }
}
