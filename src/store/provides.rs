//! `learned_provides`: the Provides of a package's binary RPMs from its last successful
//! build, per repository, package and target, which planning uses for order where rpmspec
//! cannot see a capability (`pkgconfig(...)` and the like are made at build time).

use std::collections::BTreeMap;

use super::{Millis, Store, StoreError};
use crate::model::{BuildId, RepoId, TargetName};

impl Store {
    /// Replaces what is known of `package`'s Provides for `target` in `repo`.
    pub async fn learn_provides(
        &self,
        repo: &RepoId,
        package: &str,
        target: &TargetName,
        build: &BuildId,
        provides: &[String],
    ) -> Result<(), StoreError> {
        let (repo, target, build) = (repo.as_str(), target.as_str(), build.as_str());
        let text = provides.join("\n");
        let now = Millis::now().0;
        sqlx::query!(
            "INSERT OR REPLACE INTO learned_provides (repo, package, target, build_id, provides, learned_at)
             VALUES (?, ?, ?, ?, ?, ?)",
            repo,
            package,
            target,
            build,
            text,
            now,
        )
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Every package's learned Provides in `repo` for `target`.
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
