//! The commit page (`/?commit=<sha>`), where every aggregate status links: whatever the
//! status says, this page says how it came about. The statuses the forge was told; the
//! triggers of the commit (which event, when, which change) and what became of each — a
//! planning failure with its error and the fix, a fork waiting for approval, a trigger
//! superseded or closed before it was planned; the commands bound to it; the plan (each
//! build's stage, package, target and spec, and why it is where it is); the repositories
//! it published into. Every text from a repository is escaped, and no text shows a path
//! of the service's disk ([`super::paths`]).

use std::collections::BTreeSet;
use std::fmt::Write;
use std::path::Path;

use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};

use super::html::{escape, page, seg};
use super::{text, AppState};
use crate::model::{BuildState, ChangeKind, CommitSha, ForgeKind, RepoId, Trigger};
use crate::queue::paths::DiskPaths;
use crate::store::{BuildRow, CommandRow, ReportRow, StoredTrigger, TriggerOrigin, TriggerState};

/// Triggers and commands one commit page lists at most.
const PAGE_TRIGGERS: i64 = 100;

pub async fn commit_page(app: &AppState, headers: &HeaderMap, sha: &CommitSha) -> Response {
    let store = &app.store;
    let (builds, triggers, commands) = match tokio::try_join!(
        store.builds_of_commit(sha, PAGE_BUILDS),
        store.triggers_of_commit(sha, PAGE_TRIGGERS),
        store.commands_of_commit(sha, PAGE_TRIGGERS),
    ) {
        Ok(v) => v,
        Err(e) => return text(StatusCode::SERVICE_UNAVAILABLE, format!("store: {e}")),
    };
    let may_see = |r: &RepoId| app.access.may_see(r, headers);
    let builds: Vec<BuildRow> = builds.into_iter().filter(|b| may_see(&b.repo)).collect();
    let triggers: Vec<(StoredTrigger, TriggerOrigin)> = triggers
        .into_iter()
        .filter(|(t, _)| may_see(&t.trigger.repo))
        .collect();
    let commands: Vec<CommandRow> = commands.into_iter().filter(|c| may_see(&c.repo)).collect();
    let repos: BTreeSet<&RepoId> = triggers
        .iter()
        .map(|(t, _)| &t.trigger.repo)
        .chain(builds.iter().map(|b| &b.repo))
        .collect();
    let mut reports = vec![];
    for r in repos {
        reports.extend(store.reports_of_commit(r, sha).await.unwrap_or_default());
    }
    let paths = DiskPaths::new(&app.data_dir);

    let mut body = format!("<h1>Commit <code>{}</code></h1>", escape(sha.as_str()));
    if triggers.is_empty() && builds.is_empty() && reports.is_empty() {
        body.push_str(
            "<p>Nothing is known of this commit here: no event of a forge named it (or its \
             repository's pages need the page token).</p>",
        );
        return page(&format!("Commit {}", sha.short()), &body).into_response();
    }
    body.push_str(&statuses_html(&reports, &paths));
    body.push_str(&triggers_html(&triggers, &builds, &paths));
    body.push_str(&commands_html(&commands, &paths));
    body.push_str(&plan_html(app, &builds, &triggers));
    let mut published = Vec::new();
    for b in &builds {
        published.extend(app.store.publications(&b.id).await.unwrap_or_default());
    }
    body.push_str(&super::repos::publications_html(&published));
    page(&format!("Commit {}", sha.short()), &body).into_response()
}

/// The statuses of the commit as the outbox holds them: what the forge shows, and whether
/// it was told yet.
fn statuses_html(reports: &[ReportRow], paths: &DiskPaths) -> String {
    if reports.is_empty() {
        return String::new();
    }
    let mut body = String::from(
        "<h2>Statuses</h2><table><thead><tr><th>Repository</th><th>Context</th><th>State</th>\
         <th>Description</th><th>Delivery</th></tr></thead><tbody>",
    );
    for r in reports {
        let delivery = if r.delivered_version >= r.version {
            "delivered".to_string()
        } else if r.abandoned {
            format!(
                "not delivered (gave up): {}",
                r.last_error.as_deref().unwrap_or("")
            )
        } else {
            match &r.last_error {
                Some(e) => format!("to be delivered again (last attempt: {e})"),
                None => "to be delivered".to_string(),
            }
        };
        let _ = write!(
            body,
            "<tr><td>{}</td><td><code>{}</code></td><td><span class=\"{2}\">{2}</span></td><td>{3}</td><td>{4}</td></tr>",
            escape(r.report.repo.as_str()),
            escape(&r.report.context),
            r.report.state.as_str(),
            with_commit_links(&paths.hide(&r.report.description)),
            escape(&paths.hide(&delivery)),
        );
    }
    body.push_str("</tbody></table>");
    body
}

