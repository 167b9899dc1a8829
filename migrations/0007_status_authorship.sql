-- A status row belongs to the DID its URI names. The listener builds URIs from the event's DID,
-- and edge from the signed-in account after checking its PDS's answer (domain::write); this is
-- the last line behind both: a row whose URI names another author, collection or record key is
-- skipped (not an error, so one bad row cannot fail a whole batch). The upserts themselves never
-- change a row's author either (domain::sql). docs/data-model.md.
DELETE FROM status WHERE uri != 'at://' || author_did || '/xyz.statusphere.status/' || rkey;

CREATE TRIGGER status_uri_names_its_author BEFORE INSERT ON status
WHEN NEW.uri != 'at://' || NEW.author_did || '/xyz.statusphere.status/' || NEW.rkey
BEGIN
    SELECT RAISE(IGNORE);
END;
