//! Reading the Envoys' counters: polling until the meshtrace counters balance and hold still
//! (quiescence), then the read-back the expectations are evaluated on.

use super::topology::Started;
use crate::model::expect::{metric_value, Check, Observations};
use crate::model::scenario::Expect;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

const BALANCE: [&str; 4] = [
    "spans_sampled",
    "spans_recorded",
    "spans_exported",
    "spans_dropped",
];
const QUIESCENT: &str =
    "quiescent (spans_recorded >= spans_sampled, spans_recorded == spans_exported + spans_dropped, stable)";

const POLL: Duration = Duration::from_millis(150);

/// Envoy name → meshtrace counters.
type Snapshot = BTreeMap<String, BTreeMap<String, u64>>;

/// Polls every ready Envoy until every sampled stream has recorded its span(s) (one, or two with
/// `span_shape: server_client`), every recorded span is exported or dropped, and all meshtrace
/// counters have been unchanged for `hold`. meshtrace publishes its counters on its tick, so `hold`
/// must exceed the longest tick period: a window that long contains a publication of everything
/// counted before it began.
pub(super) fn wait_quiescent(started: &[Started], hold: Duration, timeout: Duration) -> Check {
    let deadline = Instant::now() + timeout;
    let t0 = Instant::now();
    let mut prev: Option<(Snapshot, Instant)> = None;
    loop {
        let (snap, err) = snapshot(started);
        let balanced = err.is_none() && snap.values().all(is_balanced);
        let since = match prev.take() {
            Some((p, since)) if p == snap => since,
            _ => Instant::now(),
        };
        if balanced && since.elapsed() >= hold {
            return Check::pass(QUIESCENT, format!("after {} ms", t0.elapsed().as_millis()));
        }
        if Instant::now() >= deadline {
            return Check::fail(QUIESCENT, describe_unquiet(&snap, err, timeout));
        }
        prev = Some((snap, since));
        std::thread::sleep(POLL);
    }
}

/// Reads every ready Envoy's meshtrace counters, and its Prometheus text and every stat when the
/// expectations ask for them.
pub(super) fn read_stats(
    started: &[Started],
    expect: &Expect,
    obs: &mut Observations,
    checks: &mut Vec<Check>,
) {
    for s in started.iter().filter(|s| s.ready) {
        let name = s.spec.name.clone();
        match s.proc.stats("meshtrace") {
            Ok(st) => {
                obs.metrics.insert(name.clone(), st);
            }
            Err(e) => checks.push(Check::fail(format!("stats of {name}"), e)),
        }
        if expect.prometheus.contains_key(&name) {
            match s.proc.prometheus() {
                Ok(text) => {
                    obs.prometheus.insert(name.clone(), text);
                }
                Err(e) => checks.push(Check::fail(format!("/stats/prometheus of {name}"), e)),
            }
        }
        if expect.envoy_stats.contains_key(&name) {
            match s.proc.stats("") {
                Ok(st) => {
                    obs.all_stats.insert(name.clone(), st);
                }
                Err(e) => checks.push(Check::fail(format!("stats of {name}"), e)),
            }
        }
    }
}

/// The meshtrace counters of every ready Envoy, and the last error reading one.
fn snapshot(started: &[Started]) -> (Snapshot, Option<String>) {
    let mut snap = BTreeMap::new();
    let mut err = None;
    for s in started.iter().filter(|s| s.ready) {
        match s.proc.stats("meshtrace_") {
            Ok(st) => {
                snap.insert(s.spec.name.clone(), st);
            }
            Err(e) => err = Some(format!("{}: {e}", s.spec.name)),
        }
    }
    (snap, err)
}

fn is_balanced(st: &BTreeMap<String, u64>) -> bool {
    let [sampled, recorded, exported, dropped] = BALANCE.map(|k| metric_value(st, k));
    recorded >= sampled && recorded == exported + dropped
}

fn describe_unquiet(snap: &Snapshot, err: Option<String>, timeout: Duration) -> String {
    let numbers = snap
        .iter()
        .map(|(n, st)| {
            let [a, r, b, c] = BALANCE.map(|k| metric_value(st, k));
            format!("{n}: sampled={a} recorded={r} exported={b} dropped={c}")
        })
        .collect::<Vec<_>>()
        .join("; ");
    format!(
        "not quiescent after {} ms: {numbers}{}",
        timeout.as_millis(),
        err.map(|e| format!("; stats error: {e}"))
            .unwrap_or_default()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counters(sampled: u64, recorded: u64, exported: u64, dropped: u64) -> BTreeMap<String, u64> {
        BALANCE
            .iter()
            .zip([sampled, recorded, exported, dropped])
            .map(|(k, v)| (format!("meshtrace_{k}"), v))
            .collect()
    }

    #[test]
    fn balance_needs_every_sampled_span_recorded_and_every_recorded_one_gone() {
        assert!(is_balanced(&counters(2, 2, 1, 1)));
        assert!(is_balanced(&counters(1, 2, 2, 0))); // server_client: two spans per stream
        assert!(!is_balanced(&counters(2, 1, 1, 0)));
        assert!(!is_balanced(&counters(2, 2, 1, 0)));
    }

    #[test]
    fn an_unquiet_report_names_each_envoy_and_the_error() {
        let snap = Snapshot::from([("a".to_string(), counters(3, 2, 1, 0))]);
        let text = describe_unquiet(&snap, Some("b: refused".into()), Duration::from_secs(2));
        assert_eq!(
            text,
            "not quiescent after 2000 ms: a: sampled=3 recorded=2 exported=1 dropped=0; \
             stats error: b: refused"
        );
    }
}
