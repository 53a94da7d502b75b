//! The add-on under load: starts the real release binary on loopback with a tracking
//! mode, reads its idle RSS, then drives it with a bounded closed-loop load — WebSocket
//! sockets alternating `ping` and `system/info`, plus keep-alive HTTP connections
//! fetching `/healthz` — and measures throughput and latency. In the tracking modes a
//! last phase keeps the load running while a control socket asks for
//! `debug/memory_snapshot` (top 25) at a fixed pace, measuring the snapshot's latency and
//! the load's throughput meanwhile. (Snapshots are never sent with tracking off: a
//! snapshot turns tracking on.)
//!
//! Everything is bounded: a fixed number of sockets, one request in flight on each,
//! fixed phase durations, a timeout on every reply; the child is killed at the end.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::tungstenite::Message;

use crate::procfs;

/// How long any single reply may take before the run is declared failed.
const REPLY_TIMEOUT: Duration = Duration::from_secs(10);

/// The add-on's tracking configuration for a run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tracking {
    /// `debug_memory: false`.
    Off,
    /// `debug_memory: true`, `debug_memory_mode: "sampled"` (512 KiB, 32 frames).
    Sampled,
    /// `debug_memory: true`, `debug_memory_mode: "exact"` (32 frames).
    Exact,
}

impl Tracking {
    pub const ALL: [Tracking; 3] = [Tracking::Off, Tracking::Sampled, Tracking::Exact];

    pub fn name(self) -> &'static str {
        match self {
            Tracking::Off => "off",
            Tracking::Sampled => "sampled",
            Tracking::Exact => "exact",
        }
    }
}

/// The shape of one run.
#[derive(Clone, Copy, Debug)]
pub struct Plan {
    /// Concurrent WebSocket sockets, one request in flight each.
    pub ws_sockets: usize,
    /// Concurrent keep-alive HTTP connections, one request in flight each.
    pub http_conns: usize,
    /// Wait after start-up before reading the idle RSS.
    pub idle_wait: Duration,
    /// Load before measuring (lazy initialisation, allocator warm-up).
    pub warmup: Duration,
    /// The measured phase.
    pub measure: Duration,
    /// The snapshot phase (tracking modes only).
    pub snapshot_phase: Duration,
    /// Pause between two snapshot requests.
    pub snapshot_every: Duration,
}

/// What one run measured.
#[derive(Clone, Debug, Default)]
pub struct RunResult {
    pub idle_rss: u64,
    pub ws_ops_per_s: f64,
    pub http_ops_per_s: f64,
    /// Latencies of the measured phase, microseconds.
    pub ws_latency_us: Vec<f64>,
    pub http_latency_us: Vec<f64>,
    /// Snapshot round trips, milliseconds (empty with tracking off).
    pub snapshot_ms: Vec<f64>,
    /// WebSocket throughput while snapshots were being taken.
    pub ws_ops_per_s_during_snapshots: f64,
    /// VmRSS at the end of the measured phase (before any snapshot).
    pub rss_after_load: u64,
    /// Server CPU time (user + system) per request in the measured phase, microseconds.
    pub server_cpu_us_per_request: f64,
    /// Allocations the server made per request in the measured phase (its own
    /// `total_allocations` counter, read with `debug/memory_reset_peak`).
    pub allocations_per_request: f64,
    /// VmRSS and VmHWM at the very end (after the snapshot phase in tracking modes).
    pub rss_at_end: u64,
    pub hwm_at_end: u64,
}

/// The running add-on; killed on drop.
struct Addon {
    child: Child,
    addr: SocketAddr,
    dir: PathBuf,
}

