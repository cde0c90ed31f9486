/*
 * plugin.c: the plugin loader (include/wf/plugin.h): dlopen, the versioned
 * entry symbol, workflows built lazily on the plugin's one registry.
 */
#include <dlfcn.h>
#include <stdio.h>
#include <string.h>

#include "internal.h"
#include <wf/plugin.h>

struct wf_plugin {
    void *dl;
    const wf_plugin_def *def;
    wf_registry *reg;
    wf_workflow **built; /* by index in def->workflows; NULL until first use */
};

static void set_msg(char **message, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void set_msg(char **message, const char *fmt, ...)
{
    if (message == NULL)
        return;
    char tmp[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(tmp, sizeof tmp, fmt, ap);
    va_end(ap);
    *message = wf__strdup(tmp);
}

/* A newer entry symbol, to tell "another ABI" from "not a plugin". */
static int newer_abi(void *dl)
{
    for (int v = WF_PLUGIN_ABI_VERSION + 1; v < WF_PLUGIN_ABI_VERSION + 16; v++) {
        char sym[32];
        snprintf(sym, sizeof sym, "wf_plugin_v%d", v);
        if (dlsym(dl, sym) != NULL)
            return v;
    }
    return 0;
}

static int check_def(const wf_plugin_def *d, const char *path, char **message)
{
    if (d == NULL) {
        set_msg(message, "%s: %s() returned NULL", path, WF_PLUGIN_SYMBOL);
        return WF_EFORMAT;
    }
    if (d->abi_version != WF_PLUGIN_ABI_VERSION) {
        set_msg(message,
                "%s: plugin ABI version %u, but this wf loads version %d: rebuild the plugin "
                "against wf %s",
                path, (unsigned)d->abi_version, WF_PLUGIN_ABI_VERSION, WF_VERSION_STRING);
        return WF_EVERSION;
    }
    uint32_t mine = wf_version();
    /* One soname per major (0.x: per minor, as long as the major is 0). */
    uint32_t mask = (mine >> 16) == 0 ? 0xffff00u : 0xff0000u;
    if ((d->wf_version & mask) != (mine & mask)) {
        set_msg(message,
                "%s: built against wf %u.%u.%u, incompatible with this wf %s: rebuild the plugin",
                path, (unsigned)(d->wf_version >> 16), (unsigned)((d->wf_version >> 8) & 0xff),
                (unsigned)(d->wf_version & 0xff), wf_version_string());
        return WF_EVERSION;
    }
    if (d->n_workflows == 0 || d->workflows == NULL) {
        set_msg(message, "%s: the plugin declares no workflows", path);
        return WF_EFORMAT;
    }
    for (uint32_t i = 0; i < d->n_workflows; i++) {
        const wf_plugin_workflow_def *w = &d->workflows[i];
        if (w->name == NULL || w->name[0] == 0 || w->build == NULL) {
            set_msg(message, "%s: workflow %u has no name or no build function", path, (unsigned)i);
            return WF_EFORMAT;
        }
        for (uint32_t j = 0; j < i; j++)
            if (strcmp(d->workflows[j].name, w->name) == 0) {
                set_msg(message, "%s: workflow name '%s' declared twice", path, w->name);
                return WF_EFORMAT;
            }
    }
    return 0;
}

int wf_plugin_open(wf_plugin **out, const char *path, char **message)
{
    if (message)
        *message = NULL;
    if (out == NULL || path == NULL)
        return WF_EINVAL;
    *out = NULL;
    dlerror();
    void *dl = dlopen(path, RTLD_NOW | RTLD_LOCAL);
    if (dl == NULL) {
        const char *e = dlerror();
        set_msg(message, "%s", e ? e : path);
        return WF_ENOTFOUND;
    }
    wf_plugin_entry_fn entry;
    void *sym = dlsym(dl, WF_PLUGIN_SYMBOL);
    memcpy(&entry, &sym, sizeof entry); /* object pointer to function pointer, portably */
    int rc;
    if (sym == NULL) {
        int v = newer_abi(dl);
        if (v) {
            set_msg(message,
                    "%s: plugin for ABI version %d (it exports wf_plugin_v%d), but this wf "
                    "loads version %d (%s)",
                    path, v, v, WF_PLUGIN_ABI_VERSION, WF_PLUGIN_SYMBOL);
            rc = WF_EVERSION;
        } else {
            set_msg(message, "%s: not a wf plugin: no symbol %s", path, WF_PLUGIN_SYMBOL);
            rc = WF_EFORMAT;
        }
        dlclose(dl);
        return rc;
    }
    const wf_plugin_def *def = entry();
    if ((rc = check_def(def, path, message)) < 0) {
        dlclose(dl);
        return rc;
    }
    wf_plugin *p = wf__calloc(1, sizeof *p);
    if (p == NULL || (p->built = wf__calloc(def->n_workflows, sizeof *p->built)) == NULL ||
        wf_registry_new(&p->reg) < 0) {
        if (p)
            wf__free_mem(p->built);
        wf__free_mem(p);
        dlclose(dl);
        return WF_ENOMEM;
    }
    p->dl = dl;
    p->def = def;
    *out = p;
    return 0;
}

void wf_plugin_free(wf_plugin *p)
{
    if (p == NULL)
        return;
    for (uint32_t i = 0; i < p->def->n_workflows; i++)
        wf_workflow_free(p->built[i]);
    wf_registry_free(p->reg);
    wf__free_mem(p->built);
    dlclose(p->dl);
    wf__free_mem(p);
}

const char *wf_plugin_name(const wf_plugin *p)
{
    return p ? p->def->name : NULL;
}

const char *wf_plugin_description(const wf_plugin *p)
{
    return p ? p->def->description : NULL;
}

wf_registry *wf_plugin_registry(const wf_plugin *p)
{
    return p ? p->reg : NULL;
}

size_t wf_plugin_workflow_count(const wf_plugin *p)
{
    return p ? p->def->n_workflows : 0;
}

const char *wf_plugin_workflow_name(const wf_plugin *p, size_t i)
{
    return (p && i < p->def->n_workflows) ? p->def->workflows[i].name : NULL;
}

const char *wf_plugin_workflow_description(const wf_plugin *p, size_t i)
{
    return (p && i < p->def->n_workflows) ? p->def->workflows[i].description : NULL;
}

int wf_plugin_workflow(wf_plugin *p, const char *name, wf_workflow **out, char **message)
{
    if (message)
        *message = NULL;
    if (p == NULL || out == NULL)
        return WF_EINVAL;
    *out = NULL;
    uint32_t i = 0;
    if (name != NULL) {
        while (i < p->def->n_workflows && strcmp(p->def->workflows[i].name, name) != 0)
            i++;
        if (i == p->def->n_workflows) {
            wf__buf b;
            wf__buf_init(&b);
            wf__buf_printf(&b, "no workflow '%s' in plugin '%s'; it has:", name,
                           p->def->name ? p->def->name : "?");
            for (uint32_t j = 0; j < p->def->n_workflows; j++)
                wf__buf_printf(&b, " %s", p->def->workflows[j].name);
            if (message)
                wf__buf_take(&b, message);
            else
                wf__buf_free(&b);
            return WF_ENOTFOUND;
        }
    }
    if (p->built[i] == NULL) {
        const wf_plugin_workflow_def *w = &p->def->workflows[i];
        wf_workflow *wf = NULL;
        int rc = w->build(p->reg, &wf, w->user);
        if (rc < 0 || wf == NULL) {
            wf_workflow_free(wf);
            rc = rc < 0 ? rc : WF_EINTERNAL;
            set_msg(message, "building workflow '%s' failed: %s", w->name, wf_strerror(rc));
            return rc;
        }
        p->built[i] = wf;
    }
    *out = p->built[i];
    return 0;
}
