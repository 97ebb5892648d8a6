#!/usr/bin/env bash
# Benchmarks discovery. CPU topology: `hal-probe --sysfs-root DIR --format json cpu` against hwloc's
# `lstopo-no-graphics --of xml -` on the three largest hwloc Linux dumps (by CPU count) and on a fixture
# machine's tree (written once with `hal-fixture`, so both tools read the same files). Full inventory
# (CPU + PCI + SR-IOV + RDMA + GPU): `hal-probe` beside `lstopo --whole-io` and `lspci -vmm` on the
# fixture trees and on the hwloc dumps with I/O.
#
# In process: the driver's read of each full-inventory tree (driver/examples/inventory-timing.rs)
# beside hwloc's own hwloc_topology_load of it with all I/O (scripts/hwloc-load.c, built here when
# hwloc's headers are installed: Debian libhwloc-dev), each timed RUNS times within one process: the
# two libraries alone, without either tool's start, output or exit.
#
# Prints, to stdout, hyperfine's results per input and then two tables. Processes (a `cpu:` row per
# CPU-only input, an `all:` row per full-inventory input): mean wall times, the ratio lstopo /
# hal-probe, lspci's time where it ran, and the peak RSS of one hal-probe run per input; "target
# missed" marks a ratio below 10x or an RSS of 8 MiB or more. Then how late a fresh process's two
# threads start on this machine. In process: mean load times and their ratio, with what each found.
# The cargo build log goes to stderr.
# It is a report: missed targets do not fail it. It exits non-zero only when a tool is missing or a
# command fails.
#
# Needs: cargo, Debian `hyperfine`, `hwloc` (lstopo-no-graphics), `bzip2` (with tar), python3, and the
# hwloc corpus at ../shared/corpora/hwloc-linux (override with HWLOC_CORPUS=DIR).
# Optional: FIXTURE=NAME (default xeon) picks the embedded fixture machine; `cc` and `libhwloc-dev`
# for the in-process table (skipped, with a message, without them); RUNS=N (default 50) loads per
# library and input in that table, and fresh processes of scripts/thread-start.c (built with `cc`),
# whose thread start delays are printed between the two tables.
#
# Usage: scripts/bench-discovery.sh
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
repo=$(pwd)
corpus=${HWLOC_CORPUS:-$repo/../shared/corpora/hwloc-linux}
fixture=${FIXTURE:-xeon}
target_dir=${CARGO_TARGET_DIR:-$repo/target}
probe=$target_dir/release/hal-probe
dumps=(256ia64-64n2s2c 128ia64-17n4s2c 96em64t-4no4pa3ca2co)
ratio_target=10
rss_target_mib=8

missing=0
for tool in cargo hyperfine lstopo-no-graphics tar bzip2 python3; do
    if ! command -v "$tool" >/dev/null 2>&1; then
        echo "bench-discovery: missing tool: $tool" >&2
        missing=1
    fi
done
[[ $missing -eq 0 ]] || exit 1
for dump in "${dumps[@]}"; do
    if [[ ! -f $corpus/$dump.tar.bz2 ]]; then
        echo "bench-discovery: missing dump: $corpus/$dump.tar.bz2" >&2
        exit 1
    fi
done

tmp=$(mktemp -d -t bench-discovery.XXXXXX)
trap 'rm -rf "$tmp"' EXIT

echo "== building hal-probe and hal-fixture (release)"
cargo build --release -p hal-probe
cargo build --release -p hal-mock --bin hal-fixture
cargo build --release -p driver --example inventory-timing
runs=${RUNS:-50}
hwloc_load=
if command -v cc >/dev/null 2>&1 \
    && cc -O2 -o "$tmp/hwloc-load" scripts/hwloc-load.c -lhwloc 2>"$tmp/hwloc-load.log"; then
    hwloc_load=$tmp/hwloc-load
else
    echo "(no cc or no hwloc headers (Debian libhwloc-dev): the in-process table is skipped)" >&2
fi
thread_start=
if command -v cc >/dev/null 2>&1 \
    && cc -O2 -pthread -o "$tmp/thread-start" scripts/thread-start.c 2>"$tmp/thread-start.log"; then
    thread_start=$tmp/thread-start
else
    echo "(no cc, or scripts/thread-start.c did not build: the thread start delays are not measured)" >&2
