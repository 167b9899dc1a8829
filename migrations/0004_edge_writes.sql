-- What edge needs beyond 0003: the signed-in person's display name (read from their profile record
-- at sign-in, shown in the header), and a per-account budget of status writes (docs/auth.md).

ALTER TABLE browser_session ADD COLUMN display_name TEXT;

-- Status writes per account in the current fixed one-minute window.
CREATE TABLE write_budget (
    did TEXT PRIMARY KEY NOT NULL,
    window_start INTEGER NOT NULL,     -- unix ms, a multiple of 60,000
    count INTEGER NOT NULL
) WITHOUT ROWID;
