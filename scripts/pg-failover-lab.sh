#!/usr/bin/env bash
# A PostgreSQL primary and its synchronous streaming standby on this machine, made with
# Debian's cluster tools, to try annal's failover by hand (docs/cluster.md). Leaves the
# machine's own cluster (`main`, 5432) alone. Run as root (or as a user allowed to run
# pg_createcluster).
#
#   scripts/pg-failover-lab.sh up [PORT]   # primary `annal_primary` on PORT (default 5441),
#                                          # standby `annal_standby` on PORT+1; prints the URL
#   scripts/pg-failover-lab.sh fail        # stop the primary -m immediate, promote the standby
#   scripts/pg-failover-lab.sh down        # stop and drop both
#
# The automated version of `fail` runs in CI: crates/annal-cli/tests/faults.rs.
set -euo pipefail
VERSION="${PG_VERSION:-$(ls /usr/lib/postgresql | sort -n | tail -n1)}"
PRIMARY=annal_primary
STANDBY=annal_standby
cmd="${1:-}"
port="${2:-5441}"

as_postgres() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
port_of() { pg_lsclusters -h | awk -v v="$VERSION" -v n="$1" '$1 == v && $2 == n { print $3 }'; }

case "$cmd" in
  up)
    sport=$((port + 1))
    pg_createcluster "$VERSION" "$PRIMARY" --port "$port" -- -A trust >/dev/null
    conf="/etc/postgresql/$VERSION/$PRIMARY/conf.d/annal.conf"
    {
      echo "listen_addresses = '127.0.0.1'"
      echo "wal_level = replica"
      echo "synchronous_commit = on"
      echo "synchronous_standby_names = '*'"
    } >"$conf"
    pg_ctlcluster "$VERSION" "$PRIMARY" start
    # The standby: the cluster's folders from pg_createcluster, its data from the primary.
    pg_createcluster "$VERSION" "$STANDBY" --port "$sport" -- -A trust >/dev/null
    echo "listen_addresses = '127.0.0.1'" >"/etc/postgresql/$VERSION/$STANDBY/conf.d/annal.conf"
    data="/var/lib/postgresql/$VERSION/$STANDBY"
    find "$data" -mindepth 1 -delete
    as_postgres pg_basebackup -D "$data" -R -h 127.0.0.1 -p "$port" -U postgres
    pg_ctlcluster "$VERSION" "$STANDBY" start
    for _ in $(seq 1 100); do
      sync=$(as_postgres psql -h 127.0.0.1 -p "$port" -U postgres -tAc \
        "SELECT count(*) FROM pg_stat_replication WHERE sync_state = 'sync'")
      [ "$sync" = 1 ] && break
      sleep 0.1
    done
    [ "$sync" = 1 ] || { echo "the standby did not become synchronous" >&2; exit 1; }
    echo "postgres://postgres@127.0.0.1:$port,127.0.0.1:$sport/postgres?target_session_attrs=read-write&connect_timeout=2"
    ;;
  fail)
    pg_ctlcluster "$VERSION" "$PRIMARY" stop -m immediate
    as_postgres "/usr/lib/postgresql/$VERSION/bin/pg_ctl" promote -w -D "/var/lib/postgresql/$VERSION/$STANDBY"
    echo "the primary on $(port_of "$PRIMARY") is down; the standby on $(port_of "$STANDBY") is promoted"
    ;;
  down)
    for c in "$STANDBY" "$PRIMARY"; do
      if [ -n "$(port_of "$c")" ]; then pg_dropcluster --stop "$VERSION" "$c"; fi
    done
    ;;
  *)
    sed -n '2,12p' "$0" | sed 's/^# \{0,1\}//'
    exit 2
    ;;
esac
