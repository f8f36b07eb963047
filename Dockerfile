# ---- build ------------------------------------------------------------------
# The slim Rust image already ships gcc and libc6-dev, which is all the bundled
# SQLite (libsqlite3-sys "bundled") needs; PostgreSQL goes through tokio-postgres
# (pure Rust), so no libpq and no extra packages are installed here.
FROM rust:1.95-slim-bookworm AS builder
WORKDIR /build

# Dependencies first, against a stub crate, so that editing src/ does not
# rebuild every crate from crates.io.
COPY Cargo.toml Cargo.lock build.rs ./
RUN mkdir src \
    && echo 'fn main() {}' > src/main.rs \
    && touch src/lib.rs \
    && cargo build --release --locked --bin listings \
    && rm -rf src

# The real sources. Migrations are embedded into the binary at compile time.
# COPY keeps the files' original mtimes, which can be older than the stub build,
# so touch the crate roots to make cargo rebuild the `listings` crate itself.
COPY migrations ./migrations
COPY src ./src
RUN touch src/main.rs src/lib.rs \
    && cargo build --release --locked --bin listings

# ---- runtime ----------------------------------------------------------------
FROM debian:bookworm-slim

# The public CAs, for rediss:// (TLS) Redis services; SSL_CERT_FILE adds a private one.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/*

# /data is the working directory: without DATABASE_URL the embedded SQLite
# database is ./listings.sqlite3 there, and a .env there is read if present.
RUN groupadd --system --gid 10001 listings \
    && useradd --system --no-log-init --uid 10001 --gid listings \
        --home-dir /data --no-create-home --shell /usr/sbin/nologin listings \
    && mkdir -p /data \
    && chown listings:listings /data

COPY --from=builder /build/target/release/listings /usr/local/bin/listings

USER 10001:10001
WORKDIR /data

ENV LISTINGS_BIND=0.0.0.0:8000 \
    RUST_LOG=info
# The operator's address (dashboard, /metrics) stays off unless LISTINGS_ADMIN_BIND is
# set; docker-compose.yml sets 0.0.0.0:9000 and publishes it on the host's loopback.
EXPOSE 8000

# `listings healthcheck` GETs /health on LISTINGS_BIND (0.0.0.0 means loopback).
HEALTHCHECK --interval=30s --timeout=10s --start-period=10s --retries=3 \
    CMD ["listings", "healthcheck"]

ENTRYPOINT ["listings"]
CMD ["serve"]
