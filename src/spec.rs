//! What a spec says (name, version, BuildRequires, Provides), from real rpm.
//!
//! Spec files are programs (macros run shell and Lua), so they are only ever evaluated by
//! `rpmspec` inside the target's image, with the package mounted read-only and no network.
//! Answers are cached by the spec's blob id and the target, one small JSON file each, so a
//! warm plan reads a few files and never starts a container.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::build::backend::sh_quote;
use crate::build::docker::ContainerSpec;
use crate::build::{Engine, InfraError, LABEL_BUILD};
use crate::config::Target;
use crate::model::{BuildId, Nevr};

/// What rpm made of a spec for one target.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SpecInfo {
    pub nevr: Nevr,
    pub build_requires: Vec<String>,
    /// Provides of every binary package the spec makes.
    pub provides: Vec<String>,
}

/// One answer: the spec's facts, or rpm's complaint (the spec's fault, cached like facts).
pub type Answer = Result<SpecInfo, String>;

#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    /// Docker or the image failed: nothing is known about the specs, nothing is cached.
    #[error("cannot query specs: {0}")]
    Infra(#[from] InfraError),
}

/// A spec to ask about: its blob id (the cache key) and the exported package directory.
#[derive(Debug, Clone)]
pub struct SpecQuery {
    pub blob: String,
    pub dir: PathBuf,
    pub spec_file: String,
}

#[derive(Serialize, Deserialize)]
#[serde(tag = "result", rename_all = "snake_case")]
enum Stored {
    Ok { info: SpecInfo },
    Error { message: String },
}

/// The on-disk cache: `<dir>/<target-key>/<blob[..2]>/<blob>.json`.
#[derive(Debug, Clone)]
pub struct SpecCache {
    dir: PathBuf,
}

impl SpecCache {
    pub fn new(dir: impl Into<PathBuf>) -> SpecCache {
        SpecCache { dir: dir.into() }
    }

    /// Everything about a target that can change what rpm answers.
    fn target_key(target: &Target) -> String {
        let mut h = Sha256::new();
        for part in [
            target.image.as_str(),
            target.arch.as_str(),
            target.dist.as_deref().unwrap_or(""),
            target.releasever.as_deref().unwrap_or(""),
        ] {
            h.update(part.as_bytes());
            h.update([0]);
        }
        format!("{}-{}", target.name, hex::encode(&h.finalize()[..6]))
    }

    fn path(&self, target: &Target, blob: &str) -> Option<PathBuf> {
        if blob.len() < 4 || !blob.chars().all(|c| c.is_ascii_hexdigit()) {
            return None;
        }
        Some(
            self.dir
                .join(Self::target_key(target))
                .join(&blob[..2])
                .join(format!("{blob}.json")),
        )
    }

    pub fn get(&self, target: &Target, blob: &str) -> Option<Answer> {
        let text = std::fs::read(self.path(target, blob)?).ok()?;
        match serde_json::from_slice(&text).ok()? {
            Stored::Ok { info } => Some(Ok(info)),
            Stored::Error { message } => Some(Err(message)),
        }
    }

    /// Written to a temporary file and renamed: concurrent planners never read half a file.
    pub fn put(&self, target: &Target, blob: &str, answer: &Answer) -> std::io::Result<()> {
        let Some(path) = self.path(target, blob) else {
            return Ok(());
        };
        if let Some(d) = path.parent() {
            std::fs::create_dir_all(d)?;
        }
        let stored = match answer {
            Ok(info) => Stored::Ok { info: info.clone() },
            Err(message) => Stored::Error {
                message: message.clone(),
            },
        };
        let tmp = path.with_extension(format!("tmp{}", std::process::id()));
        std::fs::write(
            &tmp,
            serde_json::to_vec(&stored).map_err(std::io::Error::other)?,
        )?;
        std::fs::rename(&tmp, &path)
    }
}

/// Answers spec questions from the cache, asking rpm in a container for the rest.
pub struct SpecOracle {
    cache: SpecCache,
    docker_host: Option<String>,
    engine: tokio::sync::OnceCell<Engine>,
}

/// Specs asked about in one container; bounded so one bad spec's output stays readable.
const BATCH: usize = 100;

impl SpecOracle {
    pub fn new(cache: SpecCache, docker_host: Option<String>) -> SpecOracle {
        SpecOracle {
            cache,
            docker_host,
            engine: tokio::sync::OnceCell::new(),
        }
    }

    /// With an engine already connected (the build command has one).
    pub fn with_engine(cache: SpecCache, engine: Engine) -> SpecOracle {
        SpecOracle {
            cache,
            docker_host: None,
            engine: tokio::sync::OnceCell::new_with(Some(engine)),
        }
    }

