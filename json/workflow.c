/*
 * workflow.c (libwf-json): a workflow as JSON (the reference's
 * get_workflow_representation), event schemas as JSON Schema, and config
 * resources (a JSON file's object as a workflow-scoped resource).
 *
 * No shared state: a config resource's loaded value is written once, when
 * the workflow is frozen (its check runs under the workflow's freezing
 * lock), before any run can ask for it; then read-only.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "json_internal.h"

#include <wf/child.h>
#include <wf/context.h>
#include <wf/resource.h>
#include <wf/schema.h>

static int put(wf_json_buf *b, const char *s)
{
    return wf_json_buf_append(b, s, strlen(s));
}

static int put_str(wf_json_buf *b, const char *s)
{
    return s ? wf_json_write_string(b, s, strlen(s)) : put(b, "null");
}

/* ------------------------------------------------------------ JSON Schema */

static void put_kind(wf_json_buf *b, int32_t kind, const wf_schema *fields, int32_t elem,
                     int depth);

static void put_type(wf_json_buf *b, int32_t kind)
{
    static const char *const json_types[] = {"null",   "boolean", "integer", "integer", "number",
                                             "string", "string",  "array",   "object"};
    put(b, "\"type\":");
    put_str(b, json_types[kind]);
    if (kind == WF_UINT)
        put(b, ",\"minimum\":0");
    if (kind == WF_BYTES)
        put(b, ",\"contentEncoding\":\"base64\"");
}

static void put_record(wf_json_buf *b, const wf_schema *s, const char *title, int depth)
{
    put(b, "{");
    if (title) {
        put(b, "\"title\":");
        put_str(b, title);
        put(b, ",");
    }
    put(b, "\"type\":\"object\",\"properties\":{");
    size_t n = wf_schema_field_count(s);
    int nreq = 0;
    for (size_t i = 0; i < n; i++) {
        const char *name;
        const wf_schema_field *f;
        wf_schema_field_at(s, i, &name, &f);
        if (i)
            put(b, ",");
        put_str(b, name);
        put(b, ":{");
        if (f->nullable && f->kind != WF_SCHEMA_ANY) {
            put(b, "\"anyOf\":[");
            put_kind(b, f->kind, f->fields, f->elem_kind, depth + 1);
            put(b, ",{\"type\":\"null\"}]");
        } else {
            /* the kind's members inside this object */
            wf_json_buf tmp;
            wf_json_buf_init(&tmp);
            put_kind(&tmp, f->kind, f->fields, f->elem_kind, depth + 1);
            if (tmp.len > 2)
                wf_json_buf_append(b, tmp.data + 1, tmp.len - 2); /* without its braces */
            b->oom |= tmp.oom;
            wf_json_buf_free(&tmp);
        }
        if (f->has_default) {
            put(b, b->data[b->len - 1] == '{' ? "\"default\":" : ",\"default\":");
            wf_json_write_value(b, f->dflt);
        }
        put(b, "}");
        nreq += f->required != 0;
    }
    put(b, "}");
    if (nreq) {
        put(b, ",\"required\":[");
        int k = 0;
        for (size_t i = 0; i < n; i++) {
            const char *name;
            const wf_schema_field *f;
            wf_schema_field_at(s, i, &name, &f);
            if (f->required) {
                if (k++)
                    put(b, ",");
                put_str(b, name);
            }
        }
        put(b, "]");
    }
    put(b, ",\"additionalProperties\":true}");
}

/* {"type": ...} for a kind (with its elements or nested record). */
static void put_kind(wf_json_buf *b, int32_t kind, const wf_schema *fields, int32_t elem, int depth)
{
    if (depth > WF_JSON_MAX_DEPTH) {
        put(b, "{}");
        return;
    }
    if (kind == WF_SCHEMA_ANY) {
        put(b, "{}");
        return;
    }
    if (kind == WF_MAP && fields && elem == WF_SCHEMA_ANY) {
        put_record(b, fields, NULL, depth);
        return;
    }
    put(b, "{");
    put_type(b, kind);
    if (kind == WF_ARRAY && (elem != WF_SCHEMA_ANY || fields)) {
        put(b, ",\"items\":");
        put_kind(b, elem, elem == WF_MAP ? fields : NULL, WF_SCHEMA_ANY, depth + 1);
    } else if (kind == WF_MAP && (elem != WF_SCHEMA_ANY || fields)) {
        put(b, ",\"additionalProperties\":");
        put_kind(b, elem, elem == WF_MAP ? fields : NULL, WF_SCHEMA_ANY, depth + 1);
    }
    put(b, "}");
}

