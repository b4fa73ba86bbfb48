//! The HTTP client behind every API the sidecar calls (the Prometheus query API, and the
//! Alertmanager API v2): one connection pool per endpoint, a timeout per request, retries with
//! exponential backoff and jitter, basic auth or an `Authorization` header, TLS on rustls
//! (ring) and extra headers, all from one [`HttpEndpoint`] of the config.
//!
//! Errors here describe the transport only and never name the endpoint's credentials; the
//! API clients wrap them with the endpoint and the request they were making.

use std::hash::{BuildHasher, Hasher};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use base64::Engine as _;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::header::{self, HeaderMap, HeaderName, HeaderValue};
use hyper::{Method, Request, StatusCode, Uri};
use hyper_rustls::{FixedServerNameResolver, HttpsConnector};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::{ClientConfig, RootCertStore};

use crate::config::{HttpEndpoint, Secret, TlsClientConfig};

/// Why a request (or setting up the client) failed. Never contains a secret.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    /// The endpoint's settings cannot be used (bad URL, unreadable CA or client certificate).
    #[error("{0}")]
    Config(String),
    /// A password or token file could not be read.
    #[error("credentials: {0}")]
    Credentials(String),
    /// No connection, or the connection broke before a complete answer.
    #[error("cannot connect after {attempts} attempt(s): {reason}")]
    Connect {
        /// What the transport said (the error chain, without the URL).
        reason: String,
        /// Attempts made, retries included.
        attempts: u32,
    },
    /// No complete answer within the timeout.
    #[error("no answer within {} (after {attempts} attempt(s))", humantime::format_duration(*timeout))]
    Timeout {
        /// The per-request timeout.
        timeout: Duration,
        /// Attempts made, retries included.
        attempts: u32,
    },
}

/// A complete answer: status, headers and the whole body.
#[derive(Debug)]
pub struct HttpResponse {
    /// HTTP status of the last attempt.
    pub status: StatusCode,
    /// Its headers.
    pub headers: HeaderMap,
    /// Its body.
    pub body: Bytes,
    /// Attempts made, retries included.
    pub attempts: u32,
}

/// A client for one HTTP API endpoint; cheap to clone (the pool and settings are shared).
#[derive(Clone)]
pub struct HttpClient {
    inner: Arc<Inner>,
}

struct Inner {
    client: Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
    scheme: hyper::http::uri::Scheme,
    authority: hyper::http::uri::Authority,
    /// Path prefix without a trailing slash (empty for none).
    prefix: String,
    display: String,
    timeout: Duration,
    retries: u32,
    backoff: Duration,
    auth: Auth,
    headers: HeaderMap,
    requests: AtomicU64,
}

enum Auth {
    None,
    Basic {
        username: String,
        password: SecretSource,
    },
    Authorization {
        kind: String,
        credentials: SecretSource,
    },
}

enum SecretSource {
    Inline(Secret),
    /// Read for every request, so rotated passwords and tokens are picked up.
    File(PathBuf),
}

impl SecretSource {
    fn new(inline: Option<&Secret>, file: Option<&Path>, what: &str) -> Result<Self, HttpError> {
        match (inline, file) {
            (Some(s), None) => Ok(Self::Inline(s.clone())),
            (None, Some(p)) => Ok(Self::File(p.to_path_buf())),
            _ => Err(HttpError::Config(format!(
                "set exactly one of {what} and {what}_file"
            ))),
        }
    }

    fn load(&self) -> Result<Secret, HttpError> {
        match self {
            Self::Inline(s) => Ok(s.clone()),
            Self::File(p) => Secret::from_file(p).map_err(HttpError::Credentials),
        }
    }
}

impl std::fmt::Debug for HttpClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpClient")
            .field("endpoint", &self.inner.display)
            .finish_non_exhaustive()
    }
}

/// `url` for logs and errors: user information (if any slipped through) removed.
pub fn display_url(url: &str) -> String {
    let trimmed = url.trim_end_matches('/');
    match trimmed.split_once("://") {
        Some((scheme, rest)) => {
            let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
            let host = authority.rsplit('@').next().unwrap_or(authority);
            format!("{scheme}://{host}{path}")
        }
        None => trimmed.to_string(),
    }
}

