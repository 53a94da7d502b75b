//! The ingress panel: its HTTP surface in-process (index, base, CSP, assets, the report),
//! then the real page in headless Chromium, driven by `tests/panel/driver.mjs`, against the
//! real binary behind nginx standing in for Home Assistant's ingress proxy (prefix
//! `/api/hassio_ingress/<random token>/` stripped, `X-Ingress-Path` and `X-Remote-User-*`
//! added, WebSocket upgrades passed) and, without the proxy, at `/`.
//!
//! The browser tests need Debian's `chromium`, `nginx` and `node` with the driver's
//! dependencies (`npm ci` in tests/panel). `.ci/test` installs them. When one is missing
//! the test is skipped with a message — unless `CI=true`, where that is a failure.
//! Screenshots land in `target/panel-screenshots/`.

mod standin;
mod support;

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use heapwatch::app::Limits;
use serde_json::{Value, json};
use support::*;

const INGRESS_HEADERS: [(&str, &str); 4] = [
    ("x-ingress-path", "/api/hassio_ingress/Tok-en_123"),
    ("x-remote-user-id", "8f1e"),
    ("x-remote-user-name", "ada"),
    ("x-remote-user-display-name", "Ada Lovelace"),
];

// ---- the HTTP surface, in-process ---------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn index_names_the_ingress_base_and_allows_only_itself() {
    let s = TestServer::start().await;
    let r = get(s.ingress, "/", &INGRESS_HEADERS).await;
    assert_eq!(r.status, 200);
    let page = String::from_utf8(r.body.clone()).unwrap();
    assert!(
        page.contains(r#"<base href="/api/hassio_ingress/Tok-en_123/">"#),
        "base from X-Ingress-Path"
    );
    let csp = r.header("content-security-policy").unwrap();
    for part in [
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self'",
        "connect-src 'self'",
    ] {
        assert!(csp.contains(part), "{csp} has {part}");
    }
    assert!(
        !csp.contains("unsafe-inline") && !csp.contains("unsafe-eval"),
        "{csp}"
    );
    assert!(
        !csp.contains("frame-ancestors"),
        "Home Assistant frames the panel"
    );
    assert!(r.header("x-frame-options").is_none());
    assert_eq!(
        r.header("x-content-type-options").as_deref(),
        Some("nosniff")
    );

    // Without the header, or with a value that is not a plain path, there is no base.
    for headers in [
        vec![],
        vec![("x-ingress-path", "/api/x\"><script>alert(1)</script>")],
        vec![("x-ingress-path", "//evil.example/x")],
    ] {
        let page = String::from_utf8(get(s.ingress, "/", &headers).await.body).unwrap();
        assert!(!page.contains("<base"), "{headers:?}");
    }
    // X-Ingress-Path means nothing on the direct listener.
    let bearer = format!("Bearer {TOKEN}");
    let mut h = vec![("authorization", bearer.as_str())];
    h.extend(INGRESS_HEADERS);
    let page = String::from_utf8(get(s.direct(), "/", &h).await.body).unwrap();
    assert!(!page.contains("<base"));

    // Every asset the page links is served, with its type; they are not found elsewhere.
    for (path, ty) in [
        ("/assets/app.js", "text/javascript"),
        ("/assets/style.css", "text/css"),
        ("/assets/icon.svg", "image/svg+xml"),
    ] {
        assert!(
            page.contains(&format!("\"{}\"", &path[1..])),
            "{path} linked relatively"
        );
        let r = get(s.ingress, path, &[]).await;
        assert_eq!(r.status, 200, "{path}");
        assert!(r.header("content-type").unwrap().starts_with(ty), "{path}");
        assert!(!r.body.is_empty());
        assert!(r.header("content-security-policy").is_some());
        assert_eq!(
            request(s.ingress, "POST", path, &[], None).await.status,
            405
        );
    }
    assert_eq!(get(s.ingress, "/assets/nope.js", &[]).await.status, 404);
    assert_eq!(get(s.ingress, "/web/app.js", &[]).await.status, 404);
    assert_eq!(
        get(s.direct(), "/assets/app.js", &[]).await.status,
        401,
        "the direct listener wants the token for assets too"
    );
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn report_is_a_json_download_with_redacted_settings_and_recent_logs() {
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    // This process's log goes to the ring, as the binary's does (nextest runs each test in
    // its own process, so this global subscriber is this test's alone).
    let _ = tracing_subscriber::registry()
        .with(heapwatch::logging::ring_layer())
        .try_init();
    let s = TestServer::start_with(|_| {}, Limits::default()).await;

    let r = get(s.ingress, "/api/report", &INGRESS_HEADERS).await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(
        r.header("content-type").as_deref(),
        Some("application/json")
    );
    let disposition = r.header("content-disposition").unwrap();
    assert!(
        disposition.starts_with("attachment; filename=\"heapwatch-report-")
            && disposition.ends_with("Z.json\""),
        "{disposition}"
    );
    let body = String::from_utf8(r.body.clone()).unwrap();
    assert!(!body.contains(TOKEN), "the token never leaves the server");
    let report = r.json();
    assert_eq!(report["report"], "heapwatch");
    assert_eq!(report["format"], 1);
    assert_eq!(report["server_version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(report["settings"]["api_token"], "**redacted**");
    assert_eq!(report["settings"]["log_level"], "info");
    assert!(report["system"]["process"]["rss_bytes"].as_u64().unwrap() > 0);
    assert!(report["allocator"]["current_bytes"].is_u64());
    assert_eq!(report["tracking"]["enabled"], false);
    assert_eq!(
        report["snapshot"],
        Value::Null,
        "a report never starts tracking"
    );
    assert!(
        report["snapshot_unavailable"]
            .as_str()
            .unwrap()
            .contains("off")
    );
    let lines = report["logs"]["lines"].as_array().unwrap();
    assert!(
        lines.iter().any(|l| l
            .as_str()
            .unwrap()
            .contains("INFO heapwatch::app: ingress listener up")),
        "{lines:?}"
    );
    assert_eq!(report["logs"]["max_lines"], 500);

    // A report changes nothing, and its arguments are checked like the snapshot's.
    let r = get(s.ingress, "/api/report?save_as=x", &[]).await;
    assert_eq!(r.status, 400);
    assert!(r.json()["details"].as_str().unwrap().contains("save_as"));
    let r = get(s.ingress, "/api/report?top_n=0", &[]).await;
    assert_eq!(r.status, 400);
    assert!(r.json()["details"].as_str().unwrap().contains("top_n"));
    let r = get(s.ingress, "/api/report?compare_with=before", &[]).await;
    assert_eq!(
        (r.status, r.json()["error_code"].clone()),
        (404, json!("not_found"))
    );
    let mut ws = ws(s.ingress).await;
    let info = ws.call("i", "system/info", json!({})).await;
    assert_eq!(info["result"]["tracking"]["enabled"], false);

    // Same authentication as everything else.
    assert_eq!(get(s.direct(), "/api/report", &[]).await.status, 401);
    let bearer = format!("Bearer {TOKEN}");
    let r = get(
        s.direct(),
        "/api/report",
        &[("authorization", bearer.as_str())],
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(
        request(s.ingress, "POST", "/api/report", &[], None)
            .await
            .status,
        405
    );
    s.stop().await;
}

// ---- the real page in a real browser ------------------------------------------------

/// Where the tools live, or why the browser tests cannot run here.
struct Tools {
    chromium: PathBuf,
    nginx: PathBuf,
    node: PathBuf,
    driver: PathBuf,
}

fn find(candidates: &[&str]) -> Option<PathBuf> {
    candidates.iter().map(PathBuf::from).find(|p| p.is_file())
}

fn tools() -> Option<Tools> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let driver_dir = root.join("tests/panel");
    let found = (
        find(&["/usr/bin/chromium", "/usr/bin/chromium-browser"]),
        find(&["/usr/sbin/nginx", "/usr/bin/nginx"]),
        find(&["/usr/bin/node", "/usr/local/bin/node"]),
        driver_dir.join("node_modules/playwright-core").is_dir(),
    );
    match found {
        (Some(chromium), Some(nginx), Some(node), true) => Some(Tools {
            chromium,
            nginx,
            node,
            driver: driver_dir.join("driver.mjs"),
        }),
        (c, n, j, deps) => {
            let why = format!(
                "browser test needs chromium ({}), nginx ({}), node ({}) and `npm ci` in tests/panel ({}); .ci/test installs them",
                c.is_some(),
                n.is_some(),
                j.is_some(),
                deps
            );
            assert!(
                std::env::var("CI").as_deref() != Ok("true"),
                "CI=true: {why}"
            );
            eprintln!("SKIPPED: {why}");
            None
        }
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn wait_for_port(addr: SocketAddr) {
    let t = Instant::now();
    while std::net::TcpStream::connect(addr).is_err() {
        assert!(t.elapsed() < WAIT, "nothing listens on {addr}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn screenshot_dir() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target"));
    target.join("panel-screenshots")
}

/// A random-looking ingress token, different for every run.
fn token() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("{:x}{:x}", nanos, std::process::id())
}

/// nginx in the Supervisor's role, on loopback, with everything under a temp dir.
struct Proxy {
    child: Child,
    addr: SocketAddr,
    dir: tempfile::TempDir,
}

impl Proxy {
    fn start(nginx: &Path, backend: SocketAddr, token: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let d = dir.path().display();
        let conf = format!(
            r#"
daemon off;
master_process off;
worker_processes 1;
pid {d}/nginx.pid;
error_log {d}/error.log info;
events {{ worker_connections 512; }}
http {{
    access_log {d}/access.log;
    client_body_temp_path {d}/body;
    proxy_temp_path {d}/proxy;
    fastcgi_temp_path {d}/fastcgi;
    uwsgi_temp_path {d}/uwsgi;
    scgi_temp_path {d}/scgi;
    map $http_upgrade $connection_upgrade {{
        default upgrade;
        ''      close;
    }}
    server {{
        listen 127.0.0.1:{port};
        # As the Supervisor: strip the prefix, say where the add-on lives and who is
        # logged in (client-sent X-Remote-User-* are replaced), pass WebSocket upgrades.
        location /api/hassio_ingress/{token}/ {{
            proxy_pass http://{backend}/;
            proxy_http_version 1.1;
            proxy_set_header Upgrade $http_upgrade;
            proxy_set_header Connection $connection_upgrade;
            proxy_set_header Host $host;
            proxy_set_header X-Ingress-Path /api/hassio_ingress/{token};
            proxy_set_header X-Hass-Source core.ingress;
            proxy_set_header X-Forwarded-For $remote_addr;
            proxy_set_header X-Forwarded-Host $host;
            proxy_set_header X-Forwarded-Proto $scheme;
            proxy_set_header X-Remote-User-Id 8f1e0c;
            proxy_set_header X-Remote-User-Name ada;
            proxy_set_header X-Remote-User-Display-Name "Ada Lovelace";
            proxy_buffering off;
            proxy_read_timeout 1h;
        }}
        location / {{
            return 404;
        }}
    }}
}}
"#
        );
        let path = dir.path().join("nginx.conf");
        std::fs::write(&path, conf).unwrap();
        let child = Command::new(nginx)
            .arg("-p")
            .arg(dir.path())
            .arg("-c")
            .arg(&path)
            .arg("-e")
            .arg(dir.path().join("error.log"))
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start nginx");
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        wait_for_port(addr);
        Proxy { child, addr, dir }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            let log =
                std::fs::read_to_string(self.dir.path().join("error.log")).unwrap_or_default();
            eprintln!("nginx error log:\n{}", tail(&log, 40));
        }
    }
}

fn tail(text: &str, n: usize) -> String {
    let lines: Vec<_> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// How the binary under test starts, and starts again after the driver's `START`: on a
/// fixed loopback port (so a restart comes back at the same address).
struct Launch {
    port: u16,
    options: Value,
    env: Vec<(&'static str, String)>,
}

impl Launch {
    fn new(options: Value) -> Self {
        Self {
            port: free_port(),
            options,
            env: Vec::new(),
        }
    }

    fn start(&self) -> Binary {
        let mut opts = self.options.clone();
        opts["ingress_listen"] = json!(format!("127.0.0.1:{}", self.port));
        let env: Vec<(&str, &str)> = self.env.iter().map(|(k, v)| (*k, v.as_str())).collect();
        Binary::start(opts, &env)
    }

    fn addr(&self) -> SocketAddr {
        format!("127.0.0.1:{}", self.port).parse().unwrap()
    }
}

/// A driver line the test answers itself (besides `STOP`/`START`): returns the answer.
type Hook<'a> = &'a mut dyn FnMut(&str) -> Option<&'static str>;

fn no_hook(_: &str) -> Option<&'static str> {
    None
}

/// Runs one driver scenario; `STOP`/`START` requests restart the binary, other requests
/// go to `hook`.
fn drive(
    tools: &Tools,
    scenario: &str,
    url: &str,
    allowed_prefix: &str,
    launch: &Launch,
    bin: &mut Option<Binary>,
    hook: Hook,
) {
    let out = screenshot_dir();
    let profile = tempfile::tempdir().unwrap();
    let cfg = json!({
        "scenario": scenario,
        "url": url,
        "allowedPrefix": allowed_prefix,
        "outDir": out.display().to_string(),
        "userDataDir": profile.path().join("profile").display().to_string(),
        "chromium": tools.chromium.display().to_string(),
        "expectUser": "Ada Lovelace",
    });
    let mut child = Command::new(&tools.node)
        .arg(&tools.driver)
        .arg(cfg.to_string())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start node");
    let mut stdin = child.stdin.take().unwrap();
    let stdout = BufReader::new(child.stdout.take().unwrap());
    let mut ok = false;
    let started = Instant::now();
    for line in stdout.lines().map_while(Result::ok) {
        assert!(
            started.elapsed() < Duration::from_secs(240),
            "driver took too long"
        );
        match line.trim() {
            "STOP" => {
                let mut b = bin.take().expect("binary running");
                b.sigterm();
                let (status, _) = b.wait();
                assert!(status.success(), "binary exits cleanly: {status:?}");
                writeln!(stdin, "STOPPED").unwrap();
            }
            "START" => {
                *bin = Some(launch.start());
                writeln!(stdin, "STARTED").unwrap();
            }
            "OK" => ok = true,
            other => match hook(other) {
                Some(answer) => writeln!(stdin, "{answer}").unwrap(),
                None => eprintln!("driver: {other}"),
            },
        }
    }
    let output = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        ok && output.status.success(),
        "scenario {scenario} failed ({:?}):\n{stderr}\nbinary log:\n{}",
        output.status,
        bin.as_ref()
            .map(|b| tail(&b.stdout.lock().unwrap().join("\n"), 40))
            .unwrap_or_default()
    );
    eprintln!(
        "scenario {scenario} passed; screenshots in {}",
        out.display()
    );
}

fn through_ingress(scenario: &str, launch: Launch, hook: Hook) {
    let Some(tools) = tools() else { return };
    let mut bin = Some(launch.start());
    let token = token();
    let proxy = Proxy::start(&tools.nginx, launch.addr(), &token);
    let url = format!("http://{}/api/hassio_ingress/{token}/", proxy.addr);
    drive(&tools, scenario, &url, &url, &launch, &mut bin, hook);
}

/// Header, user, cards, chart, report, keyboard, themes, phone width and reconnecting
/// after a restart, through the ingress proxy. Does not need the tracker.
#[test]
fn panel_through_ingress_proxy() {
    through_ingress("ingress", Launch::new(json!({})), &mut no_hook);
}

/// Start tracking, save a baseline, make the add-on allocate (forty more sessions, opened
/// one by one), compare, find the growing site in the table, the trend card's growing
/// sites, and the report. The compare opens on Leak suspects: the held sessions' sites
/// carry the Suspect badge and evidence (`80 blocks · 80 new, none freed · …`); Largest
/// change and Growth only re-ask the add-on in their order. Needs the tracker installed
/// as the binary's global allocator.
#[test]
fn panel_tracks_growth_through_ingress_proxy() {
    // Exact mode: every allocation counts, so the growth is not a sampling accident. The
    // trend's clock runs fast (a sample every 100 ms, a checkpoint every 300 ms) so the
    // sessions opened one by one show up as growing sites within seconds.
    through_ingress(
        "tracking",
        Launch::new(json!({
            "debug_memory_mode": "exact",
            "trend_sample_interval_ms": 100,
            "trend_checkpoint_interval_ms": 300,
        })),
        &mut no_hook,
    );
}

/// Leak evidence in sampled mode (one sample per 64 KiB, seeded so a failure repeats):
/// forty held sessions give sampled rows whose evidence reads `±… · N samples`, singular
/// and plural right; a baseline and a compare straight after show the Leak suspects order
/// by default and say plainly that there are no suspects yet. Light, dark and phone.
#[test]
fn panel_shows_sampled_leak_evidence_through_ingress_proxy() {
    through_ingress(
        "evidence",
        Launch::new(json!({
            "debug_memory_sample_kib": 64,
            "debug_memory_seed": 17,
        })),
        &mut no_hook,
    );
}

/// The same page at `/`, straight from the add-on, with no proxy and no prefix.
#[test]
fn panel_at_root_without_prefix() {
    let Some(tools) = tools() else { return };
    let launch = Launch::new(json!({}));
    let mut bin = Some(launch.start());
    let url = format!("http://{}/", launch.addr());
    drive(&tools, "root", &url, &url, &launch, &mut bin, &mut no_hook);
}

/// The Host view against a Supervisor stand-in (one poll every 20 ms stands for a minute):
/// after a simulated day, one add-on leaking 30 MiB/h among flat, cyclic, stepped and
/// stopped ones, one rising since its restart, and a Core that restarted; the banner, the
/// verdicts, sorting, a row's chart with the restart marked, a refused Supervisor (403)
/// said in the panel, light, dark and phone.
#[test]
fn panel_host_view_through_ingress_proxy() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let standin = host_standin();
    let supervisor = runtime.block_on(standin::serve(standin.clone()));
    let mut launch = Launch::new(json!({
        "supervisor_url": format!("http://{supervisor}"),
        "host_poll_interval_ms": 20,
    }));
    launch
        .env
        .push(("SUPERVISOR_TOKEN", standin::SUPERVISOR_TOKEN.into()));
    let mut hook = |line: &str| match line {
        "FORBID" => {
            standin
                .forbidden
                .store(true, std::sync::atomic::Ordering::Relaxed);
            Some("FORBIDDEN")
        }
        _ => None,
    };
    through_ingress("host", launch, &mut hook);
}

/// A Zigbee2MQTT leaking 30 MiB/h; flat, daily-cycle, stepped and stopped add-ons; a
/// Frigate growing since its restart at 20 h; Core at 520 MiB that restarts at 3 h to
/// 230 MiB; the Supervisor and plugins flat.
fn host_standin() -> std::sync::Arc<standin::StandIn> {
    use standin::{Answer, MIB, flat};
    let shape = |f: fn(f64) -> f64| Answer::Memory(Box::new(move |t| f(t) * MIB));
    let addons = [
        (
            "45df7312_zigbee2mqtt",
            "Zigbee2MQTT",
            shape(|t| 200.0 + 30.0 * t),
        ),
        ("core_mosquitto", "Mosquitto broker", flat(40.0)),
        (
            "a0d7b954_nodered",
            "Node-RED",
            shape(|t| 150.0 + 20.0 * (t * std::f64::consts::TAU / 24.0).sin()),
        ),
        (
            "5c53de3b_esphome",
            "ESPHome",
            shape(|t| if t < 2.0 { 80.0 } else { 110.0 }),
        ),
        ("local_old", "Old add-on", Answer::Stopped),
        // Restarted at 20 h (memory falls to a third), growing since: a young segment.
        (
            "ccab4aaf_frigate",
            "Frigate",
            shape(|t| {
                if t < 20.0 {
                    300.0
                } else {
                    100.0 + 10.0 * (t - 20.0)
                }
            }),
        ),
    ]
    .into_iter()
    .map(|(slug, name, a)| (slug.to_string(), (name.to_string(), a)))
    .collect();
    let mut fixed: std::collections::BTreeMap<String, Answer> =
        ["supervisor", "dns", "audio", "cli", "multicast", "observer"]
            .into_iter()
            .map(|s| (s.to_string(), flat(60.0)))
            .collect();
    fixed.insert(
        "core".into(),
        shape(|t| if t < 3.0 { 520.0 } else { 230.0 }),
    );
    standin::new_standin(addons, fixed, false, Duration::ZERO)
}
