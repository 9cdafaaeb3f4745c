//! What a spec says (name, version, BuildRequires, Provides, source files), from real rpm.
//!
//! Spec files are programs (macros run shell and Lua), so they are only ever evaluated by
//! `rpmspec` inside the target's image, with the package mounted read-only, no network, as
//! an unprivileged user, and within time, CPU and output limits. Answers are cached by the
//! spec's blob id and everything about the target that changes them (image id, macros,
//! kernel release), one small JSON file each, so a warm plan reads a few files and never
//! starts a container.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::config::Target;
use crate::docker::ContainerSpec;
use crate::docker::{Engine, InfraError, LABEL_BUILD};
use crate::executor::backend::sh_quote;
use crate::model::{BuildId, Nevr};

/// What rpm made of a spec for one target.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SpecInfo {
    pub nevr: Nevr,
    pub build_requires: Vec<String>,
    /// Provides of every binary package the spec makes.
    pub provides: Vec<String>,
    /// File names its `Source`/`Patch` tags name (rpm keeps the last path component).
    #[serde(default)]
    pub sources: Vec<String>,
}

/// One answer: the spec's facts, or why they are unknown (rpm's complaint about the spec,
/// or a limit it ran into), as a message naming the spec by its repository path.
pub type Answer = Result<SpecInfo, String>;

#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    /// Docker or the image failed: nothing is known about the specs, nothing is cached.
    #[error("cannot query specs: {0}")]
    Infra(#[from] InfraError),
}

/// A spec to ask about: its blob id (the cache key), the exported package directory, and
/// its path in the repository (what messages name).
#[derive(Debug, Clone)]
pub struct SpecQuery {
    pub blob: String,
    pub dir: PathBuf,
    pub spec_file: String,
    pub path: String,
}

#[derive(Serialize, Deserialize)]
#[serde(tag = "result", rename_all = "snake_case")]
enum Stored {
    Ok { info: SpecInfo },
    Error { message: String },
}

/// Bumped when what a query asks, or how, changes: older answers are then asked again.
const QUERY_VERSION: &str = "4";

/// Wall-clock limit of one rpmspec call: a `%(sleep 1000)` costs this, once per plan.
pub const QUERY_TIMEOUT: Duration = Duration::from_secs(20);
/// CPU seconds one rpmspec call may use (a Lua loop).
const QUERY_CPU_SECS: u32 = 30;
/// Bytes one rpmspec call may write to each of stdout and stderr (`ulimit -f`).
const QUERY_FILE_KIB: u64 = 8 * 1024;
/// Bytes of each call's stdout and stderr that come back to the service.
const SHOWN_OUT: u64 = 2 << 20;
const SHOWN_ERR: u64 = 16 << 10;
/// What the service reads from one batch container at most, whatever happens inside.
const BATCH_OUTPUT_CAP: usize = 96 << 20;
/// A batch container is removed after this long, whatever it is doing.
const BATCH_DEADLINE: Duration = Duration::from_secs(600);

/// The cache directory of one target as it is now: its name and a digest of the image id
/// and everything else that can change what rpm answers.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct CacheKey(String);

impl CacheKey {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// The on-disk cache: `<dir>/<cache-key>/<blob[..2]>/<blob>.json`.
#[derive(Debug, Clone)]
pub struct SpecCache {
    dir: PathBuf,
}

impl SpecCache {
    pub fn new(dir: impl Into<PathBuf>) -> SpecCache {
        SpecCache { dir: dir.into() }
    }

    /// Everything about a target that can change what rpm answers; `image_id` is the id
    /// of `target.image` (None when unknown).
    pub fn key(target: &Target, image_id: Option<&str>) -> CacheKey {
        let mut h = Sha256::new();
        let macros = target.rpm_defines().join("\n");
        for part in [
            QUERY_VERSION,
            target.image.as_str(),
            image_id.unwrap_or(""),
            target.arch.as_str(),
            macros.as_str(),
            target.uname_r.as_deref().unwrap_or(""),
        ] {
            h.update(part.as_bytes());
            h.update([0]);
        }
        CacheKey(format!(
            "{}-{}",
            target.name,
            hex::encode(&h.finalize()[..6])
        ))
    }