/// The change a trigger is of, in the forge's words.
fn change_of(t: &Trigger) -> String {
    match (t.kind, t.pr_number) {
        (ChangeKind::PullRequest, Some(n)) => {
            let what = match t.repo.forge() {
                ForgeKind::Gerrit => format!("change {n}"),
                _ => format!("pull request #{n}"),
            };
            let into = t
                .base_ref
                .as_deref()
                .map(|b| format!(" into {b}"))
                .unwrap_or_default();
            let fork = if t.from_fork { ", from a fork" } else { "" };
            format!("{what}{into}{fork}")
        }
        _ => format!(
            "branch {}",
            t.ref_name
                .strip_prefix("refs/heads/")
                .unwrap_or(&t.ref_name)
        ),
    }
}

/// How to have a trigger's commit planned again, on its forge.
fn rebuild_command(t: &Trigger) -> &'static str {
    match (t.repo.forge(), t.kind) {
        (ForgeKind::Gerrit, ChangeKind::PullRequest) => {
            "comment <code>recheck</code> on the change"
        }
        (_, ChangeKind::PullRequest) => {
            "comment <code>/packetary rebuild</code> on the pull request"
        }
        (_, ChangeKind::Push) => "push again",
    }
}

/// What became of a trigger, as HTML: a line that explains its state and, where the
/// author can act, the fix. `planned`: how many builds it planned.
fn trigger_story(st: &StoredTrigger, planned: usize, paths: &DiskPaths) -> String {
    let t = &st.trigger;
    let message =
        |fallback: &str| with_commit_links(&paths.hide(st.message.as_deref().unwrap_or(fallback)));
    match st.state {
        TriggerState::New if st.attempts > 0 => format!(
            "waiting to be planned again after {} infrastructure fault(s): {}",
            st.attempts,
            message("")
        ),
        TriggerState::New => "waiting to be planned".into(),
        TriggerState::AwaitingApproval => format!(
            "a pull request from a fork: nothing of it runs until a maintainer approves this \
             commit.<br><b>Fix:</b> a maintainer comments <code>/packetary approve {}</code> \
             on the pull request (this commit only; a new push needs a new approval)",
            escape(t.head.short())
        ),
        TriggerState::Planned if planned == 0 => {
            "planned: no package to build (nothing this change touched belongs to a package)".into()
        }
        TriggerState::Planned => format!("planned {planned} build(s): see the plan below"),
        TriggerState::Failed => {
            let error = message("no error was recorded");
            let fix = if st.message.as_deref().is_some_and(|m| m.contains("fix:")) {
                String::new()
            } else if st.attempts > 0 {
                format!(
                    "<br><b>Fix:</b> this is a fault of the service, not of the change (it was \
                     retried {} time(s)); once it is mended, {}",
                    st.attempts,
                    rebuild_command(t)
                )
            } else {
                format!(
                    "<br><b>Fix:</b> correct what the error names in the repository and push \
                     the correction; to plan this very commit again, {}",
                    rebuild_command(t)
                )
            };
            format!("<b>planning failed:</b> {error}{fix}")
        }
        TriggerState::Superseded => format!(
            "not planned: {} (a newer commit of the same change came first)",
            message("superseded")
        ),
        TriggerState::Closed => format!(
            "not planned: {}",
            message("the change was closed before it was planned")
        ),
    }
}

