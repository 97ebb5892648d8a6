#!/usr/bin/env bash
# Benchmarks discovery against its floor and against lstopo. For each input (the fixture machines xeon
# and gb300, written once with `hal-fixture`, and the largest hwloc Linux dumps), it
#   1. runs `hal-probe --sysfs-root ROOT --format json` (the full inventory: CPU topology, PCI, SR-IOV,
#      RDMA, GPUs, with pci.ids names) under strace and keeps the files it opened for reading and the
#      directories it listed (not the O_PATH handles, nor the loader's libraries);
#   2. times with hyperfine: hal-probe; the floor (scripts/floor.c: a C program that only opens,
#      reads and closes those files and lists those directories, nothing else); and
#      `lstopo-no-graphics --whole-io --of xml -` on the same tree (HWLOC_FSROOT);
#   3. prints a table: mean times, hal-probe / floor (the goal is at most 1.5x) and hal-probe / lstopo.
#
# It is a report: a missed goal does not fail it. It exits non-zero only when a tool is missing or a
# command fails. Numbers depend on the machine: run it on an idle one (hyperfine warns otherwise).
#
# Needs: cargo, cc, strace, Debian `hyperfine`, `hwloc` (lstopo-no-graphics), `pci.ids`, tar with
# bzip2, python3, and the hwloc corpus at ../shared/corpora/hwloc-linux (HWLOC_CORPUS=DIR overrides).
# Optional: RUNS=N (hyperfine's runs per command; default: hyperfine's choice, at least 10);
# PROBE=BIN times that hal-probe binary instead of building one (to compare two builds, e.g. a copy
# of main's beside a branch's, run after run).
#
# Usage: scripts/bench-discovery.sh
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
repo=$(pwd)
corpus=${HWLOC_CORPUS:-$repo/../shared/corpora/hwloc-linux}
target_dir=${CARGO_TARGET_DIR:-$repo/target}
probe=${PROBE:-$target_dir/release/hal-probe}
fixtures=(xeon gb300)
dumps=(256ia64-64n2s2c 96em64t-4no4pa3ca2co)
goal=1.5

missing=0
for tool in cargo cc strace hyperfine lstopo-no-graphics tar bzip2 python3; do
    if ! command -v "$tool" >/dev/null 2>&1; then
        echo "bench-discovery: missing tool: $tool" >&2
        missing=1
    fi
done
[[ -r /usr/share/misc/pci.ids ]] || { echo "bench-discovery: missing Debian pci.ids" >&2; missing=1; }
for dump in "${dumps[@]}"; do
    [[ -f $corpus/$dump.tar.bz2 ]] || { echo "bench-discovery: missing $corpus/$dump.tar.bz2" >&2; missing=1; }
done
[[ $missing -eq 0 ]] || exit 1

tmp=$(mktemp -d -t bench-discovery.XXXXXX)
trap 'rm -rf "$tmp"' EXIT

echo "== building hal-probe and hal-fixture (release), and the floor" >&2
[[ -n ${PROBE:-} ]] || cargo build --release -q -p hal-probe >&2
cargo build --release -q -p hal-mock --bin hal-fixture >&2
cc -O2 -o "$tmp/floor" scripts/floor.c

