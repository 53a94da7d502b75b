//! Helpers shared by the integration tests: start the real server on 127.0.0.1:0 (in this
//! process, or the real binary as a child process), and talk to it over real sockets with
//! a real HTTP client and a real WebSocket client.
#![allow(dead_code)]

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use heapwatch::app::{self, Limits};
use heapwatch::settings::{Secret, Settings};
use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use serde_json::{Value, json};
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// A token long enough for the settings rules.
pub const TOKEN: &str = "test-token-0123456789abcdef-0123456789";

/// How long any single test wait may take before the test fails.
pub const WAIT: Duration = Duration::from_secs(20);

/// The rows (`top_allocators`) of a `debug/memory_snapshot` reply; panics with the reply
/// when it has none.
pub fn rows(reply: &Value) -> &Vec<Value> {
    reply["result"]["top_allocators"]
        .as_array()
        .unwrap_or_else(|| panic!("no rows: {reply}"))
}

/// An in-process server.
pub struct TestServer {
    /// The server's services, for tests that need to hold one of their locks.
    pub services: std::sync::Arc<heapwatch::commands::Services>,
    pub ingress: SocketAddr,
    pub direct: Option<SocketAddr>,
    shutdown: Option<oneshot::Sender<()>>,
    pub handle: JoinHandle<Result<(), app::AppError>>,
    _data: tempfile::TempDir,
}

/// Settings for tests: loopback trusted, a temp data dir, optionally a token.
pub fn test_settings(data_dir: &Path, token: bool) -> Settings {
    let (mut s, _) =
        Settings::load_from(Path::new("/nonexistent/options.json"), std::iter::empty())
            .expect("defaults load");
    s.trusted_proxies = vec!["127.0.0.1".parse().unwrap()];
    s.data_dir = data_dir.to_path_buf();
    s.ingress_listen = "127.0.0.1:0".parse().unwrap();
    s.direct_listen = "127.0.0.1:0".parse().unwrap();
    if token {
        s.api_token = Some(Secret::new(TOKEN));
    }
    s
}

impl TestServer {
    /// Starts a server with the direct listener (token [`TOKEN`]) and default limits.
    pub async fn start() -> Self {
        Self::start_with(|_| {}, Limits::default()).await
    }

    /// Starts a server after letting the test adjust the settings.
    pub async fn start_with(adjust: impl FnOnce(&mut Settings), limits: Limits) -> Self {
        let data = tempfile::tempdir().expect("temp dir");
        let mut settings = test_settings(data.path(), true);
        adjust(&mut settings);
        let listeners = app::bind(&settings).await.expect("bind port 0");
        let ingress = listeners.ingress.local_addr().unwrap();
        let direct = listeners.direct.as_ref().map(|l| l.local_addr().unwrap());
        let (tx, rx) = oneshot::channel::<()>();
        let bound = app::bound_addrs(&listeners).expect("addresses");
        let server = app::build_server(settings, limits, bound);
        let services = server.services.clone();
        let handle = tokio::spawn(app::serve(server, listeners, async move {
            let _ = rx.await;
        }));
        Self {
            services,
            ingress,
            direct,
            shutdown: Some(tx),
            handle,
            _data: data,
        }
    }

    pub fn direct(&self) -> SocketAddr {
        self.direct.expect("direct listener is on")
    }

    /// Triggers shutdown and waits for `run` to return; returns how long it took.
    pub async fn stop(mut self) -> Duration {
        let t = std::time::Instant::now();
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        tokio::time::timeout(WAIT, &mut self.handle)
            .await
            .expect("run returns")
            .expect("no panic")
            .expect("run ok");
        t.elapsed()
    }
}

/// An HTTP response.
#[derive(Debug)]
pub struct HttpResponse {
    pub status: u16,
    pub headers: hyper::HeaderMap,
    pub body: Vec<u8>,
}

impl HttpResponse {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }
    pub fn header(&self, name: &str) -> Option<String> {
        self.headers
            .get(name)
            .map(|v| v.to_str().unwrap().to_string())
    }
}

/// Connects from `from` (another loopback address simulates another host).
pub async fn tcp_from(addr: SocketAddr, from: Option<IpAddr>) -> TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    if let Some(ip) = from {
        socket.bind(SocketAddr::new(ip, 0)).unwrap();
    }
    socket.connect(addr).await.expect("connect")
}

