//! Ingest: a verified forge event becomes stored work. One function for every way events
//! arrive (webhooks today, Gerrit's event stream later), so that allow-listing,
//! deduplication, storage and cancellation behave the same whatever the forge.

use crate::model::{ChangeKind, ForgeEvent, RepoId};
use crate::store::{Inbound, TriggerState};

use super::{Queue, QueueError};

/// What became of an event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ingested {
    Ping,
    /// Understood, nothing to do (the reason, for a debug log).
    Ignored(String),
    /// The repository is not one the service acts for.
    Forbidden(RepoId),
    /// The delivery was seen before: nothing is built twice.
    Duplicate,
    /// Stored (and, for a closed change, its builds cancelled); the queue was woken.
    Accepted,
}

/// Stores `event` under its forge's `delivery` id and wakes the queue. `allows` says which
/// repositories the service acts for. Storage comes first: an event that was answered is
/// never lost, even if the service dies right after.
pub async fn ingest(
    queue: &Queue,
    delivery: &str,
    digest: Option<&str>,
    event_name: &str,
    event: ForgeEvent,
    allows: &(dyn Fn(&RepoId) -> bool + Sync),
) -> Result<Ingested, QueueError> {
    if let Some(repo) = event.repo() {
        if !allows(repo) {
            return Ok(Ingested::Forbidden(repo.clone()));
        }
    }
    let inbound = match &event {
        ForgeEvent::Ping => return Ok(Ingested::Ping),
        ForgeEvent::Ignored(why) => return Ok(Ingested::Ignored(why.clone())),
        ForgeEvent::Build(t) => Inbound::Trigger(t, TriggerState::New),
        ForgeEvent::Command(c) => Inbound::Command(c),
        ForgeEvent::Closed { .. } | ForgeEvent::RefDeleted { .. } => Inbound::Nothing,
    };
    if !queue
        .store()
        .accept_signed(delivery, digest, event_name, inbound)
        .await?
    {
        return Ok(Ingested::Duplicate);
    }
    let closed = match &event {
        ForgeEvent::Closed { repo, pr_number } => Some(
            queue
                .close_change(repo, ChangeKind::PullRequest, "", Some(*pr_number))
                .await,
        ),
        ForgeEvent::RefDeleted { repo, ref_name } => Some(
            queue
                .close_change(repo, ChangeKind::Push, ref_name, None)
                .await,
        ),
        _ => None,
    };
    if let Some(Err(e)) = closed {
        tracing::error!(delivery, "cannot cancel builds: {e}");
    }
    if matches!(event, ForgeEvent::Command(_)) {
        queue.command_stored();
    }
    queue.wake();
    Ok(Ingested::Accepted)
}
