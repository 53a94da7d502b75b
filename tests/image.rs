//! The add-on image, built and started on this machine.
//!
//! There is no Docker engine here, so the image is built with `buildah` (no daemon, vfs
//! storage in a temp dir, chroot isolation: `FROM scratch` needs no registry) from
//! `addon/Dockerfile` and the static release binary `.ci/build-static` made. `podman run`
//! cannot set rlimits or cgroups in these VMs, so the image is mounted and its CMD started
//! with `chroot` as root, with `/proc` mounted and an options file in its `/data`, as the
//! Supervisor would write it. What is checked: the labels against config.yaml, that the
//! image holds nothing but the binary (no shell), the size limits, the HEALTHCHECK command
//! passing (and failing once the server is gone), `/healthz` over loopback, a WebSocket
//! `debug/memory_snapshot` symbolized to file:line, logs under `/data/logs`, and SIGTERM →
//! exit 0 within 5 s.
//!
//! Needs root, `buildah` and the release binary; without them the test is skipped, except
//! under `CI=true`, where that is a failure (`.ci/test` installs buildah and builds the
//! binary). Also here: `apparmor.txt` compiles with `apparmor_parser`, and the one owner
//! named by repository.yaml, config.yaml and the docs agrees.

mod support;

use std::collections::BTreeSet;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::{get, release_binary_path, ws};

/// Issue 14's limits: what an SD card and a slow link should have to take.
const MAX_BINARY_BYTES: u64 = 12 * 1024 * 1024;
const MAX_IMAGE_COMPRESSED_BYTES: u64 = 6 * 1024 * 1024;
/// `heapwatch healthcheck` promises an answer within this.
const HEALTHCHECK_BOUND: Duration = Duration::from_secs(2);
/// The Supervisor's stop timeout is 10 s; the binary promises half.
const STOP_BOUND: Duration = Duration::from_secs(5);
/// The tag the test builds; the storage is private to the test, so it cannot collide.
const IMAGE: &str = "localhost/heapwatch-image-test:latest";

fn under_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true")
}

/// Skips the test with `reason` on a developer's machine; fails it under CI.
fn skip(reason: &str) {
    assert!(
        !under_ci(),
        "CI=true, and the image test cannot run: {reason}"
    );
    eprintln!("skipped: {reason}");
}

fn on_path(tool: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|paths| std::env::split_paths(&paths).any(|dir| dir.join(tool).is_file()))
}

fn is_root() -> bool {
    // /proc/self belongs to the process's effective user.
    std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The Supervisor's name for this machine's architecture.
fn supervisor_arch() -> Option<&'static str> {
    match std::env::consts::ARCH {
        "x86_64" => Some("amd64"),
        "aarch64" => Some("aarch64"),
        _ => None,
    }
}

fn config_yaml() -> serde_norway::Value {
    let text = std::fs::read_to_string(root().join("addon/config.yaml")).expect("config.yaml");
    serde_norway::from_str(&text).expect("config.yaml parses")
}

fn yaml_str<'a>(v: &'a serde_norway::Value, key: &str) -> &'a str {
    v[key]
        .as_str()
        .unwrap_or_else(|| panic!("config.yaml: `{key}` is not a string"))
}

/// Runs `cmd`; panics with its stderr when it fails.
fn run(cmd: &mut Command) -> Output {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}):\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn stdout_text(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// buildah with storage of its own under a temp dir.
struct Buildah {
    root: PathBuf,
    runroot: PathBuf,
}

impl Buildah {
    fn cmd(&self) -> Command {
        let mut c = Command::new("buildah");
        c.arg("--root")
            .arg(&self.root)
            .arg("--runroot")
            .arg(&self.runroot)
            .arg("--storage-driver=vfs");
        c
    }
}

/// Everything the test set up, undone on drop — also when an assertion failed: the server
/// killed, `/proc` unmounted, the working container unmounted and removed, then the
/// storage deleted with the temp dir.
struct Session {
    buildah: Buildah,
    container: Option<String>,
    proc_mount: Option<PathBuf>,
    server: Option<Child>,
    _dir: tempfile::TempDir,
}

impl Drop for Session {
    fn drop(&mut self) {
        if let Some(mut child) = self.server.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        if let Some(proc_dir) = self.proc_mount.take() {
            let _ = Command::new("umount").arg(&proc_dir).status();
        }
        if let Some(ctr) = self.container.take() {
            let _ = self.buildah.cmd().args(["umount", &ctr]).output();
            let _ = self.buildah.cmd().args(["rm", &ctr]).output();
        }
        let _ = self
            .buildah
            .cmd()
            .args(["rmi", "--all", "--force"])
            .output();
    }
}

/// Every path below `dir`, relative to it.
fn tree(dir: &Path, rel: &str, out: &mut BTreeSet<String>) {
    for entry in std::fs::read_dir(dir).expect("read image dir") {
        let entry = entry.expect("dir entry");
        let name = format!("{rel}{}", entry.file_name().to_string_lossy());
        let kind = entry.file_type().expect("file type");
        out.insert(name.clone());
        if kind.is_dir() {
            tree(&entry.path(), &format!("{name}/"), out);
        }
    }
}

/// A loopback port free right now (bound and released).
fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind port 0");
    l.local_addr().expect("address").port()
}

