//! A corpus of failing specs (`tests/data/failing-specs/`), each built for real on both
//! backends — the default target (rpmbuild on Debian) and Mock (`debian12-mock`, see
//! `build_mock`) — with one test per case and backend: the one-line summary the forge
//! shows must name the cause (rpm's `error: line N: ...`, the compiler's error, the file,
//! the failing command, the undefined macro), never a progress line.
//!
//! The Mock cases share `build_mock`'s image and warm buildroot (made once per test
//! process), so each is one ordinary Mock build of a few seconds.

use crate::build_mock::mock_build;
use crate::common::*;
use std::path::Path;

#[derive(Clone, Copy)]
enum Backend {
    Default,
    Mock,
}

/// Builds the corpus spec `case` alone and returns its one-line summary, after checking
/// that it failed in `phase` and that the summary is not a progress line.
fn summary(backend: Backend, case: &str, phase: &str) -> String {
    let text = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/data/failing-specs")
            .join(format!("{case}.spec")),
    )
    .expect("corpus spec");
    let work = tempfile::tempdir().expect("tmp");
    let w = work.path();
    write(&w.join(case).join(format!("{case}.spec")), &text);
    let r = match backend {
        Backend::Default => packetary(&["build", case, "--out", "out"], w),
        Backend::Mock => mock_build(w, case, "", &[]),
    };
    assert_eq!(r.code, 1, "{}", r.all());
    let line = r
        .stdout
        .lines()
        .find(|l| l.starts_with("FAILED  "))
        .unwrap_or_else(|| panic!("no FAILED line: {}", r.all()));
    let (_, summary) = line
        .split_once(&format!("  {phase} phase failed: "))
        .unwrap_or_else(|| panic!("not a {phase} phase failure: {line}\n{}", r.all()));
    for progress in [
        "Building target platforms",
        "Building for target",
        "Executing(",
        "Wrote:",
        "Processing files",
        "RPM build errors",
        "INFO:",
        "Start:",
        "Finish:",
        "bash --login",
        "rpm-tmp",
    ] {
        assert!(!summary.contains(progress), "a progress line: {line}");
    }
    summary.to_string()
}

/// One test per case and backend: `case` is the spec's name, then the phase it fails in and
/// what the summary must contain on each backend.
macro_rules! corpus {
    ($($case:ident: $spec:literal, $phase:literal,
        default [$($d:literal),*], mock [$($m:literal),*];)*) => {
        mod default_target {
            $(
                #[test]
                fn $case() {
                    if !crate::common::docker_available() {
                        return;
                    }
                    let s = super::summary(super::Backend::Default, $spec, $phase);
                    for want in [$($d),*] {
                        assert!(s.contains(want), "{want:?} not in the summary: {s}");
                    }
                }
            )*
        }
        mod mock {
            $(
                #[test]
                fn $case() {
                    if !crate::common::docker_available() {
                        return;
                    }
                    let s = super::summary(super::Backend::Mock, $spec, $phase);
                    for want in [$($m),*] {
                        assert!(s.contains(want), "{want:?} not in the summary: {s}");
                    }
                }
            )*
        }
    };
}