int wf_json_write_schema_of(wf_json_buf *b, const wf_schema *s, const char *title)
{
    if (b == NULL || s == NULL)
        return WF_EINVAL;
    put_record(b, s, title, 0);
    return b->oom ? WF_ENOMEM : 0;
}

int wf_json_write_schema(wf_json_buf *b, const wf_event_type *t)
{
    if (b == NULL || t == NULL)
        return WF_EINVAL;
    /* the fields of t's schema and its ancestors', nearest first */
    wf_schema *all = NULL;
    int rc = wf_schema_new(&all);
    for (const wf_event_type *a = t; rc == 0 && a; a = wf_event_type_parent(a)) {
        const wf_schema *s = wf_event_type_schema(a);
        for (size_t i = 0; s && i < wf_schema_field_count(s); i++) {
            const char *name;
            const wf_schema_field *f;
            wf_schema_field_at(s, i, &name, &f);
            int r = wf_schema_add_field(all, name, f);
            if (r < 0 && r != WF_EEXIST)
                rc = r;
        }
    }
    if (rc == 0)
        rc = wf_json_write_schema_of(b, all, wf_event_type_name(t));
    wf_schema_free(all);
    return rc;
}

static int has_schema(const wf_event_type *t)
{
    for (; t; t = wf_event_type_parent(t))
        if (wf_event_type_schema(t))
            return 1;
    return 0;
}

/* ------------------------------------------------------------ config resources */

typedef struct config {
    char *path;
    char *selector;
    wf_schema *schema;
    wf_value value; /* loaded when the workflow is frozen */
    int loaded;
} config;

/* Reads the file and selects; 0 with c->value, or a code with *message (wf's allocator). */
static int config_load(config *c, char **message)
{
    char why[600];
    json_error_t err;
    json_t *doc = json_load_file(c->path, JSON_DECODE_ANY, &err);
    if (doc == NULL) {
        snprintf(why, sizeof why, "cannot read JSON from %s: %s (line %d)", c->path, err.text,
                 err.line);
        *message = wf_strdup_message(why);
        return WF_EIO;
    }
    json_t *at = doc;
    char sofar[300] = "";
    if (c->selector) {
        const char *p = c->selector;
        while (*p) {
            const char *dot = strchr(p, '.');
            size_t n = dot ? (size_t)(dot - p) : strlen(p);
            size_t l = strlen(sofar);
            snprintf(sofar + l, sizeof sofar - l, "%s%.*s", l ? "." : "", (int)n, p);
            at = json_is_object(at) ? json_object_getn(at, p, n) : NULL;
            if (!json_is_object(at)) {
                snprintf(why, sizeof why, "%s: expected an object at '%s', got %s", c->path, sofar,
                         at == NULL ? "nothing" : "another JSON kind");
                *message = wf_strdup_message(why);
                json_decref(doc);
                return WF_EFORMAT;
            }
            p += n + (dot != NULL);
        }
    }
    if (!json_is_object(at)) {
        snprintf(why, sizeof why, "%s: the configuration must be a JSON object", c->path);
        *message = wf_strdup_message(why);
        json_decref(doc);
        return WF_EFORMAT;
    }
    char *jmsg = NULL;
    wf_value v;
    int rc = wf__json_to_value(at, &v, &jmsg);
    json_decref(doc);
    if (rc < 0) {
        snprintf(why, sizeof why, "%s: %s", c->path, jmsg ? jmsg : wf_strerror(rc));
        free(jmsg);
        *message = wf_strdup_message(why);
        return rc;
    }
    free(jmsg);
    if (c->schema && (rc = wf_schema_check(c->schema, v, sofar[0] ? sofar : "config")) < 0) {
        snprintf(why, sizeof why, "%s: %s", c->path, wf_last_error_message());
        *message = wf_strdup_message(why);
        wf_value_release(v);
        return rc;
    }
    wf_value_release(c->value);
    c->value = v;
    c->loaded = 1;
    return 0;
}

static int config_check(char **message, void *user)
{
    return config_load(user, message);
}

static int config_factory(wf_ctx *ctx, void **out, void *user)
{
    config *c = user;
    if (!c->loaded) {
        /* frozen workflows checked it; this is only reached if the check was skipped */
        char *m = NULL;
        int rc = config_load(c, &m);
        if (rc < 0) {
            wf_ctx_set_error(ctx, m ? m : wf_strerror(rc));
            wf_free(m);
            return rc;
        }
    }
    *out = &c->value;
    return 0;
}

