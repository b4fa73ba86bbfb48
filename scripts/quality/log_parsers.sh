#!/usr/bin/env bash
# Parser coverage on real logs from loghub (../shared/data/loghub, research licence, not in
# the repo): every line of OpenSSH_2k.log and Linux_2k.log must parse with the syslog parser,
# and failed SSH authentications per source address must match loghub's structured CSV
# (events "Failed <method> for ..." plus "message repeated N times: [ Failed ...]" counted N
# times). Exits non-zero on any difference; says "skipped" when ../shared/data is absent.
#
#   scripts/quality/log_parsers.sh [LOGHUB_DIR]
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
data=${1:-$root/../shared/data/loghub}
if [ ! -d "$data/OpenSSH" ]; then
  echo "log_parsers: skipped: no loghub data at $data"
  exit 0
fi
(cd "$root" && cargo build --release --locked -q)
vitals="$root/target/release/vitals"
status=0
for sys in OpenSSH Linux; do
  out=$("$vitals" logs check "$data/$sys/${sys}_2k.log" --parser syslog --ip-budget 100000)
  fails=$(printf '%s' "$out" | python3 -c 'import json,sys; print(json.load(sys.stdin)["parse_failures"])')
  lines=$(wc -l < "$data/$sys/${sys}_2k.log")
  echo "log_parsers: $sys: $lines lines, $fails parse failures"
  [ "$fails" -eq 0 ] || status=1
done

"$vitals" logs check "$data/OpenSSH/OpenSSH_2k.log" --parser syslog --ip-budget 100000 > /tmp/vitals-openssh.json
python3 - "$data/OpenSSH/OpenSSH_2k.log_structured.csv" /tmp/vitals-openssh.json <<'PY' || status=1
import csv, json, re, sys
from collections import Counter
expected = Counter()
with open(sys.argv[1], newline="") as f:
    for row in csv.DictReader(f):
        content = row["Content"]
        m = re.match(r"(?:message repeated (\d+) times: \[ )?Failed \S+ for .*? from (\S+) port", content)
        if m:
            expected[m.group(2)] += int(m.group(1) or 1)
got = json.load(open(sys.argv[2]))["ssh_auth_failures_by_ip"]
got = Counter({k: v for k, v in got.items() if k != "other"})
diff = {ip: (expected.get(ip, 0), got.get(ip, 0)) for ip in set(expected) | set(got) if expected.get(ip, 0) != got.get(ip, 0)}
print(f"log_parsers: OpenSSH failed authentications: {sum(expected.values())} expected from the CSV over {len(expected)} addresses, {sum(got.values())} counted; {len(diff)} addresses differ")
for ip, (e, g) in sorted(diff.items())[:10]:
    print(f"  {ip}: expected {e}, counted {g}")
sys.exit(1 if diff else 0)
PY
exit $status
