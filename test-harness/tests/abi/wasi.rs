//! The `wasi_snapshot_preview1` functions a Rust wasm32-wasip1 module may import, as small stubs:
//! no files, no arguments, no environment, stdout/stderr captured, a deterministic clock and
//! randomness. Envoy's V8 host is similarly minimal. Every one but `proc_exit` can be made to
//! fail with an errno, like the `env` imports with a status.

use wasmtime::{Error, Linker, Result};

use super::host::fault;
use super::mem::{self, Ctx};
use super::state::HostState;

const ESUCCESS: i32 = 0;
const EBADF: i32 = 8;
const EFAULT: i32 = 21;
const ENOTSUP: i32 = 58;
const ESPIPE: i32 = 70;
const W: &str = "wasi_snapshot_preview1";

/// A bad pointer from the module is EFAULT in WASI (the proxy-wasm status would mean nothing).
fn errno(status: i32) -> i32 {
    if status == 0 {
        ESUCCESS
    } else {
        EFAULT
    }
}

fn written(ok: bool) -> i32 {
    if ok {
        ESUCCESS
    } else {
        EFAULT
    }
}

fn out_pair(c: &mut Ctx<'_>, a: i32, b: i32, va: u32, vb: u32) -> Result<i32> {
    match mem::out_u32(c, a, va)? {
        0 => Ok(errno(mem::out_u32(c, b, vb)?)),
        _ => Ok(EFAULT),
    }
}

pub fn define(l: &mut Linker<HostState>) -> Result<()> {
    define_process(l)?;
    define_clock_random(l)?;
    define_fds(l)?;
    define_preopens(l)?;
    Ok(())
}

fn define_process(l: &mut Linker<HostState>) -> Result<()> {
    for name in ["args_sizes_get", "environ_sizes_get"] {
        l.func_wrap(W, name, move |mut c: Ctx<'_>, count: i32, size: i32| {
            if let Some(errno) = c.data_mut().enter(name) {
                return Ok(errno);
            }
            out_pair(&mut c, count, size, 0, 0)
        })?;
    }
    for name in ["args_get", "environ_get"] {
        l.func_wrap(W, name, move |mut c: Ctx<'_>, _list: i32, _buf: i32| {
            Ok::<_, Error>(c.data_mut().enter(name).unwrap_or(ESUCCESS))
        })?;
    }
    l.func_wrap(W, "sched_yield", |mut c: Ctx<'_>| {
        Ok::<_, Error>(c.data_mut().enter("sched_yield").unwrap_or(ESUCCESS))
    })?;
    l.func_wrap(W, "proc_exit", |c: Ctx<'_>, code: i32| -> Result<()> {
        // Exiting would take the whole proxy down: always a failure, reported as a trap.
        Err(Error::msg(format!(
            "the module called proc_exit({code}) in {}",
            c.data().callback
        )))
    })?;
    Ok(())
}

fn define_clock_random(l: &mut Linker<HostState>) -> Result<()> {
    l.func_wrap(W, "clock_res_get", |mut c: Ctx<'_>, _id: i32, ret: i32| {
        fault!(c, "clock_res_get");
        Ok(errno(mem::out_u64(&mut c, ret, 1_000)?))
    })?;
    l.func_wrap(
        W,
        "clock_time_get",
        |mut c: Ctx<'_>, _id: i32, _precision: i64, ret: i32| {
            fault!(c, "clock_time_get");
            let now = c.data_mut().now();
            Ok(errno(mem::out_u64(&mut c, ret, now)?))
        },
    )?;
    l.func_wrap(W, "random_get", |mut c: Ctx<'_>, ptr: i32, len: i32| {
        fault!(c, "random_get");
        let bytes: Vec<u8> = (0..len as u32)
            .map(|_| c.data_mut().random_byte())
            .collect();
        Ok(written(mem::write(&mut c, ptr, &bytes)?))
    })?;
    l.func_wrap(
        W,
        "poll_oneoff",
        |mut c: Ctx<'_>, _i: i32, _o: i32, _n: i32, _r: i32| {
            fault!(c, "poll_oneoff");
            Ok(ENOTSUP)
        },
    )?;
    Ok(())
}

