# Build, in two steps so that a source change does not rebuild every dependency: first the
# dependencies alone against stub sources (this layer is cached while Cargo.toml and Cargo.lock
# stay the same), then the crate itself.
FROM rust:1.95-slim-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock rustfmt.toml ./
RUN mkdir src && echo 'fn main() {}' > src/main.rs && touch src/lib.rs \
    && cargo build --release --locked --bin storecrm \
    && rm -rf src
COPY src ./src
COPY migrations ./migrations
RUN touch src/main.rs src/lib.rs && cargo build --release --locked --bin storecrm

# Run
FROM debian:bookworm-slim
RUN useradd --system --uid 10001 --home /data storecrm && mkdir -p /data && chown storecrm /data
COPY --from=build /src/target/release/storecrm /usr/local/bin/storecrm
USER storecrm
WORKDIR /data
# The SQLite default (database, generated secret, mail folder) lives here: keep it on a volume.
VOLUME ["/data"]
ENV LISTEN_ADDR=0.0.0.0:8080 DATABASE_URL=sqlite:///data/storecrm.db MAIL_DIR=/data/mail
EXPOSE 8080
HEALTHCHECK --interval=10s --timeout=3s --start-period=10s --retries=3 CMD ["storecrm", "ready"]
ENTRYPOINT ["storecrm"]
CMD ["serve"]
