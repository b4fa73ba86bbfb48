#!/usr/bin/env bash
# Soak test of the exporter: DURATION seconds (default 600) of steady scrape load (wrk, 4
# connections, one request per connection every 50 ms, over /metrics and every /probe
# target) against the same set-up as scripts/stress/exporter.sh (real PostgreSQL, sshd,
# a written log, processes), while targets flap every FLAP seconds, in turn:
#   log rotated (rename + new file) -> PostgreSQL stopped, started 10 s later ->
#   sshd stopped (port closed), started 10 s later.
# vitals' RSS and open file descriptors are sampled every SAMPLE seconds (default 10) into
# a CSV (kept as soak.csv in the current directory, or $CSV). After the warm-up (WARMUP
# seconds, default a fifth of the run, at least 30 s) a least-squares line is fitted to each,
# and the run fails on a growth trend:
#   RSS: slope above RSS_SLOPE_LIMIT KiB/min (default 256, i.e. 15 MiB/h) and the fitted
#     line rising more than RSS_RISE_FLOOR KiB over the window (default 2048: allocator
#     settling of a few hundred KiB in a short run is not a trend);
#   open fds: slope above FD_SLOPE_LIMIT per minute (default 0.5, i.e. 30/h) and the line
#     rising more than FD_RISE_FLOOR (default 5) over the window;
# and also when wrk saw a non-2xx answer or a socket error, when the targets are not all up
# again after the run, when vitals did not count exactly the log lines written (rotations
# included), or when vitals died or panicked.
#
#   scripts/soak/exporter.sh [DURATION_SECONDS]          # 600
#   VITALS_PROFILE=debug FLAP=30 scripts/soak/exporter.sh 150   # CI's short run
set -euo pipefail
TOOL=soak
DURATION=${1:-600}
SAMPLE=${SAMPLE:-10}
FLAP=${FLAP:-60}
WARMUP=${WARMUP:-$(( DURATION / 5 > 30 ? DURATION / 5 : 30 ))}
RSS_SLOPE_LIMIT=${RSS_SLOPE_LIMIT:-256}
FD_SLOPE_LIMIT=${FD_SLOPE_LIMIT:-0.5}
RSS_RISE_FLOOR=${RSS_RISE_FLOOR:-2048}
FD_RISE_FLOOR=${FD_RISE_FLOOR:-5}
CSV=${CSV:-$PWD/soak.csv}
. "$(dirname "$0")/../stress/lib.sh"

[ "$DURATION" -gt $((WARMUP + 3 * SAMPLE)) ] || die "DURATION must exceed WARMUP ($WARMUP s) by three samples"
setup_all
write_wrk_script
echo 'delay = function() return 50 end' >> "$WORK/paths.lua"

wrk -t 1 -c 4 -d "${DURATION}s" --timeout 15s -s "$WORK/paths.lua" "$VURL" > "$WORK/wrk.txt" 2>&1 &
WRK_PID=$!
PIDS+=("$WRK_PID")

echo "t_seconds,rss_kib,open_fds,event" > "$CSV"
start=$(date +%s)
next_sample=$start
next_flap=$((start + FLAP))
flap=0
event=""
pending_up=""   # what to restart, and when
up_at=0
echo "$TOOL: ${DURATION}s, sampling every ${SAMPLE}s into $CSV, a flap every ${FLAP}s, warm-up ${WARMUP}s"
while :; do
  now=$(date +%s)
  [ $((now - start)) -ge "$DURATION" ] && break
  kill -0 "$VPID" 2>/dev/null || die "vitals died at t=$((now - start))s: $(tail -5 "$WORK/vitals.log")"
  if [ -n "$pending_up" ] && [ "$now" -ge "$up_at" ]; then
    case $pending_up in
      pg) pg_up; event="${event:+$event;}postgres started" ;;
      ssh) sshd_up; event="${event:+$event;}sshd started" ;;
    esac
    pending_up=""
  fi
  if [ "$now" -ge "$next_flap" ]; then
    case $((flap % 3)) in
      0) rotate_log; event="${event:+$event;}log rotated" ;;
      1) pg_down; pending_up=pg; up_at=$((now + 10)); event="${event:+$event;}postgres stopped" ;;
      2) sshd_down; pending_up=ssh; up_at=$((now + 10)); event="${event:+$event;}sshd stopped" ;;
    esac
    flap=$((flap + 1))
    next_flap=$((next_flap + FLAP))
  fi
  if [ "$now" -ge "$next_sample" ]; then
    echo "$((now - start)),$(rss_kib "$VPID"),$(fds "$VPID"),$event" >> "$CSV"
    event=""
    next_sample=$((next_sample + SAMPLE))
  fi
  sleep 0.5
done
case $pending_up in pg) pg_up ;; ssh) sshd_up ;; esac
wait "$WRK_PID" || true

