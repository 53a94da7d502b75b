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

/// CPU time (user + system) the whole process `pid` has used, in seconds, from
/// /proc/`pid`/stat (clock ticks of USER_HZ = 100, which Linux fixes for userspace on
/// every mainstream architecture: 10 ms resolution).
pub fn cpu_seconds(pid: u32) -> Option<f64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_stat_cpu_ticks(&text).map(|ticks| ticks as f64 / 100.0)
}

/// utime + stime: fields 14 and 15, counted after the `(comm)` field, which may itself
/// contain spaces and parentheses (hence the last `)`).
fn parse_stat_cpu_ticks(text: &str) -> Option<u64> {
    let rest = &text[text.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // rest starts at field 3 (state): utime is field 14, i.e. index 11 here.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
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

    #[test]
    fn parses_cpu_ticks_after_a_tricky_comm() {
        let stat = "42 (a (b) c) S 1 42 42 0 -1 4194560 100 0 0 0 250 17 0 0 20 0 1 0";
        assert_eq!(parse_stat_cpu_ticks(stat), Some(267));
        assert!(cpu_seconds(std::process::id()).is_some());
    }
}
