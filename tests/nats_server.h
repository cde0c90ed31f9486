/*
 * nats_server.h: starts and stops a nats-server with JetStream for a test:
 * loopback, a free port, file storage in a temporary directory. Header only
 * (static functions), shared by the NATS store and cluster suites and the
 * cluster bench. Every wait is bounded.
 */
#ifndef WF_TEST_NATS_SERVER_H
#define WF_TEST_NATS_SERVER_H

#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

typedef struct nserver {
    pid_t pid;
    int port;
    char dir[256];
    char url[64];
} nserver;

static const char *nserver_bin(void)
{
    const char *b = getenv("WF_NATS_SERVER");
    if (b && *b)
        return b;
    if (access("/usr/sbin/nats-server", X_OK) == 0)
        return "/usr/sbin/nats-server";
    if (access("/usr/bin/nats-server", X_OK) == 0)
        return "/usr/bin/nats-server";
    return NULL;
}

static int nserver_free_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t l = sizeof a;
    if (fd < 0 || bind(fd, (struct sockaddr *)&a, sizeof a) != 0 ||
        getsockname(fd, (struct sockaddr *)&a, &l) != 0) {
        if (fd >= 0)
            close(fd);
        return -1;
    }
    close(fd);
    return ntohs(a.sin_port);
}

static int nserver_accepts(int port)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port),
                            .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    int ok = fd >= 0 && connect(fd, (struct sockaddr *)&a, sizeof a) == 0;
    if (fd >= 0)
        close(fd);
    return ok;
}

static void nserver_sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

/* Starts (or restarts, same port and directory) the server: 0, or -1. */
static int nserver_spawn(nserver *s)
{
    const char *bin = nserver_bin();
    if (bin == NULL)
        return -1;
    char port[16];
    snprintf(port, sizeof port, "%d", s->port);
    pid_t pid = fork();
    if (pid < 0)
        return -1;
    if (pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL); /* never outlives a test that failed half-way */
        int fd = open("/dev/null", O_WRONLY);
        if (fd >= 0) {
            dup2(fd, 1);
            dup2(fd, 2);
        }
        execl(bin, bin, "-js", "-a", "127.0.0.1", "-p", port, "-sd", s->dir, (char *)NULL);
        _exit(127);
    }
    s->pid = pid;
    for (int i = 0; i < 1000; i++) { /* 10 s at most */
        if (nserver_accepts(s->port))
            return 0;
        int st;
        if (waitpid(pid, &st, WNOHANG) == pid) {
            s->pid = 0;
            return -1;
        }
        nserver_sleep_ms(10);
    }
    return -1;
}

/* 0: running; 77: no nats-server here (skip); -1: it would not start. */
static int nserver_start(nserver *s)
{
    memset(s, 0, sizeof *s);
    if (nserver_bin() == NULL)
        return 77;
    const char *base = getenv("TMPDIR");
    snprintf(s->dir, sizeof s->dir, "%s/wf-nats-XXXXXX", base ? base : "/tmp");
    if (mkdtemp(s->dir) == NULL)
        return -1;
    for (int attempt = 0; attempt < 5; attempt++) {
        s->port = nserver_free_port();
        snprintf(s->url, sizeof s->url, "nats://127.0.0.1:%d", s->port);
        if (s->port > 0 && nserver_spawn(s) == 0)
            return 0;
    }
    return -1;
}

/* Stops the server (SIGTERM, then SIGKILL after 5 s); the directory stays. */
static void nserver_stop(nserver *s)
{
    if (s->pid <= 0)
        return;
    kill(s->pid, SIGTERM);
    int st;
    for (int i = 0; i < 500; i++) {
        if (waitpid(s->pid, &st, WNOHANG) == s->pid) {
            s->pid = 0;
            return;
        }
        nserver_sleep_ms(10);
    }
    kill(s->pid, SIGKILL);
    waitpid(s->pid, &st, 0);
    s->pid = 0;
}

static void nserver_rm_tree(const char *path)
{
    DIR *d = opendir(path);
    if (d == NULL) {
        unlink(path);
        return;
    }
    struct dirent *e;
    char p[1024];
    while ((e = readdir(d)) != NULL) {
        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
            continue;
        snprintf(p, sizeof p, "%s/%s", path, e->d_name);
        struct stat sb;
        if (lstat(p, &sb) == 0 && S_ISDIR(sb.st_mode))
            nserver_rm_tree(p);
        else
            unlink(p);
    }
    closedir(d);
    rmdir(path);
}

/* Stops the server and removes its directory. */
static void nserver_destroy(nserver *s)
{
    nserver_stop(s);
    if (s->dir[0])
        nserver_rm_tree(s->dir);
    s->dir[0] = 0;
}

#endif
