//! Shared set-up for the fuzz targets: a server built exactly as `app::run` builds it,
//! on a single-threaded runtime.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, OnceLock};

use heapwatch::app::{self, Limits};
use heapwatch::commands::BoundListeners;
use heapwatch::http::Server;
use heapwatch::settings::{Secret, Settings};

/// The token the direct listener expects in every target.
pub const TOKEN: &str = "fuzz-token-0123456789abcdef-0123456789";

pub fn runtime() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime")
    })
}

pub fn settings() -> Settings {
    let (mut s, _) =
        Settings::load_from(Path::new("/nonexistent/options.json"), std::iter::empty())
            .expect("defaults load");
    s.trusted_proxies = vec!["127.0.0.1".parse().unwrap()];
    s.api_token = Some(Secret::new(TOKEN));
    s.data_dir = std::env::temp_dir();
    s
}

/// A fresh server (fresh task tracker, baselines and rate limits) for one input.
pub fn server() -> Arc<Server> {
    let bound = BoundListeners {
        ingress: SocketAddr::from(([127, 0, 0, 1], 8099)),
        direct: Some(SocketAddr::from(([127, 0, 0, 1], 8100))),
    };
    let limits = Limits {
        header_read_timeout: std::time::Duration::from_millis(200),
        write_timeout: std::time::Duration::from_millis(200),
        command_deadline: std::time::Duration::from_millis(50),
        ..Limits::default()
    };
    app::build_server(settings(), limits, bound)
}
