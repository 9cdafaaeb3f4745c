//! `reports`: the outbox of commit statuses. Each row is the desired state of one context;
//! a newer desire bumps `version`, and the row is delivered once `delivered_version`
//! catches up.

use super::ledger::Tx;
use super::rows::report_rows;
use super::{Millis, ReportId, Store, StoreError};
use crate::model::{Report, ReportState};

pub use super::rows::ReportRow;

impl Store {
    /// Records the desired state of a context (see [`upsert`]) in a transaction of its
    /// own; returns what the outbox must deliver.
    pub async fn set_report(&self, r: &Report) -> Result<Vec<ReportRow>, StoreError> {
        let mut tx = self.tx().await?;
        upsert(&mut tx, r).await?;
        tx.commit().await
    }

    /// Reports whose latest desire is not delivered yet and whose retry time has come.
    pub async fn due_reports(&self, now: Millis, limit: i64) -> Result<Vec<ReportRow>, StoreError> {
        let rows = report_rows!(
            "SELECT",
            "FROM reports
             WHERE delivered_version < version AND abandoned = 0 AND next_attempt_at <= ?
             ORDER BY next_attempt_at, id LIMIT ?",
            now.0,
            limit,
        )
        .fetch_all(&self.pool)
        .await?;
        rows.into_iter().map(ReportRow::try_from).collect()
    }

    /// When the next undelivered report becomes due.
    pub async fn next_report_due(&self) -> Result<Option<Millis>, StoreError> {
        let v = sqlx::query_scalar!(
            r#"SELECT MIN(next_attempt_at) AS "due?: i64" FROM reports
               WHERE delivered_version < version AND abandoned = 0"#
        )
        .fetch_one(&self.pool)
        .await?;
        Ok(v.map(Millis))
    }

    pub async fn reports(&self) -> Result<Vec<ReportRow>, StoreError> {
        let rows = report_rows!("SELECT", "FROM reports ORDER BY id")
            .fetch_all(&self.pool)
            .await?;
        rows.into_iter().map(ReportRow::try_from).collect()
    }

    /// Marks `version` delivered, keeping the forge's id of what it created (the latest
    /// one it gave); a newer desire recorded meanwhile stays due.
    pub async fn mark_delivered(
        &self,
        id: ReportId,
        version: i64,
        forge_ref: Option<&str>,
    ) -> Result<(), StoreError> {
        sqlx::query!(
            "UPDATE reports SET delivered_version = MAX(delivered_version, ?), last_error = NULL,
                    forge_ref = COALESCE(?, forge_ref)
             WHERE id = ?",
            version,
            forge_ref,
            id.0,
        )
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Records a failed delivery of `version` and when to try again (or gives up on it).
    pub async fn delivery_failed(
        &self,
        id: ReportId,
        version: i64,
        next: Millis,
        error: &str,
        abandon: bool,
    ) -> Result<(), StoreError> {
        sqlx::query!(
            "UPDATE reports SET attempts = attempts + 1, next_attempt_at = ?, last_error = ?, abandoned = ?
             WHERE id = ? AND version = ?",
            next.0,
            error,
            abandon,
            id.0,
            version,
        )
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Reports not delivered yet (for metrics and for tests that wait for quiet).
    pub async fn undelivered_reports(&self) -> Result<i64, StoreError> {
        Ok(sqlx::query_scalar!(
            r#"SELECT COUNT(*) AS "n!: i64" FROM reports
               WHERE delivered_version < version AND abandoned = 0"#
        )
        .fetch_one(&self.pool)
        .await?)
    }
}

/// Records the desired state of a context (see [`upsert_all`]).
pub async fn upsert(tx: &mut Tx, r: &Report) -> Result<(), StoreError> {
    upsert_all(tx, std::slice::from_ref(r)).await
}

/// One report as [`upsert_all`] hands it to SQLite (`json_each`).
#[derive(serde::Serialize)]
struct Desire<'a> {
    repo: &'a str,
    sha: &'a str,
    context: &'a str,
    state: &'a str,
    description: &'a str,
    target_url: Option<&'a str>,
    builds: Option<String>,
}

/// Records the desired state of each report's context, in order, in ONE statement (a
/// transition's build status and its commit's aggregate together). The latest desire
/// wins: an undelivered older state is replaced, not queued behind. Unchanged desires are
/// not re-sent. The rows that became due go with the transaction ([`Tx::commit`] returns
/// them) to the outbox, which delivers them without reading them back.
pub async fn upsert_all(tx: &mut Tx, rs: &[Report]) -> Result<(), StoreError> {
    if rs.is_empty() {
        return Ok(());
    }
    let now = Millis::now();
    let desires: Vec<Desire<'_>> = rs
        .iter()
        .map(|r| Desire {
            repo: r.repo.as_str(),
            sha: r.sha.as_str(),
            context: &r.context,
            state: r.state.as_str(),
            description: &r.description,
            target_url: r.target_url.as_deref(),
            // Not part of what makes a desire new: a build starting changes the list but
            // not what the forge is told.
            builds: if r.builds.is_empty() {
                None
            } else {
                serde_json::to_string(&r.builds).ok()
            },
        })
        .collect();
    let json = serde_json::to_string(&desires)
        .map_err(|e| StoreError::Corrupt(format!("reports to store: {e}")))?;
    // `WHERE true`: SQLite's parser needs it between `INSERT ... SELECT` and `ON CONFLICT`.
    let rows = report_rows!(
        "INSERT INTO reports (repo, sha, context, state, description, target_url, builds, next_attempt_at, updated_at)
         SELECT j.value ->> 'repo', j.value ->> 'sha', j.value ->> 'context', j.value ->> 'state',
                j.value ->> 'description', j.value ->> 'target_url', j.value ->> 'builds', ?2, ?2
         FROM json_each(?1) j WHERE true
         ORDER BY j.key
         ON CONFLICT (repo, sha, context) DO UPDATE SET
            state = excluded.state, description = excluded.description, target_url = excluded.target_url,
            builds = excluded.builds,
            version = version + 1, attempts = 0, next_attempt_at = excluded.next_attempt_at,
            last_error = NULL, abandoned = 0, updated_at = excluded.updated_at
         WHERE state != excluded.state OR description != excluded.description
            OR COALESCE(target_url, '') != COALESCE(excluded.target_url, '')
         RETURNING",
        "",
        json,
        now.0,
    )
    .fetch_all(&mut **tx)
    .await?;
    for r in rows {
        tx.written.push(ReportRow::try_from(r)?);
    }
    Ok(())
}
