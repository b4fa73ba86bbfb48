#!/usr/bin/env bash
# Load test of the exporter with every collector on: a real PostgreSQL 15 (DBS databases),
# an sshd standing for SSH_TARGETS ssh_disk targets, a log written at LOG_RATE lines/s, the
# process collector; wrk drives /metrics and /probe?target=... (main, ssh1..N in turn) with
# CONNECTIONS connections for DURATION seconds.
#
# Checks, and exits non-zero when one fails:
#   - no non-2xx answers and no socket errors (connect, read, write, timeout) in wrk's report;
#   - vitals' PostgreSQL sessions (pg_stat_activity, sampled every 0.2 s) never above the
#     target's max_connections (PG_LIMIT);
#   - RSS bounded: the largest VmRSS sampled (every 1 s) stays under RSS_LIMIT_MIB.
# Prints requests/s and p50/p99 latency (wrk --latency), collections vs requests (how many
# scrapes single-flight merged), and the RSS and session figures.
#
#   scripts/stress/exporter.sh [DURATION_SECONDS] [CONNECTIONS]     # defaults 60 50
#   VITALS_PROFILE=debug scripts/stress/exporter.sh 20             # CI: the debug build
#
# Needs root and the packages of scripts/setup-test-deps.sh (postgresql-15, openssh-server, wrk).
set -euo pipefail
TOOL=stress
DURATION=${1:-60}
CONNECTIONS=${2:-50}
RSS_LIMIT_MIB=${RSS_LIMIT_MIB:-150}
. "$(dirname "$0")/lib.sh"

setup_all
write_wrk_script

# Warm-up: every target answered once, SSH targets refreshed.
for _ in $(seq 50); do
  page=$(curl -fsS -H 'X-Prometheus-Scrape-Timeout-Seconds: 10' "$VURL/metrics")
  ssh_up=$(grep -Ec '^ssh_target_up{.*} 1(\.0)?$' <<< "$page" || true)
  grep -Eq '^pg_up{.*} 1(\.0)?$' <<< "$page" && [ "$ssh_up" -ge "$SSH_TARGETS" ] && break
  sleep 0.2
done
grep -Eq "^pg_up{.*} 1(\.0)?$" <<< "$page" || die "PostgreSQL target not up before the run: $(grep -E "^(pg_up|pg_scrape_errors)" <<< "$page")"
[ "$ssh_up" -ge "$SSH_TARGETS" ] || die "only $ssh_up/$SSH_TARGETS SSH targets up before the run"
rss_start=$(rss_kib "$VPID")
collections_before=$(curl -fsS "$VURL/metrics" | awk '/^vitals_scrape_collections_total / {print $2}')

# Samplers: PostgreSQL sessions every 0.2 s, RSS every second.
( while :; do pg_sessions; sleep 0.2; done ) > "$WORK/pg_sessions.txt" 2>/dev/null &
PIDS+=("$!")
( while :; do rss_kib "$VPID"; sleep 1; done ) > "$WORK/rss.txt" 2>/dev/null &
PIDS+=("$!")

echo "$TOOL: wrk, $CONNECTIONS connections, ${DURATION}s, paths: /metrics, /probe?target=main, /probe?target=ssh1..$SSH_TARGETS"
wrk -t 2 -c "$CONNECTIONS" -d "${DURATION}s" --timeout 15s --latency -s "$WORK/paths.lua" "$VURL" \
  | tee "$WORK/wrk.txt"

kill "${PIDS[@]:1}" 2>/dev/null || true
collections_after=$(curl -fsS "$VURL/metrics" | awk '/^vitals_scrape_collections_total / {print $2}')
kill -0 "$VPID" 2>/dev/null || die "vitals died during the run; log: $(tail -20 "$WORK/vitals.log")"

requests=$(awk '/requests in/ {print $1}' "$WORK/wrk.txt")
rps=$(awk '/^Requests\/sec:/ {print $2}' "$WORK/wrk.txt")
p50=$(awk '$1 == "50%" {print $2}' "$WORK/wrk.txt")
p99=$(awk '$1 == "99%" {print $2}' "$WORK/wrk.txt")
non2xx=$(awk '/Non-2xx or 3xx responses:/ {print $NF}' "$WORK/wrk.txt")
sockerr=$(awk '/Socket errors:/ {gsub(",", ""); print $4 + $6 + $8 + $10}' "$WORK/wrk.txt")
pg_max=$(sort -n "$WORK/pg_sessions.txt" | tail -1)
pg_samples=$(grep -c . "$WORK/pg_sessions.txt" || true)
rss_max=$(sort -n "$WORK/rss.txt" | tail -1)
rss_end=$(rss_kib "$VPID")
collections=$(awk -v a="$collections_before" -v b="$collections_after" 'BEGIN {print b - a - 1}')

fail=0
echo "== results (vitals $("$VITALS" --version | head -1), $(nproc) cores, load average $(cut -d' ' -f1 /proc/loadavg))"
echo "requests            $requests in ${DURATION}s, ${rps}/s"
echo "latency             p50 $p50, p99 $p99"
echo "collections         $collections for $requests requests (single-flight merged the rest)"
echo "non-2xx             ${non2xx:-0}"
echo "socket errors       ${sockerr:-0}"
echo "pg sessions         max $pg_max over $pg_samples samples (limit $PG_LIMIT)"
echo "RSS                 start $((rss_start / 1024)) MiB, max $((rss_max / 1024)) MiB, end $((rss_end / 1024)) MiB (limit $RSS_LIMIT_MIB MiB)"
[ "${non2xx:-0}" -eq 0 ] || { echo "FAIL: ${non2xx} non-2xx answers"; fail=1; }
[ "${sockerr:-0}" -eq 0 ] || { echo "FAIL: ${sockerr} socket errors"; fail=1; }
[ "$pg_samples" -gt 0 ] && [ "$pg_max" -ge 0 ] || { echo "FAIL: pg_stat_activity could not be sampled"; fail=1; }
[ "$pg_max" -le "$PG_LIMIT" ] || { echo "FAIL: $pg_max PostgreSQL sessions, above the limit $PG_LIMIT"; fail=1; }
[ "$rss_max" -le $((RSS_LIMIT_MIB * 1024)) ] || { echo "FAIL: RSS reached $((rss_max / 1024)) MiB"; fail=1; }
[ "${requests:-0}" -gt 0 ] || { echo "FAIL: wrk made no requests"; fail=1; }
if grep -qE 'level=error|panicked' "$WORK/vitals.log"; then
  echo "vitals logged errors:"; grep -E 'level=error|panicked' "$WORK/vitals.log" | head -5
fi
grep -q panicked "$WORK/vitals.log" && { echo "FAIL: vitals panicked"; fail=1; }
[ "$fail" -eq 0 ] && echo "PASS"
exit "$fail"
