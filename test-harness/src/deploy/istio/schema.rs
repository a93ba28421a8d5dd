//! Structural OpenAPI v3 schema validation: the subset Kubernetes CRDs use, with Kubernetes'
//! semantics (objects are closed unless the schema preserves unknown fields).

use serde_json::{Map, Value as Json};

/// Validates `v` against `schema`; returns one message per violation (`path: reason`), empty when
/// valid. Unknown object fields are refused unless the schema node has
/// `x-kubernetes-preserve-unknown-fields: true` or `additionalProperties` (Kubernetes structural
/// schemas are closed); `format`, `description` and `x-kubernetes-validations` (CEL) are ignored.
pub fn validate_schema(schema: &Json, v: &Json, path: &str) -> Vec<String> {
    let mut errs = Vec::new();
    check(schema, v, path, true, &mut errs);
    errs
}

/// A value shortened for messages (60 bytes at most, cut at a character boundary).
pub fn short(v: &Json) -> String {
    let s = v.to_string();
    if s.len() > 60 {
        format!("{}…", &s[..s.floor_char_boundary(60)])
    } else {
        s
    }
}

fn type_name(v: &Json) -> &'static str {
    match v {
        Json::Null => "null",
        Json::Bool(_) => "boolean",
        Json::Number(n) if n.is_i64() || n.is_u64() => "integer",
        Json::Number(_) => "number",
        Json::String(_) => "string",
        Json::Array(_) => "array",
        Json::Object(_) => "object",
    }
}

