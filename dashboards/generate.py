#!/usr/bin/env python3
"""Writes the Grafana dashboards of vitals (dashboards/*.json) from the definitions below.

The JSON files are what Grafana loads and what the tests read; this script only keeps them
consistent (panel ids, grid layout, the `${datasource}` variable on every query, links between
the dashboards). Edit a definition here and run `python3 dashboards/generate.py`, or edit the
JSON directly (or in Grafana, then export it): the tests check the JSON either way.

Conventions every dashboard follows:
- variable `datasource` (type datasource, Prometheus); every panel and query uses `${datasource}`;
- target / instance variables from label_values() of a vitals family, multi-value with "All";
- tag `vitals`, and a link dropdown to every dashboard with that tag (keeping time and variables);
- panels that show the sidecar's analysis series link to the event-snapshot dashboard for the
  time window around the point clicked.
"""

import json
import os

HERE = os.path.dirname(os.path.abspath(__file__))
DS = {"type": "prometheus", "uid": "${datasource}"}
SCHEMA_VERSION = 39
SNAPSHOT_UID = "vitals-event-snapshot"

# Data link from a series point to the event snapshot, one hour centred on the point.
SNAPSHOT_LINK = {
    "title": "Event snapshot around this point",
    "url": "/d/" + SNAPSHOT_UID + "/vitals-event-snapshot?time=${__value.time}&time.window=3600000"
    "&var-target=${__field.labels.target}&var-instance=${__field.labels.instance}&${datasource:queryparam}",
}


def ds_var():
    return {
        "name": "datasource",
        "label": "Data source",
        "type": "datasource",
        "query": "prometheus",
        "current": {},
        "hide": 0,
        "refresh": 1,
        "regex": "",
        "options": [],
    }


def query_var(name, query, label=None, multi=True, hide=0):
    v = {
        "name": name,
        "label": label or name,
        "type": "query",
        "datasource": DS,
        "definition": query,
        "query": {"query": query, "refId": "PrometheusVariableQueryEditor-VariableQuery"},
        "refresh": 2,
        "sort": 1,
        "hide": hide,
        "multi": multi,
        "includeAll": multi,
        "options": [],
        "regex": "",
    }
    if multi:
        v["allValue"] = ".*"
        v["current"] = {"selected": True, "text": ["All"], "value": ["$__all"]}
    else:
        v["current"] = {}
    return v


def target(expr, legend="", instant=False, fmt="time_series", ref="A"):
    t = {
        "datasource": DS,
        "expr": expr,
        "legendFormat": legend or "__auto",
        "refId": ref,
        "range": not instant,
        "instant": instant,
        "format": fmt,
        "editorMode": "code",
    }
    return t


def _targets(queries, instant=False, fmt="time_series"):
    out = []
    for i, q in enumerate(queries):
        expr, legend = (q, "") if isinstance(q, str) else q
        out.append(target(expr, legend, instant=instant, fmt=fmt, ref=chr(ord("A") + i)))
    return out


def timeseries(title, queries, unit="short", desc="", w=12, h=8, stack=False, links=None,
               min_=None, max_=None):
    p = {
        "type": "timeseries",
        "title": title,
        "description": desc,
        "datasource": DS,
        "targets": _targets(queries),
        "fieldConfig": {
            "defaults": {
                "unit": unit,
                "custom": {
                    "drawStyle": "line",
                    "lineWidth": 1,
                    "fillOpacity": 10 if not stack else 40,
                    "showPoints": "never",
                    "spanNulls": False,
                    "stacking": {"mode": "normal" if stack else "none", "group": "A"},
                },
                "links": links or [],
            },
            "overrides": [],
        },
        "options": {
            "legend": {"displayMode": "list", "placement": "bottom", "showLegend": True},
            "tooltip": {"mode": "multi", "sort": "desc"},
        },
        "_size": (w, h),
    }
    if min_ is not None:
        p["fieldConfig"]["defaults"]["min"] = min_
    if max_ is not None:
        p["fieldConfig"]["defaults"]["max"] = max_
    return p


def stat(title, queries, unit="short", desc="", w=4, h=4, thresholds=None, mappings=None,
         links=None):
    steps = thresholds or [{"color": "green", "value": None}]
    return {
        "type": "stat",
        "title": title,
        "description": desc,
        "datasource": DS,
        "targets": _targets(queries, instant=True),
        "fieldConfig": {
            "defaults": {
                "unit": unit,
                "thresholds": {"mode": "absolute", "steps": steps},
                "mappings": mappings or [],
                "links": links or [],
            },
            "overrides": [],
        },
        "options": {
            "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
            "colorMode": "background",
            "graphMode": "none",
            "textMode": "auto",
            "justifyMode": "auto",
            "orientation": "auto",
        },
        "_size": (w, h),
    }


def table(title, queries, unit="short", desc="", w=12, h=8, links=None, hide=(), rename=None,
          overrides=None):
    excluded = {"Time": True, "__name__": True}
    for name in hide:
        excluded[name] = True
    return {
        "type": "table",
        "title": title,
        "description": desc,
        "datasource": DS,
        "targets": _targets(queries, instant=True, fmt="table"),
        "fieldConfig": {
            "defaults": {"unit": unit, "links": links or [], "custom": {"filterable": True}},
            "overrides": overrides or [],
        },
        "options": {"showHeader": True, "cellHeight": "sm", "footer": {"show": False}},
        "transformations": [
            {"id": "merge", "options": {}},
            {"id": "organize", "options": {"excludeByName": excluded, "renameByName": rename or {}}},
        ],
        "_size": (w, h),
    }


def bargauge(title, queries, unit="short", desc="", w=12, h=8, max_=None, links=None,
             thresholds=None):
    p = {
        "type": "bargauge",
        "title": title,
        "description": desc,
        "datasource": DS,
        "targets": _targets(queries, instant=True),
        "fieldConfig": {
            "defaults": {
                "unit": unit,
                "min": 0,
                "thresholds": thresholds or {
                    "mode": "percentage",
                    "steps": [
                        {"color": "green", "value": None},
                        {"color": "orange", "value": 80},
                        {"color": "red", "value": 90},
                    ],
                },
                "links": links or [],
            },
            "overrides": [],
        },
        "options": {
            "displayMode": "gradient",
            "orientation": "horizontal",
            "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
            "showUnfilled": True,
        },
        "_size": (w, h),
    }
    if max_ is not None:
        p["fieldConfig"]["defaults"]["max"] = max_
    return p


def state_timeline(title, queries, desc="", w=24, h=8, mappings=None, links=None):
    return {
        "type": "state-timeline",
        "title": title,
        "description": desc,
        "datasource": DS,
        "targets": _targets(queries),
        "fieldConfig": {
            "defaults": {
                "mappings": mappings or [],
                "thresholds": {
                    "mode": "absolute",
                    "steps": [
                        {"color": "green", "value": None},
                        {"color": "orange", "value": 1},
                        {"color": "red", "value": 2},
                    ],
                },
                "links": links or [],
            },
            "overrides": [],
        },
        "options": {"showValue": "never", "mergeValues": True, "rowHeight": 0.9,
                    "legend": {"showLegend": True, "displayMode": "list", "placement": "bottom"}},
        "_size": (w, h),
    }


def row(title):
    return {"type": "row", "title": title, "collapsed": False, "panels": [], "_size": (24, 1)}


def text(title, content, w=24, h=3):
    return {"type": "text", "title": title, "options": {"mode": "markdown", "content": content},
            "_size": (w, h)}


def layout(panels):
    """Assigns ids and gridPos left to right, top to bottom."""
    x = y = row_h = 0
    out = []
    for i, p in enumerate(panels, start=1):
        w, h = p.pop("_size")
        if p["type"] == "row" or x + w > 24:
            y += row_h
            x, row_h = 0, 0
        p["id"] = i
        p["gridPos"] = {"h": h, "w": w, "x": x, "y": y}
        x += w
        row_h = max(row_h, h)
        if p["type"] == "row":
            y += h
            x, row_h = 0, 0
        out.append(p)
    return out


UP_MAPPINGS = [{"type": "value", "options": {"0": {"text": "down", "color": "red"},
                                              "1": {"text": "up", "color": "green"}}}]
UP_THRESHOLDS = [{"color": "red", "value": None}, {"color": "green", "value": 1}]


