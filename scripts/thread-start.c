/*
 * How long a fresh process waits for its threads to start: spawns two threads, as hal-probe's
 * reading does (backends::parallel::read_on_two_threads: two workers, the main thread waits), and
 * prints, in microseconds, when each began to run after its pthread_create call, and on which CPU.
 * Each thread then spins for about a millisecond, as a family's reading keeps its core busy.
 *
 * A process's own speed is bounded by this: where the second thread starts milliseconds late (a VM
 * whose host has descheduled the idle vCPU; the fork placing both threads on the parent's CPU until
 * the next load balance), two threads read about as fast as one. scripts/bench-discovery.sh runs it
 * in fresh processes and prints the spread, beside its tables.
 *
 * Build: cc -O2 -pthread -o thread-start scripts/thread-start.c
 * Usage: thread-start   (prints: first_us first_cpu second_us second_cpu)
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <time.h>

static double now_us(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec * 1e6 + t.tv_nsec / 1e3;
}

struct worker {
    double created;
    double started;
    int cpu;
};

static void *run(void *arg)
{
    struct worker *w = arg;
    w->started = now_us();
    w->cpu = sched_getcpu();
    while (now_us() - w->started < 1000)
        ;
    return NULL;
}

int main(void)
{
    struct worker w[2];
    pthread_t t[2];
    for (int i = 0; i < 2; i++) {
        w[i].created = now_us();
        if (pthread_create(&t[i], NULL, run, &w[i]) != 0) {
            perror("pthread_create");
            return 1;
        }
    }
    for (int i = 0; i < 2; i++)
        pthread_join(t[i], NULL);
    printf("%.0f %d %.0f %d\n", w[0].started - w[0].created, w[0].cpu,
           w[1].started - w[1].created, w[1].cpu);
    return 0;
}
