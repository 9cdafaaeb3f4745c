//! `build_repo_snapshots` and `publications`: which release snapshots a build used (pruning
//! keeps them) and which repositories a build published into.

use super::{Store, StoreError};
use crate::model::{BuildId, CommitSha, RepoId};

/// One publication of a build.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublicationRow {
    pub repository: String,
    pub snapshot: Option<String>,
}

impl Store {
    /// Records that `build` uses the snapshot directory `location`.
    pub async fn record_snapshot_use(
        &self,
        build: &BuildId,
        location: &str,
    ) -> Result<(), StoreError> {
        let build = build.as_str();
        sqlx::query!(
            "INSERT OR IGNORE INTO build_repo_snapshots (build_id, location) VALUES (?, ?)",
            build,
            location,
        )
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Every snapshot directory a build in the store used.
    pub async fn snapshot_locations_in_use(&self) -> Result<Vec<String>, StoreError> {
        let rows = sqlx::query_scalar!(
            "SELECT DISTINCT s.location FROM build_repo_snapshots s JOIN builds b ON b.id = s.build_id"
        )
        .fetch_all(&self.pool)
        .await?;
        Ok(rows)
    }

    /// The base branch of a pull request's trigger (`None` for a push).
    pub async fn trigger_base_ref(
        &self,
        trigger: super::TriggerId,
    ) -> Result<Option<String>, StoreError> {
        let id = trigger.0;
        let row = sqlx::query_scalar!("SELECT base_ref FROM triggers WHERE id = ?", id)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.flatten())
    }

    /// The repository other than `not` whose builds first published `package` into the
    /// package repository labelled `repository` (`<release>/<target>`): a package name
    /// belongs to one source repository in a release.
    pub async fn package_owner(
        &self,
        repository: &str,
        package: &str,
        not: &RepoId,
    ) -> Result<Option<RepoId>, StoreError> {
        let not = not.as_str();
        let owner = sqlx::query_scalar!(
            "SELECT b.repo FROM publications p JOIN builds b ON b.id = p.build_id
             WHERE p.repository = ? AND b.package = ? AND b.repo != ?
             ORDER BY p.published_at LIMIT 1",
            repository,
            package,
            not,
        )
        .fetch_optional(&self.pool)
        .await?;
        owner
            .map(|o| RepoId::parse(&o))
            .transpose()
            .map_err(StoreError::from)
    }

    /// The commit whose build last published `package` into the package repository
    /// labelled `repository`: a later commit that changes the package but not its version
    /// cannot publish it there.
    pub async fn last_publisher_commit(
        &self,
        repository: &str,
        package: &str,
    ) -> Result<Option<CommitSha>, StoreError> {
        let commit = sqlx::query_scalar!(
            "SELECT b.commit_sha FROM publications p JOIN builds b ON b.id = p.build_id
             WHERE p.repository = ? AND b.package = ?
             ORDER BY p.published_at DESC LIMIT 1",
            repository,
            package,
        )
        .fetch_optional(&self.pool)
        .await?;
        commit
            .map(|c| CommitSha::parse(&c))
            .transpose()
            .map_err(StoreError::from)
    }

    /// What `build` published, by repository.
    pub async fn publications(&self, build: &BuildId) -> Result<Vec<PublicationRow>, StoreError> {
        let build = build.as_str();
        let rows = sqlx::query!(
            "SELECT repository, snapshot FROM publications WHERE build_id = ? ORDER BY repository",
            build,
        )
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .map(|r| PublicationRow {
                repository: r.repository,
                snapshot: r.snapshot,
            })
            .collect())
    }
}
