//! The proxy-wasm host calls meshtrace makes, declared here and mapped to `Result` on every status.
//!
//! Why not the SDK's `hostcalls`: proxy-wasm 0.2.5 panics on every status a call does not list
//! (envoy#26485, proxy-wasm-rust-sdk#82/#310), and with `panic = "abort"` a panic kills the VM; its
//! dispatcher also unwraps `set_effective_context` and panics on unknown context ids. meshtrace
//! needs a dozen calls, so it declares them itself and no host answer can trap it.
//!
//! ## Audit: each call, what the host can answer, how it is handled
//! Statuses from proxy-wasm-cpp-host `src/exports.cc` (the ABI layer Envoy embeds; read at commit
//! 52a02917), which returns InvalidMemoryAccess for any unreadable pointer and otherwise passes on
//! what Envoy's context answers; the SDK column is what proxy-wasm 0.2.5's `hostcalls` does.
//!
//! | call | host answers | SDK 0.2.5 | here |
//! |---|---|---|---|
//! | `proxy_log` | Ok, BadArgument (level), InvalidMemoryAccess | panics unless Ok | ignored: a log line cannot report its own failure |
//! | `proxy_get_current_time_nanoseconds` | Ok, InvalidMemoryAccess | panics unless Ok | time 0, `internal_errors` |
//! | `proxy_set_tick_period_milliseconds` | Ok, or the context's refusal | panics unless Ok | `internal_errors`; the old period stays |
//! | `proxy_get_buffer_bytes` | Ok, NotFound (no such buffer), BadArgument (type, range), InvalidMemoryAccess | panics on BadArgument, InvalidMemoryAccess | configuration: refuses to start, naming the status; call answer body: not logged |
//! | `proxy_get_header_map_pairs` | Ok, BadArgument (type, or map not available now), InvalidMemoryAccess | panics unless Ok | request continues untouched, `internal_errors` |
//! | `proxy_get_header_map_value` | Ok, NotFound, BadArgument (map not available: the response headers of a call that failed), InvalidMemoryAccess | panics on BadArgument: the VM-killing bug of a collector that breaks its answer | NotFound: `:status` unreadable; other: export counted failed (no response), `internal_errors` |
//! | `proxy_replace_header_map_value`, `proxy_remove_header_map_value` | Ok, BadArgument (map not available or read-only), InvalidMemoryAccess | panics unless Ok | that edit skipped, `internal_errors` |
//! | `proxy_get_property` | Ok, NotFound, SerializationFailure, InternalFailure, BadArgument, InvalidMemoryAccess | panics on BadArgument, InvalidMemoryAccess | NotFound: absent (normal); other: absent + `internal_errors` |
//! | `proxy_http_call` | Ok, BadArgument (unknown cluster, missing pseudo-headers), InternalFailure, InvalidMemoryAccess, other context refusals | panics on InvalidMemoryAccess and unlisted | batch counted `export_failed_not_sent`, spans dropped |
//! | `proxy_define_metric` | Ok, BadArgument, InvalidMemoryAccess | panics unless Ok | that counter is a no-op; logged at warn |
//! | `proxy_increment_metric` | Ok, NotFound, BadArgument | panics on unlisted | ignored: a counter cannot count its own failure |
//! | `proxy_done` | Ok, NotFound (the context was not waiting to be done) | panics unless Ok | `internal_errors`; the host then ends the context itself |
//! | WASI `random_get` (getrandom) | errno | (not the SDK) | ids seeded from the clock, `internal_errors` |
//!
//! Any other value (a future status, a buggy host) is an `Err` too. Values the host returns are
//! adopted only if the module's allocator handed out that block (see `abi::reclaim`), so a host
//! reporting a wrong size or pointer is an `Err`, not an out-of-bounds read.

use std::fmt;
use std::time::Duration;

use super::abi;
use crate::pairs;

/// A non-Ok status from the host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HostError(pub u32);

pub const NOT_FOUND: u32 = 1;
/// What a map that does not parse counts as.
pub const MALFORMED: HostError = HostError(4);

#[derive(Debug, Clone, Copy)]
#[repr(u32)]
pub enum LogLevel {
    Debug = 1,
    Info = 2,
    Warn = 3,
    Critical = 5,
}

