# Build
FROM rust:1.95-slim-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock rustfmt.toml ./
COPY src ./src
COPY migrations ./migrations
RUN cargo build --release --locked --bin storecrm

# Run
FROM debian:bookworm-slim
RUN useradd --system --uid 10001 --home /data storecrm && mkdir -p /data && chown storecrm /data
COPY --from=build /src/target/release/storecrm /usr/local/bin/storecrm
USER storecrm
WORKDIR /data
ENV LISTEN_ADDR=0.0.0.0:8080 DATABASE_URL=sqlite:///data/storecrm.db MAIL_DIR=/data/mail
EXPOSE 8080
ENTRYPOINT ["storecrm"]
CMD ["serve"]
