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
    pub async fn record_phases(&self, id: &BuildId, phases: &[PhaseRow]) -> Result<(), StoreError> {
        let id = id.as_str();
        let mut tx = self.pool.begin().await?;
        sqlx::query!("DELETE FROM build_phases WHERE build_id = ?", id)
            .execute(&mut *tx)
            .await?;
        for p in phases {
            sqlx::query!(
                "INSERT OR REPLACE INTO build_phases (build_id, phase, started, seconds, ok) VALUES (?, ?, ?, ?, ?)",
                id,
                p.phase,
                p.started,
                p.seconds,
                p.ok,
            )
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
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