    fn image_file(&self, image: &str) -> PathBuf {
        let h = Sha256::digest(image.as_bytes());
        self.dir.join("images").join(hex::encode(&h[..8]))
    }

    /// The id `image` had at the last query, so that a plan without Docker still finds
    /// the answers given for it.
    pub fn remembered_image(&self, image: &str) -> Option<String> {
        let s = std::fs::read_to_string(self.image_file(image)).ok()?;
        let s = s.trim();
        (!s.is_empty() && s.len() < 200).then(|| s.to_string())
    }

    fn remember_image(&self, image: &str, id: &str) -> std::io::Result<()> {
        if self.remembered_image(image).as_deref() == Some(id) {
            return Ok(());
        }
        let path = self.image_file(image);
        if let Some(d) = path.parent() {
            std::fs::create_dir_all(d)?;
        }
        let tmp = path.with_extension(format!("tmp{}", std::process::id()));
        std::fs::write(&tmp, id)?;
        std::fs::rename(&tmp, &path)
    }

    fn path(&self, key: &CacheKey, blob: &str) -> Option<PathBuf> {
        if blob.len() < 4 || !blob.chars().all(|c| c.is_ascii_hexdigit()) {
            return None;
        }
        Some(
            self.dir
                .join(key.as_str())
                .join(&blob[..2])
                .join(format!("{blob}.json")),
        )
    }

    pub fn get(&self, key: &CacheKey, blob: &str) -> Option<Answer> {
        let text = std::fs::read(self.path(key, blob)?).ok()?;
        match serde_json::from_slice(&text).ok()? {
            Stored::Ok { info } => Some(Ok(info)),
            Stored::Error { message } => Some(Err(message)),
        }
    }

