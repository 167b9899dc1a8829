//! Running `domain::sql` statements on D1: the domain builds SQL and parameters as plain data;
//! this binds them.

use domain::sql::{Statement, Value};
use worker::wasm_bindgen::JsValue;
use worker::{D1Database, D1PreparedStatement, Result};

/// A prepared D1 statement for `statement`.
pub fn prepare(db: &D1Database, statement: &Statement) -> Result<D1PreparedStatement> {
    let params: Vec<JsValue> = statement.params.iter().map(js_value).collect();
    db.prepare(statement.sql.as_ref()).bind(&params)
}

/// Runs `statement` and returns its rows.
pub async fn rows<T: serde::de::DeserializeOwned>(
    db: &D1Database,
    statement: &Statement,
) -> Result<Vec<T>> {
    let result = prepare(db, statement)?.all().await?;
    crate::usage::d1(&result);
    result.results()
}

/// Runs `statements` as one batch (one transaction) and returns each one's rows. No statements
/// is no call: D1 refuses an empty batch ("No SQL statements detected"), and a builder with no
/// rows to write (`domain::sql`'s multi-row inserts) gives none.
pub async fn batch(db: &D1Database, statements: &[Statement]) -> Result<Vec<worker::D1Result>> {
    if statements.is_empty() {
        return Ok(Vec::new());
    }
    let prepared = statements
        .iter()
        .map(|s| prepare(db, s))
        .collect::<Result<Vec<_>>>()?;
    let results = db.batch(prepared).await?;
    results.iter().for_each(crate::usage::d1);
    Ok(results)
}

/// Runs `statements` as one batch (one transaction), like [`batch`], and returns each one's rows as
/// JSON values: the runtime writes the whole answer as one JSON text and Rust reads that, where
/// `D1Result::results` walks every row's every value across the JavaScript boundary (a catch-up
/// batch returns hundreds of rows of ten values).
pub async fn batch_rows(db: &D1Database, statements: &[Statement]) -> Result<Answers> {
    use worker::js_sys::{Array, Function, Promise, Reflect, JSON};
    use worker::wasm_bindgen::JsCast;
    if statements.is_empty() {
        return Ok(Answers::default());
    }
    let prepared = Array::new();
    for statement in statements {
        prepared.push(prepare(db, statement)?.inner());
    }
    let run: Function = Reflect::get(db.as_ref(), &"batch".into())?.dyn_into()?;
    let promise: Promise = run.call1(db.as_ref(), &prepared)?.dyn_into()?;
    let answer = worker::wasm_bindgen_futures::JsFuture::from(promise)
        .await
        .map_err(d1_error)?;
    let text = JSON::stringify(&answer)?.as_string().unwrap_or_default();
    let results: Vec<BatchResult> = serde_json::from_str(&text)
        .map_err(|e| worker::Error::RustError(format!("D1's answer: {e}")))?;
    let mut answers = Answers::default();
    for result in results {
        crate::usage::d1_rows(result.meta.rows_read, result.meta.rows_written);
        answers.rows_written += result.meta.rows_written;
        answers.rows.push(result.results);
    }
    Ok(answers)
}

/// What [`batch_rows`] read back.
#[derive(Debug, Default)]
pub struct Answers {
    /// Each statement's rows, in order.
    pub rows: Vec<Vec<serde_json::Value>>,
    /// The rows the batch wrote, as D1 counts them.
    pub rows_written: u64,
}

/// One statement's answer in a batch, as the runtime writes it.
#[derive(serde::Deserialize)]
struct BatchResult {
    #[serde(default)]
    results: Vec<serde_json::Value>,
    #[serde(default)]
    meta: BatchMeta,
}

#[derive(serde::Deserialize, Default)]
struct BatchMeta {
    #[serde(default)]
    rows_read: u64,
    #[serde(default)]
    rows_written: u64,
}

/// A failed batch as an error that says D1 and its cause, as `D1Database::batch` says it.
fn d1_error(error: JsValue) -> worker::Error {
    let message = error_text(&error);
    worker::Error::RustError(format!("D1: {message}"))
}

fn js_value(value: &Value) -> JsValue {
    match value {
        Value::Null => JsValue::NULL,
        Value::Integer(n) => JsValue::from_f64(*n as f64),
        Value::Text(text) => JsValue::from_str(text),
    }
}

/// What a thrown JavaScript value says: an error's message (and its cause's, D1 puts the SQLite
/// error there), or the value itself.
fn error_text(error: &JsValue) -> String {
    use worker::js_sys::Reflect;
    let field = |value: &JsValue, name: &str| {
        Reflect::get(value, &name.into())
            .ok()
            .and_then(|v| v.as_string())
    };
    let message = field(error, "message").unwrap_or_else(|| format!("{error:?}"));
    match Reflect::get(error, &"cause".into())
        .ok()
        .and_then(|cause| field(&cause, "message"))
    {
        Some(cause) if cause != message => format!("{message} ({cause})"),
        _ => message,
    }
}