static void config_free(void *user)
{
    config *c = user;
    free(c->path);
    free(c->selector);
    wf_schema_free(c->schema);
    wf_value_release(c->value);
    free(c);
}

int wf_json_add_config_resource(wf_workflow *wf, const char *name, const char *path,
                                const char *selector, wf_schema *schema)
{
    size_t pl = path ? strlen(path) : 0;
    if (wf == NULL || pl < 6 || strcmp(path + pl - 5, ".json") != 0)
        return WF_EINVAL;
    config *c = calloc(1, sizeof *c);
    if (c == NULL)
        return WF_ENOMEM;
    c->path = strdup(path);
    c->selector = selector && selector[0] ? strdup(selector) : NULL;
    c->value = wf_value_nil();
    if (c->path == NULL || (selector && selector[0] && c->selector == NULL)) {
        config_free(c);
        return WF_ENOMEM;
    }
    wf_resource_params p;
    wf_resource_params_init(&p);
    p.scope = WF_RESOURCE_WORKFLOW;
    p.check = config_check;
    p.user_free = config_free;
    int rc = wf_workflow_add_resource(wf, name, config_factory, &p, c);
    if (rc < 0) {
        config_free(c);
        return rc;
    }
    c->schema = wf_schema_retain(schema); /* only once the resource holds c */
    return 0;
}

/* ------------------------------------------------------------ representation */

static const char *scope_name(int32_t s)
{
    return s == WF_RESOURCE_WORKFLOW     ? "workflow"
           : s == WF_RESOURCE_INVOCATION ? "invocation"
                                         : "run";
}

typedef struct rep {
    wf_json_buf *b;
    wf_workflow *wf;
    uint8_t *seen_type; /* by type id */
    uint8_t *seen_res;  /* by resource index */
    int nodes;
    int edges;
    int external;
} rep;

static void node_sep(rep *r)
{
    if (r->nodes++)
        put(r->b, ",");
}

static void type_list(wf_json_buf *b, const wf_event_type *const *t, size_t n)
{
    put(b, "[");
    for (size_t i = 0; i < n; i++) {
        if (i)
            put(b, ",");
        put_str(b, wf_event_type_name(t[i]));
    }
    put(b, "]");
}

static void event_node(rep *r, const wf_event_type *t)
{
    uint32_t id = wf_event_type_id(t);
    if (r->seen_type[id])
        return;
    r->seen_type[id] = 1;
    wf_json_buf *b = r->b;
    node_sep(r);
    put(b, "{\"id\":");
    put_str(b, wf_event_type_name(t));
    put(b, ",\"label\":");
    put_str(b, wf_event_type_name(t));
    put(b, ",\"node_type\":\"event\",\"event_type\":");
    put_str(b, wf_event_type_name(t));
    put(b, ",\"event_types\":[");
    for (const wf_event_type *a = t; a; a = wf_event_type_parent(a)) {
        if (a != t)
            put(b, ",");
        put_str(b, wf_event_type_name(a));
    }
    put(b, "],\"event_schema\":");
    if (has_schema(t))
        wf_json_write_schema(b, t);
    else
        put(b, "null");
    put(b, ",\"produced_by\":[");
    int k = 0;
    for (size_t i = 0; i < wf_workflow_step_count(r->wf); i++) {
        const wf_event_type *const *em;
        size_t ne;
        wf_workflow_step_types(r->wf, i, 1, &em, &ne);
        for (size_t j = 0; j < ne; j++)
            if (em[j] == t) {
                if (k++)
                    put(b, ",");
                put_str(b, wf_workflow_step_name(r->wf, i));
                break;
            }
    }
    put(b, "]}");
}

static int res_index(const wf_workflow *wf, const char *name)
{
    for (size_t i = 0; i < wf_workflow_resource_count(wf); i++) {
        const char *n;
        wf_workflow_resource_at(wf, i, &n, NULL, NULL, NULL);
        if (strcmp(n, name) == 0)
            return (int)i;
    }
    return -1;
}

static void resource_id(wf_json_buf *b, const char *name)
{
    char id[300];
    snprintf(id, sizeof id, "resource_%s", name);
    put_str(b, id);
}

