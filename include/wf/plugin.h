/*
 * plugin.h: workflow libraries as plugins, and their loader.
 *
 * A plugin is a shared object built against libwf (`pkg-config --cflags
 * --libs wf`, `-shared -fPIC`) that exports one entry symbol, named after
 * the plugin ABI version: wf_plugin_v1. It returns a static description of
 * the plugin: the ABI version it was written for, the libwf version it was
 * compiled against, and a table of workflows, each a name and a function
 * that builds the workflow on a registry the loader gives it. Every
 * workflow of one plugin is built on the same registry, so their event
 * types are shared and found by name.
 *
 * A minimal plugin:
 *
 *     #include <wf/wf.h>
 *     #include <wf/plugin.h>
 *
 *     static int build_hello(wf_registry *reg, wf_workflow **out, void *user)
 *     {
 *         ... wf_workflow_new(out, "hello", reg); add steps ...
 *     }
 *     static const wf_plugin_workflow_def workflows[] = {
 *         {"hello", "Says hello", build_hello, NULL},
 *     };
 *     WF_PLUGIN_DEFINE("hello", "An example plugin", workflows)
 *
 * The loader (wf_plugin_open) dlopens the file, looks the symbol up, checks
 * the ABI version (WF_EVERSION, with a message naming both versions, when
 * they differ, or when the plugin was built against a libwf of another
 * soname major), and builds each workflow on first use.
 *
 * Threads: wf_plugin_open, wf_plugin_free and wf_plugin_workflow from one
 * thread at a time per plugin; the other calls from any thread.
 */
#ifndef WF_PLUGIN_H
#define WF_PLUGIN_H

#include <wf/common.h>
#include <wf/event.h>
#include <wf/workflow.h>

#ifdef __cplusplus
extern "C" {
#endif

/** The plugin ABI this library loads. The entry symbol is "wf_plugin_v" this number. */
#define WF_PLUGIN_ABI_VERSION 1
/** The name of the entry symbol of WF_PLUGIN_ABI_VERSION. */
#define WF_PLUGIN_SYMBOL "wf_plugin_v1"

/**
 * Builds a workflow on reg (the plugin's registry: register event types on
 * it, pass it to wf_workflow_new). Caller (the loader) owns *out. user is
 * the table entry's user pointer. Returns 0 or a negative code.
 */
typedef int (*wf_plugin_build_fn)(wf_registry *reg, wf_workflow **out, void *user);

/** One workflow of a plugin. */
typedef struct wf_plugin_workflow_def {
    /** The name users give (`wf run PLUGIN.so NAME`); unique in the plugin. */
    const char *name;
    /** One line for listings, or NULL. */
    const char *description;
    wf_plugin_build_fn build;
    void *user;
} wf_plugin_workflow_def;

/** What the entry symbol returns: static data, valid while the plugin is loaded. */
typedef struct wf_plugin_def {
    /** WF_PLUGIN_ABI_VERSION of the headers the plugin was compiled with. */
    uint32_t abi_version;
    /** (major << 16) | (minor << 8) | patch of the libwf headers it was compiled with. */
    uint32_t wf_version;
    /** The plugin's name and a line about it (description may be NULL). */
    const char *name;
    const char *description;
    /** The workflows; the first is the default when no name is given. */
    const wf_plugin_workflow_def *workflows;
    uint32_t n_workflows;
} wf_plugin_def;

/** The type of the entry symbol. */
typedef const wf_plugin_def *(*wf_plugin_entry_fn)(void);

#define WF__PLUGIN_VERSION_NUM                                                                     \
    (((uint32_t)WF_VERSION_MAJOR << 16) | ((uint32_t)WF_VERSION_MINOR << 8) |                      \
     (uint32_t)WF_VERSION_PATCH)

/**
 * Defines the entry symbol of a plugin from a static array of
 * wf_plugin_workflow_def. Use once, at file scope, in one source of the plugin.
 */
#define WF_PLUGIN_DEFINE(plugin_name, plugin_description, workflow_array)                          \
    WF_API const wf_plugin_def *wf_plugin_v1(void);                                                \
    WF_API const wf_plugin_def *wf_plugin_v1(void)                                                 \
    {                                                                                              \
        static const wf_plugin_def def = {                                                         \
            WF_PLUGIN_ABI_VERSION,                                                                 \
            WF__PLUGIN_VERSION_NUM,                                                                \
            plugin_name,                                                                           \
            plugin_description,                                                                    \
            workflow_array,                                                                        \
            (uint32_t)(sizeof(workflow_array) / sizeof((workflow_array)[0]))};                     \
        return &def;                                                                               \
    }

/* ---- the loader ---- */

typedef struct wf_plugin wf_plugin;

/**
 * Loads the plugin at path (dlopen: a path without a slash is searched the
 * dynamic linker's way; give "./x.so" for the current directory). Errors,
 * each with *message (optional; caller owns: wf_free) saying what and where:
 * WF_ENOTFOUND the file cannot be loaded (missing, not a shared object,
 * unresolved symbols: the dynamic linker's text), WF_EFORMAT it has no
 * wf_plugin_v1 symbol (not a wf plugin; a newer wf_plugin_vN is named) or
 * its description is malformed, WF_EVERSION another plugin ABI or libwf
 * major version. No workflow is built yet. Caller owns *out: wf_plugin_free.
 */
WF_API int wf_plugin_open(wf_plugin **out, const char *path, char **message);
/**
 * Frees the workflows built, the registry and unloads the shared object.
 * Call it after every run of its workflows has ended (after wf_executor_free
 * at the latest): their steps' code lives in the plugin. NULL is fine.
 */
WF_API void wf_plugin_free(wf_plugin *p);
/** The plugin's name and description (may be NULL). Borrowed: valid while p is. */
WF_API const char *wf_plugin_name(const wf_plugin *p);
WF_API const char *wf_plugin_description(const wf_plugin *p);
/** The registry every workflow of the plugin is built on. Borrowed. */
WF_API wf_registry *wf_plugin_registry(const wf_plugin *p);
/** Number of workflows, their names and descriptions (NULL past the end). Borrowed. */
WF_API size_t wf_plugin_workflow_count(const wf_plugin *p);
WF_API const char *wf_plugin_workflow_name(const wf_plugin *p, size_t i);
WF_API const char *wf_plugin_workflow_description(const wf_plugin *p, size_t i);
/**
 * The workflow called name (NULL: the first), built on first use and kept:
 * *out borrowed, valid while p is (wf_workflow_retain to keep it longer, but
 * not past wf_plugin_free). WF_ENOTFOUND for an unknown name (the message
 * lists the known ones), or the build function's error (WF_EINTERNAL if it
 * returned 0 and no workflow).
 */
WF_API int wf_plugin_workflow(wf_plugin *p, const char *name, wf_workflow **out, char **message);

#ifdef __cplusplus
}
#endif

#endif
