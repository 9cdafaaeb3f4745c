//! A cache of bare mirrors, one per remote URL.
//!
//! Fetches take the mirror's lock twice: a tokio mutex (one fetch per mirror in this process,
//! without blocking a runtime worker while waiting) and an `flock` on `<mirror>.lock` (one
//! fetch per mirror across processes). Readers take no lock: libgit2 writes packs before
//! their index and updates refs by lock file and rename, so a reader sees a ref either
//! before or after a fetch, never half-written.

use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use git2::{AutotagOption, Cred, CredentialType, FetchOptions, RemoteCallbacks, Repository};
use sha2::{Digest, Sha256};

use super::{blocking, GitError};

/// How to authenticate to a remote. Secrets are never logged or put in messages.
#[derive(Clone, Default)]
pub enum FetchAuth {
    /// Public repositories, `file://` and local paths.
    #[default]
    None,
    /// HTTPS with a token as password (GitHub: user `x-access-token`).
    Token { username: String, token: String },
    /// SSH with a private key file (Gerrit).
    SshKey {
        username: String,
        private_key: PathBuf,
        passphrase: Option<String>,
    },
}

/// Mints short-lived fetch credentials (a GitHub App's installation token), caching them
/// while they stay valid.
pub trait TokenSource: Send + Sync {
    fn mint(&self) -> futures_util::future::BoxFuture<'_, Result<FetchAuth, MintError>>;
}

/// Why no token could be minted; keeps the forge's error as its source.
#[derive(Debug, thiserror::Error)]
pub enum MintError {
    /// This source cannot mint at all (a configuration mistake).
    #[error("{0}")]
    Unsupported(&'static str),
    #[error("{call}: {source}")]
    Api {
        call: &'static str,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

/// Where a fetch's credentials come from.
#[derive(Clone)]
pub enum Credentials {
    Fixed(FetchAuth),
    /// Asked before each fetch over HTTP(S); other transports (`file://`, local paths) get
    /// none, so that a forge being down does not stop fetches that need no token.
    Minted(Arc<dyn TokenSource>),
    /// `inner`, for fetches of URLs on `origin`'s origin (scheme, host, port) only; any
    /// other fetch gets none. One forge's token must not go to every mirror's host.
    Scoped {
        origin: String,
        inner: Arc<Credentials>,
    },
    /// The first of these that has credentials for a URL (each usually scoped).
    AnyOf(Vec<Credentials>),
}

impl Default for Credentials {
    fn default() -> Credentials {
        Credentials::Fixed(FetchAuth::None)
    }
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Credentials::Fixed(a) => write!(f, "Credentials::Fixed({a:?})"),
            Credentials::Minted(_) => f.write_str("Credentials::Minted"),
            Credentials::Scoped { origin, inner } => {
                write!(
                    f,
                    "Credentials::Scoped({}, {inner:?})",
                    crate::model::redact(origin)
                )
            }
            Credentials::AnyOf(all) => write!(f, "Credentials::AnyOf({all:?})"),
        }
    }
}

impl From<FetchAuth> for Credentials {
    fn from(a: FetchAuth) -> Credentials {
        Credentials::Fixed(a)
    }
}

impl Credentials {
    /// These credentials for fetches of URLs on `origin`'s origin only.
    pub fn scoped_to(self, origin: impl Into<String>) -> Credentials {
        Credentials::Scoped {
            origin: origin.into(),
            inner: Arc::new(self),
        }
    }

    /// The credentials written into a configured HTTP(S) URL (`https://user:token@host/base`),
    /// as a token for that URL's origin only; `None` when it carries none (or is not HTTP:
    /// an SSH URL's user name is who to log in as, with the configured key). The URL itself is
    /// kept without them ([`crate::model::without_userinfo`]).
    pub fn from_url(url: &str) -> Option<Credentials> {
        let u = url::Url::parse(url).ok()?;
        let http = matches!(u.scheme(), "http" | "https");
        if !http || (u.username().is_empty() && u.password().is_none()) {
            return None;
        }
        let auth = FetchAuth::Token {
            username: crate::http::percent_decode(u.username()),
            token: crate::http::percent_decode(u.password().unwrap_or("")),
        };
        Some(Credentials::Fixed(auth).scoped_to(crate::model::without_userinfo(url)))
    }

