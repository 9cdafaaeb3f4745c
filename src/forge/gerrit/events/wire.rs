//! Gerrit's event objects as they come over the wire (stream lines and webhooks-plugin
//! bodies): only the fields Packetary reads, with old servers' quirks (numbers as strings).

use serde::{Deserialize, Deserializer};

use crate::model::CommitSha;

#[derive(Deserialize)]
pub(super) struct Envelope {
    #[serde(rename = "type")]
    pub(super) kind: String,
    #[serde(rename = "eventCreatedOn")]
    pub(super) created_on: Option<i64>,
}

#[derive(Deserialize, Default)]
pub(super) struct Account {
    pub(super) username: Option<String>,
    pub(super) name: Option<String>,
    pub(super) email: Option<String>,
}

impl Account {
    pub(super) fn label(&self) -> String {
        self.username
            .clone()
            .or_else(|| self.name.clone())
            .or_else(|| self.email.clone())
            .unwrap_or_else(|| "gerrit".into())
    }
}

#[derive(Deserialize)]
pub(super) struct Change {
    pub(super) project: String,
    pub(super) branch: String,
    /// A number in current Gerrit, a string in old versions.
    #[serde(deserialize_with = "number")]
    pub(super) number: u64,
    #[serde(default)]
    pub(super) wip: bool,
    #[serde(default)]
    pub(super) private: bool,
}

#[derive(Deserialize)]
pub(super) struct PatchSet {
    #[serde(deserialize_with = "number")]
    pub(super) number: u64,
    pub(super) revision: CommitSha,
    #[serde(default)]
    pub(super) parents: Vec<CommitSha>,
    #[serde(rename = "ref")]
    pub(super) ref_name: String,
}

#[derive(Deserialize)]
pub(super) struct PatchsetCreated {
    pub(super) change: Change,
    #[serde(rename = "patchSet")]
    pub(super) patch_set: PatchSet,
    #[serde(default)]
    pub(super) uploader: Account,
}

#[derive(Deserialize)]
pub(super) struct CommentAdded {
    pub(super) change: Change,
    #[serde(rename = "patchSet")]
    pub(super) patch_set: PatchSet,
    #[serde(default)]
    pub(super) author: Account,
    #[serde(default)]
    pub(super) comment: String,
}

#[derive(Deserialize)]
pub(super) struct ChangeMerged {
    pub(super) change: Change,
    #[serde(rename = "patchSet")]
    pub(super) patch_set: PatchSet,
    #[serde(rename = "newRev")]
    pub(super) new_rev: CommitSha,
    #[serde(default)]
    pub(super) submitter: Account,
}

#[derive(Deserialize)]
pub(super) struct ChangeAbandoned {
    pub(super) change: Change,
}

#[derive(Deserialize)]
pub(super) struct RefUpdated {
    #[serde(rename = "refUpdate")]
    pub(super) ref_update: RefUpdate,
    #[serde(default)]
    pub(super) submitter: Account,
}

#[derive(Deserialize)]
pub(super) struct RefUpdate {
    #[serde(rename = "oldRev")]
    pub(super) old_rev: CommitSha,
    #[serde(rename = "newRev")]
    pub(super) new_rev: CommitSha,
    #[serde(rename = "refName")]
    pub(super) ref_name: String,
    pub(super) project: String,
}

pub(super) fn number<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum N {
        Int(u64),
        Text(String),
    }
    match N::deserialize(d)? {
        N::Int(n) => Ok(n),
        N::Text(s) => s
            .parse()
            .map_err(|_| serde::de::Error::custom(format!("`{s}` is not a number"))),
    }
}
