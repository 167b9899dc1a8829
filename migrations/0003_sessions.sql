-- Sign-in state: OAuth flows in progress, OAuth sessions (tokens stay server side), and the
-- browser sessions that point at them. docs/data-model.md explains the rules.

-- An OAuth authorization in progress, keyed by its random `state`; taken (deleted) exactly once.
CREATE TABLE oauth_state (
    state TEXT PRIMARY KEY NOT NULL,
    data TEXT NOT NULL,                -- JSON: PKCE verifier, DPoP key, issuer, expected DID, ...
    expires_at INTEGER NOT NULL        -- unix ms
);
CREATE INDEX oauth_state_expires ON oauth_state (expires_at);

-- One OAuth session per account: tokens, DPoP key and nonces. Refreshes take a lease first,
-- because refresh tokens are single-use.
CREATE TABLE oauth_session (
    did TEXT PRIMARY KEY NOT NULL,
    data TEXT NOT NULL,                -- JSON
    updated_at INTEGER NOT NULL,       -- unix ms
    lock_owner TEXT,                   -- who holds the refresh lease
    lock_until INTEGER                 -- unix ms the lease ends
);

-- A browser's session: the cookie holds a random id; the table holds only its SHA-256.
CREATE TABLE browser_session (
    id_hash TEXT PRIMARY KEY NOT NULL,
    did TEXT NOT NULL,
    created_at INTEGER NOT NULL,       -- unix ms
    expires_at INTEGER NOT NULL        -- unix ms
);
CREATE INDEX browser_session_did ON browser_session (did);
CREATE INDEX browser_session_expires ON browser_session (expires_at);