corpus! {
    unknown_tag: "unknown-tag", "srpm",
        default ["error: line 7: Unknown tag: Bogus: 1"],
        mock ["error: line 7: Unknown tag: Bogus: 1"];
    unclosed_if: "unclosed-if", "srpm",
        default ["error: line 11: Unclosed %if"],
        mock ["error: line 11: Unclosed %if"];
    endif_without_if: "endif-without-if", "srpm",
        default ["line 11: %endif with no %if"],
        mock ["line 11: %endif with no %if"];
    bad_if_expression: "bad-if-expression", "srpm",
        default [":11: bad %if condition", "unexpected end of expression"],
        mock [":11: bad %if condition", "unexpected end of expression"];
    compile_error: "compile-error", "build",
        default ["broken.c:3:12: error: 'undeclared_thing' undeclared"],
        mock ["broken.c:3:12: error: 'undeclared_thing' undeclared"];
    check_fails: "check-fails", "build",
        default ["`test 41 = 42` failed in %check"],
        mock ["`test 41 = 42` failed in %check"];
    file_not_found: "file-not-found", "build",
        default ["error: File not found: ", "/usr/share/file-not-found/never-installed"],
        mock ["error: File not found: ", "/usr/share/file-not-found/never-installed"];
    unpackaged_file: "unpackaged", "build",
        default ["error: Installed (but unpackaged) file(s) found: /usr/share/unpackaged/stray"],
        mock ["error: Installed (but unpackaged) file(s) found: /usr/share/unpackaged/stray"];
    // Issue 23's modern Fedora Python spec: the default target lacks the pyproject macros;
    // the Mock test buildroot lacks python3-devel before that.
    pyproject_macros: "pyproject", "build",
        default ["macro `%pyproject_buildrequires` is not defined on target bookworm-rpmbuild; it comes from pyproject-rpm-macros on Fedora"],
        mock ["missing build dependencies: python3-devel"];
    // A release rpm cannot expand: named, instead of building `x-1.0-%{my_release}`.
    undefined_release_macro: "undefined-release-macro", "srpm",
        default ["macro `%my_release` is not defined on target bookworm-rpmbuild"],
        mock ["macro `%my_release` is not defined on target debian12-mock"];
    // %cmake without BuildRequires: cmake. The default target defines the macro, so the
    // missing tool is named; the Mock test buildroot does not define it.
    cmake_macro: "cmake-macro", "build",
        default ["command not found: /usr/bin/cmake"],
        mock ["macro `%cmake` is not defined on target debian12-mock; it comes from cmake-rpm-macros on Fedora"];
}

/// `%autorelease` where nothing defines it (the Mock test buildroot) names the macro and
/// its Fedora package rather than building `autorelease-1.0-%autorelease`.
#[test]
fn mock_names_an_undefined_autorelease() {
    if !docker_available() {
        return;
    }
    let s = summary(Backend::Mock, "autorelease", "srpm");
    assert!(
        s.starts_with("macro `%autorelease` is not defined on target debian12-mock; it comes from rpmautospec-rpm-macros on Fedora"),
        "{s}"
    );
}

/// The rpmautospec family is one the default target provides (Fedora's fallback: release 1,
/// one changelog entry): a spec using it builds, where rpm alone would have left
/// `%autorelease` in the release.
#[test]
fn the_default_target_defines_autorelease_and_autochangelog() {
    if !docker_available() {
        return;
    }
    let work = tempfile::tempdir().expect("tmp");
    let w = work.path();
    let text = spec("autorel", "", "true")
        .replace("Release: 1\n", "Release: %autorelease\n")
        .replace(
            "* Wed Nov 25 2026 Test <t@example.org> - 1.0-1\n- test\n",
            "%autochangelog\n",
        );
    assert!(text.contains("%autochangelog"), "{text}");
    write(&w.join("autorel/autorel.spec"), &text);
    // Outside git, SOURCE_DATE_EPOCH is the newest file's mtime: the entry is dated by it.
    let st = std::process::Command::new("touch")
        .args(["-d", "@1764000000"])
        .arg(w.join("autorel/autorel.spec"))
        .status()
        .expect("touch");
    assert!(st.success());
    let r = packetary(&["build", "autorel", "--out", "out"], w);
    assert_eq!(r.code, 0, "{}", r.all());
    let dir = w.join("out/bookworm-rpmbuild/autorel-1.0-1");
    let q = rpm_query(
        &dir,
        "autorel-1.0-1.noarch.rpm",
        "%{RELEASE}|[%{CHANGELOGTIME:day}|%{CHANGELOGNAME}|%{CHANGELOGTEXT}\\n]",
    );
    assert_eq!(
        q,
        "1|Mon Nov 24 2025|Packetary <packetary@localhost> - 1.0-1|- local build\n"
    );
}
