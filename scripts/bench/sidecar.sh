#!/usr/bin/env bash
# Sidecar cycle cost: SERIES series with DAYS days of 5-minute history in a real
# VictoriaMetrics (Debian package victoria-metrics), evaluated by `vitals sidecar`.
# Reports the first cycle (which loads the history: the newest day at 5 minutes, the rest
# hourly), the cycles after it that fill in the rest of the full-resolution part (how many,
# the longest, their queries: fill_cycles/max_s/queries), a steady cycle (only new points),
# peak RSS, and queries per steady cycle, for two splits of the same series into signals, to
# show that queries grow with signals, not with series.
#
#   scripts/bench/sidecar.sh [SERIES=1000] [DAYS=30]
#
# VITALS_BIN=path runs that binary instead of building this tree's release binary (e.g. to
# compare with an older build); QUICK=1 skips the steady cycle (which waits for the next
# 5-minute grid point); EXTRA_CONFIG='key: value' adds sidecar keys (one a line), e.g.
# EXTRA_CONFIG='history_coarse_step: 5m' loads the whole history at full resolution.
# PERF_DIR=dir records the first cycle of the sidecar and of VictoriaMetrics with `perf record`
# (dir/sidecar-<signals>.perf, dir/vm-<signals>.perf; read with `perf report -i FILE`).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
. "$here/lib.sh"
SERIES=${1:-1000}
DAYS=${2:-30}
VM=/usr/bin/victoria-metrics
[ -x "$VM" ] || { echo "bench: $VM missing (apt-get install victoria-metrics)" >&2; exit 1; }
bin=${VITALS_BIN:-$(vitals_bin)}
work=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT

vm_port=$(free_port)
"$VM" -httpListenAddr="127.0.0.1:$vm_port" -storageDataPath="$work/vm" -retentionPeriod=10y \
  -search.latencyOffset=0s -search.disableCache -loggerLevel=ERROR >"$work/vm.log" 2>&1 &
vm_pid=$!
pids+=($vm_pid)
wait_http "http://127.0.0.1:$vm_port/health"
tck=$(getconf CLK_TCK)

# History: SERIES series named bench_value{sig="s<k>",series="<i>"}, a daily wave plus noise,
# every 5 minutes for DAYS days, ending now.
echo "bench: importing $SERIES series x $DAYS days at 5m into VictoriaMetrics..." >&2
start=$(date +%s)
python3 - "$SERIES" "$DAYS" <<'PY' | curl -fsS --data-binary @- "http://127.0.0.1:$vm_port/api/v1/import/prometheus"
import math, random, sys, time
series, days = int(sys.argv[1]), int(sys.argv[2])
end = int(time.time()) // 300 * 300
t0 = end - days * 86400
rnd = random.Random(1)
out = sys.stdout
for i in range(series):
    base = 100 + i
    lines = []
    for t in range(t0, end + 1, 300):
        v = base + 20 * math.sin(2 * math.pi * (t % 86400) / 86400) + rnd.gauss(0, 3)
        lines.append(f'bench_value{{series="{i}",sig="s{i % 20}"}} {v:.3f} {t * 1000}\n')
    out.write("".join(lines))
PY
curl -fsS "http://127.0.0.1:$vm_port/internal/force_flush" >/dev/null
echo "bench: import took $(( $(date +%s) - start )) s" >&2

# Waits for the sidecar's cycle counter to reach N; prints its /metrics then.
wait_cycles() {
  local url=$1 n=$2 m
  for _ in $(seq 3000); do
    m=$(curl -fsS "$url/metrics" 2>/dev/null || true)
    c=$(awk '/^vitals_sidecar_cycles_total /{print $2}' <<<"$m")
    if [ -n "$c" ] && awk -v c="$c" -v n="$n" 'BEGIN{exit !(c >= n)}'; then echo "$m"; return 0; fi
    sleep 0.1
  done
  echo "bench: the sidecar did not reach cycle $n" >&2; return 1
}
val() { awk -v k="$1" '$1 == k {print $2}' <<<"$2"; }

