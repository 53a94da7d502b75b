//! Reading a process's memory figures from /proc (Linux).

/// A `kB` field of /proc/`pid`/status (e.g. "VmRSS", "VmHWM") in bytes; `None` when the
/// process or the field is gone.
pub fn status_bytes(pid: u32, field: &str) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    parse_status_kb(&text, field).map(|kb| kb * 1024)
}

/// The same for this process.
pub fn self_status_bytes(field: &str) -> Option<u64> {
    status_bytes(std::process::id(), field)
}

/// Resets this process's peak RSS (VmHWM) to its current RSS (Linux ≥ 4.0:
/// `echo 5 > /proc/self/clear_refs`). Returns whether the kernel accepted it.
pub fn reset_self_hwm() -> bool {
    std::fs::write("/proc/self/clear_refs", "5").is_ok()
}

fn parse_status_kb(text: &str, field: &str) -> Option<u64> {
    text.lines().find_map(|line| {
        let rest = line.strip_prefix(field)?.strip_prefix(':')?;
        rest.split_whitespace().next()?.parse().ok()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_kb_fields() {
        let text = "Name:\tx\nVmHWM:\t  2048 kB\nVmRSS:\t  1024 kB\n";
        assert_eq!(parse_status_kb(text, "VmRSS"), Some(1024));
        assert_eq!(parse_status_kb(text, "VmHWM"), Some(2048));
        assert_eq!(parse_status_kb(text, "VmSwap"), None);
        assert!(self_status_bytes("VmRSS").is_some_and(|b| b > 0));
    }
}
