//! Cross-reference checks of a parsed scenario, run when it is loaded: every name it uses exists
//! and no two settings contradict each other. Each check pushes a message naming the offending
//! part; all messages are reported at once.

use super::setup::default_collector_status;
use super::{CollectorMode, CollectorSpec, RealCollectorKind, Scenario, SpanMatcher};
use std::collections::BTreeSet;

impl Scenario {
    /// Cross-reference checks.
    pub fn validate(&self) -> Result<(), String> {
        let mut errs = Vec::new();
        self.validate_names(&mut errs);
        self.validate_envoys(&mut errs);
        self.validate_upstream_envoys(&mut errs);
        self.validate_real_collector(&mut errs);
        self.validate_collector(&mut errs);
        self.validate_load(&mut errs);
        self.validate_relays(&mut errs);
        self.validate_upstreams(&mut errs);
        self.validate_requests(&mut errs);
        self.validate_expect(&mut errs);
        if errs.is_empty() {
            Ok(())
        } else {
            Err(errs.join("; "))
        }
    }

    fn envoy_names(&self) -> BTreeSet<&str> {
        self.envoys.iter().map(|e| e.name.as_str()).collect()
    }

    fn upstream_names(&self) -> BTreeSet<&str> {
        self.upstreams.iter().map(|u| u.name.as_str()).collect()
    }

    fn validate_names(&self, errs: &mut Vec<String>) {
        if self.envoy_names().len() != self.envoys.len() {
            errs.push("duplicate envoy names".to_string());
        }
        if self.upstream_names().len() != self.upstreams.len() {
            errs.push("duplicate upstream names".to_string());
        }
        if self.envoys.is_empty() {
            errs.push("no envoys".to_string());
        }
    }

    /// Each Envoy's `app` upstream and plugin configuration.
    fn validate_envoys(&self, errs: &mut Vec<String>) {
        let up_names = self.upstream_names();
        for e in &self.envoys {
            if let Some(u) = &e.upstream {
                if !up_names.contains(u.as_str()) {
                    errs.push(format!("envoy {}: unknown upstream {u}", e.name));
                }
                if e.upstream_unreachable {
                    errs.push(format!(
                        "envoy {}: upstream and upstream_unreachable are exclusive",
                        e.name
                    ));
                }
            } else if !e.upstream_unreachable
                && !e.expect_start_failure
                && e.upstream_envoy.is_none()
                && self.relayed_by(&e.name).is_none()
                && self.upstreams.len() != 1
            {
                errs.push(format!(
                    "envoy {}: name an upstream (there are {} upstreams) or set upstream_unreachable",
                    e.name,
                    self.upstreams.len()
                ));
            }
            if e.plugin_config.is_some() && e.plugin_config_raw.is_some() {
                errs.push(format!(
                    "envoy {}: plugin_config and plugin_config_raw are exclusive",
                    e.name
                ));
            }
            if e.plugin_config.as_ref().is_some_and(|pc| !pc.is_object()) {
                errs.push(format!("envoy {}: plugin_config must be a map", e.name));
            }
        }
    }

    /// `upstream_envoy` chains: known, not itself, acyclic.
    fn validate_upstream_envoys(&self, errs: &mut Vec<String>) {
        for e in &self.envoys {
            let Some(t) = &e.upstream_envoy else { continue };
            match self.envoy(t) {
                None => errs.push(format!("envoy {}: upstream_envoy {t} unknown", e.name)),
                Some(x) if x.name == e.name => {
                    errs.push(format!("envoy {}: upstream_envoy is itself", e.name))
                }
                Some(x) if x.expect_start_failure || e.expect_start_failure => errs.push(format!(
                    "envoy {}: upstream_envoy and expect_start_failure do not mix",
                    e.name
                )),
                Some(_) => {}
            }
            if e.upstream.is_some() || e.upstream_unreachable {
                errs.push(format!(
                    "envoy {}: upstream_envoy excludes upstream/upstream_unreachable",
                    e.name
                ));
            }
        }
        if let Err(e) = self.start_waves() {
            errs.push(e);
        }
    }

