/*
 * The floor for discovery: opens, reads and closes the files (and lists the directories) that
 * hal-probe opens on a tree, and nothing else: no parsing, no output. scripts/bench-discovery.sh
 * writes the list from an strace of hal-probe; a program that reads those files cannot take less time
 * than this one (bar reading fewer of them).
 *
 * Build: cc -O2 -o floor scripts/floor.c
 * Usage: floor LIST   (LIST: one line per file, "F <path>" to read, "D <path>" to list)
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

int main(int argc, char **argv) {
    if (argc != 2) {
        fprintf(stderr, "usage: floor LIST\n");
        return 2;
    }
    FILE *list = fopen(argv[1], "r");
    if (!list) {
        perror(argv[1]);
        return 1;
    }
    static char buf[65536];
    char *line = NULL;
    size_t cap = 0;
    ssize_t len;
    long opened = 0;
    while ((len = getline(&line, &cap, list)) > 0) {
        if (line[len - 1] == '\n')
            line[--len] = '\0';
        if (len < 3)
            continue;
        const char *path = line + 2;
        int dir = line[0] == 'D';
        int fd = open(path, O_RDONLY | O_CLOEXEC | (dir ? O_DIRECTORY : 0));
        if (fd < 0)
            continue;
        opened++;
        if (dir) {
            while (syscall(SYS_getdents64, fd, buf, sizeof buf) > 0) {
            }
        } else {
            /* As hal-probe reads: a short read of a regular file is its end. */
            while (read(fd, buf, sizeof buf) == (ssize_t)sizeof buf) {
            }
        }
        close(fd);
    }
    free(line);
    fclose(list);
    return opened > 0 ? 0 : 1;
}