#[derive(Debug, Clone, Copy)]
#[repr(u32)]
pub enum MapType {
    Request = 0,
    Response = 2,
    HttpCallResponse = 6,
}

#[derive(Debug, Clone, Copy)]
#[repr(u32)]
pub enum BufferType {
    HttpCallResponseBody = 4,
    PluginConfiguration = 7,
}

const METRIC_COUNTER: u32 = 0;

#[cfg_attr(target_arch = "wasm32", link(wasm_import_module = "env"))]
extern "C" {
    fn proxy_log(level: u32, data: *const u8, size: usize) -> u32;
    fn proxy_get_current_time_nanoseconds(ret: *mut u64) -> u32;
    fn proxy_set_tick_period_milliseconds(period: u32) -> u32;
    fn proxy_get_buffer_bytes(
        kind: u32,
        start: usize,
        max: usize,
        ret_data: *mut *mut u8,
        ret_size: *mut usize,
    ) -> u32;
    fn proxy_get_header_map_pairs(map: u32, ret_data: *mut *mut u8, ret_size: *mut usize) -> u32;
    fn proxy_get_header_map_value(
        map: u32,
        key: *const u8,
        key_size: usize,
        ret_data: *mut *mut u8,
        ret_size: *mut usize,
    ) -> u32;
    fn proxy_replace_header_map_value(
        map: u32,
        key: *const u8,
        key_size: usize,
        value: *const u8,
        value_size: usize,
    ) -> u32;
    fn proxy_remove_header_map_value(map: u32, key: *const u8, key_size: usize) -> u32;
    fn proxy_get_property(
        path: *const u8,
        path_size: usize,
        ret_data: *mut *mut u8,
        ret_size: *mut usize,
    ) -> u32;
    #[allow(clippy::too_many_arguments)]
    fn proxy_http_call(
        upstream: *const u8,
        upstream_size: usize,
        headers: *const u8,
        headers_size: usize,
        body: *const u8,
        body_size: usize,
        trailers: *const u8,
        trailers_size: usize,
        timeout_ms: u32,
        ret_token: *mut u32,
    ) -> u32;
    fn proxy_define_metric(kind: u32, name: *const u8, name_size: usize, ret_id: *mut u32) -> u32;
    fn proxy_increment_metric(id: u32, offset: i64) -> u32;
    fn proxy_done() -> u32;
}

fn check(status: u32) -> Result<(), HostError> {
    match status {
        0 => Ok(()),
        s => Err(HostError(s)),
    }
}

/// A returned value: `Ok(None)` for NotFound, where the call defines NotFound as "absent".
fn returned(status: u32, data: *mut u8, size: usize) -> Result<Option<Vec<u8>>, HostError> {
    match status {
        0 => abi::reclaim(data, size).map(Some),
        NOT_FOUND => Ok(None),
        s => Err(HostError(s)),
    }
}

pub fn log(level: LogLevel, message: &str) {
    // SAFETY: pointer and length of a live &str.
    let _ = unsafe { proxy_log(level as u32, message.as_ptr(), message.len()) };
}

pub fn now_ns() -> Result<u64, HostError> {
    let mut t = 0u64;
    // SAFETY: `t` outlives the call.
    check(unsafe { proxy_get_current_time_nanoseconds(&mut t) })?;
    Ok(t)
}

pub fn set_tick_period(period: Duration) -> Result<(), HostError> {
    let ms = u32::try_from(period.as_millis()).unwrap_or(u32::MAX);
    // SAFETY: no pointers.
    check(unsafe { proxy_set_tick_period_milliseconds(ms) })
}

pub fn buffer(kind: BufferType, max: usize) -> Result<Option<Vec<u8>>, HostError> {
    let (mut data, mut size) = (std::ptr::null_mut(), 0usize);
    // SAFETY: out-params outlive the call.
    let status = unsafe { proxy_get_buffer_bytes(kind as u32, 0, max, &mut data, &mut size) };
    let mut bytes = returned(status, data, size)?;
    // A host may hand back more than asked for: only `max` bytes are the answer.
    if let Some(b) = bytes.as_mut() {
        b.truncate(max);
    }
    Ok(bytes)
}