    pub fn cache(&self) -> &SpecCache {
        &self.cache
    }

    /// The cached answer, if any; never starts a container.
    pub fn cached(&self, target: &Target, blob: &str) -> Option<Answer> {
        self.cache.get(target, blob)
    }

    /// Answers for `queries`, in order; cache misses are asked in one container per batch.
    pub async fn query(
        &self,
        target: &Target,
        queries: &[SpecQuery],
    ) -> Result<Vec<Answer>, SpecError> {
        let mut answers: Vec<Option<Answer>> = queries
            .iter()
            .map(|q| self.cache.get(target, &q.blob))
            .collect();
        let missing: Vec<usize> = (0..queries.len())
            .filter(|&i| answers[i].is_none())
            .collect();
        for chunk in missing.chunks(BATCH) {
            let batch: Vec<&SpecQuery> = chunk.iter().map(|&i| &queries[i]).collect();
            let got = self.run(target, &batch).await?;
            for (&i, a) in chunk.iter().zip(got) {
                if let Err(e) = self.cache.put(target, &queries[i].blob, &a) {
                    tracing::warn!("cannot write the spec cache: {e}");
                }
                answers[i] = Some(a);
            }
        }
        Ok(answers
            .into_iter()
            .map(|a| a.unwrap_or_else(|| Err("no answer from rpmspec".into())))
            .collect())
    }

    async fn engine(&self) -> Result<&Engine, SpecError> {
        Ok(self
            .engine
            .get_or_try_init(|| Engine::connect(self.docker_host.as_deref()))
            .await?)
    }

    async fn run(&self, target: &Target, batch: &[&SpecQuery]) -> Result<Vec<Answer>, SpecError> {
        let engine = self.engine().await?;
        let id = BuildId::generate();
        let mounts = batch
            .iter()
            .enumerate()
            .map(|(i, q)| (q.dir.display().to_string(), format!("/q/{i}"), true))
            .collect();
        let spec = ContainerSpec {
            name: format!("packetary-spec-{id}"),
            image: target.image.clone(),
            cmd: None,
            labels: [(LABEL_BUILD.to_string(), format!("spec-{id}"))]
                .into_iter()
                .collect(),
            mounts,
            env: vec!["LANG=C.UTF-8".into(), "HOME=/tmp".into()],
            memory_bytes: Some(1 << 30),
            nano_cpus: None,
            pids: Some(512),
            network: false,
            cap_add: vec![],
            security_opt: vec!["no-new-privileges".into()],
        };
        let (code, out) = engine
            .run_once(
                &spec,
                vec!["bash".into(), "-c".into(), script(target, batch)],
            )
            .await?;
        let text = String::from_utf8_lossy(&out);
        if code != 0 {
            return Err(SpecError::Infra(InfraError(format!(
                "the spec query script exited {code} in {}: {}",
                target.image,
                text.lines().rev().take(5).collect::<Vec<_>>().join(" | ")
            ))));
        }
        Ok(parse_output(&text, batch))
    }
}

/// Three rpmspec calls per spec; each call's status, stdout and stderr come back tagged.
fn script(target: &Target, batch: &[&SpecQuery]) -> String {
    let mut s = String::from(
        "set -u\ncommand -v rpmspec >/dev/null || { echo 'rpmspec is not installed in this image'; exit 2; }\n\
         q() { i=$1; sec=$2; shift 2; rpmspec \"$@\" >/tmp/o 2>/tmp/e; rc=$?; echo \"@@ $i $sec $rc\"; sed 's/^/O /' /tmp/o; sed 's/^/E /' /tmp/e; }\n",
    );
    let mut defines = vec![format!("_target_cpu {}", target.arch)];
    if let Some(d) = &target.dist {
        defines.push(format!("dist .{d}"));
    }
    for (i, q) in batch.iter().enumerate() {
        let dir = format!("/q/{i}");
        let mut args = vec![
            "--define".to_string(),
            sh_quote(&format!("_sourcedir {dir}")),
        ];
        for d in &defines {
            args.push("--define".into());
            args.push(sh_quote(d));
        }
        let spec = sh_quote(&format!("{dir}/{}", q.spec_file));
        let a = args.join(" ");
        s.push_str(&format!(
            "q {i} nevr {a} -q --srpm --qf '%{{NAME}}\\t%{{EPOCH}}\\t%{{VERSION}}\\t%{{RELEASE}}\\n' {spec}\n\
             q {i} br {a} -q --buildrequires {spec}\n\
             q {i} prov {a} -q --provides {spec}\n"
        ));
    }
    s.push_str("exit 0\n");
    s
}

