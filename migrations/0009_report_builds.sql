-- The builds an aggregate report sums up (JSON), for forges that report once per change
-- (a Gerrit vote message lists each package x target).
ALTER TABLE reports ADD COLUMN builds TEXT;
