# A registry for the swarm's builder images, without any registry to pull one from:
# Debian's docker-registry on the mmdebstrap base (`packetary images build debian-base`).
#   docker build -f deploy/registry.Dockerfile -t packetary/registry:latest deploy
ARG BASE=packetary/debian-base:bookworm
FROM ${BASE}
RUN apt-get update \
 && apt-get install -y --no-install-recommends docker-registry \
 && apt-get clean && rm -rf /var/lib/apt/lists/* \
 && printf 'version: 0.1\nstorage:\n  filesystem:\n    rootdirectory: /var/lib/registry\n  delete:\n    enabled: true\nhttp:\n  addr: 0.0.0.0:5000\n' > /etc/docker-registry.yml
VOLUME /var/lib/registry
EXPOSE 5000
ENTRYPOINT ["/usr/bin/docker-registry", "serve", "/etc/docker-registry.yml"]
