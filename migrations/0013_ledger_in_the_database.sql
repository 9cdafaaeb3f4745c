-- The ledger's bookkeeping, kept by the database in the statement that moves a build
-- (issue 20): a transition is then one statement on `builds` (plus its reports), and no
-- writer can move a build without its commit's counts and its history following.
--
-- * `latest`: a new build of a package and target at a commit replaces the earlier one.
-- * `commit_counts`: BEFORE triggers, so that a transition's `RETURNING` clause reads the
--   counts as they are after it (SQLite evaluates RETURNING after BEFORE triggers ran).
-- * `build_events`: AFTER triggers append one event per transition, the kind derived
--   from the states: planned (a new row), started (-> running), requeued (running ->
--   queued), superseded, cancelled, ended (-> succeeded | failed | error); recorded (a
--   running build's outcome written). Times are milliseconds since the epoch, as
--   `Millis::now()` writes them.

CREATE TRIGGER builds_replace_latest BEFORE INSERT ON builds
BEGIN
    UPDATE builds SET latest = 0
    WHERE repo = NEW.repo AND commit_sha = NEW.commit_sha AND package = NEW.package
      AND target = NEW.target AND latest = 1;
END;

CREATE TRIGGER builds_count_insert BEFORE INSERT ON builds
BEGIN
    INSERT INTO commit_counts (repo, commit_sha, queued, running, succeeded, failed, error, cancelled, superseded)
    VALUES (NEW.repo, NEW.commit_sha, NEW.state = 'queued', NEW.state = 'running',
            NEW.state = 'succeeded', NEW.state = 'failed', NEW.state = 'error',
            NEW.state = 'cancelled', NEW.state = 'superseded')
    ON CONFLICT (repo, commit_sha) DO UPDATE SET
        queued = queued + (NEW.state = 'queued'),
        running = running + (NEW.state = 'running'),
        succeeded = succeeded + (NEW.state = 'succeeded'),
        failed = failed + (NEW.state = 'failed'),
        error = error + (NEW.state = 'error'),
        cancelled = cancelled + (NEW.state = 'cancelled'),
        superseded = superseded + (NEW.state = 'superseded');
END;

CREATE TRIGGER builds_count_replaced BEFORE UPDATE OF latest ON builds
WHEN OLD.latest = 1 AND NEW.latest = 0
BEGIN
    UPDATE commit_counts SET
        queued = queued - (OLD.state = 'queued'),
        running = running - (OLD.state = 'running'),
        succeeded = succeeded - (OLD.state = 'succeeded'),
        failed = failed - (OLD.state = 'failed'),
        error = error - (OLD.state = 'error'),
        cancelled = cancelled - (OLD.state = 'cancelled'),
        superseded = superseded - (OLD.state = 'superseded')
    WHERE repo = OLD.repo AND commit_sha = OLD.commit_sha;
END;

CREATE TRIGGER builds_count_state BEFORE UPDATE OF state ON builds
WHEN OLD.latest = 1 AND OLD.state IS NOT NEW.state
BEGIN
    UPDATE commit_counts SET
        queued = queued + (NEW.state = 'queued') - (OLD.state = 'queued'),
        running = running + (NEW.state = 'running') - (OLD.state = 'running'),
        succeeded = succeeded + (NEW.state = 'succeeded') - (OLD.state = 'succeeded'),
        failed = failed + (NEW.state = 'failed') - (OLD.state = 'failed'),
        error = error + (NEW.state = 'error') - (OLD.state = 'error'),
        cancelled = cancelled + (NEW.state = 'cancelled') - (OLD.state = 'cancelled'),
        superseded = superseded + (NEW.state = 'superseded') - (OLD.state = 'superseded')
    WHERE repo = OLD.repo AND commit_sha = OLD.commit_sha;
END;

CREATE TRIGGER builds_event_planned AFTER INSERT ON builds
BEGIN
    INSERT INTO build_events (build_id, kind, state, message, at)
    VALUES (NEW.id, 'planned', NEW.state, NEW.message, NEW.created_at);
END;

CREATE TRIGGER builds_event_state AFTER UPDATE OF state ON builds
WHEN OLD.state IS NOT NEW.state
BEGIN
    INSERT INTO build_events (build_id, kind, state, message, at)
    VALUES (NEW.id,
            CASE NEW.state
                WHEN 'running' THEN 'started'
                WHEN 'queued' THEN 'requeued'
                WHEN 'superseded' THEN 'superseded'
                WHEN 'cancelled' THEN 'cancelled'
                ELSE 'ended'
            END,
            NEW.state, NEW.message,
            CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER));
END;

CREATE TRIGGER builds_event_recorded AFTER UPDATE OF outcome ON builds
WHEN NEW.outcome IS NOT NULL AND OLD.outcome IS NULL AND NEW.state = 'running'
BEGIN
    INSERT INTO build_events (build_id, kind, state, message, at)
    VALUES (NEW.id, 'recorded', NEW.state, NULL,
            CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER));
END;