/// The compressed size of the image as a registry stores it: manifest, config and gzipped
/// layers, from an OCI layout `buildah push` wrote.
fn compressed_size(layout: &Path) -> u64 {
    let read_json = |p: PathBuf| -> Value {
        serde_json::from_slice(&std::fs::read(&p).unwrap_or_else(|e| panic!("{p:?}: {e}")))
            .expect("OCI JSON")
    };
    let blob = |digest: &str| {
        let hex = digest.strip_prefix("sha256:").expect("sha256 digest");
        layout.join("blobs/sha256").join(hex)
    };
    let index = read_json(layout.join("index.json"));
    let manifest_ref = &index["manifests"][0];
    let manifest = read_json(blob(manifest_ref["digest"].as_str().expect("digest")));
    let layers = manifest["layers"].as_array().expect("layers");
    assert!(!layers.is_empty(), "the image has no layer");
    for layer in layers {
        let media = layer["mediaType"].as_str().unwrap_or_default();
        assert!(media.ends_with("+gzip"), "layer not gzipped: {media}");
    }
    let sizes = layers
        .iter()
        .chain([&manifest["config"]])
        .map(|d| d["size"].as_u64().expect("size"));
    manifest_ref["size"].as_u64().expect("manifest size") + sizes.sum::<u64>()
}

