//! The registry of live process groups and the harness's one SIGINT/SIGTERM/SIGHUP handler.
//!
//! Every child runs in a process group of its own, so the terminal's Ctrl-C reaches only the
//! harness; without this handler an interrupted harness would leave Envoys and collectors behind.
//!
//! Design, split by what a signal handler may do:
//! - the registry is a fixed array of atomics (no lock, no allocation), readable from the handler;
//! - the handler (async-signal-safe: atomics, kill(2), write(2), _exit(2) only) marks the harness
//!   as shutting down, sends SIGTERM to every registered group at once, and writes the signal
//!   number to a self-pipe;
//! - a watcher thread, blocked reading that pipe, then does what a handler cannot: waits (bounded)
//!   for the groups to go, re-scanning the registry so a child registered meanwhile is also
//!   stopped, sends SIGKILL to what is left, and exits with 128 + the signal (130 for SIGINT);
//! - a child spawned after the handler ran finds the shutting-down mark when it registers and
//!   stops itself, so nothing starts behind the watcher's back;
//! - without the pipe or the watcher the handler falls back to SIGTERM and `_exit`.

use crate::process::group::{group_alive, signal_group, wait_group_gone};
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use std::sync::Once;
use std::time::{Duration, Instant};

/// More than the harness ever runs at once (parallel scenarios of several Envoys each).
const SLOTS: usize = 256;

/// How long interrupted children get to stop on SIGTERM before SIGKILL.
const INTERRUPT_GRACE: Duration = Duration::from_secs(3);

static GROUPS: [AtomicI32; SLOTS] = [const { AtomicI32::new(0) }; SLOTS];
static SHUTTING_DOWN: AtomicBool = AtomicBool::new(false);
/// Write end of the self-pipe; -1 while there is no watcher to read it.
static WAKE_FD: AtomicI32 = AtomicI32::new(-1);
static INSTALL: Once = Once::new();

/// While set, SIGINT only sets [`INTERRUPTED`] (the demo's `--hold` waits for it and then cleans
/// up normally); SIGTERM and SIGHUP still stop everything.
static HOLD_MODE: AtomicBool = AtomicBool::new(false);
static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(sig: libc::c_int) {
    if sig == libc::SIGINT && HOLD_MODE.load(Ordering::SeqCst) {
        INTERRUPTED.store(true, Ordering::SeqCst);
        return;
    }
    SHUTTING_DOWN.store(true, Ordering::SeqCst);
    for g in &GROUPS {
        signal_group(g.load(Ordering::SeqCst), libc::SIGTERM);
    }
    let fd = WAKE_FD.load(Ordering::SeqCst);
    let byte = sig as u8;
    // SAFETY: write(2) is async-signal-safe; the buffer is one byte on this stack frame.
    let woke = fd >= 0 && unsafe { libc::write(fd, (&byte as *const u8).cast(), 1) } == 1;
    if !woke {
        // SAFETY: _exit(2) is async-signal-safe; 128 + signal number is the shell convention.
        unsafe { libc::_exit(128 + sig) }
    }
}

/// Installs the handler and starts its watcher thread (once; registering a group also does).
pub fn install_interrupt_handler() {
    INSTALL.call_once(|| {
        start_watcher();
        for sig in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
            // SAFETY: a zeroed sigaction is valid (empty mask, no flags); the handler only does
            // async-signal-safe things (see the module comment).
            unsafe {
                let mut sa: libc::sigaction = std::mem::zeroed();
                sa.sa_sigaction = on_signal as extern "C" fn(libc::c_int) as libc::sighandler_t;
                sa.sa_flags = libc::SA_RESTART;
                libc::sigemptyset(&mut sa.sa_mask);
                libc::sigaction(sig, &sa, std::ptr::null_mut());
            }
        }
    });
}

/// Creates the self-pipe and the thread reading it; on failure the handler falls back to `_exit`.
fn start_watcher() {
    let mut fds = [-1i32; 2];
    // SAFETY: pipe2(2) fills the two-element array; both ends are close-on-exec so no child
    // inherits them. The write end is non-blocking: the handler must never block.
    let ok = unsafe {
        libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) == 0
            && libc::fcntl(fds[1], libc::F_SETFL, libc::O_NONBLOCK) == 0
    };
    if !ok {
        return;
    }
    let (read_fd, write_fd) = (fds[0], fds[1]);
    let spawned = std::thread::Builder::new()
        .name("interrupt-watcher".into())
        .spawn(move || watch(read_fd));
    if spawned.is_ok() {
        WAKE_FD.store(write_fd, Ordering::SeqCst);
    }
}

fn watch(read_fd: i32) {
    let mut byte = 0u8;
    loop {
        // SAFETY: read(2) into a one-byte buffer we own.
        let n = unsafe { libc::read(read_fd, (&mut byte as *mut u8).cast(), 1) };
        if n == 1 {
            break;
        }
        if n < 0 && std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted {
            continue;
        }
        // The pipe is unusable: let the handler fall back to exiting by itself.
        WAKE_FD.store(-1, Ordering::SeqCst);
        return;
    }
    stop_all(INTERRUPT_GRACE);
    std::process::exit(128 + i32::from(byte));
}

/// SIGTERM to every registered group (again to late-registered ones), wait until none runs or
/// `grace` passes, then SIGKILL to whatever is left.
fn stop_all(grace: Duration) {
    let deadline = Instant::now() + grace;
    let mut signalled: Vec<i32> = Vec::new();
    loop {
        let live = registered();
        for pgid in &live {
            if !signalled.contains(pgid) {
                signal_group(*pgid, libc::SIGTERM);
                signalled.push(*pgid);
            }
        }
        if !live.iter().any(|g| group_alive(*g)) || Instant::now() >= deadline {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let left = registered();
    for pgid in &left {
        signal_group(*pgid, libc::SIGKILL);
    }
    for pgid in left {
        wait_group_gone(pgid, Duration::from_secs(1));
    }
}

fn registered() -> Vec<i32> {
    GROUPS
        .iter()
        .map(|g| g.load(Ordering::SeqCst))
        .filter(|g| *g > 0)
        .collect()
}

/// Records a group for the interrupt handler. Errors when the harness is shutting down (the
/// caller must stop the child it just started) or every slot is taken.
pub fn register(pgid: i32) -> std::io::Result<()> {
    install_interrupt_handler();
    let slot = GROUPS.iter().find(|g| {
        g.compare_exchange(0, pgid, Ordering::SeqCst, Ordering::SeqCst)
            .is_ok()
    });
    if slot.is_none() {
        return Err(std::io::Error::other(format!(
            "more than {SLOTS} child processes at once"
        )));
    }
    // Checked after the slot is taken: either the watcher sees the group or we see the mark.
    if SHUTTING_DOWN.load(Ordering::SeqCst) {
        return Err(std::io::Error::new(
            std::io::ErrorKind::Interrupted,
            "the harness is shutting down",
        ));
    }
    Ok(())
}

pub fn unregister(pgid: i32) {
    for g in &GROUPS {
        let _ = g.compare_exchange(pgid, 0, Ordering::SeqCst, Ordering::SeqCst);
    }
}

/// Blocks until Ctrl-C (SIGINT), then returns so the caller cleans up normally.
pub fn hold_until_interrupt() {
    install_interrupt_handler();
    INTERRUPTED.store(false, Ordering::SeqCst);
    HOLD_MODE.store(true, Ordering::SeqCst);
    while !INTERRUPTED.load(Ordering::SeqCst) {
        std::thread::sleep(Duration::from_millis(100));
    }
    HOLD_MODE.store(false, Ordering::SeqCst);
}
