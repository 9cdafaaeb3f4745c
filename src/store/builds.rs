//! `builds`: the build queue. One row per package, target and commit; `seq` orders the
//! queue. Ending a whole change's builds at once is in `changes.rs`.

use std::path::{Path, PathBuf};

use super::rows::build_rows;
use super::{ledger, BuildRow, Millis, NewBuild, Store, StoreError, StoredTrigger};
use crate::model::{BuildId, BuildState, CommitSha, RepoId, TargetName};

impl Store {
    /// Inserts the planned builds of a trigger and marks the trigger planned, in one
    /// transaction ([`ledger::plan`]); `false` when the trigger had ended meanwhile.
    pub async fn insert_builds(
        &self,
        trigger: &StoredTrigger,
        builds: &[NewBuild],
    ) -> Result<bool, StoreError> {
        let mut tx = self.tx().await?;
        let planned = ledger::plan(&mut tx, trigger, builds).await?;
        tx.commit().await?;
        Ok(planned.is_some())
    }

    /// Claims the next build that may start, in one transaction ([`ledger::claim`]).
    pub async fn claim_next_build(&self, now: Millis) -> Result<Option<BuildRow>, StoreError> {
        let mut tx = self.tx().await?;
        let b = ledger::claim(&mut tx, now).await?;
        tx.commit().await?;
        Ok(b)
    }

    /// What `b` builds against: the result directories of its change's earlier stages that
    /// succeeded for its target.
    pub async fn earlier_results(&self, b: &BuildRow) -> Result<Vec<PathBuf>, StoreError> {
        let stage = i64::from(b.stage);
        let target = b.target.as_str();
        let dirs = sqlx::query_scalar!(
            r#"SELECT result_dir AS "result_dir!" FROM builds
               WHERE trigger_id = ? AND target = ? AND stage < ? AND state = ?
                 AND result_dir IS NOT NULL
               ORDER BY stage, seq"#,
            b.trigger_id.0,
            target,
            stage,
            BuildState::Succeeded,
        )
        .fetch_all(&self.pool)
        .await?;
        Ok(dirs.into_iter().map(PathBuf::from).collect())
    }

    /// When the earliest queued build that may start becomes due, if any is waiting. The
    /// `NOT EXISTS` is `claim_next_build`'s "may start" rule.
    pub async fn next_due(&self) -> Result<Option<Millis>, StoreError> {
        let v = sqlx::query_scalar!(
            r#"SELECT MIN(b.next_attempt_at) AS "due?: i64" FROM builds b
               WHERE b.state = ?1
                 AND NOT EXISTS (SELECT 1 FROM builds d WHERE d.trigger_id = b.trigger_id AND d.target = b.target AND d.stage < b.stage AND d.state IN (?1, ?2))"#,
            BuildState::Queued,
            BuildState::Running,
        )
        .fetch_one(&self.pool)
        .await?;
        Ok(v.map(Millis))
    }

