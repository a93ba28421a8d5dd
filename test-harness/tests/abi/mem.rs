//! Access to the module's linear memory from inside a host call, the way Envoy does it: out-of-range
//! pointers are the module's bug and answer InvalidMemoryAccess; returned data lives in memory the
//! module allocates itself (`proxy_on_memory_allocate`, or `malloc`).

use wasmtime::{Caller, Error, Extern, Memory, Result};

use super::state::{HostState, INVALID_MEMORY_ACCESS, OK};

pub type Ctx<'a> = Caller<'a, HostState>;

fn memory(c: &mut Ctx<'_>) -> Result<Memory> {
    match c.get_export("memory") {
        Some(Extern::Memory(m)) => Ok(m),
        _ => Err(Error::msg("the module exports no memory named `memory`")),
    }
}

fn range(ptr: i32, len: usize, limit: usize) -> Option<std::ops::Range<usize>> {
    let start = ptr as u32 as usize;
    let end = start.checked_add(len)?;
    (end <= limit).then_some(start..end)
}

/// `None` when the range lies outside memory.
pub fn read(c: &mut Ctx<'_>, ptr: i32, len: i32) -> Result<Option<Vec<u8>>> {
    let mem = memory(c)?;
    let data = mem.data(&*c);
    Ok(range(ptr, len as u32 as usize, data.len()).map(|r| data[r].to_vec()))
}

/// A string argument; `None` when out of bounds. Lossy, because only the test reads it.
pub fn read_str(c: &mut Ctx<'_>, ptr: i32, len: i32) -> Result<Option<String>> {
    Ok(read(c, ptr, len)?.map(|b| String::from_utf8_lossy(&b).into_owned()))
}

pub fn write(c: &mut Ctx<'_>, ptr: i32, bytes: &[u8]) -> Result<bool> {
    let mem = memory(c)?;
    let data = mem.data_mut(&mut *c);
    match range(ptr, bytes.len(), data.len()) {
        Some(r) => {
            data[r].copy_from_slice(bytes);
            Ok(true)
        }
        None => Ok(false),
    }
}

/// Writes an out-param and turns a bad pointer into the status Envoy answers for it.
pub fn out_u32(c: &mut Ctx<'_>, ptr: i32, value: u32) -> Result<i32> {
    Ok(status_of(write(c, ptr, &value.to_le_bytes())?))
}

pub fn out_u64(c: &mut Ctx<'_>, ptr: i32, value: u64) -> Result<i32> {
    Ok(status_of(write(c, ptr, &value.to_le_bytes())?))
}

fn status_of(written: bool) -> i32 {
    if written {
        OK
    } else {
        INVALID_MEMORY_ACCESS
    }
}

/// Memory from the module's allocator; `None` when it answered 0 (or the case simulates that).
/// A trap inside the allocator is returned as an error: it is the module's trap, not a status.
pub fn alloc(c: &mut Ctx<'_>, size: usize) -> Result<Option<i32>> {
    if c.data().alloc_fails() {
        return Ok(None);
    }
    let func = ["proxy_on_memory_allocate", "malloc"]
        .iter()
        .find_map(|name| c.get_export(name).and_then(Extern::into_func))
        .ok_or_else(|| {
            Error::msg("the module exports neither proxy_on_memory_allocate nor malloc")
        })?;
    let func = func.typed::<i32, i32>(&*c)?;
    let ptr = func.call(&mut *c, size as i32)?;
    Ok((ptr != 0).then_some(ptr))
}

/// Hands `bytes` to the module: copied into memory it allocates, then pointer and size written to
/// its out-params. Empty data is returned as (0, 0) without an allocation, as Envoy does.
pub fn give(c: &mut Ctx<'_>, bytes: &[u8], ret_ptr: i32, ret_size: i32) -> Result<i32> {
    give_sized(c, bytes, bytes.len(), ret_ptr, ret_size)
}

/// Like [`give`], but reports `size` (which may disagree with the bytes: data-fault cases).
pub fn give_sized(
    c: &mut Ctx<'_>,
    bytes: &[u8],
    size: usize,
    ret_ptr: i32,
    ret_size: i32,
) -> Result<i32> {
    let mut ptr = 0;
    if !bytes.is_empty() {
        let Some(p) = alloc(c, bytes.len())? else {
            return Ok(INVALID_MEMORY_ACCESS);
        };
        if !write(c, p, bytes)? {
            return Ok(INVALID_MEMORY_ACCESS);
        }
        ptr = p;
    }
    let status = out_u32(c, ret_ptr, ptr as u32)?;
    if status != OK {
        return Ok(status);
    }
    out_u32(c, ret_size, size as u32)
}