    /// `real_collector:` and what only makes sense with (or without) it.
    fn validate_real_collector(&self, errs: &mut Vec<String>) {
        if self.real_collector.is_none() {
            if self.expect.collected.is_some() {
                errs.push("expect.collected needs real_collector".to_string());
            }
            for u in self.upstreams.iter().filter(|u| u.report_span.is_some()) {
                errs.push(format!(
                    "upstream {}: report_span needs real_collector",
                    u.name
                ));
            }
            return;
        }
        let wants_ui = self
            .expect
            .collected
            .as_ref()
            .is_some_and(|c| c.zipkin_ui.is_some());
        if wants_ui && self.real_collector != Some(RealCollectorKind::Zipkin) {
            errs.push("expect.collected.zipkin_ui needs real_collector: zipkin".to_string());
        }
        let c = &self.collector;
        if c.mode != CollectorMode::Up
            || c.status != default_collector_status()
            || c.delay_ms != 0
            || c.fault.is_some()
            || c.fault_status.is_some()
            || c.retry_after.is_some()
            || c.scheduled()
        {
            errs.push(
                "real_collector: the fake collector's `collector:` settings do not apply"
                    .to_string(),
            );
        }
        for e in self.envoys.iter().filter(|e| e.collector_via.is_some()) {
            errs.push(format!(
                "envoy {}: collector_via does not mix with real_collector",
                e.name
            ));
        }
        let Some(c) = &self.expect.collected else {
            return;
        };
        validate_parents("expect.collected.match", &c.matchers, errs);
        if c.empty
            && (c.spans.is_some_and(|s| !s.accepts(0))
                || c.traces.is_some_and(|s| !s.accepts(0))
                || !c.matchers.is_empty())
        {
            errs.push("expect.collected: empty contradicts spans/traces/match".to_string());
        }
    }

    /// The fake collector's fault modes and schedule, and Envoys with file-based listeners.
    fn validate_collector(&self, errs: &mut Vec<String>) {
        let c = &self.collector;
        if c.fault_every == 0 {
            errs.push("collector.fault_every must be at least 1".to_string());
        }
        if c.fault.is_some() && c.fault_status.is_some() {
            errs.push("collector: fault and fault_status are exclusive".to_string());
        }
        if let Some(s) = c.fault_status.filter(|s| !(300..=599).contains(s)) {
            errs.push(format!(
                "collector.fault_status {s} must fail the export (300-599)"
            ));
        }
        if c.mode == CollectorMode::Down {
            if c.fault.is_some() || c.fault_status.is_some() {
                errs.push("collector: fault and fault_status need mode up".to_string());
            }
            if c.scheduled() {
                errs.push(
                    "collector: outages and flap need mode up (down is never up)".to_string(),
                );
            }
        }
        validate_retry_after(c, errs);
        validate_schedule(c, errs);
        let faults = c.fault.is_some() || c.fault_status.is_some();
        let ce = self.expect.collector_requests.as_ref();
        if !faults && ce.is_some_and(|e| e.faulted.is_some()) {
            errs.push(
                "expect.collector_requests.faulted needs collector.fault or fault_status"
                    .to_string(),
            );
        }
        if !c.scheduled() && ce.is_some_and(|e| e.resumed_within_ms.is_some()) {
            errs.push(
                "expect.collector_requests.resumed_within_ms needs collector.outages or flap"
                    .to_string(),
            );
        }
        if c.retry_after.is_none() && ce.is_some_and(|e| e.honours_retry_after) {
            errs.push(
                "expect.collector_requests.honours_retry_after needs collector.retry_after"
                    .to_string(),
            );
        }
        for e in self.envoys.iter().filter(|e| e.lds) {
            // Envoy refuses file-based LDS without a node cluster; the node id is there anyway
            // (`--service-node` or node.id).
            let cluster = e.node.as_ref().is_some_and(|n| n.cluster.is_some())
                || e.extra_args.iter().any(|a| a == "--service-cluster");
            if !cluster {
                errs.push(format!(
                    "envoy {}: lds needs a node cluster (node.cluster or --service-cluster)",
                    e.name
                ));
            }
        }
    }

