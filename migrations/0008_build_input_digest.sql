-- Build avoidance (issue 11): the digest of everything a build's result depends on (the
-- package's files, the target and its image id, the repositories' snapshots,
-- SOURCE_DATE_EPOCH; see build/provenance.rs). A queued build whose digest matches a
-- succeeded build's reuses its results instead of running.
ALTER TABLE builds ADD COLUMN input_digest TEXT;
CREATE INDEX builds_by_input_digest ON builds(input_digest, target) WHERE input_digest IS NOT NULL;
