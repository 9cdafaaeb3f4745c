//! The service's side of a Swarm job's transfers: the job has no disk in common with the
//! service, so its agent fetches the build's inputs (`GET /tasks/<build>/inputs`) and
//! uploads its `/out` (`PUT /tasks/<build>/results`) over HTTP, with a token of its own
//! build. The upload is checked as the local executor's download is (`results`: regular
//! files only, nothing outside the tree, sizes, counts and the change's disk allowance),
//! unpacked aside and moved into the build's staging directory only when whole: a partial
//! upload is never taken as a result.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use axum::body::Body;
use axum::extract::{Path as UrlPath, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, put};
use axum::Router;
use futures_util::StreamExt;
use sha2::{Digest, Sha256};

use crate::executor::results::{unpack_upload, DiskAllowance, FetchError, Taken};
use crate::model::{BuildId, PackageSource};

/// What a job fetches: the package's files and those its backend generates.
#[derive(Debug, Clone)]
pub(super) struct Inputs {
    pub package: PackageSource,
    pub spec_name: String,
    pub files: Vec<(String, String)>,
}

/// One running job's transfers.
pub(super) struct Slot {
    /// SHA-256 of the job's token: compared in constant time, never kept in clear.
    token: [u8; 32],
    /// `None` for a job picked up after a restart: it fetched them before.
    inputs: Option<Inputs>,
    /// The build's staging directory (the service's own), and what it may still write.
    dest: PathBuf,
    allowance: Option<DiskAllowance>,
    /// The upload's outcome once one ended; held while one is being unpacked.
    upload: tokio::sync::Mutex<Option<Result<Taken, FetchError>>>,
    /// What the input archive left out of the package, for `root.log`.
    left_out: Mutex<Vec<String>>,
}

impl Slot {
    /// The upload's outcome, if one ended (taken once).
    pub async fn take_upload(&self) -> Option<Result<Taken, FetchError>> {
        self.upload.lock().await.take()
    }

    pub fn left_out(&self) -> Vec<String> {
        self.left_out
            .lock()
            .map(|mut l| std::mem::take(&mut *l))
            .unwrap_or_default()
    }
}

/// The jobs this process serves, by build.
#[derive(Default)]
pub struct Tasks {
    slots: Mutex<HashMap<BuildId, Arc<Slot>>>,
}

impl Tasks {
    pub(super) fn register(
        &self,
        id: &BuildId,
        token: &str,
        inputs: Option<Inputs>,
        dest: PathBuf,
        allowance: Option<DiskAllowance>,
    ) -> Arc<Slot> {
        // What an upload cut by a crash of this service left aside is never a result.
        remove_uploads_aside(&dest);
        let slot = Arc::new(Slot {
            token: Sha256::digest(token.as_bytes()).into(),
            inputs,
            dest,
            allowance,
            upload: tokio::sync::Mutex::new(None),
            left_out: Mutex::default(),
        });
        if let Ok(mut m) = self.slots.lock() {
            m.insert(id.clone(), slot.clone());
        }
        slot
    }

    pub(super) fn forget(&self, id: &BuildId) {
        if let Ok(mut m) = self.slots.lock() {
            m.remove(id);
        }
    }

    /// The slot of `build` if the request carries its token.
    fn authorized(&self, build: &str, headers: &HeaderMap) -> Result<Arc<Slot>, Denied> {
        let denied = || Denied;
        let id = BuildId::parse(build).map_err(|_| denied())?;
        let slot = self
            .slots
            .lock()
            .ok()
            .and_then(|m| m.get(&id).cloned())
            .ok_or_else(denied)?;
        let given = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .ok_or_else(denied)?;
        let digest: [u8; 32] = Sha256::digest(given.as_bytes()).into();
        if bool::from(subtle::ConstantTimeEq::ct_eq(&digest[..], &slot.token[..])) {
            Ok(slot)
        } else {
            Err(denied())
        }
    }
}

/// A request without its build's token (or for a build not served here).
struct Denied;

impl IntoResponse for Denied {
    fn into_response(self) -> Response {
        (StatusCode::UNAUTHORIZED, "unknown build or wrong token\n").into_response()
    }
}

/// The routes a job's agent calls, under `[executor] callback_url`.
pub fn router(tasks: Arc<Tasks>) -> Router {
    Router::new()
        .route("/tasks/{build}/inputs", get(inputs))
        .route("/tasks/{build}/results", put(results))
        .with_state(tasks)
}