    /// Concurrent requests, waits on collector faults, and listener reloads under traffic.
    fn validate_load(&self, errs: &mut Vec<String>) {
        for (i, r) in self.requests.iter().enumerate() {
            let parallel = r.concurrency.unwrap_or(1);
            if parallel == 0 {
                errs.push(format!("request #{i}: concurrency must be at least 1"));
            }
            if r.abort_after_ms.is_some() && (parallel > 1 || r.reload.is_some()) {
                errs.push(format!(
                    "request #{i}: abort_after_ms is sequential only (no concurrency/reload)"
                ));
            }
            let c = &self.collector;
            if r.after_collector_faults.is_some() && c.fault.is_none() && c.fault_status.is_none() {
                errs.push(format!(
                    "request #{i}: after_collector_faults needs collector.fault or fault_status"
                ));
            }
            let Some(rl) = &r.reload else { continue };
            match self.envoy(&rl.envoy) {
                None => errs.push(format!("request #{i}: reload: unknown envoy {}", rl.envoy)),
                Some(e) if !e.lds => errs.push(format!(
                    "request #{i}: reload: envoy {} needs `lds: true`",
                    rl.envoy
                )),
                Some(e) if e.plugin_config_raw.is_some() => errs.push(format!(
                    "request #{i}: reload: envoy {} has plugin_config_raw, nothing to merge onto",
                    rl.envoy
                )),
                Some(_) => {}
            }
            if !rl.plugin_config.is_object() {
                errs.push(format!("request #{i}: reload.plugin_config must be a map"));
            }
            if rl.after_requests >= r.repeat {
                errs.push(format!(
                    "request #{i}: reload.after_requests must be below repeat ({})",
                    r.repeat
                ));
            }
        }
    }

    /// Node metadata, and `collector_via`: exports relayed through another Envoy.
    fn validate_relays(&self, errs: &mut Vec<String>) {
        let mut relays = BTreeSet::new();
        for e in &self.envoys {
            if let Some(meta) = e.node.as_ref().and_then(|n| n.metadata.as_ref()) {
                if !meta.is_object() {
                    errs.push(format!("envoy {}: node.metadata must be a map", e.name));
                }
            }
            let Some(via) = &e.collector_via else {
                continue;
            };
            match self.envoy(via) {
                None => errs.push(format!("envoy {}: collector_via {via} unknown", e.name)),
                Some(r) => {
                    if r.name == e.name || r.collector_via.is_some() {
                        errs.push(format!(
                            "envoy {}: collector_via {via} must be another Envoy that exports directly",
                            e.name
                        ));
                    }
                    if r.upstream.is_some() || r.upstream_unreachable {
                        errs.push(format!(
                            "envoy {via}: relays {}'s exports, so it takes no upstream",
                            e.name
                        ));
                    }
                    if r.expect_start_failure || e.expect_start_failure {
                        errs.push(format!(
                            "envoy {}: collector_via and expect_start_failure do not mix",
                            e.name
                        ));
                    }
                }
            }
            if !relays.insert(via.as_str()) {
                errs.push(format!("envoy {via} relays for more than one Envoy"));
            }
            if self.collector.mode == CollectorMode::Down {
                errs.push(format!(
                    "envoy {}: collector_via needs the collector up",
                    e.name
                ));
            }
        }
    }

    fn validate_upstreams(&self, errs: &mut Vec<String>) {
        let envoy_names = self.envoy_names();
        for u in &self.upstreams {
            for c in &u.responses {
                if !c.when_path_prefix.starts_with('/') {
                    errs.push(format!(
                        "upstream {}: responses.when_path_prefix must start with /",
                        u.name
                    ));
                }
            }
            if let Some(n) = &u.next {
                if !envoy_names.contains(n.envoy.as_str()) {
                    errs.push(format!(
                        "upstream {}: next.envoy {} unknown",
                        u.name, n.envoy
                    ));
                }
            }
        }
    }

