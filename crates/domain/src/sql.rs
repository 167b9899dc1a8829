//! The SQL the workers run, in one place: D1 runs it in the workers, sqlx runs the very same text
//! against the same `migrations/` in native tests (`tests/sql.rs`).
//!
//! Each query is a function returning a [`Statement`] (text + parameters in runtime-neutral
//! [`Value`]s); the worker turns the values into D1 bindings, the tests into sqlx bindings.
//! The rules behind the writes (idempotency, ordering, tombstones) are in docs/data-model.md.

use std::borrow::Cow;

use serde::{Deserialize, Serialize};

use crate::jetstream::{AccountUpdate, HandleUpdate, Tombstone};
use crate::status::{Origin, Status, StatusView};

/// D1: at most 100 bound parameters per statement.
pub const D1_MAX_PARAMS: usize = 100;
/// D1: at most 100,000 bytes per statement (we count the text and the bound values, to be safe).
pub const D1_MAX_STATEMENT_BYTES: usize = 100_000;

/// A bound parameter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    Null,
    Integer(i64),
    Text(String),
}

impl Value {
    fn size(&self) -> usize {
        match self {
            Value::Null => 4,
            Value::Integer(_) => 8,
            Value::Text(text) => text.len(),
        }
    }

    /// Appends the value as JSON (`null`, a number, a string), for [`json_rows`].
    fn write_json(&self, out: &mut String) {
        match self {
            Value::Null => out.push_str("null"),
            Value::Integer(n) => out.push_str(&n.to_string()),
            Value::Text(text) => {
                out.push_str(&serde_json::to_string(text).unwrap_or_else(|_| "null".into()))
            }
        }
    }
}

impl From<&str> for Value {
    fn from(text: &str) -> Value {
        Value::Text(text.to_owned())
    }
}

impl From<String> for Value {
    fn from(text: String) -> Value {
        Value::Text(text)
    }
}

impl From<i64> for Value {
    fn from(n: i64) -> Value {
        Value::Integer(n)
    }
}

impl From<bool> for Value {
    fn from(b: bool) -> Value {
        Value::Integer(i64::from(b))
    }
}

impl<T: Into<Value>> From<Option<T>> for Value {
    fn from(value: Option<T>) -> Value {
        value.map_or(Value::Null, Into::into)
    }
}

/// One SQL statement with its parameters, bound in order to `?1`, `?2`, … (or to plain `?`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Statement {
    pub sql: Cow<'static, str>,
    pub params: Vec<Value>,
}

impl Statement {
    pub(crate) fn new(sql: &'static str, params: Vec<Value>) -> Statement {
        Statement {
            sql: Cow::Borrowed(sql),
            params,
        }
    }

    /// Text plus bound values, in bytes: what D1's statement-size limit is checked against.
    pub fn size(&self) -> usize {
        self.sql.len() + self.params.iter().map(Value::size).sum::<usize>()
    }
}

/// Builds multi-row `INSERT … VALUES (…), (…) <tail>` statements, as many rows per statement as
/// D1's limits allow. Every row has the same number of values.
pub(crate) fn multi_row(head: &str, tail: &str, rows: Vec<Vec<Value>>) -> Vec<Statement> {
    let Some(width) = rows.first().map(Vec::len) else {
        return Vec::new();
    };
    let tuple = format!("({})", vec!["?"; width].join(", "));
    let max_rows = (D1_MAX_PARAMS / width).max(1);
    let mut statements = Vec::new();
    let mut current: Vec<Vec<Value>> = Vec::new();
    let mut bytes = head.len() + tail.len();
    for row in rows {
        let row_bytes = tuple.len() + 2 + row.iter().map(Value::size).sum::<usize>();
        let full = current.len() == max_rows || bytes + row_bytes > D1_MAX_STATEMENT_BYTES;
        if full && !current.is_empty() {
            statements.push(render(head, tail, &tuple, std::mem::take(&mut current)));
            bytes = head.len() + tail.len();
        }
        bytes += row_bytes;
        current.push(row);
    }
    if !current.is_empty() {
        statements.push(render(head, tail, &tuple, current));
    }
    statements
}

/// Up to this many rows go in one [`json_rows`] statement (besides D1's bytes a statement).
const JSON_MAX_ROWS: usize = 500;

/// Builds `INSERT INTO t (a, b, …) SELECT value ->> 0, value ->> 1, … FROM json_each(?1) <tail>`
/// statements: all the rows as one JSON array of arrays, bound as one value, as many rows a
/// statement as D1's bytes allow. D1's 100 bound values held a `multi_row` statement to 10 rows of
/// a status; each statement costs the database its own call, its own results and its own
/// bookkeeping, and a catch-up wrote thousands (docs/benchmarks.md, "Listener"). `insert` is the
/// statement's head up to its column list; every row has as many values as it names.
pub(crate) fn json_rows(insert: &str, tail: &str, rows: Vec<Vec<Value>>) -> Vec<Statement> {
    let Some(width) = rows.first().map(Vec::len) else {
        return Vec::new();
    };
    let columns: Vec<String> = (0..width).map(|i| format!("value ->> {i}")).collect();
    // `WHERE true`: SQLite reads an `ON CONFLICT` right after `FROM json_each(…)` as a join's.
    let sql = format!(
        "{insert} SELECT {} FROM json_each(?1) WHERE true {tail}",
        columns.join(", ")
    );
    // The same filling as `multi_row`'s, written again on purpose: one generic for both cost the
    // listener 0.6 KiB gzipped, over its bundle budget (docs/benchmarks.md, "Bundles").
    let mut statements = Vec::new();
    let mut array = String::new();
    let mut count = 0;
    for row in rows {
        let mut encoded = String::from("[");
        for (i, value) in row.iter().enumerate() {
            if i > 0 {
                encoded.push(',');
            }
            value.write_json(&mut encoded);
        }
        encoded.push(']');
        let full = count == JSON_MAX_ROWS
            || sql.len() + array.len() + encoded.len() + 2 > D1_MAX_STATEMENT_BYTES;
        if full && count > 0 {
            statements.push(json_statement(&sql, &array));
            array.clear();
            count = 0;
        }
        if count > 0 {
            array.push(',');
        }
        array.push_str(&encoded);
        count += 1;
    }
    if count > 0 {
        statements.push(json_statement(&sql, &array));
    }
    statements
}

