//! The proxy-wasm adapter: the only module that talks to the host. It gathers inputs for the core,
//! applies the core's outputs, and turns every failed host call into a debug log line plus the
//! `internal_errors` counter, never into a failed request (missing properties are normal, not
//! errors). `host` declares the calls (with the audit of what each can answer), `abi` the entry
//! points; this file is the glue between them and the core.

mod abi;
mod host;

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::time::Duration;

use crate::buffer::SpanBuffer;
use crate::config::{self, Config, ExportFormat};
use crate::export::scheduler::{self, Answer, Reply, Scheduler, Tally};
use crate::export::{otlp, zipkin};
use crate::metrics::Counter;
use crate::propagation::b3;
use crate::tracer::{self, Host, Node, OpenSpan, StreamEnd};
use host::{BufferType, HostError, LogLevel, MapType};

/// How soon the root context ticks after a stream fills a batch.
const EXPEDITED_TICK: Duration = Duration::from_millis(1);
const USER_AGENT: &str = "meshtrace";
const STATUS: &str = ":status";
/// How much of a failed export's answer goes into the debug log.
const LOGGED_BODY: usize = 256;

/// State one VM's root context shares with its streams (a VM is single-threaded).
struct Shared {
    config: Config,
    node: Node,
    buffer: SpanBuffer,
    metrics: Metrics,
    rng: SplitMix,
    scheduler: Scheduler,
}

#[derive(Default)]
pub(crate) struct Root {
    shared: Option<Rc<RefCell<Shared>>>,
}

pub(crate) struct Stream {
    shared: Rc<RefCell<Shared>>,
    open: Option<OpenSpan>,
    /// The `:status` of the response headers this filter passed on (sampled streams only).
    status: Option<u64>,
}

/// Counter ids from `define_metric`; a missing id (define failed) makes that counter a no-op.
/// Counts accumulate in the VM and reach the host on the root's tick (`publish`): one
/// `increment_metric` per changed counter per tick instead of three or four per request, so
/// `/stats` lags by at most one tick period, `scheduler::tick_period_ms` (≤ 1 s; bench/README.md
/// has the before/after).
#[derive(Default)]
struct Metrics {
    ids: [Option<u32>; Counter::ALL.len()],
    pending: [Cell<u64>; Counter::ALL.len()],
}

/// The core's view of the host for one call.
struct HostView<'a> {
    rng: &'a mut SplitMix,
    metrics: &'a Metrics,
}

/// splitmix64: ids need to be unique, not secret, and drawing them must not cost a host call each.
struct SplitMix(u64);

impl Root {
    /// Reads and checks the plugin configuration; `false` refuses to start, with the reason logged.
    fn configure(&mut self, size: usize) -> bool {
        let raw = match read_configuration(size) {
            Ok(raw) => raw,
            Err(e) => {
                let msg = format!("meshtrace: plugin configuration unreadable: {e}");
                log(LogLevel::Critical, &msg);
                return false;
            }
        };
        let config = match config::parse(&raw) {
            Ok(c) => c,
            Err(e) => {
                let msg = format!("meshtrace: invalid configuration: {e}");
                log(LogLevel::Critical, &msg);
                return false;
            }
        };
        let metrics = Metrics::define();
        let node = read_node(&config, &metrics);
        let seed = random_seed().unwrap_or_else(|| {
            metrics.count(Counter::InternalErrors, 1);
            log(
                LogLevel::Warn,
                "meshtrace: no host randomness, ids seeded from the clock",
            );
            now_ns(&metrics)
        });
        let period = Duration::from_millis(scheduler::tick_period_ms(&config.collector));
        metrics.check("set_tick_period", host::set_tick_period(period));
        let scheduler = Scheduler::starting(now_ns(&metrics), &config.collector);
        log(
            LogLevel::Info,
            &format!(
                "meshtrace: configured: service {}, rate {}, collector cluster {}",
                config::quoted(&node.service_name),
                config::shown(config.sampling.rate),
                config::quoted(&config.collector.cluster)
            ),
        );
        let mut buffer = SpanBuffer::new(config.collector.max_queue);
        // A second configure of the same root keeps the spans already buffered.
        if let Some(old) = self.shared.take() {
            let old = &mut *old.borrow_mut();
            old.metrics.publish();
            let old = &mut old.buffer;
            let displaced: u64 = old.drain().into_iter().map(|s| buffer.push(s)).sum();
            metrics.apply(&scheduler::displaced(displaced));
        }
        self.shared = Some(Rc::new(RefCell::new(Shared {
            buffer,
            config,
            node,
            metrics,
            rng: SplitMix(seed),
            scheduler,
        })));
        true
    }

