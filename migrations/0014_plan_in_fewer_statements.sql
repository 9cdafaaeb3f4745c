-- Planning in fewer statements (issue 20).
--
-- Whether a trigger has anything to supersede, decided when it is stored: an older trigger
-- of the same change not planned yet, or a queued or running build of the change at
-- another commit. Nothing can add either later (only older triggers of the change plan
-- builds, and they are counted), so a trigger stored with 0 skips the supersede step.
-- Rows stored before this migration say 1: they supersede as before.
ALTER TABLE triggers ADD COLUMN supersedes INTEGER NOT NULL DEFAULT 1;

-- The first build a plan inserts marks its trigger planned, in the same statement (the
-- insert itself checks that the trigger is still to plan; a plan of no builds marks it
-- with an update of its own).
CREATE TRIGGER builds_plan_trigger AFTER INSERT ON builds
BEGIN
    UPDATE triggers SET state = 'planned', message = NULL
    WHERE id = NEW.trigger_id AND state = 'new';
END;
