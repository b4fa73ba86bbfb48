//! The HTTP server both roles share: `/metrics`, `/probe`, the landing page, the lifecycle
//! endpoints `/-/healthy`, `/-/ready`, `/-/reload`, and `--web.config.file` (TLS, basic auth).

mod exposition;
mod landing;
mod server;
pub mod webconfig;

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{self, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};

pub use landing::{LandingPage, TargetRow};
pub use server::{WebError, bind, serve};
pub use webconfig::{WebConfig, WebConfigError, WebConfigHandle};

use crate::exporter::BoxFuture;
use crate::telemetry::Telemetry;

pub use exposition::{openmetrics_to_text, wants_openmetrics};

/// What a scrape asks for.
#[derive(Debug, Clone)]
pub struct MetricsRequest {
    /// `/probe?target=NAME`; `None` for the telemetry path.
    pub target: Option<String>,
    /// Prometheus' `X-Prometheus-Scrape-Timeout-Seconds`, when sent.
    pub scrape_timeout: Option<f64>,
}

/// Why a metrics request failed.
#[derive(Debug, thiserror::Error)]
pub enum RoleError {
    /// The request named something that does not exist (answered 400).
    #[error("{0}")]
    BadRequest(String),
    /// Something broke inside (answered 500).
    #[error("{0}")]
    Internal(String),
}

/// What a role (exporter or sidecar) offers to the web server.
pub trait Role: Send + Sync + 'static {
    /// `exporter` or `sidecar`.
    fn role_name(&self) -> &'static str;
    /// The OpenMetrics page for a scrape or probe.
    fn metrics(&self, req: MetricsRequest) -> BoxFuture<'_, Result<String, RoleError>>;
    /// Re-reads the config; the old one keeps running when this fails.
    fn reload(&self) -> Result<(), String>;
    /// What the landing page shows.
    fn landing(&self) -> LandingPage;
    /// Stops background work before the process exits.
    fn shutdown(&self) {}
}

/// Everything a request handler needs.
pub struct AppState {
    /// The role served.
    pub role: Arc<dyn Role>,
    /// Self metrics.
    pub telemetry: Arc<Telemetry>,
    /// `--web.telemetry-path`.
    pub telemetry_path: String,
    /// `--web.config.file`, when given.
    pub web_config: Option<Arc<WebConfigHandle>>,
}

type Resp = Response<Full<Bytes>>;

fn text(status: StatusCode, body: impl Into<Bytes>) -> Resp {
    let mut r = Response::new(Full::new(body.into()));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

/// Answers one request: auth first, then routing, then self metrics about the answer.
pub async fn handle(
    state: Arc<AppState>,
    req: Request<Incoming>,
) -> Result<Resp, std::convert::Infallible> {
    let start = Instant::now();
    let web = state.web_config.as_ref().map(|h| h.current());
    let (handler, mut resp) = match &web {
        Some(w)
            if !w
                .authorize(
                    req.headers()
                        .get(header::AUTHORIZATION)
                        .map(HeaderValue::as_bytes),
                )
                .await =>
        {
            let mut r = text(StatusCode::UNAUTHORIZED, "Unauthorized\n");
            r.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Basic realm=\"vitals\""),
            );
            ("unauthorized", r)
        }
        _ => route(&state, req).await,
    };
    if let Some(w) = &web {
        for (k, v) in w.headers() {
            resp.headers_mut().insert(k.clone(), v.clone());
        }
    }
    state
        .telemetry
        .observe_request(handler, resp.status().as_u16(), start.elapsed());
    Ok(resp)
}

async fn route(state: &AppState, req: Request<Incoming>) -> (&'static str, Resp) {
    let path = req.uri().path().to_string();
    let method = req.method().clone();
    let get_like = method == Method::GET || method == Method::HEAD;
    if path == state.telemetry_path || path == "/probe" {
        if !get_like {
            return ("metrics", text(StatusCode::METHOD_NOT_ALLOWED, "Use GET\n"));
        }
        let handler = if path == "/probe" { "probe" } else { "metrics" };
        let target = if path == "/probe" {
            let t = req.uri().query().and_then(|q| {
                form_urlencoded::parse(q.as_bytes())
                    .find(|(k, _)| k == "target")
                    .map(|(_, v)| v.into_owned())
            });
            match t {
                Some(t) if !t.is_empty() => Some(t),
                _ => {
                    return (
                        handler,
                        text(StatusCode::BAD_REQUEST, "target parameter is missing\n"),
                    );
                }
            }
        } else {
            None
        };
        let openmetrics = wants_openmetrics(
            req.headers()
                .get(header::ACCEPT)
                .and_then(|v| v.to_str().ok()),
        );
        let scrape_timeout = req
            .headers()
            .get("x-prometheus-scrape-timeout-seconds")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<f64>().ok());
        let result = state
            .role
            .metrics(MetricsRequest {
                target,
                scrape_timeout,
            })
            .await;
        let resp = match result {
            Ok(body) => {
                let (body, content_type) = if openmetrics {
                    (body, exposition::OPENMETRICS)
                } else {
                    (openmetrics_to_text(&body), exposition::TEXT)
                };
                let mut r = Response::new(Full::new(Bytes::from(body)));
                r.headers_mut()
                    .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
                r
            }
            Err(RoleError::BadRequest(m)) => text(StatusCode::BAD_REQUEST, format!("{m}\n")),
            Err(RoleError::Internal(m)) => {
                text(StatusCode::INTERNAL_SERVER_ERROR, format!("{m}\n"))
            }
        };
        return (handler, resp);
    }
    match path.as_str() {
        "/-/healthy" if get_like => ("healthy", text(StatusCode::OK, "Healthy\n")),
        "/-/ready" if get_like => ("ready", text(StatusCode::OK, "Ready\n")),
        "/-/reload" if method == Method::POST || method == Method::PUT => {
            let role = state.role.clone();
            let result = tokio::task::spawn_blocking(move || role.reload())
                .await
                .unwrap_or_else(|e| Err(format!("reload task failed: {e}")));
            match result {
                Ok(()) => {
                    tracing::info!("configuration reloaded via /-/reload");
                    ("reload", text(StatusCode::OK, "Reloaded\n"))
                }
                Err(e) => {
                    tracing::error!(error = %e, "reload rejected; the previous configuration keeps running");
                    (
                        "reload",
                        text(
                            StatusCode::INTERNAL_SERVER_ERROR,
                            format!("failed to reload config: {e}\n"),
                        ),
                    )
                }
            }
        }
        "/-/healthy" | "/-/ready" | "/-/reload" => (
            "lifecycle",
            text(StatusCode::METHOD_NOT_ALLOWED, "Method not allowed\n"),
        ),
        "/" if get_like => {
            let page = landing::render(&state.role.landing(), &state.telemetry_path);
            let mut r = Response::new(Full::new(Bytes::from(page)));
            r.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/html; charset=utf-8"),
            );
            ("landing", r)
        }
        _ => ("other", text(StatusCode::NOT_FOUND, "Not found\n")),
    }
}

/// How long in-flight requests may finish after SIGTERM.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);
