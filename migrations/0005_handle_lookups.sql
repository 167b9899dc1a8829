-- Handles of accounts the firehose never named: the network sends an identity event only when a
-- handle changes, so most authors arrive without one. Edge looks them up in the background (its
-- cron, and after a page that showed a DID) and records when it last tried, so that a DID whose
-- handle does not resolve is retried hourly, not on every page view (docs/data-model.md).

ALTER TABLE account ADD COLUMN handle_checked_at INTEGER NOT NULL DEFAULT 0;  -- unix ms, 0 = never
