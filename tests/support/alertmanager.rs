//! A real Alertmanager (Debian package `prometheus-alertmanager`) that notifies a webhook
//! receiver served by the harness, so tests can see exactly what Alertmanager sends.
//!
//! Clustering is disabled (`--cluster.listen-address=`; otherwise it binds port 9094 and
//! parallel tests collide). The default route sends every alert, ungrouped, to the webhook
//! with `group_wait: 0s`, `group_interval: 1s`, `repeat_interval: 1h` and `send_resolved`.

use std::convert::Infallible;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Method, Request, Response};
use hyper_util::rt::TokioIo;
use serde_json::Value;

use super::server::{ServerProcess, restart_failed, start_http_server};
use super::{
    LOOPBACK, http_client, log_block, poll_until, require_any_binary, send, temp_dir, write_file,
};

/// Debian installs the binary as `prometheus-alertmanager`; upstream calls it `alertmanager`.
const BINARIES: [&str; 3] = [
    "/usr/bin/prometheus-alertmanager",
    "prometheus-alertmanager",
    "alertmanager",
];
const PACKAGE: &str = "prometheus-alertmanager";

/// The placeholder that [`Alertmanager::start_with_config`] replaces with the webhook URL.
pub const WEBHOOK_URL_PLACEHOLDER: &str = "{webhook_url}";

/// The default config: every alert, ungrouped, to the harness' webhook within about a second.
pub const DEFAULT_CONFIG: &str = "# vitals test harness
route:
  receiver: harness-webhook
  group_by: ['...']
  group_wait: 0s
  group_interval: 1s
  repeat_interval: 1h
receivers:
  - name: harness-webhook
    webhook_configs:
      - url: '{webhook_url}'
        send_resolved: true
";

/// An HTTP server on 127.0.0.1 that records the JSON body of every POST it receives and
/// answers 200. It runs on its own thread with its own tokio runtime, so it works from
/// synchronous tests; it stops on drop.
pub struct WebhookReceiver {
    port: u16,
    received: Arc<Mutex<Vec<Value>>>,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl WebhookReceiver {
    /// Binds 127.0.0.1:0 (no port race: the listener is kept) and starts serving.
    pub fn start() -> WebhookReceiver {
        let listener = TcpListener::bind((std::net::Ipv4Addr::LOCALHOST, 0))
            .unwrap_or_else(|e| panic!("binding the webhook receiver failed: {e}"));
        listener
            .set_nonblocking(true)
            .unwrap_or_else(|e| panic!("set_nonblocking on the webhook listener failed: {e}"));
        let port = listener
            .local_addr()
            .unwrap_or_else(|e| panic!("webhook listener address: {e}"))
            .port();
        let received = Arc::new(Mutex::new(Vec::new()));
        let (shutdown, mut shutdown_rx) = tokio::sync::oneshot::channel::<()>();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap_or_else(|e| panic!("building the webhook runtime failed: {e}"));
        let store = Arc::clone(&received);
        let thread = std::thread::Builder::new()
            .name("webhook-receiver".to_string())
            .spawn(move || {
                runtime.block_on(async move {
                    let listener = tokio::net::TcpListener::from_std(listener)
                        .expect("registering the webhook listener with tokio");
                    loop {
                        tokio::select! {
                            _ = &mut shutdown_rx => break,
                            accepted = listener.accept() => {
                                let Ok((stream, _)) = accepted else { continue };
                                let store = Arc::clone(&store);
                                tokio::spawn(async move {
                                    let service = service_fn(move |req| {
                                        record(req, Arc::clone(&store))
                                    });
                                    let _ = hyper::server::conn::http1::Builder::new()
                                        .serve_connection(TokioIo::new(stream), service)
                                        .await;
                                });
                            }
                        }
                    }
                });
            })
            .unwrap_or_else(|e| panic!("spawning the webhook thread failed: {e}"));
        WebhookReceiver {
            port,
            received,
            shutdown: Some(shutdown),
            thread: Some(thread),
        }
    }

    /// `http://127.0.0.1:PORT/` — the URL to configure as a webhook.
    pub fn url(&self) -> String {
        format!("http://{LOOPBACK}:{}/", self.port)
    }

    /// The port the receiver listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Every POSTed body so far, in arrival order. Bodies that are not JSON are recorded
    /// as a JSON string of their (lossy UTF-8) text.
    pub fn received(&self) -> Vec<Value> {
        self.received
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    /// Polls until a received body satisfies `predicate` and returns it; panics on timeout
    /// listing everything received.
    pub fn wait_for(&self, predicate: impl Fn(&Value) -> bool, timeout: Duration) -> Value {
        poll_until(timeout, || {
            self.received().into_iter().find(|v| predicate(v))
        })
        .unwrap_or_else(|| {
            panic!(
                "no webhook body matched within {timeout:?}; received {}: {:#?}",
                self.received().len(),
                self.received()
            )
        })
    }
}

impl Drop for WebhookReceiver {
    fn drop(&mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

async fn record(
    req: Request<Incoming>,
    store: Arc<Mutex<Vec<Value>>>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    if req.method() == Method::POST {
        let body = match req.into_body().collect().await {
            Ok(collected) => collected.to_bytes(),
            Err(_) => Bytes::new(),
        };
        let value = serde_json::from_slice(&body)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&body).into_owned()));
        store
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .push(value);
    }
    Ok(Response::new(Full::new(Bytes::from_static(b"ok\n"))))
}

/// A running Alertmanager plus the webhook receiver it notifies; both stop on drop.
pub struct Alertmanager {
    port: u16,
    process: ServerProcess,
    config_path: PathBuf,
    log_path: PathBuf,
    client: reqwest::blocking::Client,
    webhook: WebhookReceiver,
    dir: tempfile::TempDir,
}

impl Alertmanager {
    /// Starts Alertmanager with [`DEFAULT_CONFIG`] and waits for `/-/ready`. Panics with its
    /// log tail if it is not ready within [`STARTUP_TIMEOUT`].
    pub fn start() -> Alertmanager {
        Self::start_with_config(DEFAULT_CONFIG)
    }