# Extracts a dump and prints its filesystem root: the one top-level directory, or its fsroot/ where
# there is one, as in hwloc's test runner.
extract_dump() {
    local dump=$1 dir=$tmp/$1
    mkdir -p "$dir"
    tar -xjf "$corpus/$dump.tar.bz2" -C "$dir"
    local tops=("$dir"/*/)
    if [[ ${#tops[@]} -ne 1 || ! -d ${tops[0]} ]]; then
        echo "bench-discovery: $dump: expected one top-level directory, found ${#tops[@]}" >&2
        exit 1
    fi
    local root=${tops[0]%/}
    [[ -d $root/fsroot ]] && root=$root/fsroot
    echo "$root"
}

inputs=()
for name in "${fixtures[@]}"; do
    "$target_dir/release/hal-fixture" "$name" "$tmp/fixture-$name"
    inputs+=("$name=$tmp/fixture-$name")
done
for dump in "${dumps[@]}"; do
    inputs+=("${dump%%-*}=$(extract_dump "$dump")")
done

# The files hal-probe opened for reading ("F path") and the directories it listed ("D path"), from
# strace -y (which prints the path of each fd returned): under the root, and the pci.ids database.
files_opened() {
    python3 - "$1" "$2" <<'EOF'
import re, sys

trace, root = sys.argv[1], sys.argv[2].rstrip("/") + "/"
opened = re.compile(r"\b(?:open|openat|openat2)\((.*)\) = \d+<(.*)>$")
resumed = re.compile(r"^<\.\.\. (?:open|openat|openat2) resumed>")
seen, pending = set(), {}
for line in open(trace):
    # strace -f: a call another thread interrupts is split into "<unfinished ...>" and "resumed" lines.
    pid, _, call = line.rstrip("\n").partition(" ")
    call = call.lstrip()
    if call.endswith("<unfinished ...>"):
        pending[pid] = call[: -len("<unfinished ...>")]
        continue
    if resumed.match(call):
        call = pending.pop(pid, "") + resumed.sub("", call)
    m = opened.search(call)
    if not m or "O_PATH" in m.group(1):
        continue
    path = m.group(2)
    if not (path.startswith(root) or path.endswith("/pci.ids")) or path in seen:
        continue
    seen.add(path)
    print(("D " if "O_DIRECTORY" in m.group(1) else "F ") + path)
EOF
}

results=$tmp/results.tsv
: >"$results"
runs=()
[[ -n ${RUNS:-} ]] && runs=(--runs "$RUNS")
for entry in "${inputs[@]}"; do
    name=${entry%%=*} root=${entry#*=}
    echo "== $name ($root)" >&2
    strace -f -qq -y -e trace=open,openat,openat2 -o "$tmp/$name.trace" \
        "$probe" --sysfs-root "$root" --format json >/dev/null
    files_opened "$tmp/$name.trace" "$root" >"$tmp/$name.list"
    # The hwloc variables are exported to every command (the others ignore them), so none pays for an
    # extra `env` exec.
    HWLOC_FSROOT=$root HWLOC_COMPONENTS=linux,stop HWLOC_DUMPED_HWDATA_DIR=/var/run/hwloc \
        hyperfine -N --warmup 5 "${runs[@]}" --style basic --export-json "$tmp/$name.json" \
        --command-name hal-probe "$probe --sysfs-root $root --format json" \
        --command-name floor "$tmp/floor $tmp/$name.list" \
        --command-name lstopo "lstopo-no-graphics --whole-io --of xml -" >&2
    printf '%s\t%s\t%s\n' "$name" "$tmp/$name.json" "$tmp/$name.list" >>"$results"
done

python3 - "$results" "$goal" <<'EOF'
import json, sys

results, goal = sys.argv[1], float(sys.argv[2])
header = ("input", "files/dirs", "hal-probe ms", "floor ms", "lstopo ms", "hal-probe/floor",
          "hal-probe/lstopo", "goal")
rows = []
for line in open(results):
    name, path, listing = line.rstrip("\n").split("\t")
    kinds = [l[0] for l in open(listing)]
    means = {r["command"]: r["mean"] * 1000 for r in json.load(open(path))["results"]}
    probe, floor, lstopo = means["hal-probe"], means["floor"], means["lstopo"]
    rows.append((name, f"{kinds.count('F')}/{kinds.count('D')}", f"{probe:.2f}", f"{floor:.2f}",
                 f"{lstopo:.2f}", f"{probe / floor:.2f}x", f"{probe / lstopo:.2f}x",
                 "ok" if probe / floor <= goal else f"over {goal:g}x"))
widths = [max(len(r[i]) for r in rows + [header]) for i in range(len(header))]
fmt = "  ".join(f"{{:<{w}}}" for w in widths)
print(fmt.format(*header))
print(fmt.format(*("-" * w for w in widths)))
for r in rows:
    print(fmt.format(*r))
print()
print("hal-probe: `hal-probe --sysfs-root ROOT --format json` (every family, pci.ids names); floor:")
print("scripts/floor.c opening, reading and closing the files hal-probe opened (strace) and listing its")
print(f"directories; lstopo: `lstopo-no-graphics --whole-io --of xml -`. Goal: hal-probe/floor <= {goal:g}x.")
EOF
