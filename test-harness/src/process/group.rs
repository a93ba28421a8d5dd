//! Signalling a process group and telling whether anything in it still runs.

/// Sends `sig` to every process in the group `pgid` (0 only checks that one exists).
pub fn signal_group(pgid: i32, sig: i32) -> bool {
    if pgid <= 0 {
        return false;
    }
    // SAFETY: kill(2) with a negative pid signals the process group we created; no memory
    // involved. kill(2) is async-signal-safe, so the interrupt handler calls this too.
    unsafe { libc::kill(-pgid, sig) == 0 }
}

/// Whether a process of the group `pgid` still runs. Zombies do not count: an exited Envoy whose
/// parent func-e is gone waits for init to reap it, which may never happen in a container, and
/// waiting for it would only delay the SIGKILL that cannot change anything.
pub fn group_alive(pgid: i32) -> bool {
    if !signal_group(pgid, 0) {
        return false;
    }
    running_in_group(pgid).unwrap_or(true)
}

/// Waits up to `timeout` until nothing in the group `pgid` runs; true when nothing does. Signals
/// are delivered asynchronously, so even a SIGKILLed group takes a moment to go.
pub fn wait_group_gone(pgid: i32, timeout: std::time::Duration) -> bool {
    let deadline = std::time::Instant::now() + timeout;
    while group_alive(pgid) {
        if std::time::Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    true
}

/// Whether /proc lists a process of group `pgid` that is not a zombie; None when /proc cannot be
/// read (the caller then trusts kill(2)).
fn running_in_group(pgid: i32) -> Option<bool> {
    let entries = std::fs::read_dir("/proc").ok()?;
    for e in entries.flatten() {
        let name = e.file_name();
        let Some(pid) = name
            .to_str()
            .filter(|n| n.bytes().all(|b| b.is_ascii_digit()))
        else {
            continue;
        };
        // The process may be gone by now; that is simply not a match.
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        if let Some((state, group)) = parse_stat(&stat) {
            if group == pgid && state != 'Z' && state != 'X' {
                return Some(true);
            }
        }
    }
    Some(false)
}

/// State and process group from `/proc/PID/stat` (`pid (comm) state ppid pgrp ...`; comm may hold
/// spaces and parentheses, so fields are counted from the last `)`).
fn parse_stat(stat: &str) -> Option<(char, i32)> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace();
    let state = fields.next()?.chars().next()?;
    let _ppid = fields.next()?;
    let pgrp = fields.next()?.parse().ok()?;
    Some((state, pgrp))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// (row name, /proc/PID/stat text, expected state and group)
    type StatRow = (&'static str, &'static str, Option<(char, i32)>);

    #[test]
    fn stat_rows() {
        let rows: &[StatRow] = &[
            ("plain", "12 (envoy) S 1 12 12 0", Some(('S', 12))),
            (
                "comm with ) and spaces",
                "7 (a) b (c) Z 3 5 5",
                Some(('Z', 5)),
            ),
            ("truncated", "7 (a) R 3", None),
            ("no comm", "garbage", None),
        ];
        for (name, stat, want) in rows {
            assert_eq!(parse_stat(stat), *want, "row {name}");
        }
    }

    #[test]
    fn own_group_is_alive_and_a_bogus_one_is_not() {
        // SAFETY: getpgrp(2) has no preconditions.
        let own = unsafe { libc::getpgrp() };
        assert!(group_alive(own));
        assert!(!group_alive(0));
        assert!(!group_alive(i32::MAX));
    }
}
