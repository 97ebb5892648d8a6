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
# on arm64, /proc/cpuinfo. Not copied: the boot id (a capture must never pass for the machine it is
# read on).
# Nothing outside the root is read or copied: links are copied as links (their text, relative as the
# kernel makes them); a directory is resolved (links on the way followed) before anything in it is
# listed or read, and skipped when it leads out of the root; only regular files are read (never a
# FIFO or a device), each up to a bound: 64 KiB and a byte an attribute, 4 MiB /proc/cpuinfo, 16 MiB a
# /proc/net file (whole lines).
# What is masked: InfiniBand node/system-image GUIDs and NVIDIA GPU UUIDs (replaced by counters); MAC
# addresses are never read, serial numbers never copied. Needs: bash, coreutils, grep, sed. Reads only;
# run it as root to include root-only attributes, in the host's network namespace (not in a pod without
# hostNetwork: /proc/net is the reader's namespace).
set -euo pipefail
# Bytes, not characters: `read -n` and `${#...}` count in the locale's characters otherwise.
export LC_ALL=C

usage() { sed -n '2,/^[^#]/s/^# \{0,1\}//p' "$0"; exit "${1:-0}"; }

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

# resolve REL: sets `resolved` to the real path of the directory REL (links on the way followed),
# relative to the root; fails when it is not a directory or leads out of the root (a link of a
# captured tree to the host's /sys or /proc). A builtin `cd`, not a subshell: it runs for every
# directory read. (The script's own paths are absolute: its working directory does not matter.)
resolved=
resolve() {
    local base=${root%/}
    cd -P -- "$root/$1" 2>/dev/null || return 1
    [[ $PWD == "$base"/* ]] || return 1
    resolved=${PWD#"$base"/}
}

# each DIR PATTERN: sets `found` to the directories matching PATTERN (one name) in DIR, as DIR/NAME,
# where DIR and each of them resolve inside the root.
found=()
each() {
    local base d
    found=()
    resolve "$1" || return 0
    base=$resolved
    for d in "$root/$base"/$2; do
        resolve "$base/${d##*/}" && found+=("$1/${d##*/}")
    done
    return 0
}

# copy_glob DIR PATTERN...: queue what matches the patterns in DIR (relative to root): a link as a
# link, a readable regular file (read at the end, at most 64 KiB and a byte); nothing else. DIR, and each
# directory a pattern names on the way (`topology/*`), is resolved before it is listed, and skipped
# when it leads out of the root.
copy_glob() {
    local dir=$1 base pattern f
    shift
    resolve "$dir" || return 0
    base=$resolved
    for pattern in "$@"; do
        if [[ $pattern == */* ]]; then
            for f in "$root/$base"/${pattern%%/*}; do copy_glob "$dir/${f##*/}" "${pattern#*/}"; done
            continue
        fi
        for f in "$root/$base"/$pattern; do
            if [[ -L $f ]]; then
                links+=("$dir/${f##*/}")
            elif [[ -f $f && -r $f ]]; then
                files+=("$dir/${f##*/}")
            fi
        done
    done
}

# regular REL: whether REL is a readable regular file in the root (its directory resolving inside
# it), to read now; a link there is queued as a link instead (and is not read).
regular() {
    resolve "${1%/*}" || return 1
    if [[ -L $root/$1 ]]; then links+=("$1"); return 1; fi
    [[ -f $root/$1 && -r $root/$1 ]]
}

# Writes everything queued: directories in one mkdir, contents read and written by builtins.
flush() {
    local rel content
    local -A dirs=()
    for rel in "${files[@]}" "${links[@]}"; do dirs["$out/${rel%/*}"]=1; done
    if [[ ${#dirs[@]} -gt 0 ]]; then printf '%s\0' "${!dirs[@]}" | xargs -0 mkdir -p; fi
    for rel in "${files[@]}"; do
        # One byte over the backends' 64 KiB bound: a longer attribute replays as too long. A bash
        # string holds no NUL byte: `read` stops at the first one, and a file that has one (a
        # NUL-separated list) is copied by `head` instead, byte for byte.
        content=
        if IFS= read -r -d '' -n 65537 content 2>/dev/null < "$root/$rel" && ((${#content} < 65537)); then
            head -c 65537 "$root/$rel" > "$out/$rel"
        else
            printf '%s' "$content" > "$out/$rel"
        fi
    done
    for rel in "${links[@]}"; do ln -sfn "$(readlink "$root/$rel")" "$out/$rel"; done
    files=()
    links=()
}

# copy_netdev DIR: queue a network interface's directory (once): its link state (the health of its
# function), and its lower devices, bridge ports and bond slaves (the node-network guard's reads).
declare -A netdevs=()
copy_netdev() {
    [[ -z ${netdevs[$1]:-} ]] || return 0
    netdevs[$1]=1
    copy_glob "$1" ifindex flags operstate carrier 'lower_*'
    [[ -L $root/$1/brif ]] || copy_glob "$1/brif" '*'
    [[ -L $root/$1/bonding ]] || copy_glob "$1" bonding/slaves
    return 0
}

# copy_bounded REL: copy a file that may be long (a routing table) now, what the driver reads of it:
# all of it when it has at most 16 MiB, else the whole lines of its first 16 MiB.
copy_bounded() {
    local limit=16777216
    regular "$1" || return 0
    mkdir -p "$out/${1%/*}"
    head -c "$((limit + 1))" "$root/$1" > "$out/$1"
    if [[ $(wc -c < "$out/$1") -gt $limit ]]; then
        truncate -s "$limit" "$out/$1"
        # Unless the limit ends a line, the last (partial) line goes.
        [[ $(tail -c 1 "$out/$1" | wc -l) -eq 1 ]] || sed -i '$d' "$out/$1"
    fi
}

mask_counter=0
mask_guid() { mask_counter=$((mask_counter + 1)); printf '0000:0000:0000:%04x\n' "$mask_counter"; }

# CPUs and NUMA nodes.
cpu=sys/devices/system/cpu
copy_glob "$cpu" online possible present offline kernel_max smt/active smt/control
each "$cpu" 'cpu[0-9]*'
for c in "${found[@]}"; do
    copy_glob "$c" online cpu_capacity regs/identification/midr_el1 'topology/*'
    each "$c/cache" 'index*'
    for idx in "${found[@]}"; do
        copy_glob "$idx" level type id size shared_cpu_list shared_cpu_map
    done
done
# arm64: /proc/cpuinfo holds every online CPU's MIDR fields (read once instead of a midr_el1 per CPU);
# the driver reads its first 4 MiB. Board serial numbers, which some arm kernels print there, are left
# out.
if regular "$cpu/cpu0/regs/identification/midr_el1" && regular proc/cpuinfo; then
    mkdir -p "$out/proc"
    head -c 4194304 "$root/proc/cpuinfo" | grep -v '^Serial' > "$out/proc/cpuinfo" || true
fi
copy_glob sys/devices/cpu_core cpus
copy_glob sys/devices/cpu_atom cpus
copy_glob sys/devices/cpu_lowpower cpus
node=sys/devices/system/node
copy_glob "$node" online possible has_cpu has_memory
each "$node" 'node[0-9]*'
for d in "${found[@]}"; do
    copy_glob "$d" cpulist cpumap meminfo distance
done

# PCI functions.
copy_glob sys/bus/pci drivers_probe
each sys/bus/pci/slots '*'
for s in "${found[@]}"; do copy_glob "$s" address; done
pci=()
if resolve sys/bus/pci/devices; then
    for link in "$root/$resolved"/*; do
        [[ -e $link || -L $link ]] && pci+=("sys/bus/pci/devices/${link##*/}")
    done
fi
for rel in "${pci[@]}"; do
    [[ -L $root/$rel ]] && links+=("$rel")
    resolve "$rel" || continue
    dev=$resolved
    copy_glob "$dev" vendor device subsystem_vendor subsystem_device class revision numa_node local_cpulist \
        local_cpus driver_override 'sriov_*' driver iommu_group physfn 'virtfn*' lmem_total_bytes \
        prelim_lmem_total_bytes mem_info_vram_total product_name 'tile*/physical_vram_size_bytes'
    each "$dev/net" '*'
    children=("${found[@]}")
    each "$dev" 'virtio*'
    for virtio in "${found[@]}"; do
        each "$virtio/net" '*'
        children+=("${found[@]}")
    done
    for child in "${children[@]}"; do
        [[ -L $root/$child ]] || copy_netdev "$child"
    done
    each "$dev/infiniband_verbs" '*'
    children=("${found[@]}")
    each "$dev/infiniband_mad" '*'
    for child in "${children[@]}" "${found[@]}"; do
        copy_glob "$child" ibdev port dev abi_version
    done
    each "$dev/drm" 'card[0-9]*'
    children=("${found[@]}")
    each "$dev/drm" 'renderD[0-9]*'
    for child in "${children[@]}" "${found[@]}"; do
        copy_glob "$child" dev lmem_total_bytes prelim_lmem_total_bytes
    done
    each "$dev/infiniband" '*'
    for r in "${found[@]}"; do
        copy_glob "$r" node_type fw_ver hca_type
        mkdir -p "$out/$r"
        [[ -r $root/$r/node_guid ]] && mask_guid > "$out/$r/node_guid"
        [[ -r $root/$r/sys_image_guid ]] && mask_guid > "$out/$r/sys_image_guid"
        each "$r/ports" '*'
        for port in "${found[@]}"; do
            copy_glob "$port" state phys_state rate link_layer lid 'gid_attrs/ndevs/*'
        done
    done
done
for class in infiniband infiniband_verbs infiniband_mad drm net; do
    copy_glob "sys/class/$class" '*'
done
copy_glob sys/class/misc/rdma_cm dev
# Every interface, the virtual ones too (sys/devices/virtual/net: lo, bonds, bridges, VLANs): their
# class links would otherwise dangle, and the guard reads their lower devices.
if resolve sys/class/net; then
    for link in "$root/$resolved"/*; do
        [[ -L $link ]] || continue
        resolve "sys/class/net/${link##*/}" && copy_netdev "$resolved"
    done
fi
# The kernel's real-time bandwidth limit (the rt-<group> devices).
copy_glob proc/sys/kernel sched_rt_runtime_us sched_rt_period_us

# The node's routes and IPv6 addresses: which interfaces carry the default route or the InternalIP. On a
# node /proc/net is a link to the reader's own /proc/<pid>/net, inside the root; in a captured tree it
# must not lead out of it. route is always there where IPv4 is (a tree without it withholds every
# interface); ipv6_route and if_inet6 are not when IPv6 is disabled.
for f in route ipv6_route if_inet6; do copy_bounded "proc/net/$f"; done

# NVIDIA driver facts, UUIDs masked; read as the driver reads an attribute (64 KiB, a byte more kept so
# that a longer file stays one).
n=0
each proc/driver/nvidia/gpus '*'
for gpu in "${found[@]}"; do
    regular "$gpu/information" || continue
    mkdir -p "$out/$gpu"
    n=$((n + 1))
    head -c 65537 "$root/$gpu/information" |
        sed -E "s/(GPU UUID:[[:space:]]*)GPU-[0-9a-fA-F-]+/\1GPU-00000000-0000-0000-0000-$(printf '%012x' "$n")/" \
        > "$out/$gpu/information"
done
flush

echo "capture-fixture: wrote $(find "$out" -type f | wc -l) files and $(find "$out" -type l | wc -l) links to $out"
