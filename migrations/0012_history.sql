-- A page per person (`/profile/<handle>`, docs/data-model.md "History"): a handle is found by an
-- index, not a scan of every account. Only verified handles are stored (docs/auth.md), so the
-- newest claim wins when two rows name one handle (one of them is stale).
CREATE INDEX account_handle ON account (handle, handle_time_us DESC) WHERE handle IS NOT NULL;
