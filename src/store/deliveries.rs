//! `deliveries`: the webhook deliveries already seen, and the one transaction that records a
//! delivery with what it asks for.

use super::{commands, triggers, Millis, Store, StoreError, TriggerState};
use crate::model::{CommandRequest, Trigger};

/// What the webhook handler hands over to the store in one transaction.
#[derive(Debug, Clone)]
pub enum Inbound<'a> {
    Trigger(&'a Trigger, TriggerState),
    Command(&'a CommandRequest),
    /// Nothing to queue, but remember the delivery (closed PRs, deletions act at once).
    Nothing,
}

/// How long a signed body is remembered against replays under a new delivery id.
pub const REPLAY_WINDOW: std::time::Duration = std::time::Duration::from_secs(7 * 24 * 3600);

impl Store {
    /// Records a delivery and what it asks for, atomically. Returns `false` (and stores
    /// nothing) when the delivery id was seen before: GitHub redelivers on timeouts and on
    /// request, and a redelivery must not build twice.
    pub async fn accept(
        &self,
        delivery: &str,
        event: &str,
        inbound: Inbound<'_>,
    ) -> Result<bool, StoreError> {
        self.accept_signed(delivery, None, event, inbound).await
    }

    /// [`Store::accept`] for a signed body with its SHA-256 `digest`: the delivery id is not
    /// covered by the signature, so the same body under another id within
    /// [`REPLAY_WINDOW`] is a replay, refused like a redelivery.
    pub async fn accept_signed(
        &self,
        delivery: &str,
        digest: Option<&str>,
        event: &str,
        inbound: Inbound<'_>,
    ) -> Result<bool, StoreError> {
        let now = Millis::now();
        let mut tx = self.pool.begin().await?;
        let since = now.0 - REPLAY_WINDOW.as_millis() as i64;
        // One statement: a delivery id seen before conflicts, and a body seen within the
        // window under another id (a replay) inserts nothing either.
        let fresh = sqlx::query!(
            "INSERT INTO deliveries (id, event, received_at, digest)
             SELECT ?1, ?2, ?3, ?4
             WHERE ?4 IS NULL OR NOT EXISTS
                (SELECT 1 FROM deliveries WHERE digest = ?4 AND received_at >= ?5)
             ON CONFLICT(id) DO NOTHING",
            delivery,
            event,
            now.0,
            digest,
            since,
        )
        .execute(&mut *tx)
        .await?
        .rows_affected()
            == 1;
        if !fresh {
            tx.rollback().await?;
            return Ok(false);
        }
        match inbound {
            Inbound::Trigger(t, state) => {
                triggers::insert_trigger(&mut tx, t, state, Some(delivery), now).await?;
            }
            Inbound::Command(c) => commands::insert_command(&mut tx, c, now).await?,
            Inbound::Nothing => {}
        }
        tx.commit().await?;
        Ok(true)
    }

    pub async fn delivery_count(&self) -> Result<i64, StoreError> {
        Ok(
            sqlx::query_scalar!(r#"SELECT COUNT(*) AS "n!: i64" FROM deliveries"#)
                .fetch_one(&self.pool)
                .await?,
        )
    }
}
