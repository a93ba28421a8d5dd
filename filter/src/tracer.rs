//! One stream's path through meshtrace: request headers → context → decision → header edits and an open
//! span; stream end → finished span. No proxy-wasm calls: the adapter gathers inputs and applies outputs.

use std::borrow::Cow;

use crate::config::{Config, SpanIds, SpanKindChoice, SpanShape};
use crate::ids::{SpanId, TraceId};
use crate::metrics::Counter;
use crate::propagation::{b3, w3c, Format, HeaderEdit, Outgoing};
use crate::sampling::{self, Reason};
use crate::span::{self, tag, Extra, Http, Kind, Span};

pub const REQUEST_ID: &str = "x-request-id";
pub const USER_AGENT: &str = "user-agent";
pub const DECORATOR: &str = "x-envoy-decorator-operation";
pub const CONTENT_TYPE: &str = "content-type";

/// What the core needs from the proxy besides the request itself.
pub trait Host {
    fn random_u64(&mut self) -> u64;
    fn count(&mut self, counter: Counter, n: u64);
}

/// Facts about this proxy, read once at configure time.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Node {
    pub id: String,
    pub service_name: String,
}

/// A sampled stream's span(s) while the stream is open.
#[derive(Debug, Clone, PartialEq)]
pub struct OpenSpan {
    pub out: Outgoing,
    /// The caller's span and its parent, when the request carried a context: a shared-id SERVER
    /// span takes these ids.
    pub caller: Option<(SpanId, Option<SpanId>)>,
    /// With `span_shape: server_client`: the SERVER span's id (the CLIENT span is `out.span_id`).
    pub server_id: Option<SpanId>,
    pub reason: Reason,
    pub start_ns: u64,
    /// When the upstream's response headers arrived: the end of the CLIENT span.
    pub upstream_end_ns: Option<u64>,
    pub name: String,
    pub grpc: bool,
    pub http: Http,
    pub extra: Vec<Extra>,
}

#[derive(Debug, Default)]
pub struct Start {
    pub edits: Vec<HeaderEdit>,
    /// Present only for sampled streams: unsampled streams do no span work at all.
    pub span: Option<OpenSpan>,
}

/// What the proxy knows when the stream ends (absent values were unavailable).
#[derive(Debug, Default, Clone)]
pub struct StreamEnd {
    pub now_ns: u64,
    pub status: Option<u64>,
    pub response_flags: Option<u64>,
    pub grpc_status: Option<u64>,
    pub request_size: Option<u64>,
    pub response_size: Option<u64>,
    pub protocol: Option<String>,
    pub peer: Option<String>,
    pub upstream_address: Option<String>,
    pub upstream_cluster: Option<String>,
    pub listener_direction: Option<u64>,
}