    /// The credentials to fetch `url` with now.
    pub async fn for_url(&self, url: &str) -> Result<FetchAuth, GitError> {
        match self {
            Credentials::AnyOf(all) => {
                for c in all {
                    let auth = Box::pin(c.for_url(url)).await?;
                    if !matches!(auth, FetchAuth::None) {
                        return Ok(auth);
                    }
                }
                Ok(FetchAuth::None)
            }
            Credentials::Scoped { origin, inner } => {
                if !super::scope::may_send_credentials(origin, url) {
                    return Ok(FetchAuth::None);
                }
                Box::pin(inner.for_url(url)).await
            }
            Credentials::Fixed(a) => Ok(a.clone()),
            Credentials::Minted(source) => {
                if !(url.starts_with("https://") || url.starts_with("http://")) {
                    return Ok(FetchAuth::None);
                }
                source.mint().await.map_err(|e| GitError::Unreachable {
                    url: crate::model::redact(url),
                    message: format!("cannot get an access token to fetch with: {e}"),
                })
            }
        }
    }
}

impl std::fmt::Debug for FetchAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FetchAuth::None => f.write_str("Auth::None"),
            FetchAuth::Token { username, .. } => write!(f, "Auth::Token({username}, <secret>)"),
            FetchAuth::SshKey {
                username,
                private_key,
                ..
            } => write!(f, "Auth::SshKey({username}, {})", private_key.display()),
        }
    }
}

/// A ref to fetch. Each is fetched to the same name in the mirror, so that the mirror's
/// refs read like the remote's.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum RemoteRef {
    Branch(String),
    Tag(String),
    /// GitHub's `refs/pull/N/head`.
    Pull(u64),
    /// Gerrit's `refs/changes/NN/CHANGE/PATCHSET` (NN: the change number's last two digits).
    GerritChange {
        change: u64,
        patchset: u32,
    },
    /// Every branch (`refs/heads/*`).
    AllBranches,
    /// Any other full ref name (`refs/...`).
    Other(String),
}

impl RemoteRef {
    /// Reads `main`, `refs/heads/main`, `refs/pull/7/head`, `pull/7`, `refs/changes/45/12345/2`.
    pub fn parse(s: &str) -> Option<RemoteRef> {
        if let Some(n) = s
            .strip_prefix("refs/pull/")
            .or_else(|| s.strip_prefix("pull/"))
            .map(|r| r.trim_end_matches("/head").trim_end_matches("/merge"))
        {
            return n.parse().ok().map(RemoteRef::Pull);
        }
        if let Some(rest) = s.strip_prefix("refs/changes/") {
            let parts: Vec<&str> = rest.split('/').collect();
            if let [_, change, ps] = parts.as_slice() {
                return Some(RemoteRef::GerritChange {
                    change: change.parse().ok()?,
                    patchset: ps.parse().ok()?,
                });
            }
            return None;
        }
        if let Some(b) = s.strip_prefix("refs/heads/") {
            return valid_ref(b).then(|| RemoteRef::Branch(b.to_string()));
        }
        if let Some(t) = s.strip_prefix("refs/tags/") {
            return valid_ref(t).then(|| RemoteRef::Tag(t.to_string()));
        }
        if s.starts_with("refs/") {
            return git2::Reference::is_valid_name(s).then(|| RemoteRef::Other(s.to_string()));
        }
        valid_ref(s).then(|| RemoteRef::Branch(s.to_string()))
    }

    /// The full ref name, in the remote and in the mirror.
    pub fn refname(&self) -> String {
        match self {
            RemoteRef::Branch(b) => format!("refs/heads/{b}"),
            RemoteRef::Tag(t) => format!("refs/tags/{t}"),
            RemoteRef::Pull(n) => format!("refs/pull/{n}/head"),
            RemoteRef::GerritChange { change, patchset } => {
                format!("refs/changes/{:02}/{change}/{patchset}", change % 100)
            }
            RemoteRef::AllBranches => "refs/heads/*".to_string(),
            RemoteRef::Other(r) => r.clone(),
        }
    }