def dashboard(uid, title, description, variables, panels, annotations=(), refresh="30s",
              time_from="now-6h"):
    annos = [{
        "builtIn": 1,
        "datasource": {"type": "grafana", "uid": "-- Grafana --"},
        "enable": True,
        "hide": True,
        "iconColor": "rgba(0, 211, 255, 1)",
        "name": "Annotations & Alerts",
        "type": "dashboard",
    }]
    for name, expr, color in annotations:
        annos.append({
            "datasource": DS,
            "enable": True,
            "hide": False,
            "iconColor": color,
            "name": name,
            "expr": expr,
            "step": "60s",
            "titleFormat": "{{alertname}}",
            "textFormat": "{{target}} {{instance}} {{severity}}",
            "useValueForTime": False,
        })
    return {
        "uid": uid,
        "title": title,
        "description": description,
        "tags": ["vitals"],
        "editable": True,
        "graphTooltip": 1,
        "schemaVersion": SCHEMA_VERSION,
        "version": 1,
        "refresh": refresh,
        "time": {"from": time_from, "to": "now"},
        "timepicker": {},
        "timezone": "browser",
        "fiscalYearStartMonth": 0,
        "liveNow": False,
        "weekStart": "",
        "annotations": {"list": annos},
        "links": [
            {"title": "vitals", "type": "dashboards", "tags": ["vitals"], "asDropdown": True,
             "includeVars": True, "keepTime": True, "icon": "external link", "targetBlank": False,
             "tooltip": "", "url": ""},
            {"title": "Event snapshot", "type": "link", "icon": "dashboard",
             "url": "/d/" + SNAPSHOT_UID + "/vitals-event-snapshot?${__url_time_range}",
             "includeVars": False, "keepTime": False, "asDropdown": False, "tags": [],
             "targetBlank": False, "tooltip": "Everything around the current time range"},
        ],
        "templating": {"list": [ds_var()] + variables},
        "panels": layout(panels),
    }


ALERT_ANNOTATION = ("Firing alerts", 'ALERTS{alertstate="firing"}', "red")

# --- overview / system --------------------------------------------------------------------

def overview():
    inst = 'instance=~"$instance"'
    ssh = 'target=~"$ssh_target"'
    panels = [
        row("Host (node_exporter)"),
        stat("CPU busy", [f'1 - avg by (instance) (rate(node_cpu_seconds_total{{mode="idle",{inst}}}[$__rate_interval]))'],
             unit="percentunit", thresholds=[{"color": "green", "value": None}, {"color": "orange", "value": 0.8}, {"color": "red", "value": 0.95}]),
        stat("Memory used", [f'1 - node_memory_MemAvailable_bytes{{{inst}}} / node_memory_MemTotal_bytes{{{inst}}}'],
             unit="percentunit", thresholds=[{"color": "green", "value": None}, {"color": "orange", "value": 0.85}, {"color": "red", "value": 0.95}]),
        stat("Load (1m) per CPU", [f'node_load1{{{inst}}} / on (instance) count by (instance) (node_cpu_seconds_total{{mode="idle",{inst}}})'],
             thresholds=[{"color": "green", "value": None}, {"color": "orange", "value": 1}, {"color": "red", "value": 2}]),
        stat("Uptime", [f'time() - node_boot_time_seconds{{{inst}}}'], unit="s"),
        stat("Scrape targets down", ['count(up == 0) or vector(0)'],
             thresholds=[{"color": "green", "value": None}, {"color": "red", "value": 1}],
             desc="Prometheus scrape targets whose last scrape failed."),
        stat("Firing alerts", ['count(ALERTS{alertstate="firing"}) or vector(0)'],
             thresholds=[{"color": "green", "value": None}, {"color": "orange", "value": 1}],
             links=[{"title": "Alerts", "url": "/d/vitals-alerts/vitals-alerts?${__url_time_range}"}]),
        timeseries("CPU by mode", [(f'sum by (instance, mode) (rate(node_cpu_seconds_total{{mode!="idle",{inst}}}[$__rate_interval]))', "{{instance}} {{mode}}")],
                   unit="percentunit", stack=True, w=8),
        timeseries("Memory", [(f'node_memory_MemTotal_bytes{{{inst}}} - node_memory_MemAvailable_bytes{{{inst}}}', "{{instance}} used"),
                              (f'node_memory_MemAvailable_bytes{{{inst}}}', "{{instance}} available")], unit="bytes", w=8),
        timeseries("Load", [(f'node_load1{{{inst}}}', "{{instance}} 1m"), (f'node_load5{{{inst}}}', "{{instance}} 5m"),
                            (f'node_load15{{{inst}}}', "{{instance}} 15m")], w=8),
        timeseries("Network", [(f'sum by (instance) (rate(node_network_receive_bytes_total{{device!="lo",{inst}}}[$__rate_interval]))', "{{instance}} in"),
                               (f'-sum by (instance) (rate(node_network_transmit_bytes_total{{device!="lo",{inst}}}[$__rate_interval]))', "{{instance}} out")],
                   unit="Bps", w=8),
        timeseries("Disk I/O", [(f'sum by (instance) (rate(node_disk_read_bytes_total{{{inst}}}[$__rate_interval]))', "{{instance}} read"),
                                (f'-sum by (instance) (rate(node_disk_written_bytes_total{{{inst}}}[$__rate_interval]))', "{{instance}} written")],
                   unit="Bps", w=8),
        bargauge("Local filesystems used", [(f'1 - node_filesystem_avail_bytes{{target="",{inst}}} / (node_filesystem_size_bytes{{target="",{inst}}} > 0)', "{{instance}} {{mountpoint}}")],
                 unit="percentunit", max_=1, w=8),
        row("Remote disks (vitals ssh_disk)"),
        stat("SSH targets up", [(f'ssh_target_up{{{ssh}}}', "{{target}}")], mappings=UP_MAPPINGS, thresholds=UP_THRESHOLDS, w=24, h=3),
        bargauge("Space used", [(f'1 - node_filesystem_avail_bytes{{{ssh}}} / (node_filesystem_size_bytes{{{ssh}}} > 0)', "{{target}} {{mountpoint}}")],
                 unit="percentunit", max_=1, desc="Share of each filesystem not available to unprivileged users."),
        bargauge("Inodes used", [(f'1 - node_filesystem_files_free{{{ssh}}} / (node_filesystem_files{{{ssh}}} > 0)', "{{target}} {{mountpoint}}")],
                 unit="percentunit", max_=1),
        timeseries("Available space", [(f'node_filesystem_avail_bytes{{{ssh}}}', "{{target}} {{mountpoint}}")], unit="bytes"),
        timeseries("Available space in 24h (linear forecast over 6h)",
                   [(f'predict_linear(node_filesystem_avail_bytes{{{ssh}}}[6h], 86400)', "{{target}} {{mountpoint}}")],
                   unit="bytes", desc="Below zero: the filesystem fills within a day at the current rate (alert DiskWillFillIn24h)."),
        table("Filesystems", [(f'node_filesystem_size_bytes{{{ssh}}}', "size"), (f'node_filesystem_avail_bytes{{{ssh}}}', "avail")],
              unit="bytes", w=24, hide=("job",)),
    ]
    variables = [
        query_var("instance", "label_values(node_uname_info, instance)", "Host (node_exporter)"),
        query_var("ssh_target", 'label_values(ssh_target_up, target)', "SSH target"),
    ]
    return dashboard("vitals-overview", "vitals / Overview", "Hosts (node_exporter), remote disks read over SSH, and what is down or firing.",
                     variables, panels, annotations=[ALERT_ANNOTATION])


# --- processes ----------------------------------------------------------------------------

