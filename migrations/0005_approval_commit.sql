-- An approval names the commit it was given for (issue 8): the hex prefix written in the
-- comment, if any. The commit it was bound to when carried out goes in `head_sha`.
ALTER TABLE commands ADD COLUMN commit_prefix TEXT;

-- A command whose permission check hit a forge fault is retried, not dropped (issue 8).
ALTER TABLE commands ADD COLUMN attempts INTEGER NOT NULL DEFAULT 0;
ALTER TABLE commands ADD COLUMN next_attempt_at INTEGER NOT NULL DEFAULT 0;

-- The body's SHA-256: the delivery id is not signed, so a captured body replayed under a new
-- id is recognised by its digest (issue 8).
ALTER TABLE deliveries ADD COLUMN digest TEXT;
CREATE INDEX deliveries_by_digest ON deliveries(digest, received_at);
