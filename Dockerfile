# Build: docker build -t sessiongate .
# Run:   docker run -p 8080:8080 -e SESSIONGATE_SECRET=... -e UPSTREAM_JWT_SECRET=... \
#          -v $PWD/config:/etc/sessiongate:ro -v sessiongate-data:/home/nonroot/data sessiongate
FROM rust:1.95-slim-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
COPY benches ./benches
RUN cargo build --release --locked --bin sessiongate \
 && strip target/release/sessiongate

# glibc, libgcc and CA roots, no shell, runs as uid 65532.
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /src/target/release/sessiongate /usr/local/bin/sessiongate
COPY config/sessiongate.yaml /etc/sessiongate/sessiongate.yaml
WORKDIR /home/nonroot
USER nonroot
EXPOSE 8080 9090
ENTRYPOINT ["/usr/local/bin/sessiongate"]
CMD ["--config", "/etc/sessiongate/sessiongate.yaml"]
