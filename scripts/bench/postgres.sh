#!/usr/bin/env bash
# Side-by-side benchmark of the PostgreSQL collectors: vitals against
# prometheus-postgres-exporter (Debian package), both scraping the same throwaway
# PostgreSQL 15 with many databases, one exporter at a time.
#
# Prints, for each exporter: scrape latency p50/p95, its own CPU time per scrape, RSS after
# the scrapes (anonymous and file-backed), series per scrape, SQL statements per scrape (from
# pg_stat_statements, per exporter role) and connections it holds; then the ratios
# vitals/peer.
#
#   scripts/bench/postgres.sh                 # 100 databases, 50 scrapes each
#   DBS=20 SCRAPES=20 scripts/bench/postgres.sh
#
# Needs root (PostgreSQL runs as the postgres OS user) and the packages of
# scripts/setup-test-deps.sh. Everything listens on free loopback ports and is removed at
# the end.
set -euo pipefail
cd "$(dirname "$0")/../.."

DBS=${DBS:-100}
SCRAPES=${SCRAPES:-50}
PGBIN=/usr/lib/postgresql/15/bin
PEER=/usr/bin/prometheus-postgres-exporter

for bin in "$PGBIN/initdb" "$PGBIN/pg_ctl" "$PGBIN/psql" "$PGBIN/pgbench" "$PEER" /usr/bin/curl /usr/bin/python3; do
  [ -x "$bin" ] || { echo "bench: $bin is missing: run scripts/setup-test-deps.sh" >&2; exit 1; }
done
[ "$(id -u)" -eq 0 ] || { echo "bench: run as root (PostgreSQL runs as the postgres user)" >&2; exit 1; }

echo "== building vitals (release)"
cargo build --release --locked -q
VITALS=$PWD/target/release/vitals

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

WORK=$(mktemp -d /tmp/vitals-bench-pg.XXXXXX)
chown postgres: "$WORK"
PIDS=()
cleanup() {
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  runuser -u postgres -- "$PGBIN/pg_ctl" -D "$WORK/data" -m immediate stop >/dev/null 2>&1 || true
  rm -rf "$WORK"
}
trap cleanup EXIT

PGPORT=$(free_port)
PW=bench-$RANDOM-$RANDOM
echo "$PW" > "$WORK/pw"
chown postgres: "$WORK/pw"
echo "== PostgreSQL 15 on 127.0.0.1:$PGPORT with $DBS databases"
runuser -u postgres -- "$PGBIN/initdb" -D "$WORK/data" -U postgres --auth-local=trust \
  --auth-host=scram-sha-256 --pwfile="$WORK/pw" --no-sync --locale=C -E UTF8 >/dev/null
cat >> "$WORK/data/postgresql.conf" <<EOF
listen_addresses = '127.0.0.1'
port = $PGPORT
unix_socket_directories = '$WORK'
max_connections = 400
shared_buffers = 128MB
fsync = off
synchronous_commit = off
shared_preload_libraries = 'pg_stat_statements'
pg_stat_statements.max = 10000
pg_stat_statements.track = all
track_io_timing = on
EOF
runuser -u postgres -- "$PGBIN/pg_ctl" -D "$WORK/data" -l "$WORK/pg.log" -w start >/dev/null

psql() { "$PGBIN/psql" -X -q -A -t -h "$WORK" -p "$PGPORT" -U postgres "$@"; }
psql -d postgres -c "create extension pg_stat_statements"
# One role per exporter run, so that statements and connections are counted per run.
for role in vitals_bench vitals_1s_bench vitals_live_bench vitals_nofan_bench peer_bench; do
  psql -d postgres -c "create role $role login password '$PW' in role pg_monitor"
done
psql -d postgres -c "create database bench_tpl"
"$PGBIN/pgbench" -h "$WORK" -p "$PGPORT" -U postgres -i -q -s 1 bench_tpl >/dev/null 2>&1
psql -d bench_tpl -c "delete from pgbench_accounts where aid > 5000" -c "vacuum full analyze"
for i in $(seq -w 1 "$DBS"); do
  psql -d postgres -c "create database app$i template bench_tpl strategy file_copy"
