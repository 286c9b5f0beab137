#!/usr/bin/env bash
# Starts and stops the real PostgreSQL and MariaDB servers the tests run
# against, each in a subdirectory of DIR, listening on a free TCP port on
# 127.0.0.1 and on a Unix socket inside DIR. Never touches the system clusters
# the Debian packages create.
#
#   db-servers.sh start DIR          both servers (initialises them when new),
#                                    then writes DIR/env.sh
#   db-servers.sh stop DIR           both; fine when already stopped
#   db-servers.sh start-pg|stop-pg|restart-pg DIR
#   db-servers.sh start-mysql|stop-mysql|restart-mysql DIR
#
# A restart keeps the port and the data. Typical use:
#
#   bash tests/servers/db-servers.sh start /tmp/cbsrv
#   source /tmp/cbsrv/env.sh     # CONNBROKER_TEST_PG_*, CONNBROKER_TEST_MYSQL_*
#   bash tests/servers/db-servers.sh stop /tmp/cbsrv
#
# Accounts: PostgreSQL role cbtest (superuser) and MariaDB cbtest@127.0.0.1 and
# cbtest@localhost (ALL PRIVILEGES on *.*), password cbtest-secret, database
# cbtest; password authentication over TCP. Run as root, the servers run as
# the postgres and mysql system users (connbroker-test when those are
# missing); DIR and its parents must be reachable by them.
set -euo pipefail

readonly TEST_USER=cbtest
readonly TEST_PASSWORD=cbtest-secret
readonly TEST_DATABASE=cbtest
readonly WAIT_SECONDS=60

script=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/$(basename "${BASH_SOURCE[0]}")

die() {
  echo "db-servers: $*" >&2
  exit 1
}
log() { echo "db-servers: $*"; }

usage() {
  sed -n '2,/^set -euo/p' "$script" | sed '$d; s/^# \{0,1\}//' >&2
  exit 2
}

# The last lines of a server's log, for an error message.
log_tail() {
  local file=$1
  if [[ -f $file ]]; then
    echo "---- last lines of $file ----" >&2
    tail -n 40 "$file" >&2 || true
    echo "----" >&2
  else
    echo "(no log at $file)" >&2
  fi
}

