//! Reading rpmspec's tagged answers back into one `Answer` per spec.

use super::{Answer, AnswerError, SpecInfo, SpecQuery};
use crate::model::Nevr;

/// One answer of a batch, and whether it may be cached (a timeout or a dead container is
/// not the spec's last word).
pub(super) struct Reply {
    pub(super) answer: Answer,
    pub(super) cache: bool,
}

#[derive(Default)]
struct Section {
    rc: i32,
    out: Vec<String>,
    err: Vec<String>,
    truncated: bool,
}

pub(super) fn parse_output(text: &str, batch: &[&SpecQuery]) -> Vec<Reply> {
    let mut sections: Vec<[Option<Section>; 3]> =
        (0..batch.len()).map(|_| Default::default()).collect();
    let sec_of = |s: Option<&str>| match s {
        Some("nevr") => Some(0),
        Some("br") => Some(1),
        Some("prov") => Some(2),
        _ => None,
    };
    let mut cur: Option<(usize, usize)> = None;
    for line in text.lines() {
        if let Some(h) = line.strip_prefix("@@ ") {
            let mut it = h.split(' ');
            let i = it.next().and_then(|s| s.parse::<usize>().ok());
            let sec = sec_of(it.next());
            let rc = it.next().and_then(|s| s.parse().ok()).unwrap_or(1);
            cur = match (i, sec) {
                (Some(i), Some(sec)) if i < batch.len() => {
                    sections[i][sec] = Some(Section {
                        rc,
                        ..Default::default()
                    });
                    Some((i, sec))
                }
                _ => None,
            };
        } else if let Some(h) = line.strip_prefix("@T ") {
            let mut it = h.split(' ');
            let i = it.next().and_then(|s| s.parse::<usize>().ok());
            if let (Some(i), Some(sec)) = (i, sec_of(it.next())) {
                if let Some(s) = sections.get_mut(i).and_then(|s| s[sec].as_mut()) {
                    s.truncated = true;
                }
            }
        } else if let Some((i, sec)) = cur {
            if let Some(section) = sections[i][sec].as_mut() {
                if let Some(l) = line.strip_prefix("O ") {
                    section.out.push(l.to_string());
                } else if let Some(l) = line.strip_prefix("E ") {
                    section.err.push(l.to_string());
                } else if line == "O" {
                    section.out.push(String::new());
                }
            }
        }
    }
    sections
        .into_iter()
        .enumerate()
        .zip(batch)
        .map(|((i, [nevr, br, prov]), q)| answer(i, q, nevr, br, prov))
        .collect()
}

fn answer(
    i: usize,
    q: &SpecQuery,
    nevr: Option<Section>,
    br: Option<Section>,
    prov: Option<Section>,
) -> Reply {
    let Some(nevr) = nevr else {
        return Reply {
            answer: Err(AnswerError::NoAnswer {
                path: q.path.clone(),
            }),
            cache: false,
        };
    };
    for s in [Some(&nevr), br.as_ref(), prov.as_ref()]
        .into_iter()
        .flatten()
    {
        if s.rc != 0 {
            return failure(i, q, s);
        }
        if s.truncated {
            return Reply {
                answer: Err(AnswerError::TooMuchOutput {
                    path: q.path.clone(),
                }),
                cache: true,
            };
        }
    }
    let Some(prov) = prov else {
        return Reply {
            answer: Err(AnswerError::NoAnswer {
                path: q.path.clone(),
            }),
            cache: false,
        };
    };
    let Some(n) = nevr.out.iter().find_map(|l| Nevr::parse_query_line(l)) else {
        return Reply {
            answer: Err(AnswerError::NoNevr {
                path: q.path.clone(),
            }),
            cache: true,
        };
    };
    let clean = |v: Vec<String>| -> Vec<String> {
        let mut v: Vec<String> = v
            .into_iter()
            .map(|l| l.trim().to_string())
            .filter(|l| !l.is_empty())
            .collect();
        v.sort();
        v.dedup();
        v
    };
    let sources = clean(
        nevr.out
            .iter()
            .filter_map(|l| l.strip_prefix("S ").or_else(|| l.strip_prefix("P ")))
            .map(str::to_string)
            .collect(),
    );
    let mut requires: Vec<String> = nevr
        .out
        .iter()
        .filter_map(|l| l.strip_prefix("R "))
        .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
        .collect();
    requires.extend(br.map(|b| b.out).unwrap_or_default());
    Reply {
        answer: Ok(SpecInfo {
            nevr: n,
            build_requires: clean(requires),
            provides: clean(prov.out),
            sources,
        }),
        cache: true,
    }
}

