//! Reports: what the queue tells the forge. [`reporter`] says, per forge, which statuses a
//! transition changes; [`aggregate`] writes them into the transition's transaction (the
//! outbox); [`outbox`] delivers them, retrying under the outbox's policy, with no path of
//! the service's disk in them ([`paths`], which the pages use too).

mod aggregate;
mod outbox;
pub mod paths;
pub mod reporter;

pub(super) use aggregate::Reports;
pub(super) use outbox::{Handoff, Outbox};