impl HttpClient {
    /// Builds the client for the API at `config.url` (which may carry a path prefix). Reads
    /// the TLS files now; password and token files are read for each request.
    pub fn new(config: &HttpEndpoint) -> Result<HttpClient, HttpError> {
        let url = config.url.as_str();
        crate::config::check_http_url(url).map_err(HttpError::Config)?;
        let uri: Uri = url
            .parse()
            .map_err(|e| HttpError::Config(format!("not a valid URL ({e})")))?;
        let parts = uri.into_parts();
        let (Some(scheme), Some(authority)) = (parts.scheme, parts.authority) else {
            return Err(HttpError::Config("URL needs a scheme and a host".into()));
        };
        let prefix = parts
            .path_and_query
            .map(|p| p.path().trim_end_matches('/').to_string())
            .unwrap_or_default();

        let tls = tls_config(
            config.tls_config.as_ref(),
            scheme == hyper::http::uri::Scheme::HTTPS,
        )?;
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_nodelay(true);
        http.set_connect_timeout(Some(config.timeout.0));
        let builder = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http();
        let builder = match config
            .tls_config
            .as_ref()
            .and_then(|t| t.server_name.as_deref())
        {
            Some(name) => {
                let name = ServerName::try_from(name.to_string()).map_err(|e| {
                    HttpError::Config(format!("tls_config.server_name {name:?}: {e}"))
                })?;
                builder.with_server_name_resolver(FixedServerNameResolver::new(name))
            }
            None => builder,
        };
        let connector = builder.enable_http1().wrap_connector(http);
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(90))
            .pool_max_idle_per_host(4)
            .build(connector);