fn json_statement(sql: &str, rows: &str) -> Statement {
    Statement {
        sql: Cow::Owned(sql.to_owned()),
        params: vec![Value::Text(format!("[{rows}]"))],
    }
}

/// A statement of several rows (written by `multi_row`) as one statement a row, in order; any
/// other statement as it is. For the baseline that `cargo xtask bench listener` compares the
/// shipped statements with (docs/benchmarks.md, "Listener: catching up").
pub fn one_row_each(statement: Statement) -> Vec<Statement> {
    if statement.sql.contains("FROM json_each(?1)") {
        return one_json_row_each(statement);
    }
    let sql = statement.sql.as_ref();
    let Some(start) = sql.find("(?") else {
        return vec![statement];
    };
    let Some(end) = sql[start..].find(')').map(|e| start + e + 1) else {
        return vec![statement];
    };
    let tuple = &sql[start..end];
    let width = tuple.matches('?').count();
    let rows = statement.params.len() / width.max(1);
    let region = vec![tuple; rows].join(", ");
    if rows < 2
        || !statement.params.len().is_multiple_of(width)
        || !sql[start..].starts_with(&region)
    {
        return vec![statement];
    }
    let (head, tail) = (&sql[..start], &sql[start + region.len()..]);
    statement
        .params
        .chunks(width)
        .map(|row| Statement {
            sql: Cow::Owned(format!("{head}{tuple}{tail}")),
            params: row.to_vec(),
        })
        .collect()
}

/// A [`json_rows`] statement as one statement a row (its array of one).
fn one_json_row_each(statement: Statement) -> Vec<Statement> {
    let rows = match statement.params.as_slice() {
        [Value::Text(array)] => json_elements(array),
        _ => Vec::new(),
    };
    if rows.len() < 2 {
        return vec![statement];
    }
    rows.into_iter()
        .map(|row| Statement {
            sql: statement.sql.clone(),
            params: vec![Value::Text(format!("[{row}]"))],
        })
        .collect()
}

