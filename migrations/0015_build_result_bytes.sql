-- What each build's results hold on the service's disk (issue 22: a change's disk quota,
-- `[server] change_disk_quota`); NULL: not measured (a push's build, or one from before).
ALTER TABLE builds ADD COLUMN result_bytes INTEGER;
CREATE INDEX builds_result_bytes_by_change ON builds(repo, pr_number)
    WHERE result_bytes IS NOT NULL;