def processes():
    sel = 'instance=~"$instance",groupname=~"$groupname"'
    panels = [
        stat("Watched groups without a process", [f'count(namedprocess_namegroup_num_procs{{{sel}}} == 0) or vector(0)'],
             thresholds=[{"color": "green", "value": None}, {"color": "red", "value": 1}], w=6,
             desc="Groups on exporter.process.watch with num_procs 0 (alert ProcessMissing)."),
        stat("Processes", [f'sum(namedprocess_namegroup_num_procs{{{sel}}})'], w=6),
        stat("Threads", [f'sum(namedprocess_namegroup_num_threads{{{sel}}})'], w=6),
        stat("Restarts in range", [f'sum(increase(namedprocess_namegroup_restarts_total{{{sel}}}[$__range]))'], w=6,
             thresholds=[{"color": "green", "value": None}, {"color": "orange", "value": 1}]),
        timeseries("CPU by group", [(f'sum by (instance, groupname) (rate(namedprocess_namegroup_cpu_seconds_total{{{sel}}}[$__rate_interval]))', "{{groupname}}")],
                   unit="percentunit", desc="CPU seconds per second (1 = one core)."),
        timeseries("Resident memory by group", [(f'namedprocess_namegroup_memory_bytes{{memtype="resident",{sel}}}', "{{groupname}}")], unit="bytes"),
        timeseries("Processes by group", [(f'namedprocess_namegroup_num_procs{{{sel}}}', "{{groupname}}")]),
        timeseries("Process states", [(f'sum by (state) (namedprocess_namegroup_states{{{sel}}})', "{{state}}")], stack=True),
        timeseries("Storage I/O", [(f'sum by (groupname) (rate(namedprocess_namegroup_read_bytes_total{{{sel}}}[$__rate_interval]))', "{{groupname}} read"),
                                   (f'-sum by (groupname) (rate(namedprocess_namegroup_write_bytes_total{{{sel}}}[$__rate_interval]))', "{{groupname}} write")],
                   unit="Bps"),
        timeseries("Open file descriptors (worst share of limit)", [(f'namedprocess_namegroup_worst_fd_ratio{{{sel}}}', "{{groupname}}")],
                   unit="percentunit", max_=1),
        timeseries("Context switches", [(f'sum by (groupname, ctxswitchtype) (rate(namedprocess_namegroup_context_switches_total{{{sel}}}[$__rate_interval]))', "{{groupname}} {{ctxswitchtype}}")],
                   unit="ops"),
        timeseries("Major page faults", [(f'sum by (groupname) (rate(namedprocess_namegroup_major_page_faults_total{{{sel}}}[$__rate_interval]))', "{{groupname}}")], unit="ops"),
        table("Groups", [(f'namedprocess_namegroup_num_procs{{{sel}}}', "procs"),
                         (f'time() - namedprocess_namegroup_oldest_start_time_seconds{{{sel}}}', "uptime"),
                         (f'namedprocess_namegroup_open_filedesc{{{sel}}}', "fds")], w=24, hide=("job",)),
    ]
    variables = [
        query_var("instance", "label_values(namedprocess_namegroup_num_procs, instance)", "Host"),
        query_var("groupname", 'label_values(namedprocess_namegroup_num_procs{instance=~"$instance"}, groupname)', "Group"),
    ]
    return dashboard("vitals-processes", "vitals / Processes", "Process groups from /proc (process-exporter's families).", variables, panels,
                     annotations=[ALERT_ANNOTATION])


# --- PostgreSQL ---------------------------------------------------------------------------

def pg_vars():
    return [
        query_var("target", "label_values(pg_up, target)", "PostgreSQL target"),
        query_var("datname", 'label_values(pg_stat_database_numbackends{target=~"$target"}, datname)', "Database"),
    ]


def postgres():
    t = 'target=~"$target"'
    td = 'target=~"$target",datname=~"$datname"'
    panels = [
        stat("Up", [(f'pg_up{{{t}}}', "{{target}}")], mappings=UP_MAPPINGS, thresholds=UP_THRESHOLDS, w=6),
        stat("Version", [(f'pg_server_info{{{t}}}', "{{target}} {{version}}")], w=6,
             mappings=[{"type": "value", "options": {"1": {"text": "ok"}}}], desc="Label version of pg_server_info."),
        stat("Uptime", [(f'time() - pg_postmaster_start_time_seconds{{{t}}}', "{{target}}")], unit="s", w=6),
        stat("Connections used", [(f'target:pg_stat_activity_connections:ratio{{{t}}}', "{{target}}")], unit="percentunit", w=6,
             thresholds=[{"color": "green", "value": None}, {"color": "orange", "value": 0.8}, {"color": "red", "value": 0.95}],
             desc="Connections over max_connections less the superuser reserve (recording rule)."),
        timeseries("Connections by state", [(f'sum by (target, state) (pg_stat_activity_connections{{{td}}})', "{{target}} {{state}}")], stack=True),
        timeseries("Transactions", [(f'sum by (target, datname) (rate(pg_stat_database_xact_commit_total{{{td}}}[$__rate_interval]))', "{{target}}/{{datname}} commit"),
                                    (f'sum by (target, datname) (rate(pg_stat_database_xact_rollback_total{{{td}}}[$__rate_interval]))', "{{target}}/{{datname}} rollback")],
                   unit="ops"),
        timeseries("Cache hit ratio (5m)", [(f'target_datname:pg_stat_database_blks_hit:ratio_rate5m{{{td}}}', "{{target}}/{{datname}}")],
                   unit="percentunit", max_=1, desc="Recording rule from rules/postgres.yml."),
        timeseries("Rows", [(f'sum by (target) (rate(pg_stat_database_tup_fetched_total{{{td}}}[$__rate_interval]))', "{{target}} fetched"),
                            (f'sum by (target) (rate(pg_stat_database_tup_returned_total{{{td}}}[$__rate_interval]))', "{{target}} returned"),
                            (f'sum by (target) (rate(pg_stat_database_tup_inserted_total{{{td}}}[$__rate_interval]))', "{{target}} inserted"),
                            (f'sum by (target) (rate(pg_stat_database_tup_updated_total{{{td}}}[$__rate_interval]))', "{{target}} updated"),
                            (f'sum by (target) (rate(pg_stat_database_tup_deleted_total{{{td}}}[$__rate_interval]))', "{{target}} deleted")],
                   unit="ops"),
        timeseries("Locks by mode", [(f'sum by (target, mode) (pg_locks{{{td}}})', "{{target}} {{mode}}")]),
        timeseries("Waiting for a lock / oldest transaction", [(f'sum by (target) (pg_stat_activity_waiting_connections{{{td}}})', "{{target}} waiting"),
                                                               (f'max by (target) (pg_stat_activity_max_tx_duration_seconds{{{td}}})', "{{target}} oldest tx (s)")]),
        timeseries("Deadlocks, conflicts, temp files", [(f'sum by (target, datname) (increase(pg_stat_database_deadlocks_total{{{td}}}[$__rate_interval]))', "{{target}}/{{datname}} deadlocks"),
                                                        (f'sum by (target, datname) (increase(pg_stat_database_conflicts_total{{{td}}}[$__rate_interval]))', "{{target}}/{{datname}} conflicts"),
                                                        (f'sum by (target, datname) (increase(pg_stat_database_temp_files_total{{{td}}}[$__rate_interval]))', "{{target}}/{{datname}} temp files")]),
        timeseries("Database size", [(f'pg_database_size_bytes{{{td}}}', "{{target}}/{{datname}}")], unit="bytes"),
        bargauge("Transaction ID age (share of 2^31)", [(f'pg_database_frozen_xid_age{{{td}}} / 2147483648', "{{target}}/{{datname}}")],
                 unit="percentunit", max_=1, desc="Wraparound protection stops writes near 100%; alerts at 47% and 70%."),
        timeseries("WAL generated", [(f'sum by (target) (rate(pg_stat_wal_bytes_total{{{t}}}[$__rate_interval]))', "{{target}}")], unit="Bps"),
        timeseries("Checkpoints", [(f'sum by (target) (rate(pg_stat_bgwriter_checkpoints_timed_total{{{t}}}[$__rate_interval])) or sum by (target) (rate(pg_stat_checkpointer_num_timed_total{{{t}}}[$__rate_interval]))', "{{target}} timed"),
                                   (f'sum by (target) (rate(pg_stat_bgwriter_checkpoints_req_total{{{t}}}[$__rate_interval])) or sum by (target) (rate(pg_stat_checkpointer_num_requested_total{{{t}}}[$__rate_interval]))', "{{target}} requested")],
                   unit="ops", desc="pg_stat_bgwriter up to PostgreSQL 16, pg_stat_checkpointer from 17."),
        timeseries("Scrape errors", [(f'sum by (target, reason) (increase(pg_scrape_errors_total{{{t}}}[$__rate_interval]))', "{{target}} {{reason}}")],
                   desc="Failed connections and queries of vitals, by reason."),
        table("Settings", [(f'pg_settings_max_connections{{{t}}}', "max_connections"),
                           (f'pg_settings_shared_buffers_bytes{{{t}}}', "shared_buffers"),
                           (f'pg_settings_work_mem_bytes{{{t}}}', "work_mem"),
                           (f'pg_settings_max_wal_size_bytes{{{t}}}', "max_wal_size")], w=24, hide=("job", "instance")),
    ]
    return dashboard("vitals-postgres", "vitals / PostgreSQL", "Server and databases: connections, transactions, cache, locks, WAL, wraparound.",
                     pg_vars(), panels, annotations=[ALERT_ANNOTATION])