    /// Starts Alertmanager with `config_yaml`, in which every [`WEBHOOK_URL_PLACEHOLDER`] is
    /// replaced by the harness webhook's URL.
    pub fn start_with_config(config_yaml: &str) -> Alertmanager {
        let binary = require_any_binary(&BINARIES, PACKAGE);
        let webhook = WebhookReceiver::start();
        let dir = temp_dir("alertmanager");
        let config_path = dir.path().join("alertmanager.yml");
        write_file(
            &config_path,
            config_yaml.replace(WEBHOOK_URL_PLACEHOLDER, &webhook.url()),
        );
        let log_path = dir.path().join("alertmanager.log");
        let client = http_client();
        let (process, port) = start_http_server(
            "Alertmanager",
            ("alertmanager log", &log_path),
            &client,
            ready_url,
            |port| command(&binary, &config_path, dir.path(), port),
        );
        Alertmanager {
            port,
            process,
            config_path,
            log_path,
            client,
            webhook,
            dir,
        }
    }

    /// Stops Alertmanager gracefully (SIGTERM, so it writes its notification log and
    /// silences to its data dir) and waits for it to exit; the webhook receiver keeps
    /// running. Alertmanager does not persist alerts: after [`Alertmanager::restart`] it
    /// holds only what clients send again.
    pub fn stop(&mut self) {
        if self.process.id().is_some() && self.process.signal(libc::SIGTERM).is_ok() {
            let child = self
                .process
                .child_mut()
                .expect("the process was just signalled");
            // Killed below if it has not exited by then.
            let _ = poll_until(Duration::from_secs(20), || super::exited(child));
        }
        self.process.stop();
    }

