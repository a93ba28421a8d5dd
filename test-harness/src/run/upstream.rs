//! Recording upstream HTTP servers (the "apps" behind each Envoy) and the fake Zipkin collector.

use crate::model::observed::{AppReport, ExportPost, RecordedRequest, Timeline};
use crate::model::scenario::{CollectorSpec, UpstreamSpec};
use crate::run::fault::{CollectorServer, Schedule, Shared};
use crate::run::http;
use crate::run::httpd::{bound_socket, write_reply, Handler, Server};
use std::collections::HashMap;
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Envoy name → listener address, filled in once the Envoys are up.
pub type RouteTable = Arc<Mutex<HashMap<String, SocketAddr>>>;

/// The trace context of an incoming request: x-b3-* first, then `b3`, then W3C `traceparent`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Incoming {
    pub trace_id: String,
    pub span_id: String,
    /// The caller's parent (`x-b3-parentspanid` or the 4th `b3` field), when it sent one.
    pub parent_span_id: Option<String>,
    pub sampled: bool,
}

fn is_hex(s: &str, len: usize) -> bool {
    s.len() == len && s.bytes().all(|b| b.is_ascii_hexdigit())
}

pub fn incoming_context(r: &RecordedRequest) -> Option<Incoming> {
    incoming_context_in(r, false)
}

/// The incoming context; with `w3c_only`, only `traceparent` is read (an OpenTelemetry-style app).
pub fn incoming_context_in(r: &RecordedRequest, w3c_only: bool) -> Option<Incoming> {
    if w3c_only {
        return traceparent_context(r);
    }
    if let (Some(t), Some(sp)) = (r.header("x-b3-traceid"), r.header("x-b3-spanid")) {
        let sampled = matches!(
            r.header("x-b3-sampled").as_deref(),
            Some("1") | Some("true")
        ) || r.header("x-b3-flags").as_deref() == Some("1");
        return Some(Incoming {
            trace_id: t.to_ascii_lowercase(),
            span_id: sp.to_ascii_lowercase(),
            parent_span_id: r
                .header("x-b3-parentspanid")
                .map(|p| p.to_ascii_lowercase()),
            sampled,
        });
    }
    if let Some(b3) = r.header("b3") {
        let parts: Vec<&str> = b3.split('-').collect();
        if parts.len() >= 2 {
            return Some(Incoming {
                trace_id: parts[0].to_ascii_lowercase(),
                span_id: parts[1].to_ascii_lowercase(),
                parent_span_id: parts.get(3).map(|p| p.to_ascii_lowercase()),
                sampled: matches!(parts.get(2), Some(&"1") | Some(&"d")),
            });
        }
    }
    traceparent_context(r)
}

fn traceparent_context(r: &RecordedRequest) -> Option<Incoming> {
    if let Some(tp) = r.header("traceparent") {
        let parts: Vec<&str> = tp.trim().split('-').collect();
        if parts.len() == 4 && is_hex(parts[1], 32) && is_hex(parts[2], 16) && is_hex(parts[3], 2) {
            let flags = u8::from_str_radix(parts[3], 16).unwrap_or(0);
            return Some(Incoming {
                trace_id: parts[1].to_ascii_lowercase(),
                span_id: parts[2].to_ascii_lowercase(),
                parent_span_id: None,
                sampled: flags & 1 == 1,
            });
        }
    }
    None
}

/// A random non-zero 64-bit id as 16 lower-hex characters.
pub fn random_span_id() -> String {
    use std::hash::{BuildHasher, Hasher};
    static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    loop {
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u64(COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed));
        h.write_u128(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or_default(),
        );
        let v = h.finish();
        if v != 0 {
            return format!("{v:016x}");
        }
    }
}

/// The span an instrumented app reports: its id and parent.
struct OwnSpan {
    id: String,
    parent: Option<String>,
}

/// A new child of the caller's span, or (`shared_rpc`) the caller's span id reused with its
/// parent, as Zipkin-style clients do.
fn own_span(ctx: &Incoming, shared_rpc: bool) -> OwnSpan {
    if shared_rpc {
        OwnSpan {
            id: ctx.span_id.clone(),
            parent: ctx.parent_span_id.clone(),
        }
    } else {
        OwnSpan {
            id: random_span_id(),
            parent: Some(ctx.span_id.clone()),
        }
    }
}