    fn create_stream(&self) -> Option<Stream> {
        let shared = self.shared.clone()?;
        Some(Stream {
            shared,
            open: None,
            status: None,
        })
    }

    fn tick(&mut self) {
        let Some(shared) = self.shared.clone() else {
            return;
        };
        // An expedited tick sends full batches only; the remainder waits for the regular flush, so
        // a burst does not leave a short batch holding the last in-flight slot.
        let expedited = shared.borrow().scheduler.is_expedited();
        let now = flush_time(&shared.borrow().metrics);
        if expedited || flush_due(&mut shared.borrow_mut(), now) {
            flush(&shared, expedited, now);
        }
        let mut sh = shared.borrow_mut();
        sh.metrics.publish();
        if sh.scheduler.end_expedited() {
            let period = Duration::from_millis(scheduler::tick_period_ms(&sh.config.collector));
            sh.metrics
                .check("set_tick_period", host::set_tick_period(period));
        }
    }

    /// An export call ended. 0 headers is how Envoy reports a call that failed before or while the
    /// answer arrived (reset, timeout, body over its buffer limit): there is no `:status` to read.
    fn call_answered(&mut self, token: u32, headers: usize, body_size: usize) {
        let Some(shared) = self.shared.clone() else {
            return;
        };
        let now = {
            let sh = &mut *shared.borrow_mut();
            let answer = if headers == 0 {
                Answer::NoResponse
            } else {
                read_status(&sh.metrics)
            };
            let now = flush_time(&sh.metrics);
            let reply = Reply {
                answer,
                retry_after_ms: scheduler::reads_retry_after(answer)
                    .then(|| read_retry_after(&sh.metrics))
                    .flatten(),
                now_ns: now.unwrap_or(0),
                jitter: sh.rng.next(),
            };
            let tally = sh
                .scheduler
                .answered(token, reply, &mut sh.buffer, &sh.config.collector);
            sh.metrics.apply(&tally);
            if answer_failed(answer) {
                let body = if headers > 0 && body_size > 0 {
                    read_body(body_size)
                } else {
                    String::new()
                };
                let msg = format!("meshtrace: export call {token} failed: {answer:?} {body}");
                log(LogLevel::Debug, &msg);
            }
            now
        };
        flush(&shared, true, now);
        self.finish_draining();
    }

    /// The root context is asked to go away: everything it holds is sent at once (see
    /// `Scheduler::drain`), so the wait is bounded by one `timeout_ms`. Returns whether it is done
    /// now; otherwise `call_answered` calls `proxy_done` after the last answer.
    fn shut_down(&mut self) -> bool {
        let Some(shared) = self.shared.clone() else {
            return true;
        };
        let now = flush_time(&shared.borrow().metrics);
        shared.borrow_mut().scheduler.drain();
        flush(&shared, false, now);
        let done = shared.borrow().scheduler.in_flight() == 0;
        if done {
            self.discard();
        }
        done
    }

    /// What the root context still holds when it ends is counted as dropped, never lost silently.
    fn discard(&mut self) {
        if let Some(shared) = self.shared.take() {
            let sh = &mut *shared.borrow_mut();
            let tally = sh.scheduler.shut_down(&mut sh.buffer);
            sh.metrics.apply(&tally);
            sh.metrics.publish();
        }
    }

