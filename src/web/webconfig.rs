//! `--web.config.file`: TLS and basic auth in the Prometheus exporter-toolkit format, re-read
//! when the file changes so certificates and users can rotate without a restart.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::SystemTime;

use serde::Deserialize;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// A web config file that could not be used. Never contains a password or hash.
#[derive(Debug, thiserror::Error)]
pub enum WebConfigError {
    /// The file could not be read.
    #[error("{file}: cannot read web config: {source}")]
    Read {
        /// The web config file.
        file: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The YAML is malformed or has an unknown key.
    #[error("{file}: {reason}")]
    Parse {
        /// The web config file.
        file: PathBuf,
        /// Parser message with position.
        reason: String,
    },
    /// A key has a value that cannot be used.
    #[error("{file}: {key}: {reason}")]
    Invalid {
        /// The web config file.
        file: PathBuf,
        /// Key path.
        key: String,
        /// What is wrong.
        reason: String,
    },
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
struct FileFormat {
    tls_server_config: Option<TlsFile>,
    http_server_config: Option<HttpFile>,
    basic_auth_users: BTreeMap<String, String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TlsFile {
    cert_file: PathBuf,
    key_file: PathBuf,
    #[serde(default)]
    client_auth_type: Option<String>,
    #[serde(default)]
    client_ca_file: Option<PathBuf>,
    #[serde(default)]
    min_version: Option<String>,
    #[serde(default)]
    max_version: Option<String>,
    // Accepted for compatibility; rustls chooses its own safe suites and curves.
    #[serde(default)]
    cipher_suites: Option<Vec<String>>,
    #[serde(default)]
    curve_preferences: Option<Vec<String>>,
    #[serde(default)]
    prefer_server_cipher_suites: Option<bool>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
struct HttpFile {
    // Accepted for compatibility; the server speaks HTTP/1.1 only (src/web/server.rs).
    http2: Option<bool>,
    headers: BTreeMap<String, String>,
}

/// A loaded web config.
pub struct WebConfig {
    tls: Option<Arc<rustls::ServerConfig>>,
    users: Vec<(String, String)>,
    headers: Vec<(hyper::header::HeaderName, hyper::header::HeaderValue)>,
    cache: Mutex<HashMap<[u8; 32], bool>>,
}

/// bcrypt hash of a random string, checked when the user is unknown so that the answer
/// takes as long as for a known user.
const DUMMY_HASH: &str = "$2y$10$QOauhQNbBCuQDKes6eFzPeMqBSjb7Mr5DUmpZ/VcEd00UAV/LDeSi";
const CACHE_LIMIT: usize = 1024;

impl WebConfig {
    /// Parses and checks a web config file, loading certificates and keys.
    pub fn load(path: &Path) -> Result<Self, WebConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| WebConfigError::Read {
            file: path.to_path_buf(),
            source,
        })?;
        let parsed: FileFormat = if text.trim().is_empty() {
            FileFormat::default()
        } else {
            let de = serde_norway::Deserializer::from_str(&text);
            serde_path_to_error::deserialize(de).map_err(|e| WebConfigError::Parse {
                file: path.to_path_buf(),
                reason: format!("{}: {}", e.path(), e.inner()),
            })?
        };
        let invalid = |key: &str, reason: String| WebConfigError::Invalid {
            file: path.to_path_buf(),
            key: key.to_string(),
            reason,
        };
        let base = path.parent();
        let tls = match parsed.tls_server_config {
            Some(t) => Some(Arc::new(
                build_tls(&t, base).map_err(|(key, reason)| invalid(&key, reason))?,
            )),
            None => None,
        };
        for (user, hash) in &parsed.basic_auth_users {
            if hash.parse::<bcrypt::HashParts>().is_err() {
                return Err(invalid(
                    &format!("basic_auth_users.{user}"),
                    "not a bcrypt hash (create one with `htpasswd -nBC 10 \"\" | tr -d ':\\n'`)"
                        .into(),
                ));
            }
        }
        let mut headers = Vec::new();
        if let Some(http) = &parsed.http_server_config {
            if http.http2 == Some(true) {
                tracing::warn!(
                    "web config: http_server_config.http2 is ignored; vitals serves HTTP/1.1 only"
                );
            }
            for (k, v) in &http.headers {
                let name = hyper::header::HeaderName::from_bytes(k.as_bytes()).map_err(|e| {
                    invalid(&format!("http_server_config.headers.{k}"), e.to_string())
                })?;
                let value = hyper::header::HeaderValue::from_str(v).map_err(|e| {
                    invalid(&format!("http_server_config.headers.{k}"), e.to_string())
                })?;
                headers.push((name, value));
            }
        }
        Ok(Self {
            tls,
            users: parsed.basic_auth_users.into_iter().collect(),
            headers,
            cache: Mutex::new(HashMap::new()),
        })
    }

    /// The TLS settings, when TLS is configured.
    pub fn tls(&self) -> Option<Arc<rustls::ServerConfig>> {
        self.tls.clone()
    }

    /// Extra response headers from `http_server_config.headers`.
    pub fn headers(&self) -> &[(hyper::header::HeaderName, hyper::header::HeaderValue)] {
        &self.headers
    }

    /// Whether requests must carry basic auth.
    pub fn requires_auth(&self) -> bool {
        !self.users.is_empty()
    }

    /// Checks an `Authorization` header. bcrypt runs off the async threads, in constant time
    /// whether the user exists or not, and results are cached by a hash of the credentials.
    pub async fn authorize(self: &Arc<Self>, header: Option<&[u8]>) -> bool {
        if !self.requires_auth() {
            return true;
        }
        let Some((user, pass)) = header.and_then(parse_basic) else {
            return false;
        };
        let mut hash = &DUMMY_HASH.to_string();
        let mut found = subtle::Choice::from(0);
        for (u, h) in &self.users {
            let eq = u.as_bytes().ct_eq(user.as_bytes());
            if bool::from(eq) {
                hash = h;
            }
            found |= eq;
        }
        let key: [u8; 32] = {
            let mut d = Sha256::new();
            d.update(user.as_bytes());
            d.update([0]);
            d.update(pass.as_bytes());
            d.update([0]);
            d.update(hash.as_bytes());
            d.finalize().into()
        };
        if let Some(hit) = self
            .cache
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&key)
        {
            return *hit;
        }
        let hash = hash.clone();
        let verified =
            tokio::task::spawn_blocking(move || bcrypt::verify(pass, &hash).unwrap_or(false))
                .await
                .unwrap_or(false);
        let ok = bool::from(found & subtle::Choice::from(u8::from(verified)));
        let mut cache = self.cache.lock().unwrap_or_else(PoisonError::into_inner);
        if cache.len() >= CACHE_LIMIT {
            cache.clear();
        }
        cache.insert(key, ok);
        ok
    }
}

/// Splits an `Authorization: Basic ...` header value into user and password (`None` when it
/// is not well-formed basic auth). Public so that the fuzz targets can reach it.
pub fn parse_basic(header: &[u8]) -> Option<(String, String)> {
    let text = std::str::from_utf8(header).ok()?;
    let (scheme, b64) = text.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let raw =
        base64::Engine::decode(&base64::engine::general_purpose::STANDARD, b64.trim()).ok()?;
    let creds = String::from_utf8(raw).ok()?;
    let (u, p) = creds.split_once(':')?;
    Some((u.to_string(), p.to_string()))
}

type KeyReason = (String, String);

fn build_tls(t: &TlsFile, base: Option<&Path>) -> Result<rustls::ServerConfig, KeyReason> {
    let k = |key: &str| format!("tls_server_config.{key}");
    let rel = |p: &Path| crate::config::resolve_relative(base, p);
    if t.cipher_suites.is_some()
        || t.curve_preferences.is_some()
        || t.prefer_server_cipher_suites.is_some()
    {
        tracing::warn!(
            "web config: cipher_suites, curve_preferences and prefer_server_cipher_suites are ignored; rustls uses its own safe defaults"
        );
    }
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(rel(&t.cert_file))
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|e| (k("cert_file"), format!("{}: {e}", t.cert_file.display())))?;
    if certs.is_empty() {
        return Err((
            k("cert_file"),
            format!("{}: no certificate found", t.cert_file.display()),
        ));
    }
    let key = PrivateKeyDer::from_pem_file(rel(&t.key_file))
        .map_err(|e| (k("key_file"), format!("{}: {e}", t.key_file.display())))?;
    let version = |v: &Option<String>, key: &str| -> Result<Option<u8>, KeyReason> {
        match v.as_deref() {
            None => Ok(None),
            Some("TLS10") | Some("TLS11") => Err((
                k(key),
                "TLS 1.0 and 1.1 are not supported; use TLS12 or TLS13".into(),
            )),
            Some("TLS12") => Ok(Some(12)),
            Some("TLS13") => Ok(Some(13)),
            Some(other) => Err((
                k(key),
                format!("unknown TLS version {other:?} (TLS12 or TLS13)"),
            )),
        }
    };
    let min = version(&t.min_version, "min_version")?.unwrap_or(12);
    let max = version(&t.max_version, "max_version")?.unwrap_or(13);
    if min > max {
        return Err((k("min_version"), "is above max_version".into()));
    }
    let mut versions: Vec<&'static rustls::SupportedProtocolVersion> = Vec::new();
    if min <= 12 && max >= 12 {
        versions.push(&rustls::version::TLS12);
    }
    if max >= 13 {
        versions.push(&rustls::version::TLS13);
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&versions)
        .map_err(|e| (k("min_version"), e.to_string()))?;
    let auth = t.client_auth_type.as_deref().unwrap_or("NoClientCert");
    let builder = match auth {
        "NoClientCert" => builder.with_no_client_auth(),
        "RequireAndVerifyClientCert" | "VerifyClientCertIfGiven" => {
            let ca = t.client_ca_file.as_ref().ok_or_else(|| {
                (
                    k("client_ca_file"),
                    format!("required with client_auth_type {auth}"),
                )
            })?;
            let mut roots = rustls::RootCertStore::empty();
            for cert in CertificateDer::pem_file_iter(rel(ca))
                .map_err(|e| (k("client_ca_file"), format!("{}: {e}", ca.display())))?
            {
                let cert =
                    cert.map_err(|e| (k("client_ca_file"), format!("{}: {e}", ca.display())))?;
                roots
                    .add(cert)
                    .map_err(|e| (k("client_ca_file"), format!("{}: {e}", ca.display())))?;
            }
            let mut vb = rustls::server::WebPkiClientVerifier::builder_with_provider(
                Arc::new(roots),
                provider,
            );
            if auth == "VerifyClientCertIfGiven" {
                vb = vb.allow_unauthenticated();
            }
            let verifier = vb
                .build()
                .map_err(|e| (k("client_ca_file"), e.to_string()))?;
            builder.with_client_cert_verifier(verifier)
        }
        other => {
            return Err((
                k("client_auth_type"),
                format!(
                    "{other:?} is not supported (NoClientCert, VerifyClientCertIfGiven, RequireAndVerifyClientCert)"
                ),
            ));
        }
    };
    let mut cfg = builder
        .with_single_cert(certs, key)
        .map_err(|e| (k("key_file"), e.to_string()))?;
    // The server speaks HTTP/1.1 only (src/web/server.rs), whatever `http2` says.
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(cfg)
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Stamp {
    modified: Option<SystemTime>,
    len: u64,
}

fn stamp(path: &Path) -> Option<Stamp> {
    let m = std::fs::metadata(path).ok()?;
    Some(Stamp {
        modified: m.modified().ok(),
        len: m.len(),
    })
}

/// The web config file plus its last good contents; re-read when the file changes.
pub struct WebConfigHandle {
    path: PathBuf,
    state: RwLock<(Option<Stamp>, Arc<WebConfig>)>,
}

impl WebConfigHandle {
    /// Loads the file; an error here stops start-up.
    pub fn load(path: &Path) -> Result<Self, WebConfigError> {
        let st = stamp(path);
        let cfg = WebConfig::load(path)?;
        Ok(Self {
            path: path.to_path_buf(),
            state: RwLock::new((st, Arc::new(cfg))),
        })
    }

