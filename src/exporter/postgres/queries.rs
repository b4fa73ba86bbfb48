//! Version-aware SQL: which query each area runs on PostgreSQL 12 to 18, and which of its
//! columns become which families. Pure, so the selection is unit-tested for every version.
//!
//! Every query returns text (the simple query protocol): label columns as text, metric
//! columns as numbers or booleans; NULL metric values are skipped.

use super::metrics::Desc;

/// Oldest PostgreSQL major version whose SQL is maintained here.
pub const MIN_VERSION: u32 = 120000;

/// An area of pg_stat_* with its own query; errors are counted and logged per area.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Area {
    /// Version, start time, recovery state, WAL position.
    Server,
    /// pg_stat_database joined with pg_database.
    Database,
    /// pg_database_size, refreshed in the background.
    DatabaseSize,
    /// pg_stat_activity.
    Activity,
    /// pg_locks.
    Locks,
    /// Lock waits of pg_stat_activity (with pg_locks.waitstart from 14).
    Waits,
    /// The holders of the xmin horizon: backends, replication slots, prepared transactions.
    XminHorizon,
    /// pg_stat_replication (standbys of this server).
    Replication,
    /// pg_replication_slots.
    ReplicationSlots,
    /// pg_settings, an allow-list.
    Settings,
    /// pg_stat_bgwriter.
    Bgwriter,
    /// pg_stat_checkpointer (PostgreSQL 17 and later).
    Checkpointer,
    /// pg_stat_wal (PostgreSQL 14 and later).
    Wal,
    /// pg_ls_waldir().
    WalDir,
    /// pg_stat_archiver.
    Archiver,
    /// pg_stat_user_tables, per database.
    Tables,
    /// pg_stat_user_indexes, per database.
    Indexes,
    /// pg_sequences, per database.
    Sequences,
    /// Invalid and unused indexes, per database.
    IndexHealth,
    /// The one per-database statement of the fan-out (tables, indexes and sequences).
    PerDatabase,
    /// pg_stat_statements.
    Statements,
}

impl Area {
    /// A short name for logs.
    pub fn name(self) -> &'static str {
        match self {
            Area::Server => "server",
            Area::Database => "database",
            Area::DatabaseSize => "database_size",
            Area::Activity => "activity",
            Area::Locks => "locks",
            Area::Waits => "waits",
            Area::XminHorizon => "xmin_horizon",
            Area::Replication => "replication",
            Area::ReplicationSlots => "replication_slots",
            Area::Settings => "settings",
            Area::Bgwriter => "bgwriter",
            Area::Checkpointer => "checkpointer",
            Area::Wal => "wal",
            Area::WalDir => "wal_dir",
            Area::Archiver => "archiver",
            Area::Tables => "tables",
            Area::Indexes => "indexes",
            Area::Sequences => "sequences",
            Area::IndexHealth => "index_health",
            Area::PerDatabase => "per_database",
            Area::Statements => "statements",
        }
    }
}

/// One metric column of a query.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Column {
    /// Column name in the result.
    pub name: &'static str,
    /// Family it feeds.
    pub desc: Desc,
    /// Factor to the family's base unit (0.001 for milliseconds).
    pub scale: f64,
}

const fn col(name: &'static str, desc: Desc) -> Column {
    Column {
        name,
        desc,
        scale: 1.0,
    }
}

const fn ms(name: &'static str, desc: Desc) -> Column {
    Column {
        name,
        desc,
        scale: 0.001,
    }
}

/// A query with the columns that are labels and those that are values.
#[derive(Debug, Clone, PartialEq)]
pub struct Query {
    /// Its area.
    pub area: Area,
    /// The SQL text.
    pub sql: String,
    /// Label columns, in order.
    pub labels: &'static [&'static str],
    /// Value columns.
    pub columns: Vec<Column>,
}

/// A row as text cells, as the simple query protocol returns it.
pub trait TextRow {
    /// The index of `column` in the row, `None` when the result has no such column.
    fn position(&self, column: &str) -> Option<usize>;

    /// The cell at `index`: `None` for NULL (or an index out of range).
    fn at(&self, index: usize) -> Option<&str>;

    /// The cell of `column`: `None` when the column is missing, `Some(None)` for NULL.
    fn cell(&self, column: &str) -> Option<Option<&str>> {
        self.position(column).map(|i| self.at(i))
    }
}

impl TextRow for tokio_postgres::SimpleQueryRow {
    fn position(&self, column: &str) -> Option<usize> {
        self.columns().iter().position(|c| c.name() == column)
    }

    fn at(&self, index: usize) -> Option<&str> {
        self.try_get(index).ok().flatten()
    }
}

/// Parses a PostgreSQL text value as a number: numbers, `t`/`f` booleans, `on`/`off`.
pub fn parse_number(s: &str) -> Option<f64> {
    match s {
        "t" | "on" | "true" => Some(1.0),
        "f" | "off" | "false" => Some(0.0),
        _ => s.trim().parse::<f64>().ok(),
    }
}

fn select(columns: &[&str]) -> String {
    columns.join(", ")
}

// ---------------------------------------------------------------- server

/// `pg_up` is set by the collector; the server query feeds these.
pub mod server {
    use super::*;
    /// Start time of the postmaster.
    pub const START: Desc = Desc::gauge(
        "pg_postmaster_start_time",
        "Time at which the PostgreSQL server started, since the Unix epoch",
    )
    .seconds();
    /// Whether the server is a standby.
    pub const IS_REPLICA: Desc = Desc::gauge(
        "pg_replication_is_replica",
        "Whether the server is in recovery (a standby): 1 yes, 0 no",
    );
    /// Replay lag of a standby.
    pub const LAG: Desc = Desc::gauge(
        "pg_replication_lag",
        "Time since the last transaction replayed on a standby (0 on a primary, or when replay has caught up with what a connected WAL receiver received)",
    )
    .seconds();
    /// Current WAL position.
    pub const WAL_LSN: Desc = Desc::gauge(
        "pg_wal_position",
        "Current WAL write position (replay position on a standby) as a byte offset",
    )
    .bytes();
    /// Settings changed in the configuration that need a restart to take effect.
    pub const PENDING_RESTART: Desc = Desc::gauge(
        "pg_settings_pending_restart",
        "Settings changed in the configuration files that take effect only after a restart of the server",
    );
    /// Server version as a label.
    pub const INFO: Desc = Desc::gauge(
        "pg_server_info",
        "PostgreSQL server version, as labels version and version_num; always 1",
    );
}

/// Version, start time, recovery state and WAL position, one row.
pub fn server(_version: u32) -> Query {
    Query {
        area: Area::Server,
        sql: "select current_setting('server_version') as version, \
              current_setting('server_version_num') as version_num, \
              extract(epoch from pg_postmaster_start_time()) as start_time, \
              pg_is_in_recovery() as is_replica, \
              case when not pg_is_in_recovery() then 0 \
                   when pg_last_wal_receive_lsn() = pg_last_wal_replay_lsn() \
                        and exists (select 1 from pg_stat_wal_receiver) then 0 \
                   else greatest(0, extract(epoch from now() - pg_last_xact_replay_timestamp())) end as lag, \
              pg_wal_lsn_diff(case when pg_is_in_recovery() then pg_last_wal_replay_lsn() \
                   else pg_current_wal_lsn() end, '0/0') as wal_lsn, \
              (select count(*) from pg_settings where pending_restart) as pending_restart, \
              1 as info"
            .into(),
        labels: &["version", "version_num"],
        columns: vec![
            col("info", server::INFO),
            col("start_time", server::START),
            col("is_replica", server::IS_REPLICA),
            col("lag", server::LAG),
            col("wal_lsn", server::WAL_LSN),
            col("pending_restart", server::PENDING_RESTART),
        ],
    }
}

// ---------------------------------------------------------------- database

