# syntax=docker/dockerfile:1
# The nsdebug agent image: the agent and, in a tree of its own (/toolbox),
# the diagnostic tools that toolbox mode runs inside pods, on an empty base.
# The tool tree holds no secret of the agent: sessions see it, read-only,
# while the agent's /etc and whatever is mounted into its container (TLS key,
# service-account token) stay outside it. Build and push:
#
#   docker build -t REGISTRY/nsdebug:0.1.0 . && docker push REGISTRY/nsdebug:0.1.0
#
# Reproducible: the bases are pinned by version (pin them by digest in your
# registry mirror), Cargo.lock is used as it is (--locked), and the layout is
# made by hack/image/toolbox.sh, the script tests/integration/image.rs runs on the test
# machine (no container engine runs there), so the layout shipped is tested.

FROM docker.io/library/rust:1.88-bookworm AS build
RUN apt-get update \
    && apt-get install -y --no-install-recommends libseccomp-dev libpcap-dev \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN cargo build --release --locked --bin nsdebug

FROM docker.io/library/debian:bookworm-slim AS toolbox
# The toolbox's tools and the agent's run-time libraries (libseccomp,
# libpcap): hack/image/toolbox.sh copies the agent with exactly the
# libraries it loads into /out, and each tool with its own into /out/toolbox.
RUN apt-get update \
    && apt-get install -y --no-install-recommends \
        busybox iproute2 procps tcpdump strace lsof curl ca-certificates \
        libseccomp2 libpcap0.8 \
    && rm -rf /var/lib/apt/lists/*
COPY hack/image/toolbox.sh /toolbox.sh
COPY --from=build /src/target/release/nsdebug /nsdebug
RUN bash /toolbox.sh /out /nsdebug

FROM scratch
COPY --from=toolbox /out /
USER 0:0
# The image's tool tree, also when run without the chart's --toolbox-root.
ENV NSDEBUG_TOOLBOX_ROOT=/toolbox
ENTRYPOINT ["/usr/local/bin/nsdebug"]
CMD ["serve"]
