//! Every status links to a page that explains it (issue 23): the aggregate's link, the
//! commit page, shows the commit's triggers (event, change, state) with a failed
//! planning's error and its fix, a fork's wait for approval, and the plan; and no page shows
//! a path of the service's data directory. Events go in through the webhook route.

use crate::serve_common;

use std::sync::{Arc, OnceLock};

use futures_util::future::BoxFuture;
use packetary::executor::{BuildReport, BuildRequest, Progress};
use packetary::model::{BuildId, Failure, Outcome, Phase, ReportState, Trigger};
use packetary::queue::{PlanError, PlannedBuild, Planner, Runner};
use serve_common::tester::{sha, QueueTester, AGGREGATE, HELLO};
use serve_common::Mode;
use tokio_util::sync::CancellationToken;

/// Fails every plan as a repository at fault, naming a file of the service's mirror (as a
/// git or configuration error does) and carrying markup.
struct FailingPlanner {
    /// Set once the tester (and so its data directory) exists.
    mirror: Arc<OnceLock<String>>,
}

impl Planner for FailingPlanner {
    fn plan<'a>(&'a self, _t: &'a Trigger) -> BoxFuture<'a, Result<Vec<PlannedBuild>, PlanError>> {
        Box::pin(async move {
            Err(PlanError::Invalid(format!(
                "cannot read .packetary.toml at {}: unknown key `<b>bogus</b>`",
                self.mirror.get().map_or("?", String::as_str)
            )))
        })
    }
}

/// Fails every build in its build phase with a message naming the build's spec and log
/// where the service keeps them, as an executor's error does.
struct PathFailingRunner;

impl Runner for PathFailingRunner {
    fn run(
        &self,
        req: BuildRequest,
        _events: tokio::sync::mpsc::UnboundedSender<Progress>,
        _cancel: CancellationToken,
    ) -> BoxFuture<'static, BuildReport> {
        Box::pin(async move {
            let log = req.out_root.join("logs").join("build.log");
            let message = format!(
                "build phase failed: cannot open {}; see {}",
                req.package.spec.display(),
                log.display()
            );
            let mut r = packetary::queue::error_report(&req, message.clone());
            r.outcome = Outcome::Failed {
                phase: Phase::Build,
                failure: Failure::Exit { code: 1 },
                message,
                log: log.clone(),
            };
            // Its record, as the executor writes it: absolute paths of the results.
            let logs = req.out_root.join("logs");
            std::fs::create_dir_all(&logs).expect("mkdir");
            std::fs::write(&log, "error: Bad exit status\n").expect("write");
            std::fs::write(
                logs.join("build.json"),
                serde_json::to_vec(&r).expect("json"),
            )
            .expect("write");
            r
        })
    }

    fn cleanup(&self, _id: &BuildId) -> BoxFuture<'static, ()> {
        Box::pin(async {})
    }
}

/// The path of the page a status of `head` in `context` links to.
fn linked_page(t: &QueueTester, head: char, context: &str) -> String {
    let delivered = t.forge.delivered.lock().expect("lock");
    let url = delivered
        .iter()
        .rev()
        .find(|r| r.sha == sha(head) && r.context == context)
        .and_then(|r| r.target_url.clone())
        .unwrap_or_else(|| panic!("no {context} status of {head} with a link"));
    url.strip_prefix("http://packetary.test")
        .unwrap_or_else(|| panic!("{url}: not a link to the service"))
        .to_string()
}

/// Nothing the forge was sent names a path of the service's disk: the statuses say
/// `<data_dir>/...` instead (`expected`, when given, is a text one of them must hold).
fn assert_the_forge_saw_no_path(t: &QueueTester, expected: Option<&str>) {
    let data = data_dir(t);
    let delivered = t.forge.delivered.lock().expect("lock");
    for r in delivered.iter() {
        let texts = std::iter::once(r.description.as_str())
            .chain(r.builds.iter().filter_map(|b| b.message.as_deref()));
        for text in texts {
            assert!(!text.contains(&data), "sent to the forge: {text}");
        }
    }
    if let Some(e) = expected {
        assert!(
            delivered.iter().any(|r| r.description.contains(e)),
            "no status says {e}: {delivered:#?}"
        );
    }
}

/// The service's data directory as pages must never show it.
fn data_dir(t: &QueueTester) -> String {
    t.dir().join("data").display().to_string()
}

#[tokio::test]
async fn a_failed_planning_links_to_a_page_with_its_error_and_the_fix() {
    let mirror = Arc::new(OnceLock::new());
    let t = QueueTester::builder(Mode::Succeed)
        .planner(FailingPlanner {
            mirror: mirror.clone(),
        })
        .build()
        .await;
    // The planner names the tester's own data directory.
    mirror
        .set(format!("{}/mirrors/github/o/r.git", data_dir(&t)))
        .expect("set once");
    t.start().await;
    t.push('a').await;
    t.wait_status('a', AGGREGATE, ReportState::Failure).await;

    let uri = linked_page(&t, 'a', AGGREGATE);
    assert_eq!(uri, format!("/?commit={}", sha('a')));
    let page = t.get(&uri).await;
    assert_eq!(page.status, 200);
    let html = &page.body;
    // The trigger: what event, which change, its state and the error, escaped.
    assert!(html.contains("<h2>Triggers</h2>"), "{html}");
    assert!(html.contains("<td>push</td>"), "{html}");
    assert!(html.contains("branch main"), "{html}");
    assert!(html.contains("alice"), "{html}");
    assert!(html.contains("planning failed"), "{html}");
    assert!(
        html.contains("unknown key `&lt;b&gt;bogus&lt;/b&gt;`"),
        "the error, escaped:\n{html}"
    );
    assert!(!html.contains("<b>bogus</b>"), "{html}");
    assert!(html.contains("Fix:"), "{html}");
    // The status itself, as the forge shows it.
    assert!(html.contains("<h2>Statuses</h2>"), "{html}");
    assert!(html.contains("failure"), "{html}");
    // The mirror is named, not located.
    assert!(
        html.contains("&lt;data_dir&gt;/mirrors/github/o/r.git"),
        "{html}"
    );
    assert!(
        !html.contains(&data_dir(&t)),
        "the page shows the data directory:\n{html}"
    );
    assert_the_forge_saw_no_path(&t, Some("<data_dir>/mirrors/github/o/r.git"));
}

