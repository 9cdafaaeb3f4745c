-- Packetary's store. Times are Unix milliseconds (UTC).

-- Webhook deliveries already seen, so that a redelivery does not build twice.
CREATE TABLE deliveries (
    id          TEXT PRIMARY KEY,
    event       TEXT NOT NULL,
    received_at INTEGER NOT NULL
);

-- What a forge asked for: a push, a pull request update, a command from a comment.
-- `state`: new (to plan) | awaiting_approval (fork PR) | planned | failed | superseded | closed.
CREATE TABLE triggers (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    repo         TEXT NOT NULL,
    clone_url    TEXT NOT NULL,
    kind         TEXT NOT NULL,
    ref_name     TEXT NOT NULL,
    base_sha     TEXT,
    head_sha     TEXT NOT NULL,
    pr_number    INTEGER,
    base_ref     TEXT,
    from_fork    INTEGER NOT NULL DEFAULT 0,
    sender       TEXT NOT NULL DEFAULT '',
    only_package TEXT,
    only_target  TEXT,
    delivery     TEXT,
    state        TEXT NOT NULL DEFAULT 'new',
    message      TEXT,
    created_at   INTEGER NOT NULL
);
CREATE INDEX triggers_by_state ON triggers(state, id);
CREATE INDEX triggers_by_change ON triggers(repo, ref_name, pr_number);

-- Commands from comments (`/packetary rebuild`, `/packetary approve`), checked against
-- the forge's permissions before they act.
CREATE TABLE commands (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    repo       TEXT NOT NULL,
    pr_number  INTEGER,
    head_sha   TEXT,
    user       TEXT NOT NULL,
    command    TEXT NOT NULL,
    package    TEXT,
    target     TEXT,
    state      TEXT NOT NULL DEFAULT 'new',
    message    TEXT,
    created_at INTEGER NOT NULL
);

-- One package for one target at one commit. `seq` orders the queue.
-- `state`: queued | running | succeeded | failed | error | cancelled | superseded.
CREATE TABLE builds (
    seq             INTEGER PRIMARY KEY AUTOINCREMENT,
    id              TEXT NOT NULL UNIQUE,
    trigger_id      INTEGER NOT NULL REFERENCES triggers(id),
    repo            TEXT NOT NULL,
    clone_url       TEXT NOT NULL,
    commit_sha      TEXT NOT NULL,
    ref_name        TEXT NOT NULL,
    pr_number       INTEGER,
    package         TEXT NOT NULL,
    spec_path       TEXT NOT NULL,
    target          TEXT NOT NULL,
    state           TEXT NOT NULL,
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_at INTEGER NOT NULL,
    container_id    TEXT,
    created_at      INTEGER NOT NULL,
    started_at      INTEGER,
    finished_at     INTEGER,
    result_dir      TEXT,
    phase           TEXT,
    message         TEXT
);
CREATE INDEX builds_by_state ON builds(state, next_attempt_at, seq);
CREATE INDEX builds_by_commit ON builds(repo, commit_sha);

CREATE TABLE build_phases (
    build_id TEXT NOT NULL REFERENCES builds(id) ON DELETE CASCADE,
    phase    TEXT NOT NULL,
    started  TEXT NOT NULL,
    seconds  REAL NOT NULL,
    ok       INTEGER NOT NULL,
    PRIMARY KEY (build_id, phase)
);

-- The outbox: the desired state of each status context. A newer desire replaces an older
-- one (`version` grows); a row is delivered when `delivered_version` catches up.
CREATE TABLE reports (
    id                INTEGER PRIMARY KEY AUTOINCREMENT,
    repo              TEXT NOT NULL,
    sha               TEXT NOT NULL,
    context           TEXT NOT NULL,
    state             TEXT NOT NULL,
    description       TEXT NOT NULL,
    target_url        TEXT,
    version           INTEGER NOT NULL DEFAULT 1,
    delivered_version INTEGER NOT NULL DEFAULT 0,
    attempts          INTEGER NOT NULL DEFAULT 0,
    next_attempt_at   INTEGER NOT NULL,
    last_error        TEXT,
    abandoned         INTEGER NOT NULL DEFAULT 0,
    updated_at        INTEGER NOT NULL,
    UNIQUE (repo, sha, context)
);
CREATE INDEX reports_pending ON reports(next_attempt_at) WHERE delivered_version < version AND abandoned = 0;
