//! `build_phases`: how long each phase of a build took, for its page.

use super::{Store, StoreError};
use crate::model::BuildId;

#[derive(Debug, Clone, PartialEq)]
pub struct PhaseRow {
    pub phase: String,
    pub started: String,
    pub seconds: f64,
    pub ok: bool,
}

impl Store {
    /// Replaces a build's phases with `phases`, atomically.
    /// Replaces a build's phases ([`super::ledger`]'s one statement), in a transaction of
    /// its own.
    pub async fn record_phases(&self, id: &BuildId, phases: &[PhaseRow]) -> Result<(), StoreError> {
        let mut tx = self.tx().await?;
        set_phases(&mut tx, id.as_str(), phases).await?;
        tx.commit().await.map(drop)
    }

    pub async fn phases(&self, id: &BuildId) -> Result<Vec<PhaseRow>, StoreError> {
        let id = id.as_str();
        Ok(sqlx::query_as!(
            PhaseRow,
            r#"SELECT phase, started, seconds, ok AS "ok: bool" FROM build_phases
               WHERE build_id = ? ORDER BY started"#,
            id,
        )
        .fetch_all(&self.pool)
        .await?)
    }
}

/// Replaces a build's phases with `phases`, in one statement.
pub(in crate::store) async fn set_phases(
    conn: &mut sqlx::SqliteConnection,
    id: &str,
    phases: &[PhaseRow],
) -> Result<(), StoreError> {
    if phases.is_empty() {
        return Ok(());
    }
    let json = serde_json::to_string(
        &phases
            .iter()
            .map(|p| serde_json::json!([p.phase, p.started, p.seconds, p.ok]))
            .collect::<Vec<_>>(),
    )
    .map_err(|e| StoreError::Corrupt(format!("phases: {e}")))?;
    sqlx::query!(
        "INSERT OR REPLACE INTO build_phases (build_id, phase, started, seconds, ok)
         SELECT ?1, json_extract(value, '$[0]'), json_extract(value, '$[1]'),
                json_extract(value, '$[2]'), json_extract(value, '$[3]')
         FROM json_each(?2)",
        id,
        json,
    )
    .execute(&mut *conn)
    .await?;
    Ok(())
}
