-- Build order within a change: a build starts after the builds of earlier stages of the
-- same trigger and target have ended, and sees their RPMs.
ALTER TABLE builds ADD COLUMN stage INTEGER NOT NULL DEFAULT 0;
