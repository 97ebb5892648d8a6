/*
 * Times hwloc's own discovery in process: hwloc_topology_load() of the Linux tree under FSROOT (what
 * `lstopo -i FSROOT --whole-io` loads before it writes anything), RUNS times after three warm-up loads.
 * Prints one line: the mean and the fastest load in milliseconds, the PUs and the PCI devices found,
 * as driver/examples/inventory-timing.rs prints them for the driver's read, so that
 * scripts/bench-discovery.sh can put the two libraries side by side.
 *
 * Build: cc -O2 -o hwloc-load scripts/hwloc-load.c -lhwloc   (Debian libhwloc-dev)
 * Usage: hwloc-load FSROOT RUNS
 */
#include <hwloc.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#define WARM_UP 3

static double now_ms(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec * 1e3 + t.tv_nsec / 1e6;
}

int main(int argc, char **argv)
{
    if (argc != 3 || atoi(argv[2]) <= 0) {
        fprintf(stderr, "usage: %s FSROOT RUNS\n", argv[0]);
        return 2;
    }
    /* As lstopo -i DIR does: read the tree under FSROOT with the Linux backend alone. */
    setenv("HWLOC_FSROOT", argv[1], 1);
    setenv("HWLOC_COMPONENTS", "linux,stop", 1);
    /* hwloc-dump-hwdata's output directory (looked up under FSROOT), at its default, as the bench
     * script sets it for lstopo. */
    setenv("HWLOC_DUMPED_HWDATA_DIR", "/var/run/hwloc", 1);
    int runs = atoi(argv[2]);
    double total = 0, best = 1e300;
    int pus = 0, pcis = 0;
    for (int i = 0; i < WARM_UP + runs; i++) {
        hwloc_topology_t topology;
        double start = now_ms();
        if (hwloc_topology_init(&topology) != 0
            || hwloc_topology_set_io_types_filter(topology, HWLOC_TYPE_FILTER_KEEP_ALL) != 0
            || hwloc_topology_load(topology) != 0) {
            fprintf(stderr, "hwloc-load: loading %s failed\n", argv[1]);
            return 1;
        }
        double ms = now_ms() - start;
        pus = hwloc_get_nbobjs_by_type(topology, HWLOC_OBJ_PU);
        pcis = hwloc_get_nbobjs_by_type(topology, HWLOC_OBJ_PCI_DEVICE);
        hwloc_topology_destroy(topology);
        if (i >= WARM_UP) {
            total += ms;
            if (ms < best)
                best = ms;
        }
    }
    printf("%.3f %.3f %d %d\n", total / runs, best, pus, pcis);
    return 0;
}
