//! `/repos/...`: the package repositories under `<data_dir>/repos/` (see `crate::repos`),
//! and `.repo` files for `/etc/yum.repos.d/`.
//!
//! Paths are taken apart segment by segment: no empty, `.`, `..` or hidden segment; inside
//! a repository directory only `latest` and snapshot ids are reachable (not the pool, the
//! lock or the cache); the file finally served is canonicalized and must still lie under
//! the repositories' directory, so no link leads out of it. A change's repositories
//! (`changes/...`) and the stage repository of a build (`stages/<build-id>/`, what its
//! change's earlier stages built) are as private as the repository they were built from,
//! and neither is listed. A release's repositories, `.repo` files and entry in `/repos/`
//! need the page token when a private repository feeds it (`Access::release_is_private`).

use std::fmt::Write;
use std::path::{Path, PathBuf};

use axum::extract::{Path as UrlPath, State};
use axum::http::{header, HeaderMap, StatusCode, Uri};
use axum::response::{Html, IntoResponse, Redirect, Response};

use super::html::{escape, not_found, send_file};
use super::{text, AppState};
use crate::model::{BuildId, ForgeKind, RepoId};
use crate::repos::{repo_file, SnapshotId};

/// A repository directory: it has the lock file every publication takes.
fn is_repo_dir(dir: &Path) -> bool {
    dir.join(".lock").is_file()
}

fn content_type(name: &str) -> &'static str {
    if name.ends_with(".rpm") {
        "application/x-rpm"
    } else if name.ends_with(".xml") {
        "application/xml"
    } else if name.ends_with(".gz") {
        "application/gzip"
    } else if name.ends_with(".json") {
        "application/json"
    } else {
        "application/octet-stream"
    }
}

pub async fn serve_root(State(app): State<AppState>, headers: HeaderMap) -> Response {
    let shown = |name: &str| {
        matches!(name, "changes" | "stages") || app.access.may_see_release(name, &headers)
    };
    listing(&app.data_dir.join("repos"), "/repos/", false, &shown)
}

pub async fn serve(
    State(app): State<AppState>,
    headers: HeaderMap,
    uri: Uri,
    UrlPath(path): UrlPath<String>,
) -> Response {
    let root = app.data_dir.join("repos");
    let trailing = path.ends_with('/');
    let segs: Vec<&str> = path.trim_end_matches('/').split('/').collect();
    let bad =
        |s: &&str| s.is_empty() || s.starts_with('.') || s.contains(['\\', '\0']) || s.len() > 255;
    if segs.iter().any(bad) {
        return not_found("repository path");
    }
    // `<release>/...`: as private as the repositories feeding the release.
    if !matches!(segs[0], "changes" | "stages") {
        let release = segs[0].strip_suffix(".repo").unwrap_or(segs[0]);
        if !app.access.may_see_release(release, &headers) {
            return super::access::refused(uri.path());
        }
    }
    // `changes/<forge>/<path>/<number>/...`: which repositories have changes is not listed
    // (some may be private).
    if segs[0] == "changes" {
        let Some(forge) = segs.get(1).and_then(|f| ForgeKind::parse(f)) else {
            return not_found("repository");
        };
        if segs.len() < 4 {
            return not_found("repository");
        }
        // A change's repository is as private as the repository it was built from.
        let hidden = change_owners(forge, &segs)
            .iter()
            .any(|r| !app.access.may_see(r, &headers));
        if hidden {
            return super::access::refused(uri.path());
        }
    }
    // `stages/<build-id>/...`: the build's repository decides who may see it.
    if segs[0] == "stages" {
        let Some(id) = segs.get(1).and_then(|s| BuildId::parse(s).ok()) else {
            return not_found("repository");
        };
        match app.store.build(&id).await {
            Ok(Some(b)) if !app.access.may_see(&b.repo, &headers) => {
                return super::access::refused(uri.path());
            }
            Ok(Some(_)) => {}
            Ok(None) => return not_found("repository"),
            Err(e) => return text(StatusCode::SERVICE_UNAVAILABLE, format!("store: {e}")),
        }
    }
    let last = segs[segs.len() - 1];
    if let Some(stem) = last.strip_suffix(".repo").filter(|_| !trailing) {
        let dir = segs[..segs.len() - 1]
            .iter()
            .fold(root.clone(), |d, s| d.join(s))
            .join(stem);
        if !is_repo_dir(&dir) || !dir.join("latest").exists() {
            return not_found("repository");
        }
        let rel = format!("{}/{stem}", segs[..segs.len() - 1].join("/"));
        let id = format!("packetary-{}", rel.replace('/', "-"));
        let base = format!("{}/repos/{rel}/latest/", app.queue.public_url());
        let body = repo_file(&id, &format!("Packetary {rel}"), &base);
        return (
            StatusCode::OK,
            [("content-type", "text/plain; charset=utf-8")],
            body,
        )
            .into_response();
    }
    // Walk down: inside a repository directory only `latest` and snapshots.
    let mut dir = root.clone();
    let mut snapshot_at = None;
    for (i, s) in segs.iter().enumerate() {
        if is_repo_dir(&dir) {
            if *s != "latest" && SnapshotId::parse(s).is_none() {
                return not_found("snapshot");
            }
            snapshot_at = Some(i);
        }
        dir.push(s);
    }
    let (Ok(base), Ok(full)) = (root.canonicalize(), dir.canonicalize()) else {
        return fallback(&root, &segs, snapshot_at).await;
    };
    if !full.starts_with(&base) {
        return not_found("file");
    }
    if full.is_dir() {
        if !trailing {
            return Redirect::permanent(&format!("{}/", uri.path())).into_response();
        }
        return listing(&full, uri.path(), is_repo_dir(&full), &|_| true);
    }
    if !full.is_file() {
        return not_found("file");
    }
    send_file(&full, content_type(last), false).await
}