/// Decides and propagates for one request. `headers` are the request headers, names lower-case;
/// they are borrowed, so the request path copies only what a sampled span keeps. `clock` (ns) is read
/// only for sampled requests.
pub fn start<'a>(
    cfg: &Config,
    headers: impl IntoIterator<Item = (&'a str, &'a str)>,
    clock: impl FnOnce() -> u64,
    host: &mut impl Host,
) -> Start {
    let mut seen = Seen::default();
    for (name, value) in headers {
        seen.observe(cfg, name, value);
    }
    host.count(Counter::SpansStarted, 1);

    let incoming = extract(cfg, &seen);
    if incoming.malformed.is_some() {
        host.count(Counter::InvalidContext, 1);
    }
    let rate_override = seen.rate_header.and_then(|v| {
        let rate = sampling::parse_rate(v);
        if rate.is_none() {
            host.count(Counter::InvalidRateHeader, 1);
        }
        rate
    });

    let (trace_id, caller) = match incoming.parent {
        Some((trace, span)) => (trace, Some(span)),
        None => (
            TraceId::generate(host.random_u64(), host.random_u64()),
            None,
        ),
    };
    let debug = incoming.debug && cfg.sampling.trust_debug;
    let decision = sampling::decide(&sampling::Inputs {
        trace_id,
        debug,
        force: seen.force,
        rate_override,
        upstream: incoming.sampled.filter(|_| cfg.sampling.trust_upstream),
        rate: cfg.sampling.rate,
    });
    host.count(reason_counter(decision.reason), 1);
    host.count(
        if decision.sampled {
            Counter::SpansSampled
        } else {
            Counter::SpansNotSampled
        },
        1,
    );

    // With a SERVER+CLIENT pair, the upstream's parent is our SERVER span, which reuses the caller's
    // id when ids are shared.
    let server_id = match cfg.span_shape {
        SpanShape::One => None,
        SpanShape::ServerClient => Some(match (cfg.span_ids, caller) {
            (SpanIds::Shared, Some(c)) => c,
            _ => SpanId::generate(host.random_u64()),
        }),
    };
    let out = Outgoing {
        trace_id,
        span_id: SpanId::generate(host.random_u64()),
        parent_id: server_id.or(caller),
        sampled: decision.sampled,
        debug,
    };
    let mut edits = Vec::with_capacity(7);
    b3::inject(&out, cfg.inject, &seen.b3, &mut edits);
    if cfg.inject.contains(Format::W3c) {
        w3c::inject(
            out.trace_id,
            out.span_id,
            out.sampled || out.debug,
            &mut edits,
        );
    } else if cfg.extract.contains(Format::W3c) && seen.traceparent_present {
        // A context meshtrace read but does not write would travel stale next to the new one.
        edits.push(HeaderEdit::remove(w3c::TRACEPARENT));
    }
    if seen.rate_header.is_some() {
        // Consumed here, as Linkerd does: the decision now travels in the B3 context.
        edits.push(HeaderEdit {
            name: Cow::Owned(cfg.sampling.override_header.clone()),
            value: None,
        });
    }
    let span = decision.sampled.then(|| {
        let mut open = open(
            cfg,
            &seen,
            out,
            decision.reason,
            incoming.malformed,
            clock(),
        );
        open.caller = caller.map(|c| (c, incoming.caller_parent));
        open.server_id = server_id;
        open
    });
    Start { edits, span }
}

/// The incoming context, by the written precedence: a valid `b3`, then valid `x-b3-*` ids, then a
/// valid `traceparent` (each only if enabled in `propagation.extract`). A B3 sampling state without
/// ids still counts when `traceparent` supplies the ids, unless `traceparent` brings its own decision,
/// which then wins: the decision travels with the ids it was made for.
fn extract(cfg: &Config, seen: &Seen<'_>) -> Incoming {
    let found = b3::extract(&seen.b3, cfg.extract);
    let mut incoming = Incoming {
        parent: found.parent,
        caller_parent: None,
        sampled: found.sampled,
        debug: found.debug,
        malformed: found.malformed,
    };
    if found.parent.is_some() {
        incoming.caller_parent = b3::caller_parent(&seen.b3, cfg.extract);
        return incoming;
    }
    if cfg.extract.contains(Format::W3c) {
        if let Some(value) = seen.traceparent {
            match w3c::parse(value) {
                Some(p) => {
                    incoming.parent = Some((p.trace_id, p.span_id));
                    incoming.sampled = Some(p.sampled);
                }
                None => {
                    incoming.malformed.get_or_insert(b3::Malformed::Traceparent);
                }
            }
        }
    }
    incoming
}

/// The caller's context in whichever format it came.
struct Incoming {
    parent: Option<(TraceId, SpanId)>,
    caller_parent: Option<SpanId>,
    sampled: Option<bool>,
    debug: bool,
    malformed: Option<b3::Malformed>,
}

