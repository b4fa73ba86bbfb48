//! The SSH side: connect with a deadline, verify the host key ([`super::known_hosts`]),
//! authenticate with a key or a password, run one fixed command and collect its output.
//! Every failure carries a [`Reason`] for `ssh_target_failures_total{reason}`.

use std::borrow::Cow;
use std::fmt;
use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use russh::keys::{PrivateKey, PrivateKeyWithHashAlg, PublicKeyOrCertificate};
use russh::{ChannelMsg, Disconnect, client};

use super::known_hosts::{Accepted, HostKeyError, KnownHosts, Policy, fingerprint};
use crate::config::{Secret, SshTarget};

/// Most bytes of standard output kept; `df` on a host with thousands of mounts stays far below.
pub const MAX_STDOUT: usize = 8 << 20;
/// Most bytes of standard error kept, for the error message.
const MAX_STDERR: usize = 4096;

/// Why a refresh failed; the label values of `reason`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Reason {
    /// TCP connect or the SSH handshake failed.
    Connect,
    /// `connect_timeout` or `command_timeout` passed.
    Timeout,
    /// The server refused the credentials.
    Auth,
    /// The host key was refused.
    Hostkey,
    /// The remote command could not run or failed without output.
    Command,
    /// The output could not be read as `df` tables.
    Parse,
}

impl Reason {
    /// Every reason, in label order.
    pub const ALL: [Reason; 6] = [
        Reason::Connect,
        Reason::Timeout,
        Reason::Auth,
        Reason::Hostkey,
        Reason::Command,
        Reason::Parse,
    ];

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Connect => "connect",
            Reason::Timeout => "timeout",
            Reason::Auth => "auth",
            Reason::Hostkey => "hostkey",
            Reason::Command => "command",
            Reason::Parse => "parse",
        }
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A failed refresh: why, and a message for the landing page and the log (never a secret).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{reason}: {message}")]
pub struct Failure {
    /// The category.
    pub reason: Reason,
    /// What happened.
    pub message: String,
}

impl Failure {
    /// A failure of `reason`.
    pub fn new(reason: Reason, message: impl Into<String>) -> Self {
        Self {
            reason,
            message: message.into(),
        }
    }
}

/// How to authenticate. Debug output never shows the secret.
#[derive(Clone)]
pub enum Auth {
    /// A private key, decrypted at load time.
    Key(Arc<PrivateKey>),
    /// A password.
    Password(Secret),
}

impl fmt::Debug for Auth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Auth::Key(k) => write!(f, "Key({})", k.algorithm()),
            Auth::Password(_) => f.write_str("Password(<secret>)"),
        }
    }
}

/// Reads the credentials of a target: its key (decrypted with `passphrase_file`) or its
/// password file. Errors name the file, never its content.
pub fn load_auth(t: &SshTarget) -> Result<Auth, String> {
    if let Some(path) = &t.key_file {
        let passphrase = t
            .passphrase_file
            .as_deref()
            .map(Secret::from_file)
            .transpose()?;
        return load_key(path, passphrase.as_ref()).map(|k| Auth::Key(Arc::new(k)));
    }
    match &t.password_file {
        Some(path) => Secret::from_file(path).map(Auth::Password),
        None => Err("set key_file or password_file".into()),
    }
}

fn load_key(path: &Path, passphrase: Option<&Secret>) -> Result<PrivateKey, String> {
    russh::keys::load_secret_key(path, passphrase.map(Secret::expose)).map_err(|e| {
        let why = match (&e, passphrase) {
            (russh::keys::Error::KeyIsEncrypted, None) => {
                "the key is encrypted: set passphrase_file".to_string()
            }
            (_, Some(_)) => format!("{e} (wrong passphrase?)"),
            _ => e.to_string(),
        };
        format!("key_file {}: {why}", path.display())
    })
}

