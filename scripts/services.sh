#!/usr/bin/env bash
# Start the local PostgreSQL and Redis the test suite uses, if they are down (root only).
set -uo pipefail
if [ "$(id -u)" -ne 0 ]; then
  echo "Not root: PostgreSQL/Redis tests run only if those servers are already up."
  exit 0
fi
if ! pg_isready -q -h 127.0.0.1 -p 5432 2>/dev/null; then
  version=$(ls /etc/postgresql 2>/dev/null | sort -V | tail -n1)
  if [ -n "$version" ]; then
    pg_ctlcluster --skip-systemctl-redirect "$version" main start || true
  fi
  for _ in $(seq 1 30); do pg_isready -q -h 127.0.0.1 -p 5432 && break; sleep 1; done
fi
# Tests connect as the postgres role over TCP; a fresh Debian cluster wants a password there.
if pg_isready -q -h 127.0.0.1 -p 5432 && ! psql -h 127.0.0.1 -U postgres -d postgres -c 'select 1' >/dev/null 2>&1; then
  hba=$(su postgres -c "psql -tAc 'show hba_file'" 2>/dev/null)
  if [ -n "$hba" ] && ! grep -q "voidvm-tests" "$hba"; then
    sed -i '1i host all all 127.0.0.1/32 trust # voidvm-tests\nhost all all ::1/128 trust # voidvm-tests' "$hba"
    su postgres -c "psql -qc 'select pg_reload_conf()'" >/dev/null
  fi
fi
if ! redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1; then
  redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no >/dev/null
  for _ in $(seq 1 20); do redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1 && break; sleep 0.5; done
fi
exit 0
