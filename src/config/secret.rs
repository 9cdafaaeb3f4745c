//! Secrets in the configuration: where each comes from, read only when needed, and never
//! printed.

use std::path::PathBuf;

use serde::Deserialize;

use super::ConfigError;

/// Where a secret comes from. The value is read only when needed and never printed.
#[derive(Clone, PartialEq, Eq)]
pub enum SecretSource {
    Literal(Secret),
    Env(String),
    File(PathBuf),
}

impl std::fmt::Debug for SecretSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SecretSource::Literal(_) => f.write_str("Literal(<redacted>)"),
            SecretSource::Env(v) => write!(f, "Env({v:?})"),
            SecretSource::File(p) => write!(f, "File({p:?})"),
        }
    }
}

impl SecretSource {
    /// Reads the secret; `key` names the configuration key in the error.
    pub fn resolve(&self, key: &str) -> Result<Secret, ConfigError> {
        let invalid = |problem: String, fix: &str| ConfigError::Invalid {
            location: "configuration".into(),
            key: key.to_string(),
            problem,
            fix: fix.to_string(),
        };
        let value = match self {
            SecretSource::Literal(s) => return Ok(s.clone()),
            SecretSource::Env(var) => std::env::var(var).map_err(|_| {
                invalid(
                    format!("environment variable `{var}` is not set"),
                    "export it before starting packetary, or point the key at a file",
                )
            })?,
            SecretSource::File(path) => std::fs::read_to_string(path).map_err(|e| {
                invalid(
                    format!("cannot read {}: {e}", path.display()),
                    "check the path and its permissions",
                )
            })?,
        };
        let value = value.trim_end_matches(['\n', '\r']).to_string();
        if value.is_empty() {
            return Err(invalid(
                "the secret is empty".into(),
                "put the secret's value there",
            ));
        }
        Ok(Secret(value))
    }
}

/// A secret value: `Debug` and `Display` never show it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Secret {
        Secret(value.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
    }
}

/// A secret is written inline, or as `{ env = "VAR" }`, or as `{ file = "/path" }`.
#[derive(Deserialize)]
#[serde(untagged)]
pub(super) enum RawSecret {
    Literal(String),
    Env { env: String },
    File { file: PathBuf },
}

impl std::fmt::Debug for RawSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RawSecret(..)")
    }
}

impl From<RawSecret> for SecretSource {
    fn from(r: RawSecret) -> SecretSource {
        match r {
            RawSecret::Literal(s) => SecretSource::Literal(Secret(s)),
            RawSecret::Env { env } => SecretSource::Env(env),
            RawSecret::File { file } => SecretSource::File(file),
        }
    }
}
