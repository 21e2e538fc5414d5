/* Cold start: exec -> first "200" from GET PATH on 127.0.0.1:PORT.
 *
 *   coldstart PORT PATH POLL_US -- COMMAND [ARGS...]
 *
 * Takes the time (CLOCK_MONOTONIC) just before fork(), execs COMMAND, and
 * polls every POLL_US microseconds: connect(), send one HTTP/1.1 request,
 * read the status line. Prints "READY <pid> <milliseconds> <attempts>" when
 * the first 200 arrives (the figure is at most one poll interval plus one
 * request late), then waits for a line or EOF on stdin, sends SIGTERM to
 * the child (SIGKILL after 5 s) and exits. Gives up after 10 s ("FAIL").
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static double now_ms(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec * 1e3 + t.tv_nsec / 1e6;
}

static int probe(int port, const char *path) {
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) return 0;
    struct sockaddr_in a = {0};
    a.sin_family = AF_INET;
    a.sin_port = htons(port);
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    int ok = 0;
    if (connect(fd, (struct sockaddr *)&a, sizeof a) == 0) {
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        char req[512];
        int n = snprintf(req, sizeof req,
                         "GET %s HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n", path);
        if (write(fd, req, n) == n) {
            char buf[64] = {0};
            ssize_t got = 0, r;
            while (got < 12 && (r = read(fd, buf + got, sizeof buf - 1 - got)) > 0) got += r;
            ok = got >= 12 && strncmp(buf + 9, "200", 3) == 0;
        }
    }
    close(fd);
    return ok;
}

int main(int argc, char **argv) {
    if (argc < 6 || strcmp(argv[4], "--") != 0) {
        fprintf(stderr, "usage: coldstart PORT PATH POLL_US -- COMMAND [ARGS...]\n");
        return 2;
    }
    int port = atoi(argv[1]);
    const char *path = argv[2];
    useconds_t poll_us = (useconds_t)atoi(argv[3]);
    double t0 = now_ms();
    pid_t pid = fork();
    if (pid < 0) { perror("fork"); return 1; }
    if (pid == 0) {
        execvp(argv[5], argv + 5);
        perror("exec");
        _exit(127);
    }
    long attempts = 0;
    double t1 = 0;
    for (;;) {
        attempts++;
        if (probe(port, path)) { t1 = now_ms(); break; }
        int status;
        if (waitpid(pid, &status, WNOHANG) == pid) {
            printf("FAIL exited before answering\n");
            return 1;
        }
        if (now_ms() - t0 > 10000) {
            printf("FAIL no 200 within 10 s\n");
            kill(pid, SIGKILL);
            return 1;
        }
        usleep(poll_us);
    }
    printf("READY %d %.3f %ld\n", (int)pid, t1 - t0, attempts);
    fflush(stdout);
    char line[64];
    (void)!fgets(line, sizeof line, stdin);
    kill(pid, SIGTERM);
    for (int i = 0; i < 500; i++) {
        if (waitpid(pid, NULL, WNOHANG) == pid) return 0;
        usleep(10000);
    }
    kill(pid, SIGKILL);
    waitpid(pid, NULL, 0);
    return 0;
}
