-- The write budget becomes a sliding window: with only the current fixed minute's count, a loop
-- could write a full budget just before a minute boundary and another just after. Keeping the
-- previous minute's count lets edge estimate the writes of the last 60 s (the previous count
-- weighted by how much of it still overlaps, plus the current one). docs/auth.md.
ALTER TABLE write_budget ADD COLUMN prev_count INTEGER NOT NULL DEFAULT 0;
