//! Images: ids, labels, commits, builds and imports.

use std::collections::HashMap;
use std::path::Path;

use bollard::models::ContainerConfig;
use bollard::query_parameters::{
    BuildImageOptionsBuilder, CommitContainerOptionsBuilder, CreateImageOptionsBuilder,
    ListImagesOptionsBuilder, RemoveImageOptionsBuilder,
};
use futures_util::StreamExt;

use super::{Engine, InfraError};

impl Engine {
    /// The image's id (`sha256:...`), or `None` when the daemon does not have it.
    pub async fn image_id(&self, image: &str) -> Result<Option<String>, InfraError> {
        match self.docker.inspect_image(image).await {
            Ok(i) => Ok(i.id),
            Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 404, ..
            }) => Ok(None),
            Err(e) => Err(InfraError::docker(&format!("inspect image {image}"), e)),
        }
    }

    /// The id of `image` and the value of its label `key`, in one inspection; `None` when
    /// the image is missing.
    pub async fn image_id_and_label(
        &self,
        image: &str,
        key: &str,
    ) -> Result<Option<(String, Option<String>)>, InfraError> {
        match self.docker.inspect_image(image).await {
            Ok(i) => Ok(i.id.map(|id| {
                let label = i
                    .config
                    .and_then(|c| c.labels)
                    .and_then(|l| l.get(key).cloned());
                (id, label)
            })),
            Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 404, ..
            }) => Ok(None),
            Err(e) => Err(InfraError::docker(&format!("inspect image {image}"), e)),
        }
    }

    /// The value of label `key` on `image`; `None` when the image or the label is missing.
    pub async fn image_label(&self, image: &str, key: &str) -> Result<Option<String>, InfraError> {
        match self.docker.inspect_image(image).await {
            Ok(i) => Ok(i
                .config
                .and_then(|c| c.labels)
                .and_then(|l| l.get(key).cloned())),
            Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 404, ..
            }) => Ok(None),
            Err(e) => Err(InfraError::docker(&format!("inspect image {image}"), e)),
        }
    }

    /// `docker commit`: the container's file system as image `repo:tag`, with `labels`.
    pub async fn commit(
        &self,
        id: &str,
        repo: &str,
        tag: &str,
        labels: HashMap<String, String>,
    ) -> Result<(), InfraError> {
        let opts = CommitContainerOptionsBuilder::default()
            .container(id)
            .repo(repo)
            .tag(tag)
            .pause(false)
            .build();
        let config = ContainerConfig {
            labels: Some(labels),
            ..Default::default()
        };
        self.docker
            .commit_container(opts, config)
            .await
            .map(|_| ())
            .map_err(|e| InfraError::docker(&format!("commit {repo}:{tag}"), e))
    }

    /// Tags (`repo:tag`) of the images carrying `label=value`.
    pub async fn images_with_label(&self, label: &str) -> Result<Vec<String>, InfraError> {
        let mut filters = HashMap::new();
        filters.insert("label".to_string(), vec![label.to_string()]);
        let opts = ListImagesOptionsBuilder::default()
            .filters(&filters)
            .build();
        let list = self
            .docker
            .list_images(Some(opts))
            .await
            .map_err(|e| InfraError::docker("list images", e))?;
        Ok(list
            .into_iter()
            .flat_map(|i| i.repo_tags)
            .filter(|t| t != "<none>:<none>")
            .collect())
    }

    /// Removes an image by tag; one in use by a container stays (409), which is no error.
    pub async fn remove_image(&self, tag: &str) -> Result<(), InfraError> {
        let opts = RemoveImageOptionsBuilder::default().build();
        match self.docker.remove_image(tag, Some(opts), None).await {
            Ok(_)
            | Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 404 | 409,
                ..
            }) => Ok(()),
            Err(e) => Err(InfraError::docker(&format!("remove image {tag}"), e)),
        }
    }

    /// Builds `tag` from a tar build context, with `labels` on the image; each output line
    /// goes to `progress`.
    pub async fn build_image(
        &self,
        tag: &str,
        context_tar: Vec<u8>,
        buildargs: &HashMap<String, String>,
        labels: &HashMap<String, String>,
        progress: &mut (dyn FnMut(&str) + Send),
    ) -> Result<(), InfraError> {
        let opts = BuildImageOptionsBuilder::default()
            .t(tag)
            .rm(true)
            .forcerm(true)
            .buildargs(buildargs)
            .labels(labels)
            .build();
        let mut stream = self.docker.build_image(
            opts,
            None,
            Some(bollard::body_full(bytes::Bytes::from(context_tar))),
        );
        while let Some(item) = stream.next().await {
            let info = item.map_err(|e| InfraError(format!("building image {tag}: {e}")))?;
            if let Some(detail) = info.error_detail {
                return Err(InfraError(format!(
                    "building image {tag}: {}",
                    detail.message.unwrap_or_default()
                )));
            }
            if let Some(line) = info.stream {
                for l in line.lines().filter(|l| !l.trim().is_empty()) {
                    progress(l);
                }
            }
        }
        Ok(())
    }

    /// `docker import`: makes an image from a root file system tarball.
    pub async fn import_rootfs(
        &self,
        tarball: &Path,
        repo: &str,
        tag: &str,
    ) -> Result<(), InfraError> {
        let file = tokio::fs::File::open(tarball)
            .await
            .map_err(|e| InfraError(format!("open {}: {e}", tarball.display())))?;
        let body = bollard::body_try_stream(tokio_util::io::ReaderStream::new(file));
        let opts = CreateImageOptionsBuilder::default()
            .from_src("-")
            .repo(repo)
            .tag(tag)
            .build();
        let mut stream = self.docker.create_image(Some(opts), Some(body), None);
        while let Some(item) = stream.next().await {
            let info = item.map_err(|e| InfraError(format!("importing {repo}:{tag}: {e}")))?;
            if let Some(detail) = info.error_detail {
                return Err(InfraError(format!(
                    "importing {repo}:{tag}: {}",
                    detail.message.unwrap_or_default()
                )));
            }
        }
        Ok(())
    }
}
