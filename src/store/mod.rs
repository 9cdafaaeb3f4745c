//! The store: SQLite through sqlx. The only place with SQL. Everything the service must not
//! forget across a restart lives here: deliveries seen, triggers, the build queue, phases
//! and the outbox of reports. One file per table; this one opens the database.
//!
//! Queries are sqlx's compile-time checked macros. The build needs no database: without
//! `DATABASE_URL` they are checked against the offline data committed in `.sqlx/`. After
//! changing a query or a migration, regenerate it (sqlx-cli 0.8, from the crate root):
//!
//! ```text
//! cargo install sqlx-cli --no-default-features --features sqlite,rustls --locked
//! export DATABASE_URL=sqlite:///tmp/packetary-sqlx.db
//! rm -f /tmp/packetary-sqlx.db && sqlx database create && sqlx migrate run
//! cargo sqlx prepare -- --all-targets
//! ```
//!
//! then commit `.sqlx/`. CI has no database, so a query missing from `.sqlx/` fails its
//! build; a schema change is not noticed there: `cargo sqlx prepare --check -- --all-targets`
//! (with the database above) tells whether the data is current.

mod builds;
pub mod changes;
mod commands;
mod deliveries;
pub mod ledger;
#[cfg(test)]
mod ledger_tests;
mod pages;
mod phases;
mod provides;
pub mod reports;
mod repos;
mod rows;
#[cfg(test)]
mod tests;
mod triggers;

use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use sqlx::error::BoxDynError;
use sqlx::sqlite::{
    SqliteArgumentValue, SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions,
    SqliteSynchronous, SqliteTypeInfo, SqliteValueRef,
};
use sqlx::{Sqlite, SqlitePool};

use crate::model::{BuildState, ChangeKind, InvalidName, ReportState};

pub use commands::{CommandRow, StoredCommand};
pub use deliveries::Inbound;
pub use phases::PhaseRow;
pub use reports::ReportRow;
pub use repos::PublicationRow;
pub use rows::{BuildRow, EarlyFailure, NewBuild};
pub use triggers::{StoredTrigger, TriggerOrigin, TriggerState};

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot open the database {path}: {source}\n  fix: check that [server] data_dir is writable")]
    Open { path: PathBuf, source: sqlx::Error },
    #[error("cannot migrate the database schema: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("database: {0}")]
    Query(sqlx::Error),
    #[error("database holds an invalid value: {0}")]
    Corrupt(String),
    #[error("the database {path} is damaged: {report}\n  fix: restore it from a backup, or move it aside to start with an empty store (its queued builds and undelivered statuses are then lost)")]
    Damaged { path: PathBuf, report: String },
}

impl From<sqlx::Error> for StoreError {
    /// A column that does not decode (a state no variant names, a NULL where none may be)
    /// is a value the database should not hold.
    fn from(e: sqlx::Error) -> Self {
        match e {
            sqlx::Error::ColumnDecode { source, .. } => StoreError::Corrupt(source.to_string()),
            e => StoreError::Query(e),
        }
    }
}

impl From<InvalidName> for StoreError {
    fn from(e: InvalidName) -> Self {
        StoreError::Corrupt(e.to_string())
    }
}

/// Milliseconds since the Unix epoch, the store's clock.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Millis(pub i64);

