# Tandem: build a release binary, then run it in a small image as an unprivileged user.
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock build.rs ./
COPY migrations migrations
COPY static/dist static/dist
COPY src src
# bench/ is a workspace member: cargo loads its manifest and targets even to build the server.
COPY bench/Cargo.toml bench/Cargo.toml
COPY bench/src bench/src
RUN cargo build --release --locked --bin tandem

FROM debian:bookworm-slim
RUN useradd --system --uid 10001 --create-home --home-dir /var/lib/tandem tandem
COPY --from=build /src/target/release/tandem /usr/local/bin/tandem
USER tandem
WORKDIR /var/lib/tandem
# Listen on every interface inside the container; publish the port deliberately (see compose).
ENV TANDEM_BIND=0.0.0.0:8080 \
    DATABASE_URL=sqlite:///var/lib/tandem/data/tandem.db
EXPOSE 8080
VOLUME ["/var/lib/tandem/data"]
# SIGTERM makes Tandem stop accepting, flush and compact every document, then exit 0.
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/tandem"]
