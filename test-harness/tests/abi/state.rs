//! What the test host knows and records for one instance: the proxy's side of every host call, the
//! fault to inject and everything the module did, for the assertions afterwards.

use std::collections::{BTreeMap, HashMap, HashSet};

use wasmtime::{StoreLimits, StoreLimitsBuilder};

use super::wire::{self, Pair};

pub const OK: i32 = 0;
pub const NOT_FOUND: i32 = 1;
pub const BAD_ARGUMENT: i32 = 2;
pub const INVALID_MEMORY_ACCESS: i32 = 6;
pub const EMPTY: i32 = 7;
pub const CAS_MISMATCH: i32 = 8;

pub const MAP_REQUEST_HEADERS: i32 = 0;
pub const MAP_CALL_RESPONSE_HEADERS: i32 = 6;
pub const MAP_TYPES: usize = 8;
pub const BUFFER_CALL_RESPONSE_BODY: usize = 4;
pub const BUFFER_VM_CONFIGURATION: usize = 6;
pub const BUFFER_PLUGIN_CONFIGURATION: usize = 7;
pub const BUFFER_TYPES: usize = 8;

/// Where the lifecycle is; faults are scoped by it.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Phase {
    /// `_initialize`: the module's start-up code (std, the SDK's globals).
    Init,
    /// Root context creation, vm_start, configure.
    Start,
    /// Everything after `on_configure` returned.
    Running,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Scope {
    Always,
    AfterInitialize,
    FirstAfterConfigure,
}

/// One import answering `status` instead of doing its work.
#[derive(Clone, Debug)]
pub struct Fault {
    pub import: String,
    pub status: i32,
    pub scope: Scope,
    pub injected: u32,
    /// Callbacks during which the fault fired, in order (deduplicated).
    pub hit_in: Vec<&'static str>,
    pub hit_phases: Vec<Phase>,
}

impl Fault {
    pub fn new(import: &str, status: i32, scope: Scope) -> Fault {
        Fault {
            import: import.to_string(),
            status,
            scope,
            injected: 0,
            hit_in: Vec::new(),
            hit_phases: Vec::new(),
        }
    }
}

/// How `proxy_get_buffer_bytes` misbehaves in the data-fault cases.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum BufferShape {
    Exact,
    /// The requested bytes plus this many bytes of junk.
    Oversized(usize),
    /// Only this share (in percent) of the requested bytes.
    Truncated(usize),
}

/// Malformed data the host hands out, one knob per data-fault case.
#[derive(Clone, Debug)]
pub struct DataFaults {
    /// Raw bytes `get_header_map_pairs` returns for the request headers instead of a serialization.
    pub request_pairs: Option<Vec<u8>>,
    /// `get_header_map_pairs` answers a valid pointer with size 0.
    pub pairs_zero_size: bool,
    pub buffer_shape: BufferShape,
    /// `get_header_map_value` on the http-call response headers answers this status.
    pub call_header_status: Option<i32>,
    /// The module's allocator "returned 0": every call that must hand back memory answers 6.
    pub alloc_fails_from: Option<Phase>,
}

#[derive(Clone, Debug)]
pub struct LogLine {
    pub level: i32,
    pub text: String,
    /// False when the fault made `proxy_log` fail: the module tried, the proxy never showed it.
    pub delivered: bool,
}

#[derive(Clone, Debug)]
pub struct HttpCall {
    pub cluster: String,
    pub headers: Vec<Pair>,
    pub body: Vec<u8>,
    pub timeout_ms: u32,
    pub token: u32,
}

#[derive(Clone, Debug)]
pub struct Edit {
    pub op: &'static str,
    pub map: i32,
    pub key: String,
    pub value: Option<Vec<u8>>,
}

pub struct HostState {
    pub phase: Phase,
    /// The export being called, for attributing faults, edits and traps.
    pub callback: &'static str,
    pub maps: [Vec<Pair>; MAP_TYPES],
    pub buffers: [Vec<u8>; BUFFER_TYPES],
    pub properties: HashMap<Vec<u8>, Vec<u8>>,
    pub shared_data: HashMap<Vec<u8>, (Vec<u8>, u32)>,
    pub queues: Vec<(Vec<u8>, Vec<Vec<u8>>)>,
    pub metric_names: Vec<String>,
    pub metric_values: BTreeMap<String, i64>,
    pub logs: Vec<LogLine>,
    /// What the module wrote to stdout/stderr (std's panic fallback writes here in pieces).
    pub stdio: String,
    pub http_calls: Vec<HttpCall>,
    pub clusters: Vec<String>,
    pub edits: Vec<Edit>,
    /// The module broke the ABI (malformed data) or did what a tracer must never do (answer or
    /// close a request). Every case asserts this stays empty.
    pub violations: Vec<String>,
    pub tick_period_ms: Option<u32>,
    pub next_token: u32,
    pub contexts: HashSet<u32>,
    pub effective_context: u32,
    pub done_called: bool,
    pub clock_ns: u64,
    pub random_state: u64,
    pub fault: Option<Fault>,
    pub data: DataFaults,
    pub calls: BTreeMap<&'static str, u32>,
    pub limits: StoreLimits,
}