# Pushes one new point per series at grid time $1 (ms timestamps).
push_points() {
  python3 - "$SERIES" "$1" <<'PY' | curl -fsS --data-binary @- "http://127.0.0.1:$vm_port/api/v1/import/prometheus"
import sys
series, t = int(sys.argv[1]), int(sys.argv[2])
sys.stdout.write("".join(f'bench_value{{series="{i}",sig="s{i % 20}"}} {100 + i} {t * 1000}\n' for i in range(series)))
PY
  curl -fsS "http://127.0.0.1:$vm_port/internal/force_flush" >/dev/null
}

# Waits for the first cycle that ran at or after unix time $2; prints its /metrics.
wait_cycle_after() {
  local url=$1 t=$2 m ts
  for _ in $(seq 6000); do
    m=$(curl -fsS "$url/metrics" 2>/dev/null || true)
    ts=$(awk '/^vitals_sidecar_last_cycle_timestamp_seconds /{print $2}' <<<"$m")
    if [ -n "$ts" ] && awk -v a="$ts" -v b="$t" 'BEGIN{exit !(a >= b)}'; then echo "$m"; return 0; fi
    sleep 0.1
  done
  echo "bench: no cycle after $t" >&2; return 1
}

# One sidecar with SIGNALS signals over the same series. With STEADY=1 also waits for the
# next 5-minute grid point (up to 5 minutes), pushes it, and measures the cycle that takes it.
run_case() {
  local signals=$1 steady=$2
  local cfg="$work/sidecar-$signals.yml" port
  {
    echo "sidecar:"
    echo "  prometheus: {url: 'http://127.0.0.1:$vm_port'}"
    # A long interval: a cycle that overruns it is followed at once by the next, and the
    # first cycle's figures would be overwritten before they are read.
    echo "  interval: 30s"
    echo "  resolution: 5m"
    echo "  history: ${DAYS}d"
    echo "  default_signals: false"
    echo "  default_recommendations: false"
    echo "  default_slos: false"
    echo "  max_series_per_signal: 100000"
    if [ -n "${EXTRA_CONFIG:-}" ]; then sed 's/^/  /' <<<"$EXTRA_CONFIG"; fi
    echo "  signals:"
    if [ "$signals" = 1 ]; then
      echo "    - {name: all, domain: bench, expr: 'bench_value', direction: both}"
    else
      for k in $(seq 0 $((signals - 1))); do
        echo "    - {name: s$k, domain: bench, expr: 'bench_value{sig=\"s$k\"}', direction: both}"
      done
    fi
  } >"$cfg"
  port=$(free_port)
  local vm0
  vm0=$(cpu_ticks "$vm_pid")
  "$bin" sidecar --config.file="$cfg" --web.listen-address="127.0.0.1:$port" --log.level=warn \
    >"$work/sidecar-$signals.log" 2>&1 &
  local pid=$!
  pids+=($pid)
  wait_http "http://127.0.0.1:$port/-/healthy"
  local m1 hwm1 series first_q first_s steady_s="-" steady_q="-" hwm rss
  local perf_pids=()
  if [ -n "${PERF_DIR:-}" ]; then
    mkdir -p "$PERF_DIR"
    perf record -q -F 1999 -g -p "$pid" -o "$PERF_DIR/sidecar-$signals.perf" 2>/dev/null &
    perf_pids+=($!)
    perf record -q -F 1999 -g -p "$vm_pid" -o "$PERF_DIR/vm-$signals.perf" 2>/dev/null &
    perf_pids+=($!)
  fi
  m1=$(wait_cycles "http://127.0.0.1:$port" 1)
  for p in "${perf_pids[@]}"; do kill -INT "$p"; wait "$p" 2>/dev/null || true; done
  hwm1=$(awk '/^VmHWM:/{print $2}' "/proc/$pid/status")
  # Where the first cycle's time goes: CPU seconds of the sidecar and of VictoriaMetrics
  # from the sidecar's start to the end of its first cycle (both share the machine's cores).
  local cpu_sc cpu_vm
  cpu_sc=$(awk -v t="$(cpu_ticks "$pid")" -v k="$tck" 'BEGIN{printf "%.2f", t / k}')
  cpu_vm=$(awk -v a="$(cpu_ticks "$vm_pid")" -v b="$vm0" -v k="$tck" 'BEGIN{printf "%.2f", (a - b) / k}')
  series=$(grep -c '^anomaly_severity{' <<<"$m1" || true)
  first_q=$(val 'vitals_sidecar_queries_total{result="success"}' "$m1")
  first_s=$(val vitals_sidecar_cycle_duration_seconds "$m1")
  # The cycles after the first fill in the full-resolution part it left coarse: how many,
  # the longest of them, and their queries (cycles 30 s apart).
  local fill_n=0 fill_max=0 fill_q=0 mc q0 q1 pending
  q0=$(val 'vitals_sidecar_queries_total{result="success"}' "$m1")
  pending=$(awk '/^vitals_sidecar_signal_backfill_pending_seconds/{s+=$2} END{print s+0}' <<<"$m1")
  while awk -v p="$pending" 'BEGIN{exit !(p > 0)}' && [ "$fill_n" -lt 50 ]; do
    fill_n=$((fill_n + 1))
    mc=$(wait_cycles "http://127.0.0.1:$port" $((fill_n + 1)))
    fill_max=$(awk -v a="$fill_max" -v b="$(val vitals_sidecar_cycle_duration_seconds "$mc")" 'BEGIN{print (b > a ? b : a)}')
    pending=$(awk '/^vitals_sidecar_signal_backfill_pending_seconds/{s+=$2} END{print s+0}' <<<"$mc")
    q1=$(val 'vitals_sidecar_queries_total{result="success"}' "$mc")
  done
  [ "$fill_n" = 0 ] || fill_q=$((q1 - q0))
  if [ "$steady" = 1 ]; then
    local next=$(( ($(date +%s) / 300 + 1) * 300 ))
    echo "bench: waiting $(( next - $(date +%s) )) s for the next grid point" >&2
    sleep $(( next - $(date +%s) - 1 > 0 ? next - $(date +%s) - 1 : 0 ))
    local before
    before=$(curl -fsS "http://127.0.0.1:$port/metrics")
    push_points "$next"
    local m2
    m2=$(wait_cycle_after "http://127.0.0.1:$port" "$next")
    steady_s=$(val vitals_sidecar_cycle_duration_seconds "$m2")
    steady_q=$(awk -v a="$(val 'vitals_sidecar_queries_total{result="success"}' "$m2")" \
      -v b="$(val 'vitals_sidecar_queries_total{result="success"}' "$before")" 'BEGIN{print a-b}')
  fi
  hwm=$(awk '/^VmHWM:/{print $2}' "/proc/$pid/status")
  rss=$(rss_kib "$pid")
  printf '%-8s %-7s %-15s %-13s %-12s %-12s %-22s %-15s %-14s %-14s %s\n' "$signals" "$series" "$first_s" "$first_q" \
    "$cpu_sc" "$cpu_vm" "$fill_n/$(printf %.2f "$fill_max")/$fill_q" "$steady_s" "$steady_q" "$((hwm / 1024))" "$((rss / 1024))"
  kill "$pid"; wait "$pid" 2>/dev/null || true
}

echo
echo "sidecar: $SERIES series, $DAYS days of 5-minute history each (VictoriaMetrics $("$VM" -version 2>&1 | head -1))"
printf '%-8s %-7s %-15s %-13s %-12s %-12s %-22s %-15s %-14s %-14s %s\n' signals series first_cycle_s first_queries first_cpu_s vm_cpu_s fill_cycles/max_s/queries steady_cycle_s steady_queries peak_rss_mib rss_mib
run_case 1 0
run_case 20 "$([ "${QUICK:-0}" = 1 ] && echo 0 || echo 1)"