    /// The forced refspec that mirrors this ref under its own name.
    pub fn refspec(&self) -> String {
        let r = self.refname();
        format!("+{r}:{r}")
    }

    /// Every ref a planned commit can come from: branches, GitHub's pull request heads and
    /// Gerrit's patchsets (`refs/changes/*`). What an export fetches when its commit is not
    /// in the mirror (planned by another process, or the mirror was removed since).
    pub fn every_head() -> Vec<RemoteRef> {
        vec![
            RemoteRef::AllBranches,
            RemoteRef::Other("refs/pull/*/head".into()),
            RemoteRef::Other("refs/changes/*".into()),
        ]
    }
}

fn valid_ref(short: &str) -> bool {
    !short.is_empty() && git2::Reference::is_valid_name(&format!("refs/heads/{short}"))
}

/// What a fetch brought in.
#[derive(Debug, Clone, Default)]
pub struct FetchReport {
    /// The remote's default branch (`refs/heads/main`), when it advertises one.
    pub default_branch: Option<String>,
    /// Refs that changed, with their new ids.
    pub updated: Vec<(String, git2::Oid)>,
}

/// The cache: a directory of bare repositories named after their URLs.
#[derive(Debug, Clone)]
pub struct MirrorCache {
    root: PathBuf,
    locks: Arc<Mutex<HashMap<PathBuf, Arc<tokio::sync::Mutex<()>>>>>,
}

/// One bare mirror. Cheap to clone; open the repository with [`Mirror::open`] per thread.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mirror {
    pub url: String,
    pub path: PathBuf,
}

/// A remote that stops answering must not hold a mirror's lock forever.
const CONNECT_TIMEOUT_MS: i32 = 30_000;
const SERVER_TIMEOUT_MS: i32 = 300_000;

/// Sets libgit2's process-wide options once: network timeouts, and no SHA-1 re-check of
/// every object read (like git itself; fetched packs are still verified when indexed).
pub fn init_libgit2() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        git2::opts::strict_hash_verification(false);
        // SAFETY: libgit2's global options are set once, before this process starts any fetch.
        unsafe {
            let _ = git2::opts::set_server_connect_timeout_in_milliseconds(CONNECT_TIMEOUT_MS);
            let _ = git2::opts::set_server_timeout_in_milliseconds(SERVER_TIMEOUT_MS);
        }
    });
}

impl MirrorCache {
    pub fn new(root: impl Into<PathBuf>) -> MirrorCache {
        init_libgit2();
        MirrorCache {
            root: root.into(),
            locks: Arc::default(),
        }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Where the mirror of `url` lives: a readable slug plus a hash, so two URLs never share one.
    pub fn mirror_for(&self, url: &str) -> Mirror {
        let digest = Sha256::digest(url.as_bytes());
        let slug: String = url
            .rsplit(['/', ':'])
            .find(|s| !s.is_empty())
            .unwrap_or("repo")
            .trim_end_matches(".git")
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                    c
                } else {
                    '_'
                }
            })
            .take(40)
            .collect();
        Mirror {
            url: url.to_string(),
            path: self
                .root
                .join(format!("{slug}-{}.git", hex::encode(&digest[..6]))),
        }
    }

    fn lock_for(&self, path: &Path) -> Arc<tokio::sync::Mutex<()>> {
        let mut map = self.locks.lock().unwrap_or_else(|p| p.into_inner());
        map.entry(path.to_path_buf()).or_default().clone()
    }

    /// Fetches `refs` of `url` into its mirror (made on first use). One fetch per mirror at
    /// a time; the network part runs on the blocking pool.
    pub async fn fetch(
        &self,
        url: &str,
        refs: &[RemoteRef],
        auth: &FetchAuth,
    ) -> Result<(Mirror, FetchReport), GitError> {
        let mirror = self.mirror_for(url);
        let lock = self.lock_for(&mirror.path);
        let _guard = lock.lock().await;
        let m = mirror.clone();
        let refs = refs.to_vec();
        let auth = auth.clone();
        let report = blocking(move || m.fetch_blocking(&refs, &auth)).await?;
        Ok((mirror, report))
    }
}

