//! The rest of ABI 0.2.1's `env` imports: contexts, streams, shared data and queues, gRPC, foreign
//! functions. A tracer has little use for them, but a module may declare them (the Rust SDK's
//! `hostcalls` declares all), and the host must answer whatever the module calls.

use wasmtime::{Linker, Result};

use super::host::fault;
use super::mem::{self, Ctx};
use super::state::{
    HostState, BAD_ARGUMENT, CAS_MISMATCH, EMPTY, INVALID_MEMORY_ACCESS, NOT_FOUND, OK,
};

pub fn define(l: &mut Linker<HostState>) -> Result<()> {
    define_contexts(l)?;
    define_shared_data(l)?;
    define_queues(l)?;
    define_grpc(l)?;
    Ok(())
}

fn define_contexts(l: &mut Linker<HostState>) -> Result<()> {
    l.func_wrap("env", "proxy_done", |mut c: Ctx<'_>| -> Result<i32> {
        fault!(c, "proxy_done");
        c.data_mut().done_called = true;
        Ok(OK)
    })?;
    l.func_wrap(
        "env",
        "proxy_set_effective_context",
        |mut c: Ctx<'_>, id: i32| -> Result<i32> {
            fault!(c, "proxy_set_effective_context");
            let state = c.data_mut();
            if !state.contexts.contains(&(id as u32)) {
                return Ok(BAD_ARGUMENT);
            }
            state.effective_context = id as u32;
            Ok(OK)
        },
    )?;
    l.func_wrap(
        "env",
        "proxy_continue_stream",
        |mut c: Ctx<'_>, _stream: i32| -> Result<i32> {
            fault!(c, "proxy_continue_stream");
            Ok(OK)
        },
    )?;
    l.func_wrap(
        "env",
        "proxy_close_stream",
        |mut c: Ctx<'_>, stream: i32| -> Result<i32> {
            fault!(c, "proxy_close_stream");
            let state = c.data_mut();
            let at = state.callback;
            state.violations.push(format!(
                "proxy_close_stream({stream}) in {at}: a tracer must not end a request"
            ));
            Ok(OK)
        },
    )?;
    l.func_wrap(
        "env",
        "proxy_send_local_response",
        |mut c: Ctx<'_>,
         code: i32,
         _dp: i32,
         _dl: i32,
         _bp: i32,
         _bl: i32,
         _hp: i32,
         _hl: i32,
         _grpc: i32|
         -> Result<i32> {
            fault!(c, "proxy_send_local_response");
            let state = c.data_mut();
            let at = state.callback;
            state.violations.push(format!(
                "proxy_send_local_response({code}) in {at}: a tracer must not answer a request"
            ));
            Ok(OK)
        },
    )?;
    l.func_wrap(
        "env",
        "proxy_call_foreign_function",
        |mut c: Ctx<'_>,
         _np: i32,
         _nl: i32,
         _ap: i32,
         _al: i32,
         _rp: i32,
         _rs: i32|
         -> Result<i32> {
            fault!(c, "proxy_call_foreign_function");
            // Envoy registers no foreign functions unless extensions add them.
            Ok(NOT_FOUND)
        },
    )?;
    Ok(())
}

fn define_shared_data(l: &mut Linker<HostState>) -> Result<()> {
    l.func_wrap(
        "env",
        "proxy_get_shared_data",
        |mut c: Ctx<'_>, kp: i32, kl: i32, ret_ptr: i32, ret_size: i32, ret_cas: i32| {
            fault!(c, "proxy_get_shared_data");
            let Some(key) = mem::read(&mut c, kp, kl)? else {
                return Ok(INVALID_MEMORY_ACCESS);
            };
            let Some((value, cas)) = c.data().shared_data.get(&key).cloned() else {
                return Ok(NOT_FOUND);
            };
            match mem::give(&mut c, &value, ret_ptr, ret_size)? {
                OK => mem::out_u32(&mut c, ret_cas, cas),
                status => Ok(status),
            }
        },
    )?;
    l.func_wrap(
        "env",
        "proxy_set_shared_data",
        |mut c: Ctx<'_>, kp: i32, kl: i32, vp: i32, vl: i32, cas: i32| {
            fault!(c, "proxy_set_shared_data");
            let (Some(key), Some(value)) = (mem::read(&mut c, kp, kl)?, mem::read(&mut c, vp, vl)?)
            else {
                return Ok(INVALID_MEMORY_ACCESS);
            };
            let entry = c
                .data_mut()
                .shared_data
                .entry(key)
                .or_insert((Vec::new(), 0));
            if cas != 0 && cas as u32 != entry.1 {
                return Ok(CAS_MISMATCH);
            }
            *entry = (value, entry.1 + 1);
            Ok(OK)
        },
    )?;
    Ok(())
}