/// Families of pg_stat_database and pg_database.
pub mod database {
    use super::*;
    /// numbackends
    pub const NUMBACKENDS: Desc = Desc::gauge(
        "pg_stat_database_numbackends",
        "Backends currently connected to this database",
    );
    /// xact_commit
    pub const XACT_COMMIT: Desc = Desc::counter(
        "pg_stat_database_xact_commit",
        "Transactions in this database that have been committed",
    );
    /// xact_rollback
    pub const XACT_ROLLBACK: Desc = Desc::counter(
        "pg_stat_database_xact_rollback",
        "Transactions in this database that have been rolled back",
    );
    /// blks_read
    pub const BLKS_READ: Desc = Desc::counter(
        "pg_stat_database_blks_read",
        "Disk blocks read in this database",
    );
    /// blks_hit
    pub const BLKS_HIT: Desc = Desc::counter(
        "pg_stat_database_blks_hit",
        "Disk blocks found in the buffer cache in this database",
    );
    /// tup_returned
    pub const TUP_RETURNED: Desc = Desc::counter(
        "pg_stat_database_tup_returned",
        "Rows returned by queries in this database",
    );
    /// tup_fetched
    pub const TUP_FETCHED: Desc = Desc::counter(
        "pg_stat_database_tup_fetched",
        "Rows fetched by queries in this database",
    );
    /// tup_inserted
    pub const TUP_INSERTED: Desc = Desc::counter(
        "pg_stat_database_tup_inserted",
        "Rows inserted by queries in this database",
    );
    /// tup_updated
    pub const TUP_UPDATED: Desc = Desc::counter(
        "pg_stat_database_tup_updated",
        "Rows updated by queries in this database",
    );
    /// tup_deleted
    pub const TUP_DELETED: Desc = Desc::counter(
        "pg_stat_database_tup_deleted",
        "Rows deleted by queries in this database",
    );
    /// conflicts
    pub const CONFLICTS: Desc = Desc::counter(
        "pg_stat_database_conflicts",
        "Queries canceled due to conflicts with recovery in this database",
    );
    /// temp_files
    pub const TEMP_FILES: Desc = Desc::counter(
        "pg_stat_database_temp_files",
        "Temporary files created by queries in this database",
    );
    /// temp_bytes
    pub const TEMP_BYTES: Desc = Desc::counter(
        "pg_stat_database_temp",
        "Data written to temporary files by queries in this database",
    )
    .bytes();
    /// deadlocks
    pub const DEADLOCKS: Desc = Desc::counter(
        "pg_stat_database_deadlocks",
        "Deadlocks detected in this database",
    );
    /// blk_read_time
    pub const BLK_READ_TIME: Desc = Desc::counter(
        "pg_stat_database_blk_read_time",
        "Time spent reading data file blocks by backends in this database (needs track_io_timing)",
    )
    .seconds();
    /// blk_write_time
    pub const BLK_WRITE_TIME: Desc = Desc::counter(
        "pg_stat_database_blk_write_time",
        "Time spent writing data file blocks by backends in this database (needs track_io_timing)",
    )
    .seconds();
    /// checksum_failures
    pub const CHECKSUM_FAILURES: Desc = Desc::counter(
        "pg_stat_database_checksum_failures",
        "Data page checksum failures detected in this database",
    );
    /// session_time (14+)
    pub const SESSION_TIME: Desc = Desc::counter(
        "pg_stat_database_session_time",
        "Time spent by sessions in this database (PostgreSQL 14+)",
    )
    .seconds();
    /// active_time (14+)
    pub const ACTIVE_TIME: Desc = Desc::counter(
        "pg_stat_database_active_time",
        "Time spent executing SQL statements in this database (PostgreSQL 14+)",
    )
    .seconds();
    /// idle_in_transaction_time (14+)
    pub const IDLE_IN_TX_TIME: Desc = Desc::counter(
        "pg_stat_database_idle_in_transaction_time",
        "Time spent idle in transaction in this database (PostgreSQL 14+)",
    )
    .seconds();
    /// sessions (14+)
    pub const SESSIONS: Desc = Desc::counter(
        "pg_stat_database_sessions",
        "Sessions established to this database (PostgreSQL 14+)",
    );
    /// sessions_abandoned (14+)
    pub const SESSIONS_ABANDONED: Desc = Desc::counter(
        "pg_stat_database_sessions_abandoned",
        "Sessions to this database terminated because the client disconnected (PostgreSQL 14+)",
    );
    /// sessions_fatal (14+)
    pub const SESSIONS_FATAL: Desc = Desc::counter(
        "pg_stat_database_sessions_fatal",
        "Sessions to this database terminated by fatal errors (PostgreSQL 14+)",
    );
    /// sessions_killed (14+)
    pub const SESSIONS_KILLED: Desc = Desc::counter(
        "pg_stat_database_sessions_killed",
        "Sessions to this database terminated by operator intervention (PostgreSQL 14+)",
    );
    /// parallel_workers_to_launch (18+)
    pub const PARALLEL_TO_LAUNCH: Desc = Desc::counter(
        "pg_stat_database_parallel_workers_to_launch",
        "Parallel workers planned to be launched by queries in this database (PostgreSQL 18+)",
    );
    /// parallel_workers_launched (18+)
    pub const PARALLEL_LAUNCHED: Desc = Desc::counter(
        "pg_stat_database_parallel_workers_launched",
        "Parallel workers launched by queries in this database (PostgreSQL 18+)",
    );
    /// stats_reset, as seconds since the Unix epoch; 0 when never reset.
    ///
    /// The sidecar's classification of inactive and low-activity databases compares counter
    /// increases over 7 to 90 days; a reset inside the window makes those increases too small,
    /// and this is how a rule sees one. NULL (the statistics of this database were never
    /// reset, as for a new database or after a crash discarded them) is exported as 0, as
    /// postgres_exporter does since 0.13, so that the series exists for every database and
    /// `time() - x` and comparisons stay defined (NaN would make them all false).
    pub const STATS_RESET: Desc = Desc::gauge(
        "pg_stat_database_stats_reset_timestamp",
        "When the statistics of this database were last reset, since the Unix epoch; 0 if never (stats_reset is NULL)",
    )
    .seconds();
    /// age(datfrozenxid)
    pub const XID_AGE: Desc = Desc::gauge(
        "pg_database_frozen_xid_age",
        "Age of the database's oldest unfrozen transaction ID (wraparound at 2^31)",
    );
    /// mxid_age(datminmxid)
    pub const MXID_AGE: Desc = Desc::gauge(
        "pg_database_min_mxid_age",
        "Age of the database's oldest multixact ID (wraparound at 2^31)",
    );
    /// datconnlimit
    pub const CONNLIMIT: Desc = Desc::gauge(
        "pg_database_connection_limit",
        "Connection limit of the database (-1: none)",
    );
    /// pg_database_size
    pub const SIZE: Desc = Desc::gauge(
        "pg_database_size",
        "Disk space used by the database (refreshed in the background, see size_refresh_interval)",
    )
    .bytes();
    /// When the size snapshot was taken.
    pub const SIZE_TIMESTAMP: Desc = Desc::gauge(
        "pg_database_size_refresh_timestamp",
        "When pg_database_size_bytes was last computed, since the Unix epoch",
    )
    .seconds();
}

/// pg_stat_database with wraparound ages, one row per database. The extra columns
/// `allow_conn` and `is_template` are read by the collector to choose the fan-out.
pub fn database(version: u32) -> Query {
    use database::*;
    let mut cols = vec![
        col("numbackends", NUMBACKENDS),
        col("xact_commit", XACT_COMMIT),
        col("xact_rollback", XACT_ROLLBACK),
        col("blks_read", BLKS_READ),
        col("blks_hit", BLKS_HIT),
        col("tup_returned", TUP_RETURNED),
        col("tup_fetched", TUP_FETCHED),
        col("tup_inserted", TUP_INSERTED),
        col("tup_updated", TUP_UPDATED),
        col("tup_deleted", TUP_DELETED),
        col("conflicts", CONFLICTS),
        col("temp_files", TEMP_FILES),
        col("temp_bytes", TEMP_BYTES),
        col("deadlocks", DEADLOCKS),
        ms("blk_read_time", BLK_READ_TIME),
        ms("blk_write_time", BLK_WRITE_TIME),
        col("checksum_failures", CHECKSUM_FAILURES),
    ];
    if version >= 140000 {
        cols.extend([
            ms("session_time", SESSION_TIME),
            ms("active_time", ACTIVE_TIME),
            ms("idle_in_transaction_time", IDLE_IN_TX_TIME),
            col("sessions", SESSIONS),
            col("sessions_abandoned", SESSIONS_ABANDONED),
            col("sessions_fatal", SESSIONS_FATAL),
            col("sessions_killed", SESSIONS_KILLED),
        ]);
    }
    if version >= 180000 {
        cols.extend([
            col("parallel_workers_to_launch", PARALLEL_TO_LAUNCH),
            col("parallel_workers_launched", PARALLEL_LAUNCHED),
        ]);
    }
    let stat_cols: Vec<String> = cols.iter().map(|c| format!("s.{}", c.name)).collect();
    cols.extend([
        col("stats_reset", STATS_RESET),
        col("xid_age", XID_AGE),
        col("mxid_age", MXID_AGE),
        col("connlimit", CONNLIMIT),
    ]);
    Query {
        area: Area::Database,
        sql: format!(
            "select d.datname, {}, \
             case when s.datid is not null then coalesce(extract(epoch from s.stats_reset), 0) end as stats_reset, \
             age(d.datfrozenxid) as xid_age, mxid_age(d.datminmxid) as mxid_age, \
             d.datconnlimit as connlimit, d.datallowconn as allow_conn, d.datistemplate as is_template \
             from pg_database d left join pg_stat_database s on s.datid = d.oid order by d.datname",
            select(&stat_cols.iter().map(String::as_str).collect::<Vec<_>>())
        ),
        labels: &["datname"],
        columns: cols,
    }
}

/// Sizes of the databases the role may connect to (the background refresher's query).
pub fn database_size(_version: u32) -> Query {
    Query {
        area: Area::DatabaseSize,
        sql: "select datname, pg_database_size(oid) as size from pg_database \
              where has_database_privilege(oid, 'CONNECT') or pg_has_role('pg_read_all_stats', 'USAGE') \
              order by datname"
            .into(),
        labels: &["datname"],
        columns: vec![col("size", database::SIZE)],
    }
}