impl Mirror {
    /// Opens the bare repository (for reading; no lock needed).
    pub fn open(&self) -> Result<Repository, GitError> {
        Repository::open_bare(&self.path).map_err(|e| GitError::repo(&self.path, e))
    }

    /// The blocking fetch, under the cross-process lock. Callers in async code use
    /// [`MirrorCache::fetch`], which also serialises fetches within the process.
    pub fn fetch_blocking(
        &self,
        refs: &[RemoteRef],
        auth: &FetchAuth,
    ) -> Result<FetchReport, GitError> {
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| GitError::Io { path, source }
        };
        let parent = self.path.parent().unwrap_or(Path::new("."));
        std::fs::create_dir_all(parent).map_err(io(parent))?;
        let lock_path = self.path.with_extension("lock");
        let lock = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(io(&lock_path))?;
        lock.lock().map_err(io(&lock_path))?;
        let repo = self.open_or_init()?;
        let result = self.fetch_locked(&repo, refs, auth);
        let _ = lock.unlock();
        result
    }

    /// Made in a temporary directory and renamed, so nobody opens a half-initialised mirror.
    fn open_or_init(&self) -> Result<Repository, GitError> {
        if self.path.join("HEAD").exists() {
            return self.open();
        }
        let tmp = self
            .path
            .with_extension(format!("init-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&tmp);
        let mut opts = git2::RepositoryInitOptions::new();
        opts.bare(true).mkpath(true);
        let repo = Repository::init_opts(&tmp, &opts).map_err(|e| GitError::repo(&tmp, e))?;
        drop(repo);
        std::fs::rename(&tmp, &self.path).map_err(|source| GitError::Io {
            path: self.path.clone(),
            source,
        })?;
        self.open()
    }

    fn fetch_locked(
        &self,
        repo: &Repository,
        refs: &[RemoteRef],
        auth: &FetchAuth,
    ) -> Result<FetchReport, GitError> {
        let mut remote = repo
            .remote_anonymous(&self.url)
            .map_err(|e| GitError::repo(&self.path, e))?;
        let specs: Vec<String> = refs.iter().map(RemoteRef::refspec).collect();
        let mut updated = Vec::new();
        {
            let mut cb = callbacks(&self.url, auth);
            cb.update_tips(|name, _old, new| {
                updated.push((name.to_string(), new));
                true
            });
            let mut fo = FetchOptions::new();
            fo.remote_callbacks(cb)
                .download_tags(AutotagOption::None)
                .update_fetchhead(false);
            remote
                .fetch(&specs, Some(&mut fo), Some("packetary fetch"))
                .map_err(|e| classify(&self.url, e))?;
        }
        let advertised: Vec<String> = remote
            .list()
            .map(|heads| heads.iter().map(|h| h.name().to_string()).collect())
            .unwrap_or_default();
        for r in refs {
            let name = r.refname();
            if !name.contains('*') && !advertised.contains(&name) {
                return Err(GitError::MissingRef {
                    url: crate::model::redact(&self.url),
                    refname: name,
                });
            }
        }
        let default_branch = remote
            .default_branch()
            .ok()
            .and_then(|b| b.as_str().ok().map(|s: &str| s.to_string()));
        if let Some(b) = &default_branch {
            // The mirror's HEAD names the remote's default branch, for new-branch pushes.
            let _ = repo.set_head(b);
        }
        Ok(FetchReport {
            default_branch,
            updated,
        })
    }
}

/// The callbacks of a fetch of `configured`: credentials only for its own origin (see
/// [`super::scope`]).
fn callbacks(configured: &str, auth: &FetchAuth) -> RemoteCallbacks<'static> {
    let mut cb = RemoteCallbacks::new();
    let auth = auth.clone();
    let configured = configured.to_string();
    let mut attempts = 0u32;
    cb.credentials(move |asked, user_from_url, allowed| {
        if !matches!(auth, FetchAuth::None)
            && !super::scope::may_send_credentials(&configured, asked)
        {
            tracing::warn!(
                configured = %crate::model::redact(&configured),
                asked = %crate::model::redact(asked),
                "credentials refused to another origin (a redirect?)"
            );
            return Err(git2::Error::from_str(
                "credentials are only sent to the configured URL's origin",
            ));
        }
        // libgit2 asks again after a rejected credential; stop instead of looping forever.
        attempts += 1;
        if attempts > 2 {
            return Err(git2::Error::from_str("credentials rejected"));
        }
        match &auth {
            FetchAuth::Token { username, token }
                if allowed.contains(CredentialType::USER_PASS_PLAINTEXT) =>
            {
                Cred::userpass_plaintext(username, token)
            }
            FetchAuth::SshKey {
                username,
                private_key,
                passphrase,
            } => {
                let user = user_from_url.unwrap_or(username);
                if allowed.contains(CredentialType::USERNAME) {
                    return Cred::username(user);
                }
                Cred::ssh_key(user, None, private_key, passphrase.as_deref())
            }
            _ => Err(git2::Error::from_str(
                "the remote asks for credentials and none are configured",
            )),
        }
    });
    cb
}

