//! Header-map imports and `proxy_http_call`: the calls a tracer makes on every request and export.

use wasmtime::{Linker, Result};

use super::host::fault;
use super::mem::{self, Ctx};
use super::state::{
    Edit, HostState, HttpCall, BAD_ARGUMENT, INVALID_MEMORY_ACCESS, MAP_CALL_RESPONSE_HEADERS,
    MAP_REQUEST_HEADERS, MAP_TYPES, NOT_FOUND, OK,
};
use super::wire::{self, Pair};

pub fn define(l: &mut Linker<HostState>) -> Result<()> {
    define_reads(l)?;
    define_writes(l)?;
    define_http_call(l)
}

fn map_index(map: i32) -> Option<usize> {
    let index = map as u32 as usize;
    (index < MAP_TYPES).then_some(index)
}

fn same_key(a: &[u8], b: &[u8]) -> bool {
    a.eq_ignore_ascii_case(b)
}

fn define_reads(l: &mut Linker<HostState>) -> Result<()> {
    l.func_wrap(
        "env",
        "proxy_get_header_map_pairs",
        |mut c: Ctx<'_>, map: i32, ret_ptr: i32, ret_size: i32| {
            fault!(c, "proxy_get_header_map_pairs");
            let Some(index) = map_index(map) else {
                return Ok(BAD_ARGUMENT);
            };
            let serialized = wire::serialize(&c.data().maps[index]);
            let (raw, zero_size) = (
                c.data().data.request_pairs.clone(),
                c.data().data.pairs_zero_size,
            );
            if map == MAP_REQUEST_HEADERS {
                if let Some(raw) = raw {
                    return mem::give(&mut c, &raw, ret_ptr, ret_size);
                }
                if zero_size {
                    return mem::give_sized(&mut c, &serialized, 0, ret_ptr, ret_size);
                }
            }
            mem::give(&mut c, &serialized, ret_ptr, ret_size)
        },
    )?;
    l.func_wrap(
        "env",
        "proxy_get_header_map_value",
        |mut c: Ctx<'_>, map: i32, key_ptr: i32, key_len: i32, ret_ptr: i32, ret_size: i32| {
            fault!(c, "proxy_get_header_map_value");
            let Some(index) = map_index(map) else {
                return Ok(BAD_ARGUMENT);
            };
            let Some(key) = mem::read(&mut c, key_ptr, key_len)? else {
                return Ok(INVALID_MEMORY_ACCESS);
            };
            if map == MAP_CALL_RESPONSE_HEADERS {
                if let Some(status) = c.data().data.call_header_status {
                    return Ok(status);
                }
            }
            let found = c.data().maps[index]
                .iter()
                .find(|(k, _)| same_key(k, &key))
                .map(|(_, v)| v.clone());
            match found {
                Some(value) => mem::give(&mut c, &value, ret_ptr, ret_size),
                None => Ok(NOT_FOUND),
            }
        },
    )?;
    l.func_wrap(
        "env",
        "proxy_get_header_map_size",
        |mut c: Ctx<'_>, map: i32, ret: i32| {
            fault!(c, "proxy_get_header_map_size");
            let Some(index) = map_index(map) else {
                return Ok(BAD_ARGUMENT);
            };
            let size = wire::serialize(&c.data().maps[index]).len() as u32;
            mem::out_u32(&mut c, ret, size)
        },
    )?;
    Ok(())
}

/// Applies one header edit to the map and records it for the assertions.
fn edit(state: &mut HostState, op: &'static str, map: usize, key: Vec<u8>, value: Option<Vec<u8>>) {
    let entries = &mut state.maps[map];
    match op {
        "add" => entries.push((key.clone(), value.clone().unwrap_or_default())),
        "replace" => {
            entries.retain(|(k, _)| !same_key(k, &key));
            entries.push((key.clone(), value.clone().unwrap_or_default()));
        }
        _ => entries.retain(|(k, _)| !same_key(k, &key)),
    }
    state.edits.push(Edit {
        op,
        map: map as i32,
        key: wire::lossy(&key),
        value,
    });
}

