-- OAuth sessions and sign-ins in progress are sealed at rest (AES-256-GCM under the SESSION_KEYS
-- secret, oauth::sealed), so their `data` is no longer JSON that SQL can edit: the PDS's DPoP
-- nonce, which changes on many requests and is not a secret, moves to a column of its own.
-- Rows written before this migration are plaintext and no longer open: those people sign in
-- again. docs/auth.md.
ALTER TABLE oauth_session ADD COLUMN pds_nonce TEXT;
DELETE FROM oauth_session;
DELETE FROM oauth_state;
DELETE FROM browser_session;
