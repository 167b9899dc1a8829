-- Handles of accounts the firehose never named: the network sends an identity event only when a
-- handle changes, so most authors arrive without one. Edge looks them up in the background (its
-- cron, for the newest statuses; after a home page, for the authors it showed by DID) and records
-- here when it last tried, so that a DID whose handle does not resolve is retried hourly, not on
-- every page view. Kept apart from `account`, which holds only what the network said
-- (docs/data-model.md, rule 8).
CREATE TABLE handle_lookup (
    did TEXT PRIMARY KEY NOT NULL,
    checked_at INTEGER NOT NULL        -- unix ms of the last claim
) WITHOUT ROWID;
