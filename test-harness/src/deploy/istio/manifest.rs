//! One Istio manifest document: the Kubernetes envelope (apiVersion, kind, metadata), the `spec`
//! against its CRD's schema, and the CEL rules.

use super::cel::cel_checks;
use super::crds::Crds;
use super::schema::{short, validate_schema};
use serde_json::Value as Json;

/// Kubernetes object name: a DNS-1123 subdomain (dot-separated labels of `[a-z0-9-]` that start
/// and end alphanumeric, 253 characters at most).
fn valid_name(s: &str) -> bool {
    let label_ok = |l: &str| {
        let alnum = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
        let bytes = l.as_bytes();
        match (bytes.first(), bytes.last()) {
            (Some(&f), Some(&z)) => {
                alnum(f) && alnum(z) && bytes.iter().all(|&b| alnum(b) || b == b'-')
            }
            _ => false,
        }
    };
    !s.is_empty() && s.len() <= 253 && s.split('.').all(label_ok)
}

fn check_metadata(doc: &Json, errs: &mut Vec<String>) {
    let Some(md) = doc["metadata"].as_object() else {
        errs.push("metadata: required object missing".into());
        return;
    };
    for (k, v) in md {
        match k.as_str() {
            "name" | "namespace" => match v.as_str() {
                Some(s) if valid_name(s) => {}
                _ => errs.push(format!(
                    "metadata.{k}: must be a DNS-1123 name, got {}",
                    short(v)
                )),
            },
            "labels" | "annotations" => {
                if !v.as_object().is_some_and(|m| m.values().all(Json::is_string)) {
                    errs.push(format!("metadata.{k}: must map strings to strings"));
                }
            }
            other => errs.push(format!(
                "metadata.{other}: unknown or server-managed field (known: name, namespace, labels, annotations)"
            )),
        }
    }
    if md.get("name").is_none() {
        errs.push("metadata.name: required field missing".into());
    }
}

/// All problems of one manifest document (empty = valid).
pub fn validate_manifest(crds: &Crds, doc: &Json) -> Vec<String> {
    let mut errs = Vec::new();
    let (Some(api), Some(kind)) = (doc["apiVersion"].as_str(), doc["kind"].as_str()) else {
        return vec!["apiVersion and kind must be strings".into()];
    };
    let Some(crd) = crds.find(api, kind) else {
        let known: Vec<String> = crds
            .versions
            .iter()
            .filter(|v| v.kind == kind)
            .map(|v| format!("{}/{}", v.group, v.version))
            .collect();
        return vec![format!(
            "{api} {kind}: no served CRD version (served for {kind}: {})",
            if known.is_empty() {
                "none".into()
            } else {
                known.join(", ")
            }
        )];
    };
    for k in doc.as_object().into_iter().flatten().map(|(k, _)| k) {
        if !["apiVersion", "kind", "metadata", "spec"].contains(&k.as_str()) {
            errs.push(format!(
                "{k}: unknown top-level field (known: apiVersion, kind, metadata, spec)"
            ));
        }
    }
    check_metadata(doc, &mut errs);
    for r in crd.schema["required"].as_array().into_iter().flatten() {
        if let Some(r) = r.as_str() {
            if doc.get(r).is_none() {
                errs.push(format!("{r}: required field missing"));
            }
        }
    }
    if let Some(spec) = doc.get("spec") {
        errs.extend(validate_schema(
            &crd.schema["properties"]["spec"],
            spec,
            "spec",
        ));
        errs.extend(cel_checks(kind, spec));
    }
    errs
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn dns1123_names() {
        for ok in ["m", "a-b", "a.b-c.d", "0x", "meshtrace-inbound"] {
            assert!(valid_name(ok), "{ok}");
        }
        for bad in [
            "",
            "-a",
            "a-",
            "A",
            "a_b",
            "a..b",
            ".a",
            "a.",
            &"a".repeat(254),
        ] {
            assert!(!valid_name(bad), "{bad}");
        }
    }

    fn mini_crds() -> Crds {
        Crds::parse(
            r#"
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
spec:
  group: extensions.istio.io
  names: {kind: WasmPlugin}
  versions:
  - name: v1alpha1
    served: true
    schema:
      openAPIV3Schema:
        type: object
        required: [spec]
        properties:
          spec:
            type: object
            required: [url]
            properties:
              url: {type: string}
              sha256: {type: string}
              failStrategy: {type: string}
              pluginConfig: {type: object, x-kubernetes-preserve-unknown-fields: true}
  - name: v1beta9
    served: false
"#,
        )
        .unwrap()
    }

    #[test]
    fn manifest_envelope_table() {
        let crds = mini_crds();
        let ok_spec = json!({"url": "oci://r/m:1", "sha256": "b".repeat(64), "failStrategy": "FAIL_OPEN", "pluginConfig": {"x": 1}});
        let base = json!({"apiVersion": "extensions.istio.io/v1alpha1", "kind": "WasmPlugin",
                          "metadata": {"name": "m", "namespace": "default"}, "spec": ok_spec});
        let with = |k: &str, v: Json| {
            let mut d = base.clone();
            d[k] = v;
            d
        };
        let rows: Vec<(Json, &str)> = vec![
            (base.clone(), ""),
            (
                with("apiVersion", json!("extensions.istio.io/v1beta9")),
                "no served CRD version",
            ),
            (with("kind", json!("WasmPlugins")), "no served CRD version"),
            (
                with("metadata", json!({"namespace": "default"})),
                "metadata.name: required",
            ),
            (with("metadata", json!({"name": "Bad_Name"})), "DNS-1123"),
            (
                with("metadata", json!({"name": "m", "uid": "x"})),
                "metadata.uid",
            ),
            (with("status", json!({})), "status: unknown top-level"),
            (
                with(
                    "spec",
                    json!({"sha256": "b".repeat(64), "failStrategy": "FAIL_OPEN", "pluginConfig": {}}),
                ),
                "spec.url: required",
            ),
            (
                with(
                    "spec",
                    json!({"url": "oci://r/m:1", "sha256": "b".repeat(64), "failStrategy": "FAIL_OPEN", "pluginConfig": {}, "bogus": 1}),
                ),
                "unknown field `bogus`",
            ),
        ];
        let mut no_spec = base.clone();
        no_spec.as_object_mut().unwrap().remove("spec");
        let rows = rows.into_iter().chain([(no_spec, "spec: required")]);
        for (doc, want) in rows {
            let errs = validate_manifest(&crds, &doc);
            if want.is_empty() {
                assert!(errs.is_empty(), "{doc}: unexpected {errs:?}");
            } else {
                assert!(
                    errs.iter().any(|e| e.contains(want)),
                    "{doc}: expected {want:?}, got {errs:?}"
                );
            }
        }
    }
}