/// Closes the stream's span(s) with what the stream's end knows: one span, or a SERVER span and its
/// CLIENT child with `span_shape: server_client`.
pub fn finish(cfg: &Config, node: &Node, open: OpenSpan, end: StreamEnd) -> Vec<Span> {
    let max = cfg.tags.max_value_length;
    let cap = |v: String| span::truncate(v, max);
    // Addresses are parsed before tag values are capped: a cut address is no address.
    let peer_addr: Option<std::net::SocketAddr> = end.peer.as_deref().and_then(|p| p.parse().ok());
    let upstream_addr = end.upstream_address.as_deref().and_then(|p| p.parse().ok());
    let mut http = open.http;
    let status = end.status.unwrap_or(0);
    http.status = status;
    http.protocol = end.protocol.map(cap);
    http.grpc_status = end.grpc_status.filter(|_| open.grpc);
    http.response_flags = end.response_flags.unwrap_or(0);
    http.request_size = end.request_size;
    http.response_size = end.response_size;
    http.peer = end
        .peer
        .map(|p| cap(peer_addr.map(|a| a.ip().to_string()).unwrap_or(p)));
    http.upstream_cluster = end.upstream_cluster.map(cap);
    http.upstream_address = end.upstream_address.map(cap);
    let error = status == 0 || status >= 500 || http.grpc_status.is_some_and(|s| s != 0);
    let end_ns = end.now_ns.max(open.start_ns);
    let base = Span {
        trace_id: open.out.trace_id,
        id: open.out.span_id,
        parent_id: open.out.parent_id,
        kind: Kind::Server,
        shared: false,
        name: open.name,
        service_name: node.service_name.clone(),
        node_id: node.id.clone(),
        start_ns: open.start_ns,
        duration_ns: end_ns - open.start_ns,
        debug: open.out.debug,
        http,
        remote: peer_addr,
        error,
        extra: open.extra,
    };
    // A SERVER span sharing the caller's id keeps the caller's parent, as Zipkin's shared spans do.
    let shared = |mut s: Span| {
        if let (SpanIds::Shared, Some((caller, caller_parent))) = (cfg.span_ids, open.caller) {
            s.id = caller;
            s.parent_id = caller_parent;
            s.shared = true;
        }
        s
    };
    match (cfg.span_shape, open.server_id) {
        (SpanShape::ServerClient, Some(server_id)) => {
            let client_end = open
                .upstream_end_ns
                .unwrap_or(end_ns)
                .clamp(open.start_ns, end_ns);
            let mut client = base.clone();
            client.kind = Kind::Client;
            client.duration_ns = client_end - open.start_ns;
            client.remote = upstream_addr;
            client.http.peer = None;
            let mut server = base;
            server.id = server_id;
            server.parent_id = open.caller.map(|(c, _)| c);
            server.http.upstream_cluster = None;
            server.http.upstream_address = None;
            vec![shared(server), client]
        }
        _ => {
            let kind = match cfg.span_kind {
                SpanKindChoice::Server => Kind::Server,
                SpanKindChoice::Client => Kind::Client,
                SpanKindChoice::Auto => Kind::from_listener_direction(end.listener_direction),
            };
            let mut one = base;
            one.kind = kind;
            match kind {
                Kind::Server => vec![shared(one)],
                Kind::Client => {
                    // The other side of a CLIENT span is the host it called.
                    one.remote = upstream_addr;
                    vec![one]
                }
            }
        }
    }
}

/// Whether `finish` will look at `StreamEnd::listener_direction`: only a single span whose kind
/// is `auto` (reading it costs a property call per span).
pub fn reads_listener_direction(cfg: &Config, open: &OpenSpan) -> bool {
    cfg.span_kind == SpanKindChoice::Auto
        && !(cfg.span_shape == SpanShape::ServerClient && open.server_id.is_some())
}