/// Reads an iovec array: (u32 pointer, u32 length) pairs.
fn gather(c: &mut Ctx<'_>, iovs: i32, count: i32) -> Result<Option<Vec<u8>>> {
    let Some(table) = mem::read(c, iovs, count.saturating_mul(8))? else {
        return Ok(None);
    };
    let mut out = Vec::new();
    for entry in table.chunks_exact(8) {
        let ptr = i32::from_le_bytes([entry[0], entry[1], entry[2], entry[3]]);
        let len = i32::from_le_bytes([entry[4], entry[5], entry[6], entry[7]]);
        let Some(bytes) = mem::read(c, ptr, len)? else {
            return Ok(None);
        };
        out.extend(bytes);
    }
    Ok(Some(out))
}

fn define_fds(l: &mut Linker<HostState>) -> Result<()> {
    l.func_wrap(
        W,
        "fd_write",
        |mut c: Ctx<'_>, fd: i32, iovs: i32, count: i32, nwritten: i32| {
            fault!(c, "fd_write");
            if !(1..=2).contains(&fd) {
                return Ok(EBADF);
            }
            let Some(bytes) = gather(&mut c, iovs, count)? else {
                return Ok(EFAULT);
            };
            let text = String::from_utf8_lossy(&bytes).into_owned();
            c.data_mut().stdio.push_str(&text);
            Ok(errno(mem::out_u32(&mut c, nwritten, bytes.len() as u32)?))
        },
    )?;
    l.func_wrap(
        W,
        "fd_read",
        |mut c: Ctx<'_>, fd: i32, _iovs: i32, _count: i32, nread: i32| {
            fault!(c, "fd_read");
            if fd != 0 {
                return Ok(EBADF);
            }
            Ok(errno(mem::out_u32(&mut c, nread, 0)?))
        },
    )?;
    l.func_wrap(W, "fd_close", |mut c: Ctx<'_>, _fd: i32| {
        Ok::<_, Error>(c.data_mut().enter("fd_close").unwrap_or(EBADF))
    })?;
    l.func_wrap(
        W,
        "fd_seek",
        |mut c: Ctx<'_>, fd: i32, _offset: i64, _whence: i32, _ret: i32| {
            fault!(c, "fd_seek");
            Ok(if (0..=2).contains(&fd) { ESPIPE } else { EBADF })
        },
    )?;
    l.func_wrap(W, "fd_fdstat_get", |mut c: Ctx<'_>, fd: i32, ptr: i32| {
        fault!(c, "fd_fdstat_get");
        if !(0..=2).contains(&fd) {
            return Ok(EBADF);
        }
        // fdstat: filetype 2 (character device), no flags, no rights.
        let mut stat = [0u8; 24];
        stat[0] = 2;
        Ok(written(mem::write(&mut c, ptr, &stat)?))
    })?;
    Ok(())
}

/// No preopened directories: the module gets no file system.
fn define_preopens(l: &mut Linker<HostState>) -> Result<()> {
    l.func_wrap(
        W,
        "fd_prestat_get",
        |mut c: Ctx<'_>, _fd: i32, _ptr: i32| {
            Ok::<_, Error>(c.data_mut().enter("fd_prestat_get").unwrap_or(EBADF))
        },
    )?;
    l.func_wrap(
        W,
        "fd_prestat_dir_name",
        |mut c: Ctx<'_>, _fd: i32, _ptr: i32, _len: i32| {
            Ok::<_, Error>(c.data_mut().enter("fd_prestat_dir_name").unwrap_or(EBADF))
        },
    )?;
    Ok(())
}