    /// Starts Alertmanager again on the same port, with the same config and data dir, and
    /// waits for `/-/ready`; panics with the log tail if it does not come up (for example
    /// because something else took the port meanwhile).
    pub fn restart(&mut self) {
        self.stop();
        let binary = require_any_binary(&BINARIES, PACKAGE);
        self.process.spawn(
            &mut command(&binary, &self.config_path, self.dir.path(), self.port),
            &self.log_path,
            &self.log_path,
        );
        if let Err(why) =
            self.process
                .wait_http_ready(&self.client, &ready_url(self.port), "Alertmanager")
        {
            restart_failed(
                "Alertmanager",
                self.port,
                &why,
                &[("alertmanager log", self.log_path.as_path())],
            );
        }
    }

    /// `http://127.0.0.1:PORT`, without a trailing slash.
    pub fn url(&self) -> String {
        format!("http://{LOOPBACK}:{}", self.port)
    }

    /// `127.0.0.1:PORT`, the form Prometheus' `alertmanagers` static targets take.
    pub fn host_port(&self) -> String {
        format!("{LOOPBACK}:{}", self.port)
    }

    /// The port Alertmanager listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The generated alertmanager.yml.
    pub fn config_path(&self) -> &Path {
        &self.config_path
    }

    /// Alertmanager's own log (stdout and stderr, debug level).
    pub fn log_path(&self) -> &Path {
        &self.log_path
    }

    /// The webhook receiver that Alertmanager notifies.
    pub fn webhook(&self) -> &WebhookReceiver {
        &self.webhook
    }

    /// Every webhook notification body received so far (Alertmanager's webhook JSON:
    /// `status`, `receiver`, `groupLabels`, `alerts[]`, ...).
    pub fn received(&self) -> Vec<Value> {
        self.webhook.received()
    }

    /// Polls until a webhook notification satisfies `predicate` and returns it; panics on
    /// timeout with everything received and Alertmanager's log tail.
    pub fn wait_for_webhook(&self, predicate: impl Fn(&Value) -> bool, timeout: Duration) -> Value {
        poll_until(timeout, || {
            self.webhook.received().into_iter().find(|v| predicate(v))
        })
        .unwrap_or_else(|| {
            panic!(
                "no webhook notification matched within {timeout:?}; received: {:#?}\n{}",
                self.webhook.received(),
                log_block("alertmanager log", &self.log_path)
            )
        })
    }

    /// Posts alerts (a JSON array of `{labels, annotations, startsAt?, endsAt?}`) to
    /// `/api/v2/alerts`; panics unless Alertmanager answers 200.
    pub fn post_alerts(&self, alerts: &Value) {
        let url = format!("{}/api/v2/alerts", self.url());
        let (status, body) = send(self.client.post(&url).json(alerts), &format!("POST {url}"));
        assert_eq!(status, reqwest::StatusCode::OK, "POST {url}: {body}");
    }

    /// The alerts Alertmanager currently holds (`GET /api/v2/alerts`).
    pub fn alerts(&self) -> Vec<Value> {
        let url = format!("{}/api/v2/alerts", self.url());
        let (status, body) = send(self.client.get(&url), &format!("GET {url}"));
        assert_eq!(status, reqwest::StatusCode::OK, "GET {url}: {body}");
        match serde_json::from_str(&body) {
            Ok(Value::Array(alerts)) => alerts,
            other => panic!("GET {url} did not answer a JSON array ({other:?}): {body}"),
        }
    }
}

/// The Alertmanager command line for `port`: `config` as its config, storage under `dir`,
/// clustering off, debug logs.
fn command(binary: &Path, config: &Path, dir: &Path, port: u16) -> Command {
    let mut cmd = Command::new(binary);
    cmd.arg(format!("--config.file={}", config.display()))
        .arg(format!("--storage.path={}", dir.join("data").display()))
        .arg(format!("--web.listen-address={LOOPBACK}:{port}"))
        .arg("--cluster.listen-address=")
        .arg("--log.level=debug")
        .current_dir(dir);
    cmd
}

/// The readiness URL of Alertmanager on `port`.
fn ready_url(port: u16) -> String {
    format!("http://{LOOPBACK}:{port}/-/ready")
}
