#!/usr/bin/env bash
# The main job (README): installs what is missing, builds, starts connbrokerd
# on the embedded SQLite default with the example secrets, and shows it
# serving: two client processes sharing one connection, then a cached query.
# Pass --keep to leave the daemon running afterwards.
set -euo pipefail
cd "$(dirname "$0")/.."
bash deploy/build.sh >/dev/null
root=$PWD
build_dir=${BUILD_DIR:-build}
cli="$root/$build_dir/client/connbroker"
work=$(mktemp -d /tmp/connbroker-demo.XXXXXX)
socket="unix:$work/connbroker.sock"
cp deploy/examples/secrets.toml "$work/secrets.toml"
cd "$work"  # sqlite:///demo.db is relative to the daemon's directory

"$root/$build_dir/server/connbrokerd" --listen "$socket" \
  --secrets "$work/secrets.toml" 2>"$work/connbrokerd.log" &
daemon=$!
if [[ ${1:-} != --keep ]]; then
  trap 'kill -TERM $daemon 2>/dev/null; wait $daemon 2>/dev/null || true' EXIT
fi
export CONNBROKER_TARGET=$socket
for _ in $(seq 100); do  # a demo may poll; the tests wait on the channel
  "$cli" stats >/dev/null 2>&1 && break
  sleep 0.05
done

step() { printf '\n\033[1m$ %s\033[0m\n' "$*"; "$@"; }
echo "connbrokerd (pid $daemon) serving on $socket"
echo; echo "# two separate client processes ask for the same connection:"
echo "# the first creates it, the second joins it (same handle, created = false)"
step "$cli" connect demo
step "$cli" connect demo
step "$cli" execute demo "CREATE TABLE IF NOT EXISTS trips (id INTEGER PRIMARY KEY, city TEXT, km REAL)"
step "$cli" execute demo "INSERT INTO trips (city, km) VALUES ('Lisbon', 12.5), ('Porto', 7.25), ('Faro', NULL)"
echo; echo "# a query cached for 60 s: the second run is served from the cache"
step "$cli" query demo "SELECT city, km FROM trips ORDER BY id" --ttl 60
step "$cli" query demo "SELECT city, km FROM trips ORDER BY id" --ttl 60
echo; echo "# a transaction over one session stream: the shell reads statements from a pipe;"
echo "# the rollback leaves nothing, the commit is seen by another process"
printf '%s\n' "BEGIN;" "INSERT INTO trips (city, km) VALUES ('Braga', 3.5);" "ROLLBACK;" \
  "BEGIN;" "INSERT INTO trips (city, km) VALUES ('Coimbra', 4.0);" "COMMIT;" >"$work/txn.sql"
printf '\n\033[1m$ %s\033[0m\n' "$cli shell demo < txn.sql"
"$cli" shell demo <"$work/txn.sql"
step "$cli" query demo "SELECT city FROM trips WHERE city IN ('Braga', 'Coimbra')"
echo; echo "# a Python process (Debian's /usr/bin/python3): st.connection's API and a"
echo "# pandas DataFrame from the same shared connection and the daemon's cache"
step env PYTHONPATH="$root/$build_dir/client/python" /usr/bin/python3 -c '
import connbroker
conn = connbroker.connection("demo")
df = conn.query("SELECT city, km FROM trips ORDER BY id", ttl=60)
print(df)
print(df.dtypes.to_dict(), "handle", conn.handle)'
step "$cli" connections
step "$cli" stats
echo; echo "daemon log: $work/connbrokerd.log"
if [[ ${1:-} == --keep ]]; then
  echo "daemon left running (pid $daemon); stop it with: kill $daemon"
fi