/// The elements of a JSON array as [`json_rows`] writes it, as text: split at the commas outside
/// any string or inner array. (A scan rather than a parse keeps a JSON reader out of the listener
/// for what only the bench's baseline uses.)
fn json_elements(array: &str) -> Vec<&str> {
    let Some(inner) = array.strip_prefix('[').and_then(|a| a.strip_suffix(']')) else {
        return Vec::new();
    };
    let (mut elements, mut start, mut depth) = (Vec::new(), 0, 0usize);
    let (mut in_string, mut escaped) = (false, false);
    for (i, c) in inner.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' if in_string => escaped = true,
            '"' => in_string = !in_string,
            '[' if !in_string => depth += 1,
            ']' if !in_string => depth = depth.saturating_sub(1),
            ',' if !in_string && depth == 0 => {
                elements.push(&inner[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    if !inner.is_empty() {
        elements.push(&inner[start..]);
    }
    elements
}

fn render(head: &str, tail: &str, tuple: &str, rows: Vec<Vec<Value>>) -> Statement {
    let tuples = vec![tuple; rows.len()].join(", ");
    Statement {
        sql: Cow::Owned(format!("{head} {tuples} {tail}")),
        params: rows.into_iter().flatten().collect(),
    }
}

// ---------------------------------------------------------------------------------------------
// Statuses: writes

const UPSERT_HEAD: &str = "INSERT INTO status \
    (uri, author_did, rkey, status, created_at, indexed_at, rev, cid, origin, confirmed)";

/// The idempotency rules, in SQL. A write lands only if it is newer (a greater `rev`), or the same
/// revision confirmed by the network for the first time; anything else (the same event twice, an
/// older replay, a create replayed after its delete) changes nothing and returns no row. A row
/// never changes author: a write by another DID to the same URI changes nothing either (the
/// callers build URIs from the author, and migration 0007 refuses rows whose URI names another).
const UPSERT_TAIL: &str = "ON CONFLICT (uri) DO UPDATE SET \
    status = excluded.status, \
    created_at = excluded.created_at, \
    cid = excluded.cid, \
    indexed_at = CASE WHEN status.deleted = 0 AND (excluded.rev = status.rev OR status.rev = '') \
        THEN MIN(status.indexed_at, excluded.indexed_at) ELSE excluded.indexed_at END, \
    rev = excluded.rev, \
    confirmed = MAX(status.confirmed, excluded.confirmed), \
    deleted = 0 \
    WHERE excluded.author_did = status.author_did AND (excluded.rev > status.rev \
       OR (excluded.rev = status.rev AND status.deleted = 0 AND excluded.confirmed > status.confirmed)) \
    RETURNING uri, rev, indexed_at, origin, confirmed";

/// A status read from its repository (`domain::repo`) carries the repository's revision, newer
/// than the record's own commit: it lands only where the app's row is missing, a tombstone, or of
/// other content (another CID), so that reading a repository the app already knows changes and
/// publishes nothing.
const IMPORT_TAIL: &str = "ON CONFLICT (uri) DO UPDATE SET \
    status = excluded.status, \
    created_at = excluded.created_at, \
    cid = excluded.cid, \
    indexed_at = excluded.indexed_at, \
    rev = excluded.rev, \
    confirmed = 1, \
    deleted = 0 \
    WHERE excluded.author_did = status.author_did AND excluded.rev > status.rev \
      AND (status.deleted = 1 OR excluded.cid IS NOT status.cid) \
    RETURNING uri, author_did, rkey, status, created_at, indexed_at, rev, cid, origin, confirmed";

/// Records statuses read from their repository (see `IMPORT_TAIL`); returns the rows written.
pub fn import_statuses(statuses: &[Status]) -> Vec<Statement> {
    json_rows(
        UPSERT_HEAD,
        IMPORT_TAIL,
        statuses.iter().map(status_row).collect(),
    )
}

/// One status as the values of `UPSERT_HEAD`.
fn status_row(s: &Status) -> Vec<Value> {
    vec![
        s.uri.as_str().into(),
        s.author_did.as_str().into(),
        s.rkey.as_str().into(),
        s.status.as_str().into(),
        s.created_at.as_str().into(),
        s.indexed_at.into(),
        s.rev.as_str().into(),
        s.cid.as_deref().into(),
        s.origin.as_str().into(),
        s.confirmed.into(),
    ]
}

/// Upserts statuses by URI, idempotently, in as few statements as D1's limits allow. Each
/// statement returns an [`UpsertedRow`] for each status it changed (to forward to the broker): only
/// what the write did not take from the status sent, since the caller has the rest. Run them in one
/// D1 batch (one transaction).
pub fn upsert_statuses(statuses: &[Status]) -> Vec<Statement> {
    json_rows(
        UPSERT_HEAD,
        UPSERT_TAIL,
        statuses.iter().map(status_row).collect(),
    )
}

const DELETE_HEAD: &str = "INSERT INTO status \
    (uri, author_did, rkey, status, created_at, indexed_at, rev, cid, origin, confirmed, deleted)";

/// A delete leaves a tombstone (content cleared), even for a status never seen, so that a replayed
/// older create cannot revive it; a delete older than what is stored changes nothing.
const DELETE_TAIL: &str = "ON CONFLICT (uri) DO UPDATE SET \
    status = '', created_at = '', cid = NULL, rev = excluded.rev, deleted = 1 \
    WHERE excluded.author_did = status.author_did AND excluded.rev >= status.rev AND status.deleted = 0 \
    RETURNING uri, author_did";

/// Deletes statuses (as tombstones). Returns `(uri, author_did)` of each tombstone written (a
/// visible status deleted, or a tombstone for a status not seen yet); replays return nothing.
pub fn delete_statuses(tombstones: &[Tombstone]) -> Vec<Statement> {
    let rows = tombstones
        .iter()
        .map(|t| {
            vec![
                t.uri.as_str().into(),
                t.author_did.as_str().into(),
                t.rkey.as_str().into(),
                "".into(),
                "".into(),
                t.indexed_at.into(),
                t.rev.as_str().into(),
                Value::Null,
                Origin::Network.as_str().into(),
                true.into(),
                true.into(),
            ]
        })
        .collect();
    json_rows(DELETE_HEAD, DELETE_TAIL, rows)
}

// ---------------------------------------------------------------------------------------------
// Accounts

const HANDLE_HEAD: &str = "INSERT INTO account (did, handle, handle_time_us) VALUES";
const HANDLE_TAIL: &str = "ON CONFLICT (did) DO UPDATE SET \
    handle = excluded.handle, handle_time_us = excluded.handle_time_us \
    WHERE excluded.handle_time_us >= account.handle_time_us \
      AND excluded.handle IS NOT account.handle \
    RETURNING did, handle";

/// The network's identity and account events concern every account on it (Jetstream sends them
/// whatever collections were asked for); only those of accounts the app knows (a row in `account`,
/// or a status it can show) are written, or D1's daily row writes would go to strangers. So the
/// rows are selected from `VALUES`, each one checked by two primary-key lookups.
const KNOWN_ONLY_WHERE: &str = ") AS v WHERE \
    EXISTS (SELECT 1 FROM account AS k WHERE k.did = v.column1) \
    OR EXISTS (SELECT 1 FROM current_status AS c WHERE c.author_did = v.column1)";

/// `INSERT INTO t (a, b, …) VALUES` and its tail → the same insert, of known accounts' rows only
/// (`width` columns, the DID first).
fn known_only(head: &str, tail: &str, width: usize) -> (String, String) {
    let insert = head.strip_suffix("VALUES").unwrap_or(head);
    let columns: Vec<String> = (1..=width).map(|i| format!("column{i}")).collect();
    (
        format!("{insert}SELECT {} FROM (VALUES", columns.join(", ")),
        format!("{KNOWN_ONLY_WHERE} {tail}"),
    )
}

/// Records handles from identity events, for accounts the app knows; an older identity event
/// never overwrites a newer one. Returns the accounts whose handle changed.
pub fn set_handles(updates: &[HandleUpdate]) -> Vec<Statement> {
    let rows = updates.iter().map(handle_row).collect();
    let (head, tail) = known_only(HANDLE_HEAD, HANDLE_TAIL, 3);
    multi_row(&head, &tail, rows)
}

fn handle_row(update: &HandleUpdate) -> Vec<Value> {
    vec![
        update.did.as_str().into(),
        update.handle.as_deref().into(),
        update.time_us.into(),
    ]
}

/// A handle learned outside the firehose (sign-in, a write through edge, a background refresh):
/// recorded unless an identity event already said otherwise more recently.
pub fn learn_handle(did: &str, handle: &str, now_us: i64) -> Statement {
    let update = HandleUpdate {
        did: did.to_owned(),
        handle: Some(handle.to_owned()),
        time_us: now_us,
    };
    render(
        HANDLE_HEAD,
        HANDLE_TAIL,
        "(?, ?, ?)",
        vec![handle_row(&update)],
    )
}

/// The newest status's `indexed_at` (`newest`, null when there is none): one row read, from the
/// `status_recent` index.
pub fn newest_status() -> Statement {
    Statement::new(
        "SELECT MAX(indexed_at) AS newest FROM status WHERE deleted = 0",
        vec![],
    )
}

/// How long the cron may skip its background claims while nothing changes, unless edge's
/// `CRON_QUIET_SECONDS` says otherwise.
pub const QUIET_SKIP_MS: i64 = 10 * 60_000;

/// The cron's background reads (handles, display names) claim among the 200 newest statuses,
/// about 600 D1 rows read a run whatever they find. A run that claimed nothing records what the
/// newest status was; later runs skip the claims while no status is newer, for at most
/// `skip_ms` ([`QUIET_SKIP_MS`] as shipped), so what comes due meanwhile (an hourly handle retry, a daily profile
/// check) waits at most that long: an idle day reads about a tenth of the 820,000 rows it did
/// (docs/budget.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quiet {
    pub newest: Option<i64>,
    pub at_ms: i64,
}

impl Quiet {
    /// Whether a run at `now_ms` that sees `newest` may skip the claims.
    pub fn holds(&self, newest: Option<i64>, now_ms: i64, skip_ms: i64) -> bool {
        newest == self.newest && (0..skip_ms).contains(&(now_ms - self.at_ms))
    }
}

/// How long a display name is kept before its author's profile is read again.
pub const PROFILE_RECHECK_MS: i64 = 24 * 3_600 * 1_000;

/// Claims, for a background read of their profile, up to `limit` authors among the newest 200
/// statuses whose display name was never read or was read more than [`PROFILE_RECHECK_MS`] ago;
/// returns their DIDs. Claiming writes `checked_at`, so a profile that cannot be read is tried
/// again a day later, not on every run.
pub fn claim_profile_checks(now_ms: i64, limit: i64) -> Statement {
    Statement::new(
        "INSERT INTO profile (did, checked_at) \
         SELECT did, ?1 FROM (SELECT DISTINCT s.author_did AS did \
             FROM (SELECT author_did FROM status WHERE deleted = 0 \
                   ORDER BY indexed_at DESC, uri DESC LIMIT 200) AS s \
             LEFT JOIN profile AS p ON p.did = s.author_did \
             WHERE p.did IS NULL OR p.checked_at < ?2 LIMIT ?3) WHERE true \
         ON CONFLICT (did) DO UPDATE SET checked_at = excluded.checked_at \
         RETURNING did",
        vec![
            now_ms.into(),
            (now_ms - PROFILE_RECHECK_MS).into(),
            limit.into(),
        ],
    )
}

/// Records `did`'s display name as read now (`None`: no profile, or no name in it); returns
/// `(did, display_name)` when it is new or changed, for the broker (an unchanged name is not
/// written again: the claim already dated the read).
pub fn set_display_name(did: &str, name: Option<&str>, now_ms: i64) -> Statement {
    Statement::new(
        "INSERT INTO profile (did, display_name, checked_at) VALUES (?1, ?2, ?3) \
         ON CONFLICT (did) DO UPDATE SET display_name = excluded.display_name, \
             checked_at = excluded.checked_at \
             WHERE profile.display_name IS NOT excluded.display_name \
         RETURNING did, display_name",
        vec![did.into(), name.into(), now_ms.into()],
    )
}

/// Makes `dids` due for a handle lookup at once (their identity changed: the stored handle was
/// dropped, and the next claim verifies a new one). Deleting rows that do not exist writes nothing.
pub fn requeue_handle_lookups(dids: &[&str]) -> Vec<Statement> {
    dids.chunks(D1_MAX_PARAMS)
        .map(|chunk| {
            let marks = vec!["?"; chunk.len()].join(", ");
            Statement {
                sql: Cow::Owned(format!("DELETE FROM handle_lookup WHERE did IN ({marks})")),
                params: chunk.iter().map(|did| (*did).into()).collect(),
            }
        })
        .collect()
}

/// How long a handle lookup that found nothing waits before it is tried again.
pub const HANDLE_RETRY_MS: i64 = 3_600_000;

/// How many of the newest statuses the cron's handle lookups consider: what pages show, at a
/// bounded cost in rows read per run.
pub const HANDLE_LOOKUP_WINDOW: i64 = 50;

/// Claims up to `limit` authors of the [`HANDLE_LOOKUP_WINDOW`] newest statuses whose handle is
/// unknown, for a background lookup (the cron). See [`claim_handle_lookups_among`].
pub fn claim_recent_handle_lookups(now_ms: i64, limit: i64) -> Statement {
    claim_handle_lookups(
        "SELECT author_did AS did FROM status WHERE deleted = 0 \
         ORDER BY indexed_at DESC, uri DESC LIMIT ?4",
        vec![HANDLE_LOOKUP_WINDOW.into()],
        now_ms,
        limit,
    )
}

/// Claims up to `limit` of `dids` (authors a page just showed by DID) for a background lookup.
/// An account is claimed if its handle is unknown, it is not known to be inactive, and it was not
/// claimed in the last [`HANDLE_RETRY_MS`]; claiming stamps `handle_lookup.checked_at`, so
/// concurrent claims (the cron and page views) never look up the same DID twice. Returns `did`.
pub fn claim_handle_lookups_among(dids: &[&str], now_ms: i64, limit: i64) -> Statement {
    let mut values: Vec<Value> = dids.iter().map(|d| (*d).into()).collect();
    if values.is_empty() {
        values.push(Value::Null);
    }
    // VALUES' rows are numbered after the three fixed parameters (?1..?3).
    let numbered = (0..values.len())
        .map(|i| format!("(?{})", i + 4))
        .collect::<Vec<_>>()
        .join(", ");
    claim_handle_lookups(
        &format!("SELECT column1 AS did FROM (VALUES {numbered})"),
        values,
        now_ms,
        limit,
    )
}

fn claim_handle_lookups(
    candidates: &str,
    params: Vec<Value>,
    now_ms: i64,
    limit: i64,
) -> Statement {
    let mut values = vec![
        now_ms.into(),
        (now_ms - HANDLE_RETRY_MS).into(),
        limit.into(),
    ];
    values.extend(params);
    Statement {
        sql: Cow::Owned(format!(
            "INSERT INTO handle_lookup (did, checked_at) \
             SELECT DISTINCT c.did, ?1 FROM ({candidates}) AS c \
             LEFT JOIN account AS a ON a.did = c.did \
             LEFT JOIN handle_lookup AS h ON h.did = c.did \
             WHERE c.did IS NOT NULL AND a.handle IS NULL AND COALESCE(a.active, 1) = 1 \
               AND COALESCE(h.checked_at, 0) <= ?2 \
             LIMIT ?3 \
             ON CONFLICT (did) DO UPDATE SET checked_at = excluded.checked_at \
             RETURNING did"
        )),
        params: values,
    }
}

const ACCOUNT_HEAD: &str = "INSERT INTO account (did, active, status, state_time_us) VALUES";
const ACCOUNT_TAIL: &str = "ON CONFLICT (did) DO UPDATE SET \
    active = excluded.active, status = excluded.status, state_time_us = excluded.state_time_us \
    WHERE excluded.state_time_us >= account.state_time_us \
      AND (excluded.active IS NOT account.active OR excluded.status IS NOT account.status) \
    RETURNING did, active";

/// Records account states of accounts the app knows (hides inactive accounts' statuses); an
/// older account event never overwrites a newer one. Returns the accounts whose state changed.
/// Accounts that were deleted also need [`purge_statuses`].
pub fn set_account_states(updates: &[AccountUpdate]) -> Vec<Statement> {
    let rows = updates
        .iter()
        .map(|u| {
            vec![
                u.did.as_str().into(),
                u.active.into(),
                u.status.as_deref().into(),
                u.time_us.into(),
            ]
        })
        .collect();
    let (head, tail) = known_only(ACCOUNT_HEAD, ACCOUNT_TAIL, 4);
    multi_row(&head, &tail, rows)
}

/// The handle, active flag and display name of each of `dids` that the app knows, in as few statements as D1's
/// limits allow (the listener reads its upserted statuses' authors with this, in the same batch).
pub fn accounts_of(dids: &[&str]) -> Vec<Statement> {
    dids.chunks(D1_MAX_PARAMS)
        .map(|chunk| Statement {
            sql: Cow::Owned(format!(
                "SELECT k.did, a.handle, a.active, p.display_name \
                 FROM (SELECT did FROM account WHERE did IN ({marks}) \
                       UNION SELECT did FROM profile WHERE did IN ({marks})) AS k \
                 LEFT JOIN account AS a ON a.did = k.did LEFT JOIN profile AS p ON p.did = k.did",
                marks = (1..=chunk.len())
                    .map(|i| format!("?{i}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            )),
            params: chunk.iter().map(|did| (*did).into()).collect(),
        })
        .collect()
}

/// Turns deleted accounts' statuses into tombstones (content cleared): of each `(did, time_us)`,
/// those the app saw by the deletion's time, not any written after it (the account came back). A
/// deletion read again after a crash (Jetstream is read at least once) then purges what it purged
/// the first time and nothing the account wrote since. As many accounts a statement as D1's bound
/// values allow (the network deletes accounts all the time, each a statement before).
pub fn purge_statuses(deletions: &[(&str, i64)]) -> Vec<Statement> {
    deletions
        .chunks(D1_MAX_PARAMS / 2)
        .map(|chunk| {
            let dids: Vec<String> = (0..chunk.len())
                .map(|i| format!("?{}", 2 * i + 1))
                .collect();
            let times: Vec<String> = (0..chunk.len())
                .map(|i| format!("WHEN ?{} THEN ?{}", 2 * i + 1, 2 * i + 2))
                .collect();
            Statement {
                sql: Cow::Owned(format!(
                    "UPDATE status SET status = '', created_at = '', cid = NULL, deleted = 1 \
                     WHERE deleted = 0 AND author_did IN ({}) \
                     AND indexed_at <= (CASE author_did {} END)",
                    dids.join(", "),
                    times.join(" ")
                )),
                params: chunk
                    .iter()
                    .flat_map(|(did, time_us)| [(*did).into(), (time_us / 1000).into()])
                    .collect(),
            }
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Statuses: reads

/// The most recent visible statuses (not deleted, author active), newest first, with handles.
pub fn recent_statuses(limit: i64) -> Statement {
    statuses_page(None, None, limit)
}

/// Where a page of statuses ends, so the next page starts after it: a position in the feed's
/// order (newest first: `indexed_at`, then `uri`), not an offset, so statuses arriving meanwhile
/// do not shift what the next page shows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Before {
    pub indexed_at: i64,
    pub uri: String,
}

/// Visible statuses older than `before` (all of them without it), newest first, with handles:
/// everyone's, or `author`'s only. One index range either way (`status_recent`,
/// `status_author`).
pub fn statuses_page(author: Option<&str>, before: Option<&Before>, limit: i64) -> Statement {
    let mut sql = String::from(
        "SELECT s.uri, s.author_did, a.handle, p.display_name, s.rkey, s.status, s.created_at, \
         s.indexed_at, s.origin, s.confirmed \
         FROM status AS s LEFT JOIN account AS a ON a.did = s.author_did \
         LEFT JOIN profile AS p ON p.did = s.author_did \
         WHERE s.deleted = 0 AND (a.active IS NULL OR a.active = 1)",
    );
    let mut params: Vec<Value> = Vec::new();
    if let Some(author) = author {
        params.push(author.into());
        sql += &format!(" AND s.author_did = ?{}", params.len());
    }
    if let Some(before) = before {
        params.push(before.indexed_at.into());
        params.push(before.uri.as_str().into());
        sql += &format!(
            " AND (s.indexed_at, s.uri) < (?{}, ?{})",
            params.len() - 1,
            params.len()
        );
    }
    params.push(limit.into());
    sql += &format!(
        " ORDER BY s.indexed_at DESC, s.uri DESC LIMIT ?{}",
        params.len()
    );
    Statement {
        sql: Cow::Owned(sql),
        params,
    }
}

/// The account that holds `handle` now (verified handles only are stored; of two stale claims the
/// newer wins).
pub fn account_by_handle(handle: &str) -> Statement {
    Statement::new(
        "SELECT did, handle FROM account WHERE handle = ?1 \
         ORDER BY handle_time_us DESC LIMIT 1",
        vec![handle.into()],
    )
}

/// What the app knows of `did`: its handle, if any.
pub fn account_by_did(did: &str) -> Statement {
    Statement::new(
        "SELECT did, handle FROM account WHERE did = ?1",
        vec![did.into()],
    )
}

/// One account's current status (its newest, not deleted), with its handle.
pub fn current_status(did: &str) -> Statement {
    Statement::new(
        "SELECT s.uri, s.author_did, a.handle, p.display_name, s.rkey, s.status, s.created_at, \
         s.indexed_at, s.origin, s.confirmed \
         FROM current_status AS c JOIN status AS s ON s.uri = c.uri \
         LEFT JOIN account AS a ON a.did = c.author_did \
         LEFT JOIN profile AS p ON p.did = c.author_did \
         WHERE c.author_did = ?1",
        vec![did.into()],
    )
}

/// The current status of whoever holds a live browser session (by the id's hash): the home page
/// asks for it in the same batch as the session itself, one D1 round trip for both.
pub fn current_status_of_session(id_hash: &str, now_ms: i64) -> Statement {
    Statement::new(
        "SELECT s.uri, s.author_did, a.handle, s.rkey, s.status, s.created_at, s.indexed_at, \
         s.origin, s.confirmed \
         FROM current_status AS c JOIN status AS s ON s.uri = c.uri \
         LEFT JOIN account AS a ON a.did = c.author_did \
         WHERE c.author_did = (SELECT did FROM browser_session \
                               WHERE id_hash = ?1 AND expires_at > ?2)",
        vec![id_hash.into(), now_ms.into()],
    )
}

/// How many active accounts currently show each status, most shown first.
pub fn status_counts(picker: &[&str], others: i64) -> Statement {
    // A bounded read whatever strangers post: every status of the picker (its counts must be
    // exact), and the `others` most used besides.
    let marks: Vec<String> = (1..=picker.len()).map(|i| format!("?{i}")).collect();
    let limit = picker.len() + 1;
    let mut params: Vec<Value> = picker.iter().map(|s| (*s).into()).collect();
    params.push(others.into());
    Statement {
        sql: Cow::Owned(format!(
            "SELECT status, count, version FROM status_count WHERE count > 0 AND status IN ({}) \
             UNION SELECT status, count, version FROM (SELECT status, count, version \
             FROM status_count WHERE count > 0 ORDER BY count DESC, status LIMIT ?{limit}) \
             ORDER BY count DESC, status",
            marks.join(", ")
        )),
        params,
    }
}

/// First in a transaction that may change counts: marks the counts clock, so that
/// [`counts_changed`] at its end finds the counts this transaction changed (and only those: D1
/// runs one transaction at a time). Writes nothing when no count changed since the last mark.
pub fn mark_counts() -> Statement {
    Statement::new(
        "UPDATE counts_clock SET mark = seq WHERE id = 1 AND mark != seq",
        vec![],
    )
}

/// Last in a transaction that began with [`mark_counts`]: the counts it changed, with their
/// versions, zeros included (a page must learn that a status is no longer shown), oldest change
/// first.
pub fn counts_changed() -> Statement {
    Statement::new(
        "SELECT status, count, version FROM status_count \
         WHERE version > (SELECT mark FROM counts_clock WHERE id = 1) ORDER BY version",
        vec![],
    )
}

/// One status by URI, with its handle (whether visible or not; `deleted` tells).
pub fn status_by_uri(uri: &str) -> Statement {
    Statement::new(
        "SELECT s.uri, s.author_did, a.handle, p.display_name, s.rkey, s.status, s.created_at, \
         s.indexed_at, s.origin, s.confirmed, s.deleted \
         FROM status AS s LEFT JOIN account AS a ON a.did = s.author_did \
         LEFT JOIN profile AS p ON p.did = s.author_did WHERE s.uri = ?1",
        vec![uri.into()],
    )
}

/// A row of [`recent_statuses`], [`current_status`] or [`status_by_uri`], as SQLite returns it
/// (booleans are integers).
#[derive(Debug, Clone, Deserialize)]
pub struct StatusViewRow {
    pub uri: String,
    pub author_did: String,
    pub handle: Option<String>,
    #[serde(default)]
    pub display_name: Option<String>,
    pub rkey: String,
    pub status: String,
    pub created_at: String,
    pub indexed_at: i64,
    pub origin: String,
    pub confirmed: i64,
}

impl StatusViewRow {
    pub fn into_view(self) -> StatusView {
        StatusView {
            uri: self.uri,
            author_did: self.author_did,
            handle: self.handle,
            display_name: self.display_name,
            rkey: self.rkey,
            status: self.status,
            created_at: self.created_at,
            indexed_at: self.indexed_at,
            // The column's CHECK allows only the two values.
            origin: Origin::parse(&self.origin).unwrap_or(Origin::Network),
            confirmed: self.confirmed != 0,
        }
    }
}

/// A row [`upsert_statuses`] returns: the status written is the one sent with this `(uri, rev)`,
/// except for what the row kept of before (when it was first seen, who wrote it first, whether the
/// network confirmed it). The rest is not read back: a catch-up's answers were a fifth of its work.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct UpsertedRow {
    pub uri: String,
    pub rev: String,
    pub indexed_at: i64,
    pub origin: String,
    pub confirmed: i64,
}

impl UpsertedRow {
    /// The status as D1 now holds it, given the one that was sent (same URI and revision).
    pub fn view_of(self, sent: &Status) -> StatusView {
        StatusView {
            uri: self.uri,
            author_did: sent.author_did.clone(),
            handle: None,
            display_name: None,
            rkey: sent.rkey.clone(),
            status: sent.status.clone(),
            created_at: sent.created_at.clone(),
            indexed_at: self.indexed_at,
            // The column's CHECK allows only the two values.
            origin: Origin::parse(&self.origin).unwrap_or(Origin::Network),
            confirmed: self.confirmed != 0,
        }
    }
}

/// A row of [`account_by_handle`] and [`account_by_did`].
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct AccountNameRow {
    pub did: String,
    pub handle: Option<String>,
}

/// A row of [`status_counts`] and [`counts_changed`]: how many active accounts show `status`,
/// as of `version` (migration 0011: every change of a count takes the next version, so of two
/// rows for one status the higher version is the newer).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CountRow {
    pub status: String,
    pub count: i64,
    #[serde(default)]
    pub version: i64,
}

// ---------------------------------------------------------------------------------------------
// OAuth state and sessions

/// Stores an authorization in progress.
pub fn insert_oauth_state(
    state: &str,
    data: &str,
    browser_hash: &str,
    expires_at_ms: i64,
) -> Statement {
    Statement::new(
        "INSERT INTO oauth_state (state, data, browser, expires_at) VALUES (?1, ?2, ?3, ?4)",
        vec![
            state.into(),
            data.into(),
            browser_hash.into(),
            expires_at_ms.into(),
        ],
    )
}

/// Takes an authorization in progress: returns its `data` and the hash of the browser binding
/// it was started with, once, with whether it is still fresh, and removes it whatever happens
/// (a state is single-use).
pub fn take_oauth_state(state: &str, now_ms: i64) -> Statement {
    Statement::new(
        "DELETE FROM oauth_state WHERE state = ?1 \
         RETURNING data, browser, expires_at > ?2 AS fresh",
        vec![state.into(), now_ms.into()],
    )
}

/// Creates or replaces an account's OAuth session (after sign-in), dropping any refresh lease.
pub fn put_oauth_session(did: &str, data: &str, now_ms: i64) -> Statement {
    Statement::new(
        "INSERT INTO oauth_session (did, data, updated_at) VALUES (?1, ?2, ?3) \
         ON CONFLICT (did) DO UPDATE SET data = excluded.data, updated_at = excluded.updated_at, \
         lock_owner = NULL, lock_until = NULL, pds_nonce = NULL",
        vec![did.into(), data.into(), now_ms.into()],
    )
}

pub fn get_oauth_session(did: &str) -> Statement {
    Statement::new(
        "SELECT data, pds_nonce, updated_at FROM oauth_session WHERE did = ?1",
        vec![did.into()],
    )
}

pub fn delete_oauth_session(did: &str) -> Statement {
    Statement::new("DELETE FROM oauth_session WHERE did = ?1", vec![did.into()])
}

/// Remembers the PDS's latest DPoP nonce beside a session (the session itself is sealed), without
/// touching its tokens or its lease (so it cannot undo a refresh that ran meanwhile).
pub fn set_pds_nonce(did: &str, nonce: &str) -> Statement {
    Statement::new(
        "UPDATE oauth_session SET pds_nonce = ?2 WHERE did = ?1",
        vec![did.into(), nonce.into()],
    )
}

/// Takes the refresh lease on a session until `until_ms`, if nobody holds a live one; returns the
/// session's data when taken (no row: someone else is refreshing).
pub fn lock_oauth_session(did: &str, owner: &str, now_ms: i64, until_ms: i64) -> Statement {
    Statement::new(
        "UPDATE oauth_session SET lock_owner = ?2, lock_until = ?4 \
         WHERE did = ?1 AND (lock_until IS NULL OR lock_until <= ?3) RETURNING data, pds_nonce",
        vec![did.into(), owner.into(), now_ms.into(), until_ms.into()],
    )
}

/// Stores refreshed tokens and releases the lease, only if `owner` still holds it; no row
/// returned means the lease was lost and the tokens must not be used.
pub fn store_refreshed_session(did: &str, owner: &str, data: &str, now_ms: i64) -> Statement {
    Statement::new(
        "UPDATE oauth_session SET data = ?3, updated_at = ?4, lock_owner = NULL, lock_until = NULL \
         WHERE did = ?1 AND lock_owner = ?2 RETURNING did",
        vec![did.into(), owner.into(), data.into(), now_ms.into()],
    )
}

/// Releases a lease without changing the session (the refresh failed).
pub fn unlock_oauth_session(did: &str, owner: &str) -> Statement {
    Statement::new(
        "UPDATE oauth_session SET lock_owner = NULL, lock_until = NULL \
         WHERE did = ?1 AND lock_owner = ?2",
        vec![did.into(), owner.into()],
    )
}

/// Ends a session whose refresh was refused, with every browser signed in to it, only if `owner`
/// still holds its lease: a sign-in that replaced the session meanwhile (which clears the lease)
/// is kept, and so are the browsers it signed in. Run as one batch, in this order.
pub fn end_refused_session(did: &str, owner: &str) -> [Statement; 2] {
    [
        Statement::new(
            "DELETE FROM browser_session WHERE did = ?1 AND EXISTS \
             (SELECT 1 FROM oauth_session WHERE did = ?1 AND lock_owner = ?2)",
            vec![did.into(), owner.into()],
        ),
        Statement::new(
            "DELETE FROM oauth_session WHERE did = ?1 AND lock_owner = ?2",
            vec![did.into(), owner.into()],
        ),
    ]
}

// ---------------------------------------------------------------------------------------------
// Browser sessions

pub fn insert_browser_session(
    id_hash: &str,
    did: &str,
    display_name: Option<&str>,
    now_ms: i64,
    expires_at_ms: i64,
) -> Statement {
    Statement::new(
        "INSERT INTO browser_session (id_hash, did, display_name, created_at, expires_at) \
         VALUES (?1, ?2, ?3, ?4, ?5)",
        vec![
            id_hash.into(),
            did.into(),
            display_name.into(),
            now_ms.into(),
            expires_at_ms.into(),
        ],
    )
}

/// The signed-in account of a live browser session, with its handle.
pub fn get_browser_session(id_hash: &str, now_ms: i64) -> Statement {
    Statement::new(
        "SELECT b.did, a.handle, b.display_name, b.expires_at FROM browser_session AS b \
         LEFT JOIN account AS a ON a.did = b.did \
         WHERE b.id_hash = ?1 AND b.expires_at > ?2",
        vec![id_hash.into(), now_ms.into()],
    )
}

pub fn delete_browser_session(id_hash: &str) -> Statement {
    Statement::new(
        "DELETE FROM browser_session WHERE id_hash = ?1",
        vec![id_hash.into()],
    )
}

/// Signs an account out everywhere.
pub fn delete_browser_sessions_of(did: &str) -> Statement {
    Statement::new(
        "DELETE FROM browser_session WHERE did = ?1",
        vec![did.into()],
    )
}

/// A row of [`get_browser_session`].
#[derive(Debug, Clone, Deserialize)]
pub struct BrowserSessionRow {
    pub did: String,
    pub handle: Option<String>,
    pub display_name: Option<String>,
    pub expires_at: i64,
}

/// The length of a write-budget window.
pub const WRITE_WINDOW_MS: i64 = 60_000;

/// Counts one status write by `did` in the current one-minute window, moving the old count to
/// `prev_count` when a new window starts. Returns `window_start`, `count` (this write included)
/// and `prev_count`, for [`writes_in_last_minute`]. One statement, so concurrent writes cannot
/// both see the old count.
pub fn count_write(did: &str, now_ms: i64) -> Statement {
    let window = now_ms - now_ms.rem_euclid(WRITE_WINDOW_MS);
    Statement::new(
        "INSERT INTO write_budget (did, window_start, count, prev_count) VALUES (?1, ?2, 1, 0) \
         ON CONFLICT (did) DO UPDATE SET \
         prev_count = CASE WHEN write_budget.window_start = excluded.window_start \
                           THEN write_budget.prev_count \
                           WHEN write_budget.window_start = excluded.window_start - ?3 \
                           THEN write_budget.count ELSE 0 END, \
         count = CASE WHEN write_budget.window_start = excluded.window_start \
                      THEN write_budget.count + 1 ELSE 1 END, \
         window_start = excluded.window_start \
         RETURNING window_start, count, prev_count",
        vec![did.into(), window.into(), WRITE_WINDOW_MS.into()],
    )
}

/// What [`count_write`] returns.
#[derive(Debug, Clone, Copy, Deserialize)]
pub struct WriteCount {
    pub window_start: i64,
    pub count: i64,
    pub prev_count: i64,
}

/// The writes of the last minute, estimated from two fixed windows (a sliding-window counter):
/// the previous window's count weighted by the share of it still inside the last minute, plus the
/// current window's. A loop cannot get two budgets in by straddling a minute boundary.
pub fn writes_in_last_minute(counted: WriteCount, now_ms: i64) -> f64 {
    let into_window = (now_ms - counted.window_start).clamp(0, WRITE_WINDOW_MS) as f64;
    let overlap = 1.0 - into_window / WRITE_WINDOW_MS as f64;
    counted.prev_count as f64 * overlap + counted.count as f64
}

/// A cached identity lookup (`oauth::cache`), if it has not expired: one `value` column.
pub fn get_identity_cache(key: &str, now_ms: i64) -> Statement {
    Statement::new(
        "SELECT value FROM identity_cache WHERE key = ?1 AND expires_ms > ?2",
        vec![key.into(), now_ms.into()],
    )
}

/// Keeps an identity lookup until `expires_ms`, replacing an older one.
pub fn put_identity_cache(key: &str, value: &str, expires_ms: i64) -> Statement {
    Statement::new(
        "INSERT INTO identity_cache (key, value, expires_ms) VALUES (?1, ?2, ?3) \
         ON CONFLICT (key) DO UPDATE SET value = excluded.value, expires_ms = excluded.expires_ms",
        vec![key.into(), value.into(), expires_ms.into()],
    )
}

/// Housekeeping: expired authorizations, browser sessions and identity lookups.
pub fn purge_expired(now_ms: i64) -> Vec<Statement> {
    vec![
        Statement::new(
            "DELETE FROM oauth_state WHERE expires_at <= ?1",
            vec![now_ms.into()],
        ),
        Statement::new(
            "DELETE FROM browser_session WHERE expires_at <= ?1",
            vec![now_ms.into()],
        ),
        // A window still counts (as `prev_count`) during the next one.
        Statement::new(
            "DELETE FROM write_budget WHERE window_start < ?1",
            vec![(now_ms - 2 * WRITE_WINDOW_MS).into()],
        ),
        Statement::new(
            "DELETE FROM identity_cache WHERE expires_ms <= ?1",
            vec![now_ms.into()],
        ),
    ]
}

// ---------------------------------------------------------------------------------------------
// Health

/// Health probe, step 1: write a token into the single probe row.
/// Binds: `?1` token, `?2` unix milliseconds.
pub const HEALTH_PROBE_WRITE: &str =
    "INSERT INTO health_probe (id, token, at_ms) VALUES (1, ?1, ?2) \
     ON CONFLICT (id) DO UPDATE SET token = excluded.token, at_ms = excluded.at_ms";

/// Health probe, step 2 (same batch, so it reads step 1's write): read the token back.
pub const HEALTH_PROBE_READ: &str = "SELECT token, at_ms FROM health_probe WHERE id = 1";

/// The public `/health`'s question to D1: does it answer? (Reads no table.)
pub const HEALTH_PING: &str = "SELECT 1 AS ok";
