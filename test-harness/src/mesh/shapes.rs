//! Case 1b: an app that reports Zipkin-style shared RPC spans (jaeger-client's
//! `ZipkinSharedRPCSpan(true)`: its SERVER span reuses the incoming span id) behind a meshtrace
//! sidecar, with each `span_shape` × `span_ids` of the sidecar: what Jaeger stores and shows,
//! and which setting gives one clean tree (istio/README.md, "An app with shared span ids").

use super::cases::{apply_shipped, line, rate_one, wait_ecds, Traces};
use super::e2e::{traces_of, wait_for, Mesh};
use super::objects::PluginEdits;
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

/// One sidecar setting and what Jaeger shows for it (the README's table, row by row).
struct Row {
    shape: &'static str,
    ids: &'static str,
    /// The gateway records SERVER + CLIENT and shares ids too (every hop Zipkin-style).
    gateway_too: bool,
    /// The trace as Jaeger's query API returns it.
    want: Want,
}

#[derive(Debug, PartialEq, Eq)]
enum Want {
    /// One tree: these `service:KIND` spans, root first, each the child of the one before.
    Chain(&'static [&'static str]),
    /// Two of the trace's spans (this many in all) carry the same id: Jaeger stores both and
    /// marks one "duplicate span IDs; skipping clock skew adjustment".
    DuplicateId(usize),
}

/// In this order: the one row that changes the gateway comes last (`configure` checks the gateway
/// only when a row changes it).
const ROWS: [Row; 5] = [
    Row {
        shape: "one",
        ids: "child",
        gateway_too: false,
        want: Want::DuplicateId(3),
    },
    Row {
        shape: "server_client",
        ids: "child",
        gateway_too: false,
        want: Want::Chain(&[
            "istio-ingressgateway.istio-system:SERVER",
            "app.default:SERVER",
            "app.default:CLIENT",
            "app:SERVER",
        ]),
    },
    Row {
        shape: "one",
        ids: "shared",
        gateway_too: false,
        want: Want::DuplicateId(3),
    },
    Row {
        shape: "server_client",
        ids: "shared",
        gateway_too: false,
        want: Want::DuplicateId(4),
    },
    Row {
        shape: "server_client",
        ids: "shared",
        gateway_too: true,
        want: Want::Chain(&[
            "istio-ingressgateway.istio-system:SERVER",
            "istio-ingressgateway.istio-system:CLIENT",
            "app.default:SERVER",
            "app.default:CLIENT",
            "app:SERVER",
        ]),
    },
];

/// What Jaeger's query API writes into a span whose id another span of the trace has.
const DUPLICATE_WARNING: &str = "duplicate span IDs";

fn label(s: &Value) -> String {
    format!(
        "{}:{}",
        s["localEndpoint"]["serviceName"].as_str().unwrap_or("?"),
        s["kind"].as_str().unwrap_or("?")
    )
}

/// What one trace looks like: `Chain` when its spans form one parent-linked line with unique ids
/// (root first), `DuplicateId` when an id repeats; otherwise a description of the mess.
fn classify(spans: &[Value]) -> Result<Vec<String>, String> {
    let ids: Vec<&str> = spans.iter().filter_map(|s| s["id"].as_str()).collect();
    let unique: BTreeSet<&str> = ids.iter().copied().collect();
    if unique.len() != ids.len() {
        let warned = spans
            .iter()
            .any(|s| s["warnings"].to_string().contains(DUPLICATE_WARNING));
        return Err(format!(
            "duplicate id{}",
            if warned { ", Jaeger warns" } else { "" }
        ));
    }
    let by_parent: BTreeMap<&str, &Value> = spans
        .iter()
        .filter_map(|s| Some((s["parentId"].as_str()?, s)))
        .collect();
    let roots: Vec<&Value> = spans.iter().filter(|s| s["parentId"].is_null()).collect();
    let [root] = roots.as_slice() else {
        return Err(format!("{} roots", roots.len()));
    };
    let mut chain = vec![label(root)];
    let mut at = *root;
    while let Some(next) = at["id"].as_str().and_then(|id| by_parent.get(id)) {
        chain.push(label(next));
        at = next;
    }
    if chain.len() != spans.len() {
        return Err(format!("not one line: {chain:?} of {} spans", spans.len()));
    }
    Ok(chain)
}

fn matches(want: &Want, got: &Result<Vec<String>, String>) -> bool {
    match (want, got) {
        (Want::Chain(c), Ok(g)) => g.iter().map(String::as_str).eq(c.iter().copied()),
        (Want::DuplicateId(_), Err(e)) => e == "duplicate id, Jaeger warns",
        _ => false,
    }
}

/// One line per span of a trace, for the log: `service:KIND id ← parent [warnings]`.
fn show(spans: &[Value]) -> String {
    spans
        .iter()
        .map(|s| {
            format!(
                "{} {} ← {}{}",
                label(s),
                s["id"].as_str().unwrap_or("?"),
                s["parentId"].as_str().unwrap_or("root"),
                s.get("warnings")
                    .map(|w| format!(" {w}"))
                    .unwrap_or_default()
            )
        })
        .collect::<Vec<_>>()
        .join("; ")
}