/// Why an rpmspec call failed, as one message naming the spec by its repository path.
/// Exit statuses above 128 are signals: `timeout`'s (124, or 137 after its `-k`), the
/// CPU limit's SIGXCPU (152), the output limit's SIGXFSZ (153); 126/127 mean rpmspec could
/// not run. Only a failure of the spec itself says "cannot parse".
fn failure(i: usize, q: &SpecQuery, s: &Section) -> Reply {
    let path = q.path.clone();
    let message = || first_lines(i, q, s).unwrap_or_else(|| "no message".into());
    let (answer, cache) = match s.rc {
        124 | 137 => (AnswerError::Timeout { path }, false),
        152 => (AnswerError::CpuLimit { path }, true),
        153 => (AnswerError::OutputLimit { path }, true),
        code @ (126 | 127) => (
            AnswerError::CannotRun {
                path,
                code,
                message: message(),
            },
            false,
        ),
        rc if rc > 128 => (
            AnswerError::Killed {
                path,
                signal: rc - 128,
            },
            false,
        ),
        code => (
            AnswerError::Parse {
                path,
                code,
                message: message(),
            },
            true,
        ),
    };
    Reply {
        answer: Err(answer),
        cache,
    }
}

/// rpm's error lines, the real error first: lines naming the spec's location, then other
/// errors; carets, the closing "query of specfile ... failed" and warnings left out unless
/// nothing else was said. Container paths are replaced by the repository path.
fn first_lines(i: usize, q: &SpecQuery, s: &Section) -> Option<String> {
    let in_container = format!("/q/{i}/{}", q.spec_file);
    let dir = format!("/q/{i}/");
    let repo_dir = q.path.rsplit_once('/').map(|(d, _)| d).unwrap_or("");
    let local = |l: &str| {
        let l = l.replace(&in_container, &q.path);
        if repo_dir.is_empty() {
            l.replace(&dir, "")
        } else {
            l.replace(&dir, &format!("{repo_dir}/"))
        }
    };
    let errors: Vec<String> = s
        .err
        .iter()
        .filter_map(|l| l.strip_prefix("error:"))
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.chars().all(|c| c == '^' || c.is_whitespace()))
        .filter(|l| !l.starts_with("query of specfile"))
        .map(local)
        .collect();
    let (located, other): (Vec<String>, Vec<String>) =
        errors.into_iter().partition(|l| l.contains(&q.path));
    let mut lines: Vec<String> = located.into_iter().chain(other).take(3).collect();
    if lines.is_empty() {
        lines = s
            .err
            .iter()
            .map(|l| l.trim())
            .filter(|l| !l.is_empty() && !l.starts_with("warning:"))
            .map(local)
            .take(3)
            .collect();
    }
    if lines.is_empty() {
        lines = s
            .err
            .iter()
            .map(|l| l.trim())
            .filter(|l| !l.is_empty())
            .map(local)
            .take(3)
            .collect();
    }
    (!lines.is_empty()).then(|| lines.join(" | "))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(f: &str) -> SpecQuery {
        SpecQuery {
            blob: "ab".repeat(20),
            dir: "/x".into(),
            spec_file: f.into(),
            path: format!("pkgs/{f}"),
        }
    }

    fn answers(text: &str, batch: &[&SpecQuery]) -> Vec<(Answer, bool)> {
        parse_output(text, batch)
            .into_iter()
            .map(|r| (r.answer, r.cache))
            .collect()
    }

    #[test]
    fn output_is_split_per_spec_and_section() {
        let text = "@@ 0 nevr 0\nO a\t(none)\t1\t2\nO S a-1.tar.gz\nO P fix.patch\nO R gcc  \nO R b-devel >= 2\n\n@@ 0 prov 0\nO a = 1-2\nO a-libs = 1-2\n\
                    @@ 1 nevr 1\nE error: line 3: Unknown tag: Bogus: x\n";
        let (a, b) = (q("a.spec"), q("b.spec"));
        let r = answers(text, &[&a, &b]);
        let info = r[0].0.as_ref().expect("a parses");
        assert_eq!(info.nevr.nvr(), "a-1-2");
        assert_eq!(info.build_requires, ["b-devel >= 2", "gcc"]);
        assert_eq!(info.provides, ["a = 1-2", "a-libs = 1-2"]);
        assert_eq!(info.sources, ["a-1.tar.gz", "fix.patch"]);
        let e = r[1].0.as_ref().expect_err("b fails");
        assert!(
            matches!(e, AnswerError::Parse { path, code: 1, message } if path == "pkgs/b.spec" && message.contains("Unknown tag")),
            "{e:?}"
        );
        assert!(r[1].1, "a spec error is cached");
    }

    #[test]
    fn the_real_error_comes_first_with_the_repository_path() {
        let text = "@@ 0 nevr 1\n\
            E warning: line 4: Possible unexpanded macro in: License: %{x}\n\
            E warning: line 5: Possible unexpanded macro in: URL: %{y}\n\
            E warning: line 6: Possible unexpanded macro in: Source0: %{z}\n\
            E warning: line 7: Possible unexpanded macro in: Source1: %{w}\n\
            E error: parse error in expression:  %{fedora} >= 40\n\
            E error:                             ^\n\
            E error: /q/0/a.spec:9: bad %if condition:  %{fedora} >= 40\n\
            E error: query of specfile /q/0/a.spec failed, can't parse\n";
        let a = q("a.spec");
        let r = answers(text, &[&a]);
        let e = r[0].0.as_ref().expect_err("fails").to_string();
        assert!(
            e.starts_with(
                "rpmspec cannot parse pkgs/a.spec (exit 1): pkgs/a.spec:9: bad %if condition"
            ),
            "{e}"
        );
        assert!(e.contains("parse error in expression"), "{e}");
        assert!(!e.contains("/q/0") && !e.contains("warning"), "{e}");
    }

    #[test]
    fn limits_and_environment_faults_are_not_parse_errors() {
        let a = q("a.spec");
        let is = |e: &AnswerError, rc: i32| match rc {
            124 | 137 => matches!(e, AnswerError::Timeout { .. }),
            152 => matches!(e, AnswerError::CpuLimit { .. }),
            153 => matches!(e, AnswerError::OutputLimit { .. }),
            127 => matches!(e, AnswerError::CannotRun { code: 127, .. }),
            139 => matches!(e, AnswerError::Killed { signal: 11, .. }),
            _ => false,
        };
        for (rc, want, cached) in [
            (124, "did not finish within 20 s", false),
            (137, "did not finish within 20 s", false),
            (152, "CPU", true),
            (153, "wrote more than 8 MiB", true),
            (127, "could not be run in the target's image", false),
            (139, "killed by signal 11", false),
        ] {
            let r = answers(
                &format!("@@ 0 nevr {rc}\nE sh: rpmspec: not found\n"),
                &[&a],
            );
            let e = r[0].0.as_ref().expect_err("fails");
            assert!(is(e, rc), "{rc}: {e:?}");
            let e = e.to_string();
            assert!(e.contains(want) && e.contains("pkgs/a.spec"), "{rc}: {e}");
            assert!(!e.contains("cannot parse"), "{rc}: {e}");
            assert_eq!(r[0].1, cached, "{rc}");
        }
        let r = answers("@@ 0 nevr 0\nO a\t(none)\t1\t2\n", &[&a]);
        assert!(!r[0].1, "an answer cut short is not cached");
        let r = answers(
            "@@ 0 nevr 0\nO a\t(none)\t1\t2\n@@ 0 prov 0\nO x\n@T 0 prov\n",
            &[&a],
        );
        let e = r[0].0.as_ref().expect_err("cut");
        assert!(matches!(e, AnswerError::TooMuchOutput { .. }), "{e:?}");
        assert!(e.to_string().contains("more than 2 MiB"), "{e}");
    }
}