fn define_writes(l: &mut Linker<HostState>) -> Result<()> {
    for (name, op) in [
        ("proxy_add_header_map_value", "add"),
        ("proxy_replace_header_map_value", "replace"),
    ] {
        l.func_wrap(
            "env",
            name,
            move |mut c: Ctx<'_>, map: i32, kp: i32, kl: i32, vp: i32, vl: i32| -> Result<i32> {
                if let Some(status) = c.data_mut().enter(name) {
                    return Ok(status);
                }
                let Some(index) = map_index(map) else {
                    return Ok(BAD_ARGUMENT);
                };
                let (Some(key), Some(value)) =
                    (mem::read(&mut c, kp, kl)?, mem::read(&mut c, vp, vl)?)
                else {
                    return Ok(INVALID_MEMORY_ACCESS);
                };
                edit(c.data_mut(), op, index, key, Some(value));
                Ok(OK)
            },
        )?;
    }
    l.func_wrap(
        "env",
        "proxy_remove_header_map_value",
        |mut c: Ctx<'_>, map: i32, key_ptr: i32, key_len: i32| {
            fault!(c, "proxy_remove_header_map_value");
            let Some(index) = map_index(map) else {
                return Ok(BAD_ARGUMENT);
            };
            let Some(key) = mem::read(&mut c, key_ptr, key_len)? else {
                return Ok(INVALID_MEMORY_ACCESS);
            };
            edit(c.data_mut(), "remove", index, key, None);
            Ok(OK)
        },
    )?;
    l.func_wrap(
        "env",
        "proxy_set_header_map_pairs",
        |mut c: Ctx<'_>, map: i32, ptr: i32, len: i32| {
            fault!(c, "proxy_set_header_map_pairs");
            let Some(index) = map_index(map) else {
                return Ok(BAD_ARGUMENT);
            };
            let Some(raw) = mem::read(&mut c, ptr, len)? else {
                return Ok(INVALID_MEMORY_ACCESS);
            };
            match wire::deserialize(&raw) {
                Ok(pairs) => {
                    c.data_mut().maps[index] = pairs;
                    Ok(OK)
                }
                Err(e) => {
                    let state = c.data_mut();
                    state
                        .violations
                        .push(format!("proxy_set_header_map_pairs: {e}"));
                    Ok(BAD_ARGUMENT)
                }
            }
        },
    )?;
    Ok(())
}

/// Envoy's checks before it starts a call: a parsable header map with the three pseudo-headers,
/// and a cluster it knows.
fn check_call(state: &mut HostState, cluster: &str, headers: &[u8]) -> Result<Vec<Pair>, i32> {
    let headers = wire::deserialize(headers).map_err(|e| {
        state
            .violations
            .push(format!("proxy_http_call headers: {e}"));
        BAD_ARGUMENT
    })?;
    for required in [":method", ":path", ":authority"] {
        if !headers
            .iter()
            .any(|(k, v)| k == required.as_bytes() && !v.is_empty())
        {
            state
                .violations
                .push(format!("proxy_http_call without {required}"));
            return Err(BAD_ARGUMENT);
        }
    }
    if !state.clusters.iter().any(|c| c == cluster) {
        return Err(BAD_ARGUMENT);
    }
    Ok(headers)
}

fn define_http_call(l: &mut Linker<HostState>) -> Result<()> {
    l.func_wrap(
        "env",
        "proxy_http_call",
        |mut c: Ctx<'_>,
         up: i32,
         up_len: i32,
         hp: i32,
         hl: i32,
         bp: i32,
         bl: i32,
         tp: i32,
         tl: i32,
         timeout_ms: i32,
         token_ptr: i32| {
            fault!(c, "proxy_http_call");
            let (Some(cluster), Some(headers), Some(body), Some(_trailers)) = (
                mem::read_str(&mut c, up, up_len)?,
                mem::read(&mut c, hp, hl)?,
                mem::read(&mut c, bp, bl)?,
                mem::read(&mut c, tp, tl)?,
            ) else {
                return Ok(INVALID_MEMORY_ACCESS);
            };
            let headers = match check_call(c.data_mut(), &cluster, &headers) {
                Ok(h) => h,
                Err(status) => return Ok(status),
            };
            let token = c.data().next_token;
            let status = mem::out_u32(&mut c, token_ptr, token)?;
            if status != OK {
                return Ok(status);
            }
            let state = c.data_mut();
            state.next_token += 1;
            state.http_calls.push(HttpCall {
                cluster,
                headers,
                body,
                timeout_ms: timeout_ms as u32,
                token,
            });
            Ok(OK)
        },
    )?;
    Ok(())
}
