#!/usr/bin/env bash
# Captures, from a real node, exactly the sysfs/procfs subset the HAL's backends read, into a fixture
# tree that `hal-probe --sysfs-root OUTDIR` and the tests can read (like hwloc-gather-topology, smaller).
#
#   scripts/capture-fixture.sh [--root DIR] OUTDIR
#
# --root DIR   read DIR/sys and DIR/proc instead of /sys and /proc (to re-capture a tree)
# OUTDIR       created; must not exist yet
#
# What is copied: CPU topology, caches and NUMA nodes; every PCI function's identity, placement, driver
# and SR-IOV attributes with its links (driver, iommu_group, physfn, virtfnN) and children (net,
# infiniband, infiniband_verbs, infiniband_mad, drm); the sys/class entries of those children; every
# network interface's link state (flags, operstate, carrier) and lower devices (lower_* links, brif/,
# bonding/slaves), virtual ones (bonds, bridges, VLANs) included; the node's routes and addresses
# (/proc/net/{route,ipv6_route,if_inet6}: which interfaces are the node's own network); the real-time
# limit (/proc/sys/kernel/sched_rt_{runtime,period}_us); NVIDIA's /proc/driver/nvidia/gpus/*/information;
# on arm64, /proc/cpuinfo. Links are copied as links (relative, as the kernel makes them); none is
# followed out of the root. Not copied: the boot id (a capture must never pass for the machine it is
# read on).
# What is masked: InfiniBand node/system-image GUIDs and NVIDIA GPU UUIDs (replaced by counters); MAC
# addresses are never read, serial numbers never copied. Needs: bash, coreutils, grep, sed. Reads only;
# run it as root to include root-only attributes, in the host's network namespace (not in a pod without
# hostNetwork: /proc/net is the reader's namespace).
set -euo pipefail

usage() { sed -n '2,23p' "$0" | sed 's/^# \{0,1\}//'; exit "${1:-0}"; }

root=/
while [[ $# -gt 0 ]]; do
    case $1 in
        --root) root=${2:?--root needs a directory}; shift 2 ;;
        -h|--help) usage 0 ;;
        -*) echo "capture-fixture: unknown option $1" >&2; usage 2 ;;
        *) break ;;
    esac