    /// While draining, the last answer ends the root context.
    fn finish_draining(&mut self) {
        let finished = self.shared.as_ref().is_some_and(|sh| {
            let sh = sh.borrow();
            sh.scheduler.is_draining() && sh.scheduler.in_flight() == 0
        });
        if finished {
            self.discard();
            if let Err(e) = host::done() {
                log(
                    LogLevel::Debug,
                    &format!("meshtrace: proxy_done failed: {e}"),
                );
            }
        }
    }
}

/// Ticks publish counters every second; a regular flush runs once per flush interval, a retry
/// when it is due (every tick when the clock cannot be read: exporting early beats holding spans).
fn flush_due(sh: &mut Shared, now: Option<u64>) -> bool {
    match now {
        Some(now) => sh
            .scheduler
            .flush_due(now, &sh.buffer, &sh.config.collector),
        None => true,
    }
}

/// The clock for export decisions; `None` when it cannot be read (counted).
fn flush_time(m: &Metrics) -> Option<u64> {
    match host::now_ns() {
        Ok(now) => Some(now),
        Err(e) => {
            m.internal("reading the clock", e);
            None
        }
    }
}

/// Sends batches while there is room in flight (see `Scheduler::next_batch` for `full_only`).
/// Without a clock every retry counts as due.
fn flush(shared: &Rc<RefCell<Shared>>, full_only: bool, now: Option<u64>) {
    let mut sh = shared.borrow_mut();
    let sh = &mut *sh;
    let c = &sh.config.collector;
    let now = now.unwrap_or(u64::MAX);
    while let Some(batch) = sh.scheduler.next_batch(&mut sh.buffer, c, full_only, now) {
        let (body, content_type) = match c.format {
            ExportFormat::ZipkinJson => (zipkin::encode(&batch.spans), zipkin::CONTENT_TYPE),
            ExportFormat::OtlpJson => (otlp::encode(&batch.spans), otlp::CONTENT_TYPE),
        };
        let headers = [
            (":method", "POST"),
            (":path", c.path.as_str()),
            (":authority", c.authority.as_str()),
            ("content-type", content_type),
            ("user-agent", USER_AGENT),
            // Export requests are never traced: any proxy they cross sees an unsampled context.
            (b3::SAMPLED, "0"),
        ];
        let timeout = Duration::from_millis(c.timeout_ms);
        let tally = match host::http_call(&c.cluster, &headers, body.as_bytes(), timeout) {
            Ok(token) => sh.scheduler.sent(token, batch),
            Err(e) => {
                let cluster = config::quoted(&c.cluster);
                let msg = format!("meshtrace: export to cluster {cluster} not sent: {e}");
                log(LogLevel::Debug, &msg);
                Scheduler::not_sent(&batch)
            }
        };
        sh.metrics.apply(&tally);
    }
}

impl Stream {
    fn request_headers(&mut self) {
        let Ok(mut sh) = self.shared.try_borrow_mut() else {
            return;
        };
        let sh = &mut *sh;
        let map = match host::header_map(MapType::Request) {
            Ok(m) => m,
            Err(e) => return sh.metrics.internal("reading request headers", e),
        };
        let Ok(pairs) = crate::pairs::parse(&map) else {
            return sh
                .metrics
                .internal("parsing request headers", host::MALFORMED);
        };
        // A value that is not UTF-8 cannot be a valid B3 field; it is read as an invalid one.
        let headers = pairs
            .iter()
            .map(|(k, v)| (*k, std::str::from_utf8(v).unwrap_or("\u{fffd}")));
        let metrics = &sh.metrics;
        let mut view = HostView {
            rng: &mut sh.rng,
            metrics,
        };
        let start = tracer::start(&sh.config, headers, || now_ns(metrics), &mut view);
        for edit in &start.edits {
            let done = host::set_header(MapType::Request, &edit.name, edit.value.as_deref());
            metrics.check("writing a request header", done);
        }
        self.open = start.span;
    }

