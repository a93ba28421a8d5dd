//! The one loopback port allocator for every server the harness starts in another process (real
//! collectors, the crane registry).
//!
//! A child binds its port some time after the port is chosen (a JVM starts slowly). A port from
//! the kernel's ephemeral range could meanwhile be handed to anything binding port 0 (an app, an
//! Envoy listener), which would then answer in the child's place; and a port bound and released
//! to learn a free number is exactly such a port. So ports come from below the ephemeral range,
//! where the kernel never hands out port 0 binds, and are never handed out twice within the
//! process, so parallel scenarios never share one. Servers inside the harness bind port 0 and
//! keep their socket, which needs no allocator.

use std::net::TcpListener;
use std::sync::Mutex;

/// Every port handed out during the life of the process.
static HANDED: Mutex<Vec<u16>> = Mutex::new(Vec::new());

/// The lowest port handed out; below are well-known and registered services.
const LOWEST: u16 = 10_000;

/// Free loopback ports, one per entry: the preferred port when it is free (and not handed out
/// before), else one below the ephemeral range. Every probe listener stays open until all are
/// chosen, so one call never returns the same port twice.
pub fn free_ports<const N: usize>(preferred: [Option<u16>; N]) -> Result<[u16; N], String> {
    let mut handed = HANDED.lock().unwrap_or_else(|p| p.into_inner());
    let (lo, hi) = (LOWEST, ephemeral_low().clamp(LOWEST + 1, 32_768));
    let span = u32::from(hi - lo);
    // Start where another harness process on the machine is unlikely to start.
    let mut next = std::process::id().wrapping_mul(7919) % span;
    let mut held = Vec::with_capacity(N);
    let mut ports = [0u16; N];
    for (slot, want) in ports.iter_mut().zip(preferred) {
        let mut listener = want
            .filter(|p| !handed.contains(p))
            .and_then(|p| TcpListener::bind(("127.0.0.1", p)).ok());
        let mut tries = 0;
        while listener.is_none() {
            tries += 1;
            if tries > span {
                return Err(format!("no free loopback port in {lo}..{hi}"));
            }
            next = (next + 1) % span;
            let p = lo + next as u16;
            if !handed.contains(&p) {
                listener = TcpListener::bind(("127.0.0.1", p)).ok();
            }
        }
        if let Some(l) = listener {
            *slot = l
                .local_addr()
                .map_err(|e| format!("no free port: {e}"))?
                .port();
            handed.push(*slot);
            held.push(l);
        }
    }
    Ok(ports)
}

/// One free loopback port (see [`free_ports`]).
pub fn free_port() -> Result<u16, String> {
    let [p] = free_ports([None])?;
    Ok(p)
}

/// The first port the kernel hands out for port 0 (`ip_local_port_range`, 32768 by default).
pub fn ephemeral_low() -> u16 {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|t| t.split_whitespace().next()?.parse().ok())
        .unwrap_or(32_768)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_are_unique_and_outside_the_ephemeral_range() {
        let a = free_ports([None, None, None]).unwrap();
        let b = free_ports([None, Some(a[0])]).unwrap();
        let c = free_port().unwrap();
        let mut all: Vec<u16> = a.iter().chain(b.iter()).copied().chain([c]).collect();
        assert!(
            all.iter().all(|p| (LOWEST..ephemeral_low()).contains(p)),
            "{all:?}"
        );
        all.sort();
        all.dedup();
        assert_eq!(all.len(), 6, "no port handed out twice");
    }
}
