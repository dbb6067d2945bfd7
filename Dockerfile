# Build: docker build -t sessiongate .
# Run:   docker run -p 8080:8080 \
#          -e UPSTREAM_URL=http://app:3000 \
#          -e SESSIONGATE_SECRET=$(sessiongate keygen) \
#          -e UPSTREAM_JWT_SECRET=$(sessiongate keygen) \
#          -v sessiongate-data:/home/nonroot/data sessiongate
# The built-in config is config/container.yaml; mount your own over
# /etc/sessiongate/sessiongate.yaml for more.
FROM rust:1.95-slim-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
COPY benches ./benches
RUN cargo build --release --locked --bin sessiongate \
 && strip target/release/sessiongate \
 && mkdir -p /out/data

# glibc, libgcc and CA roots, no shell, runs as uid 65532.
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /src/target/release/sessiongate /usr/local/bin/sessiongate
COPY config/container.yaml /etc/sessiongate/sessiongate.yaml
# The data directory exists in the image, owned by the process's user, so
# that a named volume mounted here starts with that owner (Docker copies
# it); Kubernetes sets the owner of its volumes with fsGroup 65532.
COPY --from=build --chown=65532:65532 /out/data /home/nonroot/data
WORKDIR /home/nonroot
USER nonroot
VOLUME /home/nonroot/data
EXPOSE 8080 9090
ENTRYPOINT ["/usr/local/bin/sessiongate"]
CMD ["--config", "/etc/sessiongate/sessiongate.yaml"]