    /// The CLIENT span of a SERVER+CLIENT pair ends when the upstream's answer arrives. The status
    /// is read here from `:status`, a header read being about half the cost of the `response.code`
    /// property at stream end (which stays the fallback: a reset stream has no response headers).
    fn response_headers(&mut self) {
        let Some(open) = self.open.as_mut() else {
            return;
        };
        let Ok(sh) = self.shared.try_borrow() else {
            return;
        };
        if open.server_id.is_some() && open.upstream_end_ns.is_none() {
            open.upstream_end_ns = Some(now_ns(&sh.metrics));
        }
        match host::header(MapType::Response, STATUS) {
            Ok(v) => self.status = v.as_deref().and_then(parse_status).map(u64::from),
            Err(e) => sh.metrics.internal("reading the response :status", e),
        }
    }

    fn log(&mut self) {
        let Some(open) = self.open.take() else {
            return;
        };
        let Ok(mut sh) = self.shared.try_borrow_mut() else {
            return;
        };
        let sh = &mut *sh;
        let end = read_stream_end(&sh.metrics, &sh.config, &open, self.status);
        let mut displaced = 0;
        for span in tracer::finish(&sh.config, &sh.node, open, end) {
            sh.metrics.count(Counter::SpansRecorded, 1);
            if sh.scheduler.is_draining() {
                // The root's last exports are out: a span ending now has no call to go in, and
                // the root may not tick again to publish the count.
                sh.metrics.apply(&scheduler::too_late(1));
                sh.metrics.publish();
                continue;
            }
            displaced += sh.buffer.push(span);
        }
        sh.metrics.apply(&scheduler::displaced(displaced));
        // The export itself must come from the root context: a call made here would belong to this
        // finished stream and be cancelled with it. Asking the root to tick now is the hand-off.
        if sh.scheduler.expedite(&sh.buffer, &sh.config.collector) {
            sh.metrics
                .check("set_tick_period", host::set_tick_period(EXPEDITED_TICK));
        }
    }
}

/// One property read per value (about 0.7 µs each): only what the span will use is read.
fn read_stream_end(m: &Metrics, cfg: &Config, open: &OpenSpan, status: Option<u64>) -> StreamEnd {
    StreamEnd {
        now_ns: now_ns(m),
        status: status.or_else(|| property_u64(m, &["response", "code"])),
        response_flags: property_u64(m, &["response", "flags"]),
        grpc_status: open
            .grpc
            .then(|| property_u64(m, &["response", "grpc_status"]))
            .flatten(),
        request_size: property_u64(m, &["request", "size"]),
        response_size: property_u64(m, &["response", "size"]),
        protocol: property_string(m, &["request", "protocol"]),
        peer: property_string(m, &["source", "address"]),
        upstream_address: property_string(m, &["upstream", "address"]),
        upstream_cluster: property_string(m, &["xds", "cluster_name"]),
        listener_direction: tracer::reads_listener_direction(cfg, open)
            .then(|| property_u64(m, &["xds", "listener_direction"]))
            .flatten(),
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
            match host::define_counter(c.name()) {
                Ok(id) => m.ids[c.index()] = Some(id),
                Err(e) => log(
                    LogLevel::Warn,
                    &format!("meshtrace: counter {} not defined: {e}", c.name()),
                ),
            }
        }
        m
    }

    /// A host call failed: counted and logged at debug; the caller carries on without it.
    fn internal(&self, what: &str, e: HostError) {
        self.count(Counter::InternalErrors, 1);
        log(LogLevel::Debug, &format!("meshtrace: {what} failed: {e}"));
    }

    fn check<T>(&self, what: &str, result: Result<T, HostError>) {
        if let Err(e) = result {
            self.internal(what, e);
        }
    }

    fn apply(&self, tally: &Tally) {
        for &(counter, n) in tally {
            self.count(counter, n);
        }
    }

    fn count(&self, counter: Counter, n: u64) {
        let pending = &self.pending[counter.index()];
        pending.set(pending.get().saturating_add(n));
    }

    /// Hands the accumulated counts to the host: on every tick, and before the root goes away.
    fn publish(&self) {
        for (id, pending) in self.ids.iter().zip(&self.pending) {
            let n = pending.take();
            if let (Some(id), true) = (id, n > 0) {
                // A counter cannot count its own failure; the host has said why in its own log.
                let _ = host::increment(*id, n);
            }
        }
    }
}