def tables():
    td = 'target=~"$target",datname=~"$datname"'
    panels = [
        bargauge("Largest tables (with indexes and TOAST)", [(f'topk(10, pg_stat_user_tables_total_size_bytes{{{td}}})', "{{datname}}.{{schemaname}}.{{relname}}")], unit="bytes"),
        bargauge("Dead rows share", [(f'topk(10, pg_stat_user_tables_n_dead_tup{{{td}}} / (pg_stat_user_tables_n_live_tup{{{td}}} + pg_stat_user_tables_n_dead_tup{{{td}}} > 0))', "{{datname}}.{{schemaname}}.{{relname}}")],
                 unit="percentunit", max_=1),
        timeseries("Sequential scans", [(f'topk(10, rate(pg_stat_user_tables_seq_scan_total{{{td}}}[$__rate_interval]))', "{{datname}}.{{relname}}")], unit="ops"),
        timeseries("Index scans", [(f'topk(10, rate(pg_stat_user_tables_idx_scan_total{{{td}}}[$__rate_interval]))', "{{datname}}.{{relname}}")], unit="ops"),
        timeseries("Rows written", [(f'topk(10, rate(pg_stat_user_tables_n_tup_ins_total{{{td}}}[$__rate_interval]) + rate(pg_stat_user_tables_n_tup_upd_total{{{td}}}[$__rate_interval]) + rate(pg_stat_user_tables_n_tup_del_total{{{td}}}[$__rate_interval]))', "{{datname}}.{{relname}}")],
                   unit="ops", desc="Inserted + updated + deleted."),
        bargauge("HOT update share", [(f'topk(10, increase(pg_stat_user_tables_n_tup_hot_upd_total{{{td}}}[$__range]) / (increase(pg_stat_user_tables_n_tup_upd_total{{{td}}}[$__range]) > 0))', "{{datname}}.{{relname}}")],
                 unit="percentunit", max_=1, desc="Updates without index maintenance in the range; low values on hot tables suggest a lower fillfactor."),
        table("Vacuum and analyze", [(f'time() - max by (target, datname, schemaname, relname) ({{__name__=~"pg_stat_user_tables_last_(auto)?vacuum_seconds",{td}}} > 0)', "since vacuum"),
                                     (f'time() - max by (target, datname, schemaname, relname) ({{__name__=~"pg_stat_user_tables_last_(auto)?analyze_seconds",{td}}} > 0)', "since analyze"),
                                     (f'max by (target, datname, schemaname, relname) (pg_stat_user_tables_n_mod_since_analyze{{{td}}})', "changed since analyze"),
                                     (f'max by (target, datname, schemaname, relname) (pg_stat_user_tables_n_dead_tup{{{td}}})', "dead rows")],
              unit="s", w=24, desc="Seconds since the last vacuum and analyze (manual or autovacuum)."),
        bargauge("Largest indexes", [(f'topk(10, pg_stat_user_indexes_size_bytes{{{td}}})', "{{datname}}.{{relname}}.{{indexrelname}}")], unit="bytes"),
        table("Indexes never scanned", [(f'pg_stat_user_indexes_idx_scan_total{{{td}}} == 0', "scans"),
                                        (f'pg_stat_user_indexes_size_bytes{{{td}}} and on (target, datname, schemaname, relname, indexrelname) pg_stat_user_indexes_idx_scan_total{{{td}}} == 0', "size")],
              desc="Candidates for dropping (check standbys and rare reports first).", hide=("job", "instance")),
        bargauge("Sequences used", [(f'topk(10, pg_sequence_used_ratio{{{td}}})', "{{datname}}.{{schemaname}}.{{sequencename}}")], unit="percentunit", max_=1, w=24),
    ]
    return dashboard("vitals-tables", "vitals / Tables & indexes", "Per-table and per-index activity, bloat signals, vacuum, sequences (top tables_top_n per database).",
                     pg_vars(), panels)


def queries():
    td = 'target=~"$target",datname=~"$datname"'
    key = "target, datname, user, queryid"
    panels = [
        text("About", "From `pg_stat_statements` (set `pg_stat_statements: true` on the target). Queries are identified by `queryid`; "
             "vitals never exports query text: look it up with `SELECT query FROM pg_stat_statements WHERE queryid = ...`."),
        timeseries("Time spent, top 10", [(f'topk(10, sum by ({key}) (rate(pg_stat_statements_seconds_total{{{td}}}[$__rate_interval])))', "{{datname}} {{queryid}}")],
                   unit="percentunit", desc="Execution seconds per second."),
        timeseries("Calls, top 10", [(f'topk(10, sum by ({key}) (rate(pg_stat_statements_calls_total{{{td}}}[$__rate_interval])))', "{{datname}} {{queryid}}")], unit="ops"),
        timeseries("Mean time per call, top 10", [(f'topk(10, sum by ({key}) (rate(pg_stat_statements_seconds_total{{{td}}}[$__rate_interval])) / (sum by ({key}) (rate(pg_stat_statements_calls_total{{{td}}}[$__rate_interval])) > 0))', "{{datname}} {{queryid}}")],
                   unit="s"),
        timeseries("Block I/O time, top 10", [(f'topk(10, sum by ({key}) (rate(pg_stat_statements_block_read_seconds_total{{{td}}}[$__rate_interval]) + rate(pg_stat_statements_block_write_seconds_total{{{td}}}[$__rate_interval])))', "{{datname}} {{queryid}}")],
                   unit="percentunit", desc="Needs track_io_timing."),
        table("Statements in range", [(f'topk(20, sum by ({key}) (increase(pg_stat_statements_seconds_total{{{td}}}[$__range])))', "seconds"),
                                      (f'sum by ({key}) (increase(pg_stat_statements_calls_total{{{td}}}[$__range]))', "calls"),
                                      (f'sum by ({key}) (increase(pg_stat_statements_rows_total{{{td}}}[$__range]))', "rows"),
                                      (f'sum by ({key}) (pg_stat_statements_shared_blks_hit_total{{{td}}}) / (sum by ({key}) (pg_stat_statements_shared_blks_hit_total{{{td}}} + pg_stat_statements_shared_blks_read_total{{{td}}}) > 0)', "cache hit share")],
              w=24, h=10),
    ]
    return dashboard("vitals-queries", "vitals / Queries", "pg_stat_statements: where the server spends its time, by queryid.", pg_vars(), panels)