# After the run, with every target back: vitals answers, sees them all up again, and has
# counted every line written (across the rotations: no line lost, none twice).
stop_log_writer
written=$(cat "$WORK/logs/written")
recovered=""
for _ in $(seq 60); do
  page=$(curl -fsS -H 'X-Prometheus-Scrape-Timeout-Seconds: 10' "$VURL/metrics" || true)
  pg=$(grep -Ec '^pg_up\{.*\} 1(\.0)?$' <<< "$page" || true)
  ssh=$(grep -Ec '^ssh_target_up\{.*\} 1(\.0)?$' <<< "$page" || true)
  lines=$(grep -E '^log_lines_total\{' <<< "$page" | awk '{s += $2} END {printf "%d", s}')
  if [ "$pg" -ge 1 ] && [ "$ssh" -ge "$SSH_TARGETS" ] && [ "$lines" -ge "$written" ]; then recovered=yes; break; fi
  sleep 1
done

requests=$(awk '/requests in/ {print $1}' "$WORK/wrk.txt")
rps=$(awk '/^Requests\/sec:/ {print $2}' "$WORK/wrk.txt")
non2xx=$(awk '/Non-2xx or 3xx responses:/ {print $NF}' "$WORK/wrk.txt")
sockerr=$(awk '/Socket errors:/ {gsub(",", ""); print $4 + $6 + $8 + $10}' "$WORK/wrk.txt")

fail=0
echo "== results (vitals $("$VITALS" --version | head -1), $(nproc) cores, load average $(cut -d' ' -f1 /proc/loadavg))"
echo "requests            ${requests:-0} (${rps:-0}/s), non-2xx ${non2xx:-0}, socket errors ${sockerr:-0}"
echo "flaps               $flap; log lines written $written, counted by vitals $lines"
python3 - "$CSV" "$WARMUP" "$RSS_SLOPE_LIMIT" "$FD_SLOPE_LIMIT" "$RSS_RISE_FLOOR" "$FD_RISE_FLOOR" <<'PY' || fail=1
import csv, sys
path = sys.argv[1]
warmup, rss_limit, fd_limit, rss_floor, fd_floor = map(float, sys.argv[2:7])
rows = [r for r in csv.DictReader(open(path))]
after = [r for r in rows if float(r["t_seconds"]) >= warmup]
def slope(col):
    xs = [float(r["t_seconds"]) / 60 for r in after]
    ys = [float(r[col]) for r in after]
    n = len(xs)
    mx, my = sum(xs) / n, sum(ys) / n
    sxx = sum((x - mx) ** 2 for x in xs)
    return (sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sxx if sxx else 0.0), min(ys), max(ys)
if len(after) < 3:
    sys.exit(f"FAIL: only {len(after)} samples after the warm-up")
rss_s, rss_min, rss_max = slope("rss_kib")
fd_s, fd_min, fd_max = slope("open_fds")
print(f"samples             {len(rows)} ({len(after)} after the {warmup:.0f}s warm-up)")
span = (float(after[-1]["t_seconds"]) - float(after[0]["t_seconds"])) / 60
print(f"RSS                 {rss_min/1024:.1f}..{rss_max/1024:.1f} MiB after warm-up, slope {rss_s:+.1f} KiB/min, fitted rise {rss_s*span:+.0f} KiB (limits {rss_limit:.0f} KiB/min and {rss_floor:.0f} KiB)")
print(f"open fds            {fd_min:.0f}..{fd_max:.0f} after warm-up, slope {fd_s:+.2f}/min, fitted rise {fd_s*span:+.1f} (limits {fd_limit}/min and {fd_floor:.0f})")
bad = []
if rss_s > rss_limit and rss_s * span > rss_floor:
    bad.append(f"RSS grows {rss_s:.1f} KiB/min")
if fd_s > fd_limit and fd_s * span > fd_floor:
    bad.append(f"open fds grow {fd_s:.2f}/min")
if bad:
    sys.exit("FAIL: " + "; ".join(bad))
PY
[ "${non2xx:-0}" -eq 0 ] || { echo "FAIL: ${non2xx} non-2xx answers"; fail=1; }
[ "${sockerr:-0}" -eq 0 ] || { echo "FAIL: ${sockerr} socket errors"; fail=1; }
[ "${requests:-0}" -gt 0 ] || { echo "FAIL: wrk made no requests: $(cat "$WORK/wrk.txt")"; fail=1; }
[ -n "$recovered" ] || { echo "FAIL: not recovered 60 s after the run (pg up: $pg, ssh up: $ssh/$SSH_TARGETS, log lines $lines of $written)"; fail=1; }
[ "$lines" -eq "$written" ] || { echo "FAIL: vitals counted $lines log lines, $written were written"; fail=1; }
grep -q panicked "$WORK/vitals.log" && { echo "FAIL: vitals panicked"; fail=1; }
[ "$fail" -eq 0 ] && echo "PASS"
exit "$fail"
