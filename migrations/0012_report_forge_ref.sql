-- The forge's id of what a report's last delivery created (a GitHub status's id; a check
-- run's, which a later delivery updates instead of creating another).
ALTER TABLE reports ADD COLUMN forge_ref TEXT;