/// The propagated headers an instrumented app sends to its next hop: the incoming context with
/// the app's own span as the parent.
fn rewrite_context(headers: &mut [(String, String)], ctx: &Incoming, own: &OwnSpan) {
    let flag = if ctx.sampled { "1" } else { "0" };
    let parent = own.parent.clone().unwrap_or_default();
    let own = &own.id;
    for (k, v) in headers.iter_mut() {
        match k.as_str() {
            "x-b3-spanid" => *v = own.to_string(),
            "x-b3-parentspanid" => *v = parent.clone(),
            "b3" => *v = format!("{}-{own}-{flag}-{parent}", ctx.trace_id),
            "traceparent" => {
                if let Some(flags) = v.trim().rsplit('-').next().map(str::to_string) {
                    *v = format!("00-{}-{own}-{flags}", ctx.trace_id);
                }
            }
            _ => {}
        }
    }
}

/// Reports the app's SERVER span (Zipkin v2 JSON) to `collector`'s `/api/v2/spans`.
#[allow(clippy::too_many_arguments)]
fn report_span(
    collector: SocketAddr,
    service: &str,
    rec: &RecordedRequest,
    ctx: &Incoming,
    own: &OwnSpan,
    start_us: u64,
    duration_us: u64,
    status: u16,
) -> AppReport {
    let path_only = rec.path.split('?').next().unwrap_or("/");
    let mut span = serde_json::json!({
        "traceId": ctx.trace_id,
        "id": own.id,
        "kind": "SERVER",
        "name": format!("{} {path_only}", rec.method.to_ascii_lowercase()),
        "timestamp": start_us,
        "duration": duration_us.max(1),
        "localEndpoint": {"serviceName": service},
        "tags": {
            "http.method": rec.method,
            "http.path": path_only,
            "http.status_code": status.to_string(),
        }
    });
    if let Some(p) = &own.parent {
        span["parentId"] = p.clone().into();
    }
    if own.parent.as_ref() != Some(&ctx.span_id) {
        span["shared"] = true.into();
    }
    let body = serde_json::Value::Array(vec![span]).to_string();
    let status = http::send(
        &collector.to_string(),
        "POST",
        "/api/v2/spans",
        &[("content-type".to_string(), "application/json".to_string())],
        body.as_bytes(),
        Duration::from_secs(5),
    )
    .map(|r| r.status);
    AppReport {
        trace_id: ctx.trace_id.clone(),
        span_id: own.id.clone(),
        parent_id: own.parent.clone().unwrap_or_default(),
        status,
    }
}

/// Wall-clock microseconds since the epoch, the unit of span timestamps (the apps stamp their
/// reports with it; the runner bounds the window every span must lie in).
pub(crate) fn now_us() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or_default()
}

/// A port nothing listens on, reserved for as long as the value lives: the socket is bound but
/// never listens, so connections to it are refused, and no other socket (an Envoy listener, an
/// upstream) can be given the port in the meantime, as could happen to a port that was merely
/// bound and closed again.
pub struct ClosedPort {
    pub addr: SocketAddr,
    _fd: std::os::fd::OwnedFd,
}

pub fn closed_port() -> std::io::Result<ClosedPort> {
    // Without SO_REUSEADDR: not even a listener that sets it (std's do) can bind the port.
    let (fd, addr) = bound_socket(0, false)?;
    Ok(ClosedPort { addr, _fd: fd })
}

/// Headers an instrumented app propagates to its own outgoing calls.
fn propagated(h: &str) -> bool {
    h.starts_with("x-b3-")
        || h == "b3"
        || h == "x-request-id"
        || h == "traceparent"
        || h == "tracestate"
}

pub struct UpstreamServer {
    pub name: String,
    pub addr: SocketAddr,
    records: Arc<Mutex<Vec<RecordedRequest>>>,
    /// The spec each request is answered by; [`UpstreamServer::set_shared_rpc`] redeploys it.
    spec: Arc<Mutex<UpstreamSpec>>,
    /// Stops listening when dropped.
    _server: Server,
}

impl UpstreamServer {
    /// `report_to`: where an instrumented app (`report_span`) POSTs its spans.
    pub fn start(
        spec: &UpstreamSpec,
        routes: RouteTable,
        report_to: Option<SocketAddr>,
    ) -> Result<UpstreamServer, String> {
        let records: Arc<Mutex<Vec<RecordedRequest>>> = Arc::default();
        let live = Arc::new(Mutex::new(spec.clone()));
        let (recs, spec2) = (records.clone(), live.clone());
        let handler: Arc<Handler> = Arc::new(move |rec: RecordedRequest, stream| {
            let spec = spec2.lock().unwrap_or_else(|p| p.into_inner()).clone();
            let start_us = now_us();
            let t0 = std::time::Instant::now();
            let idx = {
                let mut g = recs.lock().unwrap_or_else(|p| p.into_inner());
                g.push(rec.clone());
                g.len() - 1
            };
            let app = Handling {
                spec: &spec,
                recs: &recs,
                routes: &routes,
                report_to,
                start_us,
                t0,
            };
            handle(stream, rec, idx, &app)
        });
        let server = Server::start(&format!("upstream {}", spec.name), handler)?;
        Ok(UpstreamServer {
            name: spec.name.clone(),
            addr: server.addr(),
            records,
            spec: live,
            _server: server,
        })
    }