// ---------------------------------------------------------------- activity, locks

/// Families of pg_stat_activity and pg_locks.
pub mod activity {
    use super::*;
    /// Backends by database and state (postgres_exporter: pg_stat_activity_count).
    pub const CONNECTIONS: Desc = Desc::gauge(
        "pg_stat_activity_connections",
        "Backends connected to a database, by state",
    );
    /// Oldest transaction by database and state.
    pub const MAX_TX_DURATION: Desc = Desc::gauge(
        "pg_stat_activity_max_tx_duration",
        "Age of the oldest open transaction in a database, by state",
    )
    .seconds();
    /// Backends waiting for a lock.
    pub const WAITING: Desc = Desc::gauge(
        "pg_stat_activity_waiting_connections",
        "Backends of a database waiting for a lock",
    );
    /// Locks by mode (postgres_exporter: pg_locks_count).
    pub const LOCKS: Desc = Desc::gauge("pg_locks", "Locks held or awaited in a database, by mode");
    /// Longest current lock wait by database.
    pub const MAX_WAIT: Desc = Desc::gauge(
        "pg_stat_activity_max_wait_duration",
        "Longest time a backend of a database has been waiting for a lock so far (0 when none waits)",
    )
    .seconds();
    /// Age of the xmin horizon by holder.
    pub const XMIN_HORIZON_AGE: Desc = Desc::gauge(
        "pg_xmin_horizon_age",
        "Age in transactions of the oldest transaction ID held back from vacuum, by holder (backend, replication_slot, prepared_xact; 0 when it holds none)",
    );
}

/// The holders of the xmin horizon, the values of the `holder` label.
pub const XMIN_HOLDERS: [&str; 3] = ["backend", "replication_slot", "prepared_xact"];

/// The longest current lock wait per database (0 where none waits). From PostgreSQL 14 the
/// wait starts at pg_locks.waitstart; before, at the waiting statement's start (state_change),
/// which is when a statement waiting for a lock became active.
pub fn waits(version: u32) -> Query {
    use activity::*;
    let (start, join) = if version >= 140000 {
        (
            "coalesce(l.waitstart, a.state_change)",
            " left join pg_locks l on l.pid = a.pid and not l.granted",
        )
    } else {
        ("a.state_change", "")
    };
    Query {
        area: Area::Waits,
        sql: format!(
            "select d.datname, coalesce(w.max_wait, 0) as max_wait from pg_database d \
             left join (select a.datname, max(greatest(0, extract(epoch from now() - {start}))) as max_wait \
                        from pg_stat_activity a{join} \
                        where a.wait_event_type = 'Lock' and a.datname is not null group by 1) w \
               on w.datname = d.datname \
             where not d.datistemplate order by 1"
        ),
        labels: &["datname"],
        columns: vec![col("max_wait", MAX_WAIT)],
    }
}

/// Age of the oldest transaction ID each kind of holder keeps vacuum from removing, one row
/// per holder: backends (their snapshot's xmin or their own transaction ID), replication
/// slots (xmin and catalog_xmin) and prepared transactions.
pub fn xmin_horizon(_version: u32) -> Query {
    use activity::*;
    let holders = XMIN_HOLDERS
        .iter()
        .map(|h| format!("('{h}')"))
        .collect::<Vec<_>>()
        .join(", ");
    Query {
        area: Area::XminHorizon,
        sql: format!(
            "select h.holder, coalesce(x.age, 0) as age from (values {holders}) as h(holder) \
             left join (\
               select 'backend' as holder, max(greatest(age(backend_xmin), age(backend_xid))) as age \
               from pg_stat_activity \
               union all select 'replication_slot', max(greatest(age(xmin), age(catalog_xmin))) \
               from pg_replication_slots \
               union all select 'prepared_xact', max(age(transaction)) from pg_prepared_xacts) x \
             on x.holder = h.holder order by 1"
        ),
        labels: &["holder"],
        columns: vec![col("age", XMIN_HORIZON_AGE)],
    }
}

const STATES: &str = "('active'), ('idle'), ('idle in transaction'), \
     ('idle in transaction (aborted)'), ('fastpath function call'), ('disabled')";

/// Backends per database and state, with zeros for absent combinations.
pub fn activity(_version: u32) -> Query {
    use activity::*;
    Query {
        area: Area::Activity,
        sql: format!(
            "select d.datname, st.state, coalesce(a.count, 0) as count, \
             coalesce(a.max_tx_duration, 0) as max_tx_duration, \
             case when st.state = 'active' then coalesce(w.waiting, 0) end as waiting \
             from pg_database d cross join (values {STATES}) as st(state) \
             left join (select datname, state, count(*) as count, \
                        max(extract(epoch from now() - xact_start)) as max_tx_duration \
                        from pg_stat_activity where datname is not null group by datname, state) a \
               on a.datname = d.datname and a.state = st.state \
             left join (select datname, count(*) as waiting from pg_stat_activity \
                        where wait_event_type = 'Lock' group by datname) w \
               on w.datname = d.datname \
             where not d.datistemplate order by 1, 2"
        ),
        labels: &["datname", "state"],
        columns: vec![
            col("count", CONNECTIONS),
            col("max_tx_duration", MAX_TX_DURATION),
            // Only the 'active' row carries a value; the rest are NULL and skipped below.
            col("waiting", WAITING),
        ],
    }
}

const LOCK_MODES: &str = "('accesssharelock'), ('rowsharelock'), ('rowexclusivelock'), \
     ('shareupdateexclusivelock'), ('sharelock'), ('sharerowexclusivelock'), \
     ('exclusivelock'), ('accessexclusivelock'), ('sireadlock')";

/// Locks per database and mode, with zeros for absent combinations.
pub fn locks(_version: u32) -> Query {
    use activity::*;
    Query {
        area: Area::Locks,
        sql: format!(
            "select d.datname, m.mode, coalesce(l.count, 0) as count \
             from pg_database d cross join (values {LOCK_MODES}) as m(mode) \
             left join (select database, lower(mode) as mode, count(*) as count from pg_locks \
                        where database is not null group by 1, 2) l \
               on l.database = d.oid and l.mode = m.mode \
             where not d.datistemplate order by 1, 2"
        ),
        labels: &["datname", "mode"],
        columns: vec![col("count", LOCKS)],
    }
}

// ---------------------------------------------------------------- replication

/// Families of pg_stat_replication and pg_replication_slots.
pub mod replication {
    use super::*;
    /// Bytes a standby's replay is behind.
    pub const REPLAY_LAG_BYTES: Desc = Desc::gauge(
        "pg_stat_replication_replay_lag",
        "WAL not yet replayed by a standby connected to this server",
    )
    .bytes();
    /// write_lag
    pub const WRITE_LAG: Desc = Desc::gauge(
        "pg_stat_replication_write_lag",
        "Time until recent WAL was written by a standby (write_lag)",
    )
    .seconds();
    /// flush_lag
    pub const FLUSH_LAG: Desc = Desc::gauge(
        "pg_stat_replication_flush_lag",
        "Time until recent WAL was flushed by a standby (flush_lag)",
    )
    .seconds();
    /// replay_lag
    pub const REPLAY_LAG: Desc = Desc::gauge(
        "pg_stat_replication_replay_lag",
        "Time until recent WAL was replayed by a standby (replay_lag)",
    )
    .seconds();
    /// Slot activity.
    pub const SLOT_ACTIVE: Desc = Desc::gauge(
        "pg_replication_slot_slot_is_active",
        "Whether a replication slot is in use: 1 yes, 0 no",
    );
    /// WAL retained by a slot.
    pub const SLOT_RETAINED: Desc = Desc::gauge(
        "pg_replication_slot_retained_wal",
        "WAL retained on this server for a replication slot (from its restart_lsn)",
    )
    .bytes();
    /// safe_wal_size (13+).
    pub const SLOT_SAFE_WAL: Desc = Desc::gauge(
        "pg_replication_slot_safe_wal_size",
        "WAL that can still be written before the slot is in danger of losing required WAL (PostgreSQL 13+)",
    )
    .bytes();
    /// wal_status (13+), as a state set.
    pub const SLOT_WAL_STATUS: Desc = Desc::gauge(
        "pg_replication_slot_wal_status",
        "Availability of the WAL a replication slot needs: 1 for its current wal_status (reserved, extended, unreserved, lost), 0 for the others (PostgreSQL 13+)",
    );
}

/// The values of pg_replication_slots.wal_status (PostgreSQL 13+).
pub const WAL_STATUSES: [&str; 4] = ["reserved", "extended", "unreserved", "lost"];

const CURRENT_LSN: &str =
    "case when pg_is_in_recovery() then pg_last_wal_receive_lsn() else pg_current_wal_lsn() end";