done
[[ $# -eq 1 ]] || usage 2
out=$1
[[ -d $root/sys ]] || { echo "capture-fixture: $root/sys is not a directory" >&2; exit 1; }
[[ ! -e $out ]] || { echo "capture-fixture: $out already exists" >&2; exit 1; }
mkdir -p "$out"
# Physical paths (-P): links are resolved, and kept inside the root, against the root's real path.
root=$(cd "$root" && pwd -P)
out=$(cd "$out" && pwd -P)

# Paths are collected first and copied at the end, with bash builtins for file contents: a fixture has
# thousands of attributes, and a process per file (cat, head, mkdir) made a 224-CPU capture take a
# minute. (tar cannot be used: sysfs files claim a 4096-byte size and tar pads them with zeros.)
files=()
links=()

# copy_file REL / copy_link REL: queue a regular file / a symlink (copied with its relative text).
copy_file() { [[ -f $root/$1 && -r $root/$1 ]] && files+=("$1"); return 0; }
copy_link() { [[ -L $root/$1 ]] && links+=("$1"); return 0; }

# copy_glob DIR PATTERN...: queue what matches the patterns in DIR (relative to root).
copy_glob() {
    local dir=$1; shift
    local pattern f
    for pattern in "$@"; do
        for f in "$root/$dir"/$pattern; do
            if [[ -L $f ]]; then copy_link "${f#"$root"/}"; elif [[ -f $f ]]; then copy_file "${f#"$root"/}"; fi
        done
    done
}

# Writes everything queued: directories in one mkdir, contents read and written by builtins.
flush() {
    local rel content
    local -A dirs=()
    for rel in "${files[@]}" "${links[@]}"; do dirs["$out/${rel%/*}"]=1; done
    if [[ ${#dirs[@]} -gt 0 ]]; then printf '%s\0' "${!dirs[@]}" | xargs -0 mkdir -p; fi
    for rel in "${files[@]}"; do
        content=
        IFS= read -r -d '' -N 65536 content 2>/dev/null < "$root/$rel" || true
        printf '%s' "$content" > "$out/$rel"
    done
    for rel in "${links[@]}"; do ln -sfn "$(readlink "$root/$rel")" "$out/$rel"; done
    files=()
    links=()
}

# realpath of a link (or of a path with links on the way), relative to the root; fails when it is
# not a directory or leads out of the root (a link of a captured tree to the host's /sys or /proc).
resolve() {
    local p base=${root%/}
    p=$(cd "$root/$1" 2>/dev/null && pwd -P) || return 1
    [[ $p == "$base"/* ]] || return 1
    echo "${p#"$base"/}"
}

# copy_netdev DIR: queue a network interface's directory (once): its link state (the health of its
# function), and its lower devices, bridge ports and bond slaves (the node-network guard's reads).
declare -A netdevs=()
copy_netdev() {
    [[ -z ${netdevs[$1]:-} ]] || return 0
    netdevs[$1]=1
    copy_glob "$1" ifindex flags operstate carrier 'lower_*'
    [[ -d $root/$1/brif && ! -L $root/$1/brif ]] && copy_glob "$1/brif" '*'
    [[ -L $root/$1/bonding ]] || copy_glob "$1" bonding/slaves
    return 0
}

# copy_bounded REL: copy a file that may be long (a routing table) now, at most 16 MiB (what the
# driver reads of it) in whole lines.
copy_bounded() {
    local limit=16777216
    [[ -f $root/$1 && ! -L $root/$1 && -r $root/$1 ]] || return 0
    mkdir -p "$out/${1%/*}"
    head -c "$limit" "$root/$1" > "$out/$1"
    if [[ $(wc -c < "$out/$1") -ge $limit ]]; then sed -i '$d' "$out/$1"; fi
}

mask_counter=0
mask_guid() { mask_counter=$((mask_counter + 1)); printf '0000:0000:0000:%04x\n' "$mask_counter"; }

# CPUs and NUMA nodes.
cpu=sys/devices/system/cpu
copy_glob "$cpu" online possible present offline kernel_max smt/active smt/control
for d in "$root/$cpu"/cpu[0-9]*; do
    c=${d#"$root"/}
    copy_glob "$c" online cpu_capacity regs/identification/midr_el1 'topology/*'
    for idx in "$d"/cache/index*; do
        [[ -d $idx ]] || continue
        copy_glob "${idx#"$root"/}" level type id size shared_cpu_list shared_cpu_map
    done
done
# arm64: /proc/cpuinfo holds every online CPU's MIDR fields (read once instead of a midr_el1 per CPU).
# Board serial numbers, which some arm kernels print there, are left out.
if [[ -f $root/$cpu/cpu0/regs/identification/midr_el1 && -r $root/proc/cpuinfo ]]; then
    mkdir -p "$out/proc"
    grep -v '^Serial' "$root/proc/cpuinfo" >"$out/proc/cpuinfo" || true
fi
copy_glob sys/devices/cpu_core cpus
copy_glob sys/devices/cpu_atom cpus
copy_glob sys/devices/cpu_lowpower cpus
node=sys/devices/system/node
copy_glob "$node" online possible has_cpu has_memory
for d in "$root/$node"/node[0-9]*; do
    copy_glob "${d#"$root"/}" cpulist cpumap meminfo distance
done

# PCI functions.
copy_glob sys/bus/pci drivers_probe
for s in "$root"/sys/bus/pci/slots/*; do [[ -d $s ]] && copy_glob "${s#"$root"/}" address; done
for link in "$root"/sys/bus/pci/devices/*; do
    rel=${link#"$root"/}
    copy_link "$rel"
    dev=$(resolve "$rel") || continue
    copy_glob "$dev" vendor device subsystem_vendor subsystem_device class revision numa_node local_cpulist \
        local_cpus driver_override 'sriov_*' driver iommu_group physfn 'virtfn*' lmem_total_bytes \
        prelim_lmem_total_bytes mem_info_vram_total product_name 'tile*/physical_vram_size_bytes'
    for child in "$root/$dev"/net/* "$root/$dev"/virtio*/net/*; do
        [[ -d $child && ! -L $child ]] && copy_netdev "${child#"$root"/}"
    done
    for child in "$root/$dev"/infiniband_verbs/* "$root/$dev"/infiniband_mad/*; do
        [[ -d $child ]] && copy_glob "${child#"$root"/}" ibdev port dev abi_version
    done
    for child in "$root/$dev"/drm/card[0-9]* "$root/$dev"/drm/renderD[0-9]*; do
        [[ -d $child ]] && copy_glob "${child#"$root"/}" dev lmem_total_bytes prelim_lmem_total_bytes
    done
    for ib in "$root/$dev"/infiniband/*; do
        [[ -d $ib ]] || continue
        r=${ib#"$root"/}
        copy_glob "$r" node_type fw_ver hca_type
        mkdir -p "$out/$r"
        [[ -r $ib/node_guid ]] && mask_guid > "$out/$r/node_guid"
        [[ -r $ib/sys_image_guid ]] && mask_guid > "$out/$r/sys_image_guid"
        for port in "$ib"/ports/*; do
            [[ -d $port ]] || continue
            copy_glob "${port#"$root"/}" state phys_state rate link_layer lid 'gid_attrs/ndevs/*'
        done
    done
done
for class in infiniband infiniband_verbs infiniband_mad drm net; do
    copy_glob "sys/class/$class" '*'
done
copy_glob sys/class/misc/rdma_cm dev
# Every interface, the virtual ones too (sys/devices/virtual/net: lo, bonds, bridges, VLANs): their
# class links would otherwise dangle, and the guard reads their lower devices.
for link in "$root"/sys/class/net/*; do
    [[ -L $link ]] || continue
    netdev=$(resolve "${link#"$root"/}") && copy_netdev "$netdev"
done
# The kernel's real-time bandwidth limit (the rt-<group> devices).
if resolve proc/sys/kernel > /dev/null; then
    copy_glob proc/sys/kernel sched_rt_runtime_us sched_rt_period_us
fi
flush

# The node's routes and IPv6 addresses: which interfaces carry the default route or the InternalIP. On a
# node /proc/net is a link to the reader's own /proc/<pid>/net, inside the root; in a captured tree it
# must not lead out of it. route is always there where IPv4 is (a tree without it withholds every
# interface); ipv6_route and if_inet6 are not when IPv6 is disabled.
if resolve proc/net > /dev/null; then
    for f in route ipv6_route if_inet6; do copy_bounded "proc/net/$f"; done
fi

# NVIDIA driver facts, UUIDs masked.
n=0
for info in "$root"/proc/driver/nvidia/gpus/*/information; do
    [[ -r $info ]] || continue
    rel=${info#"$root"/}
    mkdir -p "$out/$(dirname "$rel")"
    n=$((n + 1))
    sed -E "s/(GPU UUID:[[:space:]]*)GPU-[0-9a-fA-F-]+/\1GPU-00000000-0000-0000-0000-$(printf '%012x' "$n")/" "$info" > "$out/$rel"
done

echo "capture-fixture: wrote $(find "$out" -type f | wc -l) files and $(find "$out" -type l | wc -l) links to $out"
