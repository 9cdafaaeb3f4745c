//! Registries: a local image's name in a registry, pushing it there, and asking the
//! registry (through the daemon, which knows how to reach it) for a manifest's digest.
//! Builds on a Swarm name their image by that digest, so every node runs the same bytes.

use bollard::query_parameters::{
    CreateImageOptionsBuilder, PushImageOptionsBuilder, TagImageOptionsBuilder,
};
use futures_util::StreamExt;

use super::{Engine, InfraError};

/// `image` as named in `registry`: `registry_reference("127.0.0.1:5000",
/// "packetary/rpmbuild:bookworm")` is `127.0.0.1:5000/packetary/rpmbuild:bookworm`.
///
/// The image's own registry host, if it has one (a first path part holding `.` or `:`, or
/// `localhost`, followed by more), is replaced, not kept as a path part:
/// `quay.io/team/mock:el9` becomes `<registry>/team/mock:el9`. An image without a tag gets
/// `:latest` (what Docker means by it), and a `@sha256:…` pin is dropped: the registry
/// copy is named by tag, and the push answers its digest.
pub fn registry_reference(registry: &str, image: &str) -> String {
    let (path, tag) = split_image(image);
    format!("{}/{path}:{tag}", registry.trim_end_matches('/'))
}

/// The registry copy of `image` named by `digest` (`sha256:…`), as a build names its image:
/// `127.0.0.1:5000/packetary/rpmbuild@sha256:…`.
pub fn pinned_reference(registry: &str, image: &str, digest: &str) -> String {
    let (path, _) = split_image(image);
    format!("{}/{path}@{digest}", registry.trim_end_matches('/'))
}

/// An image reference's path without any registry host, and its tag (`latest` if none).
fn split_image(image: &str) -> (&str, &str) {
    let name = image.split_once('@').map_or(image, |(n, _)| n);
    let (path, tag) = match name.rfind(':') {
        // A `:` after the last `/` starts the tag; one before it is a host's port.
        Some(i) if !name[i..].contains('/') && i + 1 < name.len() => (&name[..i], &name[i + 1..]),
        Some(i) if !name[i..].contains('/') => (&name[..i], "latest"),
        _ => (name, "latest"),
    };
    let path = match path.split_once('/') {
        Some((first, rest))
            if !rest.is_empty()
                && (first.contains('.') || first.contains(':') || first == "localhost") =>
        {
            rest
        }
        _ => path,
    };
    (path, tag)
}

