#!/bin/sh
# As the official image's entrypoint: initialise $PGDATA on first start with
# POSTGRES_USER (superuser), POSTGRES_PASSWORD and POSTGRES_DB, accept password
# logins from the network, then run the server in the foreground as `postgres`.
set -eu
user="${POSTGRES_USER:-postgres}"
db="${POSTGRES_DB:-$user}"
bin=/usr/lib/postgresql/15/bin
mkdir -p "$PGDATA" /var/run/postgresql
chown -R postgres:postgres "$PGDATA" /var/run/postgresql
chmod 700 "$PGDATA"
if [ ! -s "$PGDATA/PG_VERSION" ]; then
    printf '%s' "${POSTGRES_PASSWORD:-}" > /tmp/pwfile
    chown postgres /tmp/pwfile
    su postgres -s /bin/sh -c "$bin/initdb -D '$PGDATA' -U '$user' --pwfile=/tmp/pwfile -A scram-sha-256 --auth-local=trust" >/dev/null
    rm -f /tmp/pwfile
    echo "host all all all scram-sha-256" >> "$PGDATA/pg_hba.conf"
    echo "listen_addresses = '*'" >> "$PGDATA/postgresql.auto.conf"
    if [ "$db" != "postgres" ]; then
        su postgres -s /bin/sh -c "$bin/postgres --single -D '$PGDATA' postgres" >/dev/null <<SQL
CREATE DATABASE "$db" OWNER "$user";
SQL
    fi
fi
exec su postgres -s /bin/sh -c "exec $bin/postgres -D '$PGDATA'"
