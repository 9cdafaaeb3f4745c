//! `packetary build` of several packages ends with a table of every build (result, time,
//! cause), failures last so that they stay on screen; `--json` gives the same as one JSON
//! document on stdout, progress staying on stderr. Real Docker, the default target.

use crate::common;

use common::*;

const T: &str = "bookworm-rpmbuild";

/// A directory with one package that builds (`good`) and one whose `%build` fails
/// (`broken`, which sorts first: a plain list in the plan's order would show it first).
fn good_and_broken(w: &std::path::Path) {
    write(&w.join("pkgs/good/good.spec"), &spec("good", "", "true"));
    write(
        &w.join("pkgs/broken/broken.spec"),
        &spec("broken", "", "echo 'broken on purpose' >&2; exit 1"),
    );
}

#[test]
fn the_summary_is_a_table_with_the_failure_last_and_its_cause() {
    if !docker_available() {
        return;
    }
    let work = tempfile::tempdir().expect("tmp");
    let w = work.path();
    good_and_broken(w);
    let r = packetary(
        &["build", "pkgs", "--out", "out", "--cache-dir", "cache"],
        w,
    );
    assert_eq!(r.code, 1, "{}", r.all());
    let lines: Vec<&str> = r.stdout.lines().collect();
    let head = lines
        .iter()
        .position(|l| l.starts_with("RESULT") && l.contains("TARGET/PACKAGE"))
        .unwrap_or_else(|| panic!("no table header:\n{}", r.all()));
    let rows = &lines[head + 1..];
    assert_eq!(
        rows.len(),
        2,
        "one row per build, nothing after:\n{}",
        r.all()
    );
    assert!(
        rows[0].starts_with("ok") && rows[0].contains(&format!("{T}/good-1.0-1")),
        "{}",
        r.all()
    );
    let failed = rows[1];
    assert!(
        failed.starts_with("FAILED") && failed.contains(&format!("{T}/broken-1.0-1")),
        "the failure is the last line:\n{}",
        r.all()
    );
    assert!(failed.contains("build phase failed"), "{}", r.all());
    // Each row has its time.
    for row in rows {
        assert!(
            row.split_whitespace()
                .nth(2)
                .is_some_and(|t| t.ends_with('s')),
            "{row}"
        );
    }
    assert!(
        lines[..head]
            .iter()
            .any(|l| l.starts_with("1 of 2 build(s) succeeded")),
        "{}",
        r.all()
    );
}

#[test]
fn json_has_every_build_with_its_result_cause_and_paths() {
    if !docker_available() {
        return;
    }
    let work = tempfile::tempdir().expect("tmp");
    let w = work.path();
    good_and_broken(w);
    let r = packetary(
        &[
            "build",
            "pkgs",
            "--out",
            "out",
            "--cache-dir",
            "cache",
            "--json",
        ],
        w,
    );
    assert_eq!(r.code, 1, "the exit status is the table's: {}", r.all());
    let doc: serde_json::Value = serde_json::from_str(&r.stdout)
        .unwrap_or_else(|e| panic!("stdout is not one JSON document ({e}):\n{}", r.all()));
    // Progress stayed on stderr.
    assert!(r.stderr.contains("stage 1 of 1"), "{}", r.all());
    assert_eq!(doc["total"], 2, "{doc:#}");
    assert_eq!(doc["succeeded"], 1, "{doc:#}");
    assert_eq!(doc["exit_code"], 1, "{doc:#}");
    let builds = doc["builds"].as_array().expect("builds");
    assert_eq!(builds.len(), 2, "{doc:#}");
    let good = &builds[0];
    assert_eq!(good["package"], "good", "{doc:#}");
    assert_eq!(good["target"], T);
    assert_eq!(good["result"], "succeeded");
    assert!(good["cause"].is_null(), "{doc:#}");
    assert!(good["duration_ms"].as_u64().is_some(), "{doc:#}");
    let artifacts = good["artifacts"].as_str().expect("artifacts");
    let rpms: Vec<_> = std::fs::read_dir(artifacts)
        .expect("the artifacts directory")
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().ends_with(".noarch.rpm"))
        .collect();
    assert_eq!(rpms.len(), 1, "{doc:#}");
    let broken = &builds[1];
    assert_eq!(broken["package"], "broken", "{doc:#}");
    assert_eq!(broken["result"], "failed");
    assert!(
        broken["cause"]
            .as_str()
            .is_some_and(|c| c.contains("build phase failed") && !c.contains('\n')),
        "{doc:#}"
    );
    assert!(broken["duration_ms"].as_u64().is_some(), "{doc:#}");
    let log = broken["log"].as_str().expect("log");
    let text = std::fs::read_to_string(log).expect("the log named");
    assert!(text.contains("broken on purpose"), "{log}:\n{text}");
}