fn edits(row: &Row) -> PluginEdits {
    PluginEdits {
        set: vec![
            ("span_shape".into(), row.shape.into()),
            ("span_ids".into(), row.ids.into()),
        ],
        ..rate_one()
    }
}

/// Applies the row's settings and waits until the Envoys run them (the gateway's extension
/// changes only with `gateway_too`).
fn configure(mesh: &Mesh, row: &Row) -> Result<(), String> {
    let gateway = if row.gateway_too {
        edits(row)
    } else {
        rate_one()
    };
    apply_shipped(mesh, &["trafficextension-gateway.yaml"], &gateway)?;
    apply_shipped(mesh, &["trafficextension-sidecar.yaml"], &edits(row))?;
    let shape = format!("\"span_shape\":\"{}\"", row.shape);
    let ids = format!("\"span_ids\":\"{}\"", row.ids);
    wait_ecds(mesh, Duration::from_secs(60), "settings pushed", |es| {
        let ours: Vec<_> = es.iter().filter(|e| e.name.contains("meshtrace")).collect();
        let is_gateway = ours.iter().any(|e| e.name.contains("istio-system."));
        !ours.is_empty()
            && (is_gateway && !row.gateway_too
                || ours
                    .iter()
                    .all(|e| e.configuration.contains(&shape) && e.configuration.contains(&ids)))
    })
    .map(|_| ())
}

/// Case 1b (see the module doc).
pub fn shared_id_app(mesh: &Mesh) -> bool {
    println!("== case 1b: an app with Zipkin shared span ids behind the sidecar, each span_shape × span_ids");
    mesh.app.set_shared_rpc(true);
    let mut ok = true;
    for (i, row) in ROWS.iter().enumerate() {
        let what = format!(
            "sidecar span_shape {} span_ids {}{}",
            row.shape,
            row.ids,
            if row.gateway_too {
                " (gateway too)"
            } else {
                ""
            }
        );
        if let Err(e) = configure(mesh, row) {
            ok &= line(false, &format!("{what}: applied"), &e);
            continue;
        }
        let case = format!("shared{i}");
        let n = 3;
        let statuses = mesh.send(&case, n);
        let want_spans = match row.want {
            Want::Chain(c) => c.len(),
            Want::DuplicateId(n) => n,
        };
        let mut traces = Traces::default();
        let r = wait_for(Duration::from_secs(30), || {
            traces = traces_of(&mesh.jaeger, &case)?;
            Ok(traces.len() >= n && traces.values().all(|t| t.len() >= want_spans))
        });
        let got: Vec<_> = traces.values().map(|t| classify(t)).collect();
        let all = r.is_ok()
            && statuses.iter().all(|s| *s == 200)
            && got.iter().all(|g| matches(&row.want, g));
        let first = traces.values().next().map(|t| show(t)).unwrap_or_default();
        ok &= line(
            all,
            &format!("{what}: Jaeger shows {:?}", row.want),
            &format!("statuses {statuses:?}; got {got:?}; first trace: {first}"),
        );
    }
    mesh.app.set_shared_rpc(false);
    let restore = apply_shipped(mesh, &super::cases::TE_FILES, &rate_one());
    ok & line(
        restore.is_ok(),
        "shipped TrafficExtensions restored",
        &restore.err().unwrap_or_default(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn span(svc: &str, kind: &str, id: &str, parent: Option<&str>) -> Value {
        let mut s = json!({"id": id, "kind": kind, "localEndpoint": {"serviceName": svc}});
        if let Some(p) = parent {
            s["parentId"] = p.into();
        }
        s
    }

    #[test]
    fn classify_rows() {
        let chain = [
            span("app", "SERVER", "3", Some("2")),
            span("gw", "SERVER", "1", None),
            span("sc", "SERVER", "2", Some("1")),
        ];
        assert_eq!(
            classify(&chain).unwrap(),
            ["gw:SERVER", "sc:SERVER", "app:SERVER"]
        );
        let mut dup = [
            span("gw", "SERVER", "1", None),
            span("sc", "SERVER", "1", None),
        ];
        assert_eq!(classify(&dup).unwrap_err(), "duplicate id");
        dup[1]["warnings"] = json!(["duplicate span IDs; skipping clock skew adjustment"]);
        assert!(matches(&Want::DuplicateId(2), &classify(&dup)));
        let two_roots = [
            span("gw", "SERVER", "1", None),
            span("sc", "SERVER", "2", None),
        ];
        assert_eq!(classify(&two_roots).unwrap_err(), "2 roots");
        let fork = [
            span("gw", "SERVER", "1", None),
            span("a", "SERVER", "2", Some("1")),
            span("b", "SERVER", "3", Some("9")),
        ];
        assert!(classify(&fork).unwrap_err().starts_with("not one line"));
        assert!(!matches(&Want::Chain(&["gw:SERVER"]), &classify(&chain)));
    }
}