static void resource_node(rep *r, size_t i)
{
    if (r->seen_res[i])
        return;
    r->seen_res[i] = 1;
    wf_json_buf *b = r->b;
    const char *name;
    int32_t scope;
    const char *const *deps;
    size_t nd;
    wf_workflow_resource_at(r->wf, i, &name, &scope, &deps, &nd);
    wf_resource_factory f;
    void *user;
    wf_workflow_resource_factory(r->wf, i, &f, &user);
    node_sep(r);
    put(b, "{\"id\":");
    resource_id(b, name);
    put(b, ",\"label\":");
    put_str(b, name);
    if (f == config_factory) {
        const config *c = user;
        put(b, ",\"node_type\":\"resource_config\",\"type_name\":null,\"config_file\":");
        put_str(b, c->path);
        put(b, ",\"path_selector\":");
        put_str(b, c->selector);
        put(b, ",\"config_schema\":");
        if (c->schema)
            wf_json_write_schema_of(b, c->schema, NULL);
        else
            put(b, "null");
        put(b, ",\"config_value\":");
        if (c->loaded)
            wf_json_write_value(b, c->value);
        else
            put(b, "null");
        put(b, ",\"description\":null}");
    } else {
        put(b, ",\"node_type\":\"resource\",\"type_name\":null,\"getter_name\":");
        put_str(b, name);
        put(b, ",\"scope\":");
        put_str(b, scope_name(scope));
        put(b, ",\"source_file\":null,\"source_line\":null,\"description\":null}");
    }
    /* dependencies, depth first, as the reference expands them */
    for (size_t k = 0; k < nd; k++) {
        int j = res_index(r->wf, deps[k]);
        if (j >= 0)
            resource_node(r, (size_t)j);
    }
}

/* A child workflow's node id: "workflow_" and its name. */
static void workflow_id(wf_json_buf *b, const char *name)
{
    size_t n = strlen(name) + 10;
    char *id = malloc(n);
    if (id == NULL) {
        b->oom = 1;
        return;
    }
    snprintf(id, n, "workflow_%s", name);
    put_str(b, id);
    free(id);
}

/* 1 if a step before step i, or child j before this one of step i, declares the same child. */
static int child_seen(wf_workflow *wf, size_t i, size_t j, const wf_workflow *c)
{
    for (size_t s = 0; s <= i; s++) {
        const char *step = wf_workflow_step_name(wf, s);
        size_t n = s < i ? wf_workflow_child_count(wf, step) : j;
        for (size_t k = 0; k < n; k++)
            if (wf_workflow_child_at(wf, step, k) == c)
                return 1;
    }
    return 0;
}

/*
 * The child workflows step i declares (wf_workflow_declare_child): a node
 * each (a generic node of type "workflow", once per child), and with edges
 * set an edge "runs" from the step to each.
 */
static void child_nodes(rep *r, size_t i, int edges)
{
    wf_json_buf *b = r->b;
    const char *step = wf_workflow_step_name(r->wf, i);
    size_t n = wf_workflow_child_count(r->wf, step);
    for (size_t j = 0; j < n; j++) {
        const char *name = wf_workflow_name(wf_workflow_child_at(r->wf, step, j));
        if (edges) {
            if (r->edges++)
                put(b, ",");
            put(b, "{\"source\":");
            put_str(b, step);
            put(b, ",\"target\":");
            workflow_id(b, name);
            put(b, ",\"label\":\"runs\"}");
        } else if (!child_seen(r->wf, i, j, wf_workflow_child_at(r->wf, step, j))) {
            node_sep(r);
            put(b, "{\"id\":");
            workflow_id(b, name);
            put(b, ",\"label\":");
            put_str(b, name);
            put(b, ",\"node_type\":\"workflow\",\"description\":null}");
        }
    }
}

static void edge(rep *r, const char *src, int src_res, const char *dst, int dst_res,
                 const char *label)
{
    wf_json_buf *b = r->b;
    if (r->edges++)
        put(b, ",");
    put(b, "{\"source\":");
    if (src_res)
        resource_id(b, src);
    else
        put_str(b, src);
    put(b, ",\"target\":");
    if (dst_res)
        resource_id(b, dst);
    else
        put_str(b, dst);
    put(b, ",\"label\":");
    put_str(b, label);
    put(b, "}");
}

