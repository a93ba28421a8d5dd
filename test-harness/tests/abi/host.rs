//! The test's proxy: every `env` import of proxy-wasm ABI 0.2.1, answering as Envoy does, each able
//! to answer an injected status instead (state.rs `Fault`). Header maps and http calls are in
//! host_maps.rs, the imports a tracer has no use for in host_misc.rs, WASI in wasi.rs.

use wasmtime::{Engine, Linker, Result};

use super::mem::{self, Ctx};
use super::state::{
    BufferShape, HostState, LogLine, BAD_ARGUMENT, BUFFER_TYPES, INVALID_MEMORY_ACCESS, NOT_FOUND,
    OK,
};
use super::{host_maps, host_misc, wasi, wire};

/// Answers the injected status, if this call is to fail.
macro_rules! fault {
    ($c:expr, $name:literal) => {
        if let Some(status) = $c.data_mut().enter($name) {
            return Ok(status);
        }
    };
}
pub(crate) use fault;

pub fn linker(engine: &Engine) -> Result<Linker<HostState>> {
    let mut linker = Linker::new(engine);
    define_log_time(&mut linker)?;
    define_buffers(&mut linker)?;
    define_properties(&mut linker)?;
    define_metrics(&mut linker)?;
    host_maps::define(&mut linker)?;
    host_misc::define(&mut linker)?;
    wasi::define(&mut linker)?;
    Ok(linker)
}

fn define_log_time(l: &mut Linker<HostState>) -> Result<()> {
    l.func_wrap(
        "env",
        "proxy_log",
        |mut c: Ctx<'_>, level: i32, ptr: i32, len: i32| -> Result<i32> {
            let failed = c.data_mut().enter("proxy_log");
            let Some(text) = mem::read_str(&mut c, ptr, len)? else {
                return Ok(INVALID_MEMORY_ACCESS);
            };
            // Kept even when the call is made to fail: a panic message is the best diagnosis.
            let delivered = failed.is_none();
            c.data_mut().logs.push(LogLine {
                level,
                text,
                delivered,
            });
            Ok(failed.unwrap_or(OK))
        },
    )?;
    l.func_wrap("env", "proxy_get_log_level", |mut c: Ctx<'_>, ret: i32| {
        fault!(c, "proxy_get_log_level");
        mem::out_u32(&mut c, ret, 0)
    })?;
    l.func_wrap(
        "env",
        "proxy_get_current_time_nanoseconds",
        |mut c: Ctx<'_>, ret: i32| {
            fault!(c, "proxy_get_current_time_nanoseconds");
            let now = c.data_mut().now();
            mem::out_u64(&mut c, ret, now)
        },
    )?;
    l.func_wrap(
        "env",
        "proxy_set_tick_period_milliseconds",
        |mut c: Ctx<'_>, ms: i32| -> Result<i32> {
            fault!(c, "proxy_set_tick_period_milliseconds");
            c.data_mut().tick_period_ms = Some(ms as u32);
            Ok(OK)
        },
    )?;
    Ok(())
}

/// The bytes `get_buffer_bytes` hands out, after the case's data fault.
fn shaped(state: &HostState, buffer: usize, start: usize, max: usize) -> Option<Vec<u8>> {
    let buf = &state.buffers[buffer];
    if start > buf.len() {
        return None;
    }
    let end = buf.len().min(start.saturating_add(max));
    let mut out = buf[start..end].to_vec();
    match state.data.buffer_shape {
        BufferShape::Exact => {}
        BufferShape::Oversized(extra) => out.extend(
            b"\"}]\xff junk beyond the requested size "
                .iter()
                .cycle()
                .take(extra),
        ),
        BufferShape::Truncated(percent) => out.truncate(out.len() * percent / 100),
    }
    Some(out)
}

