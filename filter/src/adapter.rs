//! The proxy-wasm adapter: the only module that talks to the host. It gathers inputs for the core,
//! applies the core's outputs, and turns every failed host call into a debug log line plus the
//! `internal_errors` counter, never into a failed request (missing properties are normal, not
//! errors). SDK trait helpers that unwrap host results are avoided in favour of `hostcalls`, which
//! return them.

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;
use std::time::{Duration, UNIX_EPOCH};

use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, BufferType, ContextType, LogLevel, MapType, MetricType, Status};

use crate::buffer::SpanBuffer;
use crate::config::{self, Config, ExportFormat};
use crate::export::{otlp, zipkin};
use crate::metrics::Counter;
use crate::propagation::b3;
use crate::tracer::{self, Host, Node, OpenSpan, StreamEnd};

/// How soon the root context ticks after a stream fills a batch.
const EXPEDITED_TICK: Duration = Duration::from_millis(1);
const USER_AGENT: &str = "meshtrace";

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Trace);
    std::panic::set_hook(Box::new(|info| {
        log(LogLevel::Critical, &format!("meshtrace: panic: {info}"));
    }));
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> { Box::new(Root::default()) });
}}

/// State one VM's root context shares with its streams (a VM is single-threaded).
struct Shared {
    config: Config,
    node: Node,
    buffer: SpanBuffer,
    metrics: Metrics,
    rng: SplitMix,
    expedited: bool,
}

#[derive(Default)]
struct Root {
    shared: Option<Rc<RefCell<Shared>>>,
    /// Export calls awaiting an answer: token → number of spans in the batch.
    in_flight: HashMap<u32, u64>,
}

struct Stream {
    shared: Rc<RefCell<Shared>>,
    open: Option<OpenSpan>,
}

/// Counter ids from `define_metric`; a missing id (define failed) makes that counter a no-op.
#[derive(Default)]
struct Metrics {
    ids: [Option<u32>; Counter::ALL.len()],
}

/// The core's view of the host for one call.
struct HostView<'a> {
    rng: &'a mut SplitMix,
    metrics: &'a Metrics,
}

/// splitmix64: ids need to be unique, not secret, and drawing them must not cost a host call each.
struct SplitMix(u64);

impl Context for Root {
    fn on_http_call_response(
        &mut self,
        token: u32,
        _headers: usize,
        body_size: usize,
        _trailers: usize,
    ) {
        let Some(shared) = self.shared.clone() else {
            return;
        };
        let spans = self.in_flight.remove(&token).unwrap_or(0);
        let status = hostcalls::get_map_value_bytes(MapType::HttpCallResponseHeaders, ":status")
            .ok()
            .flatten()
            .and_then(|v| String::from_utf8(v).ok())
            .and_then(|v| v.parse::<u16>().ok());
        {
            let sh = shared.borrow();
            if status.is_some_and(|s| (200..300).contains(&s)) {
                sh.metrics.count(Counter::ExportRequestsOk, 1);
                sh.metrics.count(Counter::SpansExported, spans);
            } else {
                sh.metrics.count(Counter::ExportRequestsFailed, 1);
                sh.metrics.count(Counter::SpansDropped, spans);
                let body =
                    hostcalls::get_buffer(BufferType::HttpCallResponseBody, 0, body_size.min(256))
                        .ok()
                        .flatten()
                        .map(|b| String::from_utf8_lossy(&b).into_owned())
                        .unwrap_or_default();
                log(
                    LogLevel::Debug,
                    &format!("meshtrace: export of {spans} spans failed: status {status:?} {body}"),
                );
            }
        }
        self.flush(&shared, true);
    }
}

impl RootContext for Root {
    fn on_configure(&mut self, size: usize) -> bool {
        let raw = hostcalls::get_buffer(BufferType::PluginConfiguration, 0, size)
            .ok()
            .flatten()
            .unwrap_or_default();
        let config = match config::parse(&raw) {
            Ok(c) => c,
            Err(e) => {
                log(
                    LogLevel::Critical,
                    &format!("meshtrace: invalid configuration: {e}"),
                );
                return false;
            }
        };
        let node = read_node(&config);
        let metrics = Metrics::define();
        let seed = random_seed().unwrap_or_else(|| {
            metrics.count(Counter::InternalErrors, 1);
            log(
                LogLevel::Warn,
                "meshtrace: no host randomness, ids seeded from the clock",
            );
            now_ns()
        });
        if let Err(e) =
            hostcalls::set_tick_period(Duration::from_millis(config.collector.flush_interval_ms))
        {
            metrics.internal("set_tick_period", e);
        }
        log(
            LogLevel::Info,
            &format!(
                "meshtrace: configured: service {:?}, rate {}, collector cluster {:?}",
                node.service_name, config.sampling.rate, config.collector.cluster
            ),
        );
        self.shared = Some(Rc::new(RefCell::new(Shared {
            buffer: SpanBuffer::new(config.collector.max_queue),
            config,
            node,
            metrics,
            rng: SplitMix(seed),
            expedited: false,
        })));
        true
    }