fi

# Peak RSS in KiB of one run of the given command (stdout discarded; a failure is fatal).
#
# Not `getrusage(RUSAGE_CHILDREN).ru_maxrss` after `subprocess.run`: Linux charges a process, at exec,
# with the high-water RSS of the address space it replaces, which for a child of python3 is python's own
# (~10-14 MiB, even for /bin/true). Instead the child is traced, stopped at exit (PTRACE_O_TRACEEXIT) and
# its `VmHWM` (peak RSS of the exec'd program alone) read from /proc. Where ptrace is not allowed it falls
# back to ru_maxrss and prints the value with a '>' (an upper bound that includes python's RSS).
peak_rss_kib() {
    python3 - "$@" <<'EOF'
import ctypes, os, resource, signal, subprocess, sys

libc = ctypes.CDLL(None, use_errno=True)
libc.ptrace.argtypes = [ctypes.c_long, ctypes.c_long, ctypes.c_void_p, ctypes.c_void_p]
libc.ptrace.restype = ctypes.c_long
PTRACE_TRACEME, PTRACE_CONT, PTRACE_SETOPTIONS = 0, 7, 0x4200
PTRACE_O_TRACEEXIT, PTRACE_EVENT_EXIT = 0x40, 6
TRACE_REFUSED = 125

def traceme():
    if libc.ptrace(PTRACE_TRACEME, 0, None, None) != 0:
        os._exit(TRACE_REFUSED)

proc = subprocess.Popen(sys.argv[1:], stdout=subprocess.DEVNULL, preexec_fn=traceme)
pid, status = os.waitpid(proc.pid, 0)
if os.WIFEXITED(status) and os.WEXITSTATUS(status) == TRACE_REFUSED:
    subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL, check=True)
    print(">%d" % resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
    sys.exit(0)
# Stopped by the SIGTRAP that follows a traced exec.
libc.ptrace(PTRACE_SETOPTIONS, pid, None, ctypes.c_void_p(PTRACE_O_TRACEEXIT))
libc.ptrace(PTRACE_CONT, pid, None, None)
hwm = None
while True:
    pid, status = os.waitpid(proc.pid, 0)
    if os.WIFEXITED(status) or os.WIFSIGNALED(status):
        break
    deliver = os.WSTOPSIG(status)
    if status >> 16 == PTRACE_EVENT_EXIT:
        with open(f"/proc/{pid}/status") as f:
            hwm = next(int(line.split()[1]) for line in f if line.startswith("VmHWM:"))
        deliver = 0
    elif deliver == signal.SIGTRAP:
        deliver = 0
    libc.ptrace(PTRACE_CONT, pid, None, ctypes.c_void_p(deliver))
if not os.WIFEXITED(status) or os.WEXITSTATUS(status) != 0 or hwm is None:
    sys.exit(f"peak RSS: {sys.argv[1:]} failed (wait status {status:#x})")
print(hwm)
EOF
}

# Input name, hyperfine JSON, RSS in KiB: one line per input, for the table at the end.
results=$tmp/results.tsv
: >"$results"

# Extracts a dump and prints its filesystem root: the one top-level directory (its name need not match
# the tarball's), or its fsroot/ where there is one, as in hwloc's test runner.
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

for dump in "${dumps[@]}"; do
    echo "== extracting $dump"
    root=$(extract_dump "$dump")

    echo "== timing $dump"
    # The hwloc variables are exported to both commands (hal-probe ignores them) so that neither pays for
    # an extra `env` exec. HWLOC_DUMPED_HWDATA_DIR (hwloc-dump-hwdata's output, looked up under
    # HWLOC_FSROOT) is set to its default, as the hwloc test runner sets it.
    HWLOC_FSROOT=$root HWLOC_COMPONENTS=linux,stop HWLOC_DUMPED_HWDATA_DIR=/var/run/hwloc \
        hyperfine -N --warmup 3 --style basic --export-json "$tmp/$dump.json" \
        --command-name hal-probe "$probe --sysfs-root $root --format json cpu" \
        --command-name lstopo "lstopo-no-graphics --of xml -"
    rss=$(peak_rss_kib "$probe" --sysfs-root "$root" --format json cpu)
    printf '%s\t%s\t%s\n' "cpu:$dump" "$tmp/$dump.json" "$rss" >>"$results"
