//! Connections to one PostgreSQL server: a small pool with a hard limit, at most two
//! connections to the maintenance database and one to each fanned-out database, reuse of
//! idle connections, reconnect with exponential backoff, and cancellation of in-flight
//! queries when a scrape's future is dropped at its deadline. Every pool also draws on one
//! [`Limiter`] shared by all targets (`exporter.postgres.max_connections`): when it is
//! exhausted, the least recently used idle connection of any target is closed to make room,
//! so idle connections of one target never starve another.
//!
//! The limit is the server's view: a session's slot is free again only when the server has
//! ended it. vitals opens the sockets itself ([`SessionSocket`]) so that closing one waits
//! until the server closes its end, which PostgreSQL does only after the backend exited
//! (and left `pg_stat_activity`); a replacement session never overlaps the one it replaces.

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::task::{Context, Poll, ready};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpSocket, TcpStream, UnixStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_postgres::tls::MakeTlsConnect;
use tokio_postgres::{Client, SimpleQueryMessage, SimpleQueryRow};
use tokio_postgres_rustls::MakeRustlsConnect;

use crate::config::{PostgresTarget, Secret, SslMode};

/// Connections the maintenance database may use at once (server-wide queries of overlapping
/// scrapes and the size refresher).
pub const MAIN_DB_CONNECTIONS: usize = 2;

const BACKOFF_MIN: Duration = Duration::from_millis(500);
const BACKOFF_MAX: Duration = Duration::from_secs(30);
/// How long a cancelled connection may take to become idle again before it is closed.
const RECOVER_TIMEOUT: Duration = Duration::from_secs(5);
/// How long closing a session waits for the server to end it before giving up its slot.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(5);

/// Why no connection could be had.
#[derive(Debug, thiserror::Error)]
pub enum ConnError {
    /// The server's address (none of them, with several) could not be reached.
    #[error("connecting to {dsn}: {reason}")]
    Socket {
        /// Where, without password.
        dsn: String,
        /// What each address answered.
        reason: String,
    },
    /// The server refused the session, the TLS handshake failed, or the session failed
    /// while starting.
    #[error("connecting to {dsn}: {}{hint}", describe(.source))]
    Connect {
        /// Where, without password.
        dsn: String,
        /// The driver's error (never contains the password).
        source: tokio_postgres::Error,
        /// What the configuration may have to do with it (empty when nothing).
        hint: &'static str,
    },
    /// The connect timeout passed.
    #[error("connecting to {dsn}: no answer within {timeout:?}")]
    ConnectTimeout {
        /// Where, without password.
        dsn: String,
        /// The configured timeout.
        timeout: Duration,
    },
    /// Every allowed connection was busy until the deadline.
    #[error("no free connection to {dsn} before the scrape deadline (limit {limit})")]
    Busy {
        /// Where, without password.
        dsn: String,
        /// The configured limit.
        limit: usize,
    },
    /// Every connection of the global limit was in use (none idle to close) until the
    /// deadline.
    #[error(
        "no free connection to {dsn} before the scrape deadline: all {limit} of exporter.postgres.max_connections are in use"
    )]
    GlobalBusy {
        /// Where, without password.
        dsn: String,
        /// The global limit.
        limit: usize,
    },
    /// A recent attempt failed; the next one waits for the backoff.
    #[error("{last} (next attempt in {wait:?})")]
    Backoff {
        /// The last error.
        last: String,
        /// Time until the next attempt.
        wait: Duration,
    },
    /// The password file could not be read.
    #[error("{0}")]
    Password(String),
}

impl ConnError {
    /// The `reason` label of `pg_scrape_errors_total` for this error.
    pub fn reason(&self) -> &'static str {
        match self {
            ConnError::Connect { source, .. } if is_tls(source) => "tls",
            ConnError::Connect { source, .. } => match source.code() {
                Some(c)
                    if *c == tokio_postgres::error::SqlState::INVALID_PASSWORD
                        || *c
                            == tokio_postgres::error::SqlState::INVALID_AUTHORIZATION_SPECIFICATION =>
                {
                    "auth"
                }
                _ => "connect",
            },
            ConnError::Socket { .. } => "connect",
            ConnError::ConnectTimeout { .. }
            | ConnError::Busy { .. }
            | ConnError::GlobalBusy { .. } => "timeout",
            ConnError::Backoff { .. } => "backoff",
            ConnError::Password(_) => "auth",
        }
    }
}