    /// Switches the instrumented app to (or from) Zipkin-style shared RPC span ids, as if it
    /// were redeployed with jaeger-client's `ZipkinSharedRPCSpan` changed.
    pub fn set_shared_rpc(&self, on: bool) {
        let mut g = self.spec.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(r) = g.report_span.as_mut() {
            r.shared_rpc = on;
        }
    }

    /// How many requests this upstream has received so far.
    pub fn count(&self) -> usize {
        self.records.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    pub fn records(&self) -> Vec<RecordedRequest> {
        self.records
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

struct Handling<'a> {
    spec: &'a UpstreamSpec,
    recs: &'a Mutex<Vec<RecordedRequest>>,
    routes: &'a RouteTable,
    report_to: Option<SocketAddr>,
    start_us: u64,
    t0: std::time::Instant,
}

/// Answers one request; false ends the connection (the answer could not be written).
fn handle(stream: &mut TcpStream, rec: RecordedRequest, idx: usize, app: &Handling) -> bool {
    let (spec, recs, routes) = (app.spec, app.recs, app.routes);
    let path_only = rec.path.split('?').next().unwrap_or("/").to_string();
    // An instrumented app reports a span for sampled requests (and is its next hop's parent).
    let w3c_only = spec.report_span.as_ref().is_some_and(|r| r.w3c_only);
    let reporting = match (
        &spec.report_span,
        app.report_to,
        incoming_context_in(&rec, w3c_only),
    ) {
        (Some(rs), Some(to), Some(ctx)) if ctx.sampled => {
            let own = own_span(&ctx, rs.shared_rpc);
            Some((rs.service.clone(), to, ctx, own))
        }
        _ => None,
    };
    if let Some(next) = &spec.next {
        let applies = next
            .when_path_prefix
            .as_ref()
            .is_none_or(|p| path_only.starts_with(p.as_str()));
        if applies {
            let target = routes
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .get(&next.envoy)
                .copied();
            let result = match target {
                None => format!("error: envoy {} has no listener address", next.envoy),
                Some(addr) => {
                    let mut hs: Vec<(String, String)> = rec
                        .headers
                        .iter()
                        .filter(|(k, _)| propagated(k))
                        .filter(|(k, _)| !w3c_only || k == "traceparent" || k == "tracestate")
                        .cloned()
                        .collect();
                    if let Some((_, _, ctx, own)) = &reporting {
                        rewrite_context(&mut hs, ctx, own);
                    }
                    hs.push((
                        "host".into(),
                        rec.header("host").unwrap_or_else(|| "example.com".into()),
                    ));
                    match http::send(
                        &addr.to_string(),
                        "GET",
                        &next.path,
                        &hs,
                        &[],
                        Duration::from_secs(10),
                    ) {
                        Ok(r) => format!("{} from {} {}", r.status, next.envoy, next.path),
                        Err(e) => format!("error: {e}"),
                    }
                }
            };
            if let Some(r) = recs.lock().unwrap_or_else(|p| p.into_inner()).get_mut(idx) {
                r.next_result = Some(result);
            }
        }
    }
    let (status, headers, body) = respond_for(spec, &path_only);
    if let Some((service, to, ctx, own)) = &reporting {
        let dur = app.t0.elapsed().as_micros() as u64;
        let rep = report_span(*to, service, &rec, ctx, own, app.start_us, dur, status);
        if let Some(r) = recs.lock().unwrap_or_else(|p| p.into_inner()).get_mut(idx) {
            r.report = Some(rep);
        }
    }
    write_reply(stream, &rec.method, status, &headers, body.as_bytes()).is_ok()
}

/// The current UTC time as `YYYY-MM-DDTHH:MM:SSZ` (for `{{now}}` in canned bodies).
pub fn utc_now() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default();
    utc_string(secs)
}

pub(crate) fn utc_string(secs: u64) -> String {
    let (days, rem) = ((secs / 86_400) as i64, secs % 86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

/// The app's answer: a canned response, else the built-in routes.
fn respond_for(spec: &UpstreamSpec, path_only: &str) -> (u16, Vec<(String, String)>, String) {
    if let Some(c) = spec
        .responses
        .iter()
        .find(|c| path_only.starts_with(c.when_path_prefix.as_str()))
    {
        return (
            c.status,
            c.headers.0.clone(),
            c.body.replace("{{now}}", &utc_now()),
        );
    }
    let mut status = 200u16;
    let mut body = spec
        .body
        .clone()
        .unwrap_or_else(|| format!("ok from {}\n", spec.name));
    let segs: Vec<&str> = path_only.trim_start_matches('/').split('/').collect();
    match segs.as_slice() {
        ["status", code, ..] => {
            if let Ok(c) = code.parse::<u16>() {
                if (100..1000).contains(&c) {
                    status = c;
                    body = format!("status {c} from {}\n", spec.name);
                }
            }
        }
        ["delay", ms, ..] => {
            if let Ok(ms) = ms.parse::<u64>() {
                std::thread::sleep(Duration::from_millis(ms.min(30_000)));
            }
        }
        _ => {}
    }
    (
        status,
        vec![("content-type".to_string(), "text/plain".to_string())],
        body,
    )
}

/// The fake Zipkin collector: one listening endpoint per Envoy (so every span can be attributed to
/// the Envoy that exported it), one shared record.
pub struct Collector {
    spec: CollectorSpec,
    /// Posts, open-request tracking and fault counts, shared by all endpoints.
    shared: Shared,
    /// The refused endpoints of a collector that is down, reserved until the collector is dropped.
    closed: Vec<ClosedPort>,
    /// The listening endpoints; they stop listening when the last handle is dropped.
    servers: Vec<Arc<CollectorServer>>,
    /// The running `outages`/`flap` schedule, once the requests have started.
    schedule: Option<Schedule>,
}

impl Collector {
    pub fn new(spec: &CollectorSpec) -> Collector {
        Collector {
            spec: spec.clone(),
            shared: Shared::default(),
            closed: Vec::new(),
            servers: Vec::new(),
            schedule: None,
        }
    }

    /// How many times the collector has misbehaved so far (`collector.fault`, `fault_status`),
    /// readable while the scenario runs.
    pub fn fault_counter(&self) -> Arc<AtomicU64> {
        self.shared.faults.clone()
    }

    /// A new endpoint for `envoy`, or a closed port when the collector is down.
    pub fn endpoint_for(&mut self, envoy: &str) -> Result<SocketAddr, String> {
        if self.spec.mode == crate::model::scenario::CollectorMode::Down {
            let port = closed_port().map_err(|e| e.to_string())?;
            let addr = port.addr;
            self.closed.push(port);
            return Ok(addr);
        }
        let server = CollectorServer::start(envoy, &self.spec, self.shared.clone())?;
        let addr = server.addr();
        self.servers.push(Arc::new(server));
        Ok(addr)
    }

    /// The requests are about to be sent: the clock of `outages`/`flap` starts now.
    pub fn requests_starting(&mut self) {
        let now = self.shared.now_ms();
        lock(&self.shared.timeline).requests = Some((now, now));
        if self.spec.scheduled() && self.schedule.is_none() {
            self.schedule = Some(Schedule::start(
                &self.spec,
                self.servers.clone(),
                self.shared.clone(),
            ));
        }
    }

    /// The last request has completed.
    pub fn requests_done(&self) {
        let now = self.shared.now_ms();
        if let Some(r) = lock(&self.shared.timeline).requests.as_mut() {
            r.1 = now;
        }
    }

    /// The most export requests that were open (received, not yet answered) at one time.
    pub fn max_concurrent(&self) -> u64 {
        lock(&self.shared.open).1
    }

    pub fn posts(&self) -> Vec<ExportPost> {
        lock(&self.shared.posts).clone()
    }

    /// When the collector went down and up, and when the requests were sent (its own clock).
    pub fn timeline(&self) -> Timeline {
        lock(&self.shared.timeline).clone()
    }
}

impl Drop for Collector {
    fn drop(&mut self) {
        // The schedule first (it holds the endpoints), then every black hole lets go.
        self.schedule = None;
        self.shared.stopping.store(true, Ordering::SeqCst);
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

pub fn parse_spans(body: &[u8]) -> Result<Vec<serde_json::Value>, String> {
    let v: serde_json::Value =
        serde_json::from_slice(body).map_err(|e| format!("body is not JSON: {e}"))?;
    match v {
        serde_json::Value::Array(a) => Ok(a),
        other if crate::model::normalize::is_otlp(&other) => {
            crate::model::normalize::otlp_to_zipkin(&other)
        }
        other => Err(format!(
            "body is neither a JSON array of spans nor an OTLP JSON body: {}",
            crate::model::spans::truncate(&other.to_string(), 120)
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shared_rpc_reuses_the_callers_id_and_parent() {
        let ctx = Incoming {
            trace_id: "t".into(),
            span_id: "b".into(),
            parent_span_id: Some("a".into()),
            sampled: true,
        };
        let shared = own_span(&ctx, true);
        assert_eq!(
            (shared.id.as_str(), shared.parent.as_deref()),
            ("b", Some("a"))
        );
        let child = own_span(&ctx, false);
        assert_ne!(child.id, "b");
        assert_eq!(child.parent.as_deref(), Some("b"));
        let mut hs = vec![
            ("x-b3-spanid".to_string(), "b".to_string()),
            ("x-b3-parentspanid".to_string(), "a".to_string()),
        ];
        rewrite_context(&mut hs, &ctx, &shared);
        assert_eq!(hs[0].1, "b");
        assert_eq!(hs[1].1, "a");
    }

    #[test]
    fn utc_and_contexts() {
        assert_eq!(utc_string(0), "1970-01-01T00:00:00Z");
        assert_eq!(utc_string(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(utc_string(1_700_000_000), "2023-11-14T22:13:20Z");
        let r = |h: &[(&str, &str)]| RecordedRequest {
            headers: h
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            ..Default::default()
        };
        let ctx = incoming_context(&r(&[
            ("x-b3-traceid", "463ac35c9f6413ad48485a3953bb6124"),
            ("x-b3-spanid", "a2fb4a1d1a96d312"),
            ("x-b3-sampled", "1"),
        ]))
        .unwrap();
        assert!(ctx.sampled && ctx.span_id == "a2fb4a1d1a96d312");
        let ctx = incoming_context(&r(&[("b3", "463ac35c9f6413ad-a2fb4a1d1a96d312-d")])).unwrap();
        assert!(ctx.sampled && ctx.trace_id == "463ac35c9f6413ad");
        let tp = "00-463ac35c9f6413ad48485a3953bb6124-a2fb4a1d1a96d312-00";
        let ctx = incoming_context(&r(&[("traceparent", tp)])).unwrap();
        assert!(!ctx.sampled);
        assert_eq!(incoming_context(&r(&[("traceparent", "00-xyz")])), None);
        let mut hs = vec![
            ("x-b3-spanid".to_string(), "a2fb4a1d1a96d312".to_string()),
            ("traceparent".to_string(), tp.to_string()),
        ];
        let own = OwnSpan {
            id: "00000000000000aa".into(),
            parent: Some(ctx.span_id.clone()),
        };
        rewrite_context(&mut hs, &ctx, &own);
        assert_eq!(hs[0].1, "00000000000000aa");
        assert_eq!(
            hs[1].1,
            "00-463ac35c9f6413ad48485a3953bb6124-00000000000000aa-00"
        );
        let a = random_span_id();
        assert!(is_hex(&a, 16) && a != random_span_id());
        assert!(propagated("traceparent") && propagated("tracestate") && !propagated("l5d-sample"));
    }

    #[test]
    fn parse_spans_accepts_zipkin_and_otlp() {
        assert_eq!(parse_spans(b"[{\"id\":\"a\"}]").unwrap().len(), 1);
        let otlp = br#"{"resourceSpans":[{"resource":{"attributes":[]},"scopeSpans":[{"spans":[{"traceId":"463ac35c9f6413ad48485a3953bb6124","spanId":"a2fb4a1d1a96d312","kind":3,"startTimeUnixNano":"2000","endTimeUnixNano":"5000"}]}]}]}"#;
        let spans = parse_spans(otlp).unwrap();
        assert_eq!(spans[0]["kind"], "CLIENT");
        assert_eq!(spans[0]["duration"], 3);
        assert!(parse_spans(b"{}").is_err());
    }

    #[test]
    fn closed_port_refuses_and_stays_reserved() {
        let p = closed_port().unwrap();
        let e = std::net::TcpStream::connect(p.addr).unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::ConnectionRefused, "{e}");
        assert!(
            std::net::TcpListener::bind(p.addr).is_err(),
            "port still reserved"
        );
        let addr = p.addr;
        drop(p);
        assert!(
            std::net::TcpListener::bind(addr).is_ok(),
            "released when dropped"
        );
    }
}