    /// The current config, re-reading the file if it changed. A changed file that does not
    /// load is logged and the previous config stays in force.
    pub fn current(&self) -> Arc<WebConfig> {
        let now = stamp(&self.path);
        {
            let state = self.state.read().unwrap_or_else(PoisonError::into_inner);
            if state.0 == now {
                return state.1.clone();
            }
        }
        let mut state = self.state.write().unwrap_or_else(PoisonError::into_inner);
        if state.0 != now {
            state.0 = now;
            match WebConfig::load(&self.path) {
                Ok(cfg) => {
                    tracing::info!(file = %self.path.display(), "web config reloaded");
                    state.1 = Arc::new(cfg);
                }
                Err(e) => {
                    tracing::error!(error = %e, "web config change rejected; keeping the previous one")
                }
            }
        }
        state.1.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn basic_header_parses() {
        assert_eq!(
            parse_basic(b"Basic dXNlcjpwYXNz"),
            Some(("user".to_string(), "pass".to_string()))
        );
        assert_eq!(parse_basic(b"Bearer abc"), None);
    }

    fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, text).expect("write");
        p
    }

    #[tokio::test]
    async fn basic_auth_checks_and_caches() {
        let dir = tempfile::tempdir().expect("tempdir");
        let hash = bcrypt::hash("s3cret", 4).expect("hash");
        let p = write(
            dir.path(),
            "web.yml",
            &format!("basic_auth_users:\n  alice: {hash}\n"),
        );
        let cfg = Arc::new(WebConfig::load(&p).expect("loads"));
        let good = b"Basic YWxpY2U6czNjcmV0"; // alice:s3cret
        let bad = b"Basic YWxpY2U6d3Jvbmc="; // alice:wrong
        let nobody = b"Basic Ym9iOnMzY3JldA=="; // bob:s3cret
        assert!(cfg.authorize(Some(good)).await);
        assert!(cfg.authorize(Some(good)).await, "cached answer");
        assert!(!cfg.authorize(Some(bad)).await);
        assert!(!cfg.authorize(Some(nobody)).await);
        assert!(!cfg.authorize(None).await);
    }

    #[test]
    fn errors_name_file_and_key() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = write(
            dir.path(),
            "web.yml",
            "basic_auth_users:\n  alice: plaintext\n",
        );
        let msg = WebConfig::load(&p)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(
            msg.contains("basic_auth_users.alice: not a bcrypt hash"),
            "{msg}"
        );
        assert!(
            !msg.contains("plaintext"),
            "the value must not be echoed: {msg}"
        );
        let p = write(
            dir.path(),
            "web2.yml",
            "tls_server_config:\n  cert_file: /nonexistent.crt\n  key_file: /nonexistent.key\n",
        );
        let msg = WebConfig::load(&p)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(msg.contains("tls_server_config.cert_file"), "{msg}");
        let p = write(dir.path(), "web3.yml", "basic_auth_user: {}\n");
        let msg = WebConfig::load(&p)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(msg.contains("unknown field `basic_auth_user`"), "{msg}");
    }
}