fn define_buffers(l: &mut Linker<HostState>) -> Result<()> {
    l.func_wrap(
        "env",
        "proxy_get_buffer_bytes",
        |mut c: Ctx<'_>, kind: i32, start: i32, max: i32, ret_ptr: i32, ret_size: i32| {
            fault!(c, "proxy_get_buffer_bytes");
            let kind = kind as u32 as usize;
            if kind >= BUFFER_TYPES {
                return Ok(BAD_ARGUMENT);
            }
            let (start, max) = (start as u32 as usize, max as u32 as usize);
            match shaped(c.data(), kind, start, max) {
                Some(bytes) => mem::give(&mut c, &bytes, ret_ptr, ret_size),
                None => Ok(BAD_ARGUMENT),
            }
        },
    )?;
    l.func_wrap(
        "env",
        "proxy_get_buffer_status",
        |mut c: Ctx<'_>, kind: i32, len_ptr: i32, flags_ptr: i32| {
            fault!(c, "proxy_get_buffer_status");
            let Some(buf) = c.data().buffers.get(kind as u32 as usize) else {
                return Ok(BAD_ARGUMENT);
            };
            let len = buf.len() as u32;
            match mem::out_u32(&mut c, len_ptr, len)? {
                OK => mem::out_u32(&mut c, flags_ptr, 0),
                status => Ok(status),
            }
        },
    )?;
    l.func_wrap(
        "env",
        "proxy_set_buffer_bytes",
        |mut c: Ctx<'_>, kind: i32, start: i32, size: i32, ptr: i32, len: i32| {
            fault!(c, "proxy_set_buffer_bytes");
            let Some(bytes) = mem::read(&mut c, ptr, len)? else {
                return Ok(INVALID_MEMORY_ACCESS);
            };
            let Some(buf) = c.data_mut().buffers.get_mut(kind as u32 as usize) else {
                return Ok(BAD_ARGUMENT);
            };
            let start = (start as u32 as usize).min(buf.len());
            let end = start.saturating_add(size as u32 as usize).min(buf.len());
            buf.splice(start..end, bytes);
            Ok(OK)
        },
    )?;
    Ok(())
}

fn define_properties(l: &mut Linker<HostState>) -> Result<()> {
    l.func_wrap(
        "env",
        "proxy_get_property",
        |mut c: Ctx<'_>, ptr: i32, len: i32, ret_ptr: i32, ret_size: i32| {
            fault!(c, "proxy_get_property");
            let Some(path) = mem::read(&mut c, ptr, len)? else {
                return Ok(INVALID_MEMORY_ACCESS);
            };
            match c.data().properties.get(&wire::property_key(&path)).cloned() {
                Some(value) => mem::give(&mut c, &value, ret_ptr, ret_size),
                None => Ok(NOT_FOUND),
            }
        },
    )?;
    l.func_wrap(
        "env",
        "proxy_set_property",
        |mut c: Ctx<'_>, ptr: i32, len: i32, value_ptr: i32, value_len: i32| {
            fault!(c, "proxy_set_property");
            let (Some(path), Some(value)) = (
                mem::read(&mut c, ptr, len)?,
                mem::read(&mut c, value_ptr, value_len)?,
            ) else {
                return Ok(INVALID_MEMORY_ACCESS);
            };
            c.data_mut()
                .properties
                .insert(wire::property_key(&path), value);
            Ok(OK)
        },
    )?;
    Ok(())
}

/// The metric's name, for an id `define_metric` handed out.
fn metric(state: &HostState, id: i32) -> Option<String> {
    let index = (id as u32 as usize).checked_sub(1)?;
    state.metric_names.get(index).cloned()
}

fn define_metrics(l: &mut Linker<HostState>) -> Result<()> {
    l.func_wrap(
        "env",
        "proxy_define_metric",
        |mut c: Ctx<'_>, _kind: i32, ptr: i32, len: i32, ret: i32| {
            fault!(c, "proxy_define_metric");
            let Some(name) = mem::read_str(&mut c, ptr, len)? else {
                return Ok(INVALID_MEMORY_ACCESS);
            };
            // Envoy hands out a fresh id per definition; values are kept by name, as /stats shows.
            let state = c.data_mut();
            state.metric_names.push(name.clone());
            state.metric_values.entry(name).or_default();
            let id = state.metric_names.len() as u32;
            mem::out_u32(&mut c, ret, id)
        },
    )?;
    l.func_wrap(
        "env",
        "proxy_increment_metric",
        |mut c: Ctx<'_>, id: i32, delta: i64| -> Result<i32> {
            fault!(c, "proxy_increment_metric");
            let Some(name) = metric(c.data(), id) else {
                return Ok(NOT_FOUND);
            };
            *c.data_mut().metric_values.entry(name).or_default() += delta;
            Ok(OK)
        },
    )?;
    l.func_wrap(
        "env",
        "proxy_record_metric",
        |mut c: Ctx<'_>, id: i32, value: i64| -> Result<i32> {
            fault!(c, "proxy_record_metric");
            let Some(name) = metric(c.data(), id) else {
                return Ok(NOT_FOUND);
            };
            c.data_mut().metric_values.insert(name, value);
            Ok(OK)
        },
    )?;
    l.func_wrap(
        "env",
        "proxy_get_metric",
        |mut c: Ctx<'_>, id: i32, ret: i32| -> Result<i32> {
            fault!(c, "proxy_get_metric");
            let Some(name) = metric(c.data(), id) else {
                return Ok(NOT_FOUND);
            };
            let value = c.data().counter(&name) as u64;
            mem::out_u64(&mut c, ret, value)
        },
    )?;
    Ok(())
}
