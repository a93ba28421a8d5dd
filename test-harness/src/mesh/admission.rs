//! The CRDs' own validation, run by the real kube-apiserver: every shipped manifest, unedited, is
//! accepted by a server-side dry run (schema + every `x-kubernetes-validations` CEL rule, with
//! Kubernetes' CEL libraries such as `isURL`/`url()`), and each control that breaks one rule is
//! refused with the CRD's message. Where `deploy::istio::cel` re-implements a rule for the quick
//! check without Kubernetes, it must refuse the same control: the hand-written rules are held to
//! the real ones here.

use super::cases::line;
use super::e2e::Mesh;
use crate::deploy::istio::cel::cel_checks;
use crate::deploy::istio::yaml_docs;
use serde_json::{json, Value};

/// A control: a shipped document with one edit, and the CRD message that must refuse it.
struct Control {
    what: &'static str,
    file: &'static str,
    edit: fn(&mut Value),
    message: &'static str,
    /// `deploy::istio::cel` implements this rule (so it must refuse the control too).
    hand_rule: bool,
}

const CONTROLS: [Control; 5] = [
    Control {
        what: "TrafficExtension with wasm and lua",
        file: "trafficextension-gateway.yaml",
        edit: |d| d["spec"]["lua"] = json!({"inlineCode": "function envoy_on_request(h) end"}),
        message: "exactly one of wasm or lua must be set",
        hand_rule: true,
    },
    Control {
        what: "TrafficExtension with neither wasm nor lua",
        file: "trafficextension-gateway.yaml",
        edit: |d| {
            if let Some(s) = d["spec"].as_object_mut() {
                s.remove("wasm");
            }
        },
        message: "exactly one of wasm or lua must be set",
        hand_rule: true,
    },
    Control {
        what: "TrafficExtension with selector and targetRefs",
        file: "trafficextension-gateway.yaml",
        edit: |d| {
            d["spec"]["targetRefs"] =
                json!([{"kind": "Gateway", "group": "gateway.networking.k8s.io", "name": "g"}])
        },
        message: "only one of targetRefs or selector can be set",
        hand_rule: true,
    },
    Control {
        what: "TrafficExtension targetRef in another namespace",
        file: "trafficextension-gateway.yaml",
        edit: |d| {
            if let Some(s) = d["spec"].as_object_mut() {
                s.remove("selector");
            }
            d["spec"]["targetRefs"] = json!([{"kind": "Gateway", "group": "gateway.networking.k8s.io", "name": "g", "namespace": "other"}]);
        },
        message: "cross namespace referencing is not currently supported",
        hand_rule: true,
    },
    Control {
        what: "TrafficExtension url with an ftp:// scheme",
        file: "trafficextension-gateway.yaml",
        edit: |d| d["spec"]["wasm"]["url"] = json!("ftp://registry.example.com/meshtrace.wasm"),
        message: "url must have schema one of [http, https, file, oci]",
        hand_rule: false,
    },
];

fn dry_run(mesh: &Mesh, yaml: &str) -> Result<String, String> {
    mesh.kube.kubectl(
        &["apply", "--server-side", "--dry-run=server", "-f", "-"],
        Some(yaml),
    )
}

fn first_doc(mesh: &Mesh, file: &str) -> Result<Value, String> {
    let text = std::fs::read_to_string(mesh.repo.join("istio").join(file))
        .map_err(|e| format!("{file}: {e}"))?;
    yaml_docs(&text)
        .map_err(|e| format!("{file}: {e}"))?
        .into_iter()
        .next()
        .ok_or_else(|| format!("{file}: no document"))
}

/// The case (see the module doc).
pub fn crd_rules(mesh: &Mesh) -> bool {
    println!(
        "== case 1c: every shipped manifest through kube-apiserver's own CRD validation (dry run)"
    );
    let mut ok = true;
    let mut files: Vec<_> = std::fs::read_dir(mesh.repo.join("istio"))
        .map(|d| d.filter_map(Result::ok).map(|e| e.path()).collect())
        .unwrap_or_default();
    files.retain(|p| p.extension().is_some_and(|x| x == "yaml"));
    files.sort();
    for f in &files {
        let r = std::fs::read_to_string(f)
            .map_err(|e| e.to_string())
            .and_then(|t| dry_run(mesh, &t));
        ok &= line(
            r.is_ok(),
            &format!(
                "istio/{} accepted as shipped",
                f.display().to_string().rsplit('/').next().unwrap_or("?")
            ),
            &r.map(|o| o.trim().replace('\n', "; "))
                .unwrap_or_else(|e| e),
        );
    }
    for c in &CONTROLS {
        let doc = match first_doc(mesh, c.file) {
            Ok(mut d) => {
                (c.edit)(&mut d);
                d
            }
            Err(e) => {
                ok &= line(false, c.what, &e);
                continue;
            }
        };
        let yaml = serde_yaml::to_string(&doc).unwrap_or_default();
        let refused = match dry_run(mesh, &yaml) {
            Ok(out) => Err(format!("accepted: {}", out.trim())),
            Err(e) if e.contains(c.message) => Ok(e),
            Err(e) => Err(format!("refused for another reason: {e}")),
        };
        let reason = refused
            .as_ref()
            .map(|e| {
                e.lines()
                    .find(|l| l.contains(c.message))
                    .unwrap_or("")
                    .trim()
                    .to_string()
            })
            .unwrap_or_else(|e| e.clone());
        ok &= line(
            refused.is_ok(),
            &format!("{}: kube-apiserver refuses with \"{}\"", c.what, c.message),
            &reason,
        );
        if c.hand_rule {
            let kind = doc["kind"].as_str().unwrap_or_default();
            let hand = cel_checks(kind, &doc["spec"]);
            ok &= line(
                !hand.is_empty(),
                &format!(
                    "{}: the hand-written rules (istio-validate --no-envoy) refuse it too",
                    c.what
                ),
                &hand.join("; "),
            );
        }
    }
    ok
}
