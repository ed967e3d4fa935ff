# Multi-stage build of every tierflow binary. Not built or run on the development machines
# (no Docker engine there); tests/tests/compose.rs checks that docker-compose.yml matches it.
FROM rust:1.95-bookworm AS build
WORKDIR /src
# librdkafka is built from source by rdkafka (gcc, make); nothing else is needed.
COPY . .
RUN cargo build --release --locked \
      --bin ingest --bin segmenter --bin okta-writer --bin okta-sim --bin tierflow

FROM debian:bookworm-slim AS runtime
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 tierflow
COPY --from=build /src/target/release/ingest /src/target/release/segmenter \
     /src/target/release/okta-writer /src/target/release/okta-sim /src/target/release/tierflow /usr/local/bin/
COPY config /etc/tierflow
USER tierflow
ENV TIERFLOW_CONFIG=/etc/tierflow/compose.toml
