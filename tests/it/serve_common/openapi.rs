//! OpenAPI conformance: every request a fake forge takes is checked against the forge's
//! published API description.

use serde_json::Value;

use super::data;

/// Checks a JSON request body against the request schema of `method path` in the subset of
/// GitHub's OpenAPI description kept in tests/data/github/openapi-subset.json.
pub fn check_request_body(method: &str, path_template: &str, body: &Value) -> Result<(), String> {
    let spec: Value = serde_json::from_str(
        &std::fs::read_to_string(data("openapi-subset.json")).expect("subset"),
    )
    .expect("json");
    let schema = spec
        .pointer(&format!(
            "/paths/{}/{}/requestBody/content/application~1json/schema",
            path_template.replace('~', "~0").replace('/', "~1"),
            method.to_ascii_lowercase()
        ))
        .ok_or_else(|| format!("no request schema for {method} {path_template}"))?;
    validate(schema, body, "$")
}

/// Which operation of the subset a concrete request path is.
pub fn match_operation(path: &str) -> Option<&'static str> {
    let parts: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    match parts.as_slice() {
        ["repos", _, _, "statuses", _] => Some("/repos/{owner}/{repo}/statuses/{sha}"),
        ["repos", _, _, "collaborators", _, "permission"] => {
            Some("/repos/{owner}/{repo}/collaborators/{username}/permission")
        }
        ["app", "installations", _, "access_tokens"] => {
            Some("/app/installations/{installation_id}/access_tokens")
        }
        _ => None,
    }
}

/// The parts of JSON Schema (OpenAPI 3.0 flavour) GitHub's request schemas use here.
pub fn validate(schema: &Value, v: &Value, at: &str) -> Result<(), String> {
    if v.is_null() {
        return if schema.get("nullable") == Some(&Value::Bool(true)) {
            Ok(())
        } else {
            Err(format!("{at}: null is not allowed"))
        };
    }
    if let Some(t) = schema.get("type").and_then(Value::as_str) {
        let ok = match t {
            "object" => v.is_object(),
            "array" => v.is_array(),
            "string" => v.is_string(),
            "integer" => v.is_i64() || v.is_u64(),
            "number" => v.is_number(),
            "boolean" => v.is_boolean(),
            _ => true,
        };
        if !ok {
            return Err(format!("{at}: expected {t}, got {v}"));
        }
    }
    if let Some(e) = schema.get("enum").and_then(Value::as_array) {
        if !e.contains(v) {
            return Err(format!(
                "{at}: {v} is not one of {}",
                Value::Array(e.clone())
            ));
        }
    }
    if let Some(obj) = v.as_object() {
        let props = schema.get("properties").and_then(Value::as_object);
        for r in schema
            .get("required")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let r = r.as_str().unwrap_or_default();
            if !obj.contains_key(r) {
                return Err(format!("{at}: required field `{r}` is missing"));
            }
        }
        for (k, val) in obj {
            match props.and_then(|p| p.get(k)) {
                Some(s) => validate(s, val, &format!("{at}.{k}"))?,
                None if schema.get("additionalProperties") == Some(&Value::Bool(false))
                    || props.is_some() =>
                {
                    return Err(format!("{at}: field `{k}` is not in the schema"))
                }
                None => {}
            }
        }
    }
    if let (Some(items), Some(arr)) = (schema.get("items"), v.as_array()) {
        for (i, x) in arr.iter().enumerate() {
            validate(items, x, &format!("{at}[{i}]"))?;
        }
    }
    Ok(())
}