fn open(
    cfg: &Config,
    seen: &Seen<'_>,
    out: Outgoing,
    reason: Reason,
    malformed: Option<b3::Malformed>,
    now_ns: u64,
) -> OpenSpan {
    let max = cfg.tags.max_value_length;
    let cap = |v: &str| span::truncate(v.to_string(), max);
    let mut extra: Vec<Extra> = Vec::with_capacity(4);
    let mut add = |key: Cow<'static, str>, value: &str, header: bool| {
        extra.push(Extra {
            key,
            value: cap(value),
            header,
        })
    };
    add(Cow::Borrowed(tag::SAMPLING_REASON), reason.as_str(), false);
    if let Some(m) = malformed {
        add(Cow::Borrowed(tag::INVALID_CONTEXT), m.as_str(), false);
    }
    for (key, value) in &cfg.tags.fixed {
        add(Cow::Owned(key.clone()), value, false);
    }
    for (index, value) in &seen.allowed {
        if let Some(name) = cfg.tags.request_headers.get(*index) {
            add(Cow::Owned(name.clone()), value, true);
        }
    }
    let scheme = seen.scheme.unwrap_or("http");
    let authority = seen.authority.unwrap_or("");
    let path = seen.path.unwrap_or("/");
    let target = span::target(path, cfg.tags.record_query);
    let url = span::url(scheme, authority, &target);
    let http = Http {
        method: cap(seen.method.unwrap_or("")),
        scheme: cap(scheme),
        authority: cap(authority),
        target: cap(&target),
        url: cap(&url),
        user_agent: seen.user_agent.map(cap),
        request_id: seen.request_id.map(cap),
        ..Http::default()
    };
    let name = span::name(seen.decorator, authority, path);
    OpenSpan {
        out,
        caller: None,
        server_id: None,
        reason,
        start_ns: now_ns,
        upstream_end_ns: None,
        name: span::truncate(name, max),
        grpc: seen
            .content_type
            .is_some_and(|c| c.starts_with("application/grpc")),
        http,
        extra,
    }
}

fn reason_counter(reason: Reason) -> Counter {
    match reason {
        Reason::Debug => Counter::SamplingDebug,
        Reason::Force => Counter::SamplingForce,
        Reason::RateHeader => Counter::SamplingRateHeader,
        Reason::Upstream => Counter::SamplingUpstream,
        Reason::Rate => Counter::SamplingRate,
    }
}

/// The request headers meshtrace looks at, found in one pass.
#[derive(Default)]
struct Seen<'a> {
    b3: b3::B3Headers<'a>,
    traceparent: Option<&'a str>,
    /// Any `traceparent` at all, empty included: it must be rewritten or removed.
    traceparent_present: bool,
    method: Option<&'a str>,
    authority: Option<&'a str>,
    path: Option<&'a str>,
    scheme: Option<&'a str>,
    user_agent: Option<&'a str>,
    request_id: Option<&'a str>,
    decorator: Option<&'a str>,
    content_type: Option<&'a str>,
    rate_header: Option<&'a str>,
    force: bool,
    allowed: Vec<(usize, &'a str)>,
}

impl<'a> Seen<'a> {
    fn observe(&mut self, cfg: &Config, name: &str, value: &'a str) {
        if self.b3.observe(name, value) {
            return;
        }
        if name == w3c::TRACEPARENT {
            self.traceparent_present = true;
            if self.traceparent.is_none() && !value.is_empty() {
                self.traceparent = Some(value);
            }
            return;
        }
        let slot = match name {
            ":method" => &mut self.method,
            ":authority" => &mut self.authority,
            ":path" => &mut self.path,
            ":scheme" => &mut self.scheme,
            USER_AGENT => &mut self.user_agent,
            REQUEST_ID => &mut self.request_id,
            DECORATOR => &mut self.decorator,
            CONTENT_TYPE => &mut self.content_type,
            _ => {
                self.observe_configured(cfg, name, value);
                return;
            }
        };
        slot.get_or_insert(value);
        // Configured names may also be one of the above (e.g. a `user-agent` tag allowlist entry).
        self.observe_configured(cfg, name, value);
    }

    fn observe_configured(&mut self, cfg: &Config, name: &str, value: &'a str) {
        let s = &cfg.sampling;
        if !s.force_header.is_empty() && name == s.force_header && !value.is_empty() {
            self.force = true;
        }
        if !s.override_header.is_empty() && name == s.override_header && self.rate_header.is_none()
        {
            self.rate_header = Some(value);
        }
        if let Some(i) = cfg.tags.request_headers.iter().position(|h| h == name) {
            if !self.allowed.iter().any(|(j, _)| *j == i) {
                self.allowed.push((i, value));
            }
        }
    }
}

#[cfg(test)]
mod tests;