/// Standbys connected to this server.
pub fn replication(_version: u32) -> Query {
    use replication::*;
    Query {
        area: Area::Replication,
        sql: format!(
            "select coalesce(application_name, '') as application_name, \
             coalesce(host(client_addr), 'local') as client_addr, coalesce(state, '') as state, \
             pg_wal_lsn_diff({CURRENT_LSN}, replay_lsn) as replay_lag_bytes, \
             extract(epoch from write_lag) as write_lag, extract(epoch from flush_lag) as flush_lag, \
             extract(epoch from replay_lag) as replay_lag from pg_stat_replication order by 1, 2"
        ),
        labels: &["application_name", "client_addr", "state"],
        columns: vec![
            col("replay_lag_bytes", REPLAY_LAG_BYTES),
            col("write_lag", WRITE_LAG),
            col("flush_lag", FLUSH_LAG),
            col("replay_lag", REPLAY_LAG),
        ],
    }
}

/// `wal_status` of each replication slot as a state set (one series per possible status, 1
/// for the current one), so that a change of status changes values, not series; `None`
/// before PostgreSQL 13, which has no wal_status.
pub fn replication_slot_wal_status(version: u32) -> Option<Query> {
    use replication::*;
    if version < 130000 {
        return None;
    }
    let statuses = WAL_STATUSES
        .iter()
        .map(|s| format!("('{s}')"))
        .collect::<Vec<_>>()
        .join(", ");
    Some(Query {
        area: Area::ReplicationSlots,
        sql: format!(
            "select slot_name, slot_type, coalesce(database, '') as database, s.status as wal_status, \
             (coalesce(r.wal_status, '') = s.status)::int as current \
             from pg_replication_slots r cross join (values {statuses}) as s(status) order by 1, 4"
        ),
        labels: &["slot_name", "slot_type", "database", "wal_status"],
        columns: vec![col("current", SLOT_WAL_STATUS)],
    })
}

/// Replication slots.
pub fn replication_slots(version: u32) -> Query {
    use replication::*;
    let mut columns = vec![
        col("active", SLOT_ACTIVE),
        col("retained_bytes", SLOT_RETAINED),
    ];
    let safe = if version >= 130000 {
        columns.push(col("safe_wal_size", SLOT_SAFE_WAL));
        ", safe_wal_size"
    } else {
        ""
    };
    Query {
        area: Area::ReplicationSlots,
        sql: format!(
            "select slot_name, slot_type, coalesce(database, '') as database, active, \
             pg_wal_lsn_diff({CURRENT_LSN}, restart_lsn) as retained_bytes{safe} \
             from pg_replication_slots order by 1"
        ),
        labels: &["slot_name", "slot_type", "database"],
        columns,
    }
}

// ---------------------------------------------------------------- bgwriter, checkpointer

/// Families of pg_stat_bgwriter and pg_stat_checkpointer.
pub mod bgwriter {
    use super::*;
    /// checkpoints_timed (up to 16)
    pub const CHECKPOINTS_TIMED: Desc = Desc::counter(
        "pg_stat_bgwriter_checkpoints_timed",
        "Scheduled checkpoints performed (PostgreSQL 16 and older)",
    );
    /// checkpoints_req (up to 16)
    pub const CHECKPOINTS_REQ: Desc = Desc::counter(
        "pg_stat_bgwriter_checkpoints_req",
        "Requested checkpoints performed (PostgreSQL 16 and older)",
    );
    /// checkpoint_write_time (up to 16)
    pub const CHECKPOINT_WRITE_TIME: Desc = Desc::counter(
        "pg_stat_bgwriter_checkpoint_write_time",
        "Time spent writing files to disk in checkpoints (PostgreSQL 16 and older)",
    )
    .seconds();
    /// checkpoint_sync_time (up to 16)
    pub const CHECKPOINT_SYNC_TIME: Desc = Desc::counter(
        "pg_stat_bgwriter_checkpoint_sync_time",
        "Time spent synchronizing files to disk in checkpoints (PostgreSQL 16 and older)",
    )
    .seconds();
    /// buffers_checkpoint (up to 16)
    pub const BUFFERS_CHECKPOINT: Desc = Desc::counter(
        "pg_stat_bgwriter_buffers_checkpoint",
        "Buffers written during checkpoints (PostgreSQL 16 and older)",
    );
    /// buffers_clean
    pub const BUFFERS_CLEAN: Desc = Desc::counter(
        "pg_stat_bgwriter_buffers_clean",
        "Buffers written by the background writer",
    );
    /// maxwritten_clean
    pub const MAXWRITTEN_CLEAN: Desc = Desc::counter(
        "pg_stat_bgwriter_maxwritten_clean",
        "Times the background writer stopped a cleaning scan for writing too many buffers",
    );
    /// buffers_backend (up to 16)
    pub const BUFFERS_BACKEND: Desc = Desc::counter(
        "pg_stat_bgwriter_buffers_backend",
        "Buffers written directly by backends (PostgreSQL 16 and older)",
    );
    /// buffers_backend_fsync (up to 16)
    pub const BUFFERS_BACKEND_FSYNC: Desc = Desc::counter(
        "pg_stat_bgwriter_buffers_backend_fsync",
        "Times a backend had to execute its own fsync call (PostgreSQL 16 and older)",
    );
    /// buffers_alloc
    pub const BUFFERS_ALLOC: Desc =
        Desc::counter("pg_stat_bgwriter_buffers_alloc", "Buffers allocated");
    /// num_timed (17+)
    pub const NUM_TIMED: Desc = Desc::counter(
        "pg_stat_checkpointer_num_timed",
        "Scheduled checkpoints (PostgreSQL 17+)",
    );
    /// num_requested (17+)
    pub const NUM_REQUESTED: Desc = Desc::counter(
        "pg_stat_checkpointer_num_requested",
        "Requested checkpoints (PostgreSQL 17+)",
    );
    /// num_done (18+)
    pub const NUM_DONE: Desc = Desc::counter(
        "pg_stat_checkpointer_num_done",
        "Checkpoints that have been performed (PostgreSQL 18+)",
    );
    /// restartpoints_timed (17+)
    pub const RESTARTPOINTS_TIMED: Desc = Desc::counter(
        "pg_stat_checkpointer_restartpoints_timed",
        "Scheduled restartpoints (PostgreSQL 17+)",
    );
    /// restartpoints_req (17+)
    pub const RESTARTPOINTS_REQ: Desc = Desc::counter(
        "pg_stat_checkpointer_restartpoints_req",
        "Requested restartpoints (PostgreSQL 17+)",
    );
    /// restartpoints_done (17+)
    pub const RESTARTPOINTS_DONE: Desc = Desc::counter(
        "pg_stat_checkpointer_restartpoints_done",
        "Restartpoints that have been performed (PostgreSQL 17+)",
    );
    /// write_time (17+)
    pub const WRITE_TIME: Desc = Desc::counter(
        "pg_stat_checkpointer_write_time",
        "Time spent writing files to disk in checkpoints and restartpoints (PostgreSQL 17+)",
    )
    .seconds();
    /// sync_time (17+)
    pub const SYNC_TIME: Desc = Desc::counter(
        "pg_stat_checkpointer_sync_time",
        "Time spent synchronizing files to disk in checkpoints and restartpoints (PostgreSQL 17+)",
    )
    .seconds();
    /// buffers_written (17+)
    pub const BUFFERS_WRITTEN: Desc = Desc::counter(
        "pg_stat_checkpointer_buffers_written",
        "Buffers written during checkpoints and restartpoints (PostgreSQL 17+)",
    );
    /// slru_written (18+)
    pub const SLRU_WRITTEN: Desc = Desc::counter(
        "pg_stat_checkpointer_slru_written",
        "SLRU buffers written during checkpoints and restartpoints (PostgreSQL 18+)",
    );
}

/// pg_stat_bgwriter: all checkpoint columns up to 16, the background writer's own from 17.
pub fn bgwriter(version: u32) -> Query {
    use bgwriter::*;
    let columns = if version >= 170000 {
        vec![
            col("buffers_clean", BUFFERS_CLEAN),
            col("maxwritten_clean", MAXWRITTEN_CLEAN),
            col("buffers_alloc", BUFFERS_ALLOC),
        ]
    } else {
        vec![
            col("checkpoints_timed", CHECKPOINTS_TIMED),
            col("checkpoints_req", CHECKPOINTS_REQ),
            ms("checkpoint_write_time", CHECKPOINT_WRITE_TIME),
            ms("checkpoint_sync_time", CHECKPOINT_SYNC_TIME),
            col("buffers_checkpoint", BUFFERS_CHECKPOINT),
            col("buffers_clean", BUFFERS_CLEAN),
            col("maxwritten_clean", MAXWRITTEN_CLEAN),
            col("buffers_backend", BUFFERS_BACKEND),
            col("buffers_backend_fsync", BUFFERS_BACKEND_FSYNC),
            col("buffers_alloc", BUFFERS_ALLOC),
        ]
    };
    let names: Vec<&str> = columns.iter().map(|c| c.name).collect();
    Query {
        area: Area::Bgwriter,
        sql: format!("select {} from pg_stat_bgwriter", select(&names)),
        labels: &[],
        columns,
    }
}