    fn on_tick(&mut self) {
        if let Some(shared) = self.shared.clone() {
            // An expedited tick sends full batches only; the remainder waits for the regular tick, so
            // a burst does not leave a short batch holding the last in-flight slot.
            let expedited = shared.borrow().expedited;
            self.flush(&shared, expedited);
            let mut sh = shared.borrow_mut();
            if expedited {
                sh.expedited = false;
                let period = Duration::from_millis(sh.config.collector.flush_interval_ms);
                if let Err(e) = hostcalls::set_tick_period(period) {
                    sh.metrics.internal("set_tick_period", e);
                }
            }
        }
    }

    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        let shared = self.shared.clone()?;
        Some(Box::new(Stream { shared, open: None }))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

impl Root {
    /// Sends batches while there is room in flight. With `full_only`, only complete batches go: a
    /// response callback should not turn every trickle of spans into its own request.
    fn flush(&mut self, shared: &Rc<RefCell<Shared>>, full_only: bool) {
        loop {
            // The batch and a copy of the collector settings: the borrow must end before the call.
            let (batch, c) = {
                let mut sh = shared.borrow_mut();
                let c = &sh.config.collector;
                let enough = if full_only {
                    sh.buffer.len() >= c.max_batch
                } else {
                    !sh.buffer.is_empty()
                };
                if !enough || self.in_flight.len() >= c.max_in_flight {
                    return;
                }
                let c = c.clone();
                (sh.buffer.take(c.max_batch), c)
            };
            let (body, content_type) = match c.format {
                ExportFormat::ZipkinJson => (zipkin::encode(&batch), zipkin::CONTENT_TYPE),
                ExportFormat::OtlpJson => (otlp::encode(&batch), otlp::CONTENT_TYPE),
            };
            let headers = vec![
                (":method", "POST"),
                (":path", c.path.as_str()),
                (":authority", c.authority.as_str()),
                ("content-type", content_type),
                ("user-agent", USER_AGENT),
                // Export requests are never traced: any proxy they cross sees an unsampled context.
                (b3::SAMPLED, "0"),
            ];
            let spans = batch.len() as u64;
            let timeout = Duration::from_millis(c.timeout_ms);
            match self.dispatch_http_call(
                &c.cluster,
                headers,
                Some(body.as_bytes()),
                vec![],
                timeout,
            ) {
                Ok(token) => {
                    self.in_flight.insert(token, spans);
                }
                Err(status) => {
                    let sh = shared.borrow();
                    sh.metrics.count(Counter::ExportRequestsFailed, 1);
                    sh.metrics.count(Counter::SpansDropped, spans);
                    log(
                        LogLevel::Debug,
                        &format!(
                            "meshtrace: export to cluster {:?} not sent: {status:?}",
                            c.cluster
                        ),
                    );
                }
            }
        }
    }
}

impl Context for Stream {}

impl HttpContext for Stream {
    fn on_http_request_headers(&mut self, _headers: usize, _end_of_stream: bool) -> Action {
        let Ok(mut sh) = self.shared.try_borrow_mut() else {
            return Action::Continue;
        };
        let headers = match hostcalls::get_map_bytes(MapType::HttpRequestHeaders) {
            Ok(h) => h,
            Err(e) => {
                sh.metrics.internal("reading request headers", e);
                return Action::Continue;
            }
        };
        // A value that is not UTF-8 cannot be a valid B3 field; it is read as an invalid one.
        let headers = headers
            .iter()
            .map(|(k, v)| (k.as_str(), std::str::from_utf8(v).unwrap_or("\u{fffd}")));
        let sh = &mut *sh;
        let mut host = HostView {
            rng: &mut sh.rng,
            metrics: &sh.metrics,
        };
        let start = tracer::start(&sh.config, headers, now_ns, &mut host);
        for edit in &start.edits {
            if let Err(e) = hostcalls::set_map_value(
                MapType::HttpRequestHeaders,
                &edit.name,
                edit.value.as_deref(),
            ) {
                sh.metrics.internal("writing a request header", e);
            }
        }
        self.open = start.span;
        Action::Continue
    }

    fn on_http_response_headers(&mut self, _headers: usize, _end_of_stream: bool) -> Action {
        // The CLIENT span of a SERVER+CLIENT pair ends when the upstream's answer arrives.
        if let Some(open) = self.open.as_mut() {
            if open.server_id.is_some() && open.upstream_end_ns.is_none() {
                open.upstream_end_ns = Some(now_ns());
            }
        }
        Action::Continue
    }