impl HostState {
    pub fn new(plugin_config: &[u8]) -> HostState {
        let mut buffers: [Vec<u8>; BUFFER_TYPES] = Default::default();
        buffers[BUFFER_PLUGIN_CONFIGURATION] = plugin_config.to_vec();
        HostState {
            phase: Phase::Init,
            callback: "instantiate",
            maps: Default::default(),
            buffers,
            properties: default_properties(),
            shared_data: HashMap::new(),
            queues: Vec::new(),
            metric_names: Vec::new(),
            metric_values: BTreeMap::new(),
            logs: Vec::new(),
            stdio: String::new(),
            http_calls: Vec::new(),
            clusters: vec!["zipkin".to_string()],
            edits: Vec::new(),
            violations: Vec::new(),
            tick_period_ms: None,
            next_token: 1,
            contexts: HashSet::new(),
            effective_context: 0,
            done_called: false,
            clock_ns: 1_700_000_000_000_000_000,
            random_state: 0x853c_49e6_748f_ea9b,
            fault: None,
            data: DataFaults {
                request_pairs: None,
                pairs_zero_size: false,
                buffer_shape: BufferShape::Exact,
                call_header_status: None,
                alloc_fails_from: None,
            },
            calls: BTreeMap::new(),
            // A module that believes a garbage size must hit a wasm limit, not the test machine's.
            limits: StoreLimitsBuilder::new().memory_size(256 << 20).build(),
        }
    }

    /// Every import starts here: counts the call and says whether to fail it, and with what.
    pub fn enter(&mut self, import: &'static str) -> Option<i32> {
        *self.calls.entry(import).or_default() += 1;
        let (phase, callback) = (self.phase, self.callback);
        let fault = self.fault.as_mut()?;
        if fault.import != import {
            return None;
        }
        let fire = match fault.scope {
            Scope::Always => true,
            Scope::AfterInitialize => phase != Phase::Init,
            Scope::FirstAfterConfigure => phase == Phase::Running && fault.injected == 0,
        };
        if !fire {
            return None;
        }
        fault.injected += 1;
        if !fault.hit_in.contains(&callback) {
            fault.hit_in.push(callback);
        }
        if !fault.hit_phases.contains(&phase) {
            fault.hit_phases.push(phase);
        }
        Some(fault.status)
    }

    pub fn injected(&self) -> u32 {
        self.fault.as_ref().map_or(0, |f| f.injected)
    }

    pub fn alloc_fails(&self) -> bool {
        match self.data.alloc_fails_from {
            None => false,
            Some(Phase::Init) => true,
            Some(Phase::Start) => self.phase != Phase::Init,
            Some(Phase::Running) => self.phase == Phase::Running,
        }
    }

    /// A counter's value by name, summed over every id defined for it (0 when never defined).
    pub fn counter(&self, name: &str) -> i64 {
        self.metric_values.get(name).copied().unwrap_or(0)
    }

    pub fn now(&mut self) -> u64 {
        // Deterministic and strictly increasing, so durations are never 0 and runs are repeatable.
        self.clock_ns += 1_000;
        self.clock_ns
    }

    /// Deterministic "randomness" (splitmix64), so failures reproduce.
    pub fn random_byte(&mut self) -> u8 {
        self.random_state = self.random_state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.random_state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        (z ^ (z >> 31)) as u8
    }

    pub fn delivered_logs(&self, min_level: i32) -> impl Iterator<Item = &LogLine> {
        self.logs
            .iter()
            .filter(move |l| l.delivered && l.level >= min_level)
    }

    /// Error and Critical lines, delivered or not: where a Rust module's panic message ends up.
    pub fn severe_logs(&self) -> String {
        let lines: Vec<String> = self
            .logs
            .iter()
            .filter(|l| l.level >= 4)
            .map(|l| {
                let lost = if l.delivered {
                    ""
                } else {
                    " (log call failed)"
                };
                format!("[{}]{lost} {}", level_name(l.level), one_line(&l.text))
            })
            .chain(
                Some(self.stdio.trim())
                    .filter(|s| !s.is_empty())
                    .map(|s| format!("[stdio] {}", one_line(s))),
            )
            .collect();
        lines.join("\n      ")
    }
}

/// Panic messages span lines ("panicked at file:line:col:\nmessage"); reports keep one per line.
fn one_line(text: &str) -> String {
    text.split('\n')
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

pub fn level_name(level: i32) -> &'static str {
    match level {
        0 => "trace",
        1 => "debug",
        2 => "info",
        3 => "warn",
        4 => "error",
        5 => "critical",
        _ => "level?",
    }
}

/// What Envoy answers for a plain inbound sidecar stream, in the encodings Envoy uses.
fn default_properties() -> HashMap<Vec<u8>, Vec<u8>> {
    let strings: &[(&[&str], &str)] = &[
        (&["source", "address"], "10.0.0.1:50100"),
        (&["destination", "address"], "10.0.0.2:8080"),
        (&["upstream", "address"], "127.0.0.1:8080"),
        (&["request", "protocol"], "HTTP/1.1"),
        (&["response", "code_details"], "via_upstream"),
        (&["xds", "cluster_name"], "inbound|8080||"),
        (&["xds", "route_name"], "default"),
        (
            &["xds", "node", "id"],
            "sidecar~10.0.0.2~app-1.default~default.svc.cluster.local",
        ),
        (&["xds", "node", "cluster"], "app.default"),
        (&["xds", "node", "metadata", "WORKLOAD_NAME"], "app"),
        (&["xds", "node", "metadata", "NAMESPACE"], "default"),
        (&["plugin_name"], "meshtrace"),
    ];
    let integers: &[(&[&str], u64)] = &[
        (&["response", "code"], 200),
        (&["response", "flags"], 0),
        (&["request", "size"], 0),
        (&["request", "total_size"], 120),
        (&["response", "size"], 12),
        (&["response", "total_size"], 160),
        (&["request", "duration"], 1_500_000),
        (&["xds", "listener_direction"], 1),
    ];
    let mut map = HashMap::new();
    for (path, value) in strings {
        map.insert(wire::path(path), value.as_bytes().to_vec());
    }
    for (path, value) in integers {
        map.insert(wire::path(path), value.to_le_bytes().to_vec());
    }
    map
}