#[test]
fn image_builds_holds_only_the_binary_starts_answers_and_stops() {
    if !is_root() {
        return skip("needs root (chroot and mounting /proc)");
    }
    if !on_path("buildah") {
        return skip("buildah is not installed (apt-get install buildah)");
    }
    let Some(arch) = supervisor_arch() else {
        return skip("no add-on architecture for this machine");
    };
    let binary = release_binary_path();
    if !binary.exists() {
        return skip(&format!(
            "{} is missing (bash .ci/build-static)",
            binary.display()
        ));
    }

    let dir = tempfile::tempdir().expect("temp dir");
    let context = dir.path().join("context");
    std::fs::create_dir_all(context.join(arch)).expect("context dir");
    std::fs::copy(&binary, context.join(arch).join("heapwatch")).expect("copy binary");
    let mut s = Session {
        buildah: Buildah {
            root: dir.path().join("storage"),
            runroot: dir.path().join("run"),
        },
        container: None,
        proc_mount: None,
        server: None,
        _dir: dir,
    };
    let scratch = s._dir.path().to_path_buf();

    // Build, as the release workflow does but without BUILD_VERSION: the Dockerfile's
    // default must then be config.yaml's version.
    let t = Instant::now();
    run(s
        .buildah
        .cmd()
        .args([
            "build",
            "--isolation=chroot",
            "--format=docker",
            "--pull=never",
        ])
        .arg("--file")
        .arg(root().join("addon/Dockerfile"))
        .args(["--build-arg", &format!("BUILD_ARCH={arch}")])
        .args(["--tag", IMAGE])
        .arg(&context));
    eprintln!("image built in {:.1} s", t.elapsed().as_secs_f64());

    // Labels, health check and command, as Docker will read them.
    let inspect: Value = serde_json::from_slice(
        &run(s.buildah.cmd().args(["inspect", "--type", "image", IMAGE])).stdout,
    )
    .expect("inspect JSON");
    let docker = &inspect["Docker"]["config"];
    let config = config_yaml();
    let labels = &docker["Labels"];
    assert_eq!(labels["io.hass.version"], yaml_str(&config, "version"));
    assert_eq!(labels["io.hass.arch"], arch);
    assert_eq!(labels["io.hass.type"], "app");
    assert_eq!(labels["io.hass.name"], yaml_str(&config, "name"));
    let description = labels["io.hass.description"].as_str().unwrap_or_default();
    assert!(description.len() > 20, "description label: {description:?}");
    assert_eq!(
        docker["Healthcheck"]["Test"],
        json!(["CMD", "/usr/bin/heapwatch", "healthcheck"])
    );
    let cmd: Vec<String> =
        serde_json::from_value(docker["Cmd"].clone()).expect("CMD is a list of strings");
    assert_eq!(cmd[0], "/usr/bin/heapwatch", "CMD: {cmd:?}");
    assert!(
        docker["Entrypoint"].is_null() || docker["Entrypoint"] == json!([]),
        "no entrypoint: {}",
        docker["Entrypoint"]
    );

    // Size as pulled (a registry stores gzipped layers).
    let layout = scratch.join("oci");
    run(s
        .buildah
        .cmd()
        .args(["push", "--compression-format", "gzip", IMAGE])
        .arg(format!("oci:{}", layout.display())));
    let pulled = compressed_size(&layout);
    eprintln!("image: {pulled} bytes compressed");
    assert!(
        pulled <= MAX_IMAGE_COMPRESSED_BYTES,
        "image is {pulled} bytes compressed, limit {MAX_IMAGE_COMPRESSED_BYTES}"
    );

    // Mount it: nothing but the binary and /data.
    let ctr = stdout_text(&run(s.buildah.cmd().args(["from", IMAGE])));
    s.container = Some(ctr.clone());
    let rootfs = PathBuf::from(stdout_text(&run(s.buildah.cmd().args(["mount", &ctr]))));
    let mut files = BTreeSet::new();
    tree(&rootfs, "", &mut files);
    let expected: BTreeSet<String> = ["data", "usr", "usr/bin", "usr/bin/heapwatch"]
        .map(String::from)
        .into();
    assert_eq!(files, expected, "the image holds more than the binary");
    assert!(!rootfs.join("bin/sh").exists(), "a shell in the image");
    let shipped = std::fs::metadata(rootfs.join("usr/bin/heapwatch")).expect("binary");
    eprintln!("binary: {} bytes", shipped.len());
    assert!(
        shipped.len() <= MAX_BINARY_BYTES,
        "binary is {} bytes, limit {MAX_BINARY_BYTES}",
        shipped.len()
    );
    assert!(shipped.mode() & 0o111 != 0, "binary not executable");

    // What the Supervisor provides at start: /proc, and the options file in /data.
    let proc_dir = rootfs.join("proc");
    std::fs::create_dir_all(&proc_dir).expect("mkdir proc");
    run(Command::new("mount")
        .args(["-t", "proc", "proc"])
        .arg(&proc_dir));
    s.proc_mount = Some(proc_dir);
    let port = free_port();
    let ingress: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    std::fs::write(
        rootfs.join("data/options.json"),
        json!({
            "log_level": "info",
            "debug_memory": true,
            "debug_memory_mode": "exact",
            "debug_memory_frames": 32,
            "debug_memory_sample_kib": 512,
            // Loopback stands in for the Supervisor's ingress proxy (172.30.32.2).
            "ingress_listen": ingress.to_string(),
            "trusted_proxies": ["127.0.0.1"],
        })
        .to_string(),
    )
    .expect("write options.json");

    // Start the image's CMD, as Docker's init would, with an empty environment.
    let log_out = std::fs::File::create(scratch.join("server.out")).expect("log file");
    let log_err = log_out.try_clone().expect("log file");
    let chroot_bin = ["/usr/sbin/chroot", "/usr/bin/chroot", "/sbin/chroot"]
        .into_iter()
        .find(|p| Path::new(p).exists())
        .expect("chroot (coreutils) is installed");
    let chroot = |args: &[String]| {
        let mut c = Command::new(chroot_bin);
        c.arg(&rootfs).args(args).env_clear().stdin(Stdio::null());
        c
    };
    let server = chroot(&cmd)
        .stdout(log_out)
        .stderr(log_err)
        .spawn()
        .expect("start the image's CMD with chroot");
    s.server = Some(server);
    let server_output = || std::fs::read_to_string(scratch.join("server.out")).unwrap_or_default();
    let deadline = Instant::now() + support::WAIT;
    while TcpStream::connect(ingress).is_err() {
        if let Some(status) = s.server.as_mut().unwrap().try_wait().expect("try_wait") {
            panic!("the server exited ({status}):\n{}", server_output());
        }
        assert!(
            Instant::now() < deadline,
            "no listener on {ingress}:\n{}",
            server_output()
        );
        std::thread::sleep(Duration::from_millis(50));
    }

    // The image's HEALTHCHECK, run inside it.
    let healthcheck: Vec<String> = ["/usr/bin/heapwatch", "healthcheck"]
        .map(String::from)
        .into();
    let t = Instant::now();
    let out = chroot(&healthcheck).output().expect("run healthcheck");
    let took = t.elapsed();
    assert!(
        out.status.success(),
        "healthcheck failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(took < HEALTHCHECK_BOUND, "healthcheck took {took:?}");

    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        let health = get(ingress, "/healthz", &[]).await;
        assert_eq!(health.status, 200);
        assert_eq!(health.json(), json!({"status": "ok"}));

        // A snapshot over the ingress WebSocket, symbolized inside the image: some frame
        // of heapwatch's own code has its qualified function, short file and line (the
        // build directory is not shown: paths start at `src/`).
        let mut session = ws(ingress).await;
        let reply = session
            .call("1", "debug/memory_snapshot", json!({"top_n": 25}))
            .await;
        let rows = reply["result"]["top_allocators"]
            .as_array()
            .unwrap_or_else(|| panic!("no top_allocators: {reply}"));
        assert!(!rows.is_empty(), "empty snapshot: {reply}");
        let own_frames: Vec<&str> = rows
            .iter()
            .flat_map(|r| r["traceback"].as_array().into_iter().flatten())
            .filter_map(Value::as_str)
            .filter(|f| f.starts_with("heapwatch::") && f.contains(" (src/"))
            .collect();
        assert!(
            !reply.to_string().contains(env!("CARGO_MANIFEST_DIR")),
            "the build directory in a path: {reply}"
        );
        let with_line = own_frames.iter().find(|f| {
            f.strip_suffix(')')
                .and_then(|f| f.rsplit_once(".rs:"))
                .is_some_and(|(_, line)| line.parse::<u32>().is_ok_and(|n| n > 0))
        });
        assert!(
            with_line.is_some_and(|f| !f.starts_with('(') && !f.starts_with("0x")),
            "no frame of heapwatch's own code as `function (file.rs:line)`: {own_frames:?}"
        );
    });
    drop(rt);

    // SIGTERM: exit 0 within the bound.
    let pid = s.server.as_ref().unwrap().id().to_string();
    run(Command::new("kill").args(["-TERM", &pid]));
    let t = Instant::now();
    let status = loop {
        if let Some(status) = s.server.as_mut().unwrap().try_wait().expect("try_wait") {
            break status;
        }
        assert!(t.elapsed() < STOP_BOUND, "still running 5 s after SIGTERM");
        std::thread::sleep(Duration::from_millis(20));
    };
    s.server = None;
    assert_eq!(
        status.code(),
        Some(0),
        "exit after SIGTERM:\n{}",
        server_output()
    );

    // With the server gone, the same health check fails, in time.
    let t = Instant::now();
    let out = chroot(&healthcheck).output().expect("run healthcheck");
    assert_eq!(out.status.code(), Some(1), "healthcheck with no server");
    assert!(t.elapsed() < HEALTHCHECK_BOUND);
    let why = String::from_utf8_lossy(&out.stderr);
    assert!(why.contains("unhealthy"), "{why}");

    // Logs landed in /data/logs.
    let logs = rootfs.join("data/logs");
    let text: String = std::fs::read_dir(&logs)
        .unwrap_or_else(|e| panic!("{}: {e}", logs.display()))
        .map(|e| std::fs::read_to_string(e.expect("entry").path()).unwrap_or_default())
        .collect();
    assert!(
        text.contains("heapwatch starting") && text.contains("options loaded"),
        "no start lines in /data/logs: {text}"
    );
}