async fn inputs(
    State(tasks): State<Arc<Tasks>>,
    UrlPath(build): UrlPath<String>,
    headers: HeaderMap,
) -> Response {
    let slot = match tasks.authorized(&build, &headers) {
        Ok(s) => s,
        Err(r) => return r.into_response(),
    };
    let Some(i) = slot.inputs.clone() else {
        return (
            StatusCode::GONE,
            "this build's inputs were fetched before the service restarted\n",
        )
            .into_response();
    };
    let (body, packing) = super::super::inputs::stream(&i.package, &i.spec_name, &i.files);
    let noted = slot.clone();
    tokio::spawn(async move {
        if let Ok(Ok(left)) = packing.await {
            if let Ok(mut l) = noted.left_out.lock() {
                *l = left;
            }
        }
    });
    (
        [(header::CONTENT_TYPE, "application/x-tar")],
        Body::from_stream(body),
    )
        .into_response()
}

async fn results(
    State(tasks): State<Arc<Tasks>>,
    UrlPath(build): UrlPath<String>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let slot = match tasks.authorized(&build, &headers) {
        Ok(s) => s,
        Err(r) => return r.into_response(),
    };
    // A length the connection must deliver: a cut upload then ends in an error, never in
    // an archive that merely looks shorter.
    if headers.get(header::CONTENT_LENGTH).is_none() {
        return (
            StatusCode::LENGTH_REQUIRED,
            "send the archive with a Content-Length\n",
        )
            .into_response();
    }
    let Ok(mut upload) = slot.upload.try_lock() else {
        return (
            StatusCode::CONFLICT,
            "an upload of this build is under way\n",
        )
            .into_response();
    };
    if matches!(*upload, Some(Ok(_))) {
        return (
            StatusCode::CONFLICT,
            "this build's results were uploaded already\n",
        )
            .into_response();
    }
    let aside = slot
        .dest
        .join(format!(".upload-{:016x}", rand::random::<u64>()));
    if let Err(e) = tokio::fs::create_dir_all(&aside).await {
        tracing::error!(build, "cannot make {}: {e}", aside.display());
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            "the service cannot write\n",
        )
            .into_response();
    }
    let stream = body
        .into_data_stream()
        .map(|c| c.map_err(std::io::Error::other));
    let unpacked = unpack_upload(stream, aside.clone(), slot.allowance).await;
    let taken = match unpacked {
        Ok(t) => move_into(&aside, &slot.dest, &t).await.map(|()| t),
        Err(e) => Err(e),
    };
    let _ = tokio::fs::remove_dir_all(&aside).await;
    let response = match &taken {
        Ok(t) => (StatusCode::OK, format!("taken: {} files\n", t.files.len())).into_response(),
        Err(FetchError::TooBig(m)) => {
            (StatusCode::PAYLOAD_TOO_LARGE, format!("{m}\n")).into_response()
        }
        Err(FetchError::Infra(m)) => (StatusCode::BAD_REQUEST, format!("{m}\n")).into_response(),
    };
    // A failed try is kept (the agent may try again); the build reads the last outcome.
    *upload = Some(taken);
    response
}

/// Moves what an upload left in `aside` into the staging directory `dest`: the result files
/// by name, the backend's logs by relative path.
async fn move_into(aside: &Path, dest: &Path, taken: &Taken) -> Result<(), FetchError> {
    let names = taken
        .files
        .iter()
        .map(PathBuf::from)
        .chain(taken.logs.iter().cloned());
    for rel in names {
        let (from, to) = (aside.join(&rel), dest.join(&rel));
        if let Some(parent) = to.parent() {
            tokio::fs::create_dir_all(parent)
                .await
                .map_err(|e| FetchError::Infra(format!("create {}: {e}", parent.display())))?;
        }
        tokio::fs::rename(&from, &to)
            .await
            .map_err(|e| FetchError::Infra(format!("move {}: {e}", rel.display())))?;
    }
    Ok(())
}