impl Drop for Addon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn start(bin: &Path, tracking: Tracking, run_id: usize) -> Result<Addon, String> {
    let dir = std::env::temp_dir().join(format!("heapwatch-bench-{}-{run_id}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let options = json!({
        "ingress_listen": "127.0.0.1:0",
        "direct_listen": "127.0.0.1:0",
        "trusted_proxies": ["127.0.0.1"],
        "data_dir": dir.join("data").display().to_string(),
        "log_level": "info",
        "debug_memory": tracking != Tracking::Off,
        "debug_memory_mode": if tracking == Tracking::Exact { "exact" } else { "sampled" },
    });
    let path = dir.join("options.json");
    std::fs::write(&path, options.to_string()).map_err(|e| e.to_string())?;
    let mut child = Command::new(bin)
        .arg("--options")
        .arg(&path)
        .env_remove("HEAPWATCH_DEBUG_MEMORY")
        .env_remove("HEAPWATCH_LOG_LEVEL")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("{}: {e}", bin.display()))?;
    let out = child.stdout.take().expect("stdout is piped");
    let (tx, rx) = mpsc::channel();
    // Drains stdout for the child's whole life (a full pipe would block its logging).
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            if line.contains("ingress listener up")
                && let Some(addr) = line
                    .split_whitespace()
                    .find_map(|w| w.strip_prefix("addr="))
                    .and_then(|a| a.parse::<SocketAddr>().ok())
            {
                let _ = tx.send(addr);
            }
        }
    });
    let mut addon = Addon {
        child,
        addr: SocketAddr::from(([127, 0, 0, 1], 0)),
        dir,
    };
    addon.addr = rx
        .recv_timeout(Duration::from_secs(20))
        .map_err(|_| "the add-on did not report its ingress listener".to_string())?;
    Ok(addon)
}

/// Phase boundaries of a run, shared by every client.
#[derive(Clone, Copy)]
struct Phases {
    measure_from: Instant,
    snapshots_from: Instant,
    end: Instant,
}

/// What one client saw: completed ops per phase and latencies of the measured phase.
#[derive(Default)]
struct ClientLog {
    measured_ops: u64,
    snapshot_phase_ops: u64,
    latency_us: Vec<f64>,
}

impl ClientLog {
    fn record(&mut self, phases: &Phases, sent: Instant, done: Instant) {
        if done >= phases.measure_from && done < phases.snapshots_from {
            self.measured_ops += 1;
            self.latency_us.push((done - sent).as_secs_f64() * 1e6);
        } else if done >= phases.snapshots_from && done < phases.end {
            self.snapshot_phase_ops += 1;
        }
    }
}

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn ws_open(addr: SocketAddr) -> Result<Ws, String> {
    let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{addr}/ws"))
        .await
        .map_err(|e| format!("ws connect: {e}"))?;
    // The server greets every socket with `server_info`.
    ws_reply(&mut ws).await?;
    Ok(ws)
}

async fn ws_reply(ws: &mut Ws) -> Result<Value, String> {
    loop {
        let msg = tokio::time::timeout(REPLY_TIMEOUT, ws.next())
            .await
            .map_err(|_| "reply timeout".to_string())?
            .ok_or("socket closed")?
            .map_err(|e| format!("ws: {e}"))?;
        if let Message::Text(t) = msg {
            return serde_json::from_str(t.as_str()).map_err(|e| e.to_string());
        }
    }
}

async fn ws_call(ws: &mut Ws, id: u64, command: &str, args: Value) -> Result<Value, String> {
    let text = json!({"message_id": id.to_string(), "command": command, "args": args});
    ws.send(Message::text(text.to_string()))
        .await
        .map_err(|e| format!("send: {e}"))?;
    let reply = ws_reply(ws).await?;
    let id = id.to_string();
    if reply.get("result").is_none() || reply["message_id"].as_str() != Some(id.as_str()) {
        return Err(format!("{command}: unexpected reply {reply}"));
    }
    Ok(reply)
}

async fn ws_client(addr: SocketAddr, phases: Phases) -> Result<ClientLog, String> {
    let mut ws = ws_open(addr).await?;
    let mut log = ClientLog::default();
    let mut id = 0u64;
    while Instant::now() < phases.end {
        let command = if id.is_multiple_of(2) {
            "ping"
        } else {
            "system/info"
        };
        let sent = Instant::now();
        ws_call(&mut ws, id, command, json!({})).await?;
        log.record(&phases, sent, Instant::now());
        id += 1;
    }
    let _ = ws.close(None).await;
    Ok(log)
}