/// An error of the driver in full: the server's message (`FATAL: no pg_hba.conf entry
/// ...`) for errors the server sent, else the driver's words followed by their causes
/// (`error performing TLS handshake: invalid peer certificate: UnknownIssuer`), which the
/// driver's own `Display` leaves out. Neither ever contains the password.
pub fn describe(e: &tokio_postgres::Error) -> String {
    if let Some(db) = e.as_db_error() {
        let mut out = format!("{}: {}", db.severity(), db.message());
        if let Some(detail) = db.detail() {
            out.push_str(&format!(" ({detail})"));
        }
        return out;
    }
    let mut out = e.to_string();
    let mut cause = std::error::Error::source(e);
    while let Some(c) = cause {
        let text = c.to_string();
        if !text.is_empty() && !out.ends_with(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        cause = c.source();
    }
    out
}

/// Whether a connection failed in TLS: the handshake (an untrusted or mismatched
/// certificate), or a server without TLS where TLS is required.
fn is_tls(e: &tokio_postgres::Error) -> bool {
    let mut cause = std::error::Error::source(e);
    while let Some(c) = cause {
        if c.downcast_ref::<rustls::Error>().is_some() {
            return true;
        }
        if c.downcast_ref::<io::Error>()
            .and_then(|io| io.get_ref())
            .is_some_and(|inner| inner.downcast_ref::<rustls::Error>().is_some())
        {
            return true;
        }
        cause = c.source();
    }
    // The driver's own TLS errors ("server does not support TLS") carry no rustls error.
    e.to_string() == "error performing TLS handshake"
}

/// The `reason` label for a failed query.
pub fn query_reason(e: &tokio_postgres::Error) -> &'static str {
    use tokio_postgres::error::SqlState;
    match e.code() {
        Some(c) if *c == SqlState::INSUFFICIENT_PRIVILEGE => "permission",
        Some(c)
            if *c == SqlState::UNDEFINED_TABLE
                || *c == SqlState::UNDEFINED_FUNCTION
                || *c == SqlState::UNDEFINED_COLUMN
                || *c == SqlState::UNDEFINED_OBJECT =>
        {
            "missing"
        }
        // statement_timeout (and a cancel at the scrape deadline), and lock_timeout: both
        // mean the server was too slow, not that the query is wrong.
        Some(c) if *c == SqlState::QUERY_CANCELED || *c == SqlState::LOCK_NOT_AVAILABLE => {
            "timeout"
        }
        _ if e.is_closed() => "connect",
        _ => "query",
    }
}

/// Where the server listens.
#[derive(Debug, Clone)]
enum Endpoint {
    Tcp { host: String, port: u16 },
    Unix(PathBuf),
}

impl Endpoint {
    /// One entry of `host`: a socket directory (starting with `/`) or a host name/address.
    fn parse(host: &str, port: u16) -> Endpoint {
        if host.starts_with('/') {
            Endpoint::Unix(PathBuf::from(host).join(format!(".s.PGSQL.{port}")))
        } else {
            Endpoint::Tcp {
                host: host.to_string(),
                port,
            }
        }
    }

    /// Why a socket to it could not be opened, in words a user can act on.
    fn describe(&self, e: &io::Error) -> String {
        match (self, e.kind()) {
            (Endpoint::Unix(path), io::ErrorKind::NotFound) => format!(
                "no server socket {} (is PostgreSQL running there?)",
                path.display()
            ),
            (Endpoint::Unix(path), _) => format!("{}: {e}", path.display()),
            (Endpoint::Tcp { host, port }, io::ErrorKind::ConnectionRefused) => {
                format!("{host}:{port}: connection refused (is PostgreSQL listening there?)")
            }
            (Endpoint::Tcp { host, port }, _) => format!("{host}:{port}: {e}"),
        }
    }
}

/// The entries of a target's `host`: comma-separated, tried in order (as libpq).
pub fn hosts(host: &str) -> impl Iterator<Item = &str> {
    host.split(',').map(str::trim).filter(|h| !h.is_empty())
}

enum Stream {
    Tcp(TcpStream),
    Unix(UnixStream),
}