def replication():
    t = 'target=~"$target"'
    panels = [
        stat("Role", [(f'pg_replication_is_replica{{{t}}}', "{{target}}")], w=8,
             mappings=[{"type": "value", "options": {"0": {"text": "primary", "color": "blue"}, "1": {"text": "standby", "color": "purple"}}}]),
        stat("Replay lag (standbys)", [(f'pg_replication_lag_seconds{{{t}}}', "{{target}}")], unit="s", w=8,
             thresholds=[{"color": "green", "value": None}, {"color": "orange", "value": 60}, {"color": "red", "value": 300}]),
        stat("Inactive slots", [f'count(pg_replication_slot_slot_is_active{{{t}}} == 0) or vector(0)'], w=8,
             thresholds=[{"color": "green", "value": None}, {"color": "orange", "value": 1}]),
        timeseries("Standby lag behind the primary", [(f'pg_stat_replication_replay_lag_bytes{{{t}}}', "{{target}} → {{application_name}}")], unit="bytes",
                   desc="WAL not yet replayed by each connected standby, as seen on the primary."),
        timeseries("Standby write / flush lag", [(f'pg_stat_replication_write_lag_seconds{{{t}}}', "{{application_name}} write"),
                                                 (f'pg_stat_replication_flush_lag_seconds{{{t}}}', "{{application_name}} flush")], unit="s"),
        timeseries("WAL position rate", [(f'rate(pg_wal_position_bytes{{{t}}}[$__rate_interval])', "{{target}}")], unit="Bps",
                   desc="WAL written (primary) or replayed (standby) per second."),
        timeseries("Replication lag (standbys)", [(f'pg_replication_lag_seconds{{{t}}}', "{{target}}")], unit="s"),
        timeseries("WAL retained by slots", [(f'pg_replication_slot_retained_wal_bytes{{{t}}}', "{{target}} {{slot_name}}")], unit="bytes"),
        timeseries("WAL before slots lose data (safe_wal_size)", [(f'pg_replication_slot_safe_wal_size_bytes{{{t}}}', "{{target}} {{slot_name}}")], unit="bytes",
                   desc="Only with max_slot_wal_keep_size set (PostgreSQL 13+)."),
        table("Slots", [(f'pg_replication_slot_slot_is_active{{{t}}}', "active"), (f'pg_replication_slot_retained_wal_bytes{{{t}}}', "retained")],
              w=12, hide=("job", "instance")),
        timeseries("pg_wal", [(f'pg_wal_size_bytes{{{t}}}', "{{target}} size")], unit="bytes"),
        timeseries("Archiver", [(f'rate(pg_stat_archiver_archived_total{{{t}}}[$__rate_interval])', "{{target}} archived"),
                                (f'rate(pg_stat_archiver_failed_total{{{t}}}[$__rate_interval])', "{{target}} failed")], unit="ops"),
        timeseries("Time since last archived WAL", [(f'pg_stat_archiver_last_archive_age_seconds{{{t}}}', "{{target}}")], unit="s"),
    ]
    return dashboard("vitals-replication", "vitals / Replication", "Standbys, lag, replication slots, WAL and archiving.",
                     [query_var("target", "label_values(pg_up, target)", "PostgreSQL target")], panels, annotations=[ALERT_ANNOTATION])


# --- logs ---------------------------------------------------------------------------------

def logs():
    s = 'instance=~"$instance",source=~"$source"'
    i = 'instance=~"$instance"'
    panels = [
        row("Lines"),
        timeseries("Lines by level", [(f'sum by (source, level) (rate(log_lines_total{{{s}}}[$__rate_interval]))', "{{source}} {{level}}")], unit="ops", stack=True),
        timeseries("Error and critical lines (5m)", [(f'instance_source:log_error_lines:rate5m{{{s}}}', "{{source}}")], unit="ops",
                   desc="Recording rule; alert LogErrorSpike fires at five times the previous hour's rate."),
        bargauge("Top error/warning patterns in range", [(f'topk(10, sum by (source, level, pattern) (increase(log_pattern_lines_total{{{s}}}[$__range])))', "{{source}} {{level}} {{pattern}}")]),
        table("Pattern templates", [(f'log_pattern_info{{{s}}}', "")], hide=("Value", "job", "instance")),
        timeseries("PostgreSQL errors by SQLSTATE class", [(f'sum by (source, severity, sqlstate_class) (increase(log_postgres_errors_total{{{s}}}[$__rate_interval]))', "{{source}} {{severity}} {{sqlstate_class}}")]),
        timeseries("Collection problems", [(f'sum by (source) (rate(log_parse_failures_total{{{s}}}[$__rate_interval]))', "{{source}} parse failures"),
                                           (f'sum by (source, reason) (rate(log_lines_dropped_total{{{s}}}[$__rate_interval]))', "{{source}} dropped {{reason}}"),
                                           (f'sum by (source) (rate(log_read_errors_total{{{s}}}[$__rate_interval]))', "{{source}} read errors")], unit="ops"),
        timeseries("Backlog and freshness", [(f'log_backlog_bytes{{{s}}}', "{{source}} backlog (bytes)"),
                                             (f'time() - log_last_line_timestamp_seconds{{{s}}}', "{{source}} age of newest line (s)")]),
        stat("Files followed", [(f'log_files_followed{{{s}}}', "{{source}}")], w=6),
        stat("Rotations in range", [(f'sum by (source) (increase(log_rotations_total{{{s}}}[$__range]))', "{{source}}")], w=6),
        row("Security"),
        timeseries("SSH authentication failures", [(f'sum by (source, reason) (increase(log_ssh_auth_failures_total{{{s}}}[$__rate_interval]))', "{{source}} {{reason}}")]),
        bargauge("SSH failures by address in range", [(f'topk(10, sum by (ip) (increase(log_ssh_auth_failures_by_ip_total{{{i}}}[$__range])))', "{{ip}}")]),
        timeseries("SSH logins", [(f'sum by (source, method) (increase(log_ssh_logins_total{{{s}}}[$__rate_interval]))', "{{source}} {{method}}")]),
        timeseries("fail2ban", [(f'sum by (jail, action) (increase(log_fail2ban_bans_total{{{s}}}[$__rate_interval]))', "{{jail}} {{action}}")]),
        timeseries("Firewall", [(f'sum by (action, proto) (increase(log_firewall_blocks_total{{{s}}}[$__rate_interval]))', "{{action}} {{proto}}")]),
        stat("certbot renewals in range", [(f'sum by (result) (increase(log_certbot_renewals_total{{{s}}}[$__range]))', "{{result}}")], w=12),
    ]
    variables = [
        query_var("instance", "label_values(log_lines_total, instance)", "Host"),
        query_var("source", 'label_values(log_lines_total{instance=~"$instance"}, source)', "Source"),
    ]
    return dashboard("vitals-logs", "vitals / Logs", "Lines, error patterns and security events from the logs collector.", variables, panels,
                     annotations=[ALERT_ANNOTATION])


# --- alerts -------------------------------------------------------------------------------

def alerts():
    sel = 'severity=~"$severity",domain=~"$domain"'
    panels = [
        stat("Firing: critical", [f'count(ALERTS{{alertstate="firing",severity="critical",domain=~"$domain"}}) or vector(0)'], w=6,
             thresholds=[{"color": "green", "value": None}, {"color": "red", "value": 1}]),
        stat("Firing: warning", [f'count(ALERTS{{alertstate="firing",severity="warning",domain=~"$domain"}}) or vector(0)'], w=6,
             thresholds=[{"color": "green", "value": None}, {"color": "orange", "value": 1}]),
        stat("Firing: info", [f'count(ALERTS{{alertstate="firing",severity="info",domain=~"$domain"}}) or vector(0)'], w=6),
        stat("Pending", [f'count(ALERTS{{alertstate="pending",{sel}}}) or vector(0)'], w=6),
        table("Active alerts", [(f'ALERTS{{{sel}}}', "")], w=24, h=10, hide=("Value", "job")),
        state_timeline("Alert history", [(f'sum by (alertname, target, instance) (ALERTS{{alertstate="firing",{sel}}})', "{{alertname}} {{target}} {{instance}}")],
                       mappings=[{"type": "value", "options": {"1": {"text": "firing", "color": "red"}}}], h=10,
                       links=[SNAPSHOT_LINK]),
        timeseries("Firing by domain", [(f'count by (domain) (ALERTS{{alertstate="firing",{sel}}})', "{{domain}}")], stack=True),
        timeseries("Firing by severity", [(f'count by (severity) (ALERTS{{alertstate="firing",{sel}}})', "{{severity}}")], stack=True),
    ]
    variables = [
        query_var("severity", 'label_values(ALERTS, severity)', "Severity"),
        query_var("domain", 'label_values(ALERTS, domain)', "Domain"),
    ]
    return dashboard("vitals-alerts", "vitals / Alerts", "Alerts of rules/ and of the sidecar as Prometheus sees them (ALERTS).", variables, panels,
                     annotations=[ALERT_ANNOTATION])


# --- collector self-monitoring ------------------------------------------------------------

