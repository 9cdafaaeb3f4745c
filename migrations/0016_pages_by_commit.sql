-- The commit page (issue 23) shows how a commit's statuses came about: its triggers and the
-- commands bound to it, found by their head commit in any repository.
CREATE INDEX triggers_by_head ON triggers(head_sha, id);
CREATE INDEX commands_by_head ON commands(head_sha) WHERE head_sha IS NOT NULL;
