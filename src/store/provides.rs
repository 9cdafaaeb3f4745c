//! `learned_provides`: the Provides of a package's binary RPMs from its last successful
//! build, per repository, package and target, which planning uses for order where rpmspec
//! cannot see a capability (`pkgconfig(...)` and the like are made at build time).

use std::collections::BTreeMap;

use super::{Store, StoreError};
use crate::model::{RepoId, TargetName};

impl Store {
    /// What is known of each package's Provides for `target` in `repo` (written when a
    /// build ends, by `ledger::end`).
    pub async fn learned_provides(
        &self,
        repo: &RepoId,
        target: &TargetName,
    ) -> Result<BTreeMap<String, Vec<String>>, StoreError> {
        let (repo, target) = (repo.as_str(), target.as_str());
        let rows = sqlx::query!(
            "SELECT package, provides FROM learned_provides WHERE repo = ? AND target = ?",
            repo,
            target,
        )
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .map(|r| {
                let v = r
                    .provides
                    .lines()
                    .filter(|l| !l.is_empty())
                    .map(str::to_string)
                    .collect();
                (r.package, v)
            })
            .collect())
    }
}