/// pg_stat_checkpointer, PostgreSQL 17 and later; `None` before.
pub fn checkpointer(version: u32) -> Option<Query> {
    use bgwriter::*;
    if version < 170000 {
        return None;
    }
    let mut columns = vec![
        col("num_timed", NUM_TIMED),
        col("num_requested", NUM_REQUESTED),
        col("restartpoints_timed", RESTARTPOINTS_TIMED),
        col("restartpoints_req", RESTARTPOINTS_REQ),
        col("restartpoints_done", RESTARTPOINTS_DONE),
        ms("write_time", WRITE_TIME),
        ms("sync_time", SYNC_TIME),
        col("buffers_written", BUFFERS_WRITTEN),
    ];
    if version >= 180000 {
        columns.push(col("num_done", NUM_DONE));
        columns.push(col("slru_written", SLRU_WRITTEN));
    }
    let names: Vec<&str> = columns.iter().map(|c| c.name).collect();
    Some(Query {
        area: Area::Checkpointer,
        sql: format!("select {} from pg_stat_checkpointer", select(&names)),
        labels: &[],
        columns,
    })
}

// ---------------------------------------------------------------- wal, archiver

/// Families of pg_stat_wal, pg_ls_waldir and pg_stat_archiver.
pub mod wal {
    use super::*;
    /// wal_records
    pub const RECORDS: Desc = Desc::counter("pg_stat_wal_records", "WAL records generated");
    /// wal_fpi
    pub const FPI: Desc = Desc::counter("pg_stat_wal_fpi", "WAL full page images generated");
    /// wal_bytes
    pub const BYTES: Desc = Desc::counter("pg_stat_wal", "WAL generated").bytes();
    /// wal_buffers_full
    pub const BUFFERS_FULL: Desc = Desc::counter(
        "pg_stat_wal_buffers_full",
        "Times WAL data was written to disk because WAL buffers became full",
    );
    /// wal_write (14-17)
    pub const WRITE: Desc = Desc::counter(
        "pg_stat_wal_write",
        "Times WAL buffers were written out to disk (PostgreSQL 14-17)",
    );
    /// wal_sync (14-17)
    pub const SYNC: Desc = Desc::counter(
        "pg_stat_wal_sync",
        "Times WAL files were synced to disk (PostgreSQL 14-17)",
    );
    /// wal_write_time (14-17)
    pub const WRITE_TIME: Desc = Desc::counter(
        "pg_stat_wal_write_time",
        "Time spent writing WAL buffers to disk (PostgreSQL 14-17, needs track_wal_io_timing)",
    )
    .seconds();
    /// wal_sync_time (14-17)
    pub const SYNC_TIME: Desc = Desc::counter(
        "pg_stat_wal_sync_time",
        "Time spent syncing WAL files to disk (PostgreSQL 14-17, needs track_wal_io_timing)",
    )
    .seconds();
    /// WAL segments in pg_wal.
    pub const SEGMENTS: Desc = Desc::gauge("pg_wal_segments", "WAL segment files in pg_wal");
    /// Size of pg_wal.
    pub const SIZE: Desc =
        Desc::gauge("pg_wal_size", "Size of the WAL segment files in pg_wal").bytes();
    /// archived_count
    pub const ARCHIVED: Desc = Desc::counter(
        "pg_stat_archiver_archived",
        "WAL files successfully archived",
    );
    /// failed_count
    pub const ARCHIVE_FAILED: Desc = Desc::counter(
        "pg_stat_archiver_failed",
        "Failed attempts to archive WAL files",
    );
    /// now() - last_archived_time
    pub const LAST_ARCHIVE_AGE: Desc = Desc::gauge(
        "pg_stat_archiver_last_archive_age",
        "Time since the last WAL file was archived",
    )
    .seconds();
}

/// pg_stat_wal, PostgreSQL 14 and later; `None` before. PostgreSQL 18 moved the write and
/// sync columns to pg_stat_io.
pub fn wal(version: u32) -> Option<Query> {
    use wal::*;
    if version < 140000 {
        return None;
    }
    let mut columns = vec![
        col("wal_records", RECORDS),
        col("wal_fpi", FPI),
        col("wal_bytes", BYTES),
        col("wal_buffers_full", BUFFERS_FULL),
    ];
    if version < 180000 {
        columns.extend([
            col("wal_write", WRITE),
            col("wal_sync", SYNC),
            ms("wal_write_time", WRITE_TIME),
            ms("wal_sync_time", SYNC_TIME),
        ]);
    }
    let names: Vec<&str> = columns.iter().map(|c| c.name).collect();
    Some(Query {
        area: Area::Wal,
        sql: format!("select {} from pg_stat_wal", select(&names)),
        labels: &[],
        columns,
    })
}

/// Size of pg_wal (superuser or pg_monitor).
pub fn wal_dir(_version: u32) -> Query {
    Query {
        area: Area::WalDir,
        sql: "select count(*) as segments, coalesce(sum(size), 0) as size from pg_ls_waldir() \
              where name ~ '^[0-9A-F]{24}$'"
            .into(),
        labels: &[],
        columns: vec![col("segments", wal::SEGMENTS), col("size", wal::SIZE)],
    }
}

/// pg_stat_archiver.
pub fn archiver(_version: u32) -> Query {
    use wal::*;
    Query {
        area: Area::Archiver,
        sql: "select archived_count, failed_count, \
              extract(epoch from now() - last_archived_time) as last_archive_age from pg_stat_archiver"
            .into(),
        labels: &[],
        columns: vec![
            col("archived_count", ARCHIVED),
            col("failed_count", ARCHIVE_FAILED),
            col("last_archive_age", LAST_ARCHIVE_AGE),
        ],
    }
}

// ---------------------------------------------------------------- tables, indexes, sequences