async fn http_client(addr: SocketAddr, phases: Phases) -> Result<ClientLog, String> {
    let stream = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| format!("http connect: {e}"))?;
    let mut stream = tokio::io::BufReader::new(stream);
    let request = format!("GET /healthz HTTP/1.1\r\nHost: {addr}\r\n\r\n");
    let mut log = ClientLog::default();
    let mut line = String::new();
    let mut body = Vec::new();
    while Instant::now() < phases.end {
        let sent = Instant::now();
        let one = async {
            stream
                .get_mut()
                .write_all(request.as_bytes())
                .await
                .map_err(|e| e.to_string())?;
            let mut length = 0usize;
            let mut status_ok = false;
            let mut first = true;
            loop {
                line.clear();
                if stream
                    .read_line(&mut line)
                    .await
                    .map_err(|e| e.to_string())?
                    == 0
                {
                    return Err("connection closed".to_string());
                }
                if first {
                    status_ok = line.starts_with("HTTP/1.1 200");
                    first = false;
                }
                let l = line.trim_end();
                if l.is_empty() {
                    break;
                }
                if let Some((k, v)) = l.split_once(':')
                    && k.eq_ignore_ascii_case("content-length")
                {
                    length = v.trim().parse().map_err(|_| "bad content-length")?;
                }
            }
            body.resize(length, 0);
            stream
                .read_exact(&mut body)
                .await
                .map_err(|e| e.to_string())?;
            if status_ok {
                Ok(())
            } else {
                Err("/healthz did not answer 200".to_string())
            }
        };
        tokio::time::timeout(REPLY_TIMEOUT, one)
            .await
            .map_err(|_| "http reply timeout".to_string())??;
        log.record(&phases, sent, Instant::now());
    }
    Ok(log)
}

/// Server-side figures at the two ends of the measured phase.
#[derive(Default)]
struct Probe {
    allocations: u64,
    cpu_s: f64,
    rss: u64,
}

/// The control socket: reads the server's allocation counter (`debug/memory_reset_peak`,
/// which never turns tracking on) and CPU time when the measured phase starts and ends,
/// then, with tracking on, asks for a top-25 snapshot every `every` during the snapshot
/// phase. Returns (start, end, snapshot latencies in ms).
async fn control_client(
    addr: SocketAddr,
    pid: u32,
    phases: Phases,
    with_snapshots: bool,
    every: Duration,
) -> Result<(Probe, Probe, Vec<f64>), String> {
    let mut ws = ws_open(addr).await?;
    let mut id = 0;
    let mut probe = async |ws: &mut Ws, at: Instant| -> Result<Probe, String> {
        tokio::time::sleep_until(at.into()).await;
        let cpu_s = procfs::cpu_seconds(pid).ok_or("no /proc/PID/stat")?;
        let rss = procfs::status_bytes(pid, "VmRSS").unwrap_or(0);
        id += 1;
        let reply = ws_call(ws, id, "debug/memory_reset_peak", json!({})).await?;
        let allocations = reply["result"]["total_allocations"]
            .as_u64()
            .ok_or_else(|| format!("no total_allocations in {reply}"))?;
        Ok(Probe {
            allocations,
            cpu_s,
            rss,
        })
    };
    let start = probe(&mut ws, phases.measure_from).await?;
    let end = probe(&mut ws, phases.snapshots_from).await?;
    let mut took = Vec::new();
    let mut id = 1_000;
    while with_snapshots && Instant::now() < phases.end {
        let sent = Instant::now();
        let reply = ws_call(&mut ws, id, "debug/memory_snapshot", json!({"top_n": 25})).await?;
        took.push(sent.elapsed().as_secs_f64() * 1e3);
        if !reply["result"]["top_allocators"].is_array() {
            return Err(format!("snapshot without top_allocators: {reply}"));
        }
        id += 1;
        tokio::time::sleep(every).await;
    }
    Ok((start, end, took))
}