/// The repositories a path `changes/<forge>/<path>/<number>/...` may belong to: a
/// project's path may have any depth (one segment for `gerrit:fuel-specs`), so every
/// leading run of segments that leaves a number after it is one; the path is refused
/// if any of them is private (deny when unsure).
fn change_owners(forge: ForgeKind, segs: &[&str]) -> Vec<RepoId> {
    (2..segs.len().saturating_sub(1))
        .filter_map(|end| RepoId::new(forge, &segs[2..=end].join("/")).ok())
        .collect()
}

/// `latest/repodata/<file>` that `latest` no longer has: a client read `repomd.xml` just
/// before `latest` moved on. Metadata files are named by their checksum, so the same name
/// in an older snapshot is the same file.
async fn fallback(root: &Path, segs: &[&str], snapshot_at: Option<usize>) -> Response {
    let Some(i) = snapshot_at else {
        return not_found("file");
    };
    if segs[i] != "latest" || segs.len() != i + 3 || segs[i + 1] != "repodata" {
        return not_found("file");
    }
    let repo: PathBuf = segs[..i].iter().fold(root.to_path_buf(), |d, s| d.join(s));
    let dir = crate::repos::RepoDir::new(&repo);
    for id in dir.snapshots().into_iter().rev() {
        let p = dir.snapshot_dir(&id).join("repodata").join(segs[i + 2]);
        if let (Ok(base), Ok(full)) = (root.canonicalize(), p.canonicalize()) {
            if full.starts_with(&base) && full.is_file() {
                return send_file(&full, content_type(segs[i + 2]), false).await;
            }
        }
    }
    not_found("file")
}

/// A plain listing of a directory's visible entries (for people; dnf needs none), those
/// `shown` accepts.
fn listing(dir: &Path, url_path: &str, repo_dir: bool, shown: &dyn Fn(&str) -> bool) -> Response {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return text(StatusCode::NOT_FOUND, "no repositories yet");
    };
    let mut names: Vec<(String, bool)> = rd
        .flatten()
        .filter_map(|e| {
            let n = e.file_name().to_str()?.to_string();
            if n.starts_with('.')
                || (repo_dir && n != "latest" && SnapshotId::parse(&n).is_none())
                || !shown(&n)
            {
                return None;
            }
            let is_dir = e.path().is_dir();
            Some((n, is_dir))
        })
        .collect();
    names.sort();
    let mut body = format!(
        "<!doctype html><meta charset=utf-8><title>{0}</title><h1>{0}</h1><ul>",
        escape(url_path)
    );
    for (n, is_dir) in names {
        let shown = if is_dir { format!("{n}/") } else { n.clone() };
        let _ = write!(body, "<li><a href=\"{0}\">{0}</a>", escape(&shown));
        if is_dir && is_repo_dir(&dir.join(&n)) {
            let _ = write!(body, " (<a href=\"{0}.repo\">{0}.repo</a>)", escape(&n));
        }
    }
    body.push_str("</ul>");
    let mut r = Html(body).into_response();
    r.headers_mut().insert(
        header::CACHE_CONTROL,
        "no-cache".parse().expect("static header"),
    );
    r
}

/// The "Package repositories" section of a build page or a commit's page: where builds
/// published, with the snapshot, `latest` and the `.repo` file to enable.
pub(super) fn publications_html(pubs: &[crate::store::PublicationRow]) -> String {
    if pubs.is_empty() {
        return String::new();
    }
    let mut body = String::from(
        "<h2>Package repositories</h2><table><thead><tr><th>Repository</th><th>Snapshot</th><th>Enable with</th></tr></thead><tbody>",
    );
    let mut seen = std::collections::BTreeSet::new();
    for p in pubs {
        if !seen.insert((p.repository.clone(), p.snapshot.clone())) {
            continue;
        }
        let r = escape(&p.repository);
        let snap = match &p.snapshot {
            Some(s) => format!("<a href=\"/repos/{r}/{0}/\">{0}</a>", escape(s)),
            None => "unchanged".into(),
        };
        let _ = write!(
            body,
            "<tr><td><a href=\"/repos/{r}/latest/\">{r}</a></td><td>{snap}</td><td><a href=\"/repos/{r}.repo\">{r}.repo</a> in <code>/etc/yum.repos.d/</code></td></tr>"
        );
    }
    body.push_str("</tbody></table>");
    body
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Issue 22 (M3): a one-segment Gerrit project owns its change repositories too.
    #[test]
    fn every_project_a_change_path_may_belong_to() {
        let owners = |p: &str| -> Vec<String> {
            let segs: Vec<&str> = p.split('/').collect();
            let forge = ForgeKind::parse(segs[1]).expect("forge");
            change_owners(forge, &segs)
                .iter()
                .map(|r| r.as_str().to_string())
                .collect()
        };
        assert!(owners("changes/gerrit/fuel-specs/7/t/latest")
            .contains(&"gerrit:fuel-specs".to_string()));
        assert!(
            owners("changes/gerrit/fuel-specs/7/t.repo").contains(&"gerrit:fuel-specs".to_string())
        );
        assert!(owners("changes/github/acme/pkgs/7/t/latest/x.rpm")
            .contains(&"github:acme/pkgs".to_string()));
        assert!(owners("changes/gerrit/a/b/c/7/t").contains(&"gerrit:a/b/c".to_string()));
    }
}
