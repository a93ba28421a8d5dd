//! One stream's path through meshtrace: request headers → context → decision → header edits and an open
//! span; stream end → finished span. No proxy-wasm calls: the adapter gathers inputs and applies outputs.

use std::borrow::Cow;

use crate::config::{Config, SpanKindChoice};
use crate::ids::{SpanId, TraceId};
use crate::metrics::Counter;
use crate::propagation::{b3, HeaderEdit, Outgoing};
use crate::sampling::{self, Reason};
use crate::span::{self, tag, Kind, Span};

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

/// A sampled stream's span while the stream is open.
#[derive(Debug, Clone, PartialEq)]
pub struct OpenSpan {
    pub out: Outgoing,
    pub reason: Reason,
    pub start_ns: u64,
    pub name: String,
    pub grpc: bool,
    pub tags: Vec<(Cow<'static, str>, String)>,
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
    node: &Node,
    headers: impl IntoIterator<Item = (&'a str, &'a str)>,
    clock: impl FnOnce() -> u64,
    host: &mut impl Host,
) -> Start {
    let mut seen = Seen::default();
    for (name, value) in headers {
        seen.observe(cfg, name, value);
    }
    host.count(Counter::SpansStarted, 1);

    let incoming = b3::extract(&seen.b3, cfg.extract);
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

    let (trace_id, parent_id) = match incoming.parent {
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

    let out = Outgoing {
        trace_id,
        span_id: SpanId::generate(host.random_u64()),
        parent_id,
        sampled: decision.sampled,
        debug,
    };
    let mut edits = Vec::with_capacity(6);
    b3::inject(&out, cfg.inject, &seen.b3, &mut edits);
    if seen.rate_header.is_some() {
        // Consumed here, as Linkerd does: the decision now travels in the B3 context.
        edits.push(HeaderEdit {
            name: Cow::Owned(cfg.sampling.override_header.clone()),
            value: None,
        });
    }
    let span = decision.sampled.then(|| {
        open(
            cfg,
            node,
            &seen,
            out,
            decision.reason,
            incoming.malformed,
            clock(),
        )
    });
    Start { edits, span }
}

/// Closes the span with what the stream's end knows.
pub fn finish(cfg: &Config, node: &Node, open: OpenSpan, end: StreamEnd) -> Span {
    let max = cfg.tags.max_value_length;
    let mut tags = open.tags;
    let status = end.status.unwrap_or(0);
    let grpc_failed = open.grpc && end.grpc_status.is_some_and(|s| s != 0);
    let mut add = |key: &'static str, value: String| {
        tags.push((Cow::Borrowed(key), span::truncate(value, max)))
    };
    if let Some(p) = end.protocol {
        add(tag::HTTP_PROTOCOL, p);
    }
    add(tag::HTTP_STATUS_CODE, status.to_string());
    if status == 0 || status >= 500 || grpc_failed {
        add(tag::ERROR, "true".to_string());
    }
    if open.grpc {
        if let Some(g) = end.grpc_status {
            add(tag::GRPC_STATUS, g.to_string());
        }
    }
    add(
        tag::RESPONSE_FLAGS,
        span::response_flags(end.response_flags.unwrap_or(0)),
    );
    add(tag::REQUEST_SIZE, end.request_size.unwrap_or(0).to_string());
    add(
        tag::RESPONSE_SIZE,
        end.response_size.unwrap_or(0).to_string(),
    );
    let remote = end
        .peer
        .as_deref()
        .and_then(|p| p.parse::<std::net::SocketAddr>().ok());
    if let Some(peer) = &end.peer {
        let ip = remote
            .map(|r| r.ip().to_string())
            .unwrap_or_else(|| peer.clone());
        add(tag::PEER_ADDRESS, ip);
    }
    if let Some(c) = end.upstream_cluster {
        add(tag::UPSTREAM_CLUSTER, c);
    }
    if let Some(a) = end.upstream_address {
        add(tag::UPSTREAM_ADDRESS, a);
    }
    let kind = match cfg.span_kind {
        SpanKindChoice::Server => Kind::Server,
        SpanKindChoice::Client => Kind::Client,
        SpanKindChoice::Auto => Kind::from_listener_direction(end.listener_direction),
    };
    Span {
        trace_id: open.out.trace_id,
        id: open.out.span_id,
        parent_id: open.out.parent_id,
        kind,
        name: open.name,
        service_name: node.service_name.clone(),
        timestamp_us: open.start_ns / 1_000,
        duration_us: end.now_ns.saturating_sub(open.start_ns) / 1_000,
        debug: open.out.debug,
        remote,
        tags,
    }
}

fn open(
    cfg: &Config,
    node: &Node,
    seen: &Seen<'_>,
    out: Outgoing,
    reason: Reason,
    malformed: Option<b3::Malformed>,
    now_ns: u64,
) -> OpenSpan {
    let max = cfg.tags.max_value_length;
    let mut tags: Vec<(Cow<'static, str>, String)> = Vec::with_capacity(20);
    let mut add = |key: Cow<'static, str>, value: &str| {
        tags.push((key, span::truncate(value.to_string(), max)))
    };
    add(Cow::Borrowed(tag::NODE_ID), &node.id);
    add(Cow::Borrowed(tag::COMPONENT), "proxy");
    let url = span::url(
        seen.scheme.unwrap_or("http"),
        seen.authority.unwrap_or(""),
        seen.path.unwrap_or("/"),
        cfg.tags.record_query,
    );
    add(Cow::Borrowed(tag::HTTP_URL), &url);
    add(Cow::Borrowed(tag::HTTP_METHOD), seen.method.unwrap_or(""));
    if let Some(ua) = seen.user_agent {
        add(Cow::Borrowed(tag::USER_AGENT), ua);
    }
    if let Some(id) = seen.request_id {
        add(Cow::Borrowed(tag::REQUEST_ID), id);
    }
    add(Cow::Borrowed(tag::SAMPLING_REASON), reason.as_str());
    if let Some(m) = malformed {
        add(Cow::Borrowed(tag::INVALID_CONTEXT), m.as_str());
    }
    for (key, value) in &cfg.tags.fixed {
        add(Cow::Owned(key.clone()), value);
    }
    for (index, value) in &seen.allowed {
        if let Some(name) = cfg.tags.request_headers.get(*index) {
            add(Cow::Owned(name.clone()), value);
        }
    }
    let name = span::name(
        seen.decorator,
        seen.authority.unwrap_or(""),
        seen.path.unwrap_or("/"),
    );
    OpenSpan {
        out,
        reason,
        start_ns: now_ns,
        name: span::truncate(name, max),
        grpc: seen
            .content_type
            .is_some_and(|c| c.starts_with("application/grpc")),
        tags,
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