        let auth = match (&config.basic_auth, &config.authorization) {
            (Some(_), Some(_)) => {
                return Err(HttpError::Config(
                    "set either basic_auth or authorization, not both".into(),
                ));
            }
            (Some(b), None) => Auth::Basic {
                username: b.username.clone(),
                password: SecretSource::new(
                    b.password.as_ref(),
                    b.password_file.as_deref(),
                    "basic_auth.password",
                )?,
            },
            (None, Some(a)) => Auth::Authorization {
                kind: a.kind.clone(),
                credentials: SecretSource::new(
                    a.credentials.as_ref(),
                    a.credentials_file.as_deref(),
                    "authorization.credentials",
                )?,
            },
            (None, None) => Auth::None,
        };
        let mut headers = HeaderMap::new();
        for (name, value) in &config.headers {
            let name = HeaderName::from_bytes(name.as_bytes())
                .map_err(|_| HttpError::Config(format!("invalid header name {name:?}")))?;
            let value = HeaderValue::from_str(value)
                .map_err(|_| HttpError::Config(format!("invalid value of header {name}")))?;
            headers.insert(name, value);
        }
        Ok(HttpClient {
            inner: Arc::new(Inner {
                client,
                scheme,
                authority,
                prefix,
                display: display_url(url),
                timeout: config.timeout.0,
                retries: config.retries,
                backoff: config.retry_backoff.0,
                auth,
                headers,
                requests: AtomicU64::new(0),
            }),
        })
    }

    /// The endpoint's URL for logs and errors (never with credentials).
    pub fn endpoint(&self) -> &str {
        &self.inner.display
    }

    /// HTTP requests sent so far, retries included.
    pub fn requests(&self) -> u64 {
        self.inner.requests.load(Ordering::Relaxed)
    }

    /// POSTs `body` (of `content_type`) to the base URL's path prefix + `path`, retrying
    /// connection errors, timeouts, 429 and 5xx answers up to `retries` times. Any complete
    /// answer of the last attempt is returned as it is, whatever its status.
    pub async fn post(
        &self,
        path: &str,
        content_type: &'static str,
        body: Bytes,
    ) -> Result<HttpResponse, HttpError> {
        let inner = &*self.inner;
        let uri = Uri::builder()
            .scheme(inner.scheme.clone())
            .authority(inner.authority.clone())
            .path_and_query(format!("{}{path}", inner.prefix))
            .build()
            .map_err(|e| HttpError::Config(format!("building the request URL: {e}")))?;
        let mut attempt = 0;
        loop {
            attempt += 1;
            if attempt > 1 {
                tokio::time::sleep(backoff(inner.backoff, attempt - 1)).await;
            }
            let request = self.request(&uri, content_type, body.clone())?;
            inner.requests.fetch_add(1, Ordering::Relaxed);
            let last = attempt > inner.retries;
            match tokio::time::timeout(inner.timeout, self.send(request)).await {
                Ok(Ok((status, headers, body))) => {
                    let retryable =
                        status == StatusCode::TOO_MANY_REQUESTS || status.is_server_error();
                    if retryable && !last {
                        tracing::debug!(endpoint = %inner.display, path, %status, attempt, "retrying after an error status");
                        continue;
                    }
                    return Ok(HttpResponse {
                        status,
                        headers,
                        body,
                        attempts: attempt,
                    });
                }
                Ok(Err(reason)) => {
                    if last {
                        return Err(HttpError::Connect {
                            reason,
                            attempts: attempt,
                        });
                    }
                    tracing::debug!(endpoint = %inner.display, path, %reason, attempt, "retrying after a connection error");
                }
                Err(_elapsed) => {
                    if last {
                        return Err(HttpError::Timeout {
                            timeout: inner.timeout,
                            attempts: attempt,
                        });
                    }
                    tracing::debug!(endpoint = %inner.display, path, attempt, "retrying after a timeout");
                }
            }
        }
    }

    fn request(
        &self,
        uri: &Uri,
        content_type: &'static str,
        body: Bytes,
    ) -> Result<Request<Full<Bytes>>, HttpError> {
        let inner = &*self.inner;
        let mut request = Request::builder()
            .method(Method::POST)
            .uri(uri.clone())
            .body(Full::new(body))
            .map_err(|e| HttpError::Config(format!("building the request: {e}")))?;
        let headers = request.headers_mut();
        headers.extend(inner.headers.clone());
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
        headers.insert(header::ACCEPT, HeaderValue::from_static("application/json"));
        headers.insert(
            header::USER_AGENT,
            HeaderValue::from_static(concat!("vitals/", env!("CARGO_PKG_VERSION"))),
        );
        let authorization = match &inner.auth {
            Auth::None => None,
            Auth::Basic { username, password } => {
                let password = password.load()?;
                let token = base64::engine::general_purpose::STANDARD
                    .encode(format!("{username}:{}", password.expose()));
                Some(format!("Basic {token}"))
            }
            Auth::Authorization { kind, credentials } => {
                let credentials = credentials.load()?;
                Some(format!("{kind} {}", credentials.expose()))
            }
        };
        if let Some(value) = authorization {
            let mut value = HeaderValue::from_str(&value).map_err(|_| {
                HttpError::Credentials(
                    "the credentials contain characters not allowed in an HTTP header".into(),
                )
            })?;
            value.set_sensitive(true);
            headers.insert(header::AUTHORIZATION, value);
        }
        Ok(request)
    }

    /// One attempt: the status, headers and the whole body, or the transport error chain.
    async fn send(
        &self,
        request: Request<Full<Bytes>>,
    ) -> Result<(StatusCode, HeaderMap, Bytes), String> {
        let response = self
            .inner
            .client
            .request(request)
            .await
            .map_err(|e| error_chain(&e))?;
        let (parts, body) = response.into_parts();
        let body = body
            .collect()
            .await
            .map_err(|e| format!("reading the answer: {}", error_chain(&e)))?
            .to_bytes();
        Ok((parts.status, parts.headers, body))
    }
}

/// An error and its sources, joined with `: ` (hyper's top-level messages alone say little).
fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = s.source();
    }
    out
}

