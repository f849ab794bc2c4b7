//! The listener: plain HTTP/1.1 or TLS, one task per connection, graceful stop.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Duration;

use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::Request;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::sync::Notify;
use tower_service::Service;

use crate::app::{self, AppState, ConnectionControl};
use crate::calls::Store;
use crate::faults::{Faults, GlobalFaults};
use crate::webhooks::{Inbox, Webhooks};

/// The default account id and key, printed at start-up.
pub const DEFAULT_ACCOUNT: &str = "AC123456";
pub const DEFAULT_API_KEY: &str = "tvx_sk_test_simulator";

#[derive(Debug, Clone)]
pub struct Config {
    pub bind: SocketAddr,
    pub account: String,
    pub api_key: String,
    /// A second key accepted as well (a key rotation in progress); each hangup's key is
    /// recorded (`GET /_sim/hangups`).
    pub second_api_key: Option<String>,
    /// None: calls ring until a control request answers them.
    pub answer_delay: Option<Duration>,
    pub faults: GlobalFaults,
    pub tls: Option<(PathBuf, PathBuf)>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            bind: "127.0.0.1:0".parse().unwrap(),
            account: DEFAULT_ACCOUNT.into(),
            api_key: DEFAULT_API_KEY.into(),
            second_api_key: None,
            answer_delay: Some(Duration::from_secs(1)),
            faults: GlobalFaults::default(),
            tls: None,
        }
    }
}

pub fn state(config: &Config) -> Arc<AppState> {
    Arc::new(AppState {
        account: config.account.clone(),
        api_key: config.api_key.clone(),
        second_api_key: config.second_api_key.clone(),
        hangup_log: Default::default(),
        store: Store::new(config.answer_delay),
        faults: Faults::new(config.faults.clone()),
        webhooks: Arc::new(Webhooks::default()),
        inbox: Inbox::default(),
        hangups: AtomicU64::new(0),
    })
}

/// Serves on `listener` until `stop` is notified.
pub async fn serve(listener: TcpListener, config: Config, stop: Arc<Notify>) -> Result<(), String> {
    let tls = match &config.tls {
        Some((cert, key)) => Some(crate::tls::acceptor(cert, key)?),
        None => None,
    };
    let router = app::router(state(&config));
    loop {
        let (stream, _) = tokio::select! {
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(_) => { tokio::time::sleep(Duration::from_millis(10)).await; continue }
            },
            _ = stop.notified() => return Ok(()),
        };
        let _ = stream.set_nodelay(true);
        let router = router.clone();
        let tls = tls.clone();
        tokio::spawn(async move {
            let kill = Arc::new(Notify::new());
            let ctl = ConnectionControl(Arc::clone(&kill));
            let svc = service_fn(move |mut req: Request<Incoming>| {
                req.extensions_mut().insert(ctl.clone());
                let mut r = router.clone();
                async move { r.call(req).await }
            });
            let builder = http1::Builder::new();
            match tls {
                Some(acceptor) => {
                    let Ok(Ok(s)) =
                        tokio::time::timeout(Duration::from_secs(10), acceptor.accept(stream))
                            .await
                    else {
                        return;
                    };
                    tokio::select! {
                        _ = builder.serve_connection(TokioIo::new(s), svc) => {}
                        _ = kill.notified() => {}
                    }
                }
                None => {
                    tokio::select! {
                        _ = builder.serve_connection(TokioIo::new(stream), svc) => {}
                        _ = kill.notified() => {}
                    }
                }
            }
        });
    }
}

/// A simulator running on its own threads, for tests and benchmarks. Stops on drop.
pub struct Running {
    pub addr: SocketAddr,
    pub base_url: String,
    pub config: Config,
    stop: Arc<Notify>,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// Starts a simulator on `config.bind` (port 0 picks a free port).
pub fn spawn(config: Config) -> std::io::Result<Running> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("tryvox-sim")
        .enable_all()
        .build()?;
    let listener = rt.block_on(TcpListener::bind(config.bind))?;
    let addr = listener.local_addr()?;
    let scheme = if config.tls.is_some() {
        "https"
    } else {
        "http"
    };
    let stop = Arc::new(Notify::new());
    let (s2, c2) = (Arc::clone(&stop), config.clone());
    let (tx, rx) = std::sync::mpsc::channel();
    let thread = std::thread::spawn(move || {
        rt.block_on(async {
            let r = serve(listener, c2, s2).await;
            let _ = tx.send(r);
        });
        rt.shutdown_timeout(Duration::from_millis(200));
    });
    // A TLS set-up error surfaces here rather than as a silent dead server.
    if let Ok(Err(e)) = rx.recv_timeout(Duration::from_millis(50)) {
        return Err(std::io::Error::other(e));
    }
    Ok(Running {
        addr,
        base_url: format!("{scheme}://{addr}"),
        config,
        stop,
        thread: Some(thread),
    })
}

impl Running {
    /// `{base}/v1/voice/accounts/{account}/calls`
    pub fn calls_url(&self) -> String {
        format!(
            "{}/v1/voice/accounts/{}/calls",
            self.base_url, self.config.account
        )
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.stop.notify_one();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
