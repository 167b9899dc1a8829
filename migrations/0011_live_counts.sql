-- Counts that open pages keep true (docs/data-model.md "Counts, live"). Every change of a status's
-- count takes the next number of one clock as that count's version. Whoever changes counts marks
-- the clock at the start of its transaction and reads, at its end, the counts whose version is
-- above the mark: exactly the ones it changed, which it publishes with their versions; a page
-- keeps, per status, the count of the highest version it has seen, so two publishes that reach
-- the broker out of order still leave it where D1 is.
ALTER TABLE status_count ADD COLUMN version INTEGER NOT NULL DEFAULT 0;
CREATE INDEX status_count_version ON status_count (version);

CREATE TABLE counts_clock (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    seq INTEGER NOT NULL,   -- the last version given out
    mark INTEGER NOT NULL   -- `seq` when the current (or last) writer began
);
INSERT INTO counts_clock (id, seq, mark) VALUES (1, 0, 0);

-- Only the count column fires it, and it writes only the version column: it cannot fire itself.
CREATE TRIGGER status_count_versioned AFTER UPDATE OF count ON status_count
WHEN OLD.count IS NOT NEW.count
BEGIN
    UPDATE counts_clock SET seq = seq + 1 WHERE id = 1;
    UPDATE status_count SET version = (SELECT seq FROM counts_clock WHERE id = 1)
        WHERE status = NEW.status;
END;

-- An update that changes none of what an author's current status depends on (a confirmation by
-- the network of a status written here, a new cid) leaves it, and the counts, alone: before,
-- every such update took the author's count down and up again.
DROP TRIGGER status_after_update;
CREATE TRIGGER status_after_update AFTER UPDATE ON status
WHEN OLD.status IS NOT NEW.status OR OLD.indexed_at IS NOT NEW.indexed_at
    OR OLD.deleted IS NOT NEW.deleted
BEGIN
    DELETE FROM current_status WHERE author_did = NEW.author_did;
    INSERT INTO current_status (author_did, uri, status, indexed_at)
        SELECT author_did, uri, status, indexed_at FROM status
        WHERE author_did = NEW.author_did AND deleted = 0
        ORDER BY indexed_at DESC, uri DESC LIMIT 1;
END;