def collector():
    i = 'instance=~"$instance"'
    panels = [
        table("Build", [(f'vitals_build_info{{{i}}}', "")], w=12, h=5, hide=("Value",)),
        stat("Config last reload", [(f'vitals_config_last_reload_successful{{{i}}}', "{{instance}}")], w=6, h=5,
             mappings=[{"type": "value", "options": {"0": {"text": "failed", "color": "red"}, "1": {"text": "ok", "color": "green"}}}],
             thresholds=UP_THRESHOLDS),
        stat("Scrape up", [(f'up{{{i}}}', "{{job}} {{instance}}")], w=6, h=5, mappings=UP_MAPPINGS, thresholds=UP_THRESHOLDS),
        timeseries("Collector duration", [(f'vitals_scrape_collector_duration_seconds{{{i}}}', "{{instance}} {{collector}}")], unit="s"),
        state_timeline("Collector success", [(f'vitals_scrape_collector_success{{{i}}}', "{{instance}} {{collector}}")], w=12,
                       mappings=[{"type": "value", "options": {"0": {"text": "failed", "color": "red"}, "1": {"text": "ok", "color": "green"}}}]),
        timeseries("Scrape duration (Prometheus)", [(f'scrape_duration_seconds{{{i}}}', "{{job}} {{instance}}")], unit="s"),
        timeseries("Samples per scrape", [(f'scrape_samples_scraped{{{i}}}', "{{job}} {{instance}}")]),
        timeseries("HTTP requests", [(f'sum by (instance, handler, code) (rate(vitals_http_requests_total{{{i}}}[$__rate_interval]))', "{{instance}} {{handler}} {{code}}")], unit="reqps"),
        timeseries("HTTP latency p95", [(f'histogram_quantile(0.95, sum by (instance, handler, le) (rate(vitals_http_request_duration_seconds_bucket{{{i}}}[$__rate_interval])))', "{{instance}} {{handler}}")], unit="s"),
        timeseries("CPU", [(f'rate(process_cpu_seconds_total{{{i}}}[$__rate_interval])', "{{job}} {{instance}}")], unit="percentunit"),
        timeseries("Resident memory", [(f'process_resident_memory_bytes{{{i}}}', "{{job}} {{instance}}")], unit="bytes"),
        timeseries("File descriptors", [(f'process_open_fds{{{i}}} / process_max_fds{{{i}}}', "{{job}} {{instance}}")], unit="percentunit"),
        row("PostgreSQL collector"),
        timeseries("Scrape duration by target", [(f'pg_scrape_duration_seconds{{{i}}}', "{{target}}")], unit="s", w=8),
        timeseries("Connections held by vitals", [(f'vitals_postgres_connections{{{i}}}', "{{target}}")], w=8),
        timeseries("Per-database data age", [(f'vitals_postgres_fanout_age_seconds{{{i}}}', "{{target}} age"),
                                             (f'vitals_postgres_fanout_refresh_duration_seconds{{{i}}}', "{{target}} refresh duration")], unit="s", w=8),
        row("SSH disk and process collectors"),
        timeseries("SSH refresh duration", [(f'ssh_target_duration_seconds{{{i}}}', "{{target}}")], unit="s", w=8),
        timeseries("SSH refresh failures", [(f'sum by (target, reason) (increase(ssh_target_failures_total{{{i}}}[$__rate_interval]))', "{{target}} {{reason}}")], w=8),
        timeseries("SSH data age (dropped past max_age)", [(f'ssh_target_cache_age_seconds{{{i}}}', "{{target}}")], unit="s", w=8),
        timeseries("/proc read problems", [(f'sum by (instance, file) (rate(vitals_process_read_errors_total{{{i}}}[$__rate_interval]))', "{{instance}} {{file}}"),
                                           (f'rate(vitals_process_vanished_total{{{i}}}[$__rate_interval])', "{{instance}} vanished")], unit="ops", w=12),
        timeseries("Log checkpoint and read errors", [(f'sum by (source) (increase(log_checkpoint_errors_total{{{i}}}[$__rate_interval]))', "{{source}} checkpoint"),
                                                      (f'sum by (source) (increase(log_read_errors_total{{{i}}}[$__rate_interval]))', "{{source}} read")], w=12),
        row("Sidecar"),
        stat("Since the last cycle", [(f'time() - vitals_sidecar_last_cycle_timestamp_seconds{{{i}}}', "{{instance}}")], unit="s", w=6, h=5,
             thresholds=[{"color": "green", "value": None}, {"color": "orange", "value": 300}, {"color": "red", "value": 600}],
             desc="Rule VitalsSidecarCycleStalled fires when no cycle ran for 5 minutes, for 5 minutes."),
        stat("Signals failing", [(f'count by (instance) (vitals_sidecar_signal_up{{{i}}} == 0) or sum by (instance) (vitals_sidecar_signal_up{{{i}}} * 0)', "{{instance}}")],
             w=6, h=5, thresholds=[{"color": "green", "value": None}, {"color": "red", "value": 1}]),
        stat("History memory", [(f'vitals_sidecar_history_bytes{{{i}}}', "{{instance}}")], unit="bytes", w=6, h=5),
        stat("Series dropped in range", [(f'sum by (instance) (increase(vitals_sidecar_series_dropped_total{{{i}}}[$__range]))', "{{instance}}")], w=6, h=5,
             thresholds=[{"color": "green", "value": None}, {"color": "orange", "value": 1}],
             desc="Series refused because a signal returned more than sidecar.max_series_per_signal."),
        timeseries("Cycle duration", [(f'vitals_sidecar_cycle_duration_seconds{{{i}}}', "{{instance}}")], unit="s", w=8),
        timeseries("Query API calls", [(f'sum by (instance, result) (rate(vitals_sidecar_queries_total{{{i}}}[$__rate_interval]))', "{{instance}} queries {{result}}"),
                                       (f'rate(vitals_sidecar_http_requests_total{{{i}}}[$__rate_interval])', "{{instance}} HTTP requests")], unit="reqps", w=8),
        timeseries("Cycles", [(f'rate(vitals_sidecar_cycles_total{{{i}}}[$__rate_interval])', "{{instance}}")], unit="ops", w=8),
        state_timeline("Signal up", [(f'vitals_sidecar_signal_up{{{i}}}', "{{signal}}")], w=12, h=10,
                       mappings=[{"type": "value", "options": {"0": {"text": "failing", "color": "red"}, "1": {"text": "ok", "color": "green"}}}]),
        timeseries("Series per signal", [(f'vitals_sidecar_series{{{i}}}', "{{signal}}")], w=12, h=10, stack=True),
        timeseries("Signal refresh duration", [(f'vitals_sidecar_signal_refresh_duration_seconds{{{i}}}', "{{signal}}")], unit="s", w=8),
        timeseries("Signal errors and warnings", [(f'sum by (signal) (increase(vitals_sidecar_signal_errors_total{{{i}}}[$__rate_interval]))', "{{signal}} errors"),
                                                  (f'sum by (signal) (increase(vitals_sidecar_query_warnings_total{{{i}}}[$__rate_interval]))', "{{signal}} warnings")], w=8),
        timeseries("SLO and recommendation queries", [(f'vitals_sidecar_slo_up{{{i}}}', "{{slo}} up"),
                                                      (f'sum by (id) (increase(vitals_sidecar_recommendation_errors_total{{{i}}}[$__rate_interval]))', "{{id}} errors")], w=8),
    ]
    variables = [query_var("instance", "label_values(vitals_build_info, instance)", "vitals instance")]
    return dashboard("vitals-collector", "vitals / Collector self-monitoring", "vitals' own health: collectors, scrapes, HTTP, resources, and the sidecar's cycles and queries.", variables, panels)


# --- insights (sidecar) -------------------------------------------------------------------

SEVERITY_MAPPINGS = [{"type": "value", "options": {"0": {"text": "ok", "color": "green"},
                                                    "1": {"text": "warning", "color": "orange"},
                                                    "2": {"text": "critical", "color": "red"}}}]
# Health is good when high: red below 50, orange below 80.
HEALTH_THRESHOLDS = {"mode": "absolute", "steps": [{"color": "red", "value": None},
                                                   {"color": "orange", "value": 50},
                                                   {"color": "green", "value": 80}]}

# Data link from a table row (an instant query: its time is the dashboard's end) to the event
# snapshot for the hour before it.
ROW_SNAPSHOT_LINK = {
    "title": "Event snapshot for the hour before",
    "url": "/d/" + SNAPSHOT_UID + "/vitals-event-snapshot?time=${__value.time}&time.window=3600000&${datasource:queryparam}",
}