#[tokio::test]
async fn a_failed_build_s_pages_show_no_path_of_the_data_directory() {
    let t = QueueTester::builder(Mode::Succeed)
        .runner(PathFailingRunner)
        .build()
        .await;
    t.start().await;
    t.push('a').await;
    t.wait_status('a', HELLO, ReportState::Failure).await;
    let build = linked_page(&t, 'a', HELLO);
    assert!(build.starts_with("/builds/"), "{build}");
    let data = data_dir(&t);
    for uri in [build.clone(), linked_page(&t, 'a', AGGREGATE), "/".into()] {
        let page = t.get(&uri).await;
        assert_eq!(page.status, 200, "{uri}");
        assert!(
            page.body.contains("build phase failed: cannot open"),
            "{uri}:\n{}",
            page.body
        );
        assert!(
            !page.body.contains(&data),
            "{uri} shows the data directory {data}:\n{}",
            page.body
        );
        // Shown relative to the build instead.
        assert!(
            page.body.contains("&lt;work&gt;/") && page.body.contains("&lt;results&gt;/"),
            "{uri}:\n{}",
            page.body
        );
    }
    // The build's record, served as one of its logs: its paths relative to the build.
    let record = t.get(&format!("{build}/logs/build.json")).await;
    assert_eq!(record.status, 200, "{}", record.body);
    assert!(!record.body.contains(&data), "{}", record.body);
    let v: serde_json::Value = serde_json::from_str(&record.body).expect("still JSON");
    assert_eq!(v["dir"], "<results>", "{v:#}");
    assert_eq!(v["outcome"]["log"], "<results>/logs/build.log", "{v:#}");
    // The commit page shows the plan: stage, spec, the trigger that planned it.
    let page = t.get(&linked_page(&t, 'a', AGGREGATE)).await;
    assert!(page.body.contains("<h2>Plan</h2>"), "{}", page.body);
    assert!(page.body.contains("hello/hello.spec"), "{}", page.body);
    assert!(
        page.body.contains("1 build(s) in 1 stage(s)"),
        "{}",
        page.body
    );
    assert_the_forge_saw_no_path(&t, Some("cannot open <data_dir>/"));
}

#[tokio::test]
async fn a_fork_waiting_for_approval_says_who_must_do_what() {
    let t = QueueTester::new(Mode::Succeed).await;
    t.start().await;
    t.pull_request_from_fork(7, 'c').await;
    t.wait_status('c', AGGREGATE, ReportState::Pending).await;
    let page = t.get(&linked_page(&t, 'c', AGGREGATE)).await;
    assert_eq!(page.status, 200);
    let html = &page.body;
    assert!(
        html.contains("pull request #7 into main, from a fork"),
        "{html}"
    );
    assert!(html.contains("awaiting_approval"), "{html}");
    assert!(
        html.contains(&format!("/packetary approve {}", sha('c').short())),
        "{html}"
    );
    assert!(html.contains("pull_request"), "{html}");
}

#[tokio::test]
async fn the_commit_page_escapes_what_the_forge_sent() {
    let t = QueueTester::new(Mode::Succeed).await;
    t.start().await;
    let evil = "<script>alert(1)</script>";
    t.push_to("o/r", evil, 'd').await;
    t.wait_status('d', AGGREGATE, ReportState::Success).await;
    let page = t.get(&linked_page(&t, 'd', AGGREGATE)).await;
    assert_eq!(page.status, 200);
    assert!(!page.body.contains(evil), "unescaped:\n{}", page.body);
    assert!(
        page.body
            .contains("branch &lt;script&gt;alert(1)&lt;/script&gt;"),
        "{}",
        page.body
    );
}

#[tokio::test]
async fn a_superseded_commit_s_page_says_by_which_commit() {
    let t = QueueTester::new(Mode::Block).await;
    t.start().await;
    t.push('a').await;
    t.wait_runs(1).await;
    t.push('b').await;
    t.wait_status('a', HELLO, ReportState::Error).await;
    let build = linked_page(&t, 'a', HELLO);
    let newer = format!("<a href=\"/?commit={0}\"><code>{0}</code></a>", sha('b'));
    for uri in [build.clone(), linked_page(&t, 'a', AGGREGATE)] {
        let page = t.get(&uri).await;
        assert_eq!(page.status, 200, "{uri}");
        assert!(
            page.body.contains(&format!("superseded by {newer}")),
            "{uri}: no link to the newer commit\n{}",
            page.body
        );
    }
    let page = t.get(&linked_page(&t, 'a', AGGREGATE)).await;
    assert!(
        page.body
            .contains("a newer commit of its change replaced it"),
        "{}",
        page.body
    );
    // The build page leads to how it was planned.
    let page = t.get(&build).await;
    assert!(
        page.body
            .contains(&format!("/?commit={}#trigger-1", sha('a'))),
        "{}",
        page.body
    );
    t.drain().await;
}
