-- Statuses, accounts, and the derived tables that keep the home page's reads small.
-- docs/data-model.md explains every rule here.

-- Every status record the app knows of, one row per AT URI. Deleted records stay as tombstones
-- (deleted = 1, content cleared) so that a replayed, older create cannot bring them back.
CREATE TABLE status (
    uri TEXT PRIMARY KEY NOT NULL,
    author_did TEXT NOT NULL,
    rkey TEXT NOT NULL,
    status TEXT NOT NULL,
    created_at TEXT NOT NULL,
    indexed_at INTEGER NOT NULL,          -- unix ms the app first saw this content
    rev TEXT NOT NULL DEFAULT '',         -- repository revision (TID) that wrote it; '' = unknown
    cid TEXT,
    origin TEXT NOT NULL CHECK (origin IN ('edge', 'network')),
    confirmed INTEGER NOT NULL DEFAULT 0 CHECK (confirmed IN (0, 1)),
    deleted INTEGER NOT NULL DEFAULT 0 CHECK (deleted IN (0, 1))
);

-- The recent list: newest first, tombstones left out of the index.
CREATE INDEX status_recent ON status (indexed_at DESC, uri DESC) WHERE deleted = 0;
-- One author's statuses, newest first: their current status, and purges.
CREATE INDEX status_author ON status (author_did, indexed_at DESC, uri DESC) WHERE deleted = 0;

-- What the app knows of an account: its handle (from identity events and sign-in) and whether it
-- is active (from account events). No row = active, handle unknown.
CREATE TABLE account (
    did TEXT PRIMARY KEY NOT NULL,
    handle TEXT,
    handle_time_us INTEGER NOT NULL DEFAULT 0,   -- time of the identity event that set handle
    active INTEGER NOT NULL DEFAULT 1 CHECK (active IN (0, 1)),
    status TEXT,                                 -- why inactive: takendown, deactivated, ...
    state_time_us INTEGER NOT NULL DEFAULT 0     -- time of the account event that set active
);

-- Derived, kept by the triggers below: each author's current status (newest, not deleted).
CREATE TABLE current_status (
    author_did TEXT PRIMARY KEY NOT NULL,
    uri TEXT NOT NULL,
    status TEXT NOT NULL,
    indexed_at INTEGER NOT NULL
) WITHOUT ROWID;

-- Derived, kept by the triggers below: how many active accounts currently show each status.
-- (The triggers avoid INSERT OR IGNORE: an outer UPSERT's conflict handling overrides a trigger's.)
CREATE TABLE status_count (
    status TEXT PRIMARY KEY NOT NULL,
    count INTEGER NOT NULL
) WITHOUT ROWID;

CREATE TRIGGER status_after_insert AFTER INSERT ON status BEGIN
    DELETE FROM current_status WHERE author_did = NEW.author_did;
    INSERT INTO current_status (author_did, uri, status, indexed_at)
        SELECT author_did, uri, status, indexed_at FROM status
        WHERE author_did = NEW.author_did AND deleted = 0
        ORDER BY indexed_at DESC, uri DESC LIMIT 1;
END;

CREATE TRIGGER status_after_update AFTER UPDATE ON status BEGIN
    DELETE FROM current_status WHERE author_did = NEW.author_did;
    INSERT INTO current_status (author_did, uri, status, indexed_at)
        SELECT author_did, uri, status, indexed_at FROM status
        WHERE author_did = NEW.author_did AND deleted = 0
        ORDER BY indexed_at DESC, uri DESC LIMIT 1;
END;

CREATE TRIGGER status_after_delete AFTER DELETE ON status BEGIN
    DELETE FROM current_status WHERE author_did = OLD.author_did;
    INSERT INTO current_status (author_did, uri, status, indexed_at)
        SELECT author_did, uri, status, indexed_at FROM status
        WHERE author_did = OLD.author_did AND deleted = 0
        ORDER BY indexed_at DESC, uri DESC LIMIT 1;
END;

CREATE TRIGGER current_after_insert AFTER INSERT ON current_status
WHEN NOT EXISTS (SELECT 1 FROM account WHERE did = NEW.author_did AND active = 0)
BEGIN
    INSERT INTO status_count (status, count) SELECT NEW.status, 0
        WHERE NOT EXISTS (SELECT 1 FROM status_count WHERE status = NEW.status);
    UPDATE status_count SET count = count + 1 WHERE status = NEW.status;
END;

CREATE TRIGGER current_after_delete AFTER DELETE ON current_status
WHEN NOT EXISTS (SELECT 1 FROM account WHERE did = OLD.author_did AND active = 0)
BEGIN
    UPDATE status_count SET count = count - 1 WHERE status = OLD.status;
END;

CREATE TRIGGER account_after_insert AFTER INSERT ON account WHEN NEW.active = 0 BEGIN
    UPDATE status_count SET count = count - 1
        WHERE status = (SELECT status FROM current_status WHERE author_did = NEW.did);
END;

CREATE TRIGGER account_after_update AFTER UPDATE OF active ON account
WHEN OLD.active <> NEW.active
BEGIN
    INSERT INTO status_count (status, count)
        SELECT c.status, 0 FROM current_status AS c WHERE c.author_did = NEW.did
        AND NOT EXISTS (SELECT 1 FROM status_count AS n WHERE n.status = c.status);
    UPDATE status_count SET count = count + (CASE WHEN NEW.active = 1 THEN 1 ELSE -1 END)
        WHERE status = (SELECT status FROM current_status WHERE author_did = NEW.did);
END;

CREATE TRIGGER account_after_delete AFTER DELETE ON account WHEN OLD.active = 0 BEGIN
    INSERT INTO status_count (status, count)
        SELECT c.status, 0 FROM current_status AS c WHERE c.author_did = OLD.did
        AND NOT EXISTS (SELECT 1 FROM status_count AS n WHERE n.status = c.status);
    UPDATE status_count SET count = count + 1
        WHERE status = (SELECT status FROM current_status WHERE author_did = OLD.did);
END;