    /// Written to a temporary file and renamed: concurrent planners never read half a file.
    pub fn put(&self, key: &CacheKey, blob: &str, answer: &Answer) -> std::io::Result<()> {
        let Some(path) = self.path(key, blob) else {
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
    /// Image ids looked up lately: a plan asks once, not once per spec.
    image_ids: Mutex<HashMap<String, (Instant, Option<String>)>>,
}

/// Specs asked about in one container; bounded so one bad spec's output stays readable.
const BATCH: usize = 100;
/// How long an image id looked up is trusted (an `images build` changes it).
const IMAGE_ID_TTL: Duration = Duration::from_secs(10);

/// One answer of a batch, and whether it may be cached (a timeout or a dead container is
/// not the spec's last word).
struct Reply {
    answer: Answer,
    cache: bool,
}

impl SpecOracle {
    pub fn new(cache: SpecCache, docker_host: Option<String>) -> SpecOracle {
        SpecOracle {
            cache,
            docker_host,
            engine: tokio::sync::OnceCell::new(),
            image_ids: Mutex::new(HashMap::new()),
        }
    }

    /// With an engine already connected (the build command has one).
    pub fn with_engine(cache: SpecCache, engine: Engine) -> SpecOracle {
        SpecOracle {
            cache,
            docker_host: None,
            engine: tokio::sync::OnceCell::new_with(Some(engine)),
            image_ids: Mutex::new(HashMap::new()),
        }
    }

    pub fn cache(&self) -> &SpecCache {
        &self.cache
    }

    /// The cache key of `target` now: with the id of its image from Docker, or the id
    /// remembered from the last query when Docker cannot say.
    pub async fn key(&self, target: &Target) -> CacheKey {
        let now = Instant::now();
        let known = self
            .image_ids
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&target.image)
            .filter(|(at, _)| now.duration_since(*at) < IMAGE_ID_TTL)
            .map(|(_, id)| id.clone());
        let id = match known {
            Some(id) => id,
            None => {
                let asked = match self.engine().await {
                    Ok(e) => e.image_id(&target.image).await.ok().flatten(),
                    Err(_) => None,
                };
                let id = asked.or_else(|| self.cache.remembered_image(&target.image));
                self.image_ids
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(target.image.clone(), (now, id.clone()));
                id
            }
        };
        SpecCache::key(target, id.as_deref())
    }

    /// The cached answer, if any; never starts a container.
    pub fn cached(&self, key: &CacheKey, blob: &str) -> Option<Answer> {
        self.cache.get(key, blob)
    }

    /// Answers for `queries`, in order; cache misses are asked in one container per batch.
    pub async fn query(
        &self,
        target: &Target,
        key: &CacheKey,
        queries: &[SpecQuery],
    ) -> Result<Vec<Answer>, SpecError> {
        let mut answers: Vec<Option<Answer>> = queries
            .iter()
            .map(|q| self.cache.get(key, &q.blob))
            .collect();
        let missing: Vec<usize> = (0..queries.len())
            .filter(|&i| answers[i].is_none())
            .collect();
        if !missing.is_empty() {
            let engine = self.engine().await?;
            if let Ok(Some(id)) = engine.image_id(&target.image).await {
                if let Err(e) = self.cache.remember_image(&target.image, &id) {
                    tracing::warn!("cannot write the spec cache: {e}");
                }
            }
        }
        for chunk in missing.chunks(BATCH) {
            let batch: Vec<&SpecQuery> = chunk.iter().map(|&i| &queries[i]).collect();
            let got = self.run(target, &batch).await?;
            for (&i, r) in chunk.iter().zip(got) {
                if r.cache {
                    if let Err(e) = self.cache.put(key, &queries[i].blob, &r.answer) {
                        tracing::warn!("cannot write the spec cache: {e}");
                    }
                }
                answers[i] = Some(r.answer);
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

    async fn run(&self, target: &Target, batch: &[&SpecQuery]) -> Result<Vec<Reply>, SpecError> {
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
            cmd: Some(vec!["bash".into(), "-c".into(), script(target, batch)]),
            labels: [(LABEL_BUILD.to_string(), format!("spec-{id}"))]
                .into_iter()
                .collect(),
            mounts,
            env: vec![
                "LANG=C.UTF-8".into(),
                "HOME=/tmp".into(),
                "PATH=/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin".into(),
            ],
            memory_bytes: Some(1 << 30),
            nano_cpus: Some(1_000_000_000),
            pids: Some(512),
            network: false,
            cap_add: vec![],
            security_opt: vec!["no-new-privileges".into()],
        };
        let (code, out, cut) = run_bounded(engine, &spec).await?;
        let text = String::from_utf8_lossy(&out);
        if code != 0 && !cut {
            return Err(SpecError::Infra(InfraError(format!(
                "the spec query script exited {code} in {}: {}",
                target.image,
                text.lines().rev().take(5).collect::<Vec<_>>().join(" | ")
            ))));
        }
        Ok(parse_output(&text, batch))
    }
}

/// Runs the query container with its output capped and a deadline; the container is
/// removed on every way out. Returns the exit code, the output, and whether it was cut
/// short (then the answers that did not arrive are not cached).
async fn run_bounded(
    engine: &Engine,
    spec: &ContainerSpec,
) -> Result<(i64, Vec<u8>, bool), InfraError> {
    let id = engine.create(spec).await?;
    let result = async {
        let mut stream = engine.start_attached(&id).await?;
        let mut out = Vec::new();
        let deadline = tokio::time::Instant::now() + BATCH_DEADLINE;
        let mut cut = false;
        loop {
            match tokio::time::timeout_at(deadline, stream.next_chunk()).await {
                Ok(Some(chunk)) => {
                    let chunk = chunk?;
                    if out.len() + chunk.len() > BATCH_OUTPUT_CAP {
                        cut = true;
                        break;
                    }
                    out.extend_from_slice(&chunk);
                }
                Ok(None) => break,
                Err(_) => {
                    cut = true;
                    break;
                }
            }
        }
        if cut {
            return Ok((-1, out, true));
        }
        let code = engine.exit_code(&stream.exit()).await?;
        Ok((code, out, false))
    }
    .await;
    let removed = engine.remove(&id).await;
    let r = result?;
    removed?;
    Ok(r)
}

/// The `uname` specs see: the target's kernel release for `-r`, the real one otherwise.
fn uname_wrapper(release: &str) -> String {
    format!(
        "#!/bin/bash\nif [ \"$*\" = -r ]; then echo {}; else exec /bin/uname \"$@\"; fi\n",
        sh_quote(release)
    )
}

/// Two rpmspec calls per spec: the source package's header (name, version, Source/Patch
/// names and its Requires, which are the BuildRequires), then, only when that parsed, the
/// binary packages' Provides. Each
/// call's status, stdout and stderr come back tagged and truncated. rpmspec runs as
/// `nobody` (so that it cannot write to this script's output), under `timeout` and
/// `ulimit`. `%(...)` runs under `/bin/sh`, which is made bash in this throwaway container,
/// as on the distributions specs are written for.
fn script(target: &Target, batch: &[&SpecQuery]) -> String {
    let mut s = format!(
        "set -u\ncommand -v rpmspec >/dev/null || {{ echo 'rpmspec is not installed in this image'; exit 2; }}\n\
         command -v timeout >/dev/null || {{ echo 'timeout (coreutils) is not installed in this image'; exit 2; }}\n\
         [ -x /bin/bash ] && ln -sf bash /bin/sh 2>/dev/null\n\
         asuser=''\ncommand -v setpriv >/dev/null && asuser='setpriv --reuid=65534 --regid=65534 --clear-groups'\n\
         q() {{ i=$1; sec=$2; shift 2; ( ulimit -t {cpu}; ulimit -f {fsize}; exec timeout -k 2 {t} $asuser rpmspec \"$@\" ) </dev/null >/tmp/o 2>/tmp/e; rc=$?; \
         echo \"@@ $i $sec $rc\"; head -c {out} /tmp/o | sed 's/^/O /'; echo; head -c {err} /tmp/e | sed 's/^/E /'; echo; \
         [ \"$(stat -c %s /tmp/o)\" -gt {out} ] && echo \"@T $i $sec\"; return $rc; }}\n",
        cpu = QUERY_CPU_SECS,
        fsize = QUERY_FILE_KIB,
        t = QUERY_TIMEOUT.as_secs(),
        out = SHOWN_OUT,
        err = SHOWN_ERR,
    );
    if let Some(r) = &target.uname_r {
        s.push_str(&format!(
            "mkdir -p /usr/local/bin && printf '%s' {} > /usr/local/bin/uname && chmod 755 /usr/local/bin/uname\n",
            sh_quote(&uname_wrapper(r))
        ));
    }
    let mut defines = vec![
        format!("_target_cpu {}", target.arch),
        "_buildshell /bin/bash".to_string(),
    ];
    defines.extend(target.rpm_defines());
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
            "q {i} nevr {a} -q --srpm --qf '%{{NAME}}\\t%{{EPOCH}}\\t%{{VERSION}}\\t%{{RELEASE}}\\n[S %{{SOURCE}}\\n][P %{{PATCH}}\\n][R %{{REQUIRENAME}} %{{REQUIREFLAGS:depflags}} %{{REQUIREVERSION}}\\n]' {spec} && \
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
    truncated: bool,
}

fn parse_output(text: &str, batch: &[&SpecQuery]) -> Vec<Reply> {
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
            answer: Err(format!(
                "{}: rpmspec gave no answer (the query container stopped early)",
                q.path
            )),
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
                answer: Err(format!(
                    "{}: rpmspec printed more than {} MiB for one query; Packetary reads no more\n  fix: look for a macro that expands without end",
                    q.path,
                    SHOWN_OUT >> 20
                )),
                cache: true,
            };
        }
    }
    let Some(prov) = prov else {
        return Reply {
            answer: Err(format!(
                "{}: rpmspec gave no answer (the query container stopped early)",
                q.path
            )),
            cache: false,
        };
    };
    let Some(n) = nevr.out.iter().find_map(|l| Nevr::parse_query_line(l)) else {
        return Reply {
            answer: Err(format!(
                "{}: rpmspec printed no usable name/version/release",
                q.path
            )),
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
    let (answer, cache) = match s.rc {
        124 | 137 => (
            format!(
                "{}: rpmspec did not finish within {} s and was stopped (a %(...) macro or Lua that does not end?); the spec is asked again at the next plan",
                q.path,
                QUERY_TIMEOUT.as_secs()
            ),
            false,
        ),
        152 => (
            format!(
                "{}: rpmspec used more than {QUERY_CPU_SECS} s of CPU and was stopped\n  fix: look for a macro or Lua loop that does not end",
                q.path
            ),
            true,
        ),
        153 => (
            format!(
                "{}: rpmspec wrote more than {} MiB and was stopped\n  fix: look for a macro that expands without end",
                q.path,
                QUERY_FILE_KIB >> 10
            ),
            true,
        ),
        126 | 127 => (
            format!(
                "{}: rpmspec could not be run in the target's image (exit {}): {}; this is the image's fault, not the spec's",
                q.path,
                s.rc,
                first_lines(i, q, s).unwrap_or_else(|| "no message".into())
            ),
            false,
        ),
        rc if rc > 128 => (
            format!(
                "{}: rpmspec was killed by signal {} while reading the spec; the spec is asked again at the next plan",
                q.path,
                rc - 128
            ),
            false,
        ),
        rc => (
            format!(
                "rpmspec cannot parse {} (exit {rc}): {}",
                q.path,
                first_lines(i, q, s).unwrap_or_else(|| "no message".into())
            ),
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
            e.contains("pkgs/b.spec") && e.contains("Unknown tag"),
            "{e}"
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
        let e = r[0].0.as_ref().expect_err("fails");
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
        assert!(r[0]
            .0
            .as_ref()
            .is_err_and(|e| e.contains("more than 2 MiB")));
    }

    #[test]
    fn cache_key_follows_image_id_and_macros() {
        let mut t = crate::config::Config::load(None)
            .expect("defaults")
            .targets
            .into_values()
            .next()
            .expect("a target");
        let k = SpecCache::key(&t, Some("sha256:1"));
        assert_ne!(k, SpecCache::key(&t, Some("sha256:2")));
        t.macros.insert("fedora".into(), "40".into());
        let k2 = SpecCache::key(&t, Some("sha256:1"));
        assert_ne!(k, k2);
        t.uname_r = Some("6.8.5".into());
        assert_ne!(k2, SpecCache::key(&t, Some("sha256:1")));
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
        let key = SpecCache::key(&target, None);
        let blob = "0123456789abcdef0123456789abcdef01234567";
        assert!(c.get(&key, blob).is_none());
        let info = SpecInfo {
            nevr: Nevr::parse_query_line("a\t(none)\t1\t1").expect("nevr"),
            build_requires: vec!["x".into()],
            provides: vec!["a = 1-1".into()],
            sources: vec![],
        };
        c.put(&key, blob, &Ok(info.clone())).expect("put");
        assert_eq!(c.get(&key, blob), Some(Ok(info)));
        c.put(&key, blob, &Err("bad".into())).expect("put");
        assert_eq!(c.get(&key, blob), Some(Err("bad".into())));
        assert!(c.get(&key, "../../etc").is_none());
        c.remember_image("img", "sha256:abc").expect("remember");
        assert_eq!(c.remembered_image("img").as_deref(), Some("sha256:abc"));
    }
}