/// Everything needed to reach one host.
#[derive(Debug, Clone)]
pub struct Endpoint {
    /// Host name or address.
    pub host: String,
    /// Port.
    pub port: u16,
    /// Remote user.
    pub user: String,
    /// Credentials.
    pub auth: Auth,
    /// Host key verification.
    pub policy: Policy,
    /// Deadline for TCP connect, handshake and authentication.
    pub connect_timeout: Duration,
    /// Deadline for running the command.
    pub command_timeout: Duration,
}

/// What the remote command produced.
#[derive(Debug, Clone, Default)]
pub struct Output {
    /// Standard output (lossily decoded).
    pub stdout: String,
    /// The start of standard error.
    pub stderr: String,
    /// Exit status, when the server sent one.
    pub exit_status: Option<u32>,
}

type Outcome = Arc<Mutex<Option<Result<Accepted, HostKeyError>>>>;

struct Handler {
    policy: Policy,
    known: Option<KnownHosts>,
    outcome: Outcome,
}

impl client::Handler for Handler {
    type Error = russh::Error;

    async fn check_server_key(
        &mut self,
        key: &PublicKeyOrCertificate,
    ) -> Result<bool, Self::Error> {
        let result = match key {
            PublicKeyOrCertificate::PublicKey { key, .. } => {
                self.policy.verify(self.known.as_ref(), key)
            }
            PublicKeyOrCertificate::Certificate(_) => Err(HostKeyError::Certificate),
        };
        if let (Ok(Accepted::Learned), PublicKeyOrCertificate::PublicKey { key, .. }) =
            (&result, key)
        {
            tracing::warn!(
                host = %self.policy.host,
                port = self.policy.port,
                fingerprint = %fingerprint(key),
                "trust on first use: learned the host key"
            );
        }
        let ok = result.is_ok();
        *self.outcome.lock().unwrap_or_else(PoisonError::into_inner) = Some(result);
        Ok(ok)
    }
}

/// Connects, verifies, authenticates and runs `command`; the whole run is bounded by
/// `connect_timeout + command_timeout`. The connection is closed afterwards.
pub async fn run(ep: &Endpoint, command: &str) -> Result<Output, Failure> {
    let session = tokio::time::timeout(ep.connect_timeout, connect(ep))
        .await
        .map_err(|_| {
            Failure::new(
                Reason::Timeout,
                format!(
                    "no SSH session within connect_timeout {}",
                    humantime::format_duration(ep.connect_timeout)
                ),
            )
        })??;
    let output = tokio::time::timeout(ep.command_timeout, exec(&session, command))
        .await
        .map_err(|_| {
            Failure::new(
                Reason::Timeout,
                format!(
                    "the command did not finish within command_timeout {}",
                    humantime::format_duration(ep.command_timeout)
                ),
            )
        });
    // A polite close; the connection is dropped anyway when `session` goes.
    let _ = tokio::time::timeout(
        Duration::from_millis(200),
        session.disconnect(Disconnect::ByApplication, "", "en"),
    )
    .await;
    output?
}

