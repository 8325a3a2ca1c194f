# syntax=docker/dockerfile:1

# --- build: dependencies first, in their own cached layer, then the sources.
FROM rust:1.95-slim-bookworm AS build
WORKDIR /app
# jemalloc, the allocator, is C that its crate builds with make (the image has the compiler).
RUN apt-get update \
    && apt-get install -y --no-install-recommends make \
    && rm -rf /var/lib/apt/lists/*
COPY Cargo.toml Cargo.lock ./
# Stand-in sources let cargo build every dependency before the real sources are copied,
# so a change to src/ reuses this layer.
RUN mkdir src \
    && echo 'fn main() {}' > src/main.rs \
    && touch src/lib.rs \
    && cargo build --release --locked \
    && rm -rf src
COPY build.rs ./
COPY src ./src
COPY migrations ./migrations
# `--version` names the commit; the image has no .git, so the deploy passes it
# (`fly deploy --build-arg DAILYREPS_COMMIT=…`).
ARG DAILYREPS_COMMIT=unknown
# The migrations are embedded by sqlx::migrate!, so the image needs no migration files.
RUN touch src/main.rs src/lib.rs && cargo build --release --locked

# --- runtime: small, CA certificates, not root.
FROM debian:bookworm-slim
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --no-create-home --shell /usr/sbin/nologin dailyreps
COPY --from=build /app/target/release/dailyreps-backup-server /usr/local/bin/dailyreps-backup-server
USER 10001
ENV LOG_FORMAT=json
EXPOSE 8080 9091
CMD ["dailyreps-backup-server", "serve"]