/// One run: start the add-on with `tracking`, idle RSS, load, snapshots, stop.
///
/// # Errors
/// Start-up failure, a protocol error or a reply timeout.
pub fn run(
    bin: &Path,
    tracking: Tracking,
    plan: &Plan,
    run_id: usize,
) -> Result<RunResult, String> {
    let addon = start(bin, tracking, run_id)?;
    let pid = addon.child.id();
    std::thread::sleep(plan.idle_wait);
    let idle_rss = procfs::status_bytes(pid, "VmRSS").ok_or("no VmRSS")?;
    // The client runs on one thread: it competes with the server for the same cores, the
    // same way in every mode.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    let addr = addon.addr;
    let with_snapshots = tracking != Tracking::Off;
    let (logs, snapshot_ms) = rt.block_on(async move {
        let now = Instant::now();
        let measure_from = now + plan.warmup;
        let snapshots_from = measure_from + plan.measure;
        let end = if with_snapshots {
            snapshots_from + plan.snapshot_phase
        } else {
            snapshots_from
        };
        let phases = Phases {
            measure_from,
            snapshots_from,
            end,
        };
        let mut ws_tasks = Vec::new();
        for _ in 0..plan.ws_sockets {
            ws_tasks.push(tokio::spawn(ws_client(addr, phases)));
        }
        let mut http_tasks = Vec::new();
        for _ in 0..plan.http_conns {
            http_tasks.push(tokio::spawn(http_client(addr, phases)));
        }
        let control = tokio::spawn(control_client(
            addr,
            pid,
            phases,
            with_snapshots,
            plan.snapshot_every,
        ));
        let mut ws_logs = Vec::new();
        for t in ws_tasks {
            ws_logs.push(t.await.map_err(|e| e.to_string())??);
        }
        let mut http_logs = Vec::new();
        for t in http_tasks {
            http_logs.push(t.await.map_err(|e| e.to_string())??);
        }
        let (start, end, snapshot_ms) = control.await.map_err(|e| e.to_string())??;
        Ok::<_, String>(((ws_logs, http_logs, start, end), snapshot_ms))
    })?;
    let (ws_logs, http_logs, start, end) = logs;
    let requests = ws_logs
        .iter()
        .chain(&http_logs)
        .map(|l| l.measured_ops)
        .sum::<u64>()
        .max(1) as f64;
    let secs = plan.measure.as_secs_f64();
    let mut result = RunResult {
        idle_rss,
        ws_ops_per_s: ws_logs.iter().map(|l| l.measured_ops).sum::<u64>() as f64 / secs,
        http_ops_per_s: http_logs.iter().map(|l| l.measured_ops).sum::<u64>() as f64 / secs,
        ws_latency_us: ws_logs
            .iter()
            .flat_map(|l| l.latency_us.iter().copied())
            .collect(),
        http_latency_us: http_logs
            .iter()
            .flat_map(|l| l.latency_us.iter().copied())
            .collect(),
        snapshot_ms,
        rss_after_load: end.rss,
        server_cpu_us_per_request: (end.cpu_s - start.cpu_s) * 1e6 / requests,
        allocations_per_request: end.allocations.saturating_sub(start.allocations) as f64
            / requests,
        ..RunResult::default()
    };
    if with_snapshots {
        result.ws_ops_per_s_during_snapshots =
            ws_logs.iter().map(|l| l.snapshot_phase_ops).sum::<u64>() as f64
                / plan.snapshot_phase.as_secs_f64();
    }
    result.rss_at_end = procfs::status_bytes(pid, "VmRSS").unwrap_or(0);
    result.hwm_at_end = procfs::status_bytes(pid, "VmHWM").unwrap_or(0);
    drop(addon);
    Ok(result)
}
