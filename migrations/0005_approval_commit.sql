-- An approval names the commit it was given for (issue 8): the hex prefix written in the
-- comment, if any. The commit it was bound to when carried out goes in `head_sha`.
ALTER TABLE commands ADD COLUMN commit_prefix TEXT;