    pub async fn set_build_progress(
        &self,
        id: &BuildId,
        container: Option<&str>,
        phase: Option<&str>,
    ) -> Result<(), StoreError> {
        let id = id.as_str();
        sqlx::query!(
            "UPDATE builds SET container_id = COALESCE(?, container_id), phase = COALESCE(?, phase)
             WHERE id = ? AND state = ?",
            container,
            phase,
            id,
            BuildState::Running,
        )
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Ends a running build ([`ledger::end`] with nothing else learned). Returns `false`
    /// when it was no longer running (superseded or cancelled meanwhile).
    pub async fn finish_build(
        &self,
        id: &BuildId,
        state: BuildState,
        message: Option<&str>,
        result_dir: Option<&Path>,
        phase: Option<&str>,
    ) -> Result<bool, StoreError> {
        let mut tx = self.tx().await?;
        let ended = ledger::end(
            &mut tx,
            &ledger::BuildEnd {
                id,
                state,
                message: message.unwrap_or(state.as_str()),
                phase,
                result_dir,
                phases: &[],
                provides: None,
                publication: None,
            },
        )
        .await?;
        tx.commit().await?;
        Ok(ended.is_some())
    }

    /// The bytes the results of `b`'s change (a pull request or Gerrit change: the same
    /// repository and number) hold, `b`'s own left out (an earlier attempt's are replaced).
    /// `None` for a push, which no quota counts.
    pub async fn change_disk_use(&self, b: &BuildRow) -> Result<Option<u64>, StoreError> {
        let Some(pr) = b.pr_number else {
            return Ok(None);
        };
        let mut conn = self.pool.acquire().await?;
        Ok(Some(change_use_but(&mut conn, b, pr).await?))
    }

    /// Charges `bytes` of results to `b`'s change, when its other builds' and these fit in
    /// `quota` (or there is no quota): one transaction, so that two builds of a change
    /// ending together cannot both take the last room. Returns what the change's other
    /// builds hold and whether `bytes` were charged; when not, nothing was written (the
    /// caller removes the results and charges what is left with [`Store::set_result_bytes`]).
    pub async fn charge_results(
        &self,
        b: &BuildRow,
        bytes: u64,
        quota: Option<u64>,
    ) -> Result<(u64, bool), StoreError> {
        let Some(pr) = b.pr_number else {
            return Ok((0, true));
        };
        let mut tx = self.tx().await?;
        let others = change_use_but(&mut tx, b, pr).await?;
        let fits = quota.is_none_or(|q| others.saturating_add(bytes) <= q);
        if fits {
            set_result_bytes(&mut tx, &b.id, bytes).await?;
        }
        tx.commit().await?;
        Ok((others, fits))
    }

    /// Records what a build's results hold on disk (see [`Store::charge_results`]).
    pub async fn set_result_bytes(&self, id: &BuildId, bytes: u64) -> Result<(), StoreError> {
        let mut conn = self.pool.acquire().await?;
        set_result_bytes(&mut conn, id, bytes).await
    }

    /// Records the input digest of a build about to run (see `executor::provenance`).
    pub async fn set_input_digest(&self, id: &BuildId, digest: &str) -> Result<(), StoreError> {
        let id = id.as_str();
        sqlx::query!(
            "UPDATE builds SET input_digest = ? WHERE id = ?",
            digest,
            id
        )
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// The latest succeeded build of `target` with this input digest and its results
    /// directory that a new build of `repo` (of change `pr_number`, `None` for a push) may
    /// reuse: one of the same repository, made at the same trust or higher — a push's
    /// results (pushed by someone who may write), or an earlier build of the same change.
    /// A push never takes a change's results (a fork's, a Gerrit upload's).
    pub async fn succeeded_with_digest(
        &self,
        digest: &str,
        target: &TargetName,
        repo: &RepoId,
        pr_number: Option<u64>,
    ) -> Result<Option<(BuildId, PathBuf)>, StoreError> {
        let (target, repo) = (target.as_str(), repo.as_str());
        let pr = pr_number.map(|n| n as i64);
        let row = sqlx::query!(
            r#"SELECT id AS "id!", result_dir AS "result_dir!" FROM builds
               WHERE input_digest = ? AND target = ? AND state = ?
                 AND result_dir IS NOT NULL AND repo = ?
                 AND (pr_number IS NULL OR pr_number = ?)
               ORDER BY seq DESC LIMIT 1"#,
            digest,
            target,
            BuildState::Succeeded,
            repo,
            pr,
        )
        .fetch_optional(&self.pool)
        .await?;
        Ok(match row {
            Some(r) => Some((BuildId::parse(&r.id)?, PathBuf::from(r.result_dir))),
            None => None,
        })
    }

    /// Puts a running build back in the queue ([`ledger::requeue`]). Returns `false` when
    /// it was no longer running.
    pub async fn requeue(
        &self,
        id: &BuildId,
        at: Millis,
        message: Option<&str>,
        count_attempt: bool,
    ) -> Result<bool, StoreError> {
        let mut tx = self.tx().await?;
        let done = ledger::requeue(&mut tx, id, at, message, count_attempt).await?;
        tx.commit().await?;
        Ok(done)
    }

    pub async fn build(&self, id: &BuildId) -> Result<Option<BuildRow>, StoreError> {
        let id = id.as_str();
        let row = build_rows!("SELECT", "FROM builds WHERE id = ?", id)
            .fetch_optional(&self.pool)
            .await?;
        row.map(BuildRow::try_from).transpose()
    }

    pub async fn builds_in_state(&self, state: BuildState) -> Result<Vec<BuildRow>, StoreError> {
        let rows = build_rows!("SELECT", "FROM builds WHERE state = ? ORDER BY seq", state)
            .fetch_all(&self.pool)
            .await?;
        rows.into_iter().map(BuildRow::try_from).collect()
    }

    pub async fn recent_builds(&self, limit: i64) -> Result<Vec<BuildRow>, StoreError> {
        let rows = build_rows!("SELECT", "FROM builds ORDER BY seq DESC LIMIT ?", limit)
            .fetch_all(&self.pool)
            .await?;
        rows.into_iter().map(BuildRow::try_from).collect()
    }

    /// The latest build of each package and target at a commit
    /// ([`ledger::latest_of_commit`]).
    pub async fn latest_builds_of_commit(
        &self,
        repo: &RepoId,
        sha: &CommitSha,
    ) -> Result<Vec<BuildRow>, StoreError> {
        let mut conn = self.pool.acquire().await?;
        ledger::latest_of_commit(&mut conn, repo, sha).await
    }

    /// Every state with its number of builds, zeros included (for metrics).
    pub async fn count_builds_by_state(&self) -> Result<Vec<(BuildState, i64)>, StoreError> {
        let rows = sqlx::query!(
            r#"SELECT state AS "state: BuildState", COUNT(*) AS "n!: i64" FROM builds GROUP BY state"#
        )
        .fetch_all(&self.pool)
        .await?;
        let mut out: Vec<(BuildState, i64)> = BuildState::ALL.iter().map(|s| (*s, 0)).collect();
        for r in rows {
            if let Some(slot) = out.iter_mut().find(|(b, _)| *b == r.state) {
                slot.1 = r.n;
            }
        }
        Ok(out)
    }
}

/// The bytes charged to the builds of change `pr` of `b`'s repository, `b`'s left out.
async fn change_use_but(conn: &mut ledger::Conn, b: &BuildRow, pr: u64) -> Result<u64, StoreError> {
    let (repo, pr, id) = (b.repo.as_str(), pr as i64, b.id.as_str());
    let total = sqlx::query_scalar!(
        r#"SELECT COALESCE(SUM(result_bytes), 0) AS "total!: i64" FROM builds
           WHERE repo = ? AND pr_number = ? AND result_bytes IS NOT NULL AND id != ?"#,
        repo,
        pr,
        id,
    )
    .fetch_one(&mut *conn)
    .await?;
    Ok(total.max(0) as u64)
}

async fn set_result_bytes(
    conn: &mut ledger::Conn,
    id: &BuildId,
    bytes: u64,
) -> Result<(), StoreError> {
    let (id, bytes) = (id.as_str(), i64::try_from(bytes).unwrap_or(i64::MAX));
    sqlx::query!("UPDATE builds SET result_bytes = ? WHERE id = ?", bytes, id)
        .execute(&mut *conn)
        .await?;
    Ok(())
}
