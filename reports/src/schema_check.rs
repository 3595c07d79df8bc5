//! A small validator for the subset of JSON Schema that `results.schema.json` uses (`type`,
//! `required`, `properties`, `additionalProperties`, `items`, `enum`, `minimum`, `$ref` to
//! `#/$defs/...`). It lets tests and `harness` check a results file against the committed
//! schema without a heavyweight dependency.

use serde_json::Value;

/// The committed JSON Schema of `results.json`.
pub const RESULTS_SCHEMA: &str = include_str!("../results.schema.json");

/// Validate `doc` against `schema`; returns every violation as `path: problem`.
pub fn validate(schema: &Value, doc: &Value) -> Vec<String> {
    let mut errors = Vec::new();
    check(schema, schema, doc, "$", &mut errors);
    errors
}

fn type_matches(t: &str, v: &Value) -> bool {
    match t {
        "object" => v.is_object(),
        "array" => v.is_array(),
        "string" => v.is_string(),
        "number" => v.is_number(),
        "integer" => v.as_u64().is_some() || v.as_i64().is_some(),
        "boolean" => v.is_boolean(),
        "null" => v.is_null(),
        _ => false,
    }
}

fn check(root: &Value, schema: &Value, doc: &Value, path: &str, errors: &mut Vec<String>) {
    if let Some(r) = schema.get("$ref").and_then(Value::as_str) {
        let target = r
            .strip_prefix("#/")
            .map(|p| p.split('/').fold(root, |node, key| &node[key]));
        match target {
            Some(t) if !t.is_null() => check(root, t, doc, path, errors),
            _ => errors.push(format!("{path}: unresolvable $ref {r}")),
        }
        return;
    }
    if let Some(t) = schema.get("type") {
        let ok = match t {
            Value::String(s) => type_matches(s, doc),
            Value::Array(ts) => ts
                .iter()
                .filter_map(Value::as_str)
                .any(|s| type_matches(s, doc)),
            _ => true,
        };
        if !ok {
            errors.push(format!("{path}: expected type {t}, found {doc}"));
            return;
        }
    }
    if let Some(options) = schema.get("enum").and_then(Value::as_array) {
        if !options.contains(doc) {
            errors.push(format!("{path}: {doc} is not one of {options:?}"));
        }
    }
    if let (Some(min), Some(v)) = (schema.get("minimum").and_then(Value::as_f64), doc.as_f64()) {
        if v < min {
            errors.push(format!("{path}: {v} is below the minimum {min}"));
        }
    }
    if let Some(obj) = doc.as_object() {
        if let Some(req) = schema.get("required").and_then(Value::as_array) {
            for key in req.iter().filter_map(Value::as_str) {
                if !obj.contains_key(key) {
                    errors.push(format!("{path}: missing required key '{key}'"));
                }
            }
        }
        let props = schema.get("properties").and_then(Value::as_object);
        for (key, value) in obj {
            let child = format!("{path}.{key}");
            match (
                props.and_then(|p| p.get(key)),
                schema.get("additionalProperties"),
            ) {
                (Some(s), _) => check(root, s, value, &child, errors),
                (None, Some(Value::Bool(false))) => {
                    errors.push(format!("{path}: unexpected key '{key}'"))
                }
                (None, Some(s)) if s.is_object() => check(root, s, value, &child, errors),
                _ => {}
            }
        }
    }
    if let (Some(items), Some(arr)) = (schema.get("items"), doc.as_array()) {
        for (i, v) in arr.iter().enumerate() {
            check(root, items, v, &format!("{path}[{i}]"), errors);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn schema() -> Value {
        serde_json::from_str(RESULTS_SCHEMA).expect("results.schema.json is valid JSON")
    }

    #[test]
    fn sample_results_match_the_committed_schema() {
        let doc = serde_json::to_value(crate::schema::tests::sample()).unwrap();
        let errors = validate(&schema(), &doc);
        assert!(errors.is_empty(), "{errors:#?}");
    }

    #[test]
    fn schema_version_in_schema_matches_code() {
        let s = schema();
        assert_eq!(
            s["properties"]["schema_version"]["enum"][0],
            Value::from(crate::SCHEMA_VERSION)
        );
        let mut listed: Vec<u64> = s["properties"]["schema_version"]["enum"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap())
            .collect();
        listed.sort();
        let readable: Vec<u64> = crate::schema::READABLE_SCHEMA_VERSIONS
            .iter()
            .map(|&v| v.into())
            .collect();
        assert_eq!(listed, readable);
    }

    #[test]
    fn results_of_several_students_match_the_committed_schema() {
        let r = crate::schema::tests::several_students();
        let doc = serde_json::to_value(&r).unwrap();
        let errors = validate(&schema(), &doc);
        assert!(errors.is_empty(), "{errors:#?}");
        // The schema checks what an extra student holds, not just that it is an object.
        let mut bad = doc.clone();
        bad["more_students"][0]
            .as_object_mut()
            .unwrap()
            .remove("dir");
        let all = validate(&schema(), &bad).join("\n");
        assert!(all.contains("missing required key 'dir'"), "{all}");
    }

    #[test]
    fn violations_are_reported_with_paths() {
        let mut doc = serde_json::to_value(crate::schema::tests::sample()).unwrap();
        doc["tasks"]["stsb"]["teacher"]["mode"] = Value::from("guess");
        doc["tasks"]["sst2"]
            .as_object_mut()
            .unwrap()
            .remove("n_examples");
        doc["schema_version"] = Value::from(99);
        let errors = validate(&schema(), &doc);
        let all = errors.join("\n");
        assert!(
            all.contains("$.tasks.stsb.teacher.mode: \"guess\" is not one of"),
            "{all}"
        );
        assert!(
            all.contains("$.tasks.sst2: missing required key 'n_examples'"),
            "{all}"
        );
        assert!(all.contains("$.schema_version: 99 is not one of"), "{all}");
    }
}
