-- The ledger (src/store/ledger.rs): each build transition is one transaction that also
-- appends a build event and keeps its commit's counts, so that the aggregate status is
-- read from one row instead of re-reading every build of the commit.

-- Whether the build is the latest of its package and target at its commit (a rebuild
-- replaces the earlier one in the aggregate).
ALTER TABLE builds ADD COLUMN latest INTEGER NOT NULL DEFAULT 1;
UPDATE builds SET latest = (seq = (SELECT MAX(x.seq) FROM builds x
    WHERE x.repo = builds.repo AND x.commit_sha = builds.commit_sha
      AND x.package = builds.package AND x.target = builds.target));
CREATE INDEX builds_latest_by_commit ON builds(repo, commit_sha, latest, state, package, target);

-- A running build's outcome, recorded (JSON, `queue::finish::Recorded`) before its packages
-- are published: a restart finishes it from here instead of building it again.
ALTER TABLE builds ADD COLUMN outcome TEXT;

-- Per commit, how many of its latest builds are in each state.
CREATE TABLE commit_counts (
    repo       TEXT NOT NULL,
    commit_sha TEXT NOT NULL,
    queued     INTEGER NOT NULL DEFAULT 0,
    running    INTEGER NOT NULL DEFAULT 0,
    succeeded  INTEGER NOT NULL DEFAULT 0,
    failed     INTEGER NOT NULL DEFAULT 0,
    error      INTEGER NOT NULL DEFAULT 0,
    cancelled  INTEGER NOT NULL DEFAULT 0,
    superseded INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (repo, commit_sha)
);
INSERT INTO commit_counts (repo, commit_sha, queued, running, succeeded, failed, error, cancelled, superseded)
SELECT repo, commit_sha,
       SUM(state = 'queued'), SUM(state = 'running'), SUM(state = 'succeeded'),
       SUM(state = 'failed'), SUM(state = 'error'), SUM(state = 'cancelled'),
       SUM(state = 'superseded')
FROM builds WHERE latest = 1 GROUP BY repo, commit_sha;

-- The build's history: one row per transition, appended in the transition's transaction.
-- `kind`: planned | started | recorded | ended | requeued | superseded | cancelled.
CREATE TABLE build_events (
    seq      INTEGER PRIMARY KEY AUTOINCREMENT,
    build_id TEXT NOT NULL,
    kind     TEXT NOT NULL,
    state    TEXT NOT NULL,
    message  TEXT,
    at       INTEGER NOT NULL
);
CREATE INDEX build_events_by_build ON build_events(build_id, seq);