/// Families of pg_stat_user_tables, pg_stat_user_indexes and pg_sequences.
pub mod tables {
    use super::*;
    /// seq_scan
    pub const SEQ_SCAN: Desc = Desc::counter(
        "pg_stat_user_tables_seq_scan",
        "Sequential scans initiated on this table",
    );
    /// seq_tup_read
    pub const SEQ_TUP_READ: Desc = Desc::counter(
        "pg_stat_user_tables_seq_tup_read",
        "Live rows fetched by sequential scans",
    );
    /// idx_scan
    pub const IDX_SCAN: Desc = Desc::counter(
        "pg_stat_user_tables_idx_scan",
        "Index scans initiated on this table",
    );
    /// idx_tup_fetch
    pub const IDX_TUP_FETCH: Desc = Desc::counter(
        "pg_stat_user_tables_idx_tup_fetch",
        "Live rows fetched by index scans",
    );
    /// n_tup_ins
    pub const N_TUP_INS: Desc = Desc::counter("pg_stat_user_tables_n_tup_ins", "Rows inserted");
    /// n_tup_upd
    pub const N_TUP_UPD: Desc = Desc::counter("pg_stat_user_tables_n_tup_upd", "Rows updated");
    /// n_tup_del
    pub const N_TUP_DEL: Desc = Desc::counter("pg_stat_user_tables_n_tup_del", "Rows deleted");
    /// n_tup_hot_upd
    pub const N_TUP_HOT_UPD: Desc = Desc::counter(
        "pg_stat_user_tables_n_tup_hot_upd",
        "Rows HOT updated (no separate index update)",
    );
    /// n_live_tup
    pub const N_LIVE_TUP: Desc = Desc::gauge(
        "pg_stat_user_tables_n_live_tup",
        "Estimated number of live rows",
    );
    /// n_dead_tup
    pub const N_DEAD_TUP: Desc = Desc::gauge(
        "pg_stat_user_tables_n_dead_tup",
        "Estimated number of dead rows",
    );
    /// n_mod_since_analyze
    pub const N_MOD_SINCE_ANALYZE: Desc = Desc::gauge(
        "pg_stat_user_tables_n_mod_since_analyze",
        "Estimated number of rows changed since this table was last analyzed",
    );
    /// last_vacuum
    pub const LAST_VACUUM: Desc = Desc::gauge(
        "pg_stat_user_tables_last_vacuum",
        "Last time this table was manually vacuumed, since the Unix epoch",
    )
    .seconds();
    /// last_autovacuum
    pub const LAST_AUTOVACUUM: Desc = Desc::gauge(
        "pg_stat_user_tables_last_autovacuum",
        "Last time this table was vacuumed by autovacuum, since the Unix epoch",
    )
    .seconds();
    /// last_analyze
    pub const LAST_ANALYZE: Desc = Desc::gauge(
        "pg_stat_user_tables_last_analyze",
        "Last time this table was manually analyzed, since the Unix epoch",
    )
    .seconds();
    /// last_autoanalyze
    pub const LAST_AUTOANALYZE: Desc = Desc::gauge(
        "pg_stat_user_tables_last_autoanalyze",
        "Last time this table was analyzed by autovacuum, since the Unix epoch",
    )
    .seconds();
    /// vacuum_count
    pub const VACUUM_COUNT: Desc = Desc::counter(
        "pg_stat_user_tables_vacuum_count",
        "Times this table has been manually vacuumed",
    );
    /// autovacuum_count
    pub const AUTOVACUUM_COUNT: Desc = Desc::counter(
        "pg_stat_user_tables_autovacuum_count",
        "Times this table has been vacuumed by autovacuum",
    );
    /// analyze_count
    pub const ANALYZE_COUNT: Desc = Desc::counter(
        "pg_stat_user_tables_analyze_count",
        "Times this table has been manually analyzed",
    );
    /// autoanalyze_count
    pub const AUTOANALYZE_COUNT: Desc = Desc::counter(
        "pg_stat_user_tables_autoanalyze_count",
        "Times this table has been analyzed by autovacuum",
    );
    /// pg_total_relation_size
    pub const TOTAL_SIZE: Desc = Desc::gauge(
        "pg_stat_user_tables_total_size",
        "Disk space used by the table with its indexes and TOAST data",
    )
    .bytes();
    /// n_ins_since_vacuum (13+)
    pub const N_INS_SINCE_VACUUM: Desc = Desc::gauge(
        "pg_stat_user_tables_n_ins_since_vacuum",
        "Estimated number of rows inserted since this table was last vacuumed (PostgreSQL 13+)",
    );
    /// idx_scan of an index
    pub const INDEX_SCAN: Desc = Desc::counter(
        "pg_stat_user_indexes_idx_scan",
        "Index scans initiated on this index",
    );
    /// idx_tup_read of an index
    pub const INDEX_TUP_READ: Desc = Desc::counter(
        "pg_stat_user_indexes_idx_tup_read",
        "Index entries returned by scans on this index",
    );
    /// idx_tup_fetch of an index
    pub const INDEX_TUP_FETCH: Desc = Desc::counter(
        "pg_stat_user_indexes_idx_tup_fetch",
        "Live table rows fetched by simple index scans using this index",
    );
    /// pg_relation_size of an index
    pub const INDEX_SIZE: Desc =
        Desc::gauge("pg_stat_user_indexes_size", "Disk space used by the index").bytes();
    /// Invalid indexes of a database.
    pub const INDEX_INVALID: Desc = Desc::gauge(
        "pg_index_invalid",
        "Invalid user indexes in this database (left by a failed CREATE INDEX CONCURRENTLY or REINDEX CONCURRENTLY, or one still being built)",
    );
    /// Their size.
    pub const INDEX_INVALID_SIZE: Desc = Desc::gauge(
        "pg_index_invalid_size",
        "Disk space used by the invalid user indexes of this database",
    )
    .bytes();
    /// Unused indexes of a database.
    pub const INDEX_UNUSED: Desc = Desc::gauge(
        "pg_index_unused",
        "Valid user indexes of this database never scanned since the statistics were reset, other than those enforcing a unique, primary key or exclusion constraint",
    );
    /// Their size.
    pub const INDEX_UNUSED_SIZE: Desc = Desc::gauge(
        "pg_index_unused_size",
        "Disk space used by the unused user indexes of this database",
    )
    .bytes();
    /// Sequence position.
    pub const SEQ_LAST_VALUE: Desc = Desc::gauge(
        "pg_sequence_last_value",
        "Last value returned by the sequence",
    );
    /// Sequence exhaustion.
    pub const SEQ_USED: Desc = Desc::gauge(
        "pg_sequence_used",
        "Share of the sequence's range already used (1 means exhausted)",
    )
    .ratio();
}

/// The user relations of pg_stat_user_tables and pg_stat_user_indexes: what their views
/// select, without the views (see [`tables`]).
const USER_SCHEMA: &str = "n.nspname not in ('pg_catalog', 'information_schema') \
     and n.nspname !~ '^pg_toast'";

/// The `top_n` largest user tables of the connected database (by pages).
///
/// The columns of pg_stat_user_tables, read with the `pg_stat_get_*` functions its view
/// calls, from pg_class: planning the view (a grouped join with pg_index) costs more than
/// running it, and the fan-out runs this on every database; the index sums are taken for
/// the `top_n` rows only.
pub fn tables(version: u32, top_n: u32) -> Query {
    use tables::*;
    let f = |name: &str| format!("pg_stat_get_{name}(c.oid)");
    let index_sum = |name: &str| {
        format!(
            "(select sum(pg_stat_get_{name}(i.indexrelid)) from pg_index i where i.indrelid = c.oid)::bigint"
        )
    };
    let mut columns = vec![
        (col("seq_scan", SEQ_SCAN), f("numscans")),
        (col("seq_tup_read", SEQ_TUP_READ), f("tuples_returned")),
        (col("idx_scan", IDX_SCAN), index_sum("numscans")),
        (
            col("idx_tup_fetch", IDX_TUP_FETCH),
            format!(
                "({} + {})",
                index_sum("tuples_fetched"),
                f("tuples_fetched")
            ),
        ),
        (col("n_tup_ins", N_TUP_INS), f("tuples_inserted")),
        (col("n_tup_upd", N_TUP_UPD), f("tuples_updated")),
        (col("n_tup_del", N_TUP_DEL), f("tuples_deleted")),
        (col("n_tup_hot_upd", N_TUP_HOT_UPD), f("tuples_hot_updated")),
        (col("n_live_tup", N_LIVE_TUP), f("live_tuples")),
        (col("n_dead_tup", N_DEAD_TUP), f("dead_tuples")),
        (
            col("n_mod_since_analyze", N_MOD_SINCE_ANALYZE),
            f("mod_since_analyze"),
        ),
        (col("vacuum_count", VACUUM_COUNT), f("vacuum_count")),
        (
            col("autovacuum_count", AUTOVACUUM_COUNT),
            f("autovacuum_count"),
        ),
        (col("analyze_count", ANALYZE_COUNT), f("analyze_count")),
        (
            col("autoanalyze_count", AUTOANALYZE_COUNT),
            f("autoanalyze_count"),
        ),
    ];
    if version >= 130000 {
        columns.push((
            col("n_ins_since_vacuum", N_INS_SINCE_VACUUM),
            f("ins_since_vacuum"),
        ));
    }
    for (c, desc) in [
        ("last_vacuum", LAST_VACUUM),
        ("last_autovacuum", LAST_AUTOVACUUM),
        ("last_analyze", LAST_ANALYZE),
        ("last_autoanalyze", LAST_AUTOANALYZE),
    ] {
        let time = f(&format!("{c}_time"));
        columns.push((col(c, desc), format!("extract(epoch from {time})")));
    }
    columns.push((
        col("total_size", TOTAL_SIZE),
        "pg_total_relation_size(c.oid)".into(),
    ));
    let select: Vec<String> = columns
        .iter()
        .map(|(c, expr)| format!("{expr} as {}", c.name))
        .collect();
    Query {
        area: Area::Tables,
        sql: format!(
            "select n.nspname as schemaname, c.relname, {} from pg_class c \
             join pg_namespace n on n.oid = c.relnamespace \
             where c.relkind in ('r', 't', 'm', 'p') and {USER_SCHEMA} \
             order by c.relpages desc, c.oid limit {top_n}",
            select.join(", ")
        ),
        labels: &["schemaname", "relname"],
        columns: columns.into_iter().map(|(c, _)| c).collect(),
    }
}

/// The `top_n` largest user indexes of the connected database: pg_stat_user_indexes'
/// columns, read as its view does (see [`tables`]).
pub fn indexes(_version: u32, top_n: u32) -> Query {
    use tables::*;
    Query {
        area: Area::Indexes,
        sql: format!(
            "select n.nspname as schemaname, t.relname, c.relname as indexrelname, \
             pg_stat_get_numscans(c.oid) as idx_scan, pg_stat_get_tuples_returned(c.oid) as idx_tup_read, \
             pg_stat_get_tuples_fetched(c.oid) as idx_tup_fetch, pg_relation_size(c.oid) as size \
             from pg_index x join pg_class c on c.oid = x.indexrelid \
             join pg_class t on t.oid = x.indrelid join pg_namespace n on n.oid = t.relnamespace \
             where t.relkind in ('r', 't', 'm') and {USER_SCHEMA} \
             order by c.relpages desc, c.oid limit {top_n}"
        ),
        labels: &["schemaname", "relname", "indexrelname"],
        columns: vec![
            col("idx_scan", INDEX_SCAN),
            col("idx_tup_read", INDEX_TUP_READ),
            col("idx_tup_fetch", INDEX_TUP_FETCH),
            col("size", INDEX_SIZE),
        ],
    }
}

