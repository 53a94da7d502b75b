//! Host monitoring's costs at the scale the issue names: 100 add-ons plus Core, the
//! Supervisor and five plugins.
//!
//! 1. The history database after 90 simulated days: the averages written at their own
//!    15-minute resolution for 88 days, then the last 48 hours at one poll a minute (the
//!    raw points' full span), through the store's own API, one transaction per poll.
//!    Reports the file's size and rows.
//! 2. The polling add-on's CPU: the release binary (`.ci/build-static`) is started on
//!    that database against a Supervisor stand-in served here (100 add-ons, answers at
//!    once), polling once a second; its CPU time (utime + stime from /proc) over 60 polls,
//!    per poll, and its resident memory with that history loaded.
//!
//! Run: `cd benches && cargo run --release --bin host_history` (after `bash
//! .ci/build-static`). Prints a Markdown table for BENCHMARKS.md.

use std::io::{BufRead, BufReader, Read, Write as _};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use heapwatch::host::history::History;
use heapwatch::host::store::{FILE_NAME, Store, Write};
use heapwatch_bench::procfs;

const ADDONS: usize = 100;
const FIXED: [&str; 7] = [
    "core",
    "supervisor",
    "dns",
    "audio",
    "cli",
    "multicast",
    "observer",
];
const MINUTE: i64 = 60_000;
const TOKEN: &str = "bench-token-0123456789abcdef";
const POLLS: u32 = 60;

fn slugs() -> Vec<(String, &'static str)> {
    let mut v: Vec<(String, &'static str)> = (0..ADDONS)
        .map(|i| (format!("a{i:03}_addon"), "addon"))
        .collect();
    v.extend(FIXED.iter().map(|s| {
        let kind = match *s {
            "core" => "core",
            "supervisor" => "supervisor",
            _ => "plugin",
        };
        (s.to_string(), kind)
    }));
    v
}

/// A container's memory at a time: flat with a little wobble, one in ten on a daily cycle.
fn memory(i: usize, at_ms: i64) -> u64 {
    let hours = at_ms as f64 / 3.6e6;
    let base = 50e6 + i as f64 * 3e6;
    let wobble = ((hours * 977.0 + i as f64).sin()) * 0.3e6;
    let cycle = if i % 10 == 0 {
        (hours / 24.0 * std::f64::consts::TAU).sin() * 20e6
    } else {
        0.0
    };
    (base + wobble + cycle) as u64
}

fn fill(path: &Path, now_ms: i64) -> (Duration, u64) {
    let (mut store, _) = Store::open(path).expect("open the store");
    let containers = slugs();
    let mut histories: Vec<History> = containers
        .iter()
        .map(|_| {
            let mut h = History::default();
            h.observe(now_ms - 90 * 24 * 60 * MINUTE, "started", Some("1.0.0"));
            h
        })
        .collect();
    let start = now_ms - 90 * 24 * 60 * MINUTE;
    let raw_from = now_ms - 48 * 60 * MINUTE;
    let mut times = Vec::new();
    let mut t = start;
    while t < raw_from {
        times.push(t);
        t += 15 * MINUTE;
    }
    while t <= now_ms {
        times.push(t);
        t += MINUTE;
    }
    let began = Instant::now();
    for &at in &times {
        let writes: Vec<Write> = histories
            .iter_mut()
            .zip(&containers)
            .enumerate()
            .map(|(i, (h, (slug, kind)))| {
                h.push(at, memory(i, at));
                Write {
                    slug: slug.clone(),
                    name: slug.to_uppercase(),
                    kind: (*kind).into(),
                    point: h.latest(),
                    bucket: h.last_bucket(),
                    meta: h.meta(),
                    restarts: Vec::new(),
                }
            })
            .collect();
        store.write_poll(at, &writes).expect("write a poll");
    }
    let took = began.elapsed();
    drop(store);
    // Reopened and closed: the WAL is checkpointed into the file.
    drop(Store::open(path).expect("reopen"));
    (
        took / times.len() as u32,
        std::fs::metadata(path).unwrap().len(),
    )
}

/// The stand-in: `/addons` and every `/…/stats` in the Supervisor's envelope, at once.
fn serve_standin() -> std::net::SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        let started = Instant::now();
        for stream in listener.incoming().map_while(Result::ok) {
            let elapsed = started.elapsed().as_millis() as i64;
            std::thread::spawn(move || answer(stream, elapsed));
        }
    });
    addr
}

