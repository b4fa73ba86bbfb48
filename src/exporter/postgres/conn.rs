//! Connections to one PostgreSQL server: a small pool with a hard limit, at most two
//! connections to the maintenance database and one to each fanned-out database, reuse of
//! idle connections, reconnect with exponential backoff, and cancellation of in-flight
//! queries when a scrape's future is dropped at its deadline.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
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

/// Why no connection could be had.
#[derive(Debug, thiserror::Error)]
pub enum ConnError {
    /// The server could not be reached or refused the session.
    #[error("connecting to {dsn}: {source}")]
    Connect {
        /// Where, without password.
        dsn: String,
        /// The driver's error (never contains the password).
        source: tokio_postgres::Error,
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
            ConnError::ConnectTimeout { .. } | ConnError::Busy { .. } => "timeout",
            ConnError::Backoff { .. } => "backoff",
            ConnError::Password(_) => "auth",
        }
    }
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
        Some(c) if *c == SqlState::QUERY_CANCELED => "timeout",
        _ if e.is_closed() => "connect",
        _ => "query",
    }
}

enum PasswordSource {
    None,
    Inline(Secret),
    File(std::path::PathBuf),
}

struct Idle {
    db: String,
    client: Client,
    version: u32,
    _permit: OwnedSemaphorePermit,
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
    tls: MakeRustlsConnect,
    password: PasswordSource,
    main_db: String,
    dsn: String,
    limit: usize,
    connect_timeout: Duration,
    total: Arc<Semaphore>,
    per_db: Mutex<HashMap<String, Arc<Semaphore>>>,
    idle: Mutex<Vec<Idle>>,
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
    /// A pool for a target; opens nothing yet.
    pub fn new(t: &PostgresTarget) -> Result<Pool, super::tls::TlsError> {
        let tls = super::tls::connector(t.sslmode, t.sslrootcert.as_deref())?;
        let mut base = tokio_postgres::Config::new();
        if t.host.starts_with('/') {
            base.host_path(&t.host);
        } else {
            base.host(&t.host);
        }
        base.port(t.port.0)
            .user(&t.user)
            .application_name("vitals")
            .connect_timeout(t.connect_timeout.0)
            .keepalives(true)
            .options(format!(
                "-c statement_timeout={} -c lock_timeout={} -c idle_in_transaction_session_timeout=60000",
                millis(t.statement_timeout.0),
                millis(t.lock_timeout.0)
            ))
            .ssl_mode(match t.sslmode {
                SslMode::Disable => tokio_postgres::config::SslMode::Disable,
                SslMode::Prefer => tokio_postgres::config::SslMode::Prefer,
                _ => tokio_postgres::config::SslMode::Require,
            });
        let password = match (&t.password, &t.password_file) {
            (Some(p), _) => PasswordSource::Inline(p.clone()),
            (None, Some(f)) => PasswordSource::File(f.clone()),
            (None, None) => PasswordSource::None,
        };
        let limit = t.max_connections.max(2) as usize;
        Ok(Pool {
            base,
            tls,
            password,
            main_db: t.dbname.clone(),
            dsn: format!("postgres://{}@{}:{}", t.user, t.host, t.port.0),
            limit,
            connect_timeout: t.connect_timeout.0,
            total: Arc::new(Semaphore::new(limit)),
            per_db: Mutex::new(HashMap::new()),
            idle: Mutex::new(Vec::new()),
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

    /// Closes the least recently used idle connection of another database, to make room.
    fn evict_one(&self) -> bool {
        let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
        if idle.is_empty() {
            return false;
        }
        // Idle connections are pushed at the end when returned: the first is the oldest.
        idle.remove(0);
        true
    }

    fn put_idle(&self, conn: Idle) {
        if conn.client.is_closed() {
            return;
        }
        self.idle
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(conn);
        self.returned.notify_waiters();
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
        let permit = loop {
            // Registered before the checks, so a connection returned in between wakes us.
            let returned = self.returned.notified();
            tokio::pin!(returned);
            returned.as_mut().enable();
            if let Some(idle) = self.take_idle(db) {
                return Ok(Conn::new(self.clone(), idle, db_permit));
            }
            self.check_backoff()?;
            if let Ok(p) = self.total.clone().try_acquire_owned() {
                break p;
            }
            if self.evict_one() {
                continue;
            }
            tokio::select! {
                p = self.total.clone().acquire_owned() => break p.map_err(|_| busy())?,
                _ = &mut returned => continue,
                _ = tokio::time::sleep_until(deadline) => return Err(busy()),
            }
        };
        match self.connect(db).await {
            Ok((client, version)) => {
                self.succeeded();
                Ok(Conn::new(
                    self.clone(),
                    Idle {
                        db: db.to_string(),
                        client,
                        version,
                        _permit: permit,
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

    async fn connect(&self, db: &str) -> Result<(Client, u32), ConnError> {
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
        let (client, connection) = tokio::time::timeout(timeout, config.connect(self.tls.clone()))
            .await
            .map_err(|_| ConnError::ConnectTimeout {
                dsn: dsn.clone(),
                timeout,
            })?
            .map_err(|source| ConnError::Connect {
                dsn: dsn.clone(),
                source,
            })?;
        drop(config);
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(error = %e, "postgres connection ended");
            }
        });
        // One server, one version: ask on connections to the maintenance database (which
        // every scrape opens first) and reuse the answer for the fan-out's connections.
        let known = self.version.load(Ordering::Relaxed);
        if known != 0 && db != self.main_db {
            return Ok((client, known));
        }
        let rows = tokio::time::timeout(timeout, client.simple_query("show server_version_num"))
            .await
            .map_err(|_| ConnError::ConnectTimeout {
                dsn: dsn.clone(),
                timeout,
            })?
            .map_err(|source| ConnError::Connect { dsn, source })?;
        let version = rows
            .iter()
            .find_map(|m| match m {
                SimpleQueryMessage::Row(r) => r.get(0).and_then(|v| v.parse::<u32>().ok()),
                _ => None,
            })
            .unwrap_or(0);
        self.version.store(version, Ordering::Relaxed);
        tracing::debug!(dsn = %self.dsn, db, version, "connected to postgres");
        Ok((client, version))
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
}

impl Conn {
    fn new(pool: Arc<Pool>, idle: Idle, db_permit: OwnedSemaphorePermit) -> Conn {
        Conn {
            pool,
            inner: Some(idle),
            db_permit: Some(db_permit),
            interrupted: AtomicBool::new(false),
        }
    }

    /// `server_version_num` of the server.
    pub fn version(&self) -> u32 {
        self.inner.as_ref().map(|i| i.version).unwrap_or(0)
    }

    /// The database this connection is to.
    pub fn db(&self) -> &str {
        self.inner.as_ref().map(|i| i.db.as_str()).unwrap_or("")
    }

    /// Runs one statement with the simple query protocol and returns its rows. Several
    /// calls polled together are pipelined on the connection.
    pub async fn query(&self, sql: &str) -> Result<Vec<SimpleQueryRow>, tokio_postgres::Error> {
        let Some(inner) = self.inner.as_ref() else {
            return Ok(Vec::new());
        };
        let guard = InFlight {
            flag: &self.interrupted,
            armed: true,
        };
        let result = inner.client.simple_query(sql).await;
        guard.disarm();
        Ok(result?
            .into_iter()
            .filter_map(|m| match m {
                SimpleQueryMessage::Row(r) => Some(r),
                _ => None,
            })
            .collect())
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
            self.pool.put_idle(idle);
            return;
        }
        // A query was abandoned mid-flight: cancel it on the server, wait until the session
        // is idle, and only then hand the connection (and its slots) back.
        let Ok(handle) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let pool = self.pool.clone();
        handle.spawn(async move {
            let _db_permit = db_permit;
            let token = idle.client.cancel_token();
            if let Err(e) = token.cancel_query(pool.tls.clone()).await {
                tracing::debug!(error = %e, "cancelling an abandoned postgres query failed");
            }
            let settled =
                tokio::time::timeout(RECOVER_TIMEOUT, idle.client.simple_query("select 1")).await;
            if matches!(settled, Ok(Ok(_))) {
                pool.put_idle(idle);
            }
        });
    }
}
