#!/usr/bin/env bash
# Process collector benchmark: vitals vs prometheus-process-exporter, side by side in one run,
# on the same host with EXTRA extra processes (default 2000), both grouping every process by
# command name (process-exporter with threads and smaps off). Prints scrape CPU time and
# latency of both and the ratios vitals/peer.
#
#   scripts/bench/process.sh [EXTRA] [SCRAPES]
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
. "$here/lib.sh"

EXTRA=${1:-2000}
SCRAPES=${2:-50}
PEER=/usr/bin/prometheus-process-exporter
[ -x "$PEER" ] || { echo "bench: install prometheus-process-exporter (scripts/setup-test-deps.sh)" >&2; exit 1; }
VITALS=$(vitals_bin)

work=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  pkill -P $$ sleep 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

ulimit -u unlimited 2>/dev/null || true
for _ in $(seq "$EXTRA"); do sleep 900 & done
echo "bench: started $EXTRA extra processes; $(ls -d /proc/[0-9]* | wc -l) processes in /proc"

cat > "$work/vitals.yml" <<YML
exporter:
  process:
    groups:
      - name: "{comm}"
        cmdline: ['.+']
YML
cat > "$work/pe.yml" <<YML
process_names:
  - name: "{{.Comm}}"
    cmdline: ['.+']
YML

vp=$(free_port); pp=$(free_port)
"$VITALS" exporter --config.file="$work/vitals.yml" --web.listen-address=127.0.0.1:$vp \
  --collector.disable-defaults --collector.process --log.level=warn & pids+=($!); vpid=$!
"$PEER" -config.path="$work/pe.yml" -web.listen-address=127.0.0.1:$pp \
  -threads=false -gather-smaps=false -children=false >/dev/null 2>&1 & pids+=($!); ppid=$!
wait_http "http://127.0.0.1:$vp/metrics"
wait_http "http://127.0.0.1:$pp/metrics"

# Warm-up: both build their caches, as in steady operation.
scrape_times "http://127.0.0.1:$vp/metrics" 3 >/dev/null
scrape_times "http://127.0.0.1:$pp/metrics" 3 >/dev/null

tck=$(getconf CLK_TCK)
measure() { # pid url -> "cpu_per_scrape_s p50 p95 rss_kib"
  local pid=$1 url=$2 c0 c1 lat
  c0=$(cpu_ticks "$pid")
  lat=$(scrape_times "$url" "$SCRAPES" | percentiles)
  c1=$(cpu_ticks "$pid")
  echo "$(awk -v a="$c0" -v b="$c1" -v t="$tck" -v n="$SCRAPES" 'BEGIN { printf "%.6f", (b - a) / t / n }') $lat $(rss_kib "$pid")"
}
read -r v_cpu v_p50 v_p95 v_rss < <(measure "$vpid" "http://127.0.0.1:$vp/metrics")
read -r p_cpu p_p50 p_p95 p_rss < <(measure "$ppid" "http://127.0.0.1:$pp/metrics")
groups_v=$(curl -fsS "http://127.0.0.1:$vp/metrics" | grep -c '^namedprocess_namegroup_num_procs{')
groups_p=$(curl -fsS "http://127.0.0.1:$pp/metrics" | grep -c '^namedprocess_namegroup_num_procs{')

printf '\nprocess benchmark: %s extra processes, %s scrapes each, groups vitals=%s process-exporter=%s\n' "$EXTRA" "$SCRAPES" "$groups_v" "$groups_p"
printf '%-28s %14s %14s %10s\n' metric vitals process-exporter ratio
printf '%-28s %14s %14s %10s\n' "CPU per scrape (s)" "$v_cpu" "$p_cpu" "$(ratio "$v_cpu" "$p_cpu")"
printf '%-28s %14s %14s %10s\n' "scrape latency p50 (s)" "$v_p50" "$p_p50" "$(ratio "$v_p50" "$p_p50")"
printf '%-28s %14s %14s %10s\n' "scrape latency p95 (s)" "$v_p95" "$p_p95" "$(ratio "$v_p95" "$p_p95")"
printf '%-28s %14s %14s %10s\n' "RSS (KiB)" "$v_rss" "$p_rss" "$(ratio "$v_rss" "$p_rss")"