/// One header map, serialized as the ABI defines it (`pairs::parse` reads it).
pub fn header_map(map: MapType) -> Result<Vec<u8>, HostError> {
    let (mut data, mut size) = (std::ptr::null_mut(), 0usize);
    // SAFETY: out-params outlive the call.
    let status = unsafe { proxy_get_header_map_pairs(map as u32, &mut data, &mut size) };
    check(status)?;
    abi::reclaim(data, size)
}

pub fn header(map: MapType, name: &str) -> Result<Option<Vec<u8>>, HostError> {
    let (mut data, mut size) = (std::ptr::null_mut(), 0usize);
    // SAFETY: key is a live &str; out-params outlive the call.
    let status = unsafe {
        proxy_get_header_map_value(map as u32, name.as_ptr(), name.len(), &mut data, &mut size)
    };
    returned(status, data, size)
}

/// Sets (`Some`) or removes (`None`) a header.
pub fn set_header(map: MapType, name: &str, value: Option<&str>) -> Result<(), HostError> {
    // SAFETY: key and value are live &strs.
    check(unsafe {
        match value {
            Some(v) => proxy_replace_header_map_value(
                map as u32,
                name.as_ptr(),
                name.len(),
                v.as_ptr(),
                v.len(),
            ),
            None => proxy_remove_header_map_value(map as u32, name.as_ptr(), name.len()),
        }
    })
}

pub fn property(path: &[&str]) -> Result<Option<Vec<u8>>, HostError> {
    let mut encoded = Vec::with_capacity(64);
    for segment in path {
        encoded.extend_from_slice(segment.as_bytes());
        encoded.push(0);
    }
    encoded.pop();
    let (mut data, mut size) = (std::ptr::null_mut(), 0usize);
    // SAFETY: path is a live Vec; out-params outlive the call.
    let status =
        unsafe { proxy_get_property(encoded.as_ptr(), encoded.len(), &mut data, &mut size) };
    returned(status, data, size)
}

/// Dispatches a call to `cluster`; returns its token.
pub fn http_call(
    cluster: &str,
    headers: &[(&str, &str)],
    body: &[u8],
    timeout: Duration,
) -> Result<u32, HostError> {
    let headers = pairs::serialize(headers);
    let trailers = pairs::serialize(&[]);
    let timeout_ms = u32::try_from(timeout.as_millis()).unwrap_or(u32::MAX);
    let mut token = 0u32;
    // SAFETY: every pointer is a live slice for the duration of the call.
    check(unsafe {
        proxy_http_call(
            cluster.as_ptr(),
            cluster.len(),
            headers.as_ptr(),
            headers.len(),
            body.as_ptr(),
            body.len(),
            trailers.as_ptr(),
            trailers.len(),
            timeout_ms,
            &mut token,
        )
    })?;
    Ok(token)
}

pub fn define_counter(name: &str) -> Result<u32, HostError> {
    let mut id = 0u32;
    // SAFETY: name is a live &str; `id` outlives the call.
    check(unsafe { proxy_define_metric(METRIC_COUNTER, name.as_ptr(), name.len(), &mut id) })?;
    Ok(id)
}

pub fn increment(id: u32, n: u64) -> Result<(), HostError> {
    let n = i64::try_from(n).unwrap_or(i64::MAX);
    // SAFETY: no pointers.
    check(unsafe { proxy_increment_metric(id, n) })
}

/// Tells the host that the root context, which answered `on_done` with false, has finished.
pub fn done() -> Result<(), HostError> {
    // SAFETY: no pointers.
    check(unsafe { proxy_done() })
}

impl fmt::Display for HostError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = match self.0 {
            1 => "NotFound",
            2 => "BadArgument",
            3 => "SerializationFailure",
            4 => "ParseFailure",
            5 => "BadExpression",
            6 => "InvalidMemoryAccess",
            7 => "Empty",
            8 => "CasMismatch",
            9 => "ResultMismatch",
            10 => "InternalFailure",
            11 => "BrokenConnection",
            12 => "Unimplemented",
            _ => "unknown status",
        };
        write!(f, "{name} ({})", self.0)
    }
}