/// One GET with the given headers, over a fresh connection.
pub async fn get(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> HttpResponse {
    get_from(addr, path, headers, None).await
}

/// [`get`] from a chosen local address.
pub async fn get_from(
    addr: SocketAddr,
    path: &str,
    headers: &[(&str, &str)],
    from: Option<IpAddr>,
) -> HttpResponse {
    request(addr, "GET", path, headers, from).await
}

/// Any method.
pub async fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    from: Option<IpAddr>,
) -> HttpResponse {
    let stream = tcp_from(addr, from).await;
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .expect("http handshake");
    tokio::spawn(conn);
    let mut req = hyper::Request::builder()
        .method(method)
        .uri(path)
        .header("host", addr.to_string());
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = tokio::time::timeout(
        WAIT,
        sender.send_request(req.body(Empty::<Bytes>::new()).unwrap()),
    )
    .await
    .expect("response in time")
    .expect("response");
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let body = resp
        .into_body()
        .collect()
        .await
        .expect("body")
        .to_bytes()
        .to_vec();
    HttpResponse {
        status,
        headers,
        body,
    }
}

/// A WebSocket client.
pub struct Ws {
    pub stream: WebSocketStream<MaybeTlsStream<TcpStream>>,
    /// The `server_info` event received on connect.
    pub info: Value,
}

/// Why a WebSocket handshake failed: the HTTP status.
pub async fn ws_refused(addr: SocketAddr, headers: &[(&str, &str)], from: Option<IpAddr>) -> u16 {
    match ws_connect(addr, headers, from).await {
        Ok(_) => panic!("upgrade unexpectedly accepted"),
        Err(tungstenite::Error::Http(resp)) => resp.status().as_u16(),
        Err(e) => panic!("unexpected error {e}"),
    }
}

/// Opens `/ws` with extra headers.
pub async fn ws_connect(
    addr: SocketAddr,
    headers: &[(&str, &str)],
    from: Option<IpAddr>,
) -> Result<Ws, tungstenite::Error> {
    let mut req = format!("ws://{addr}/ws").into_client_request().unwrap();
    for (k, v) in headers {
        req.headers_mut().insert(
            hyper::header::HeaderName::from_bytes(k.as_bytes()).unwrap(),
            v.parse().unwrap(),
        );
    }
    let stream = tcp_from(addr, from).await;
    let (stream, _) = tokio_tungstenite::client_async(req, MaybeTlsStream::Plain(stream)).await?;
    let mut ws = Ws {
        stream,
        info: Value::Null,
    };
    ws.info = ws.recv().await;
    assert_eq!(
        ws.info["event"], "server_info",
        "first message is server_info: {}",
        ws.info
    );
    Ok(ws)
}

/// Opens `/ws` on a trusted ingress listener.
pub async fn ws(addr: SocketAddr) -> Ws {
    ws_connect(addr, &[], None)
        .await
        .expect("websocket connects")
}

impl Ws {
    /// Sends a text frame.
    pub async fn send_text(&mut self, text: impl Into<String>) {
        self.stream
            .send(Message::text(text.into()))
            .await
            .expect("send");
    }

    /// Sends a request.
    pub async fn send(&mut self, id: &str, command: &str, args: Value) {
        self.send_text(json!({"message_id": id, "command": command, "args": args}).to_string())
            .await;
    }

    /// The next text message as JSON (pings are answered by the client library).
    pub async fn recv(&mut self) -> Value {
        loop {
            let msg = tokio::time::timeout(WAIT, self.stream.next())
                .await
                .expect("a message in time")
                .expect("stream open")
                .expect("no transport error");
            match msg {
                Message::Text(t) => {
                    return serde_json::from_str(t.as_str()).expect("server sends JSON");
                }
                Message::Ping(_) | Message::Pong(_) => continue,
                other => panic!("unexpected message {other:?}"),
            }
        }
    }

    /// Sends a request and returns the reply with the same id (other messages are kept
    /// out of the way: this helper is for sequential use).
    pub async fn call(&mut self, id: &str, command: &str, args: Value) -> Value {
        self.send(id, command, args).await;
        let reply = self.recv().await;
        assert_eq!(reply["message_id"], id, "reply matches request: {reply}");
        reply
    }

    /// Expects the server to close the socket with `code`; returns the close frame.
    pub async fn expect_close(&mut self, code: u16) -> CloseFrame {
        loop {
            let msg = tokio::time::timeout(WAIT, self.stream.next())
                .await
                .expect("close in time");
            match msg {
                Some(Ok(Message::Close(Some(frame)))) => {
                    assert_eq!(
                        u16::from(frame.code),
                        code,
                        "close code; reason {:?}",
                        frame.reason
                    );
                    return frame;
                }
                Some(Ok(Message::Close(None))) => panic!("closed without a code, wanted {code}"),
                Some(Ok(_)) => continue,
                Some(Err(e)) => panic!("transport error before close {code}: {e}"),
                None => panic!("stream ended without a close frame, wanted {code}"),
            }
        }
    }
}

