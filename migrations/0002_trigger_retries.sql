-- Planning can hit infrastructure faults (a git server down): such triggers are retried.
ALTER TABLE triggers ADD COLUMN attempts INTEGER NOT NULL DEFAULT 0;
ALTER TABLE triggers ADD COLUMN next_attempt_at INTEGER NOT NULL DEFAULT 0;