fn type_matches(t: &str, v: &Json) -> bool {
    match t {
        "object" => v.is_object(),
        "array" => v.is_array(),
        "string" => v.is_string(),
        "boolean" => v.is_boolean(),
        "integer" => v.is_i64() || v.is_u64(),
        "number" => v.is_number(),
        _ => true,
    }
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

/// `structural` is false inside logical junctors, whose branches must not close objects.
fn check(s: &Json, v: &Json, path: &str, structural: bool, errs: &mut Vec<String>) {
    let at = if path.is_empty() { "(root)" } else { path };
    if v.is_null() {
        if s["nullable"] != true && s.get("type").is_some() {
            errs.push(format!("{at}: must not be null"));
        }
        return;
    }
    if !check_type(s, v, at, errs) {
        return;
    }
    if let Some(e) = s["enum"].as_array() {
        if !e.contains(v) {
            let allowed: Vec<String> = e.iter().map(short).collect();
            errs.push(format!(
                "{at}: must be one of [{}], got {}",
                allowed.join(", "),
                short(v)
            ));
        }
    }
    match v {
        Json::String(st) => check_string(s, st, at, errs),
        Json::Number(n) => check_number(s, n.as_f64().unwrap_or(f64::NAN), at, errs),
        Json::Array(items) => {
            check_count(s, at, items.len(), "Items", "items", errs);
            if let Some(is) = s.get("items") {
                for (i, item) in items.iter().enumerate() {
                    check(is, item, &format!("{path}[{i}]"), structural, errs);
                }
            }
        }
        Json::Object(obj) => check_object(s, obj, path, structural, errs),
        _ => {}
    }
    check_junctors(s, v, path, errs);
}

/// False when the type is wrong (then nothing else about the value is checked).
fn check_type(s: &Json, v: &Json, at: &str, errs: &mut Vec<String>) -> bool {
    if s["x-kubernetes-int-or-string"] == true {
        if !(v.is_string() || v.is_i64() || v.is_u64()) {
            errs.push(format!(
                "{at}: must be an integer or a string, got {}",
                type_name(v)
            ));
            return false;
        }
    } else if let Some(t) = s["type"].as_str() {
        if !type_matches(t, v) {
            errs.push(format!(
                "{at}: must be {t}, got {} {}",
                type_name(v),
                short(v)
            ));
            return false;
        }
    }
    true
}

fn check_string(s: &Json, st: &str, at: &str, errs: &mut Vec<String>) {
    let n = st.chars().count() as u64;
    if let Some(m) = s["maxLength"].as_u64() {
        if n > m {
            errs.push(format!("{at}: longer than {m} characters"));
        }
    }
    if let Some(m) = s["minLength"].as_u64() {
        if n < m {
            errs.push(format!("{at}: shorter than {m} characters"));
        }
    }
    if let Some(p) = s["pattern"].as_str() {
        match regex::Regex::new(p) {
            Ok(re) if re.is_match(st) => {}
            Ok(_) => errs.push(format!(
                "{at}: {} does not match pattern {p}",
                short(&Json::from(st))
            )),
            Err(e) => errs.push(format!("{at}: schema pattern {p} does not compile: {e}")),
        }
    }
}

fn check_number(s: &Json, x: f64, at: &str, errs: &mut Vec<String>) {
    if let Some(m) = s["maximum"].as_f64() {
        if x > m || (s["exclusiveMaximum"] == true && x == m) {
            errs.push(format!("{at}: {x} is above the maximum {m}"));
        }
    }
    if let Some(m) = s["minimum"].as_f64() {
        if x < m || (s["exclusiveMinimum"] == true && x == m) {
            errs.push(format!("{at}: {x} is below the minimum {m}"));
        }
    }
}

/// `max<What>` / `min<What>` (Items, Properties) against `n` members called `noun`.
fn check_count(s: &Json, at: &str, n: usize, what: &str, noun: &str, errs: &mut Vec<String>) {
    let n = n as u64;
    if let Some(m) = s[format!("max{what}")].as_u64() {
        if n > m {
            errs.push(format!("{at}: more than {m} {noun}"));
        }
    }
    if let Some(m) = s[format!("min{what}")].as_u64() {
        if n < m {
            errs.push(format!("{at}: fewer than {m} {noun}"));
        }
    }
}

fn check_object(
    s: &Json,
    obj: &Map<String, Json>,
    path: &str,
    structural: bool,
    errs: &mut Vec<String>,
) {
    let props = s["properties"].as_object();
    let additional = s.get("additionalProperties");
    let preserve = s["x-kubernetes-preserve-unknown-fields"] == true;
    for (k, child) in obj {
        let p = join(path, k);
        if let Some(ps) = props.and_then(|m| m.get(k)) {
            check(ps, child, &p, structural, errs);
        } else if let Some(a) = additional.filter(|a| a.is_object()) {
            check(a, child, &p, structural, errs);
        } else if additional == Some(&Json::Bool(false))
            || (structural && !preserve && additional != Some(&Json::Bool(true)))
        {
            let known: Vec<&str> = props
                .map(|m| m.keys().map(String::as_str).collect())
                .unwrap_or_default();
            let known = if known.is_empty() {
                "none".to_string()
            } else {
                known.join(", ")
            };
            errs.push(format!("{p}: unknown field `{k}` (known: {known})"));
        }
    }
    for r in s["required"].as_array().into_iter().flatten() {
        if let Some(r) = r.as_str() {
            if !obj.contains_key(r) {
                errs.push(format!("{}: required field missing", join(path, r)));
            }
        }
    }
    let at = if path.is_empty() { "(root)" } else { path };
    check_count(s, at, obj.len(), "Properties", "properties", errs);
}

/// Logical junctors: in structural schemas they only add value validations, so their branches
/// are evaluated without closing objects (pruning is decided by the structural part).
fn check_junctors(s: &Json, v: &Json, path: &str, errs: &mut Vec<String>) {
    let at = if path.is_empty() { "(root)" } else { path };
    let passes = |sub: &Json| {
        let mut e = Vec::new();
        check(sub, v, path, false, &mut e);
        e.is_empty()
    };
    // int-or-string nodes carry an anyOf that only documents the two types.
    if s["x-kubernetes-int-or-string"] != true {
        for sub in s["allOf"].as_array().into_iter().flatten() {
            check(sub, v, path, false, errs);
        }
        if let Some(any) = s["anyOf"].as_array() {
            if !any.iter().any(passes) {
                errs.push(format!("{at}: matches none of the anyOf alternatives"));
            }
        }
    }
    if let Some(one) = s["oneOf"].as_array() {
        let n = one.iter().filter(|sub| passes(sub)).count();
        if n != 1 {
            errs.push(format!(
                "{at}: must match exactly one oneOf alternative, matches {n}"
            ));
        }
    }
    if let Some(not) = s.get("not") {
        if passes(not) {
            errs.push(format!("{at}: matches a `not` schema"));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn schema() -> Json {
        serde_yaml::from_str(
            r#"
type: object
required: [url]
properties:
  url: {type: string, minLength: 1}
  sha256: {type: string, pattern: "(^$|^[a-f0-9]{64}$)"}
  mode: {type: string, enum: [CLIENT, SERVER]}
  priority: {type: integer, format: int32, nullable: true}
  rate: {type: number, minimum: 0, maximum: 100}
  name: {type: string, maxLength: 3}
  ports:
    type: array
    maxItems: 2
    items: {type: object, required: [number], properties: {number: {type: integer, minimum: 1, maximum: 65535}}}
  pluginConfig: {type: object, x-kubernetes-preserve-unknown-fields: true}
  labels: {type: object, additionalProperties: {type: string, maxLength: 5}}
  port: {anyOf: [{type: integer}, {type: string}], x-kubernetes-int-or-string: true}
  one:
    type: object
    properties: {a: {type: string}, b: {type: string}}
    oneOf:
    - not: {anyOf: [{required: [a]}, {required: [b]}]}
    - required: [a]
    - required: [b]
  empty: {type: object}
"#,
        )
        .unwrap()
    }

    #[test]
    fn structural_schema_table() {
        let s = schema();
        // (document, expected error substring or "" for valid)
        let rows: &[(&str, &str)] = &[
            (r#"{"url": "oci://x"}"#, ""),
            (r#"{}"#, "url: required field missing"),
            (r#"{"url": "oci://x", "bogus": 1}"#, "unknown field `bogus`"),
            (r#"{"url": 5}"#, "url: must be string, got integer"),
            (r#"{"url": ""}"#, "shorter than 1"),
            (r#"{"url": "x", "sha256": ""}"#, ""),
            (r#"{"url": "x", "sha256": "abc"}"#, "does not match pattern"),
            (
                r#"{"url": "x", "sha256": "ABCDEF0000000000000000000000000000000000000000000000000000000000"}"#,
                "does not match pattern",
            ),
            (r#"{"url": "x", "mode": "SERVER"}"#, ""),
            (r#"{"url": "x", "mode": "BOTH"}"#, "must be one of"),
            (r#"{"url": "x", "priority": null}"#, ""),
            (
                r#"{"url": "x", "priority": "high"}"#,
                "priority: must be integer",
            ),
            (
                r#"{"url": "x", "priority": 1.5}"#,
                "priority: must be integer",
            ),
            (r#"{"url": "x", "rate": 100}"#, ""),
            (r#"{"url": "x", "rate": 100.5}"#, "above the maximum"),
            (r#"{"url": "x", "rate": -1}"#, "below the minimum"),
            (r#"{"url": "x", "name": "abcd"}"#, "longer than 3"),
            (r#"{"url": "x", "ports": [{"number": 80}]}"#, ""),
            (
                r#"{"url": "x", "ports": [{"number": 0}]}"#,
                "ports[0].number: 0 is below",
            ),
            (
                r#"{"url": "x", "ports": [{"numbr": 80}]}"#,
                "ports[0].numbr: unknown field",
            ),
            (
                r#"{"url": "x", "ports": [{"number": 1}, {"number": 2}, {"number": 3}]}"#,
                "more than 2 items",
            ),
            (
                r#"{"url": "x", "ports": {"number": 1}}"#,
                "ports: must be array",
            ),
            (
                r#"{"url": "x", "pluginConfig": {"any": {"deep": [1, "x"]}}}"#,
                "",
            ),
            (
                r#"{"url": "x", "pluginConfig": "text"}"#,
                "pluginConfig: must be object",
            ),
            (r#"{"url": "x", "labels": {"app": "web"}}"#, ""),
            (
                r#"{"url": "x", "labels": {"app": 1}}"#,
                "labels.app: must be string",
            ),
            (
                r#"{"url": "x", "labels": {"app": "toolong"}}"#,
                "longer than 5",
            ),
            (r#"{"url": "x", "port": 8080}"#, ""),
            (r#"{"url": "x", "port": "http"}"#, ""),
            (r#"{"url": "x", "port": true}"#, "integer or a string"),
            (r#"{"url": "x", "one": {}}"#, ""),
            (r#"{"url": "x", "one": {"a": "1"}}"#, ""),
            (
                r#"{"url": "x", "one": {"a": "1", "b": "2"}}"#,
                "exactly one oneOf",
            ),
            (r#"{"url": "x", "one": {"c": "1"}}"#, "one.c: unknown field"),
            (r#"{"url": "x", "empty": {}}"#, ""),
            (
                r#"{"url": "x", "empty": {"k": 1}}"#,
                "empty.k: unknown field",
            ),
        ];
        for (doc, want) in rows {
            let v: Json = serde_json::from_str(doc).unwrap();
            let errs = validate_schema(&s, &v, "");
            if want.is_empty() {
                assert!(errs.is_empty(), "{doc}: unexpected errors {errs:?}");
            } else {
                assert!(
                    errs.iter().any(|e| e.contains(want)),
                    "{doc}: expected an error containing {want:?}, got {errs:?}"
                );
            }
        }
    }
}
