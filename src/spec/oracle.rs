//! The oracle: the cache first, then one container per batch of cache misses.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::answer::{parse_output, Reply};
use super::container::{run_bounded, script};
use super::{Answer, AnswerError, CacheKey, SpecCache, SpecError, SpecQuery, BATCH};
use crate::config::Target;
use crate::docker::ContainerSpec;
use crate::docker::{Engine, InfraError, LABEL_BUILD};
use crate::model::BuildId;

/// Answers spec questions from the cache, asking rpm in a container for the rest.
pub struct SpecOracle {
    cache: SpecCache,
    docker_host: Option<String>,
    engine: tokio::sync::OnceCell<Engine>,
    /// Image ids looked up lately: a plan asks once, not once per spec.
    image_ids: Mutex<HashMap<String, (Instant, Option<String>)>>,
}
/// How long an image id looked up is trusted (an `images build` changes it).
const IMAGE_ID_TTL: Duration = Duration::from_secs(10);
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
            .map(|a| a.unwrap_or(Err(AnswerError::Unanswered)))
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
            user: None,
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
