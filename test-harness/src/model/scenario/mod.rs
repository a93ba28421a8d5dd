//! Scenario file schema (YAML). See test-harness/README.md for the documented form.
//!
//! `setup` holds what a scenario starts and sends (Envoys, upstreams, the fake collector,
//! requests), `expectations` what it expects, `validate` the cross-reference checks run at load.

mod expectations;
mod setup;
mod validate;

pub use expectations::*;
pub use setup::*;

use serde::Deserialize;
use std::collections::BTreeSet;
use std::path::Path;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    pub name: String,
    #[serde(default)]
    pub description: String,
    pub envoys: Vec<EnvoySpec>,
    #[serde(default)]
    pub upstreams: Vec<UpstreamSpec>,
    #[serde(default)]
    pub collector: CollectorSpec,
    #[serde(default)]
    pub requests: Vec<RequestSpec>,
    /// Quiescence timeout (default 15000 ms).
    #[serde(default)]
    pub quiescence_timeout_ms: Option<u64>,
    #[serde(default)]
    pub expect: Expect,
    /// Run a real collector for this scenario and point every Envoy's `zipkin` cluster at it.
    #[serde(default)]
    pub real_collector: Option<RealCollectorKind>,
}

/// A real collector the harness can start (see `collectors.rs`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RealCollectorKind {
    /// Jaeger v2 (OTLP/HTTP and Zipkin receivers, in-memory storage, query API).
    Jaeger,
    /// Zipkin server (in-memory storage).
    Zipkin,
}

impl RealCollectorKind {
    pub fn name(self) -> &'static str {
        match self {
            RealCollectorKind::Jaeger => "jaeger",
            RealCollectorKind::Zipkin => "zipkin",
        }
    }
}

impl Scenario {
    pub fn from_yaml(text: &str) -> Result<Scenario, String> {
        let sc: Scenario = serde_yaml::from_str(text).map_err(|e| e.to_string())?;
        sc.validate()?;
        Ok(sc)
    }

    pub fn load(path: &Path) -> Result<Scenario, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        Scenario::from_yaml(&text).map_err(|e| format!("{}: {e}", path.display()))
    }

    pub fn envoy(&self, name: &str) -> Option<&EnvoySpec> {
        self.envoys.iter().find(|e| e.name == name)
    }

    /// The upstream name the envoy's `app` cluster points at (None when unreachable/absent).
    pub fn upstream_of(&self, envoy: &EnvoySpec) -> Option<String> {
        if envoy.upstream_unreachable
            || envoy.upstream_envoy.is_some()
            || self.relayed_by(&envoy.name).is_some()
        {
            return None;
        }
        if let Some(u) = &envoy.upstream {
            return Some(u.clone());
        }
        if self.upstreams.len() == 1 {
            return Some(self.upstreams[0].name.clone());
        }
        None
    }

    /// The Envoy whose exports `relay` forwards (its `collector_via` names `relay`).
    pub fn relayed_by(&self, relay: &str) -> Option<&EnvoySpec> {
        self.envoys
            .iter()
            .find(|e| e.collector_via.as_deref() == Some(relay))
    }

    /// The Envoys `e` must start after: its relay (`collector_via`) and its `upstream_envoy`.
    pub fn start_deps<'a>(&self, e: &'a EnvoySpec) -> Vec<&'a str> {
        e.collector_via
            .iter()
            .chain(e.upstream_envoy.iter())
            .map(String::as_str)
            .collect()
    }

    /// Start order in waves: every Envoy starts after the Envoys it depends on. Err on a cycle.
    pub fn start_waves(&self) -> Result<Vec<Vec<&EnvoySpec>>, String> {
        let mut done: BTreeSet<&str> = BTreeSet::new();
        let mut waves = Vec::new();
        while done.len() < self.envoys.len() {
            let wave: Vec<&EnvoySpec> = self
                .envoys
                .iter()
                .filter(|e| !done.contains(e.name.as_str()))
                .filter(|e| {
                    self.start_deps(e)
                        .iter()
                        .all(|d| done.contains(d) || self.envoy(d).is_none())
                })
                .collect();
            if wave.is_empty() {
                return Err("envoys: collector_via/upstream_envoy form a cycle".to_string());
            }
            done.extend(wave.iter().map(|e| e.name.as_str()));
            waves.push(wave);
        }
        Ok(waves)
    }
}

#[cfg(test)]
mod tests;