fn answer(mut stream: TcpStream, now_ms: i64) {
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut line = String::new();
    if reader.read_line(&mut line).is_err() {
        return;
    }
    let path = line.split_whitespace().nth(1).unwrap_or("/").to_owned();
    let mut length = 0usize;
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h).unwrap_or(0) == 0 || h == "\r\n" {
            break;
        }
        if let Some(v) = h.to_ascii_lowercase().strip_prefix("content-length:") {
            length = v.trim().parse().unwrap_or(0);
        }
    }
    let mut body = vec![0; length];
    let _ = reader.read_exact(&mut body);
    let data = if path == "/addons" {
        let list: Vec<serde_json::Value> = (0..ADDONS)
            .map(|i| serde_json::json!({"slug": format!("a{i:03}_addon"), "name": format!("A{i:03}_ADDON"),
                "state": "started", "version": "1.0.0"}))
            .collect();
        serde_json::json!({"addons": list})
    } else if path.starts_with("/core/api/") {
        serde_json::json!([])
    } else {
        let target = path
            .trim_end_matches("/stats")
            .rsplit('/')
            .next()
            .unwrap_or("");
        let i = slugs().iter().position(|(s, _)| s == target).unwrap_or(0);
        let bytes = memory(i, now_ms);
        serde_json::json!({"cpu_percent": 0.4, "memory_usage": bytes, "memory_limit": 4_000_000_000u64,
            "memory_percent": bytes as f64 / 4e7})
    };
    let reply = serde_json::json!({"result": "ok", "data": data}).to_string();
    let _ = write!(
        stream,
        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{reply}",
        reply.len()
    );
}

fn release_binary() -> PathBuf {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    root.join(format!(
        "target/{}-unknown-linux-gnu/release/heapwatch",
        std::env::consts::ARCH
    ))
}

fn main() {
    let dir = tempfile_dir();
    let data = dir.join("data");
    std::fs::create_dir_all(&data).unwrap();
    let db = data.join(FILE_NAME);
    let now_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    let (per_write, size) = fill(&db, now_ms);
    let containers = slugs().len();

    let standin = serve_standin();
    let options = dir.join("options.json");
    std::fs::write(
        &options,
        serde_json::json!({
            "ingress_listen": "127.0.0.1:0",
            "data_dir": data.display().to_string(),
            "supervisor_url": format!("http://{standin}"),
            "host_poll_interval_ms": 1000,
            "log_level": "info",
        })
        .to_string(),
    )
    .unwrap();
    let mut child = Command::new(release_binary())
        .arg("--options")
        .arg(&options)
        .env("SUPERVISOR_TOKEN", TOKEN)
        .env_remove("HEAPWATCH_DEBUG_MEMORY")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start the release binary (bash .ci/build-static first)");
    let pid = child.id();
    let out = BufReader::new(child.stdout.take().unwrap());
    let mut lines = out.lines().map_while(Result::ok);
    let loaded = lines
        .find(|l| l.contains("memory history loaded"))
        .expect("history loaded");
    std::thread::spawn(move || for _ in lines {});
    // Two polls to settle, then 60 polls measured.
    std::thread::sleep(Duration::from_secs(2));
    let (cpu0, t0) = (procfs::cpu_seconds(pid).unwrap(), Instant::now());
    std::thread::sleep(Duration::from_secs(POLLS.into()));
    let (cpu1, wall) = (procfs::cpu_seconds(pid).unwrap(), t0.elapsed());
    let rss = procfs::status_bytes(pid, "VmRSS").unwrap();
    let _ = child.kill();
    let _ = child.wait();
    let polls = wall.as_secs_f64();
    println!("loaded: {loaded}");
    println!("| | |\n|---|---|");
    println!("| containers | {containers} |");
    println!(
        "| history database after 90 simulated days | {:.1} MB ({:.0} KB per container) |",
        size as f64 / 1e6,
        size as f64 / 1e3 / containers as f64
    );
    println!(
        "| one poll's transaction ({containers} containers) | {:.2} ms |",
        per_write.as_secs_f64() * 1e3
    );
    println!(
        "| add-on CPU per poll (list, {containers} stats calls, record, judge, write) | {:.1} ms |",
        (cpu1 - cpu0) * 1e3 / polls
    );
    println!(
        "| add-on resident memory with that history loaded | {:.1} MiB |",
        rss as f64 / 1048576.0
    );
    let _ = std::fs::remove_dir_all(&dir);
}

fn tempfile_dir() -> PathBuf {
    let d = std::env::temp_dir().join(format!("heapwatch-host-bench-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}