fn classify(url: &str, e: git2::Error) -> GitError {
    let message = e.message().to_string();
    if e.class() == git2::ErrorClass::Http && message.contains("401")
        || e.code() == git2::ErrorCode::Auth
        || message.contains("credentials")
        || message.contains("authentication")
    {
        GitError::Auth {
            url: crate::model::redact(url),
            message: crate::model::redact(&message),
        }
    } else {
        GitError::Unreachable {
            url: crate::model::redact(url),
            message: crate::model::redact(&message),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refs_parse_and_map_to_refspecs() {
        assert_eq!(
            RemoteRef::parse("main"),
            Some(RemoteRef::Branch("main".into()))
        );
        assert_eq!(
            RemoteRef::parse("refs/pull/17/head"),
            Some(RemoteRef::Pull(17))
        );
        assert_eq!(RemoteRef::parse("pull/17"), Some(RemoteRef::Pull(17)));
        let g = RemoteRef::parse("refs/changes/45/12345/3").expect("gerrit ref");
        assert_eq!(
            g,
            RemoteRef::GerritChange {
                change: 12345,
                patchset: 3
            }
        );
        assert_eq!(
            g.refspec(),
            "+refs/changes/45/12345/3:refs/changes/45/12345/3"
        );
        assert_eq!(
            RemoteRef::GerritChange {
                change: 7,
                patchset: 1
            }
            .refname(),
            "refs/changes/07/7/1"
        );
        assert_eq!(
            RemoteRef::Pull(3).refspec(),
            "+refs/pull/3/head:refs/pull/3/head"
        );
        assert_eq!(
            RemoteRef::AllBranches.refspec(),
            "+refs/heads/*:refs/heads/*"
        );
        assert_eq!(RemoteRef::parse("bad..name"), None);
        assert_eq!(RemoteRef::parse("refs/changes/x"), None);
    }

    #[test]
    fn mirror_names_are_distinct_and_readable() {
        let c = MirrorCache::new("/m");
        let a = c.mirror_for("https://github.com/o/pkgs.git");
        let b = c.mirror_for("https://gitlab.com/o/pkgs.git");
        assert_ne!(a.path, b.path);
        let name = a
            .path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default()
            .to_string();
        assert!(
            name.starts_with("pkgs-") && name.ends_with(".git"),
            "{name}"
        );
    }

    #[test]
    fn secrets_stay_out_of_debug_output() {
        let a = FetchAuth::Token {
            username: "x-access-token".into(),
            token: "ghs_secret".into(),
        };
        assert!(!format!("{a:?}").contains("ghs_secret"));
    }
}
