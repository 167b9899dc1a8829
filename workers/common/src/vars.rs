//! A worker's settings from its wrangler vars, read one way by all three workers: a var set to the
//! empty string counts as unset, and a number out of its range (or not a number) is logged and
//! the default used, so a typo in a config never takes a worker down.

use worker::Env;

/// The var's text, if it is set and not empty.
pub fn text(env: &Env, name: &str) -> Option<String> {
    env.var(name)
        .ok()
        .map(|v| v.to_string())
        .filter(|v| !v.is_empty())
}

/// The var's text, or `default`.
pub fn text_or(env: &Env, name: &str, default: &str) -> String {
    text(env, name).unwrap_or_else(|| default.to_owned())
}

/// The var as a whole number in `range`, or `default` (with a logged error when it is set to
/// something else).
pub fn number(env: &Env, name: &str, default: i64, range: std::ops::RangeInclusive<i64>) -> i64 {
    let Some(value) = text(env, name) else {
        return default;
    };
    match value.parse::<i64>() {
        Ok(n) if range.contains(&n) => n,
        _ => {
            tracing::error!(name, value = %domain::bounded(&value), ?range, default, "unusable var; using the default");
            default
        }
    }
}
