-- The backfill (docs/backfill.md): every account the relay lists as having statuses, read once
-- from its own repository. One row per account is its progress: `pending` until read (`next_try`
-- says when; a failure pushes it back, doubling), then `done`, or `failed` once it has failed
-- too often (reported in /health, never blocking the rest). The listener's Backfill object is the
-- only writer; an operator's restart (a new BACKFILL_RUN) empties the table.
CREATE TABLE backfill_repo (
    did TEXT PRIMARY KEY NOT NULL,
    state TEXT NOT NULL DEFAULT 'pending' CHECK (state IN ('pending', 'done', 'failed')),
    attempts INTEGER NOT NULL DEFAULT 0,   -- failed reads so far
    next_try INTEGER NOT NULL DEFAULT 0,   -- unix ms: not read again before
    rev TEXT,                              -- the repository's revision the read was taken at
    records INTEGER NOT NULL DEFAULT 0,    -- statuses recorded from it
    dropped INTEGER NOT NULL DEFAULT 0,    -- records refused (invalid), with the last reason in error
    error TEXT,                            -- why the last read failed, or what was refused
    updated_at INTEGER NOT NULL DEFAULT 0  -- unix ms
) WITHOUT ROWID;
-- The next accounts due: pending ones by when they are due.
CREATE INDEX backfill_due ON backfill_repo (next_try) WHERE state = 'pending';