done
psql -d postgres -c "alter database bench_tpl with allow_connections false"
# Some activity so the counters are not all zero.
"$PGBIN/pgbench" -h "$WORK" -p "$PGPORT" -U postgres -n -c 4 -T 3 app001 >/dev/null 2>&1

printf '%s\n' "$PW" > "$WORK/vitals.pass"
# vitals four times, one after the other (each exporter runs only during its own
# measurement): with its defaults (the per-database families come from a snapshot refreshed
# in the background every minute, at most 10 connections); vitals_1s, the same with a
# refresh every second, so that refreshes (of all databases, reconnecting) overlap the
# measured scrapes; vitals_live, every family read by every scrape
# (tables_refresh_interval: 0s) with as many connections as postgres_exporter holds (the
# target's and the global max_connections raised); and
# vitals_nofan, without the per-table families (tables_top_n: 0), closest to what
# postgres_exporter collects by default.
start_vitals() { # NAME EXTRA_TARGET_YAML [EXTRA_POSTGRES_YAML] -> sets PORT_<NAME>, PID_<NAME>
  local port
  port=$(free_port)
  cat > "$WORK/$1.yml" <<EOF
exporter:
  postgres:
${3:-}
    targets:
      - name: bench
        host: 127.0.0.1
        port: $PGPORT
        user: $1_bench
        password_file: $WORK/vitals.pass
        sslmode: disable
$2
EOF
  "$VITALS" exporter --config.file="$WORK/$1.yml" --web.listen-address="127.0.0.1:$port" \
    --log.level=warn 2>"$WORK/$1.log" &
  PIDS+=("$!")
  eval "PORT_$1=$port PID_$1=$!"
}
start_peer() {
  PPORT=$(free_port)
  DATA_SOURCE_NAME="postgresql://peer_bench:$PW@127.0.0.1:$PGPORT/postgres?sslmode=disable" \
    "$PEER" --web.listen-address="127.0.0.1:$PPORT" --auto-discover-databases \
    --exclude-databases=template0,template1,bench_tpl --log.level=error 2>"$WORK/peer.log" &
  PPID_=$!
  PIDS+=("$PPID_")
}

wait_up() { for _ in $(seq 100); do curl -sf -o /dev/null "$1" && return 0; sleep 0.1; done; echo "bench: $1 did not answer" >&2; exit 1; }

# bench NAME URL PID ROLE -> prints a result line, sets R_<field> and stops the exporter
bench() {
  local name=$1 url=$2 pid=$3 role=$4
  for _ in 1 2 3; do curl -sf -o /dev/null -H 'X-Prometheus-Scrape-Timeout-Seconds: 30' "$url"; done   # warm-up
  psql -d postgres -c "select pg_stat_statements_reset()" >/dev/null
  : > "$WORK/$name.times"
  # The exporter's own CPU time (user + system, clock ticks) over the measured scrapes: less
  # dependent on the machine's load than the latency.
  local ticks0
  ticks0=$(awk '{sub(/^.*\) /, ""); print $12 + $13}' "/proc/$pid/stat")
  for _ in $(seq "$SCRAPES"); do
    curl -sf -o "$WORK/$name.body" -w '%{time_total}\n' \
      -H 'X-Prometheus-Scrape-Timeout-Seconds: 30' "$url" >> "$WORK/$name.times"
  done
  local cpu
  cpu=$(awk -v t0="$ticks0" -v hz="$(getconf CLK_TCK)" -v n="$SCRAPES" \
    '{sub(/^.*\) /, ""); printf "%.1f", ($12 + $13 - t0) * 1000 / hz / n}' "/proc/$pid/stat")
  local statements conns series rss p50 p95
  statements=$(psql -d postgres -c "select coalesce(sum(calls), 0) from pg_stat_statements s join pg_roles r on r.oid = s.userid where r.rolname = '$role'")
  conns=$(psql -d postgres -c "select count(*) from pg_stat_activity where usename = '$role'")
  series=$(grep -vc '^#' "$WORK/$name.body")
  rss=$(awk '/^VmRSS/ {print $2}' "/proc/$pid/status")
  # What the RSS is made of: anonymous memory (heap, stacks, relocated data) and file-backed
  # pages (the executable's code and read-only data, shared libraries).
  local anon
  anon=$(awk '/^Anonymous:/ {print $2}' "/proc/$pid/smaps_rollup")
  p50=$(sort -n "$WORK/$name.times" | awk '{a[NR]=$1} END {print a[int((NR+1)*0.50)]}')
  p95=$(sort -n "$WORK/$name.times" | awk '{a[NR]=$1} END {i=int(NR*0.95+0.5); if (i<1) i=1; print a[i]}')
  local per_scrape
  per_scrape=$(awk -v s="$statements" -v n="$SCRAPES" 'BEGIN {printf "%.1f", s/n}')
  printf '%-18s p50 %7.1f ms  p95 %7.1f ms  RSS %7.1f MiB  series %6d  statements/scrape %7s  connections %4d\n' \
    "$name" "$(awk -v x="$p50" 'BEGIN{print x*1000}')" "$(awk -v x="$p95" 'BEGIN{print x*1000}')" \
    "$(awk -v x="$rss" 'BEGIN{print x/1024}')" "$series" "$per_scrape" "$conns"
  awk -v r="$rss" -v a="$anon" 'BEGIN {printf "                   RSS: %.1f MiB anonymous, %.1f MiB file-backed\n", a/1024, (r-a)/1024}'
  echo "                   CPU: $cpu ms per scrape (user + system)"
  # vitals says how old its per-database data is and what its last background refresh took.
  grep -E '^vitals_postgres_fanout_(age_seconds|refresh_duration_seconds)' "$WORK/$name.body" \
    | sed 's/^/                   /' || true
  eval "R_${name//[^a-z0-9]/_}=\"$p50 $p95 $rss $per_scrape $cpu\""
  kill "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
}

