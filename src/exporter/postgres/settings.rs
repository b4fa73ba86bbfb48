//! An allow-list of pg_settings, exposed as `pg_settings_<name>` in base units (bytes,
//! seconds) as postgres_exporter does, so a dashboard can compare usage with limits.

use super::metrics::{Desc, Samples};
use super::queries::{Area, Query, TextRow, parse_number};

macro_rules! settings {
    ($( $setting:literal => $desc:expr ),* $(,)?) => {
        /// The settings exported, with their families.
        pub const SETTINGS: &[(&str, Desc)] = &[ $( ($setting, $desc) ),* ];
    };
}

const fn g(name: &'static str, help: &'static str) -> Desc {
    Desc::gauge(name, help)
}

settings! {
    "max_connections" => g("pg_settings_max_connections", "Setting max_connections"),
    "superuser_reserved_connections" => g("pg_settings_superuser_reserved_connections", "Setting superuser_reserved_connections"),
    "shared_buffers" => g("pg_settings_shared_buffers", "Setting shared_buffers").bytes(),
    "effective_cache_size" => g("pg_settings_effective_cache_size", "Setting effective_cache_size").bytes(),
    "work_mem" => g("pg_settings_work_mem", "Setting work_mem").bytes(),
    "maintenance_work_mem" => g("pg_settings_maintenance_work_mem", "Setting maintenance_work_mem").bytes(),
    "temp_buffers" => g("pg_settings_temp_buffers", "Setting temp_buffers").bytes(),
    "wal_buffers" => g("pg_settings_wal_buffers", "Setting wal_buffers").bytes(),
    "max_wal_size" => g("pg_settings_max_wal_size", "Setting max_wal_size").bytes(),
    "min_wal_size" => g("pg_settings_min_wal_size", "Setting min_wal_size").bytes(),
    "wal_keep_size" => g("pg_settings_wal_keep_size", "Setting wal_keep_size").bytes(),
    "checkpoint_timeout" => g("pg_settings_checkpoint_timeout", "Setting checkpoint_timeout").seconds(),
    "checkpoint_completion_target" => g("pg_settings_checkpoint_completion_target", "Setting checkpoint_completion_target"),
    "archive_timeout" => g("pg_settings_archive_timeout", "Setting archive_timeout").seconds(),
    "max_worker_processes" => g("pg_settings_max_worker_processes", "Setting max_worker_processes"),
    "max_parallel_workers" => g("pg_settings_max_parallel_workers", "Setting max_parallel_workers"),
    "max_parallel_workers_per_gather" => g("pg_settings_max_parallel_workers_per_gather", "Setting max_parallel_workers_per_gather"),
    "max_wal_senders" => g("pg_settings_max_wal_senders", "Setting max_wal_senders"),
    "max_replication_slots" => g("pg_settings_max_replication_slots", "Setting max_replication_slots"),
    "max_locks_per_transaction" => g("pg_settings_max_locks_per_transaction", "Setting max_locks_per_transaction"),
    "max_prepared_transactions" => g("pg_settings_max_prepared_transactions", "Setting max_prepared_transactions"),
    "autovacuum" => g("pg_settings_autovacuum", "Setting autovacuum (1 on, 0 off)"),
    "autovacuum_max_workers" => g("pg_settings_autovacuum_max_workers", "Setting autovacuum_max_workers"),
    "autovacuum_naptime" => g("pg_settings_autovacuum_naptime", "Setting autovacuum_naptime").seconds(),
    "autovacuum_vacuum_scale_factor" => g("pg_settings_autovacuum_vacuum_scale_factor", "Setting autovacuum_vacuum_scale_factor"),
    "autovacuum_analyze_scale_factor" => g("pg_settings_autovacuum_analyze_scale_factor", "Setting autovacuum_analyze_scale_factor"),
    "autovacuum_freeze_max_age" => g("pg_settings_autovacuum_freeze_max_age", "Setting autovacuum_freeze_max_age"),
    "autovacuum_multixact_freeze_max_age" => g("pg_settings_autovacuum_multixact_freeze_max_age", "Setting autovacuum_multixact_freeze_max_age"),
    "random_page_cost" => g("pg_settings_random_page_cost", "Setting random_page_cost"),
    "fsync" => g("pg_settings_fsync", "Setting fsync (1 on, 0 off)"),
    "track_io_timing" => g("pg_settings_track_io_timing", "Setting track_io_timing (1 on, 0 off)"),
    "statement_timeout" => g("pg_settings_statement_timeout", "Setting statement_timeout (0 disabled)").seconds(),
    "idle_in_transaction_session_timeout" => g("pg_settings_idle_in_transaction_session_timeout", "Setting idle_in_transaction_session_timeout (0 disabled)").seconds(),
    "log_min_duration_statement" => g("pg_settings_log_min_duration_statement", "Setting log_min_duration_statement (negative: disabled)").seconds(),
}