/// The socket of one session (TCP or Unix). Shutting it down, which the driver does after
/// sending Terminate, waits (at most [`CLOSE_TIMEOUT`]) until the server has closed its
/// end: PostgreSQL keeps a backend's socket open until the process exits, "so that
/// clients can perform a synchronous close" (pqcomm.c).
pub struct SessionSocket {
    stream: Stream,
    closing: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl AsyncRead for SessionSocket {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match &mut self.get_mut().stream {
            Stream::Tcp(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Unix(s) => Pin::new(s).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for SessionSocket {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match &mut self.get_mut().stream {
            Stream::Tcp(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Unix(s) => Pin::new(s).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.get_mut().stream {
            Stream::Tcp(s) => Pin::new(s).poll_flush(cx),
            Stream::Unix(s) => Pin::new(s).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.closing.is_none() {
            match &mut this.stream {
                Stream::Tcp(s) => ready!(Pin::new(s).poll_shutdown(cx))?,
                Stream::Unix(s) => ready!(Pin::new(s).poll_shutdown(cx))?,
            }
            this.closing = Some(Box::pin(tokio::time::sleep(CLOSE_TIMEOUT)));
        }
        // Read (and drop) until the server closes its end.
        let mut scratch = [0u8; 512];
        loop {
            if let Some(timer) = this.closing.as_mut()
                && timer.as_mut().poll(cx).is_ready()
            {
                return Poll::Ready(Ok(()));
            }
            let mut buf = ReadBuf::new(&mut scratch);
            let read = match &mut this.stream {
                Stream::Tcp(s) => Pin::new(s).poll_read(cx, &mut buf),
                Stream::Unix(s) => Pin::new(s).poll_read(cx, &mut buf),
            };
            match read {
                Poll::Ready(Ok(())) if buf.filled().is_empty() => return Poll::Ready(Ok(())),
                Poll::Ready(Ok(())) => continue,
                // A reset is as good as a close.
                Poll::Ready(Err(_)) => return Poll::Ready(Ok(())),
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}

enum PasswordSource {
    None,
    Inline(Secret),
    File(std::path::PathBuf),
}

/// An open session. Its slot of the pool's limit is held by the task that drives the
/// connection, so it is free again only once the socket is closed, not when the client is
/// dropped: a replacement never overlaps the session it replaces.
struct Idle {
    db: String,
    client: Client,
    version: u32,
    /// Which of the pool's endpoints the session is on (where its cancel request goes).
    endpoint: usize,
    /// When it was last handed back (for least-recently-used eviction).
    since: Instant,
}

type IdleList = Mutex<Vec<Idle>>;

/// The limit on connections to all PostgreSQL targets together
/// (`exporter.postgres.max_connections`), shared by every [`Pool`] of one collector.
///
/// A session holds one of its permits from before it is opened until the server has closed
/// it, exactly like a pool's own limit. A pool that finds the limit exhausted closes the
/// least recently used idle connection of any pool and waits for its slot, or for any
/// connection to be handed back (which it can then close), until its deadline.
pub struct Limiter {
    limit: usize,
    permits: Arc<Semaphore>,
    /// Notified whenever any pool hands a connection back to its idle list.
    returned: tokio::sync::Notify,
    /// The idle lists of the pools drawing on this limiter.
    idle: Mutex<Vec<Weak<IdleList>>>,
    evictions: AtomicU64,
}

impl std::fmt::Debug for Limiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Limiter")
            .field("limit", &self.limit)
            .field("open", &self.open())
            .finish()
    }
}

impl Limiter {
    /// A limiter allowing `limit` connections at once (at least 1).
    pub fn new(limit: usize) -> Arc<Limiter> {
        let limit = limit.max(1);
        Arc::new(Limiter {
            limit,
            permits: Arc::new(Semaphore::new(limit)),
            returned: tokio::sync::Notify::new(),
            idle: Mutex::new(Vec::new()),
            evictions: AtomicU64::new(0),
        })
    }

    /// Idle connections closed so far to make room under this limit.
    pub fn evictions(&self) -> u64 {
        self.evictions.load(Ordering::Relaxed)
    }

    /// The configured limit.
    pub fn limit(&self) -> usize {
        self.limit
    }

    /// Connections open under this limiter (idle or in use, or still closing).
    pub fn open(&self) -> usize {
        self.limit - self.permits.available_permits()
    }

    fn register(&self, list: &Arc<IdleList>) {
        let mut lists = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
        lists.retain(|w| w.strong_count() > 0);
        lists.push(Arc::downgrade(list));
    }

    /// Closes the least recently used idle connection of any pool; false if none is idle.
    fn evict_lru(&self) -> bool {
        let lists: Vec<Arc<IdleList>> = self
            .idle
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .filter_map(Weak::upgrade)
            .collect();
        loop {
            let mut oldest: Option<(usize, Instant)> = None;
            for (i, list) in lists.iter().enumerate() {
                let idle = list.lock().unwrap_or_else(PoisonError::into_inner);
                if let Some(since) = idle.iter().map(|c| c.since).min()
                    && oldest.is_none_or(|(_, o)| since < o)
                {
                    oldest = Some((i, since));
                }
            }
            let Some((i, since)) = oldest else {
                return false;
            };
            let Some(list) = lists.get(i) else {
                return false;
            };
            let victim = {
                let mut idle = list.lock().unwrap_or_else(PoisonError::into_inner);
                idle.iter()
                    .position(|c| c.since == since)
                    .map(|at| idle.remove(at))
            };
            // Taken by its pool in between: look again.
            if let Some(victim) = victim {
                tracing::debug!(
                    database = %victim.db,
                    "closing the least recently used idle postgres connection for the global limit"
                );
                // Dropping the client ends the session; its permits come back once the
                // server has closed the socket.
                drop(victim);
                self.evictions.fetch_add(1, Ordering::Relaxed);
                return true;
            }
        }
    }
}

#[derive(Default)]
struct Backoff {
    failures: u32,
    until: Option<Instant>,
    last: String,
}

/// The connections of one target.
pub struct Pool {
    base: tokio_postgres::Config,
    endpoints: Vec<Endpoint>,
    tls: MakeRustlsConnect,
    sslmode: SslMode,
    password: PasswordSource,
    main_db: String,
    dsn: String,
    limit: usize,
    connect_timeout: Duration,
    total: Arc<Semaphore>,
    global: Arc<Limiter>,
    per_db: Mutex<HashMap<String, Arc<Semaphore>>>,
    idle: Arc<IdleList>,
    returned: tokio::sync::Notify,
    backoff: Mutex<Backoff>,
    version: AtomicU32,
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pool").field("dsn", &self.dsn).finish()
    }
}

fn millis(d: Duration) -> u128 {
    d.as_millis().max(1)
}

impl Pool {
    /// A pool for a target, drawing on `global` as well as its own limit; opens nothing yet.
    pub fn new(t: &PostgresTarget, global: Arc<Limiter>) -> Result<Pool, super::tls::TlsError> {
        let tls = super::tls::connector(t.sslmode, t.sslrootcert.as_deref())?;
        // The socket is opened here (see SessionSocket); the driver's config carries the
        // session's settings only.
        let mut endpoints: Vec<Endpoint> = hosts(&t.host)
            .map(|h| Endpoint::parse(h, t.port.0))
            .collect();
        if endpoints.is_empty() {
            // Rejected by the config's validation; as libpq, an empty host is the default.
            endpoints.push(Endpoint::parse("/var/run/postgresql", t.port.0));
        }
        let mut base = tokio_postgres::Config::new();
        base.user(&t.user)
            .application_name("vitals")
            .options(format!(
                "-c statement_timeout={} -c lock_timeout={} -c idle_in_transaction_session_timeout=60000",
                millis(t.statement_timeout.0),
                millis(t.lock_timeout.0)
            ));
        let password = match (&t.password, &t.password_file) {
            (Some(p), _) => PasswordSource::Inline(p.clone()),
            (None, Some(f)) => PasswordSource::File(f.clone()),
            (None, None) => PasswordSource::None,
        };
        let limit = t.max_connections.max(2) as usize;
        let idle = Arc::new(Mutex::new(Vec::new()));
        global.register(&idle);
        Ok(Pool {
            base,
            endpoints,
            tls,
            sslmode: t.sslmode,
            password,
            main_db: t.dbname.clone(),
            dsn: format!("postgres://{}@{}:{}", t.user, t.host, t.port.0),
            limit,
            connect_timeout: t.connect_timeout.0,
            total: Arc::new(Semaphore::new(limit)),
            global,
            per_db: Mutex::new(HashMap::new()),
            idle,
            returned: tokio::sync::Notify::new(),
            backoff: Mutex::new(Backoff::default()),
            version: AtomicU32::new(0),
        })
    }

    /// The server as shown in errors and on the landing page, without password.
    pub fn dsn(&self) -> &str {
        &self.dsn
    }

    /// The maintenance database.
    pub fn main_db(&self) -> &str {
        &self.main_db
    }

    /// Connections currently open (idle or in use).
    pub fn open_connections(&self) -> usize {
        self.limit - self.total.available_permits()
    }

    /// Most connections the pool can open at once: its own limit, or the global one if
    /// that is lower.
    pub fn limit(&self) -> usize {
        self.limit.min(self.global.limit())
    }

    /// `server_version_num` as last seen on a connection to the maintenance database; 0
    /// before the first one.
    pub fn server_version(&self) -> u32 {
        self.version.load(Ordering::Relaxed)
    }

    fn db_semaphore(&self, db: &str) -> Arc<Semaphore> {
        let mut map = self.per_db.lock().unwrap_or_else(PoisonError::into_inner);
        map.entry(db.to_string())
            .or_insert_with(|| {
                let n = if db == self.main_db {
                    MAIN_DB_CONNECTIONS
                } else {
                    1
                };
                Arc::new(Semaphore::new(n))
            })
            .clone()
    }

    fn take_idle(&self, db: &str) -> Option<Idle> {
        let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
        idle.retain(|c| !c.client.is_closed());
        let i = idle.iter().position(|c| c.db == db)?;
        Some(idle.remove(i))
    }

    /// Closes the least recently used idle connection (of another database, since the caller
    /// found none to its own), to make room.
    fn evict_one(&self) {
        let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
        if !idle.is_empty() {
            // Idle connections are pushed at the end when returned: the first is the oldest.
            idle.remove(0);
        }
    }

    fn put_idle(&self, mut conn: Idle) {
        if conn.client.is_closed() {
            return;
        }
        conn.since = Instant::now();
        self.idle
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(conn);
        self.returned.notify_waiters();
        self.global.returned.notify_waiters();
    }

    /// Closes every idle connection (used when a target is dropped or for tests).
    pub fn close_idle(&self) {
        self.idle
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clear();
    }

    /// A connection to `db`, waiting at most until `deadline` for a free slot.
    pub async fn get(self: &Arc<Self>, db: &str, deadline: Instant) -> Result<Conn, ConnError> {
        let deadline = tokio::time::Instant::from_std(deadline);
        let busy = || ConnError::Busy {
            dsn: format!("{}/{db}", self.dsn),
            limit: self.limit,
        };
        let db_permit = tokio::time::timeout_at(deadline, self.db_semaphore(db).acquire_owned())
            .await
            .map_err(|_| busy())?
            .map_err(|_| busy())?;
        let (permit, global_permit) = loop {
            // Registered before the checks, so a connection returned in between wakes us.
            let returned = self.returned.notified();
            tokio::pin!(returned);
            returned.as_mut().enable();
            let returned_anywhere = self.global.returned.notified();
            tokio::pin!(returned_anywhere);
            returned_anywhere.as_mut().enable();
            if let Some(idle) = self.take_idle(db) {
                return Ok(Conn::new(self.clone(), idle, db_permit));
            }
            self.check_backoff()?;
            let permit = match self.total.clone().try_acquire_owned() {
                Ok(p) => p,
                Err(_) => {
                    // Make room by closing the least recently used idle connection: its slot
                    // comes back once its socket is closed, and the acquire below takes it.
                    self.evict_one();
                    tokio::select! {
                        p = self.total.clone().acquire_owned() => p.map_err(|_| busy())?,
                        _ = &mut returned => continue,
                        _ = tokio::time::sleep_until(deadline) => return Err(busy()),
                    }
                }
            };
            if let Ok(g) = self.global.permits.clone().try_acquire_owned() {
                break (permit, g);
            }
            // Every connection of the global limit is open: close the least recently used
            // idle one of any target, or wait until one is handed back and try again. This
            // evicts again on every wake-up: limiting each waiter to one eviction was tried
            // and starved waiters (the semaphore hands a freed slot to the longest waiter,
            // which may not be the one that evicted), 4x slower with 4 targets on 3 slots.
            self.global.evict_lru();
            tokio::select! {
                g = self.global.permits.clone().acquire_owned() => break (permit, g.map_err(|_| busy())?),
                // Our own database's connection may be idle again: look again (without
                // holding a slot of our own limit meanwhile).
                _ = &mut returned => continue,
                _ = &mut returned_anywhere => continue,
                _ = tokio::time::sleep_until(deadline) => {
                    return Err(ConnError::GlobalBusy {
                        dsn: format!("{}/{db}", self.dsn),
                        limit: self.global.limit(),
                    });
                }
            }
        };
        match self.connect(db, (permit, global_permit)).await {
            Ok((client, version, endpoint)) => {
                self.succeeded();
                Ok(Conn::new(
                    self.clone(),
                    Idle {
                        db: db.to_string(),
                        client,
                        version,
                        endpoint,
                        since: Instant::now(),
                    },
                    db_permit,
                ))
            }
            Err(e) => {
                // A database that vanished or refuses us is not the server being down.
                if db == self.main_db {
                    self.failed(&e);
                }
                Err(e)
            }
        }
    }

    fn check_backoff(&self) -> Result<(), ConnError> {
        let b = self.backoff.lock().unwrap_or_else(PoisonError::into_inner);
        match b.until {
            Some(until) if until > Instant::now() => Err(ConnError::Backoff {
                last: b.last.clone(),
                wait: until - Instant::now(),
            }),
            _ => Ok(()),
        }
    }

    fn succeeded(&self) {
        *self.backoff.lock().unwrap_or_else(PoisonError::into_inner) = Backoff::default();
    }

    fn failed(&self, e: &ConnError) {
        let mut b = self.backoff.lock().unwrap_or_else(PoisonError::into_inner);
        b.failures = b.failures.saturating_add(1);
        // The first failure is retried at the next scrape; repeated ones back off.
        if b.failures > 1 {
            let exp = (b.failures - 2).min(16);
            let wait = BACKOFF_MIN.saturating_mul(1 << exp).min(BACKOFF_MAX);
            b.until = Some(Instant::now() + wait);
        }
        b.last = e.to_string();
    }

    /// Opens a socket to the first endpoint that answers, in the configured order; which
    /// one it is, or what each answered.
    async fn open_any(&self) -> Result<(usize, SessionSocket), String> {
        let mut failures = Vec::new();
        for (at, endpoint) in self.endpoints.iter().enumerate() {
            match self.open_socket(at).await {
                Ok(socket) => return Ok((at, socket)),
                Err(e) => failures.push(endpoint.describe(&e)),
            }
        }
        Err(failures.join("; "))
    }

    /// Opens a socket to endpoint `at` (keepalives on, as libpq's default).
    async fn open_socket(&self, at: usize) -> io::Result<SessionSocket> {
        let Some(endpoint) = self.endpoints.get(at) else {
            return Err(io::Error::new(io::ErrorKind::NotFound, "no such endpoint"));
        };
        let stream = match endpoint {
            Endpoint::Unix(path) => Stream::Unix(UnixStream::connect(path).await?),
            Endpoint::Tcp { host, port } => {
                let mut last = None;
                let mut found = None;
                for addr in tokio::net::lookup_host((host.as_str(), *port)).await? {
                    let socket = if addr.is_ipv4() {
                        TcpSocket::new_v4()?
                    } else {
                        TcpSocket::new_v6()?
                    };
                    socket.set_keepalive(true)?;
                    match socket.connect(addr).await {
                        Ok(s) => {
                            s.set_nodelay(true)?;
                            found = Some(s);
                            break;
                        }
                        Err(e) => last = Some(e),
                    }
                }
                match found {
                    Some(s) => Stream::Tcp(s),
                    None => {
                        return Err(last.unwrap_or_else(|| {
                            io::Error::new(io::ErrorKind::NotFound, "no address for the host")
                        }));
                    }
                }
            }
        };
        Ok(SessionSocket {
            stream,
            closing: None,
        })
    }

    /// What the configured `sslmode` may have to do with a refused session.
    fn hint(&self, at: usize, e: &tokio_postgres::Error) -> &'static str {
        let refused =
            e.code() == Some(&tokio_postgres::error::SqlState::INVALID_AUTHORIZATION_SPECIFICATION);
        let unencrypted = e
            .as_db_error()
            .is_some_and(|db| db.message().contains("no encryption"));
        match (self.sslmode, self.endpoints.get(at)) {
            (SslMode::Disable, Some(Endpoint::Tcp { .. })) if refused && unencrypted => {
                " (the server accepts this login only over TLS, and sslmode is disable)"
            }
            (_, Some(Endpoint::Unix(_))) if refused => {
                " (on a Unix socket, peer authentication accepts only the role named like the OS user vitals runs as: create it with pg_monitor, or set user and a password)"
            }
            (SslMode::VerifyCa | SslMode::VerifyFull, _) if is_tls(e) => {
                " (check sslrootcert, and for verify-full that the certificate names the configured host)"
            }
            _ => "",
        }
    }

    /// The driver's TLS mode on endpoint `at`: as libpq, never TLS on a Unix socket.
    fn ssl_mode(&self, at: usize) -> tokio_postgres::config::SslMode {
        use tokio_postgres::config::SslMode as Driver;
        match (self.endpoints.get(at), self.sslmode) {
            (Some(Endpoint::Unix(_)) | None, _) | (_, SslMode::Disable) => Driver::Disable,
            (_, SslMode::Prefer) => Driver::Prefer,
            _ => Driver::Require,
        }
    }

    /// The TLS connector for one socket to endpoint `at`, for its host name.
    fn tls_connect(
        &self,
        at: usize,
    ) -> <MakeRustlsConnect as MakeTlsConnect<SessionSocket>>::TlsConnect {
        let host = match self.endpoints.get(at) {
            Some(Endpoint::Tcp { host, .. }) => host.as_str(),
            Some(Endpoint::Unix(_)) | None => "localhost",
        };
        match MakeTlsConnect::<SessionSocket>::make_tls_connect(&mut self.tls.clone(), host) {
            Ok(c) => c,
            Err(never) => match never {},
        }
    }

    async fn connect(
        &self,
        db: &str,
        permit: (OwnedSemaphorePermit, OwnedSemaphorePermit),
    ) -> Result<(Client, u32, usize), ConnError> {
        let mut config = self.base.clone();
        config.dbname(db);
        match &self.password {
            PasswordSource::None => {}
            PasswordSource::Inline(s) => {
                config.password(s.expose());
            }
            PasswordSource::File(path) => {
                let s = Secret::from_file(path).map_err(ConnError::Password)?;
                config.password(s.expose());
            }
        }
        let dsn = format!("{}/{db}", self.dsn);
        let timeout = self.connect_timeout;
        let session = async {
            let (at, socket) = self.open_any().await.map_err(|reason| ConnError::Socket {
                dsn: dsn.clone(),
                reason,
            })?;
            config.ssl_mode(self.ssl_mode(at));
            config
                .connect_raw(socket, self.tls_connect(at))
                .await
                .map(|session| (session, at))
                .map_err(|source| {
                    let hint = self.hint(at, &source);
                    ConnError::Connect {
                        dsn: dsn.clone(),
                        source,
                        hint,
                    }
                })
        };
        let ((client, connection), endpoint) = tokio::time::timeout(timeout, session)
            .await
            .map_err(|_| ConnError::ConnectTimeout {
                dsn: dsn.clone(),
                timeout,
            })??;
        drop(config);
        tokio::spawn(async move {
            // Ends when the client is dropped (after sending Terminate and closing the
            // socket) or the server closes the session; only then are the slots (the
            // pool's and the global one) free.
            let _permit = permit;
            if let Err(e) = connection.await {
                tracing::debug!(error = %e, "postgres connection ended");
            }
        });
        // One server, one version: ask on connections to the maintenance database (which
        // every scrape opens first) and reuse the answer for the fan-out's connections.
        let known = self.version.load(Ordering::Relaxed);
        if known != 0 && db != self.main_db {
            return Ok((client, known, endpoint));
        }
        let rows = tokio::time::timeout(timeout, client.simple_query("show server_version_num"))
            .await
            .map_err(|_| ConnError::ConnectTimeout {
                dsn: dsn.clone(),
                timeout,
            })?
            .map_err(|source| ConnError::Connect {
                dsn,
                source,
                hint: "",
            })?;
        let version = rows
            .iter()
            .find_map(|m| match m {
                SimpleQueryMessage::Row(r) => r.get(0).and_then(|v| v.parse::<u32>().ok()),
                _ => None,
            })
            .unwrap_or(0);
        self.version.store(version, Ordering::Relaxed);
        tracing::debug!(dsn = %self.dsn, db, version, endpoint, "connected to postgres");
        Ok((client, version, endpoint))
    }
}

/// A connection checked out of the pool; returned to it when dropped. If a query was still
/// running when its future was dropped (the scrape deadline passed), the query is cancelled
/// on the server and the connection is returned once it is idle again.
pub struct Conn {
    pool: Arc<Pool>,
    inner: Option<Idle>,
    db_permit: Option<OwnedSemaphorePermit>,
    interrupted: AtomicBool,
    keep: bool,
}

impl Conn {
    fn new(pool: Arc<Pool>, idle: Idle, db_permit: OwnedSemaphorePermit) -> Conn {
        Conn {
            pool,
            inner: Some(idle),
            db_permit: Some(db_permit),
            interrupted: AtomicBool::new(false),
            keep: true,
        }
    }

    /// Closes the connection when it is dropped instead of keeping it idle for the next
    /// use: for a fan-out to more databases than the pool can keep open, where an idle
    /// connection would only be evicted before its database's next turn.
    pub fn close_when_done(&mut self) {
        self.keep = false;
    }

    /// `server_version_num` of the server.
    pub fn version(&self) -> u32 {
        self.inner.as_ref().map(|i| i.version).unwrap_or(0)
    }

    /// The database this connection is to.
    pub fn db(&self) -> &str {
        self.inner.as_ref().map(|i| i.db.as_str()).unwrap_or("")
    }

    /// Runs one statement with the simple query protocol and hands each row to `each` as it
    /// arrives, without collecting the rows. Several calls polled together are pipelined on
    /// the connection.
    pub async fn for_each_row(
        &self,
        sql: &str,
        mut each: impl FnMut(&SimpleQueryRow),
    ) -> Result<(), tokio_postgres::Error> {
        let Some(inner) = self.inner.as_ref() else {
            return Ok(());
        };
        let guard = InFlight {
            flag: &self.interrupted,
            armed: true,
        };
        let result = async {
            let stream = inner.client.simple_query_raw(sql).await?;
            let mut stream = std::pin::pin!(stream);
            while let Some(message) = futures_util::StreamExt::next(&mut stream).await {
                if let SimpleQueryMessage::Row(row) = message? {
                    each(&row);
                }
            }
            Ok(())
        }
        .await;
        // Finished, with or without an error from the server: the session is idle again.
        guard.disarm();
        result
    }
}

struct InFlight<'a> {
    flag: &'a AtomicBool,
    armed: bool,
}

impl InFlight<'_> {
    fn disarm(mut self) {
        self.armed = false;
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        if self.armed {
            self.flag.store(true, Ordering::Relaxed);
        }
    }
}

impl Drop for Conn {
    fn drop(&mut self) {
        let Some(idle) = self.inner.take() else {
            return;
        };
        let db_permit = self.db_permit.take();
        if !self.interrupted.load(Ordering::Relaxed) {
            if self.keep {
                self.pool.put_idle(idle);
            }
            // Otherwise dropping the client ends the session, and its slot comes back when
            // the socket is closed.
            return;
        }
        // A query was abandoned mid-flight: cancel it on the server, wait until the session
        // is idle, and only then hand the connection (and its slots) back.
        let Ok(handle) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let pool = self.pool.clone();
        let keep = self.keep;
        handle.spawn(async move {
            let _db_permit = db_permit;
            let token = idle.client.cancel_token();
            let cancel = async {
                // To the endpoint the session is on, not whichever answers first now.
                let socket = pool
                    .open_socket(idle.endpoint)
                    .await
                    .map_err(|e| e.to_string())?;
                token
                    .cancel_query_raw(socket, pool.tls_connect(idle.endpoint))
                    .await
                    .map_err(|e| e.to_string())
            };
            match tokio::time::timeout(RECOVER_TIMEOUT, cancel).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    tracing::debug!(error = %e, "cancelling an abandoned postgres query failed")
                }
                Err(_) => tracing::debug!("cancelling an abandoned postgres query timed out"),
            }
            let settled =
                tokio::time::timeout(RECOVER_TIMEOUT, idle.client.simple_query("select 1")).await;
            if matches!(settled, Ok(Ok(_))) && keep {
                pool.put_idle(idle);
            }
        });
    }
}
