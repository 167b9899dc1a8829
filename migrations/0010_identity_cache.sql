-- Identity lookups kept for a few minutes (`oauth::cache`): DNS-over-HTTPS answers,
-- `/.well-known/atproto-did` bodies and DID documents, keyed by what was asked (the Accept header
-- and the URL). A sign-in resolves three or four of them and every token refresh two or three
-- again; a cached one costs a row read instead of a subrequest to someone else's server. Expired
-- rows are ignored when read and purged by the cron (docs/auth.md, "Identity").
CREATE TABLE identity_cache (
    key TEXT PRIMARY KEY NOT NULL,
    value TEXT NOT NULL,               -- content type, a newline, the body (oauth::cache::Entry)
    expires_ms INTEGER NOT NULL        -- unix ms
) WITHOUT ROWID;

-- The cron's purge.
CREATE INDEX identity_cache_expires ON identity_cache (expires_ms);