def field_override(name, unit=None, mappings=None, thresholds=None, cell=None):
    props = []
    if unit:
        props.append({"id": "unit", "value": unit})
    if mappings:
        props.append({"id": "mappings", "value": mappings})
    if thresholds:
        props.append({"id": "thresholds", "value": thresholds})
    if cell:
        props.append({"id": "custom.cellOptions", "value": {"type": cell}})
    return {"matcher": {"id": "byName", "options": name}, "properties": props}


def insights():
    s = 'signal=~"$signal",domain=~"$domain"'
    d = 'domain=~"$domain"'
    w = 'window="$window"'
    slo = 'slo=~"$slo"'
    links = [SNAPSHOT_LINK]
    sev_colors = {"mode": "absolute", "steps": [{"color": "green", "value": None},
                                                {"color": "orange", "value": 1}, {"color": "red", "value": 2}]}
    panels = [
        text("About", "Series computed by `vitals sidecar` from Prometheus' history (docs/sidecar.md, docs/slo.md, "
             "docs/recommendations.md): health, anomalies, baselines, forecasts, SLOs and recommendations. Click a point of a "
             "chart, or a row of an anomaly or recommendation table, to open the event snapshot for the hour around it.", h=3),
        row("Health"),
        bargauge("Health by domain", [(f'health_score{{{d}}}', "{{domain}}")], w=8, h=8, max_=100,
                 thresholds=HEALTH_THRESHOLDS,
                 desc="100 minus what each signal of the domain takes off: 50 for a critical anomaly, 20 for a warning, up to 10 "
                      "for a sub-threshold deviation; SLOs count as components of their domain."),
        timeseries("Health over time", [(f'health_score{{{d}}}', "{{domain}}")], w=8, min_=0, max_=100, links=links),
        table("What takes points off (components)", [(f'sort_desc(health_score_component{{{d}}})', "")], w=8,
              hide=("instance", "job"), rename={"Value": "points off"},
              desc="Points each component (a signal or an SLO) takes off its domain's health score; 0 when it is fine."),
        row("Anomalies"),
        state_timeline("Anomaly severity", [(f'max by (signal, domain) (anomaly_severity{{{s}}})', "{{domain}} {{signal}}")], w=24, h=8,
                       mappings=SEVERITY_MAPPINGS, links=links),
        table("Series by anomaly score", [(f'sort_desc(anomaly_score{{{s}}})', ""), (f'anomaly_severity{{{s}}}', ""),
                                          (f'anomaly_zscore{{{s}}}', ""), (f'anomaly_expected_value{{{s}}}', "")],
              w=24, h=9, hide=("instance", "job"), links=[ROW_SNAPSHOT_LINK],
              rename={"Value #A": "score", "Value #B": "severity", "Value #C": "z-score", "Value #D": "expected value"},
              overrides=[field_override("severity", mappings=SEVERITY_MAPPINGS, thresholds=sev_colors, cell="color-background"),
                         field_override("score", unit="percentunit", cell="gauge")],
              desc="Every series the sidecar scores, most anomalous first. Severity is raised after two anomalous points in a "
                   "row and cleared after three calm ones."),
        timeseries("Anomaly score", [(f'anomaly_score{{{s}}}', "{{domain}} {{signal}} {{target}}")], min_=0, max_=1, links=links),
        timeseries("z-score against the expectation", [(f'anomaly_zscore{{{s}}}', "{{domain}} {{signal}} {{target}}")], links=links),
        timeseries("Drift (recent level / long-term level)", [(f'anomaly_drift_ratio{{{s}}}', "{{signal}} {{target}}")], links=links),
        timeseries("Correlated events", [('sum(increase(anomaly_correlated_events_total[$__rate_interval]))', "events raised"),
                                         ('count by (domains) (anomaly_correlation_started_timestamp_seconds)', "in force: {{domains}}")],
                   links=links,
                   desc="Anomalies in two or more domains in one cycle make one correlated event; click a point to open the "
                        "snapshot around it."),
        row("Baselines"),
        timeseries("Baseline band ($window mean ± 2σ) and expected value",
                   [(f'anomaly_expected_value{{{s}}}', "{{signal}} {{target}} expected"),
                    (f'baseline_mean{{{w},{s}}}', "{{signal}} {{target}} mean"),
                    (f'baseline_mean{{{w},{s}}} + 2 * baseline_stddev{{{w},{s}}}', "{{signal}} {{target}} +2σ"),
                    (f'baseline_mean{{{w},{s}}} - 2 * baseline_stddev{{{w},{s}}}', "{{signal}} {{target}} -2σ")],
                   links=links,
                   desc="The detector's expected value of the signal against its baseline over the chosen window (ending "
                        "sidecar.baseline_offset before the newest point). Windows: 7d and 30d when sidecar.history covers them, "
                        "hour_of_week once that hour has two earlier weeks."),
        timeseries("Baseline quantiles ($window)", [(f'baseline_quantile{{{w},{s}}}', "{{signal}} {{target}} q{{q}}")], links=links),
        table("Baselines now ($window)", [(f'baseline_mean{{{w},{s}}}', ""), (f'baseline_stddev{{{w},{s}}}', ""),
                                          (f'baseline_quantile{{{w},q="0.05",{s}}}', ""), (f'baseline_quantile{{{w},q="0.5",{s}}}', ""),
                                          (f'baseline_quantile{{{w},q="0.95",{s}}}', "")],
              w=24, hide=("instance", "job", "q"),
              rename={"Value #A": "mean", "Value #B": "stddev", "Value #C": "q0.05", "Value #D": "median", "Value #E": "q0.95"}),
        row("Forecasts"),
        table("Capacity: time until threshold", [(f'sort(forecast_time_to_threshold_seconds{{{s}}})', "")], unit="s", w=12,
              hide=("instance", "job"), rename={"Value": "time to threshold"}, links=[ROW_SNAPSHOT_LINK],
              desc="Signals with a threshold whose least-squares trend over sidecar.forecast.window heads for it within "
                   "sidecar.forecast.horizon and fits at least sidecar.forecast.min_r_squared; 0 when already past it."),
        table("Trend and fit", [(f'forecast_slope{{{s}}}', ""), (f'forecast_r_squared{{{s}}}', "")], w=12,
              hide=("instance", "job"), rename={"Value #A": "slope per second", "Value #B": "r²"},
              desc="A forecast with a poor fit (r² near 0) is unreliable."),
        timeseries("Trend (forecast slope per second)", [(f'forecast_slope{{{s}}}', "{{signal}} {{target}}")], links=links),
        timeseries("Time until threshold", [(f'forecast_time_to_threshold_seconds{{{s}}}', "{{signal}} {{target}}")], unit="s", links=links),
        row("SLOs"),
        bargauge("Error budget remaining", [(f'slo_error_budget_remaining_ratio{{{slo}}}', "{{slo}} {{target}}{{job}}")], w=8,
                 unit="percentunit", max_=1,
                 thresholds={"mode": "absolute", "steps": [{"color": "red", "value": None}, {"color": "orange", "value": 0.25},
                                                           {"color": "green", "value": 0.5}]},
                 desc="Share of the period's error budget left (traffic-weighted); negative once overspent."),
        state_timeline("Burn-rate alerts", [(f'slo_alert_active{{{slo}}}', "{{slo}} {{target}}{{job}} {{alert}}")], w=16,
                       mappings=[{"type": "value", "options": {"0": {"text": "ok", "color": "green"},
                                                                "1": {"text": "firing", "color": "red"}}}], links=links),
        timeseries("Burn rate by window", [(f'slo_burn_rate{{window=~"$slo_window",{slo}}}', "{{slo}} {{target}}{{job}} {{window}}")],
                   links=links, desc="Error ratio / (1 − objective): 1 spends exactly the budget in one period. The page alert "
                                     "needs 14.4 over 1h and 5m (or 6 over 6h and 30m), the ticket 3 over 1d and 2h (or 1 over 3d and 6h)."),
        timeseries("Error ratio (1h) against the allowed ratio", [(f'slo_error_ratio{{window="1h",{slo}}}', "{{slo}} {{target}}{{job}}"),
                                                                  (f'1 - slo_objective_ratio{{{slo}}}', "{{slo}} {{target}}{{job}} allowed")],
                   unit="percentunit", links=links),
        table("Time to budget exhaustion", [(f'sort(slo_time_to_exhaustion_seconds{{{slo}}})', "")], unit="s", w=24,
              hide=("instance", "job"), rename={"Value": "time to exhaustion"},
              desc="At the current 1h burn rate; 0 when the budget is gone, absent when nothing burns."),
        row("Recommendations"),
        table("Active recommendations", [('recommendation_active{category=~"$category"}', "")], w=24, h=9,
              hide=("Value", "instance", "job"), links=[ROW_SNAPSHOT_LINK],
              desc="Explained findings of the sidecar's recommendation rules (docs/recommendations.md); the numbers are in the "
                   "sidecar's landing page and alerts."),
        bargauge("Findings per rule", [('sort_desc(recommendation_findings)', "{{id}}")], w=12,
                 thresholds={"mode": "absolute", "steps": [{"color": "green", "value": None}, {"color": "orange", "value": 1}]}),
        timeseries("Active findings by severity", [('count by (severity) (recommendation_active{category=~"$category"})', "{{severity}}")],
                   stack=True, links=links),
        row("Sidecar"),
        stat("Since the last cycle", [('time() - max(vitals_sidecar_last_cycle_timestamp_seconds)', "")], unit="s", w=6,
             thresholds=[{"color": "green", "value": None}, {"color": "orange", "value": 300}, {"color": "red", "value": 600}]),
        stat("Signals failing", [('count(vitals_sidecar_signal_up == 0) or vector(0)', "")], w=6,
             thresholds=[{"color": "green", "value": None}, {"color": "red", "value": 1}]),
        stat("Series tracked", [('sum(vitals_sidecar_series)', "")], w=6),
        stat("Query errors in range", [('sum(increase(vitals_sidecar_queries_total{result="error"}[$__range])) or vector(0)', "")], w=6,
             thresholds=[{"color": "green", "value": None}, {"color": "orange", "value": 1}],
             links=[{"title": "Sidecar self-monitoring", "url": "/d/vitals-collector/vitals-collector?${__url_time_range}"}]),
    ]
    variables = [
        query_var("domain", "label_values(health_score, domain)", "Domain"),
        query_var("signal", 'label_values(anomaly_score{domain=~"$domain"}, signal)', "Signal"),
        query_var("window", 'label_values(baseline_mean{signal=~"$signal"}, window)', "Baseline window", multi=False),
        query_var("slo", "label_values(slo_objective_ratio, slo)", "SLO"),
        query_var("slo_window", "label_values(slo_burn_rate, window)", "Burn-rate window"),
        query_var("category", "label_values(recommendation_active, category)", "Recommendation category"),
    ]
    return dashboard("vitals-insights", "vitals / Insights",
                     "The sidecar's analysis: health, anomalies, baselines, forecasts, SLOs, recommendations.", variables, panels,
                     annotations=[ALERT_ANNOTATION, ("Anomalies", 'max by (signal, domain) (anomaly_severity) >= 1', "orange")])