    fn on_log(&mut self) {
        let Some(open) = self.open.take() else {
            return;
        };
        let end = StreamEnd {
            now_ns: now_ns(),
            status: property_u64(&["response", "code"]),
            response_flags: property_u64(&["response", "flags"]),
            grpc_status: if open.grpc {
                property_u64(&["response", "grpc_status"])
            } else {
                None
            },
            request_size: property_u64(&["request", "size"]),
            response_size: property_u64(&["response", "size"]),
            protocol: property_string(&["request", "protocol"]),
            peer: property_string(&["source", "address"]),
            upstream_address: property_string(&["upstream", "address"]),
            upstream_cluster: property_string(&["xds", "cluster_name"]),
            listener_direction: property_u64(&["xds", "listener_direction"]),
        };
        let Ok(mut sh) = self.shared.try_borrow_mut() else {
            return;
        };
        let mut dropped = 0;
        for span in tracer::finish(&sh.config, &sh.node, open, end) {
            sh.metrics.count(Counter::SpansRecorded, 1);
            dropped += sh.buffer.push(span);
        }
        sh.metrics.count(Counter::SpansDropped, dropped);
        // The export itself must come from the root context: a call made here would belong to this
        // finished stream and be cancelled with it. Asking the root to tick now is the hand-off.
        if sh.buffer.len() >= sh.config.collector.max_batch && !sh.expedited {
            sh.expedited = true;
            if let Err(e) = hostcalls::set_tick_period(EXPEDITED_TICK) {
                sh.metrics.internal("set_tick_period", e);
            }
        }
    }
}

impl Host for HostView<'_> {
    fn random_u64(&mut self) -> u64 {
        self.rng.next()
    }

    fn count(&mut self, counter: Counter, n: u64) {
        self.metrics.count(counter, n);
    }
}

impl Metrics {
    fn define() -> Metrics {
        let mut m = Metrics::default();
        for c in Counter::ALL {
            m.ids[c.index()] = hostcalls::define_metric(MetricType::Counter, c.name()).ok();
        }
        m
    }

    /// A host call failed: counted and logged at debug; the caller carries on without it.
    fn internal(&self, what: &str, status: Status) {
        self.count(Counter::InternalErrors, 1);
        log(
            LogLevel::Debug,
            &format!("meshtrace: {what} failed: {status:?}"),
        );
    }

    fn count(&self, counter: Counter, n: u64) {
        if n == 0 {
            return;
        }
        if let Some(id) = self.ids[counter.index()] {
            let _ = hostcalls::increment_metric(id, n as i64);
        }
    }
}

impl SplitMix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        crate::ids::mix64(self.0)
    }
}

/// Node id and service name. Istio's `WORKLOAD_NAME.NAMESPACE` names the service as Istio's own
/// tracer would; plain Envoy falls back to the node cluster (`--service-cluster`).
fn read_node(config: &Config) -> Node {
    let id = property_string(&["xds", "node", "id"]).unwrap_or_default();
    let workload = property_string(&["xds", "node", "metadata", "WORKLOAD_NAME"]);
    let namespace = property_string(&["xds", "node", "metadata", "NAMESPACE"]);
    let cluster = property_string(&["xds", "node", "cluster"]);
    let service_name = config
        .service_name
        .clone()
        .or(match (workload, namespace) {
            (Some(w), Some(n)) if !w.is_empty() && !n.is_empty() => Some(format!("{w}.{n}")),
            _ => None,
        })
        .or(cluster.filter(|c| !c.is_empty()))
        .unwrap_or_else(|| "meshtrace".to_string());
    Node { id, service_name }
}

fn property_string(path: &[&str]) -> Option<String> {
    let bytes = hostcalls::get_property(path.to_vec()).ok().flatten()?;
    String::from_utf8(bytes).ok()
}

/// Integer properties arrive as 8 little-endian bytes.
fn property_u64(path: &[&str]) -> Option<u64> {
    let bytes = hostcalls::get_property(path.to_vec()).ok().flatten()?;
    let array: [u8; 8] = bytes.get(..8)?.try_into().ok()?;
    Some(u64::from_le_bytes(array))
}

fn now_ns() -> u64 {
    hostcalls::get_current_time()
        .ok()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

fn random_seed() -> Option<u64> {
    let mut bytes = [0u8; 8];
    getrandom::fill(&mut bytes).ok()?;
    Some(u64::from_le_bytes(bytes))
}

fn log(level: LogLevel, message: &str) {
    let _ = hostcalls::log(level, message);
}
