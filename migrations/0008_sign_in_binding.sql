-- A sign-in in progress is bound to the browser that started it: /login sets a short-lived
-- random cookie and stores its SHA-256 here; the callback must come with that cookie, so a
-- callback URL from someone else's sign-in cannot sign a victim in as them (login CSRF).
-- Sign-ins started before this migration have no binding ('') and cannot finish. docs/auth.md.
ALTER TABLE oauth_state ADD COLUMN browser TEXT NOT NULL DEFAULT '';