/// Removes the `.upload-*` directories under `dest` (uploads a killed service never moved in).
fn remove_uploads_aside(dest: &Path) {
    for e in std::fs::read_dir(dest).into_iter().flatten().flatten() {
        if e.file_name().to_string_lossy().starts_with(".upload-") {
            let _ = std::fs::remove_dir_all(e.path());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::Request;
    use tower::ServiceExt;

    fn out_tar(entries: &[(&str, tar::EntryType, &[u8], Option<&str>)]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for (path, t, data, link) in entries {
            let mut h = tar::Header::new_gnu();
            h.set_entry_type(*t);
            h.set_size(data.len() as u64);
            h.set_mode(0o644);
            if let Some(l) = link {
                h.set_link_name(l).expect("link");
            }
            h.set_path(path).expect("path");
            h.set_cksum();
            b.append(&h, *data).expect("append");
        }
        b.into_inner().expect("tar")
    }

    fn put(token: &str, body: Vec<u8>, length: bool) -> Request<Body> {
        let mut r =
            Request::put("/tasks/b1/results").header("authorization", format!("Bearer {token}"));
        if length {
            r = r.header("content-length", body.len());
        }
        r.body(Body::from(body)).expect("request")
    }

    fn setup() -> (Arc<Tasks>, Arc<Slot>, tempfile::TempDir) {
        let d = tempfile::tempdir().expect("tmp");
        let tasks = Arc::new(Tasks::default());
        let id = BuildId::parse("b1").expect("id");
        let slot = tasks.register(&id, "s3cret", None, d.path().to_path_buf(), None);
        (tasks, slot, d)
    }

    /// An upload is taken only with its build's token and a length, is checked like a
    /// download (a link is refused by name), lands whole, and is taken once.
    #[tokio::test]
    async fn uploads_need_the_token_and_are_checked_and_taken_once() {
        let (tasks, slot, d) = setup();
        let good = out_tar(&[
            ("out/", tar::EntryType::Directory, b"", None),
            ("out/a-1-1.src.rpm", tar::EntryType::Regular, b"srpm", None),
            (
                "out/a-1-1.noarch.rpm",
                tar::EntryType::Regular,
                b"rpm",
                None,
            ),
        ]);
        let app = router(tasks.clone());
        let r = app
            .clone()
            .oneshot(put("wrong", good.clone(), true))
            .await
            .expect("answer");
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
        let r = app
            .clone()
            .oneshot(put("s3cret", good.clone(), false))
            .await
            .expect("answer");
        assert_eq!(r.status(), StatusCode::LENGTH_REQUIRED);
        assert!(slot.take_upload().await.is_none(), "nothing taken yet");
        let r = app
            .clone()
            .oneshot(put("s3cret", good.clone(), true))
            .await
            .expect("answer");
        assert_eq!(r.status(), StatusCode::OK);
        let r = app
            .clone()
            .oneshot(put("s3cret", good, true))
            .await
            .expect("answer");
        assert_eq!(r.status(), StatusCode::CONFLICT, "taken once");
        let taken = slot.take_upload().await.expect("an upload").expect("taken");
        assert_eq!(taken.files, ["a-1-1.src.rpm", "a-1-1.noarch.rpm"]);
        assert_eq!(
            std::fs::read(d.path().join("a-1-1.noarch.rpm")).expect("moved in"),
            b"rpm"
        );
        let left: Vec<_> = std::fs::read_dir(d.path())
            .expect("dir")
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().starts_with(".upload-"))
            .collect();
        assert!(left.is_empty(), "nothing left aside");

        let (tasks, slot, _d) = setup();
        let link = out_tar(&[
            ("out/", tar::EntryType::Directory, b"", None),
            (
                "out/x-1-1.noarch.rpm",
                tar::EntryType::Symlink,
                b"",
                Some("/etc/shadow"),
            ),
        ]);
        let r = router(tasks)
            .oneshot(put("s3cret", link, true))
            .await
            .expect("answer");
        assert_eq!(r.status(), StatusCode::OK);
        let taken = slot.take_upload().await.expect("an upload").expect("taken");
        assert!(
            taken.files.is_empty() && !taken.refused.is_empty(),
            "{taken:?}"
        );
    }

    /// An upload cut short (fewer bytes than its length) is an error and writes nothing.
    #[tokio::test]
    async fn a_cut_upload_is_never_a_result() {
        let (tasks, slot, d) = setup();
        let mut whole = out_tar(&[
            ("out/", tar::EntryType::Directory, b"", None),
            (
                "out/a-1-1.noarch.rpm",
                tar::EntryType::Regular,
                &[7u8; 5000],
                None,
            ),
        ]);
        let length = whole.len();
        whole.truncate(2048);
        let chunks = vec![
            Ok::<_, std::io::Error>(bytes::Bytes::from(whole)),
            Err(std::io::Error::other("connection reset")),
        ];
        let req = Request::put("/tasks/b1/results")
            .header("authorization", "Bearer s3cret")
            .header("content-length", length)
            .body(Body::from_stream(futures_util::stream::iter(chunks)))
            .expect("request");
        let r = router(tasks).oneshot(req).await.expect("answer");
        assert_eq!(r.status(), StatusCode::BAD_REQUEST);
        assert!(matches!(slot.take_upload().await, Some(Err(_))));
        let names: Vec<_> = std::fs::read_dir(d.path())
            .expect("dir")
            .flatten()
            .map(|e| e.file_name())
            .collect();
        assert!(names.is_empty(), "written: {names:?}");
    }
}
