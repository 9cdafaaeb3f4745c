-- Package repositories (src/repos/): the release snapshots a build used, so that pruning
-- keeps them while the build is kept, and what each build published where.
CREATE TABLE build_repo_snapshots (
    build_id TEXT NOT NULL,
    -- The snapshot's directory, <data_dir>/repos/<release>/<target>/<snapshot>.
    location TEXT NOT NULL,
    PRIMARY KEY (build_id, location)
);

CREATE TABLE publications (
    build_id TEXT NOT NULL,
    -- `<release>/<target>` or `changes/<owner>/<repo>/<number>/<target>`.
    repository TEXT NOT NULL,
    -- The snapshot made; NULL when every package was already there with the same bytes.
    snapshot TEXT,
    published_at INTEGER NOT NULL,
    PRIMARY KEY (build_id, repository)
);
