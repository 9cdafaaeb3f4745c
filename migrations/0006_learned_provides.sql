-- Provides of the binary packages of a package's last successful build, per repository,
-- package and target: what rpm's generators add at build time (pkgconfig(), perl(),
-- cmake()...) and rpmspec cannot see when planning. One line per capability.
CREATE TABLE learned_provides (
    repo TEXT NOT NULL,
    package TEXT NOT NULL,
    target TEXT NOT NULL,
    build_id TEXT NOT NULL,
    provides TEXT NOT NULL,
    learned_at INTEGER NOT NULL,
    PRIMARY KEY (repo, package, target)
);