impl Millis {
    pub fn now() -> Millis {
        let ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as i64)
            .unwrap_or_default();
        Millis(ms)
    }

    pub fn after(self, d: Duration) -> Millis {
        Millis(self.0.saturating_add(d.as_millis() as i64))
    }

    /// RFC 3339, for pages.
    pub fn rfc3339(self) -> String {
        time::OffsetDateTime::from_unix_timestamp_nanos(self.0 as i128 * 1_000_000)
            .ok()
            .and_then(|t| {
                t.format(&time::format_description::well_known::Rfc3339)
                    .ok()
            })
            .unwrap_or_default()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TriggerId(pub i64);

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ReportId(pub i64);

#[derive(Clone)]
pub struct Store {
    pool: SqlitePool,
}

impl Store {
    /// Opens (creating if missing) `data_dir/packetary.db`, in WAL mode with a busy timeout,
    /// and brings its schema up to date.
    pub async fn open(data_dir: &Path) -> Result<Store, StoreError> {
        let path = data_dir.join("packetary.db");
        std::fs::create_dir_all(data_dir).map_err(|e| StoreError::Open {
            path: path.clone(),
            source: sqlx::Error::Io(e),
        })?;
        let opts = SqliteConnectOptions::from_str("sqlite://")
            .map_err(|source| StoreError::Open {
                path: path.clone(),
                source,
            })?
            .filename(&path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            // Below GitHub's 10 s delivery timeout: a webhook stuck behind a write lock gets
            // an error answer (and a redelivery) rather than a timeout with no answer.
            .busy_timeout(Duration::from_secs(4))
            .foreign_keys(true);
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(opts)
            .await
            .map_err(|source| match &source {
                sqlx::Error::Database(d) if d.message().contains("not a database") => {
                    StoreError::Damaged {
                        path: path.clone(),
                        report: d.message().to_string(),
                    }
                }
                _ => StoreError::Open {
                    path: path.clone(),
                    source,
                },
            })?;
        // A damaged file would otherwise fail one query at a time, later, as "database: ...".
        let damaged = |report: String| StoreError::Damaged {
            path: path.clone(),
            report,
        };
        let check: Vec<String> = sqlx::query_scalar("PRAGMA quick_check")
            .fetch_all(&pool)
            .await
            .map_err(|e| damaged(e.to_string()))?;
        if check.first().map(String::as_str) != Some("ok") {
            return Err(damaged(check.join("; ")));
        }
        MIGRATOR.run(&pool).await?;
        Ok(Store { pool })
    }

    /// Cheap query for /healthz.
    /// Reads through the builds table's index, not only `SELECT 1`, so that a damaged
    /// database shows here rather than when a webhook arrives.
    pub async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query_scalar!(
            r#"SELECT COUNT(*) AS "n!: i64" FROM builds WHERE state = ?"#,
            BuildState::Running,
        )
        .fetch_one(&self.pool)
        .await?;
        Ok(())
    }

    pub async fn close(&self) {
        self.pool.close().await;
    }
}

/// The enums kept in text columns, stored through `sqlx::Type` as their `as_str()` and
/// read back with their `parse`: queries bind and read them as they are (`state AS "state:
/// BuildState"`). A text that names no value reads as [`StoreError::Corrupt`] (`<what>
/// `<text>``). The stored texts are those of migration 0001: changing one needs a migration.
macro_rules! text_enum {
    ($($t:ty => $what:literal),* $(,)?) => {$(
        impl sqlx::Type<Sqlite> for $t {
            fn type_info() -> SqliteTypeInfo {
                <str as sqlx::Type<Sqlite>>::type_info()
            }
        }

        impl<'q> sqlx::Encode<'q, Sqlite> for $t {
            fn encode_by_ref(
                &self,
                buf: &mut Vec<SqliteArgumentValue<'q>>,
            ) -> Result<sqlx::encode::IsNull, BoxDynError> {
                <&str as sqlx::Encode<'q, Sqlite>>::encode(self.as_str(), buf)
            }
        }

        impl<'r> sqlx::Decode<'r, Sqlite> for $t {
            fn decode(value: SqliteValueRef<'r>) -> Result<Self, BoxDynError> {
                let s = <&str as sqlx::Decode<'r, Sqlite>>::decode(value)?;
                <$t>::parse(s).ok_or_else(|| format!("{} `{s}`", $what).into())
            }
        }
    )*};
}

text_enum! {
    BuildState => "build state",
    TriggerState => "trigger state",
    ReportState => "report state",
    ChangeKind => "trigger kind",
    ledger::EventKind => "build event",
}