/// `apparmor_parser`'s verdict on a profile (parsed and compiled, not loaded).
fn apparmor_compiles(profile: &str) -> Result<(), String> {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("apparmor.txt");
    std::fs::write(&path, profile).expect("write profile");
    let out = Command::new("apparmor_parser")
        .args(["--skip-kernel-load", "--skip-cache", "--quiet"])
        .arg(&path)
        .output()
        .expect("run apparmor_parser");
    if out.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

#[test]
fn apparmor_profile_compiles_and_needs_no_shell() {
    let parser_present =
        on_path("apparmor_parser") || Path::new("/usr/sbin/apparmor_parser").exists();
    if !parser_present {
        return skip("apparmor_parser is not installed (apt-get install apparmor)");
    }
    let profile = std::fs::read_to_string(root().join("addon/apparmor.txt")).expect("profile");
    assert_eq!(apparmor_compiles(&profile), Ok(()));
    // The check can fail: a broken rule is refused.
    let broken = profile.replace("network tcp,", "network tcpx,");
    assert!(apparmor_compiles(&broken).is_err());
    // It lets exactly two programs run — Docker's init and the binary — so no shell or
    // busybox; and the check sees a third.
    assert_eq!(
        executables(&profile),
        ["/sbin/docker-init", "/usr/bin/heapwatch"]
    );
    let with_shell = profile.replace(
        "  /usr/bin/heapwatch rmix,",
        "  /usr/bin/heapwatch rmix,\n  /bin/sh ix,",
    );
    assert_eq!(
        executables(&with_shell),
        ["/sbin/docker-init", "/usr/bin/heapwatch", "/bin/sh"]
    );
}

/// The paths a profile's file rules allow to execute (a permission set with `x`).
fn executables(profile: &str) -> Vec<String> {
    profile
        .lines()
        .map(str::trim)
        .filter(|l| l.starts_with('/') && l.ends_with(','))
        .filter_map(|l| {
            let (path, perms) = l.trim_end_matches(',').split_once(char::is_whitespace)?;
            perms.contains('x').then(|| path.to_string())
        })
        .collect()
}

/// Where repository.yaml, config.yaml and the docs disagree about the owner whose
/// registry namespace the images live under.
fn owner_problems(repository: &str, config: &str, docs: &[(&str, &str)]) -> Vec<String> {
    let mut problems = Vec::new();
    let field = |text: &str, key: &str| -> Option<String> {
        text.lines()
            .find_map(|l| l.strip_prefix(&format!("{key}: ")))
            .map(|v| v.trim().trim_matches('"').to_string())
    };
    let Some(image) = field(config, "image") else {
        return vec!["config.yaml: no `image`".into()];
    };
    let Some(owner) = image
        .strip_prefix("ghcr.io/")
        .and_then(|rest| rest.strip_suffix("/{arch}-heapwatch"))
    else {
        return vec![format!(
            "config.yaml: image `{image}`, expected ghcr.io/<owner>/{{arch}}-heapwatch"
        )];
    };
    let url = format!("https://github.com/{owner}/heapwatch");
    for (file, text) in [("repository.yaml", repository), ("config.yaml", config)] {
        match field(text, "url") {
            Some(u) if u.to_lowercase() == url => {}
            other => problems.push(format!("{file}: url {other:?}, expected `{url}`")),
        }
    }
    for (file, text) in docs {
        if !text.contains(&image) {
            problems.push(format!("{file}: does not name the image `{image}`"));
        }
    }
    problems
}

fn read(rel: &str) -> String {
    std::fs::read_to_string(root().join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

#[test]
fn one_owner_for_the_repository_the_images_and_the_docs() {
    let docs = [
        ("README.md", read("README.md")),
        ("addon/DOCS.md", read("addon/DOCS.md")),
    ];
    let docs: Vec<(&str, &str)> = docs.iter().map(|(f, t)| (*f, t.as_str())).collect();
    assert_eq!(
        owner_problems(&read("repository.yaml"), &read("addon/config.yaml"), &docs),
        Vec::<String>::new()
    );
}

#[test]
fn a_fork_that_changes_only_the_image_owner_is_told_what_else_to_change() {
    let config = read("addon/config.yaml");
    let forked = config.replace("image: ghcr.io/heapwatch/", "image: ghcr.io/someone/");
    assert_eq!(
        owner_problems(&read("repository.yaml"), &forked, &[("addon/DOCS.md", "")]),
        [
            "repository.yaml: url Some(\"https://github.com/heapwatch/heapwatch\"), \
             expected `https://github.com/someone/heapwatch`",
            "config.yaml: url Some(\"https://github.com/heapwatch/heapwatch\"), \
             expected `https://github.com/someone/heapwatch`",
            "addon/DOCS.md: does not name the image `ghcr.io/someone/{arch}-heapwatch`",
        ]
    );
}