# A TCP port on 127.0.0.1 that nobody listens on right now.
free_port() {
  local py
  for py in /usr/bin/python3 python3; do
    if command -v "$py" >/dev/null 2>&1; then
      "$py" -c 'import socket
s = socket.socket()
s.bind(("127.0.0.1", 0))
print(s.getsockname()[1])' && return 0
    fi
  done
  local port i
  for ((i = 0; i < 200; i++)); do
    port=$((20000 + RANDOM % 30000))
    if ! (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
      echo "$port"
      return 0
    fi
  done
  die "no free TCP port found on 127.0.0.1"
}

is_root() { [[ $(id -u) -eq 0 ]]; }

# The system user a server runs as: $1 when it exists, else connbroker-test
# (created). Not root: the current user.
server_user() {
  if ! is_root; then
    id -un
  elif id -u "$1" >/dev/null 2>&1; then
    echo "$1"
  else
    if ! id -u connbroker-test >/dev/null 2>&1; then
      useradd --system --user-group --no-create-home --home-dir /nonexistent \
        --shell /usr/sbin/nologin connbroker-test >&2
    fi
    echo connbroker-test
  fi
}

# Runs a command as the unprivileged user $1 (directly when not root).
as_user() {
  local user=$1
  shift
  if is_root; then
    setpriv --reuid="$user" --regid="$(id -g "$user")" --init-groups \
      --reset-env -- "$@"
  else
    "$@"
  fi
}

# Makes DIR (absolute, existing) usable by the server users.
prepare_dir() {
  mkdir -p "$dir"
  chmod 0755 "$dir"
}

check_reachable() {
  local user=$1 path=$2
  as_user "$user" test -w "$path" ||
    die "$path is not writable by user $user (are all its parent" \
      "directories searchable by others? use a directory under /tmp)"
}

check_socket_length() {
  ((${#1} < 100)) || die "socket path $1 is too long for a Unix socket;" \
    "use a shorter DIR"
}

# ---- PostgreSQL -------------------------------------------------------------

pg_bin() {
  local candidates=() d
  for d in /usr/lib/postgresql/*/bin; do
    [[ -x $d/initdb && -x $d/pg_ctl ]] && candidates+=("$d")
  done
  ((${#candidates[@]} > 0)) ||
    die "no PostgreSQL server found in /usr/lib/postgresql/*/bin" \
      "(run deploy/install-deps.sh)"
  printf '%s\n' "${candidates[@]}" | sort -V | tail -n 1
}

pg_setup_vars() {
  pg_user=$(server_user postgres)
  pg_dir=$dir/pg
  pg_data=$pg_dir/data
  pg_log=$pg_dir/postgres.log
  pg_bindir=$(pg_bin)
}

pg_port() { cat "$pg_dir/port"; }

# Whether the postmaster of DIR lives. Not pg_ctl status: that takes a zombie
# (a killed postmaster its reaper has not collected yet) for a running server.
pg_running() {
  local pid
  [[ -f $pg_data/postmaster.pid ]] || return 1
  pid=$(head -n 1 "$pg_data/postmaster.pid")
  [[ $pid =~ ^[0-9]+$ ]] || return 1
  [[ $(cat "/proc/$pid/comm" 2>/dev/null) == postgres ]] || return 1
  [[ $(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null) != Z ]]
}

# Runs the SQL on stdin as the bootstrap superuser, through the socket.
pg_psql() {
  as_user "$pg_user" "$pg_bindir/psql" -X -q -v ON_ERROR_STOP=1 \
    -h "$pg_dir" -p "$(pg_port)" -U postgres -d postgres
}

pg_init() {
  log "initialising PostgreSQL in $pg_data"
  rm -rf "$pg_data" "$pg_dir/initialised"
  mkdir -p "$pg_dir"
  chmod 0755 "$pg_dir"
  is_root && chown "$pg_user:" "$pg_dir"
  check_reachable "$pg_user" "$pg_dir"
  local port
  port=$(free_port)
  check_socket_length "$pg_dir/.s.PGSQL.$port"
  echo "$port" >"$pg_dir/port"
  # The bootstrap superuser "postgres" gets in through the Unix socket only
  # (trust; the socket lives in DIR); TCP wants a password.
  as_user "$pg_user" "$pg_bindir/initdb" -D "$pg_data" -U postgres \
    --auth-local=trust --auth-host=scram-sha-256 -E UTF8 --locale=C \
    --no-sync --no-instructions >"$pg_dir/initdb.log" 2>&1 ||
    {
      log_tail "$pg_dir/initdb.log"
      die "initdb failed"
    }
  # In postgresql.conf, so that a plain pg_ctl restart keeps the settings.
  cat >>"$pg_data/postgresql.conf" <<EOF

# connbroker tests (tests/servers/db-servers.sh)
listen_addresses = '127.0.0.1'
port = $port
unix_socket_directories = '$pg_dir'
max_connections = 200
shared_buffers = 32MB
fsync = off
synchronous_commit = off
full_page_writes = off
password_encryption = scram-sha-256
log_min_messages = warning
log_connections = off
EOF
  pg_start_server
  pg_psql <<EOF
CREATE ROLE $TEST_USER LOGIN SUPERUSER PASSWORD '$TEST_PASSWORD';
CREATE DATABASE $TEST_DATABASE OWNER $TEST_USER;
EOF
  touch "$pg_dir/initialised"
}

pg_start_server() {
  if ! as_user "$pg_user" "$pg_bindir/pg_ctl" -D "$pg_data" -l "$pg_log" \
    -w -t "$WAIT_SECONDS" start >/dev/null; then
    log_tail "$pg_log"
    die "PostgreSQL failed to start (data $pg_data, log $pg_log)"
  fi
  local i
  for ((i = 0; i < WAIT_SECONDS * 4; i++)); do
    if "$pg_bindir/pg_isready" -q -h 127.0.0.1 -p "$(pg_port)" -t 1; then
      return 0
    fi
    sleep 0.25
  done
  log_tail "$pg_log"
  die "PostgreSQL does not accept connections on 127.0.0.1:$(pg_port)" \
    "after ${WAIT_SECONDS}s"
}

# After a kill -9 the postmaster stays a zombie until its reaper collects it,
# and PostgreSQL will not start while its old pid still answers kill -0.
pg_wait_zombie() {
  local pid i
  [[ -f $pg_data/postmaster.pid ]] || return 0
  pid=$(head -n 1 "$pg_data/postmaster.pid")
  [[ $pid =~ ^[0-9]+$ ]] || return 0
  for ((i = 0; i < WAIT_SECONDS * 4; i++)); do
    [[ $(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null) == Z ]] || return 0
    sleep 0.25
  done
}

# The test account logs in with its password over TCP.
pg_check_login() {
  local out
  if ! out=$(PGPASSWORD=$TEST_PASSWORD PGCONNECT_TIMEOUT=5 "$pg_bindir/psql" \
    -X -A -t -h 127.0.0.1 -p "$(pg_port)" -U "$TEST_USER" -d "$TEST_DATABASE" \
    -c 'SELECT 1' 2>&1) || [[ $out != 1 ]]; then
    log_tail "$pg_log"
    die "PostgreSQL is up but $TEST_USER cannot log in over TCP: $out"
  fi
}

start_pg() {
  pg_setup_vars
  if [[ ! -f $pg_dir/initialised ]]; then
    pg_running && stop_pg
    pg_init
  elif pg_running; then
    pg_check_login
    log "PostgreSQL already running on 127.0.0.1:$(pg_port)"
    return 0
  else
    pg_wait_zombie
    pg_start_server
  fi
  pg_check_login
  log "PostgreSQL $(basename "$(dirname "$pg_bindir")") on 127.0.0.1:$(pg_port)" \
    "(socket dir $pg_dir, data $pg_data)"
}

stop_pg() {
  pg_setup_vars
  [[ -d $pg_data ]] || return 0
  if ! pg_running; then
    log "PostgreSQL in $pg_data is not running"
    return 0
  fi
  if ! as_user "$pg_user" "$pg_bindir/pg_ctl" -D "$pg_data" -m fast -w \
    -t "$WAIT_SECONDS" stop >/dev/null; then
    log "fast shutdown failed; immediate shutdown"
    as_user "$pg_user" "$pg_bindir/pg_ctl" -D "$pg_data" -m immediate -w \
      -t "$WAIT_SECONDS" stop >/dev/null || true
  fi
  log "PostgreSQL stopped"
}

# ---- MariaDB ----------------------------------------------------------------

find_program() {
  local name
  for name in "$@"; do
    if command -v "$name" >/dev/null 2>&1; then
      command -v "$name"
      return 0
    fi
    if [[ -x /usr/sbin/$name ]]; then
      echo "/usr/sbin/$name"
      return 0
    fi
  done
  die "none of $* found (run deploy/install-deps.sh)"
}

my_setup_vars() {
  my_user=$(server_user mysql)
  my_dir=$dir/mysql
  my_data=$my_dir/data
  my_cnf=$my_dir/my.cnf
  my_log=$my_dir/mariadbd.log
  my_pidfile=$my_dir/mariadbd.pid
  my_socket=$my_dir/mysqld.sock
  mariadbd=$(find_program mariadbd mysqld)
  mariadb=$(find_program mariadb mysql)
  mariadb_admin=$(find_program mariadb-admin mysqladmin)
}

my_port() { sed -n 's/^port=//p' "$my_cnf"; }

# The pid of the running mariadbd of DIR, or nothing.
my_pid() {
  local pid
  [[ -f $my_pidfile ]] || return 0
  pid=$(<"$my_pidfile")
  [[ $pid =~ ^[0-9]+$ ]] || return 0
  [[ -r /proc/$pid/cmdline ]] || return 0
  # A zombie has an empty command line.
  tr '\0' ' ' <"/proc/$pid/cmdline" | grep -qF -- "$my_cnf" && echo "$pid"
  return 0
}

# The server's own OS user reaches it as the MariaDB account of the same name
# through the socket (unix_socket authentication, set up by mariadb-install-db).
my_admin() {
  as_user "$my_user" "$mariadb_admin" --no-defaults --socket="$my_socket" \
    -u "$my_user" --connect-timeout=2 "$@"
}

# Runs the SQL on stdin as the server's own account.
my_sql() {
  as_user "$my_user" "$mariadb" --no-defaults --socket="$my_socket" \
    -u "$my_user" --batch
}

my_init() {
  log "initialising MariaDB in $my_data"
  rm -rf "$my_data" "$my_dir/initialised"
  mkdir -p "$my_dir"
  chmod 0755 "$my_dir"
  is_root && chown "$my_user:" "$my_dir"
  check_reachable "$my_user" "$my_dir"
  check_socket_length "$my_socket"
  local port
  port=$(free_port)
  cat >"$my_cnf" <<EOF
# connbroker tests (tests/servers/db-servers.sh); read with --defaults-file, so
# /etc/mysql is never read.
[mariadbd]
datadir=$my_data
socket=$my_socket
pid-file=$my_pidfile
log-error=$my_log
port=$port
bind-address=127.0.0.1
skip-name-resolve
skip-log-bin
max_connections=200
innodb_buffer_pool_size=16M
innodb_log_file_size=16M
innodb_flush_log_at_trx_commit=0
innodb_doublewrite=0
performance_schema=OFF
character-set-server=utf8mb4
collation-server=utf8mb4_general_ci
EOF
  if ! as_user "$my_user" "$(find_program mariadb-install-db mysql_install_db)" \
    --defaults-file="$my_cnf" --user="$my_user" \
    --auth-root-authentication-method=socket --skip-test-db \
    >"$my_dir/install-db.log" 2>&1; then
    log_tail "$my_dir/install-db.log"
    die "mariadb-install-db failed"
  fi
  my_start_server
  my_sql <<EOF
CREATE DATABASE IF NOT EXISTS \`$TEST_DATABASE\`;
CREATE USER IF NOT EXISTS '$TEST_USER'@'127.0.0.1' IDENTIFIED BY '$TEST_PASSWORD';
CREATE USER IF NOT EXISTS '$TEST_USER'@'localhost' IDENTIFIED BY '$TEST_PASSWORD';
GRANT ALL PRIVILEGES ON *.* TO '$TEST_USER'@'127.0.0.1' WITH GRANT OPTION;
GRANT ALL PRIVILEGES ON *.* TO '$TEST_USER'@'localhost' WITH GRANT OPTION;
EOF
  touch "$my_dir/initialised"
}

my_start_server() {
  # setsid and no inherited stdio: the server outlives this script and must not
  # hold the caller's pipes open.
  if is_root; then
    setsid setpriv --reuid="$my_user" --regid="$(id -g "$my_user")" \
      --init-groups --reset-env -- "$mariadbd" --defaults-file="$my_cnf" \
      </dev/null >>"$my_log" 2>&1 &
  else
    setsid "$mariadbd" --defaults-file="$my_cnf" </dev/null >>"$my_log" 2>&1 &
  fi
  local launcher=$! i
  for ((i = 0; i < WAIT_SECONDS * 4; i++)); do
    # Ready on the socket means listening on TCP too (opened first).
    if my_admin ping >/dev/null 2>&1; then
      return 0
    fi
    if ! kill -0 "$launcher" 2>/dev/null && [[ -z $(my_pid) ]]; then
      log_tail "$my_log"
      die "mariadbd exited during start-up (data $my_data)"
    fi
    sleep 0.25
  done
  log_tail "$my_log"
  die "MariaDB does not accept connections on 127.0.0.1:$(my_port)" \
    "after ${WAIT_SECONDS}s"
}

# The test account logs in with its password over TCP.
my_check_login() {
  local out
  if ! out=$("$mariadb" --no-defaults -h 127.0.0.1 -P "$(my_port)" \
    -u "$TEST_USER" -p"$TEST_PASSWORD" --connect-timeout=5 --batch \
    --skip-column-names -e 'SELECT 1' "$TEST_DATABASE" 2>&1) ||
    [[ $out != 1 ]]; then
    log_tail "$my_log"
    die "MariaDB is up but $TEST_USER cannot log in over TCP: $out"
  fi
}

start_mysql() {
  my_setup_vars
  if [[ ! -f $my_dir/initialised ]]; then
    [[ -n $(my_pid) ]] && stop_mysql
    my_init
  elif [[ -n $(my_pid) ]]; then
    my_check_login
    log "MariaDB already running on 127.0.0.1:$(my_port)"
    return 0
  else
    my_start_server
  fi
  my_check_login
  log "MariaDB on 127.0.0.1:$(my_port) (socket $my_socket, data $my_data)"
}

stop_mysql() {
  my_setup_vars
  local pid i
  pid=$(my_pid)
  if [[ -z $pid ]]; then
    [[ -d $my_dir ]] && log "MariaDB in $my_data is not running"
    return 0
  fi
  my_admin shutdown >/dev/null 2>&1 || kill -TERM "$pid" 2>/dev/null || true
  for ((i = 0; i < WAIT_SECONDS * 4; i++)); do
    [[ -d /proc/$pid ]] || break
    sleep 0.25
  done
  if [[ -d /proc/$pid ]]; then
    log "mariadbd $pid did not stop; killing it"
    kill -KILL "$pid" 2>/dev/null || true
    sleep 0.5
  fi
  rm -f "$my_pidfile"
  log "MariaDB stopped"
}

# ---- env.sh -----------------------------------------------------------------

write_env() {
  pg_setup_vars
  my_setup_vars
  local q_script q_dir
  q_script=$(printf '%q' "$script")
  q_dir=$(printf '%q' "$dir")
  {
    echo "# Written by tests/servers/db-servers.sh start; source it."
    printf 'export %s=%q\n' \
      CONNBROKER_TEST_SERVERS_DIR "$dir" \
      CONNBROKER_TEST_SERVERS_SCRIPT "$script" \
      CONNBROKER_TEST_PG_HOST 127.0.0.1 \
      CONNBROKER_TEST_PG_PORT "$(pg_port)" \
      CONNBROKER_TEST_PG_USER "$TEST_USER" \
      CONNBROKER_TEST_PG_PASSWORD "$TEST_PASSWORD" \
      CONNBROKER_TEST_PG_DATABASE "$TEST_DATABASE" \
      CONNBROKER_TEST_PG_SOCKET_DIR "$pg_dir" \
      CONNBROKER_TEST_PG_BIN "$pg_bindir" \
      CONNBROKER_TEST_PG_DATA "$pg_data" \
      CONNBROKER_TEST_PG_OS_USER "$pg_user" \
      CONNBROKER_TEST_PG_START "bash $q_script start-pg $q_dir" \
      CONNBROKER_TEST_PG_STOP "bash $q_script stop-pg $q_dir" \
      CONNBROKER_TEST_MYSQL_HOST 127.0.0.1 \
      CONNBROKER_TEST_MYSQL_PORT "$(my_port)" \
      CONNBROKER_TEST_MYSQL_USER "$TEST_USER" \
      CONNBROKER_TEST_MYSQL_PASSWORD "$TEST_PASSWORD" \
      CONNBROKER_TEST_MYSQL_DATABASE "$TEST_DATABASE" \
      CONNBROKER_TEST_MYSQL_SOCKET "$my_socket" \
      CONNBROKER_TEST_MYSQL_DATA "$my_data" \
      CONNBROKER_TEST_MYSQL_OS_USER "$my_user" \
      CONNBROKER_TEST_MYSQL_START "bash $q_script start-mysql $q_dir" \
      CONNBROKER_TEST_MYSQL_STOP "bash $q_script stop-mysql $q_dir"
  } >"$dir/env.sh.tmp"
  chmod 0644 "$dir/env.sh.tmp"
  mv "$dir/env.sh.tmp" "$dir/env.sh"
  log "wrote $dir/env.sh"
}

# ---- main -------------------------------------------------------------------

(($# == 2)) || usage
command=$1
case $command in
  stop | stop-pg | stop-mysql)
    # Nothing to stop in a directory that is not there.
    [[ -d $2 ]] || exit 0
    ;;
  *) mkdir -p "$2" ;;
esac
dir=$(cd "$2" && pwd)
# The servers' users cannot enter root's working directory.
cd "$dir"

case $command in
  start)
    prepare_dir
    start_pg
    start_mysql
    write_env
    ;;
  stop)
    # Both, even when the first fails.
    status=0
    (stop_pg) || status=1
    (stop_mysql) || status=1
    exit "$status"
    ;;
  start-pg)
    prepare_dir
    start_pg
    ;;
  stop-pg) stop_pg ;;
  restart-pg)
    stop_pg
    prepare_dir
    start_pg
    ;;
  start-mysql)
    prepare_dir
    start_mysql
    ;;
  stop-mysql) stop_mysql ;;
  restart-mysql)
    stop_mysql
    prepare_dir
    start_mysql
    ;;
  *) usage ;;
esac