done

echo "== timing fixture $fixture"
fixture_root=$tmp/fixture-$fixture
"$target_dir/release/hal-fixture" "$fixture" "$fixture_root"
HWLOC_FSROOT=$fixture_root HWLOC_COMPONENTS=linux,stop HWLOC_DUMPED_HWDATA_DIR=/var/run/hwloc \
    hyperfine -N --warmup 3 --style basic --export-json "$tmp/fixture.json" \
    --command-name hal-probe "$probe --sysfs-root $fixture_root --format json cpu" \
    --command-name lstopo "lstopo-no-graphics --of xml -"
rss=$(peak_rss_kib "$probe" --sysfs-root "$fixture_root" --format json cpu)
printf '%s\t%s\t%s\n' "cpu:fixture:$fixture" "$tmp/fixture.json" "$rss" >>"$results"

# Full inventory (every family, topology included) on every fixture tree and the hwloc dumps with I/O,
# beside lstopo --whole-io and lspci -vmm (pciutils, if installed; pointed at the tree with
# -A linux-sysfs -O sysfs.path). hyperfine prints the ratios.
inventory_roots=()
for name in xeon gb300 i915; do
    dir=$tmp/inventory-$name
    "$target_dir/release/hal-fixture" "$name" "$dir"
    inventory_roots+=("fixture:$name=$dir")
done
io_dumps=(32intel64-2p8co2t+8ve 40intel64-2g2n4c+pcilocality)
for dump in "${io_dumps[@]}"; do
    inventory_roots+=("$dump=$(extract_dump "$dump")")
