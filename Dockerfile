# syntax=docker/dockerfile:1
#
# The Infra image: infra-proxy (the server the Helm chart runs) and infra (the CLI), built with the
# same cargo command as the tests, on a minimal runtime image as a non-root user.
#
#   docker build -t infra:0.1.0 .
#   docker run --rm infra:0.1.0 serve --help

# The build stage: the workspace's toolchain (rust-version in Cargo.toml is the floor). The full
# Debian image has the C compiler that ring and the bundled SQLite need.
ARG RUST_VERSION=1.95
FROM docker.io/library/rust:${RUST_VERSION}-bookworm AS build
WORKDIR /src
COPY . .
# The cache mounts keep downloaded crates and build output between builds; the binaries are
# copied out in the same step because the target folder is not part of the image.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p infra-proxy -p infra \
 && install -D -m 0755 target/release/infra-proxy /out/infra-proxy \
 && install -D -m 0755 target/release/infra /out/infra

# The runtime stage: glibc, libgcc, CA certificates and nothing else (no shell, no package
# manager), Debian 12 like the build stage. The :nonroot variant's user is 65532, which the
# chart's pod security context names too.
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /out/infra-proxy /out/infra /usr/local/bin/
USER 65532:65532
# 8443: the proxy; 4443: the control API; 9090: /healthz, /readyz, /metrics.
EXPOSE 8443 4443 9090
ENTRYPOINT ["/usr/local/bin/infra-proxy"]
CMD ["serve"]
