# syntax=docker/dockerfile:1
# The dra-hal image: dra-hal-plugin (the DRA kubelet plugin) and hal-probe (what the plugin sees), both in
# /usr/local/bin, plus Debian's pci.ids for vendor and product names. The Helm chart in
# deployments/helm/dra-hal runs it; scripts/kind-e2e.sh builds it and loads it into a kind cluster.
#
#   docker build -t dra-hal:0.1.0 .
#   docker build --build-arg CARGO_PROFILE=small -t dra-hal:0.1.0-small .   (less memory, more CPU)
#
# Not built by this repository's CI: its machines have no container engine (no docker, podman or
# buildah), so this file is checked by reading only.
#
# User and privileges: the image runs as distroless' `nonroot` user (65532) by default, enough for
# `hal-probe` (it only reads /sys and /proc). The kubelet plugin runs as root (the chart sets runAsUser
# 0): the kubelet's plugin directories and /var/run/cdi belong to root. Publishing every family and
# preparing GPU, NIC, RDMA and CPU claims through CDI needs no capability. Only these need a privileged
# container (chart value `privileged: true`):
#   - nics: a VfConfig `driver` (vfio-pci or a kernel driver: driver_override, unbind, bind in sysfs);
#   - gpus: a GpuConfig `driver: vfio-pci`; NVML (opens /dev/nvidia*; libnvidia-ml.so.1 must also be
#     made visible in the container, it is not in the image);
#   - the VF provisioning policy (--vf-policy writes sriov_numvfs).
# cpus never need it.

ARG RUST_VERSION=1.89
FROM rust:${RUST_VERSION}-bookworm AS build
# pci.ids is data: the current bookworm version is wanted, not a pinned one.
# hadolint ignore=DL3008
RUN apt-get update -qq && apt-get install -y -qq --no-install-recommends pci.ids && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
# udev: rescans on hotplug (kernel uevents over netlink; no libudev needed). level-zero: Intel GPU facts
# when the node's Level Zero loader is mounted (opened at run time). Not verbs: it links libibverbs,
# which this distroless image does not have. Two builds, not one: built together, hal-probe's fixtures
# (hal-mock) would be unified into the plugin; built alone, the plugin has no fixtures, mocks or allocator.
# CARGO_PROFILE=small: code optimised for size (about 5 MiB less resident memory, more CPU per prepare;
# Cargo.toml's [profile.small]). Only release-like profiles: `dev` builds into target/debug.
# PLUGIN_FEATURES: the plugin's features. Add `fixture` for an image that can serve an embedded fixture
# machine (the chart's `fixture` value; scripts/kind-e2e.sh builds one): the default image has none.
ARG CARGO_PROFILE=release
ARG PLUGIN_FEATURES=udev,level-zero
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --profile "${CARGO_PROFILE}" --locked -p dra-hal-plugin --features "${PLUGIN_FEATURES}" \
 && cargo build --profile "${CARGO_PROFILE}" --locked -p hal-probe --features udev,level-zero \
 && install -D -m 0755 -t /out "target/${CARGO_PROFILE}/dra-hal-plugin" "target/${CARGO_PROFILE}/hal-probe"

FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /usr/share/misc/pci.ids /usr/share/misc/pci.ids
COPY --from=build /out/ /usr/local/bin/
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/dra-hal-plugin"]