/// The pg_settings query for the allow-list; its rows are turned into samples by
/// [`samples`], not by [`Query::samples`].
pub fn query(_version: u32) -> Query {
    let names: Vec<String> = SETTINGS.iter().map(|(n, _)| format!("'{n}'")).collect();
    Query {
        area: Area::Settings,
        sql: format!(
            "select name, setting, coalesce(unit, '') as unit, vartype from pg_settings \
             where name in ({}) order by name",
            names.join(", ")
        ),
        labels: &[],
        columns: vec![],
    }
}

/// Factor from a pg_settings unit to bytes or seconds; `None` for an unknown unit.
pub fn unit_factor(unit: &str) -> Option<f64> {
    let f = match unit {
        "" => 1.0,
        "B" => 1.0,
        "kB" => 1024.0,
        "MB" => 1024.0 * 1024.0,
        "GB" => 1024.0 * 1024.0 * 1024.0,
        "TB" => 1024.0 * 1024.0 * 1024.0 * 1024.0,
        "8kB" => 8192.0,
        "16kB" => 16384.0,
        "32kB" => 32768.0,
        "16MB" => 16.0 * 1024.0 * 1024.0,
        "us" => 1e-6,
        "ms" => 1e-3,
        "s" => 1.0,
        "min" => 60.0,
        "h" => 3600.0,
        "d" => 86400.0,
        _ => return None,
    };
    Some(f)
}

/// Turns pg_settings rows into samples in base units.
pub fn samples<R: TextRow>(rows: &[R]) -> Samples {
    let mut out = Samples::default();
    for row in rows {
        if let Some((desc, value)) = sample(row) {
            out.push(desc, vec![], value);
        }
    }
    out
}

/// One pg_settings row as a family and a value in base units; `None` for a setting off the
/// allow-list or a value that is not a number.
pub fn sample<R: TextRow>(row: &R) -> Option<(&'static Desc, f64)> {
    let name = row.cell("name").flatten()?;
    let (_, desc) = SETTINGS.iter().find(|(n, _)| *n == name)?;
    let setting = row.cell("setting").flatten().unwrap_or("");
    let unit = row.cell("unit").flatten().unwrap_or("");
    let (Some(v), Some(f)) = (parse_number(setting), unit_factor(unit)) else {
        return None;
    };
    // -1 means "disabled" for sizes and times; keep it as -1 rather than scaling it.
    Some((desc, if v < 0.0 { v } else { v * f }))
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Row([(&'static str, &'static str); 3]);
    impl TextRow for Row {
        fn position(&self, column: &str) -> Option<usize> {
            self.0.iter().position(|(c, _)| *c == column)
        }
        fn at(&self, index: usize) -> Option<&str> {
            self.0.get(index).map(|(_, v)| *v)
        }
    }

    #[test]
    fn units_become_base_units() {
        let rows = [
            Row([
                ("name", "shared_buffers"),
                ("setting", "2048"),
                ("unit", "8kB"),
            ]),
            Row([
                ("name", "checkpoint_timeout"),
                ("setting", "300"),
                ("unit", "s"),
            ]),
            Row([
                ("name", "statement_timeout"),
                ("setting", "1500"),
                ("unit", "ms"),
            ]),
            Row([("name", "fsync"), ("setting", "on"), ("unit", "")]),
            Row([
                ("name", "log_min_duration_statement"),
                ("setting", "-1"),
                ("unit", "ms"),
            ]),
            Row([("name", "not_allowed"), ("setting", "1"), ("unit", "")]),
        ];
        let s = samples(&rows);
        let get = |n: &str| {
            s.0.iter()
                .find(|x| x.desc.exposed_name() == n)
                .map(|x| x.value)
        };
        assert_eq!(
            get("pg_settings_shared_buffers_bytes"),
            Some(16.0 * 1024.0 * 1024.0)
        );
        assert_eq!(get("pg_settings_checkpoint_timeout_seconds"), Some(300.0));
        assert_eq!(get("pg_settings_statement_timeout_seconds"), Some(1.5));
        assert_eq!(get("pg_settings_fsync"), Some(1.0));
        assert_eq!(
            get("pg_settings_log_min_duration_statement_seconds"),
            Some(-1.0)
        );
        assert_eq!(s.0.len(), 5);
        assert!(query(150004).sql.contains("'max_connections'"));
    }
}
