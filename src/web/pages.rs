//! Server-rendered build pages. Every value that comes from outside (package names,
//! messages, file names) is HTML-escaped; file paths are checked to stay in the build's
//! result directory.

use std::fmt::Write;
use std::path::{Component, Path, PathBuf};

use axum::extract::{Path as UrlPath, Query, State};
use axum::http::{header, HeaderMap, StatusCode, Uri};
use axum::response::{Html, IntoResponse, Response};

use super::commit::{builds_table, state_cell, PAGE_BUILDS};
use super::html::{escape, not_found, page, page_with, seg, send_file};
use super::{text, AppState};
use crate::model::BuildState;
use crate::model::{BuildId, CommitSha};
use crate::queue::paths::DiskPaths;
use crate::store::BuildRow;

/// A page that reloads itself every few seconds: the page of a build still under way.
fn live_page(title: &str, body: &str) -> Html<String> {
    page_with(
        title,
        body,
        &format!("<meta http-equiv=\"refresh\" content=\"{LIVE_REFRESH_SECS}\">"),
    )
}

/// How often the pages and logs of a build under way reload.
const LIVE_REFRESH_SECS: u32 = 5;

/// The logs of a finished build: its results' `logs/`, which the service owns. A running
/// build's are the runner's (see [`live_logs`]).
fn logs_dir(b: &BuildRow) -> Option<PathBuf> {
    b.result_dir.as_ref().map(|d| d.join("logs"))
}

/// Most of a live log one page shows: its end.
const LIVE_LOG_BYTES: usize = 1 << 20;

/// The live logs (of [`crate::executor::LIVE_LOGS`]) a running build has written so far,
/// asked of the runner, which has them wherever it runs builds.
async fn live_logs(app: &AppState, b: &BuildRow) -> Vec<String> {
    if b.result_dir.is_some() || b.state != BuildState::Running {
        return vec![];
    }
    let mut names = vec![];
    for name in crate::executor::LIVE_LOGS {
        if let Ok(Some(_)) = app
            .runner
            .live_log(&b.id, &b.target, name, Some(0), 0)
            .await
        {
            names.push(name.to_string());
        }
    }
    names
}

#[derive(serde::Deserialize)]
pub struct IndexQuery {
    commit: Option<String>,
}

pub async fn index(
    State(app): State<AppState>,
    headers: HeaderMap,
    Query(q): Query<IndexQuery>,
) -> Response {
    let commit = q.commit.as_deref().and_then(|c| CommitSha::parse(c).ok());
    // A commit's page is where its aggregate status links: how every status came about.
    if let Some(c) = &commit {
        return super::commit::commit_page(&app, &headers, c).await;
    }
    let builds = match app.store.recent_builds(PAGE_BUILDS).await {
        Ok(b) => b,
        Err(e) => return text(StatusCode::SERVICE_UNAVAILABLE, format!("store: {e}")),
    };
    let builds: Vec<&BuildRow> = builds
        .iter()
        .filter(|b| app.access.may_see(&b.repo, &headers))
        .collect();
    let mut body = String::from("<h1>Recent builds</h1>");
    if builds.is_empty() {
        body.push_str("<p>No builds yet.</p>");
    } else {
        body.push_str(&builds_table(&app.data_dir, &builds, false));
    }
    page("Builds", &body).into_response()
}

/// The build `id`, if the request may see its repository.
async fn load(
    app: &AppState,
    id: &str,
    headers: &HeaderMap,
    uri: &Uri,
) -> Result<BuildRow, Response> {
    let id = BuildId::parse(id).map_err(|_| not_found("build"))?;
    match app.store.build(&id).await {
        Ok(Some(b)) if !app.access.may_see(&b.repo, headers) => {
            Err(super::access::refused(uri.path()))
        }
        Ok(Some(b)) => Ok(b),
        Ok(None) => Err(not_found("build")),
        Err(e) => Err(text(StatusCode::SERVICE_UNAVAILABLE, format!("store: {e}"))),
    }
}