    fn validate_requests(&self, errs: &mut Vec<String>) {
        for (i, r) in self.requests.iter().enumerate() {
            if self.envoy(&r.via).is_none() {
                errs.push(format!("request #{i}: unknown envoy {}", r.via));
            }
            if r.abort_after_ms.is_some() && (r.expect_status.is_some() || r.max_ms.is_some()) {
                errs.push(format!(
                    "request #{i}: abort_after_ms expects no response, so no expect_status/max_ms"
                ));
            }
        }
    }

    /// The `expect:` block names only upstreams and Envoys the scenario has.
    fn validate_expect(&self, errs: &mut Vec<String>) {
        let ex = &self.expect;
        let up_names = self.upstream_names();
        let up_keys = ex
            .upstream_headers
            .keys()
            .chain(ex.upstream_requests.keys())
            .chain(ex.upstream_sampled_between.keys())
            .chain(ex.upstream_unique.keys())
            .chain(ex.sampled_matches_spans.0.iter());
        for k in up_keys.filter(|k| !up_names.contains(k.as_str())) {
            errs.push(format!("expect: unknown upstream {k}"));
        }
        let mut envoy_keys: Vec<&String> = ex
            .metrics
            .keys()
            .chain(ex.logs.keys())
            .chain(ex.prometheus.keys())
            .chain(ex.envoy_stats.keys())
            .collect();
        if let Some(sp) = &ex.spans {
            envoy_keys.extend(sp.per_envoy.keys());
            validate_parents("expect.spans.match", &sp.matchers, errs);
            if sp.every.as_ref().is_some_and(|m| m.parent.is_some()) {
                errs.push("expect.spans.every: `parent` needs a match list".to_string());
            }
            if sp.count.is_some() && sp.count_between.is_some() {
                errs.push("expect.spans: count and count_between are exclusive".to_string());
            }
        }
        let envoy_names = self.envoy_names();
        for k in envoy_keys
            .iter()
            .filter(|k| !envoy_names.contains(k.as_str()))
        {
            errs.push(format!("expect: unknown envoy {k}"));
        }
    }
}

/// `retry_after` rides on a failing status answer and is one header value.
fn validate_retry_after(c: &CollectorSpec, errs: &mut Vec<String>) {
    let Some(v) = &c.retry_after else { return };
    if v.is_empty() || !v.bytes().all(|b| b.is_ascii_graphic() || b == b' ') {
        errs.push(format!(
            "collector.retry_after {v:?} must be a non-empty printable header value"
        ));
    }
    let carrier = c.fault_status.unwrap_or(c.status);
    if (200..300).contains(&carrier) {
        errs.push(format!(
            "collector.retry_after rides on the failing status answers: fault_status, or a \
             status that fails (status is {carrier})"
        ));
    }
}

/// Outages in order with an up time between them, or a flap with both phases.
fn validate_schedule(c: &CollectorSpec, errs: &mut Vec<String>) {
    if c.flap.is_some() && !c.outages.is_empty() {
        errs.push("collector: outages and flap are exclusive".to_string());
    }
    if let Some(f) = c.flap {
        if f.up_ms == 0 || f.down_ms == 0 {
            errs.push("collector.flap: up_ms and down_ms must be at least 1".to_string());
        }
    }
    let mut up_since = 0;
    for (i, o) in c.outages.iter().enumerate() {
        if o.from_ms >= o.to_ms {
            errs.push(format!(
                "collector.outages[{i}]: from_ms must be below to_ms"
            ));
        }
        if i > 0 && o.from_ms <= up_since {
            errs.push(format!(
                "collector.outages[{i}]: must start after outages[{}] ends",
                i - 1
            ));
        }
        up_since = o.to_ms;
    }
}

/// Every `parent` of a matcher list names another matcher of the same list.
fn validate_parents(what: &str, matchers: &[SpanMatcher], errs: &mut Vec<String>) {
    for (i, m) in matchers.iter().enumerate() {
        if let Some(p) = m.parent {
            if p >= matchers.len() || p == i {
                errs.push(format!("{what}[{i}]: bad parent index {p}"));
            }
        }
    }
}
