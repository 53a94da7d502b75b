//! System memory next to the allocator's own numbers: this process (RSS, peak RSS,
//! virtual), the host (memory and swap) and the cgroup the add-on runs in.
//!
//! `sysinfo` refreshes only what is asked for (this one process's memory, the host's
//! memory): never the whole process list. The peak RSS is the kernel's high-water mark
//! (`VmHWM`), so a spike shows even after it was freed. Sampling reads /proc: call it
//! from a blocking thread.

use sysinfo::{MemoryRefreshKind, Pid, ProcessRefreshKind, ProcessesToUpdate, System};

/// This process's memory.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ProcessMemory {
    pub rss_bytes: u64,
    pub peak_rss_bytes: u64,
    pub virtual_bytes: u64,
}

/// The host's memory and swap.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HostMemory {
    pub total_bytes: u64,
    pub available_bytes: u64,
    pub used_bytes: u64,
    pub swap_total_bytes: u64,
    pub swap_used_bytes: u64,
}

/// The memory cgroup's limit (`None`: unlimited) and usage.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CgroupMemory {
    pub limit_bytes: Option<u64>,
    pub usage_bytes: u64,
}

/// One sample of everything.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SystemMemory {
    pub process: ProcessMemory,
    pub host: HostMemory,
    /// `None` when no memory cgroup is visible.
    pub cgroup: Option<CgroupMemory>,
}

/// Keeps a `sysinfo::System` between samples so each refresh is incremental.
pub struct SystemSampler {
    /// `None` when sysinfo cannot initialise here (then every figure reads 0, and the
    /// kernel-file fallbacks still fill in what they can).
    sys: Option<System>,
    pid: Option<Pid>,
}

impl Default for SystemSampler {
    fn default() -> Self {
        Self::new()
    }
}

impl SystemSampler {
    /// A sampler with nothing loaded yet (cheap).
    pub fn new() -> Self {
        let sys = System::new()
            .map_err(|e| tracing::warn!(error = %e, "sysinfo is unavailable; system memory figures will be 0"))
            .ok();
        Self {
            sys,
            pid: sysinfo::get_current_pid().ok(),
        }
    }

    /// Refreshes this process and the host memory and returns the figures.
    pub fn sample(&mut self) -> SystemMemory {
        let mut process = ProcessMemory::default();
        let mut host = HostMemory::default();
        let mut limits = None;
        if let Some(sys) = self.sys.as_mut() {
            sys.refresh_memory_specifics(MemoryRefreshKind::nothing().with_ram().with_swap());
            if let Some(pid) = self.pid {
                sys.refresh_processes_specifics(
                    ProcessesToUpdate::Some(&[pid]),
                    true,
                    ProcessRefreshKind::nothing().with_memory(),
                );
                if let Some(p) = sys.process(pid) {
                    process.rss_bytes = p.memory();
                    process.virtual_bytes = p.virtual_memory();
                }
            }
            host = HostMemory {
                total_bytes: sys.total_memory(),
                available_bytes: sys.available_memory(),
                used_bytes: sys.used_memory(),
                swap_total_bytes: sys.total_swap(),
                swap_used_bytes: sys.used_swap(),
            };
            limits = sys.cgroup_limits();
        }
        process.peak_rss_bytes = peak_rss_bytes()
            .unwrap_or(process.rss_bytes)
            .max(process.rss_bytes);
        let cgroup = match limits {
            Some(c) => Some(CgroupMemory {
                limit_bytes: Some(c.total_memory),
                usage_bytes: c.total_memory.saturating_sub(c.free_memory),
            }),
            // sysinfo reports a cgroup only when it has a limit; still show the usage.
            None => cgroup_v2_usage().map(|usage_bytes| CgroupMemory {
                limit_bytes: None,
                usage_bytes,
            }),
        };
        SystemMemory {
            process,
            host,
            cgroup,
        }
    }
}

/// One sampler shared by everything that samples (commands, the memory stream, the trend):
/// the lock keeps sysinfo's incremental state consistent between refreshes.
#[derive(Default)]
pub struct SharedSampler {
    /// std mutex: held for one refresh, on a blocking thread, never across `.await`.
    inner: std::sync::Mutex<SystemSampler>,
}

impl SharedSampler {
    /// Samples now (reads /proc: call it from a blocking thread).
    pub fn sample(&self) -> SystemMemory {
        self.inner
            .lock()
            .expect("system sampler lock poisoned")
            .sample()
    }
}

/// `VmHWM` from /proc/self/status: the kernel's peak resident set size.
fn peak_rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    parse_kib_field(&status, "VmHWM:")
}

fn parse_kib_field(text: &str, field: &str) -> Option<u64> {
    let line = text.lines().find(|l| l.starts_with(field))?;
    let kib: u64 = line[field.len()..]
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kib * 1024)
}

/// `memory.current` of this process's cgroup (v2), when visible and unlimited.
fn cgroup_v2_usage() -> Option<u64> {
    let cgroups = std::fs::read_to_string("/proc/self/cgroup").ok()?;
    let path = cgroups.lines().find_map(|l| l.strip_prefix("0::"))?;
    let dir = std::path::Path::new("/sys/fs/cgroup").join(path.trim_start_matches('/'));
    std::fs::read_to_string(dir.join("memory.current"))
        .ok()?
        .trim()
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_vmhwm() {
        let text = "Name:\tx\nVmPeak:\t  100 kB\nVmHWM:\t    2048 kB\nVmRSS:\t 1000 kB\n";
        assert_eq!(parse_kib_field(text, "VmHWM:"), Some(2048 * 1024));
        assert_eq!(parse_kib_field(text, "VmSwap:"), None);
    }

    #[test]
    fn samples_this_process() {
        let mut s = SystemSampler::new();
        let m = s.sample();
        assert!(m.process.rss_bytes > 0);
        assert!(m.process.peak_rss_bytes >= m.process.rss_bytes);
        assert!(m.process.virtual_bytes >= m.process.rss_bytes);
        assert!(m.host.total_bytes >= m.host.available_bytes && m.host.available_bytes > 0);
    }
}