async fn connect(ep: &Endpoint) -> Result<client::Handle<Handler>, Failure> {
    let stream = tokio::net::TcpStream::connect((ep.host.as_str(), ep.port))
        .await
        .map_err(|e| Failure::new(Reason::Connect, format!("{}:{}: {e}", ep.host, ep.port)))?;
    let _ = stream.set_nodelay(true);
    let known = ep
        .policy
        .load()
        .map_err(|e| Failure::new(Reason::Hostkey, e.to_string()))?;
    let mut preferred = russh::Preferred::default();
    let algorithms = ep.policy.preferred_algorithms(known.as_ref());
    if !algorithms.is_empty() {
        // Ask for a key type known_hosts can verify, as OpenSSH does.
        preferred.key = Cow::Owned(algorithms);
    }
    let config = Arc::new(client::Config {
        preferred,
        nodelay: true,
        ..Default::default()
    });
    let outcome: Outcome = Arc::new(Mutex::new(None));
    let handler = Handler {
        policy: ep.policy.clone(),
        known,
        outcome: outcome.clone(),
    };
    let connected = client::connect_stream(config, stream, handler).await;
    let verdict = outcome
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .take();
    let mut session = match (connected, verdict) {
        (Ok(s), Some(Ok(_))) => s,
        (_, Some(Err(e))) => return Err(Failure::new(Reason::Hostkey, e.to_string())),
        (Ok(_), None) => {
            return Err(Failure::new(
                Reason::Hostkey,
                "the handshake finished without a host key check",
            ));
        }
        (Err(e), _) => {
            return Err(Failure::new(
                Reason::Connect,
                format!("SSH handshake with {}:{}: {e}", ep.host, ep.port),
            ));
        }
    };
    let auth_error = |e: russh::Error| Failure::new(Reason::Auth, format!("authentication: {e}"));
    let result = match &ep.auth {
        Auth::Key(key) => {
            let hash = session
                .best_supported_rsa_hash()
                .await
                .map_err(auth_error)?
                .flatten();
            session
                .authenticate_publickey(&ep.user, PrivateKeyWithHashAlg::new(key.clone(), hash))
                .await
        }
        Auth::Password(pw) => session.authenticate_password(&ep.user, pw.expose()).await,
    }
    .map_err(auth_error)?;
    if !result.success() {
        let method = match ep.auth {
            Auth::Key(_) => "public key",
            Auth::Password(_) => "password",
        };
        return Err(Failure::new(
            Reason::Auth,
            format!(
                "the server refused {method} authentication for user {}",
                ep.user
            ),
        ));
    }
    Ok(session)
}

async fn exec(session: &client::Handle<Handler>, command: &str) -> Result<Output, Failure> {
    let fail = |what: &str, e: russh::Error| Failure::new(Reason::Command, format!("{what}: {e}"));
    let mut channel = session
        .channel_open_session()
        .await
        .map_err(|e| fail("opening a session channel", e))?;
    channel
        .exec(true, command)
        .await
        .map_err(|e| fail("sending the command", e))?;
    let mut stdout = Vec::new();
    let mut stderr = Vec::new();
    let mut out = Output::default();
    while let Some(msg) = channel.wait().await {
        match msg {
            ChannelMsg::Data { data } => {
                if stdout.len() + data.len() > MAX_STDOUT {
                    return Err(Failure::new(
                        Reason::Command,
                        format!("the command printed more than {MAX_STDOUT} bytes"),
                    ));
                }
                stdout.extend_from_slice(&data);
            }
            ChannelMsg::ExtendedData { data, .. } => {
                let room = MAX_STDERR.saturating_sub(stderr.len());
                stderr.extend_from_slice(data.get(..room.min(data.len())).unwrap_or_default());
            }
            ChannelMsg::ExitStatus { exit_status } => out.exit_status = Some(exit_status),
            ChannelMsg::ExitSignal { signal_name, .. } => {
                return Err(Failure::new(
                    Reason::Command,
                    format!("the command was killed by signal {signal_name:?}"),
                ));
            }
            ChannelMsg::Failure => {
                return Err(Failure::new(
                    Reason::Command,
                    "the server refused to run the command",
                ));
            }
            _ => {}
        }
    }
    out.stdout = String::from_utf8_lossy(&stdout).into_owned();
    out.stderr = String::from_utf8_lossy(&stderr).into_owned();
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_are_the_documented_label_values() {
        let names: Vec<&str> = Reason::ALL.iter().map(|r| r.as_str()).collect();
        assert_eq!(
            names,
            ["connect", "timeout", "auth", "hostkey", "command", "parse"]
        );
    }

    #[test]
    fn auth_debug_hides_the_password() {
        let secret: Secret = serde_norway::from_str("hunter2").expect("secret");
        let shown = format!("{:?}", Auth::Password(secret));
        assert!(!shown.contains("hunter2"), "{shown}");
    }
}
