//! The Rust side and the published JSON document must agree: every constraint the document states
//! is the one the Rust code enforces.

use lexicon::*;
use serde_json::Value;

fn document() -> Value {
    serde_json::from_str(STATUS_LEXICON_JSON).expect("the lexicon document is JSON")
}

#[test]
fn document_and_constants_agree() {
    let doc = document();
    assert_eq!(doc["lexicon"], 1);
    assert_eq!(doc["id"], STATUS_NSID);
    let main = &doc["defs"]["main"];
    assert_eq!(main["type"], "record");
    assert_eq!(main["key"], STATUS_RECORD_KEY);
    let record = &main["record"];
    assert_eq!(record["type"], "object");
    let status = &record["properties"]["status"];
    assert_eq!(status["type"], "string");
    assert_eq!(status["minLength"], STATUS_MIN_BYTES);
    assert_eq!(status["maxLength"], STATUS_MAX_BYTES);
    assert_eq!(status["maxGraphemes"], STATUS_MAX_GRAPHEMES);
    let created_at = &record["properties"]["createdAt"];
    assert_eq!(created_at["type"], "string");
    assert_eq!(created_at["format"], "datetime");
}

#[test]
fn rust_type_has_exactly_the_documented_properties() {
    let doc = document();
    let record = &doc["defs"]["main"]["record"];
    let mut documented: Vec<&str> = record["properties"]
        .as_object()
        .expect("properties")
        .keys()
        .map(String::as_str)
        .collect();
    documented.sort();
    let mut required: Vec<&str> = record["required"]
        .as_array()
        .expect("required")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    required.sort();

    let sample = StatusRecord::new(
        StatusText::new("👍").unwrap(),
        CreatedAt::parse("2026-11-24T00:00:00Z").unwrap(),
    );
    let json: Value = serde_json::from_str(&sample.to_json()).unwrap();
    assert_eq!(json["$type"], STATUS_NSID);
    let mut serialized: Vec<&str> = json
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .filter(|k| *k != "$type")
        .collect();
    serialized.sort();
    assert_eq!(
        serialized, documented,
        "Rust fields vs documented properties"
    );
    // Every field of the Rust type is required (none is an Option), as the document says.
    assert_eq!(required, documented);
    // And dropping any required one fails.
    for field in &required {
        let mut partial = json.clone();
        partial.as_object_mut().unwrap().remove(*field);
        assert!(
            StatusRecord::from_json(&partial.to_string()).is_err(),
            "{field} is required"
        );
    }
}