/// Queue ids are positions in `queues`, plus one.
fn queue(state: &mut HostState, id: i32) -> Option<&mut Vec<Vec<u8>>> {
    let index = (id as u32 as usize).checked_sub(1)?;
    state.queues.get_mut(index).map(|(_, q)| q)
}

fn define_queues(l: &mut Linker<HostState>) -> Result<()> {
    l.func_wrap(
        "env",
        "proxy_register_shared_queue",
        |mut c: Ctx<'_>, np: i32, nl: i32, ret: i32| {
            fault!(c, "proxy_register_shared_queue");
            let Some(name) = mem::read(&mut c, np, nl)? else {
                return Ok(INVALID_MEMORY_ACCESS);
            };
            let queues = &mut c.data_mut().queues;
            let id = match queues.iter().position(|(n, _)| *n == name) {
                Some(i) => i + 1,
                None => {
                    queues.push((name, Vec::new()));
                    queues.len()
                }
            };
            mem::out_u32(&mut c, ret, id as u32)
        },
    )?;
    l.func_wrap(
        "env",
        "proxy_resolve_shared_queue",
        |mut c: Ctx<'_>, _vp: i32, _vl: i32, np: i32, nl: i32, ret: i32| {
            fault!(c, "proxy_resolve_shared_queue");
            let Some(name) = mem::read(&mut c, np, nl)? else {
                return Ok(INVALID_MEMORY_ACCESS);
            };
            match c.data().queues.iter().position(|(n, _)| *n == name) {
                Some(i) => mem::out_u32(&mut c, ret, i as u32 + 1),
                None => Ok(NOT_FOUND),
            }
        },
    )?;
    l.func_wrap(
        "env",
        "proxy_enqueue_shared_queue",
        |mut c: Ctx<'_>, id: i32, vp: i32, vl: i32| {
            fault!(c, "proxy_enqueue_shared_queue");
            let Some(value) = mem::read(&mut c, vp, vl)? else {
                return Ok(INVALID_MEMORY_ACCESS);
            };
            let Some(q) = queue(c.data_mut(), id) else {
                return Ok(NOT_FOUND);
            };
            q.push(value);
            Ok(OK)
        },
    )?;
    l.func_wrap(
        "env",
        "proxy_dequeue_shared_queue",
        |mut c: Ctx<'_>, id: i32, ret_ptr: i32, ret_size: i32| {
            fault!(c, "proxy_dequeue_shared_queue");
            let Some(q) = queue(c.data_mut(), id) else {
                return Ok(NOT_FOUND);
            };
            if q.is_empty() {
                return Ok(EMPTY);
            }
            let value = q.remove(0);
            mem::give(&mut c, &value, ret_ptr, ret_size)
        },
    )?;
    Ok(())
}

/// This proxy has no gRPC services: calls are refused like calls to an unknown cluster.
fn define_grpc(l: &mut Linker<HostState>) -> Result<()> {
    l.func_wrap(
        "env",
        "proxy_grpc_call",
        |mut c: Ctx<'_>,
         _a: i32,
         _b: i32,
         _cc: i32,
         _d: i32,
         _e: i32,
         _f: i32,
         _g: i32,
         _h: i32,
         _i: i32,
         _j: i32,
         _timeout: i32,
         _ret: i32|
         -> Result<i32> {
            fault!(c, "proxy_grpc_call");
            Ok(BAD_ARGUMENT)
        },
    )?;
    l.func_wrap(
        "env",
        "proxy_grpc_stream",
        |mut c: Ctx<'_>,
         _a: i32,
         _b: i32,
         _cc: i32,
         _d: i32,
         _e: i32,
         _f: i32,
         _g: i32,
         _h: i32,
         _ret: i32|
         -> Result<i32> {
            fault!(c, "proxy_grpc_stream");
            Ok(BAD_ARGUMENT)
        },
    )?;
    l.func_wrap(
        "env",
        "proxy_grpc_send",
        |mut c: Ctx<'_>, _token: i32, _p: i32, _l: i32, _eos: i32| -> Result<i32> {
            fault!(c, "proxy_grpc_send");
            Ok(NOT_FOUND)
        },
    )?;
    for name in ["proxy_grpc_cancel", "proxy_grpc_close"] {
        l.func_wrap(
            "env",
            name,
            move |mut c: Ctx<'_>, _token: i32| -> Result<i32> {
                if let Some(status) = c.data_mut().enter(name) {
                    return Ok(status);
                }
                Ok(NOT_FOUND)
            },
        )?;
    }
    l.func_wrap(
        "env",
        "proxy_get_status",
        |mut c: Ctx<'_>, code_ptr: i32, ret_ptr: i32, ret_size: i32| {
            fault!(c, "proxy_get_status");
            match mem::out_u32(&mut c, code_ptr, 0)? {
                OK => mem::give(&mut c, b"", ret_ptr, ret_size),
                status => Ok(status),
            }
        },
    )?;
    Ok(())
}