/// The real binary, started with an options file; its stdout is parsed for the ports.
pub struct Binary {
    pub child: Child,
    pub ingress: SocketAddr,
    pub direct: Option<SocketAddr>,
    pub dir: tempfile::TempDir,
    pub stdout: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

/// Where `.ci/build-static` puts the release binary the add-on image ships (static, for
/// this machine's own target): `target/<arch>-unknown-linux-gnu/release/heapwatch`.
pub fn release_binary_path() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target"));
    let triple = format!("{}-unknown-linux-gnu", std::env::consts::ARCH);
    target.join(triple).join("release/heapwatch")
}

/// [`release_binary_path`], which must exist.
pub fn release_binary() -> PathBuf {
    let bin = release_binary_path();
    assert!(
        bin.exists(),
        "{} is missing: run `bash .ci/build-static` (bash .ci/test does)",
        bin.display()
    );
    bin
}

/// The path of the built binary.
pub fn binary_path() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_heapwatch"))
}

impl Binary {
    /// Starts the binary with `options` (merged over loopback listeners on port 0, loopback
    /// trusted, data under a temp dir) and extra environment.
    pub fn start(options: Value, env: &[(&str, &str)]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let mut opts = json!({
            "ingress_listen": "127.0.0.1:0",
            "direct_listen": "127.0.0.1:0",
            "trusted_proxies": ["127.0.0.1"],
            "data_dir": dir.path().join("data").display().to_string(),
        });
        for (k, v) in options.as_object().unwrap() {
            opts[k] = v.clone();
        }
        let path = dir.path().join("options.json");
        std::fs::write(&path, opts.to_string()).unwrap();
        let mut cmd = Command::new(binary_path());
        cmd.arg("--options").arg(&path);
        cmd.env_remove("HEAPWATCH_DEBUG_MEMORY");
        for (k, v) in env {
            cmd.env(k, v);
        }
        let want_direct = opts.get("api_token").is_some_and(|t| !t.is_null());
        Self::launch(cmd, want_direct, dir)
    }

    /// Spawns `cmd` and waits until it reports its listeners on stdout.
    pub fn launch(mut cmd: Command, want_direct: bool, dir: tempfile::TempDir) -> Self {
        cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("spawn heapwatch");
        let out = child.stdout.take().unwrap();
        let lines = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let sink = lines.clone();
        std::thread::spawn(move || {
            use std::io::BufRead;
            for line in std::io::BufReader::new(out).lines().map_while(Result::ok) {
                let _ = tx.send(line.clone());
                sink.lock().unwrap().push(line);
            }
        });
        let mut ingress = None;
        let mut direct = None;
        let deadline = std::time::Instant::now() + WAIT;
        while ingress.is_none() || (want_direct && direct.is_none()) {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            let line = rx.recv_timeout(left).unwrap_or_else(|_| {
                panic!(
                    "binary did not report its listeners: {:?}",
                    lines.lock().unwrap()
                )
            });
            if line.contains("ingress listener up") {
                ingress = Some(addr_in(&line));
            } else if line.contains("direct listener up") {
                direct = Some(addr_in(&line));
            }
        }
        Binary {
            child,
            ingress: ingress.unwrap(),
            direct,
            dir,
            stdout: lines,
        }
    }

    /// Waits until a stdout line contains `needle`; returns that line.
    pub fn wait_for_line(&self, needle: &str) -> String {
        let deadline = std::time::Instant::now() + WAIT;
        loop {
            if let Some(l) = self
                .stdout
                .lock()
                .unwrap()
                .iter()
                .find(|l| l.contains(needle))
            {
                return l.clone();
            }
            assert!(
                std::time::Instant::now() < deadline,
                "no line with {needle:?}: {:?}",
                self.stdout.lock().unwrap()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Sends SIGTERM.
    pub fn sigterm(&self) {
        let ok = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill -TERM");
    }

    /// Waits for exit; returns the status and how long it took.
    pub fn wait(&mut self) -> (std::process::ExitStatus, Duration) {
        let t = std::time::Instant::now();
        loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                return (s, t.elapsed());
            }
            assert!(t.elapsed() < WAIT, "binary did not exit");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Binary {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn addr_in(line: &str) -> SocketAddr {
    let i = line
        .find("addr=")
        .unwrap_or_else(|| panic!("no addr= in {line}"));
    line[i + 5..]
        .split_whitespace()
        .next()
        .unwrap()
        .parse()
        .unwrap()
}