impl SplitMix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        crate::ids::mix64(self.0)
    }
}

/// An empty configuration (size 0) is `{}`'s defaults, as `config::parse` reads it; a configuration
/// the host announced but cannot hand over is an error, not a silent default.
/// A short answer counts as unreadable too: parsing what arrived could start on defaults (an empty
/// read) or on half a document.
fn read_configuration(size: usize) -> Result<Vec<u8>, String> {
    if size == 0 {
        return Ok(Vec::new());
    }
    let raw = host::buffer(BufferType::PluginConfiguration, size)
        .map_err(|e| e.to_string())?
        .ok_or_else(|| HostError(host::NOT_FOUND).to_string())?;
    if raw.len() < size {
        return Err(format!("host handed over {} of {size} bytes", raw.len()));
    }
    Ok(raw)
}

fn read_status(m: &Metrics) -> Answer {
    match host::header(MapType::HttpCallResponse, STATUS) {
        Ok(Some(v)) => parse_status(&v).map_or(Answer::Unreadable, Answer::Status),
        Ok(None) => Answer::Unreadable,
        Err(e) => {
            m.internal("reading the export answer's :status", e);
            Answer::NoResponse
        }
    }
}

const RETRY_AFTER: &str = "retry-after";

fn read_retry_after(m: &Metrics) -> Option<u64> {
    match host::header(MapType::HttpCallResponse, RETRY_AFTER) {
        Ok(v) => scheduler::parse_retry_after(&v?),
        Err(e) => {
            m.internal("reading the export answer's retry-after", e);
            None
        }
    }
}

fn parse_status(v: &[u8]) -> Option<u16> {
    std::str::from_utf8(v).ok()?.parse().ok()
}

fn answer_failed(answer: Answer) -> bool {
    !matches!(answer, Answer::Status(s) if (200..300).contains(&s))
}

fn read_body(size: usize) -> String {
    match host::buffer(BufferType::HttpCallResponseBody, size.min(LOGGED_BODY)) {
        Ok(Some(b)) => String::from_utf8_lossy(&b).into_owned(),
        _ => String::new(),
    }
}

/// Node id and service name. Istio's `WORKLOAD_NAME.NAMESPACE` names the service as Istio's own
/// tracer would; plain Envoy falls back to the node cluster (`--service-cluster`).
fn read_node(config: &Config, m: &Metrics) -> Node {
    let id = property_string(m, &["xds", "node", "id"]).unwrap_or_default();
    let workload = property_string(m, &["xds", "node", "metadata", "WORKLOAD_NAME"]);
    let namespace = property_string(m, &["xds", "node", "metadata", "NAMESPACE"]);
    let cluster = property_string(m, &["xds", "node", "cluster"]);
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

/// A property's bytes; absent (NotFound) is an ordinary answer, any other failure is counted.
fn property(m: &Metrics, path: &[&str]) -> Option<Vec<u8>> {
    match host::property(path) {
        Ok(v) => v,
        Err(e) => {
            m.internal("reading a property", e);
            None
        }
    }
}

fn property_string(m: &Metrics, path: &[&str]) -> Option<String> {
    String::from_utf8(property(m, path)?).ok()
}

/// Integer properties arrive as 8 little-endian bytes.
fn property_u64(m: &Metrics, path: &[&str]) -> Option<u64> {
    let bytes = property(m, path)?;
    let array: [u8; 8] = bytes.get(..8)?.try_into().ok()?;
    Some(u64::from_le_bytes(array))
}

fn now_ns(m: &Metrics) -> u64 {
    match host::now_ns() {
        Ok(t) => t,
        Err(e) => {
            m.internal("reading the clock", e);
            0
        }
    }
}

fn random_seed() -> Option<u64> {
    let mut bytes = [0u8; 8];
    getrandom::fill(&mut bytes).ok()?;
    Some(u64::from_le_bytes(bytes))
}

fn log(level: LogLevel, message: &str) {
    host::log(level, message);
}