#[derive(Default)]
struct Section {
    rc: i32,
    out: Vec<String>,
    err: Vec<String>,
}

fn parse_output(text: &str, batch: &[&SpecQuery]) -> Vec<Answer> {
    let mut sections: Vec<[Option<Section>; 3]> =
        (0..batch.len()).map(|_| Default::default()).collect();
    let mut cur: Option<(usize, usize)> = None;
    for line in text.lines() {
        if let Some(h) = line.strip_prefix("@@ ") {
            let mut it = h.split(' ');
            let i = it.next().and_then(|s| s.parse::<usize>().ok());
            let sec = match it.next() {
                Some("nevr") => Some(0),
                Some("br") => Some(1),
                Some("prov") => Some(2),
                _ => None,
            };
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
        .zip(batch)
        .map(|([nevr, br, prov], q)| {
            let (Some(nevr), Some(br), Some(prov)) = (nevr, br, prov) else {
                return Err(format!("{}: rpmspec gave no answer", q.spec_file));
            };
            for s in [&nevr, &br, &prov] {
                if s.rc != 0 {
                    return Err(rpm_complaint(&q.spec_file, s));
                }
            }
            let n = nevr
                .out
                .iter()
                .find_map(|l| Nevr::parse_query_line(l))
                .ok_or_else(|| {
                    format!(
                        "{}: rpmspec printed no usable name/version/release",
                        q.spec_file
                    )
                })?;
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
            Ok(SpecInfo {
                nevr: n,
                build_requires: clean(br.out),
                provides: clean(prov.out),
            })
        })
        .collect()
}

/// rpm's error lines, without the noise, as one short message.
fn rpm_complaint(spec_file: &str, s: &Section) -> String {
    let errors: Vec<&str> = s
        .err
        .iter()
        .map(String::as_str)
        .filter(|l| l.starts_with("error:") || l.contains("line "))
        .take(4)
        .collect();
    let lines = if errors.is_empty() {
        s.err.iter().map(String::as_str).take(4).collect::<Vec<_>>()
    } else {
        errors
    };
    format!(
        "rpmspec cannot parse {spec_file} (exit {}): {}",
        s.rc,
        if lines.is_empty() {
            "no message".to_string()
        } else {
            lines.join(" | ")
        }
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(f: &str) -> SpecQuery {
        SpecQuery {
            blob: "ab".repeat(20),
            dir: "/x".into(),
            spec_file: f.into(),
        }
    }

    #[test]
    fn output_is_split_per_spec_and_section() {
        let text = "@@ 0 nevr 0\nO a\t(none)\t1\t2\n@@ 0 br 0\nO gcc\nO b-devel >= 2\n@@ 0 prov 0\nO a = 1-2\nO a-libs = 1-2\n\
                    @@ 1 nevr 1\nE error: line 3: Unknown tag: Bogus: x\n@@ 1 br 1\n@@ 1 prov 1\n";
        let (a, b) = (q("a.spec"), q("b.spec"));
        let r = parse_output(text, &[&a, &b]);
        let info = r[0].as_ref().expect("a parses");
        assert_eq!(info.nevr.nvr(), "a-1-2");
        assert_eq!(info.build_requires, ["b-devel >= 2", "gcc"]);
        assert_eq!(info.provides, ["a = 1-2", "a-libs = 1-2"]);
        let e = r[1].as_ref().expect_err("b fails");
        assert!(e.contains("b.spec") && e.contains("Unknown tag"), "{e}");
    }

    #[test]
    fn cache_round_trip() {
        let t = tempfile::tempdir().expect("tmp");
        let c = SpecCache::new(t.path());
        let target = crate::config::Config::load(None)
            .expect("defaults")
            .targets
            .into_values()
            .next()
            .expect("a target");
        let blob = "0123456789abcdef0123456789abcdef01234567";
        assert!(c.get(&target, blob).is_none());
        let info = SpecInfo {
            nevr: Nevr::parse_query_line("a\t(none)\t1\t1").expect("nevr"),
            build_requires: vec!["x".into()],
            provides: vec!["a = 1-1".into()],
        };
        c.put(&target, blob, &Ok(info.clone())).expect("put");
        assert_eq!(c.get(&target, blob), Some(Ok(info)));
        c.put(&target, blob, &Err("bad".into())).expect("put");
        assert_eq!(c.get(&target, blob), Some(Err("bad".into())));
        assert!(c.get(&target, "../../etc").is_none());
    }
}
