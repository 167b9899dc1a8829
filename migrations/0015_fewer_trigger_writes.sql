-- Fewer rows written a status (docs/data-model.md "Derived tables and why"). Until now every new
-- status deleted its author's current_status row and inserted it again (the count taken down,
-- then up), and every count change wrote the clock and then its own version in two more
-- statements: nine rows changed a status. Now:
-- - a new status replaces its author's current one in place, and only if it is newer (a new row
--   cannot make an older one current); an update or delete of a status, rare, still recomputes
--   the newest, but writes current_status only if that changed;
-- - a count changes only when its author's current status changes emoji (an update of
--   current_status keeps the count if the emoji stays), each change one statement that also sets
--   its version;
-- - a version is a transaction's, not a change's: the clock's `seq` becomes `mark` + 1 at the
--   first count a transaction changes (one row written a transaction, not one a change), and
--   every count it changes takes that number. Counts changed in one transaction are published
--   together, so they need no order among themselves; versions still grow from one transaction
--   to the next, which is all a page compares (migration 0011). A writer that changes counts
--   begins with sql::mark_counts, as before.

DROP TRIGGER status_count_versioned;
DROP TRIGGER status_after_insert;
DROP TRIGGER status_after_update;
DROP TRIGGER status_after_delete;
DROP TRIGGER current_after_insert;
DROP TRIGGER current_after_delete;
DROP TRIGGER account_after_insert;
DROP TRIGGER account_after_update;
DROP TRIGGER account_after_delete;

CREATE TRIGGER status_after_insert AFTER INSERT ON status WHEN NEW.deleted = 0 BEGIN
    INSERT INTO current_status (author_did, uri, status, indexed_at)
        VALUES (NEW.author_did, NEW.uri, NEW.status, NEW.indexed_at)
        ON CONFLICT (author_did) DO UPDATE SET uri = excluded.uri, status = excluded.status,
            indexed_at = excluded.indexed_at
        WHERE excluded.indexed_at > current_status.indexed_at
           OR (excluded.indexed_at = current_status.indexed_at AND excluded.uri > current_status.uri);
END;

CREATE TRIGGER status_after_update AFTER UPDATE ON status
WHEN OLD.status IS NOT NEW.status OR OLD.indexed_at IS NOT NEW.indexed_at
    OR OLD.deleted IS NOT NEW.deleted
BEGIN
    INSERT INTO current_status (author_did, uri, status, indexed_at)
        SELECT author_did, uri, status, indexed_at FROM status
        WHERE author_did = NEW.author_did AND deleted = 0
        ORDER BY indexed_at DESC, uri DESC LIMIT 1
        ON CONFLICT (author_did) DO UPDATE SET uri = excluded.uri, status = excluded.status,
            indexed_at = excluded.indexed_at
        WHERE current_status.uri IS NOT excluded.uri OR current_status.status IS NOT excluded.status
            OR current_status.indexed_at IS NOT excluded.indexed_at;
    DELETE FROM current_status WHERE author_did = NEW.author_did
        AND NOT EXISTS (SELECT 1 FROM status WHERE author_did = NEW.author_did AND deleted = 0);
END;

CREATE TRIGGER status_after_delete AFTER DELETE ON status BEGIN
    INSERT INTO current_status (author_did, uri, status, indexed_at)
        SELECT author_did, uri, status, indexed_at FROM status
        WHERE author_did = OLD.author_did AND deleted = 0
        ORDER BY indexed_at DESC, uri DESC LIMIT 1
        ON CONFLICT (author_did) DO UPDATE SET uri = excluded.uri, status = excluded.status,
            indexed_at = excluded.indexed_at
        WHERE current_status.uri IS NOT excluded.uri OR current_status.status IS NOT excluded.status
            OR current_status.indexed_at IS NOT excluded.indexed_at;
    DELETE FROM current_status WHERE author_did = OLD.author_did
        AND NOT EXISTS (SELECT 1 FROM status WHERE author_did = OLD.author_did AND deleted = 0);
END;

CREATE TRIGGER current_after_insert AFTER INSERT ON current_status
WHEN NOT EXISTS (SELECT 1 FROM account WHERE did = NEW.author_did AND active = 0)
BEGIN
    UPDATE counts_clock SET seq = mark + 1 WHERE id = 1 AND seq != mark + 1;
    INSERT INTO status_count (status, count, version)
        VALUES (NEW.status, 1, (SELECT seq FROM counts_clock WHERE id = 1))
        ON CONFLICT (status) DO UPDATE SET count = count + 1, version = excluded.version;
END;

CREATE TRIGGER current_after_update AFTER UPDATE OF status ON current_status
WHEN OLD.status IS NOT NEW.status
    AND NOT EXISTS (SELECT 1 FROM account WHERE did = NEW.author_did AND active = 0)
BEGIN
    UPDATE counts_clock SET seq = mark + 1 WHERE id = 1 AND seq != mark + 1;
    UPDATE status_count SET count = count - 1, version = (SELECT seq FROM counts_clock WHERE id = 1)
        WHERE status = OLD.status;
    INSERT INTO status_count (status, count, version)
        VALUES (NEW.status, 1, (SELECT seq FROM counts_clock WHERE id = 1))
        ON CONFLICT (status) DO UPDATE SET count = count + 1, version = excluded.version;
END;

CREATE TRIGGER current_after_delete AFTER DELETE ON current_status
WHEN NOT EXISTS (SELECT 1 FROM account WHERE did = OLD.author_did AND active = 0)
BEGIN
    UPDATE counts_clock SET seq = mark + 1 WHERE id = 1 AND seq != mark + 1;
    UPDATE status_count SET count = count - 1, version = (SELECT seq FROM counts_clock WHERE id = 1)
        WHERE status = OLD.status;
END;

CREATE TRIGGER account_after_insert AFTER INSERT ON account WHEN NEW.active = 0 BEGIN
    UPDATE counts_clock SET seq = mark + 1 WHERE id = 1 AND seq != mark + 1;
    UPDATE status_count SET count = count - 1, version = (SELECT seq FROM counts_clock WHERE id = 1)
        WHERE status = (SELECT status FROM current_status WHERE author_did = NEW.did);
END;

CREATE TRIGGER account_after_update AFTER UPDATE OF active ON account
WHEN OLD.active <> NEW.active
BEGIN
    UPDATE counts_clock SET seq = mark + 1 WHERE id = 1 AND seq != mark + 1;
    UPDATE status_count SET count = count - 1, version = (SELECT seq FROM counts_clock WHERE id = 1)
        WHERE NEW.active = 0
        AND status = (SELECT status FROM current_status WHERE author_did = NEW.did);
    INSERT INTO status_count (status, count, version)
        SELECT status, 1, (SELECT seq FROM counts_clock WHERE id = 1) FROM current_status
        WHERE NEW.active = 1 AND author_did = NEW.did
        ON CONFLICT (status) DO UPDATE SET count = count + 1, version = excluded.version;
END;

CREATE TRIGGER account_after_delete AFTER DELETE ON account WHEN OLD.active = 0 BEGIN
    UPDATE counts_clock SET seq = mark + 1 WHERE id = 1 AND seq != mark + 1;
    INSERT INTO status_count (status, count, version)
        SELECT status, 1, (SELECT seq FROM counts_clock WHERE id = 1) FROM current_status
        WHERE author_did = OLD.did
        ON CONFLICT (status) DO UPDATE SET count = count + 1, version = excluded.version;
END;
