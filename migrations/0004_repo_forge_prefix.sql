-- Repositories are named `<forge>:<path>` (`github:owner/name`, `gerrit:a/b/c`), so that
-- several forges share one store. Rows written before carried GitHub's `owner/name`.
UPDATE triggers SET repo = 'github:' || repo WHERE instr(repo, ':') = 0;
UPDATE commands SET repo = 'github:' || repo WHERE instr(repo, ':') = 0;
UPDATE builds SET repo = 'github:' || repo WHERE instr(repo, ':') = 0;
UPDATE reports SET repo = 'github:' || repo WHERE instr(repo, ':') = 0;
