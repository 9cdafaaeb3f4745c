//! The on-disk cache of rpm's answers, keyed by target and spec blob.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::{Answer, AnswerError, SpecInfo, QUERY_VERSION};
use crate::config::Target;

#[derive(Serialize, Deserialize)]
#[serde(tag = "result", rename_all = "snake_case")]
enum Stored {
    Ok { info: SpecInfo },
    Error { message: String },
}
/// The cache directory of one target as it is now: its name and a digest of the image id
/// and everything else that can change what rpm answers.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct CacheKey(String);

impl CacheKey {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// The on-disk cache: `<dir>/<cache-key>/<blob[..2]>/<blob>.json`.
#[derive(Debug, Clone)]
pub struct SpecCache {
    dir: PathBuf,
}

impl SpecCache {
    pub fn new(dir: impl Into<PathBuf>) -> SpecCache {
        SpecCache { dir: dir.into() }
    }

    /// Everything about a target that can change what rpm answers; `image_id` is the id
    /// of `target.image` (None when unknown).
    pub fn key(target: &Target, image_id: Option<&str>) -> CacheKey {
        let mut h = Sha256::new();
        let macros = target.rpm_defines().join("\n");
        for part in [
            QUERY_VERSION,
            target.image.as_str(),
            image_id.unwrap_or(""),
            target.arch.as_str(),
            macros.as_str(),
            target.uname_r.as_deref().unwrap_or(""),
        ] {
            h.update(part.as_bytes());
            h.update([0]);
        }
        CacheKey(format!(
            "{}-{}",
            target.name,
            hex::encode(&h.finalize()[..6])
        ))
    }

    fn image_file(&self, image: &str) -> PathBuf {
        let h = Sha256::digest(image.as_bytes());
        self.dir.join("images").join(hex::encode(&h[..8]))
    }

    /// The id `image` had at the last query, so that a plan without Docker still finds
    /// the answers given for it.
    pub fn remembered_image(&self, image: &str) -> Option<String> {
        let s = std::fs::read_to_string(self.image_file(image)).ok()?;
        let s = s.trim();
        (!s.is_empty() && s.len() < 200).then(|| s.to_string())
    }

    pub(super) fn remember_image(&self, image: &str, id: &str) -> std::io::Result<()> {
        if self.remembered_image(image).as_deref() == Some(id) {
            return Ok(());
        }
        let path = self.image_file(image);
        if let Some(d) = path.parent() {
            std::fs::create_dir_all(d)?;
        }
        let tmp = path.with_extension(format!("tmp{}", std::process::id()));
        std::fs::write(&tmp, id)?;
        std::fs::rename(&tmp, &path)
    }

    fn path(&self, key: &CacheKey, blob: &str) -> Option<PathBuf> {
        if blob.len() < 4 || !blob.chars().all(|c| c.is_ascii_hexdigit()) {
            return None;
        }
        Some(
            self.dir
                .join(key.as_str())
                .join(&blob[..2])
                .join(format!("{blob}.json")),
        )
    }

    pub fn get(&self, key: &CacheKey, blob: &str) -> Option<Answer> {
        let text = std::fs::read(self.path(key, blob)?).ok()?;
        match serde_json::from_slice(&text).ok()? {
            Stored::Ok { info } => Some(Ok(info)),
            Stored::Error { message } => Some(Err(AnswerError::Cached(message))),
        }
    }

    /// Written to a temporary file and renamed: concurrent planners never read half a file.
    pub fn put(&self, key: &CacheKey, blob: &str, answer: &Answer) -> std::io::Result<()> {
        let Some(path) = self.path(key, blob) else {
            return Ok(());
        };
        if let Some(d) = path.parent() {
            std::fs::create_dir_all(d)?;
        }
        let stored = match answer {
            Ok(info) => Stored::Ok { info: info.clone() },
            Err(e) => Stored::Error {
                message: e.to_string(),
            },
        };
        let tmp = path.with_extension(format!("tmp{}", std::process::id()));
        std::fs::write(
            &tmp,
            serde_json::to_vec(&stored).map_err(std::io::Error::other)?,
        )?;
        std::fs::rename(&tmp, &path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Nevr;

    #[test]
    fn cache_key_follows_image_id_and_macros() {
        let mut t = crate::config::Config::load(None)
            .expect("defaults")
            .targets
            .into_values()
            .next()
            .expect("a target");
        let k = SpecCache::key(&t, Some("sha256:1"));
        assert_ne!(k, SpecCache::key(&t, Some("sha256:2")));
        t.macros.insert("fedora".into(), "40".into());
        let k2 = SpecCache::key(&t, Some("sha256:1"));
        assert_ne!(k, k2);
        t.uname_r = Some("6.8.5".into());
        assert_ne!(k2, SpecCache::key(&t, Some("sha256:1")));
    }

    #[test]
    fn cache_round_trip() {
        let t = tempfile::tempdir().expect("tmp");
        let c = SpecCache::new(t.path());
        let target = crate::config::Config::load(None)
            .expect("defaults")
            .targets
            .into_values()
            .next()
            .expect("a target");
        let key = SpecCache::key(&target, None);
        let blob = "0123456789abcdef0123456789abcdef01234567";
        assert!(c.get(&key, blob).is_none());
        let info = SpecInfo {
            nevr: Nevr::parse_query_line("a\t(none)\t1\t1").expect("nevr"),
            build_requires: vec!["x".into()],
            provides: vec!["a = 1-1".into()],
            sources: vec![],
        };
        c.put(&key, blob, &Ok(info.clone())).expect("put");
        assert_eq!(c.get(&key, blob), Some(Ok(info)));
        let bad = AnswerError::NoNevr {
            path: "p/p.spec".into(),
        };
        c.put(&key, blob, &Err(bad.clone())).expect("put");
        // Kept as its message, read back as one.
        assert_eq!(
            c.get(&key, blob),
            Some(Err(AnswerError::Cached(bad.to_string())))
        );
        assert!(c.get(&key, "../../etc").is_none());
        c.remember_image("img", "sha256:abc").expect("remember");
        assert_eq!(c.remembered_image("img").as_deref(), Some("sha256:abc"));
    }
}