/// Whether `s` is a manifest digest as registries write it.
fn is_digest(s: &str) -> bool {
    s.strip_prefix("sha256:")
        .is_some_and(|h| h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// The digest in the push's last status line (`bookworm: digest: sha256:… size: 529`), the
/// text form of the daemon's `aux` record, which bollard's `PushImageInfo` does not keep.
fn digest_in_status(status: &str) -> Option<&str> {
    let rest = status.split_once("digest: ")?.1;
    let d = rest.split_whitespace().next()?;
    is_digest(d).then_some(d)
}

impl Engine {
    /// Tags the local `image` as [`registry_reference`] and pushes it to `registry` on the
    /// daemon's behalf; returns the pushed manifest's digest (`sha256:…`). The push's
    /// milestones go to `progress`; an error in its stream is an error. The registry tag
    /// stays on the Docker host, as after `docker push`.
    pub async fn push_to(
        &self,
        image: &str,
        registry: &str,
        progress: &mut (dyn FnMut(&str) + Send),
    ) -> Result<String, InfraError> {
        let reference = registry_reference(registry, image);
        let (repo, tag) = reference
            .rsplit_once(':')
            .ok_or_else(|| InfraError(format!("`{reference}` has no tag")))?;
        let opts = TagImageOptionsBuilder::default()
            .repo(repo)
            .tag(tag)
            .build();
        match self.docker.tag_image(image, Some(opts)).await {
            Ok(()) => {}
            Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 404, ..
            }) => {
                return Err(InfraError(format!(
                    "cannot push {image}: the Docker host does not have it\n  fix: run `packetary images ensure` (or build or load {image} on the Docker host)"
                )))
            }
            Err(e) => return Err(InfraError::docker(&format!("tag {image} as {reference}"), e)),
        }
        let opts = PushImageOptionsBuilder::default().tag(tag).build();
        let mut stream = self.docker.push_image(repo, Some(opts), None);
        let (mut pushed, mut present) = (0usize, 0usize);
        let mut digest = None;
        while let Some(item) = stream.next().await {
            let info = item.map_err(|e| {
                InfraError(format!(
                    "pushing {reference}: {e}\n  fix: check that the registry at {registry} runs and that the Docker daemon reaches it (a registry outside 127.0.0.0/8 without TLS must be in the daemon's insecure-registries; one that needs a login is not supported)"
                ))
            })?;
            let Some(status) = info.status else { continue };
            match status.as_str() {
                "Preparing" | "Waiting" | "Pushing" => {}
                "Pushed" => pushed += 1,
                "Layer already exists" => present += 1,
                s if s.starts_with("Mounted from") => present += 1,
                s => {
                    if let Some(d) = digest_in_status(s) {
                        digest = Some(d.to_string());
                    }
                    progress(s);
                }
            }
        }
        progress(&format!(
            "{pushed} layer(s) pushed, {present} already in the registry"
        ));
        match digest {
            Some(d) => Ok(d),
            None => self.distribution_digest(&reference).await,
        }
    }

    /// Pulls `reference` (`host:port/path@sha256:…`) onto this daemon unless it has it.
    pub async fn pull_pinned(&self, reference: &str) -> Result<(), InfraError> {
        if self.image_id(reference).await?.is_some() {
            return Ok(());
        }
        let opts = CreateImageOptionsBuilder::default()
            .from_image(reference)
            .build();
        let mut stream = self.docker.create_image(Some(opts), None, None);
        while let Some(item) = stream.next().await {
            let info = item.map_err(|e| {
                InfraError(format!(
                    "pulling {reference}: {e}\n  fix: check that the registry runs and that this Docker daemon reaches it, then run `packetary images push`"
                ))
            })?;
            if let Some(detail) = info.error_detail {
                return Err(InfraError(format!(
                    "pulling {reference}: {}",
                    detail.message.unwrap_or_default()
                )));
            }
        }
        Ok(())
    }

    /// The digest (`sha256:…`) of the manifest `reference` (`host:port/path:tag`) names in
    /// its registry, as the daemon sees it (`GET /distribution/{name}/json`): what a node
    /// pulling `reference` would get.
    pub async fn distribution_digest(&self, reference: &str) -> Result<String, InfraError> {
        match self.docker.inspect_registry_image(reference, None).await {
            Ok(d) => match d.descriptor.digest {
                Some(digest) if is_digest(&digest) => Ok(digest),
                other => Err(InfraError(format!(
                    "the registry answered no sha256 digest for {reference} (got {other:?})"
                ))),
            },
            Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 404,
                message,
            }) => Err(InfraError(format!(
                "the registry has no image {reference} ({message})\n  fix: run `packetary images push`"
            ))),
            Err(e) => Err(InfraError(format!(
                "cannot ask the registry for {reference}: {e}\n  fix: check that the registry runs and that the Docker daemon of [docker] host reaches it, then run `packetary images push`"
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_in_a_registry() {
        let r = "127.0.0.1:5000";
        for (image, want) in [
            (
                "packetary/rpmbuild:bookworm",
                "127.0.0.1:5000/packetary/rpmbuild:bookworm",
            ),
            ("fedora", "127.0.0.1:5000/fedora:latest"),
            ("fedora:", "127.0.0.1:5000/fedora:latest"),
            ("quay.io/team/mock:el9", "127.0.0.1:5000/team/mock:el9"),
            ("localhost/mock:el9", "127.0.0.1:5000/mock:el9"),
            ("localhost:5000/a/b", "127.0.0.1:5000/a/b:latest"),
            ("10.0.0.1:5000/a/b:7", "127.0.0.1:5000/a/b:7"),
            ("team/mock:el9@sha256:0123", "127.0.0.1:5000/team/mock:el9"),
            ("team/mock@sha256:0123", "127.0.0.1:5000/team/mock:latest"),
            // A first part without `.`/`:` is a Docker Hub namespace, kept.
            ("library/fedora:40", "127.0.0.1:5000/library/fedora:40"),
        ] {
            assert_eq!(registry_reference(r, image), want, "{image}");
        }
        assert_eq!(
            registry_reference("registry.example.com/ci/", "packetary/rpmbuild:bookworm"),
            "registry.example.com/ci/packetary/rpmbuild:bookworm"
        );
        let d = format!("sha256:{}", "a".repeat(64));
        assert_eq!(
            pinned_reference(r, "quay.io/packetary/rpmbuild:bookworm", &d),
            format!("127.0.0.1:5000/packetary/rpmbuild@{d}")
        );
    }

    #[test]
    fn the_digest_in_a_push_status() {
        let d = format!("sha256:{}", "0f".repeat(32));
        assert_eq!(
            digest_in_status(&format!("bookworm: digest: {d} size: 529")),
            Some(d.as_str())
        );
        assert_eq!(
            digest_in_status("bookworm: digest: sha256:abc size: 1"),
            None
        );
        assert_eq!(digest_in_status("Pushed"), None);
    }
}
