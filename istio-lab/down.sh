#!/usr/bin/env bash
# Stops what up.sh and sidecar.sh started: each was started in its own
# process group, whose id is in a .pid file under target/istio-lab/run.
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
RUN="$ROOT/target/istio-lab/run"
[ -d "$RUN" ] || exit 0
for f in "$RUN"/pods/*/pid "$RUN"/pods/*/app.pid "$RUN"/*.pid; do
  [ -f "$f" ] || continue
  pid=$(cat "$f")
  kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null
  rm -f "$f"
done
sleep 1
"$(dirname "$0")/podnet.sh" down