/// Counts and sizes of the invalid and the unused user indexes of the connected database,
/// one row. Unused: valid, `idx_scan` 0, and not enforcing a constraint (unique, primary
/// key, exclusion), since those are needed whether or not they are scanned.
pub fn index_health(_version: u32) -> Query {
    use tables::*;
    let invalid = "not x.indisvalid";
    let unused = "x.indisvalid and pg_stat_get_numscans(c.oid) = 0 and not x.indisunique \
                  and not x.indisprimary and not x.indisexclusion";
    Query {
        area: Area::IndexHealth,
        sql: format!(
            "select count(*) filter (where {invalid}) as invalid, \
             coalesce(sum(pg_relation_size(c.oid)) filter (where {invalid}), 0) as invalid_size, \
             count(*) filter (where {unused}) as unused, \
             coalesce(sum(pg_relation_size(c.oid)) filter (where {unused}), 0) as unused_size \
             from pg_index x join pg_class c on c.oid = x.indexrelid \
             join pg_class t on t.oid = x.indrelid join pg_namespace n on n.oid = t.relnamespace \
             where t.relkind in ('r', 't', 'm') and {USER_SCHEMA}"
        ),
        labels: &[],
        columns: vec![
            col("invalid", INDEX_INVALID),
            col("invalid_size", INDEX_INVALID_SIZE),
            col("unused", INDEX_UNUSED),
            col("unused_size", INDEX_UNUSED_SIZE),
        ],
    }
}

/// The `top_n` most used sequences of the connected database.
pub fn sequences(_version: u32, top_n: u32) -> Query {
    use tables::*;
    Query {
        area: Area::Sequences,
        sql: format!(
            "select schemaname, sequencename, last_value, used from (\
               select schemaname, sequencename, last_value, \
               case when increment_by > 0 \
                 then (last_value::float8 - min_value::float8) / nullif(max_value::float8 - min_value::float8, 0) \
                 else (max_value::float8 - last_value::float8) / nullif(max_value::float8 - min_value::float8, 0) end as used \
               from pg_sequences where last_value is not null) s \
             order by used desc nulls last, 1, 2 limit {top_n}"
        ),
        labels: &["schemaname", "sequencename"],
        columns: vec![col("last_value", SEQ_LAST_VALUE), col("used", SEQ_USED)],
    }
}

// ---------------------------------------------------------------- statements

/// Families of pg_stat_statements.
pub mod statements {
    use super::*;
    /// calls
    pub const CALLS: Desc = Desc::counter(
        "pg_stat_statements_calls",
        "Times the statement was executed",
    );
    /// total_exec_time
    pub const SECONDS: Desc =
        Desc::counter("pg_stat_statements", "Time spent executing the statement").seconds();
    /// rows
    pub const ROWS: Desc = Desc::counter(
        "pg_stat_statements_rows",
        "Rows retrieved or affected by the statement",
    );
    /// shared_blks_hit
    pub const BLKS_HIT: Desc = Desc::counter(
        "pg_stat_statements_shared_blks_hit",
        "Shared block cache hits by the statement",
    );
    /// shared_blks_read
    pub const BLKS_READ: Desc = Desc::counter(
        "pg_stat_statements_shared_blks_read",
        "Shared blocks read by the statement",
    );
    /// blk_read_time / shared_blk_read_time
    pub const READ_TIME: Desc = Desc::counter(
        "pg_stat_statements_block_read",
        "Time the statement spent reading blocks (needs track_io_timing)",
    )
    .seconds();
    /// blk_write_time / shared_blk_write_time
    pub const WRITE_TIME: Desc = Desc::counter(
        "pg_stat_statements_block_write",
        "Time the statement spent writing blocks (needs track_io_timing)",
    )
    .seconds();
}

/// The `top_n` statements by total execution time, summed over `toplevel`. Column names of
/// the extension changed in PostgreSQL 13 (`total_exec_time`) and 17 (`shared_blk_*_time`).
pub fn statements(version: u32, top_n: u32) -> Query {
    use statements::*;
    let total = if version >= 130000 {
        "total_exec_time"
    } else {
        "total_time"
    };
    let (read, write) = if version >= 170000 {
        ("shared_blk_read_time", "shared_blk_write_time")
    } else {
        ("blk_read_time", "blk_write_time")
    };
    Query {
        area: Area::Statements,
        sql: format!(
            "select d.datname, r.rolname as user, s.queryid::text as queryid, sum(s.calls) as calls, \
             sum(s.{total}) as total_time, sum(s.rows) as rows, sum(s.shared_blks_hit) as blks_hit, \
             sum(s.shared_blks_read) as blks_read, sum(s.{read}) as read_time, \
             sum(s.{write}) as write_time \
             from pg_stat_statements s join pg_database d on d.oid = s.dbid \
             join pg_roles r on r.oid = s.userid where s.queryid is not null \
             group by 1, 2, 3 order by sum(s.{total}) desc, 3 limit {top_n}"
        ),
        labels: &["datname", "user", "queryid"],
        columns: vec![
            col("calls", CALLS),
            ms("total_time", SECONDS),
            col("rows", ROWS),
            col("blks_hit", BLKS_HIT),
            col("blks_read", BLKS_READ),
            ms("read_time", READ_TIME),
            ms("write_time", WRITE_TIME),
        ],
    }
}

/// Every query the server-level part of a scrape runs on `version` (tables, indexes,
/// sequences run per database; statements only when enabled).
pub fn server_queries(version: u32, statements_top_n: Option<u32>) -> Vec<Query> {
    let mut q = vec![
        server(version),
        database(version),
        activity(version),
        locks(version),
        waits(version),
        xmin_horizon(version),
        replication(version),
        replication_slots(version),
        bgwriter(version),
        wal_dir(version),
        archiver(version),
    ];
    q.extend(replication_slot_wal_status(version));
    q.extend(checkpointer(version));
    q.extend(wal(version));
    if let Some(n) = statements_top_n {
        q.push(statements(version, n));
    }
    q
}

/// Per-database queries of the fan-out, as parts of [`per_database`]'s one statement.
pub fn database_queries(version: u32, top_n: u32) -> Vec<Query> {
    vec![
        tables(version, top_n),
        indexes(version, top_n),
        sequences(version, top_n),
        index_health(version),
    ]
}

