//! Bad input while planning, against real repositories: a broken `.packetary.toml` is a
//! clear plan error, broken packages fail alone while the others plan, a huge diff still
//! plans.

use crate::plan_common;

use packetary::plan::Reason;
use plan_common::*;

#[test]
fn bad_packetary_toml_is_a_clear_plan_error() {
    let r = TestRepo::new();
    let c1 = r.commit("main", &[put("a/a.spec", &spec("a", ""))]);
    let c2 = r.commit(
        "main",
        &[
            put(".packetary.toml", "layout = \"dir\"\npackagez = [\"x\"]\n"),
            put("a/a.spec", &spec("a", "#")),
        ],
    );
    let plan = select(&r, push(Some(c1), c2));
    assert_eq!(plan.errors.len(), 1, "{plan:?}");
    assert!(
        plan.errors[0].contains("unknown key `packagez`") && plan.errors[0].contains(":2"),
        "{}",
        plan.errors[0]
    );
    assert!(plan.packages.is_empty());

    let c3 = r.commit("main", &[put(".packetary.toml", "targets = [\"nope\"]\n")]);
    let plan = select(&r, push(Some(c2), c3));
    assert!(
        plan.errors[0].contains("no target named `nope`"),
        "{:?}",
        plan.errors
    );
}

#[test]
fn bad_inputs_are_reported_per_package_while_others_plan() {
    let r = TestRepo::new();
    let c1 = r.commit(
        "main",
        &[
            put("good/good.spec", &spec("good", "")),
            put("link/link.spec", &spec("link", "")),
            put("sub/sub.spec", &spec("sub", "")),
            put("utf/utf.spec", &spec("utf", "")),
            put("two/x.spec", &spec("x", "")),
        ],
    );
    let c2 = r.commit(
        "main",
        &[
            put("good/good.spec", &spec("good", "# x")),
            PutMode(b"link/passwd", b"../../../etc/passwd", LINK),
            PutMode(
                b"sub/vendor",
                b"1111111111111111111111111111111111111111",
                SUBMODULE,
            ),
            Put(b"utf/caf\xe9.patch", b"latin-1 name"),
            Put(b"\xff-stray/file", b"outside any package"),
        ],
    );
    let plan = select(&r, push(Some(c1), c2));
    assert!(plan.errors.is_empty(), "{:?}", plan.errors);
    assert_eq!(ids(&plan), ["good", "link", "sub", "utf"]);
    let err = |id: &str| {
        plan.packages
            .iter()
            .find(|p| p.id.as_str() == id)
            .and_then(|p| p.error.clone())
            .unwrap_or_default()
    };
    assert_eq!(err("good"), "");
    assert!(
        err("link").contains("link/passwd") && err("link").contains("outside the repository"),
        "{}",
        err("link")
    );
    assert!(
        err("sub").contains("sub/vendor is a git submodule"),
        "{}",
        err("sub")
    );
    assert!(
        err("utf").contains("not valid UTF-8") && err("utf").contains("caf"),
        "{}",
        err("utf")
    );
    assert!(
        plan.notices.iter().any(|n| n.contains("not valid UTF-8")),
        "{:?}",
        plan.notices
    );
    assert_eq!(plan.buildable().count(), 1);
}

#[test]
fn a_huge_diff_still_plans_with_a_notice() {
    let r = TestRepo::new();
    let c1 = r.commit(
        "main",
        &[
            put("big/big.spec", &spec("big", "")),
            put("small/small.spec", &spec("small", "")),
        ],
    );
    let names: Vec<String> = (0..100_000)
        .map(|i| format!("big/data/{:03}/{i}.txt", i % 500))
        .collect();
    let mut edits: Vec<Edit<'_>> = names.iter().map(|n| Put(n.as_bytes(), b"x")).collect();
    let small = spec("small", "# y");
    edits.push(Put(b"small/small.spec", small.as_bytes()));
    let c2 = r.commit("main", &edits);
    let started = std::time::Instant::now();
    let plan = select(&r, push(Some(c1), c2));
    assert_eq!(plan.changed_paths, 100_001);
    assert_eq!(ids(&plan), ["big", "small"]);
    assert!(
        plan.notices.iter().any(|n| n.contains("large change")),
        "{:?}",
        plan.notices
    );
    let big = &plan.packages[0];
    assert!(
        matches!(&big.reasons[0], Reason::Changed { count: 100_000, paths } if paths.len() == 5)
    );
    eprintln!("planned a 100,001-path change in {:?}", started.elapsed());
}