echo "== $SCRAPES sequential scrapes each (after 3 warm-up scrapes), $DBS databases, one exporter at a time"
run_vitals() { # NAME EXTRA_TARGET_YAML [EXTRA_POSTGRES_YAML]
  start_vitals "$1" "$2" "${3:-}"
  local port pid
  eval "port=\$PORT_$1 pid=\$PID_$1"
  wait_up "http://127.0.0.1:$port/-/ready"
  bench "$1" "http://127.0.0.1:$port/metrics" "$pid" "$1_bench"
}
run_vitals vitals ""
run_vitals vitals_1s "        tables_refresh_interval: 1s"
# vitals_live needs the global limit (exporter.postgres.max_connections, 100 by default)
# raised too: under it, the least recently used idle connection is closed to make room, so
# each scrape would reconnect to every database.
run_vitals vitals_live "        tables_refresh_interval: 0s
        max_connections: $((DBS + 3))" "    max_connections: $((DBS + 3))"
run_vitals vitals_nofan "        tables_top_n: 0"
start_peer
wait_up "http://127.0.0.1:$PPORT/"
bench postgres_exporter "http://127.0.0.1:$PPORT/metrics" "$PPID_" peer_bench

read -r p50 p95 prss pq pcpu <<< "$R_postgres_exporter"
for v in vitals vitals_1s vitals_live vitals_nofan; do
  eval "read -r v50 v95 vrss vq vcpu <<< \"\$R_$v\""
  echo "== ratios $v/postgres_exporter"
  awk -v a="$v50" -v b="$p50" 'BEGIN {printf "  scrape latency p50     %.2f\n", a/b}'
  awk -v a="$v95" -v b="$p95" 'BEGIN {printf "  scrape latency p95     %.2f\n", a/b}'
  awk -v a="$vrss" -v b="$prss" 'BEGIN {printf "  RSS                    %.2f\n", a/b}'
  awk -v a="$vq" -v b="$pq" 'BEGIN {printf "  statements per scrape  %.2f\n", (b > 0 ? a/b : 0)}'
  awk -v a="$vcpu" -v b="$pcpu" 'BEGIN {printf "  CPU per scrape         %.2f\n", (b > 0 ? a/b : 0)}'
done
echo "versions: $("$VITALS" --version | head -1); $("$PEER" --version 2>&1 | head -1); $(psql -d postgres -c 'show server_version')"