# --- event snapshot -----------------------------------------------------------------------

def snapshot():
    t = 'target=~"$target"'
    i = 'instance=~"$instance"'
    panels = [
        text("How to use", "Opened from an alert notification, an anomaly or any vitals dashboard with the time range of an event "
             "(`from`/`to`, or `time` and `time.window`). Everything below is for that window; narrow it with the variables.", h=2),
        state_timeline("Alerts in the window", [('sum by (alertname, target, instance) (ALERTS{alertstate="firing"})', "{{alertname}} {{target}} {{instance}}")],
                       mappings=[{"type": "value", "options": {"1": {"text": "firing", "color": "red"}}}], h=7),
        state_timeline("Anomalies in the window", [('max by (signal, domain) (anomaly_severity >= 1)', "{{domain}} {{signal}}")], h=5,
                       mappings=[{"type": "value", "options": {"1": {"text": "warning", "color": "orange"}, "2": {"text": "critical", "color": "red"}}}]),
        row("PostgreSQL"),
        timeseries("Transactions", [(f'sum by (target) (rate(pg_stat_database_xact_commit_total{{{t}}}[$__rate_interval]))', "{{target}} commit"),
                                    (f'sum by (target) (rate(pg_stat_database_xact_rollback_total{{{t}}}[$__rate_interval]))', "{{target}} rollback")], unit="ops", w=8),
        timeseries("Connections by state", [(f'sum by (target, state) (pg_stat_activity_connections{{{t}}})', "{{target}} {{state}}")], w=8, stack=True),
        timeseries("Lock waits and oldest transaction", [(f'sum by (target) (pg_stat_activity_waiting_connections{{{t}}})', "{{target}} waiting"),
                                                         (f'max by (target) (pg_stat_activity_max_tx_duration_seconds{{{t}}})', "{{target}} oldest tx (s)")], w=8),
        timeseries("Cache hit ratio", [(f'sum by (target) (rate(pg_stat_database_blks_hit_total{{{t}}}[$__rate_interval])) / (sum by (target) (rate(pg_stat_database_blks_hit_total{{{t}}}[$__rate_interval]) + rate(pg_stat_database_blks_read_total{{{t}}}[$__rate_interval])) > 0)', "{{target}}")],
                   unit="percentunit", max_=1, w=8),
        timeseries("Deadlocks and temp bytes", [(f'sum by (target) (increase(pg_stat_database_deadlocks_total{{{t}}}[$__rate_interval]))', "{{target}} deadlocks"),
                                                (f'sum by (target) (rate(pg_stat_database_temp_bytes_total{{{t}}}[$__rate_interval]))', "{{target}} temp bytes/s")], w=8),
        timeseries("WAL and replication lag", [(f'sum by (target) (rate(pg_stat_wal_bytes_total{{{t}}}[$__rate_interval]))', "{{target}} WAL bytes/s"),
                                               (f'pg_replication_lag_seconds{{{t}}}', "{{target}} lag (s)")], w=8),
        row("Hosts and disks"),
        timeseries("CPU busy", [(f'1 - avg by (instance) (rate(node_cpu_seconds_total{{mode="idle",{i}}}[$__rate_interval]))', "{{instance}}")], unit="percentunit", w=8),
        timeseries("Memory used", [(f'1 - node_memory_MemAvailable_bytes{{{i}}} / node_memory_MemTotal_bytes{{{i}}}', "{{instance}}")], unit="percentunit", w=8),
        timeseries("Remote disks available", [(f'node_filesystem_avail_bytes{{{t}}}', "{{target}} {{mountpoint}}")], unit="bytes", w=8),
        row("Processes and logs"),
        timeseries("CPU by process group, top 5", [('topk(5, sum by (instance, groupname) (rate(namedprocess_namegroup_cpu_seconds_total[$__rate_interval])))', "{{instance}} {{groupname}}")],
                   unit="percentunit", w=8),
        timeseries("Error lines by source", [('sum by (instance, source) (rate(log_lines_total{level=~"error|critical"}[$__rate_interval]))', "{{instance}} {{source}}")], unit="ops", w=8),
        timeseries("SSH authentication failures", [('sum by (instance, source) (increase(log_ssh_auth_failures_total[$__rate_interval]))', "{{instance}} {{source}}")], w=8),
        bargauge("Error patterns in the window", [('topk(10, sum by (source, pattern) (increase(log_pattern_lines_total[$__range])))', "{{source}} {{pattern}}")], w=24),
    ]
    variables = [
        query_var("target", "label_values({__name__=~\"pg_up|ssh_target_up\"}, target)", "PostgreSQL / SSH target"),
        query_var("instance", "label_values(up, instance)", "Instance"),
    ]
    return dashboard(SNAPSHOT_UID, "vitals / Event snapshot", "Everything around one event: open it with the event's time range.", variables, panels,
                     annotations=[ALERT_ANNOTATION, ("Anomalies", 'max by (signal, domain) (anomaly_severity) >= 1', "orange")],
                     refresh="", time_from="now-1h")


def main():
    boards = {
        "overview": overview(),
        "processes": processes(),
        "postgres": postgres(),
        "tables": tables(),
        "queries": queries(),
        "logs": logs(),
        "alerts": alerts(),
        "replication": replication(),
        "collector": collector(),
        "insights": insights(),
        "event-snapshot": snapshot(),
    }
    for name, board in boards.items():
        path = os.path.join(HERE, f"vitals-{name}.json")
        with open(path, "w", encoding="utf-8") as f:
            json.dump(board, f, indent=2, ensure_ascii=False)
            f.write("\n")
        print(path)


if __name__ == "__main__":
    main()
