#!/usr/bin/env bash
# Starts (creating it the first time) a throwaway PostgreSQL cluster for the
# state tests and prints its DSN. It is a separate Debian cluster named
# "gantrytest" so a host's own "main" cluster is never touched; it listens only
# on a unix socket and trusts local users, which is acceptable for test data
# and needs no password plumbing. Runs without systemd (pg_ctlcluster).
set -euo pipefail

name=gantrytest
db=gantry_test
sockdir=/var/run/postgresql

ver=$(ls /usr/lib/postgresql 2>/dev/null | sort -V | tail -n1)
if [ -z "$ver" ]; then
	echo "test-postgres: PostgreSQL is not installed (apt-get install postgresql)" >&2
	exit 1
fi

free_port() {
	local p
	for p in $(seq 55432 55532); do
		if ! ss -Hltn "sport = :$p" | grep -q . && [ ! -e "$sockdir/.s.PGSQL.$p" ]; then
			echo "$p"
			return
		fi
	done
	echo "test-postgres: no free port in 55432-55532" >&2
	exit 1
}

mkdir -p "$sockdir"
chown postgres:postgres "$sockdir"

if ! pg_lsclusters -h | awk '{print $1" "$2}' | grep -qx "$ver $name"; then
	port=$(free_port)
	pg_createcluster "$ver" "$name" -p "$port" -- --auth-local=trust --auth-host=reject >/dev/null
	# Unix socket only: the tests run on this host.
	pg_conftool "$ver" "$name" set listen_addresses ""
	# Many short transactions from the tests; durability is not the point here.
	pg_conftool "$ver" "$name" set fsync off
	pg_conftool "$ver" "$name" set max_connections 200
fi
port=$(pg_lsclusters -h | awk -v v="$ver" -v n="$name" '$1==v && $2==n {print $3}')
status=$(pg_lsclusters -h | awk -v v="$ver" -v n="$name" '$1==v && $2==n {print $4}')
if [ "$status" != online ]; then
	pg_ctlcluster "$ver" "$name" start >&2
fi
for _ in $(seq 1 60); do
	if su postgres -c "psql -h $sockdir -p $port -d postgres -Atqc 'select 1'" >/dev/null 2>&1; then
		break
	fi
	sleep 0.5
done
if ! su postgres -c "psql -h $sockdir -p $port -d postgres -Atqc \"select 1 from pg_database where datname='$db'\"" | grep -q 1; then
	su postgres -c "createdb -h $sockdir -p $port $db"
fi
echo "host=$sockdir port=$port user=postgres dbname=$db sslmode=disable"