/// Files directly in `dir` (sorted), for log and artifact lists.
fn files_in(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .map(|it| {
            it.flatten()
                .filter(|e| e.file_type().map(|t| t.is_file()).unwrap_or(false))
                .filter_map(|e| e.file_name().to_str().map(str::to_string))
                .filter(|n| !n.starts_with('.'))
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

pub async fn build(
    State(app): State<AppState>,
    headers: HeaderMap,
    uri: Uri,
    UrlPath(id): UrlPath<String>,
) -> Response {
    let b = match load(&app, &id, &headers, &uri).await {
        Ok(b) => b,
        Err(r) => return r,
    };
    let phases = app.store.phases(&b.id).await.unwrap_or_default();
    let mut body = String::new();
    let _ = write!(
        body,
        "<h1>{} for {}</h1><table>\
         <tr><th>State</th><td>{}</td></tr>\
         <tr><th>Message</th><td>{}</td></tr>\
         <tr><th>Phase</th><td>{}</td></tr>\
         <tr><th>Repository</th><td>{}</td></tr>\
         <tr><th>Commit</th><td><a href=\"/?commit={}\"><code>{}</code></a> \
         (<a href=\"/?commit={}#trigger-{}\">how it was planned</a>)</td></tr>\
         <tr><th>Ref</th><td><code>{}</code></td></tr>\
         <tr><th>Spec</th><td><code>{}</code></td></tr>\
         <tr><th>Build id</th><td><code>{}</code></td></tr>\
         <tr><th>Attempts</th><td>{}</td></tr>\
         <tr><th>Created</th><td>{}</td></tr>\
         <tr><th>Started</th><td>{}</td></tr>\
         <tr><th>Finished</th><td>{}</td></tr></table>",
        escape(&b.package),
        escape(b.target.as_str()),
        state_cell(b.state),
        super::commit::with_commit_links(
            &DiskPaths::new(&app.data_dir)
                .of_build(&b)
                .hide(b.message.as_deref().unwrap_or(""))
        ),
        escape(b.phase.as_deref().unwrap_or("")),
        escape(b.repo.as_str()),
        seg(b.commit.as_str()),
        escape(b.commit.as_str()),
        seg(b.commit.as_str()),
        b.trigger_id.0,
        escape(&b.ref_name),
        escape(&b.spec_path),
        escape(b.id.as_str()),
        b.attempts,
        escape(&b.created_at.rfc3339()),
        escape(&b.started_at.map(|t| t.rfc3339()).unwrap_or_default()),
        escape(&b.finished_at.map(|t| t.rfc3339()).unwrap_or_default()),
    );
    if !phases.is_empty() {
        body.push_str("<h2>Phases</h2><table><thead><tr><th>Phase</th><th>Started</th><th>Seconds</th><th>Result</th></tr></thead><tbody>");
        for p in &phases {
            let _ = write!(
                body,
                "<tr><td>{}</td><td>{}</td><td>{:.1}</td><td>{}</td></tr>",
                escape(&p.phase),
                escape(&p.started),
                p.seconds,
                if p.ok { "ok" } else { "failed" }
            );
        }
        body.push_str("</tbody></table>");
    }
    let published = app.store.publications(&b.id).await.unwrap_or_default();
    body.push_str(&super::repos::publications_html(&published));
    let live = matches!(b.state, BuildState::Running | BuildState::Queued);
    let logs = match logs_dir(&b) {
        Some(dir) => files_in(&dir),
        None => live_logs(&app, &b).await,
    };
    if !logs.is_empty() {
        body.push_str(if live {
            "<h2>Logs (live)</h2><ul>"
        } else {
            "<h2>Logs</h2><ul>"
        });
        for l in logs {
            let _ = write!(
                body,
                "<li><a href=\"/builds/{}/logs/{}\">{}</a></li>",
                seg(b.id.as_str()),
                seg(&l),
                escape(&l)
            );
        }
        body.push_str("</ul>");
    }
    if let Some(dir) = &b.result_dir {
        let artifacts = files_in(dir);
        if !artifacts.is_empty() {
            body.push_str("<h2>Artifacts</h2><ul>");
            for a in artifacts {
                let _ = write!(
                    body,
                    "<li><a href=\"/builds/{}/artifacts/{}\">{}</a></li>",
                    seg(b.id.as_str()),
                    seg(&a),
                    escape(&a)
                );
            }
            body.push_str("</ul>");
        }
    }
    let title = format!("{} for {}", b.package, b.target);
    if live {
        live_page(&title, &body).into_response()
    } else {
        page(&title, &body).into_response()
    }
}

/// `rel` joined to `base` if every component is a plain name and the result, symlinks
/// resolved, is still inside `base`.
pub fn contained(base: &Path, rel: &str) -> Option<PathBuf> {
    let rel = Path::new(rel);
    if rel.as_os_str().is_empty()
        || !rel
            .components()
            .all(|c| matches!(c, Component::Normal(n) if !n.to_string_lossy().starts_with('.')))
    {
        return None;
    }
    let base = base.canonicalize().ok()?;
    let full = base.join(rel).canonicalize().ok()?;
    (full.starts_with(&base) && full.is_file()).then_some(full)
}

pub async fn log(
    State(app): State<AppState>,
    headers: HeaderMap,
    uri: Uri,
    UrlPath((id, name)): UrlPath<(String, String)>,
) -> Response {
    let b = match load(&app, &id, &headers, &uri).await {
        Ok(b) => b,
        Err(r) => return r,
    };
    if name.contains('/') || name.contains('\\') {
        return not_found("log");
    }
    if b.result_dir.is_none() {
        return live_log(&app, &b, &name).await;
    }
    let Some(path) = logs_dir(&b).and_then(|d| contained(&d, &name)) else {
        return not_found("log");
    };
    if name == "build.json" {
        return build_json(&app, &b, &path).await;
    }
    let ct = if name.ends_with(".json") {
        "application/json"
    } else {
        "text/plain; charset=utf-8"
    };
    send_file(&path, ct, false).await
}

/// Largest `build.json` served with its paths rewritten (the service writes it: a few KiB).
const BUILD_JSON_MAX: u64 = 4 << 20;

/// A build's `build.json` as a page shows it: its paths of the service's disk (results
/// directory, packages, logs) relative to the build (see [`DiskPaths`]).
async fn build_json(app: &AppState, b: &BuildRow, path: &Path) -> Response {
    let text = match tokio::fs::metadata(path).await {
        Ok(m) if m.len() <= BUILD_JSON_MAX => tokio::fs::read_to_string(path).await,
        Ok(_) => return text(StatusCode::INTERNAL_SERVER_ERROR, "build.json is too large"),
        Err(e) => Err(e),
    };
    match text {
        Ok(t) => (
            [
                (header::CONTENT_TYPE, "application/json"),
                (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            ],
            DiskPaths::new(&app.data_dir).of_build(b).hide(&t),
        )
            .into_response(),
        Err(_) => not_found("log"),
    }
}

/// A running build's log, from the runner: its last [`LIVE_LOG_BYTES`], reloading.
async fn live_log(app: &AppState, b: &BuildRow, name: &str) -> Response {
    // Only the logs the executor writes itself, whatever a runner would answer.
    if b.state != BuildState::Running || !crate::executor::LIVE_LOGS.contains(&name) {
        return not_found("log");
    }
    let log = match app
        .runner
        .live_log(&b.id, &b.target, name, None, LIVE_LOG_BYTES)
        .await
    {
        Ok(Some(log)) => log,
        Ok(None) => return not_found("log"),
        Err(e) => return text(StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
    };
    let mut body = Vec::with_capacity(log.bytes.len() + 64);
    if log.offset > 0 {
        body.extend_from_slice(
            format!(
                "[packetary: the first {} bytes are not shown]\n",
                log.offset
            )
            .as_bytes(),
        );
    }
    body.extend_from_slice(&log.bytes);
    let mut resp = (
        StatusCode::OK,
        [
            (header::CONTENT_TYPE, "text/plain; charset=utf-8"),
            (header::CACHE_CONTROL, "no-cache"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        ],
        body,
    )
        .into_response();
    // Browsers honour `Refresh` on any content: a running build's log follows itself.
    resp.headers_mut().insert(
        header::REFRESH,
        header::HeaderValue::from(LIVE_REFRESH_SECS),
    );
    resp
}

pub async fn artifact(
    State(app): State<AppState>,
    headers: HeaderMap,
    uri: Uri,
    UrlPath((id, rel)): UrlPath<(String, String)>,
) -> Response {
    let b = match load(&app, &id, &headers, &uri).await {
        Ok(b) => b,
        Err(r) => return r,
    };
    let Some(path) = b.result_dir.as_ref().and_then(|d| contained(d, &rel)) else {
        return not_found("artifact");
    };
    let ct = crate::format::Format::of_file(Path::new(&rel))
        .map(crate::format::Format::content_type)
        .unwrap_or("application/octet-stream");
    send_file(&path, ct, true).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn containment() {
        let d = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir(d.path().join("logs")).expect("mkdir");
        std::fs::write(d.path().join("logs/build.log"), "x").expect("write");
        std::fs::write(d.path().join("secret"), "x").expect("write");
        let logs = d.path().join("logs");
        assert!(contained(&logs, "build.log").is_some());
        assert!(contained(&logs, "../secret").is_none());
        assert!(contained(&logs, "/etc/passwd").is_none());
        assert!(contained(&logs, "").is_none());
        assert!(contained(&logs, ".hidden").is_none());
        std::os::unix::fs::symlink(d.path().join("secret"), logs.join("link")).expect("symlink");
        assert!(contained(&logs, "link").is_none());
    }
}
