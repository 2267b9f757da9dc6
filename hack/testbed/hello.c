/*
 * "distroless" test workload for the nsdebug testbed.
 *
 * A tiny HTTP/1.0 server: listens on 0.0.0.0:$PORT (default 8080), answers
 * every request with "HTTP/1.0 200 OK" and the body "hello from <hostname>\n",
 * one connection at a time. Exits 0 on SIGTERM/SIGINT. Built with
 * `gcc -static -O2`; it is the only file in its image (no shell, no libc).
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/types.h>
#include <unistd.h>

static void on_term(int sig) {
    (void)sig;
    _exit(0);
}

static int write_all(int fd, const char *buf, size_t len) {
    while (len > 0) {
        ssize_t n = write(fd, buf, len);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return -1;
        }
        buf += n;
        len -= (size_t)n;
    }
    return 0;
}

/* Read the request head (until an empty line), bounded in size and time. */
static void drain_request(int fd) {
    char buf[4096];
    char tail[4] = {0, 0, 0, 0};
    size_t total = 0;
    for (;;) {
        ssize_t n = read(fd, buf, sizeof(buf));
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return;
        total += (size_t)n;
        for (ssize_t i = 0; i < n; i++) {
            tail[0] = tail[1];
            tail[1] = tail[2];
            tail[2] = tail[3];
            tail[3] = buf[i];
            if (tail[2] == '\n' && tail[3] == '\n')
                return;
            if (tail[0] == '\r' && tail[1] == '\n' && tail[2] == '\r' && tail[3] == '\n')
                return;
        }
        if (total > 64 * 1024)
            return;
    }
}

int main(void) {
    struct sigaction sa;
    memset(&sa, 0, sizeof(sa));
    sigemptyset(&sa.sa_mask);
    sa.sa_handler = on_term;
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);

    int port = 8080;
    const char *p = getenv("PORT");
    if (p != NULL && *p != '\0') {
        char *end = NULL;
        long v = strtol(p, &end, 10);
        if (end == NULL || *end != '\0' || v <= 0 || v > 65535) {
            fprintf(stderr, "hello: invalid PORT %s\n", p);
            return 2;
        }
        port = (int)v;
    }

    char host[256];
    if (gethostname(host, sizeof(host) - 1) < 0)
        strcpy(host, "unknown");
    host[sizeof(host) - 1] = '\0';

    char body[512];
    int blen = snprintf(body, sizeof(body), "hello from %s\n", host);
    char resp[1024];
    int rlen = snprintf(resp, sizeof(resp),
                        "HTTP/1.0 200 OK\r\n"
                        "Content-Type: text/plain\r\n"
                        "Content-Length: %d\r\n"
                        "Connection: close\r\n"
                        "\r\n"
                        "%s",
                        blen, body);

    int s = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (s < 0) {
        perror("hello: socket");
        return 1;
    }
    int one = 1;
    setsockopt(s, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    struct sockaddr_in addr;
    memset(&addr, 0, sizeof(addr));
    addr.sin_family = AF_INET;
    addr.sin_port = htons((unsigned short)port);
    addr.sin_addr.s_addr = htonl(INADDR_ANY);
    if (bind(s, (struct sockaddr *)&addr, sizeof(addr)) < 0) {
        perror("hello: bind");
        return 1;
    }
    if (listen(s, 64) < 0) {
        perror("hello: listen");
        return 1;
    }
    printf("hello: listening on 0.0.0.0:%d as %s\n", port, host);
    fflush(stdout);

    for (;;) {
        int c = accept4(s, NULL, NULL, SOCK_CLOEXEC);
        if (c < 0) {
            if (errno == EINTR || errno == ECONNABORTED)
                continue;
            perror("hello: accept");
            continue;
        }
        struct timeval tv = {5, 0};
        setsockopt(c, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
        setsockopt(c, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
        drain_request(c);
        write_all(c, resp, (size_t)rlen);
        shutdown(c, SHUT_WR);
        close(c);
    }
}