fn triggers_html(
    triggers: &[(StoredTrigger, TriggerOrigin)],
    builds: &[BuildRow],
    paths: &DiskPaths,
) -> String {
    if triggers.is_empty() {
        return String::new();
    }
    let mut body = String::from(
        "<h2>Triggers</h2><table><thead><tr><th>#</th><th>Repository</th><th>Event</th>\
         <th>Change</th><th>By</th><th>Received</th><th>State</th><th>What happened</th>\
         </tr></thead><tbody>",
    );
    for (st, origin) in triggers {
        let t = &st.trigger;
        let event = match (&origin.delivery, &origin.event) {
            (_, Some(e)) => e.clone(),
            (Some(_), None) => "a forge's event".into(),
            // The service makes a trigger of its own only for a rebuild command.
            (None, None) => match t.repo.forge() {
                ForgeKind::Gerrit => "recheck".into(),
                ForgeKind::GitHub => "/packetary rebuild".into(),
                ForgeKind::Local => "the command line".into(),
            },
        };
        let mut what = String::new();
        if t.only_package.is_some() || t.only_target.is_some() {
            let _ = write!(
                what,
                "a rebuild of {} for {}: ",
                t.only_package.as_deref().unwrap_or("every package"),
                t.only_target.as_deref().unwrap_or("every target"),
            );
        }
        let planned = builds.iter().filter(|b| b.trigger_id == st.id).count();
        let _ = write!(
            body,
            "<tr id=\"trigger-{0}\"><td>{0}</td><td>{1}</td><td>{2}</td><td>{3}</td><td>{4}</td>\
             <td>{5}</td><td>{6}</td><td>{7}{8}</td></tr>",
            st.id.0,
            escape(t.repo.as_str()),
            escape(&event),
            escape(&change_of(t)),
            escape(&t.sender),
            escape(&st.created_at.rfc3339()),
            escape(st.state.as_str()),
            escape(&what),
            trigger_story(st, planned, paths),
        );
    }
    body.push_str("</tbody></table>");
    body
}

fn commands_html(commands: &[CommandRow], paths: &DiskPaths) -> String {
    if commands.is_empty() {
        return String::new();
    }
    let mut body = String::from(
        "<h2>Commands</h2><table><thead><tr><th>Repository</th><th>Command</th><th>By</th>\
         <th>Received</th><th>State</th><th>Message</th></tr></thead><tbody>",
    );
    for c in commands {
        let words: Vec<&str> = [Some(c.command.as_str())]
            .into_iter()
            .chain([
                c.package.as_deref(),
                c.target.as_deref(),
                c.commit_prefix.as_deref(),
            ])
            .flatten()
            .collect();
        let on = c
            .pr_number
            .map(|n| format!(" (on #{n})"))
            .unwrap_or_default();
        let _ = write!(
            body,
            "<tr><td>{}</td><td><code>/packetary {}</code>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            escape(c.repo.as_str()),
            escape(&words.join(" ")),
            escape(&on),
            escape(&c.user),
            escape(&c.created_at.rfc3339()),
            escape(&c.state),
            with_commit_links(&paths.hide(c.message.as_deref().unwrap_or(""))),
        );
    }
    body.push_str("</tbody></table>");
    body
}

/// The commit's builds as planned: stages first, each with what explains its state.
fn plan_html(
    app: &AppState,
    builds: &[BuildRow],
    triggers: &[(StoredTrigger, TriggerOrigin)],
) -> String {
    if builds.is_empty() {
        let failed = triggers
            .iter()
            .any(|(t, _)| t.state == TriggerState::Failed);
        return if failed {
            "<h2>Plan</h2><p>No builds: planning failed (see the triggers above).</p>".into()
        } else {
            "<h2>Plan</h2><p>No builds yet.</p>".into()
        };
    }
    let mut sorted: Vec<&BuildRow> = builds.iter().collect();
    sorted.sort_by_key(|b| (b.trigger_id.0, b.stage, b.package.clone(), b.seq));
    let stages = builds.iter().map(|b| b.stage + 1).max().unwrap_or(1);
    let mut body = format!(
        "<h2>Plan</h2><p>{} build(s) in {stages} stage(s); a later stage starts once the \
         builds of the earlier ones ended, and installs what they built.</p>",
        builds.len()
    );
    body.push_str(&builds_table(&app.data_dir, &sorted, true));
    body
}

