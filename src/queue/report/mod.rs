//! Reports: what the queue tells the forge. [`aggregate`] decides the statuses (one per
//! build, one summing up a commit) and puts them in the store's outbox; [`outbox`] delivers
//! them, retrying under the outbox's policy.

mod aggregate;
mod outbox;