done
for entry in "${inventory_roots[@]}"; do
    dump=${entry%%=*} root=${entry#*=}
    echo "== full inventory on $dump"
    lspci_cmd=()
    if command -v lspci >/dev/null 2>&1; then
        lspci_cmd=(--command-name "lspci -vmm" "lspci -vmm -A linux-sysfs -O sysfs.path=$root/sys/bus/pci")
    else
        echo "(lspci not installed: Debian pciutils; skipped)"
    fi
    json=$tmp/full-${dump//:/-}.json
    HWLOC_FSROOT=$root HWLOC_COMPONENTS=linux,stop HWLOC_DUMPED_HWDATA_DIR=/var/run/hwloc \
        hyperfine -N --warmup 3 --style basic --export-json "$json" \
        --command-name hal-probe "$probe --sysfs-root $root --format json" \
        --command-name lstopo "lstopo-no-graphics --whole-io --of xml -" \
        "${lspci_cmd[@]}"
    rss=$(peak_rss_kib "$probe" --sysfs-root "$root" --format json)
    printf '%s\t%s\t%s\n' "all:$dump" "$json" "$rss" >>"$results"
    if [[ -n $hwloc_load ]]; then
        echo "== in process on $dump ($runs loads each)"
        ours=$("$target_dir/release/examples/inventory-timing" "$root" "$runs")
        theirs=$("$hwloc_load" "$root" "$runs")
        printf '%s\t%s\t%s\n' "$dump" "$ours" "$theirs" >>"$tmp/in-process.tsv"
    fi
done

python3 - "$results" "$ratio_target" "$rss_target_mib" <<'EOF'
import json, sys

results, ratio_target, rss_target = sys.argv[1], float(sys.argv[2]), float(sys.argv[3])
header = ("input", "hal-probe ms", "lstopo ms", "lstopo/hal-probe", "lspci -vmm ms",
          "hal-probe RSS MiB", "verdict")
rows = []
missed = 0
with open(results) as f:
    for line in f:
        name, path, rss_kib = line.rstrip("\n").split("\t")
        with open(path) as j:
            means = {r["command"]: r["mean"] * 1000 for r in json.load(j)["results"]}
        probe = means["hal-probe"]
        lstopo = means.get("lstopo")
        lspci = means.get("lspci -vmm")
        bound = rss_kib.startswith(">")
        rss = int(rss_kib.lstrip(">")) / 1024
        problems = []
        if lstopo is not None and lstopo / probe < ratio_target:
            problems.append(f"ratio < {ratio_target:g}")
        if rss >= rss_target:
            problems.append(f"RSS >= {rss_target:g} MiB")
        missed += bool(problems)
        verdict = "target missed: " + ", ".join(problems) if problems else "ok"
        rows.append((
            name,
            f"{probe:.2f}",
            f"{lstopo:.2f}" if lstopo is not None else "n/a (not timed)",
            f"{lstopo / probe:.1f}x" if lstopo is not None else "n/a",
            f"{lspci:.2f}" if lspci is not None else "n/a",
            (">" if bound else "") + f"{rss:.1f}",
            verdict,
        ))
widths = [max(len(r[i]) for r in rows + [header]) for i in range(len(header))]
fmt = "  ".join(f"{{:<{w}}}" for w in widths)
print(fmt.format(*header))
print(fmt.format(*("-" * w for w in widths)))
for r in rows:
    print(fmt.format(*r))
print()
print(f"targets: lstopo/hal-probe >= {ratio_target:g}x, hal-probe peak RSS < {rss_target:g} MiB.")
print("cpu: rows time `hal-probe cpu` against `lstopo`; all: rows the full inventory (every family,")
print("topology included) against `lstopo --whole-io` (and `lspci -vmm` where installed).")
print("fixture rows read the fixture's tree written once by hal-fixture, as lstopo does.")
print("RSS is the exec'd hal-probe's own VmHWM at exit ('>' marks a fallback upper bound, see the script).")
print(f"{missed} of {len(rows)} inputs missed a target." if missed else "all targets met.")
EOF

if [[ -n $thread_start ]]; then
    echo
    for _ in $(seq "$runs"); do "$thread_start"; done >"$tmp/thread-start.txt"
    python3 - "$tmp/thread-start.txt" <<'EOF'
import statistics, sys

rows = [line.split() for line in open(sys.argv[1])]
first = sorted(float(r[0]) for r in rows)
second = sorted(float(r[2]) for r in rows)
shared = sum(r[1] == r[3] for r in rows)
p90 = lambda xs: xs[min(len(xs) - 1, int(len(xs) * 0.9))]
print(f"thread start in a fresh process ({len(rows)} processes, scripts/thread-start.c): first thread "
      f"median {statistics.median(first):.0f} us (p90 {p90(first):.0f}), second median "
      f"{statistics.median(second):.0f} us (p90 {p90(second):.0f}); both on one CPU in {shared}.")
print("hal-probe reads its families on two threads: where the second starts milliseconds late, a process")
print("reads about as fast as one thread, and the process rows fall behind the in-process table.")
EOF
fi

[[ -f $tmp/in-process.tsv ]] || exit 0
echo
python3 - "$tmp/in-process.tsv" "$ratio_target" <<'EOF'
import sys

path, ratio_target = sys.argv[1], float(sys.argv[2])
header = ("input", "driver read ms", "hwloc load ms", "hwloc/driver", "CPUs (driver/hwloc)",
          "PCI (driver/hwloc)")
rows = []
for line in open(path):
    name, ours, theirs = line.rstrip("\n").split("\t")
    o_mean, o_best, o_cpus, o_pci = ours.split()
    t_mean, t_best, t_pus, t_pci = theirs.split()
    ratio = float(t_mean) / float(o_mean)
    rows.append((name, f"{float(o_mean):.2f} (best {float(o_best):.2f})",
                 f"{float(t_mean):.2f} (best {float(t_best):.2f})",
                 f"{ratio:.1f}x" + ("" if ratio >= ratio_target else " (< target)"),
                 f"{o_cpus}/{t_pus}", f"{o_pci}/{t_pci}"))
widths = [max(len(r[i]) for r in rows + [header]) for i in range(len(header))]
fmt = "  ".join(f"{{:<{w}}}" for w in widths)
print("in process (mean of each library's loads, one process each, warm page cache):")
print(fmt.format(*header))
print(fmt.format(*("-" * w for w in widths)))
for r in rows:
    print(fmt.format(*r))
print()
print("driver read: Inventory::from_sysfs (two threads share the families; on 128 CPUs or more the")
print("CPU topology's own reading uses up to 4; no pci.ids names); hwloc load:")
print("hwloc_topology_load keeping every I/O object (as lstopo --whole-io), one thread.")
print("PCI: the driver counts every function; hwloc's count leaves out bridges (its bridge objects).")
EOF