/// Escapes `text` and links each full commit id in it to that commit's page (a build or
/// trigger "superseded by" a newer commit).
pub(super) fn with_commit_links(text: &str) -> String {
    let escaped = escape(text);
    let mut out = String::with_capacity(escaped.len());
    let mut word = String::new();
    let flush = |word: &mut String, out: &mut String| {
        if word.len() == 40 && CommitSha::parse(word).is_ok() {
            let _ = write!(
                out,
                "<a href=\"/?commit={}\"><code>{}</code></a>",
                seg(word),
                word
            );
        } else {
            out.push_str(word);
        }
        word.clear();
    };
    for c in escaped.chars() {
        if c.is_ascii_hexdigit() {
            word.push(c);
        } else {
            flush(&mut word, &mut out);
            out.push(c);
        }
    }
    flush(&mut word, &mut out);
    out
}

/// Why a build is in its state, beyond its own message: what the plan page adds.
pub(super) fn build_story(b: &BuildRow) -> Option<&'static str> {
    match b.state {
        BuildState::Queued if b.stage > 0 => {
            Some("waits for the builds of the earlier stage(s) of its change to end")
        }
        BuildState::Queued if b.attempts > 0 => Some("to run again after an infrastructure fault"),
        BuildState::Superseded => Some("a newer commit of its change replaced it"),
        BuildState::Cancelled => {
            Some("its change was closed (a pull request closed, a branch deleted)")
        }
        _ => None,
    }
}

/// Builds one index page lists at most.
pub(super) const PAGE_BUILDS: i64 = 200;

pub(super) fn state_cell(s: BuildState) -> String {
    format!("<span class=\"{0}\">{0}</span>", s.as_str())
}

/// A table of builds, each linking its page and its commit's; `plan` adds what the commit
/// page shows of the plan (stage, spec, the trigger that planned it, and why a build is
/// where it is). Messages show no path of the service's disk.
pub(super) fn builds_table(data_dir: &Path, builds: &[&BuildRow], plan: bool) -> String {
    let mut body =
        String::from("<table><thead><tr><th>Build</th><th>Repository</th><th>Commit</th>");
    if plan {
        body.push_str("<th>Stage</th>");
    }
    body.push_str("<th>Package</th><th>Target</th>");
    if plan {
        body.push_str("<th>Spec</th><th>Planned by</th>");
    }
    body.push_str("<th>State</th><th>Message</th><th>Created</th></tr></thead><tbody>");
    let paths = DiskPaths::new(data_dir);
    for b in builds {
        let message = paths.of_build(b).hide(b.message.as_deref().unwrap_or(""));
        let mut message = with_commit_links(&message);
        if plan {
            if let Some(why) = build_story(b) {
                if !message.is_empty() {
                    message.push_str(" — ");
                }
                message.push_str(why);
            }
        }
        let _ = write!(
            body,
            "<tr><td><a href=\"/builds/{}\">{}</a></td><td>{}</td><td><a href=\"/?commit={}\"><code>{}</code></a></td>",
            seg(b.id.as_str()),
            escape(b.id.as_str()),
            escape(b.repo.as_str()),
            seg(b.commit.as_str()),
            escape(b.commit.short()),
        );
        if plan {
            let _ = write!(body, "<td>{}</td>", b.stage + 1);
        }
        let _ = write!(
            body,
            "<td>{}</td><td>{}</td>",
            escape(&b.package),
            escape(b.target.as_str())
        );
        if plan {
            let _ = write!(
                body,
                "<td><code>{}</code></td><td><a href=\"#trigger-{1}\">trigger {1}</a></td>",
                escape(&b.spec_path),
                b.trigger_id.0
            );
        }
        let _ = write!(
            body,
            "<td>{}</td><td>{}</td><td>{}</td></tr>",
            state_cell(b.state),
            message,
            escape(&b.created_at.rfc3339()),
        );
    }
    body.push_str("</tbody></table>");
    body
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn full_commit_ids_are_linked_and_the_rest_escaped() {
        let a = "a".repeat(40);
        assert_eq!(
            with_commit_links(&format!("superseded by {a} <b>")),
            format!("superseded by <a href=\"/?commit={a}\"><code>{a}</code></a> &lt;b&gt;")
        );
        // `&amp;` and short hex words stay as they are.
        assert_eq!(with_commit_links("cafe & beef"), "cafe &amp; beef");
    }
}
