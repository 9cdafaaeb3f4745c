-- The commit page (`/?commit=<sha>`) selects builds by commit alone, newest first; the
-- index of 0001 leads with the repository and cannot serve it.
CREATE INDEX builds_by_commit_sha ON builds(commit_sha, seq);