int wf_json_write_representation(wf_json_buf *b, wf_workflow *wf)
{
    if (b == NULL || wf == NULL)
        return WF_EINVAL;
    int rc = wf_workflow_freeze(wf, NULL);
    if (rc < 0)
        return rc;
    wf_registry *reg = wf_workflow_registry(wf);
    rep r = {b, wf, NULL, NULL, 0, 0, 0};
    size_t nt = wf_registry_count(reg), nr = wf_workflow_resource_count(wf);
    size_t ns = wf_workflow_step_count(wf);
    r.seen_type = calloc(nt ? nt : 1, 1);
    r.seen_res = calloc(nr ? nr : 1, 1);
    if (r.seen_type == NULL || r.seen_res == NULL) {
        free(r.seen_type);
        free(r.seen_res);
        return WF_ENOMEM;
    }
    const wf_event_type *input = wf_registry_builtin(reg, WF_INPUT_REQUIRED_EVENT);
    const wf_event_type *human = wf_registry_builtin(reg, WF_HUMAN_RESPONSE_EVENT);
    const wf_event_type *st = wf_workflow_start_type(wf), *sp = wf_workflow_stop_type(wf);
    put(b, "{\"name\":");
    put_str(b, wf_workflow_name(wf));
    put(b, ",\"description\":null,\"start_event\":");
    put_str(b, st ? wf_event_type_name(st) : NULL);
    put(b, ",\"stop_event\":");
    put_str(b, sp ? wf_event_type_name(sp) : NULL);
    put(b, ",\"nodes\":[");
    for (size_t i = 0; i < ns; i++) {
        const wf_event_type *const *acc, *const *em;
        size_t na, ne, nres;
        const char *const *res;
        wf_workflow_step_types(wf, i, 0, &acc, &na);
        wf_workflow_step_types(wf, i, 1, &em, &ne);
        wf_workflow_step_resources(wf, i, &res, &nres);
        node_sep(&r);
        char num[32];
        put(b, "{\"id\":");
        put_str(b, wf_workflow_step_name(wf, i));
        put(b, ",\"label\":");
        put_str(b, wf_workflow_step_name(wf, i));
        snprintf(num, sizeof num, "%u", wf_workflow_step_num_workers(wf, i));
        put(b, ",\"node_type\":\"step\",\"description\":null,\"num_workers\":");
        put(b, num);
        put(b, ",\"accepts\":");
        type_list(b, acc, na);
        put(b, ",\"emits\":");
        type_list(b, em, ne);
        put(b, ",\"resources\":[");
        for (size_t k = 0; k < nres; k++) {
            if (k)
                put(b, ",");
            put_str(b, res[k]);
        }
        put(b, "]}");
        for (size_t k = 0; k < na; k++)
            event_node(&r, acc[k]);
        for (size_t k = 0; k < ne; k++) {
            event_node(&r, em[k]);
            if (wf_event_type_is(em[k], input)) {
                if (!r.external) {
                    node_sep(&r);
                    put(b, "{\"id\":\"external_step\",\"label\":\"external_step\","
                           "\"node_type\":\"external\"}");
                    r.external = 1;
                }
            }
        }
        for (size_t k = 0; k < nres; k++) {
            int j = res_index(wf, res[k]);
            if (j >= 0)
                resource_node(&r, (size_t)j);
        }
        child_nodes(&r, i, 0);
    }
    put(b, "],\"edges\":[");
    for (size_t i = 0; i < ns; i++) {
        const wf_event_type *const *acc, *const *em;
        size_t na, ne, nres;
        const char *const *res;
        const char *step = wf_workflow_step_name(wf, i);
        wf_workflow_step_types(wf, i, 0, &acc, &na);
        wf_workflow_step_types(wf, i, 1, &em, &ne);
        wf_workflow_step_resources(wf, i, &res, &nres);
        for (size_t k = 0; k < ne; k++) {
            edge(&r, step, 0, wf_event_type_name(em[k]), 0, NULL);
            if (wf_event_type_is(em[k], input))
                edge(&r, wf_event_type_name(em[k]), 0, "external_step", 0, NULL);
        }
        for (size_t k = 0; k < na; k++) {
            edge(&r, wf_event_type_name(acc[k]), 0, step, 0, NULL);
            if (r.external && wf_event_type_is(acc[k], human))
                edge(&r, "external_step", 0, wf_event_type_name(acc[k]), 0, NULL);
        }
        for (size_t k = 0; k < nres; k++)
            if (res_index(wf, res[k]) >= 0)
                edge(&r, step, 0, res[k], 1, res[k]);
        child_nodes(&r, i, 1);
    }
    for (size_t i = 0; i < nr; i++) {
        if (!r.seen_res[i])
            continue;
        const char *name;
        const char *const *deps;
        size_t nd;
        wf_workflow_resource_at(wf, i, &name, NULL, &deps, &nd);
        for (size_t k = 0; k < nd; k++)
            if (res_index(wf, deps[k]) >= 0)
                edge(&r, name, 1, deps[k], 1, deps[k]);
    }
    put(b, "]}");
    free(r.seen_type);
    free(r.seen_res);
    return b->oom ? WF_ENOMEM : 0;
}
