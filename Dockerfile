# One image for every streamshop service: build all binaries once, run each with its own command.
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --package orders --package inventory --package payments \
      --package orchestrator --package projections --package query-api --package gateway \
      --package events \
 && mkdir /out \
 && cp target/release/orders target/release/inventory target/release/payments \
      target/release/orchestrator target/release/projections target/release/query-api \
      target/release/gateway target/release/events /out/

FROM debian:bookworm-slim AS runtime
# curl is for compose's healthchecks (`curl --cacert /run/tls/ca.pem https://localhost:<port>/readyz`).
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates curl \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --no-create-home streamshop
COPY --from=build /out/ /usr/local/bin/
USER streamshop
ENV LOG_FORMAT=json RUST_LOG=info