/// The fan-out's statement for one database: the parts of [`database_queries`] as one
/// `UNION ALL`, each row tagged with its part in the column `part`, so that a database
/// costs one statement and one round trip. Every label and value column is text (NULL
/// where a part has no such column), as the simple query protocol returns it anyway.
#[derive(Debug, Clone, PartialEq)]
pub struct PerDatabase {
    /// The SQL text.
    pub sql: String,
    /// The parts with their tag (the value of `part`), shared by the blocks of every
    /// database of a fan-out.
    pub parts: Vec<(&'static str, std::sync::Arc<Query>)>,
}

/// Name of the column that tags each row of [`PerDatabase`] with its part.
pub const PART_COLUMN: &str = "part";

/// Builds the fan-out statement for `version`, `top_n` rows per part.
pub fn per_database(version: u32, top_n: u32) -> PerDatabase {
    let parts: Vec<(&'static str, Query)> = ["tables", "indexes", "sequences", "index_health"]
        .into_iter()
        .zip(database_queries(version, top_n))
        .collect();
    let mut labels: Vec<&'static str> = Vec::new();
    let mut values: Vec<&'static str> = Vec::new();
    for (_, q) in &parts {
        for l in q.labels {
            if !labels.contains(l) {
                labels.push(l);
            }
        }
        for c in &q.columns {
            if !values.contains(&c.name) {
                values.push(c.name);
            }
        }
    }
    let branches: Vec<String> = parts
        .iter()
        .map(|(tag, q)| {
            let mut cols = vec![format!("'{tag}'::text as {PART_COLUMN}")];
            for l in &labels {
                cols.push(if q.labels.contains(l) {
                    format!("p.{l}::text as {l}")
                } else {
                    format!("null::text as {l}")
                });
            }
            for v in &values {
                cols.push(if q.columns.iter().any(|c| c.name == *v) {
                    format!("p.{v}::text as {v}")
                } else {
                    format!("null::text as {v}")
                });
            }
            format!("select {} from ({}) p", cols.join(", "), q.sql)
        })
        .collect();
    PerDatabase {
        sql: branches.join(" union all "),
        parts: parts
            .into_iter()
            .map(|(tag, q)| (tag, std::sync::Arc::new(q)))
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const VERSIONS: [u32; 7] = [120017, 130013, 140010, 150004, 160002, 170001, 180000];

    fn areas(v: u32) -> Vec<Area> {
        server_queries(v, Some(10)).iter().map(|q| q.area).collect()
    }

    fn has(q: &Query, column: &str) -> bool {
        q.columns.iter().any(|c| c.name == column) && q.sql.contains(column)
    }

    #[test]
    fn checkpointer_split_at_17() {
        for v in VERSIONS {
            let bg = bgwriter(v);
            let cp = checkpointer(v);
            if v >= 170000 {
                assert!(!bg.sql.contains("checkpoints_timed"), "{v}: {}", bg.sql);
                assert!(!bg.sql.contains("buffers_backend"), "{v}");
                assert!(has(&bg, "buffers_clean"));
                let cp = cp.expect("pg_stat_checkpointer on 17+");
                assert!(cp.sql.contains("from pg_stat_checkpointer"));
                assert!(has(&cp, "num_timed") && has(&cp, "write_time"));
                assert_eq!(has(&cp, "num_done"), v >= 180000, "{v}");
                assert!(areas(v).contains(&Area::Checkpointer));
            } else {
                assert!(has(&bg, "checkpoints_timed") && has(&bg, "buffers_backend"));
                assert!(cp.is_none(), "{v}");
                assert!(!areas(v).contains(&Area::Checkpointer));
            }
        }
    }

    #[test]
    fn wal_view_from_14_and_io_columns_until_17() {
        for v in VERSIONS {
            match wal(v) {
                None => assert!(v < 140000),
                Some(q) => {
                    assert!(v >= 140000);
                    assert!(has(&q, "wal_bytes"));
                    assert_eq!(has(&q, "wal_write_time"), v < 180000, "{v}");
                    assert_eq!(has(&q, "wal_sync"), v < 180000, "{v}");
                }
            }
        }
    }

    #[test]
    fn stat_database_columns_by_version() {
        for v in VERSIONS {
            let q = database(v);
            assert!(has(&q, "xact_commit") && has(&q, "checksum_failures"));
            assert_eq!(has(&q, "session_time"), v >= 140000, "{v}");
            assert_eq!(has(&q, "sessions_killed"), v >= 140000, "{v}");
            assert_eq!(has(&q, "parallel_workers_launched"), v >= 180000, "{v}");
            assert!(q.sql.contains("allow_conn") && q.sql.contains("is_template"));
            assert!(has(&q, "stats_reset"), "{v}");
            assert!(
                q.sql
                    .contains("coalesce(extract(epoch from s.stats_reset), 0) end as stats_reset"),
                "NULL (never reset) is 0: {}",
                q.sql
            );
        }
    }

    #[test]
    fn statements_column_renames() {
        let q12 = statements(120017, 5);
        assert!(q12.sql.contains("sum(s.total_time)") && q12.sql.contains("s.blk_read_time"));
        for v in [130013, 140010, 150004, 160002] {
            let q = statements(v, 5);
            assert!(q.sql.contains("sum(s.total_exec_time)"), "{v}");
            assert!(q.sql.contains("sum(s.blk_read_time)"), "{v}");
        }
        for v in [170001, 180000] {
            let q = statements(v, 5);
            assert!(q.sql.contains("sum(s.shared_blk_read_time)"), "{v}");
            assert!(!q.sql.contains("s.blk_read_time"), "{v}");
        }
        assert!(statements(150004, 7).sql.ends_with("limit 7"));
        assert!(!areas(150004).is_empty());
        assert!(
            !server_queries(150004, None)
                .iter()
                .any(|q| q.area == Area::Statements)
        );
    }

    #[test]
    fn slots_and_tables_by_version() {
        assert!(!replication_slots(120017).sql.contains("safe_wal_size"));
        assert!(has(&replication_slots(130013), "safe_wal_size"));
        assert!(replication_slot_wal_status(120017).is_none());
        let status = replication_slot_wal_status(130013).expect("13 has wal_status");
        for s in WAL_STATUSES {
            assert!(status.sql.contains(&format!("('{s}')")), "{}", status.sql);
        }
        assert!(!tables(120017, 5).sql.contains("n_ins_since_vacuum"));
        assert!(has(&tables(130013, 5), "n_ins_since_vacuum"));
        for v in VERSIONS {
            assert_eq!(database_queries(v, 3).len(), 4);
            for q in server_queries(v, Some(3)) {
                assert!(q.sql.starts_with("select "), "{:?}", q.area);
                for c in &q.columns {
                    assert!(q.sql.contains(c.name), "{v} {:?} lacks {}", q.area, c.name);
                }
            }
        }
    }

    #[test]
    fn lock_waits_start_at_waitstart_from_14() {
        for v in VERSIONS {
            let q = waits(v);
            assert!(has(&q, "max_wait"), "{v}");
            assert_eq!(q.labels, ["datname"]);
            assert!(q.sql.contains("wait_event_type = 'Lock'"), "{v}");
            assert_eq!(q.sql.contains("waitstart"), v >= 140000, "{v}: {}", q.sql);
            assert_eq!(q.sql.contains("pg_locks"), v >= 140000, "{v}");
            assert!(q.sql.contains("state_change"), "{v}");
            assert!(areas(v).contains(&Area::Waits), "{v}");
        }
    }

    #[test]
    fn xmin_horizon_has_one_row_per_holder_on_every_version() {
        for v in VERSIONS {
            let q = xmin_horizon(v);
            assert_eq!(q.labels, ["holder"]);
            assert!(has(&q, "age"));
            for h in XMIN_HOLDERS {
                assert!(q.sql.contains(&format!("('{h}')")), "{v}: {}", q.sql);
            }
            for source in [
                "age(backend_xmin)",
                "age(backend_xid)",
                "age(catalog_xmin)",
                "from pg_replication_slots",
                "age(transaction)",
                "from pg_prepared_xacts",
            ] {
                assert!(q.sql.contains(source), "{v} lacks {source}: {}", q.sql);
            }
            assert!(areas(v).contains(&Area::XminHorizon), "{v}");
        }
    }

    #[test]
    fn index_health_and_pending_restart_on_every_version() {
        for v in VERSIONS {
            let q = index_health(v);
            assert!(q.labels.is_empty(), "one row per database");
            for c in ["invalid", "invalid_size", "unused", "unused_size"] {
                assert!(has(&q, c), "{v} {c}");
            }
            for cond in [
                "not x.indisvalid",
                "pg_stat_get_numscans(c.oid) = 0",
                "not x.indisunique",
                "not x.indisprimary",
            ] {
                assert!(q.sql.contains(cond), "{v} {cond}");
            }
            assert!(
                !q.sql.contains("limit"),
                "counts every index, not the top N"
            );
            let s = server(v);
            assert!(has(&s, "pending_restart"), "{v}");
            assert!(s.sql.contains("where pending_restart"), "{v}");
        }
    }

    struct Row(Vec<(&'static str, Option<&'static str>)>);
    impl TextRow for Row {
        fn position(&self, column: &str) -> Option<usize> {
            self.0.iter().position(|(c, _)| *c == column)
        }
        fn at(&self, index: usize) -> Option<&str> {
            self.0.get(index).and_then(|(_, v)| *v)
        }
    }

    #[test]
    fn rows_become_a_block() {
        use super::super::metrics::Block;
        let q = std::sync::Arc::new(database(150004));
        let rows = vec![Row(vec![
            ("datname", Some("app")),
            ("numbackends", Some("3")),
            ("xact_commit", Some("10")),
            ("blk_read_time", Some("1500")),
            ("xid_age", None),
        ])];
        let b = Block::from_rows(q, vec![("x".into(), "y".into())], &rows);
        assert_eq!(b.rows(), 1);
        assert!(b.series(&database::XID_AGE).is_empty(), "NULL is skipped");
        assert!(
            b.series(&database::MXID_AGE).is_empty(),
            "missing is skipped"
        );
        let read = b.series(&database::BLK_READ_TIME);
        assert_eq!(read.len(), 1);
        assert!(
            (read[0].1 - 1.5).abs() < 1e-9,
            "milliseconds become seconds"
        );
        assert_eq!(
            read[0].0,
            vec![
                ("x".to_string(), "y".to_string()),
                ("datname".to_string(), "app".to_string())
            ]
        );
        assert_eq!(parse_number("t"), Some(1.0));
        assert_eq!(parse_number("f"), Some(0.0));
        assert_eq!(parse_number("12.5"), Some(12.5));
        assert_eq!(parse_number("x"), None);
    }

    #[test]
    fn one_statement_per_database() {
        for v in VERSIONS {
            let p = per_database(v, 7);
            let tags: Vec<&str> = p.parts.iter().map(|(t, _)| *t).collect();
            assert_eq!(tags, ["tables", "indexes", "sequences", "index_health"]);
            assert_eq!(p.sql.matches(" union all ").count(), 3, "{}", p.sql);
            assert_eq!(p.sql.matches("limit 7").count(), 3, "{}", p.sql);
            assert!(!p.sql.contains(';'), "one statement: {}", p.sql);
            // Every branch has every column, in the same order.
            let branches: Vec<&str> = p.sql.split(" union all ").collect();
            let heads: Vec<Vec<&str>> = branches
                .iter()
                .map(|b| {
                    let head = b.split(" from (").next().unwrap_or("");
                    head.split(", ")
                        .filter_map(|c| c.rsplit(" as ").next())
                        .collect()
                })
                .collect();
            assert!(heads.iter().all(|h| *h == heads[0]), "{heads:?}");
            for (tag, q) in &p.parts {
                assert!(p.sql.contains(&format!("'{tag}'::text as part")));
                for l in q.labels {
                    assert!(heads[0].contains(l), "{v} {tag} label {l}");
                }
                for c in &q.columns {
                    assert!(heads[0].contains(&c.name), "{v} {tag} column {}", c.name);
                }
            }
            assert_eq!(has(&p.parts[0].1, "n_ins_since_vacuum"), v >= 130000);
        }
    }
}
