-- Display names beside handles on every line (docs/data-model.md "Display names"): the
-- `displayName` of an author's `app.bsky.actor.profile/self` record, learned when they sign in
-- and re-read in the background at most once a day per author shown (edge's cron), so a changed
-- name shows within a day. A row is also the claim: `checked_at` says when it was last read.
CREATE TABLE profile (
    did TEXT PRIMARY KEY NOT NULL,
    display_name TEXT,                  -- NULL: no profile record, or no name in it
    checked_at INTEGER NOT NULL         -- unix ms of the last read (or claim)
) WITHOUT ROWID;
