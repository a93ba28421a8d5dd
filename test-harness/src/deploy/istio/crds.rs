//! Istio's CRDs (`customresourcedefinitions.gen.yaml` of `istio.io/api`): the served versions and
//! their `openAPIV3Schema`.

use serde::Deserialize;
use serde_json::Value as Json;
use std::path::Path;

/// One served version of one CRD.
#[derive(Debug, Clone)]
pub struct CrdVersion {
    pub group: String,
    pub kind: String,
    pub version: String,
    /// `schema.openAPIV3Schema`.
    pub schema: Json,
}

#[derive(Debug, Clone, Default)]
pub struct Crds {
    pub versions: Vec<CrdVersion>,
}

/// Every document of a multi-document YAML text, as JSON values (empty documents skipped).
pub fn yaml_docs(text: &str) -> Result<Vec<Json>, String> {
    let mut out = Vec::new();
    for (i, d) in serde_yaml::Deserializer::from_str(text).enumerate() {
        let v = Json::deserialize(d).map_err(|e| format!("YAML document {}: {e}", i + 1))?;
        if !v.is_null() {
            out.push(v);
        }
    }
    Ok(out)
}

impl Crds {
    pub fn parse(text: &str) -> Result<Crds, String> {
        let mut c = Crds::default();
        for d in yaml_docs(text)? {
            if d["kind"] != "CustomResourceDefinition" {
                continue;
            }
            let spec = &d["spec"];
            let group = spec["group"].as_str().unwrap_or_default().to_string();
            let kind = spec["names"]["kind"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            for v in spec["versions"].as_array().into_iter().flatten() {
                if v["served"] != true {
                    continue;
                }
                c.versions.push(CrdVersion {
                    group: group.clone(),
                    kind: kind.clone(),
                    version: v["name"].as_str().unwrap_or_default().to_string(),
                    schema: v["schema"]["openAPIV3Schema"].clone(),
                });
            }
        }
        if c.versions.is_empty() {
            return Err("no CustomResourceDefinition with a served version found".into());
        }
        Ok(c)
    }

    pub fn load(path: &Path) -> Result<Crds, String> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            format!(
                "cannot read Istio CRDs {}: {e} (run `make istio-crds`, which downloads istio.io/api at the Makefile's ISTIO_API_VERSION and copies its kubernetes/customresourcedefinitions.gen.yaml, or pass --crds FILE)",
                path.display()
            )
        })?;
        Crds::parse(&text).map_err(|e| format!("{}: {e}", path.display()))
    }

    pub fn find(&self, api_version: &str, kind: &str) -> Option<&CrdVersion> {
        let (group, version) = api_version.split_once('/')?;
        self.versions
            .iter()
            .find(|v| v.group == group && v.version == version && v.kind == kind)
    }
}
