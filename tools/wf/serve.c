/*
 * serve.c: wf serve PLUGIN.so... [options]: the reference server's HTTP API
 * (serve/serve.h; docs/CLI.md, "wf serve").
 */
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "serve.h"

#ifndef WF_SERVE_UI_DEFAULT
#define WF_SERVE_UI_DEFAULT ""
#endif

static void usage(FILE *to)
{
    fprintf(to,
            "usage: wf serve PLUGIN.so... [options]\n"
            "serves the plugins' workflows over HTTP with the API of the reference's\n"
            "llama-agents-server, and its debugger UI at /\n"
            "  -l, --listen HOST:PORT   address to listen on (default 127.0.0.1:8080; port 0:\n"
            "                           any free port); the first line on standard output\n"
            "                           is \"listening on http://HOST:PORT\"\n"
            "%s"
            "      --ui DIR             the debugger UI's files (@llamaindex/workflow-debugger's\n"
            "                           dist/; default $WF_UI_DIR or the build tree's copy)\n"
            "      --body-limit BYTES   largest request body (default 1048576)\n"
            "      --max-handlers N     ended handlers kept for GET /handlers (default 10000)\n"
            "      --max-connections N  connections at once (default 2048)\n"
            "      --http-threads N     HTTP threads, each serving many connections (default:\n"
            "                           the cores)\n"
            "      --steps-on-workers   every step runs on the executor's workers (default: a\n"
            "                           run's first step runs on the HTTP thread that starts\n"
            "                           it, as the reference runs steps on its event loop)\n"
            "%s"
            "                           (created when missing): runs are durable (the\n"
            "                           handler id is the run id) and outlive the server:\n"
            "                           a restart continues those in flight and serves the\n"
            "                           ended ones' results\n"
            "Stops on Ctrl-C or SIGTERM. Exit status: 0 stopped, 2 usage or cannot listen.\n",
            CLI_HELP_THREADS("          "), CLI_HELP_STORE("        "));
}

typedef struct serve_opts {
    wf_server_params *sp;
    const char *listen, *ui;
} serve_opts;

static int serve_opt(int c, const char *arg, void *user)
{
    serve_opts *o = user;
    long v;
    switch (c) {
    case 'l':
        o->listen = arg;
        return 0;
    case 'U':
        o->ui = arg;
        return 0;
    case 'B':
        if (cli_parse_count(arg, 1, 1L << 30, &v) < 0) {
            cli_err("serve", "--body-limit wants bytes from 1 to 2^30, not '%s'", arg);
            return EXIT_USAGE;
        }
        o->sp->body_limit = (size_t)v;
        return 0;
    case 'H':
        if (cli_parse_count(arg, 1, 100000000, &v) < 0) {
            cli_err("serve", "--max-handlers wants a positive number, not '%s'", arg);
            return EXIT_USAGE;
        }
        o->sp->max_handlers = (size_t)v;
        return 0;
    case 'C':
        if (cli_parse_count(arg, 1, 65536, &v) < 0) {
            cli_err("serve", "--max-connections wants a number from 1 to 65536, not '%s'", arg);
            return EXIT_USAGE;
        }
        o->sp->max_connections = (uint32_t)v;
        return 0;
    case 'W':
        if (cli_parse_count(arg, 1, 256, &v) < 0) {
            cli_err("serve", "--http-threads wants a number from 1 to 256, not '%s'", arg);
            return EXIT_USAGE;
        }
        o->sp->http_threads = (uint32_t)v;
        return 0;
    case 'X':
        o->sp->first_step_here = 0;
        return 0;
    }
    return -1;
}

int cmd_serve(int argc, char **argv)
{
    static const struct option opts[] = {{"listen", required_argument, NULL, 'l'},
                                         CLI_OPT_THREADS,
                                         {"ui", required_argument, NULL, 'U'},
                                         {"body-limit", required_argument, NULL, 'B'},
                                         {"max-handlers", required_argument, NULL, 'H'},
                                         {"max-connections", required_argument, NULL, 'C'},
                                         {"http-threads", required_argument, NULL, 'W'},
                                         {"steps-on-workers", no_argument, NULL, 'X'},
                                         CLI_OPT_STORE,
                                         CLI_OPT_HELP,
                                         {NULL, 0, NULL, 0}};
    wf_server_params sp;
    wf_server_params_init(&sp);
    serve_opts so = {&sp, "127.0.0.1:8080", getenv("WF_UI_DIR")};
    if (so.ui == NULL || *so.ui == 0)
        so.ui = WF_SERVE_UI_DEFAULT;
    cli_opts co;
    cli_opts_init(&co);
    int rc = cli_getopt("serve", argc, argv, "l:t:h", opts, &co, serve_opt, &so, usage, 1, -1);
    if (rc != CLI_CONTINUE)
        return rc;
    sp.threads = (uint32_t)co.threads;
    const char *listen = so.listen, *ui = so.ui;
    char host[256];
    const char *colon = strrchr(listen, ':');
    long port;
    if (colon == NULL || (size_t)(colon - listen) >= sizeof host || colon == listen ||
        cli_parse_count(colon + 1, 0, 65535, &port) < 0) {
        cli_err("serve", "--listen wants HOST:PORT (e.g. 127.0.0.1:8080), not '%s'", listen);
        return EXIT_USAGE;
    }
    memcpy(host, listen, (size_t)(colon - listen));
    host[colon - listen] = 0;
    sp.host = host;
    sp.port = (uint16_t)port;
    sp.ui_dir = ui && *ui ? ui : NULL;

    int n = argc - optind, ex_code = EXIT_USAGE;
    wf_plugin **plugins = calloc((size_t)n, sizeof *plugins);
    wf_server *srv = NULL;
    wf_store *st = NULL;
    if (plugins == NULL)
        return EXIT_FAILED;
    for (int i = 0; i < n; i++) {
        wf_workflow *wf;
        if (cli_load("serve", argv[optind + i], NULL, &plugins[i], &wf))
            goto done;
    }
    sp.plugins = plugins;
    sp.n_plugins = (size_t)n;
    if (cli_signals_start(cli_stop_signal, NULL) < 0) {
        cli_err("serve", "cannot start the signal thread");
        goto done;
    }
    /* (after the signal thread: the store's writer thread must not take SIGTERM)
     * its own owner: a restart continues its runs at once, another wf command
     * beside it is told the runs are held (CLI_SERVE_OWNER) */
    if (co.store && cli_store_open("serve", co.store, 0, CLI_SERVE_OWNER, &st) != 0)
        goto done;
    sp.store = st;
    char *msg = NULL;
    rc = wf_server_new(&srv, &sp, &msg);
    if (rc < 0) {
        cli_err("serve", "%s", msg ? msg : wf_strerror(rc));
        free(msg);
        goto done;
    }
    printf("listening on http://%s:%u\n", host, (unsigned)wf_server_port(srv));
    fflush(stdout);
    if (sp.ui_dir == NULL)
        cli_err("serve", "no debugger UI (--ui DIR): / shows how to install it");
    cli_stop_wait();
    ex_code = EXIT_DONE;
done:
    wf_server_free(srv);
    wf_store_free(st);
    cli_signals_stop();
    for (int i = 0; i < n; i++)
        wf_plugin_free(plugins[i]);
    free(plugins);
    return ex_code;
}
