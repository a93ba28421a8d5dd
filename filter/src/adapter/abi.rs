//! The proxy-wasm ABI 0.2.1 entry points: which context a callback is for, and the memory the host
//! writes its answers into. Written here instead of taken from the SDK's dispatcher because that one
//! panics on unknown context ids and on failed `set_effective_context`; here an unknown id or a
//! re-entered callback is a no-op that answers "continue".

use std::alloc::{alloc, dealloc, Layout};
use std::cell::RefCell;

use super::host::{self, HostError, LogLevel};
use super::{Root, Stream};
use crate::export::scheduler::IdMap;

/// `Continue` for header callbacks: meshtrace never pauses a stream.
const CONTINUE: u32 = 0;
const INVALID_MEMORY_ACCESS: u32 = 6;

thread_local! {
    static CONTEXTS: RefCell<Contexts> = RefCell::new(Contexts::default());
    /// Blocks handed to the host by `proxy_on_memory_allocate` and not yet taken back: address →
    /// size. A value is adopted only from a block listed here, so a faulty host's pointer or size is
    /// an error and never an out-of-bounds read or a bad free.
    static BLOCKS: RefCell<IdMap<usize, usize>> = RefCell::new(IdMap::default());
}

#[derive(Default)]
struct Contexts {
    roots: IdMap<u32, Root>,
    streams: IdMap<u32, Stream>,
}

/// Runs `f` on the contexts; a re-entered call (the host calling back while a callback runs) gets
/// `None` instead of a double borrow.
fn with<R>(f: impl FnOnce(&mut Contexts) -> R) -> Option<R> {
    CONTEXTS.with(|c| c.try_borrow_mut().ok().map(|mut c| f(&mut c)))
}

#[no_mangle]
pub extern "C" fn proxy_abi_version_0_2_1() {}

#[cfg(target_os = "wasi")]
extern "C" {
    fn __wasm_call_ctors();
}

/// The reactor entry point Envoy calls once after instantiation.
#[no_mangle]
pub extern "C" fn _initialize() {
    #[cfg(target_os = "wasi")]
    // SAFETY: the linker-generated constructor runner, called once, before anything else.
    unsafe {
        __wasm_call_ctors();
    }
    std::panic::set_hook(Box::new(|info| {
        host::log(LogLevel::Critical, &format!("meshtrace: panic: {info}"));
    }));
}

#[no_mangle]
pub extern "C" fn proxy_on_vm_start(_root: u32, _vm_config_size: usize) -> bool {
    true
}

#[no_mangle]
pub extern "C" fn proxy_on_context_create(id: u32, root_id: u32) {
    with(|c| {
        if root_id == 0 {
            c.roots.insert(id, Root::default());
        } else if let Some(stream) = c.roots.get(&root_id).and_then(Root::create_stream) {
            c.streams.insert(id, stream);
        }
    });
}

#[no_mangle]
pub extern "C" fn proxy_on_configure(id: u32, size: usize) -> bool {
    with(|c| c.roots.get_mut(&id).is_some_and(|r| r.configure(size))).unwrap_or(false)
}

#[no_mangle]
pub extern "C" fn proxy_on_tick(id: u32) {
    with(|c| c.roots.get_mut(&id).map(Root::tick));
}

#[no_mangle]
pub extern "C" fn proxy_on_http_call_response(
    id: u32,
    token: u32,
    headers: usize,
    body_size: usize,
    _trailers: usize,
) {
    with(|c| {
        c.roots
            .get_mut(&id)
            .map(|r| r.call_answered(token, headers, body_size))
    });
}

#[no_mangle]
pub extern "C" fn proxy_on_request_headers(id: u32, _headers: usize, _end_of_stream: bool) -> u32 {
    with(|c| c.streams.get_mut(&id).map(Stream::request_headers));
    CONTINUE
}

#[no_mangle]
pub extern "C" fn proxy_on_response_headers(id: u32, _headers: usize, _end_of_stream: bool) -> u32 {
    with(|c| c.streams.get_mut(&id).map(Stream::response_headers));
    CONTINUE
}

#[no_mangle]
pub extern "C" fn proxy_on_log(id: u32) {
    with(|c| c.streams.get_mut(&id).map(Stream::log));
}

/// A root context asked to go away first sends what it holds: false until the last export
/// answers (it then calls `proxy_done`). Streams are simply done.
#[no_mangle]
pub extern "C" fn proxy_on_done(id: u32) -> bool {
    with(|c| c.roots.get_mut(&id).is_none_or(Root::shut_down)).unwrap_or(true)
}

/// A root deleted with spans still held (the host did not wait) counts them as dropped.
#[no_mangle]
pub extern "C" fn proxy_on_delete(id: u32) {
    with(|c| {
        if c.streams.remove(&id).is_none() {
            if let Some(mut root) = c.roots.remove(&id) {
                root.discard();
            }
        }
    });
}

/// Memory for a value the host returns; null when it cannot be had (the host then fails the call
/// with InvalidMemoryAccess instead of this module aborting on an allocation error).
#[no_mangle]
pub extern "C" fn proxy_on_memory_allocate(size: usize) -> *mut u8 {
    let Ok(layout) = Layout::array::<u8>(size.max(1)) else {
        return std::ptr::null_mut();
    };
    // SAFETY: a non-zero layout.
    let ptr = unsafe { alloc(layout) };
    if !ptr.is_null() {
        BLOCKS.with(|b| b.borrow_mut().insert(ptr as usize, size.max(1)));
    }
    ptr
}

/// Takes back a block the host filled: the first `size` bytes, or an error when the block is not
/// one this module handed out or is smaller than `size`.
pub(super) fn reclaim(ptr: *mut u8, size: usize) -> Result<Vec<u8>, HostError> {
    if ptr.is_null() {
        return if size == 0 {
            Ok(Vec::new())
        } else {
            Err(HostError(INVALID_MEMORY_ACCESS))
        };
    }
    let Some(capacity) = BLOCKS.with(|b| b.borrow_mut().remove(&(ptr as usize))) else {
        return Err(HostError(INVALID_MEMORY_ACCESS));
    };
    if size > capacity {
        let layout = Layout::array::<u8>(capacity).map_err(|_| HostError(INVALID_MEMORY_ACCESS))?;
        // SAFETY: allocated in `proxy_on_memory_allocate` with this layout, removed from BLOCKS so
        // freed once.
        unsafe { dealloc(ptr, layout) };
        return Err(HostError(INVALID_MEMORY_ACCESS));
    }
    // SAFETY: `ptr` is a live global-allocator block of `capacity` bytes from
    // `proxy_on_memory_allocate`, the host wrote its first `size` bytes, and it leaves BLOCKS here,
    // so the Vec is its only owner.
    Ok(unsafe { Vec::from_raw_parts(ptr, size, capacity) })
}
