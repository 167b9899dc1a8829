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

fn js_value(value: &Value) -> JsValue {
    match value {
        Value::Null => JsValue::NULL,
        Value::Integer(n) => JsValue::from_f64(*n as f64),
        Value::Text(text) => JsValue::from_str(text),
    }
}