/// Wait before retry number `retry` (1-based): `base * 2^(retry-1)`, times a random factor
/// in [0.5, 1.5) so that many clients do not retry in lockstep.
fn backoff(base: Duration, retry: u32) -> Duration {
    let exp = base.saturating_mul(1u32 << (retry - 1).min(16));
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u32(retry);
    let unit = (hasher.finish() >> 11) as f64 / (1u64 << 53) as f64;
    exp.mul_f64(0.5 + unit)
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The rustls client config: roots from `ca_file` or the system, optional client
/// certificate, or no verification at all with `insecure_skip_verify`. For a plain `http://`
/// endpoint nothing is loaded.
fn tls_config(tls: Option<&TlsClientConfig>, https: bool) -> Result<ClientConfig, HttpError> {
    let provider = provider();
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| HttpError::Config(format!("TLS: {e}")))?;
    let default = TlsClientConfig::default();
    let tls = tls.unwrap_or(&default);
    let builder = if tls.insecure_skip_verify {
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(crate::tls::NoVerification::new(&provider)))
    } else {
        let mut roots = RootCertStore::empty();
        if let Some(ca) = &tls.ca_file {
            let certs = read_certs(ca, "tls_config.ca_file")?;
            let (added, _) = roots.add_parsable_certificates(certs);
            if added == 0 {
                return Err(HttpError::Config(format!(
                    "tls_config.ca_file {}: no usable certificate",
                    ca.display()
                )));
            }
        } else if https {
            let native = rustls_native_certs::load_native_certs();
            roots.add_parsable_certificates(native.certs);
            if roots.is_empty() {
                return Err(HttpError::Config(
                    "no system CA certificates found (install ca-certificates or set tls_config.ca_file)"
                        .into(),
                ));
            }
        }
        builder.with_root_certificates(roots)
    };
    match (&tls.cert_file, &tls.key_file) {
        (Some(cert), Some(key)) => {
            let certs = read_certs(cert, "tls_config.cert_file")?;
            let key = PrivateKeyDer::from_pem_file(key).map_err(|e| {
                HttpError::Config(format!("tls_config.key_file {}: {e}", key.display()))
            })?;
            builder
                .with_client_auth_cert(certs, key)
                .map_err(|e| HttpError::Config(format!("TLS client certificate: {e}")))
        }
        (None, None) => Ok(builder.with_no_client_auth()),
        _ => Err(HttpError::Config(
            "tls_config: cert_file and key_file go together".into(),
        )),
    }
}

fn read_certs(path: &Path, key: &str) -> Result<Vec<CertificateDer<'static>>, HttpError> {
    let err = |reason: String| HttpError::Config(format!("{key} {}: {reason}", path.display()));
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| err(e.to_string()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| err(e.to_string()))?;
    if certs.is_empty() {
        return Err(err("no PEM certificate in the file".into()));
    }
    Ok(certs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_url_drops_credentials_and_trailing_slash() {
        assert_eq!(
            display_url("http://user:pw@host:9090/prometheus/"),
            "http://host:9090/prometheus"
        );
        assert_eq!(display_url("https://h:1"), "https://h:1");
        assert_eq!(display_url("https://a@b@h/x"), "https://h/x");
    }

    #[test]
    fn backoff_doubles_with_jitter() {
        let base = Duration::from_millis(100);
        for retry in 1..=4u32 {
            let d = backoff(base, retry);
            let nominal = base * (1 << (retry - 1));
            assert!(
                d >= nominal / 2 && d < nominal * 3 / 2,
                "retry {retry}: {d:?}"
            );
        }
    }

    #[test]
    fn prefix_and_settings_are_taken_from_the_config() {
        let client = HttpClient::new(&HttpEndpoint::new(
            "http://127.0.0.1:9/select/0/prometheus/",
        ))
        .expect("valid");
        assert_eq!(client.inner.prefix, "/select/0/prometheus");
        assert_eq!(client.endpoint(), "http://127.0.0.1:9/select/0/prometheus");
        assert_eq!(client.inner.retries, 2);
        assert!(HttpClient::new(&HttpEndpoint::new("ftp://x")).is_err());
        assert!(HttpClient::new(&HttpEndpoint::new("http://u:p@x")).is_err());
    }
}
