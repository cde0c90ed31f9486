/*
 * store.c: the wf_store wrapper. It checks every argument once, so that a
 * backend only ever sees valid ones, and dispatches through the ops table
 * (the engine calls only these, never a backend directly).
 */
#include "internal.h"
#include "codec_impl.h"
#include "store_impl.h"

#include <inttypes.h>
#include <stddef.h>
#include <stdio.h>

struct wf_store {
    const wf_store_ops *ops; /* immutable */
    void *self;              /* immutable; the backend synchronises itself */
};

void wf_store_params_init(wf_store_params *p)
{
    if (p == NULL)
        return;
    memset(p, 0, sizeof *p);
    p->commit = WF_STORE_COMMIT_INTERVAL;
    p->interval_ms = 10;
    p->busy_timeout_ms = 5000;
    p->queue_bytes = 64u << 20;
    p->full = WF_STORE_FULL_BLOCK;
    p->lease_ms = 30000;
}

void wf_store_run_info_clear(wf_store_run_info *info)
{
    if (info == NULL)
        return;
    wf__free_mem(info->run_id);
    wf__free_mem(info->workflow);
    wf__free_mem(info->owner);
    info->run_id = info->workflow = info->owner = NULL;
}

int wf_store_new(wf_store **out, const wf_store_ops *ops, void *self)
{
    if (out)
        *out = NULL;
    /* Every operation must be there: the wrapper never checks again. */
    int ok = out && ops && ops->size >= sizeof(wf_store_ops) && ops->name && ops->create &&
             ops->claim && ops->append && ops->set_status && ops->put_checkpoint &&
             ops->put_result && ops->release && ops->renew && ops->remove && ops->flush &&
             ops->wait && ops->durable && ops->get_run && ops->get_checkpoint && ops->get_result &&
             ops->read_journal && ops->list && ops->free;
    if (!ok) {
        if (ops && ops->free && ops->size >= sizeof(wf_store_ops))
            ops->free(self);
        return WF_EINVAL;
    }
    wf_store *s = wf__calloc(1, sizeof *s);
    if (s == NULL) {
        ops->free(self);
        return WF_ENOMEM;
    }
    s->ops = ops;
    s->self = self;
    *out = s;
    return 0;
}

int wf_store_open_sqlite(wf_store **out, const char *path, const wf_store_params *params,
                         char **message)
{
    if (message)
        *message = NULL;
    if (out)
        *out = NULL;
    if (out == NULL || path == NULL || *path == 0)
        return WF_EINVAL;
    wf_store_params p;
    if (params)
        p = *params;
    else
        wf_store_params_init(&p);
    if (p.commit < WF_STORE_COMMIT_EVERY || p.commit > WF_STORE_COMMIT_OFF ||
        p.full < WF_STORE_FULL_BLOCK || p.full > WF_STORE_FULL_FAIL || p.queue_bytes == 0 ||
        p.lease_ms == 0 || p.busy_timeout_ms > INT32_MAX)
        return WF_EINVAL;
#ifdef WF_HAVE_SQLITE
    return wf__sqlite_open(out, path, &p, message);
#else
    if (message)
        *message = wf__strdup("wf was built without SQLite (-Dsqlite=disabled)");
    return WF_ENOTSUP;
#endif
}

void wf_store_free(wf_store *s)
{
    if (s == NULL)
        return;
    s->ops->free(s->self);
    wf__free_mem(s);
}

const char *wf_store_backend(const wf_store *s)
{
    return s ? s->ops->name : NULL;
}

static int id_ok(const char *id)
{
    return id && *id && strnlen(id, WF__STORE_ID_MAX + 1) <= WF__STORE_ID_MAX;
}

static void zero_ticket(uint64_t *ticket)
{
    if (ticket)
        *ticket = 0;
}

int wf_store_create(wf_store *s, const char *run_id, const char *workflow, uint64_t *ticket)
{
    zero_ticket(ticket);
    if (s == NULL || !id_ok(run_id) || workflow == NULL ||
        strnlen(workflow, WF__STORE_NAME_MAX + 1) > WF__STORE_NAME_MAX)
        return WF_EINVAL;
    return s->ops->create(s->self, run_id, workflow, ticket);
}

int wf_store_append(wf_store *s, const char *run_id, const wf_store_rec *recs, size_t n,
                    wf_store_done_fn done, void *user, uint64_t *first_seq, uint64_t *ticket)
{
    zero_ticket(ticket);
    if (s == NULL || !id_ok(run_id) || recs == NULL || n == 0 || n > 65536)
        return WF_EINVAL;
    for (size_t i = 0; i < n; i++)
        if (recs[i].len && recs[i].data == NULL)
            return WF_EINVAL;
    return s->ops->append(s->self, run_id, recs, n, done, user, first_seq, ticket);
}

int wf_store_set_status(wf_store *s, const char *run_id, int32_t status, uint64_t *ticket)
{
    zero_ticket(ticket);
    if (s == NULL || !id_ok(run_id) || (status != WF_STORE_RUNNING && status != WF_STORE_WAITING))
        return WF_EINVAL;
    return s->ops->set_status(s->self, run_id, status, ticket);
}

int wf_store_put_checkpoint(wf_store *s, const char *run_id, const void *data, size_t len,
                            wf_store_done_fn done, void *user, uint64_t *seq, uint64_t *ticket)
{
    zero_ticket(ticket);
    if (s == NULL || !id_ok(run_id) || data == NULL || len == 0)
        return WF_EINVAL;
    return s->ops->put_checkpoint(s->self, run_id, data, len, done, user, seq, ticket);
}

int wf_store_put_result(wf_store *s, const char *run_id, int32_t status, const void *data,
                        size_t len, wf_store_done_fn done, void *user, uint64_t *ticket)
{
    zero_ticket(ticket);
    if (s == NULL || !id_ok(run_id) || status < WF_STORE_DONE || status > WF_STORE_CANCELLED ||
        (len && data == NULL))
        return WF_EINVAL;
    return s->ops->put_result(s->self, run_id, status, data, len, done, user, ticket);
}

int wf_store_claim(wf_store *s, const char *run_id, wf_store_run_info *info)
{
    if (info)
        memset(info, 0, sizeof *info);
    if (s == NULL || !id_ok(run_id))
        return WF_EINVAL;
    return s->ops->claim(s->self, run_id, info);
}

int wf_store_release(wf_store *s, const char *run_id)
{
    if (s == NULL || !id_ok(run_id))
        return WF_EINVAL;
    return s->ops->release(s->self, run_id);
}

int wf_store_release_queued(wf_store *s, const char *run_id, wf_store_done_fn done, void *user,
                            uint64_t *ticket)
{
    if (ticket)
        *ticket = 0;
    if (s == NULL || !id_ok(run_id))
        return WF_EINVAL;
    if (s->ops->size >= offsetof(wf_store_ops, release_queued) + sizeof s->ops->release_queued &&
        s->ops->release_queued)
        return s->ops->release_queued(s->self, run_id, done, user, ticket);
    int rc = s->ops->release(s->self, run_id);
    if (rc == 0 && done)
        done(0, 0, user);
    return rc;
}

int wf_store_renew(wf_store *s, uint32_t *lost)
{
    if (lost)
        *lost = 0;
    if (s == NULL)
        return WF_EINVAL;
    return s->ops->renew(s->self, lost);
}

int wf_store_remove(wf_store *s, const char *run_id)
{
    if (s == NULL || !id_ok(run_id))
        return WF_EINVAL;
    return s->ops->remove(s->self, run_id);
}

int wf_store_flush(wf_store *s)
{
    return s ? s->ops->flush(s->self) : WF_EINVAL;
}

int wf_store_wait(wf_store *s, uint64_t ticket)
{
    return s ? s->ops->wait(s->self, ticket) : WF_EINVAL;
}

uint64_t wf_store_durable(wf_store *s)
{
    return s ? s->ops->durable(s->self) : 0;
}

int wf_store_get_run(wf_store *s, const char *run_id, wf_store_run_info *info)
{
    if (info)
        memset(info, 0, sizeof *info);
    if (s == NULL || !id_ok(run_id) || info == NULL)
        return WF_EINVAL;
    return s->ops->get_run(s->self, run_id, info);
}

int wf_store_get_checkpoint(wf_store *s, const char *run_id, void **data, size_t *len,
                            uint64_t *seq)
{
    if (data)
        *data = NULL;
    if (len)
        *len = 0;
    if (s == NULL || !id_ok(run_id) || data == NULL || len == NULL)
        return WF_EINVAL;
    return s->ops->get_checkpoint(s->self, run_id, data, len, seq);
}

int wf_store_get_result(wf_store *s, const char *run_id, int32_t *status, void **data, size_t *len)
{
    if (data)
        *data = NULL;
    if (len)
        *len = 0;
    if (s == NULL || !id_ok(run_id) || status == NULL || data == NULL || len == NULL)
        return WF_EINVAL;
    return s->ops->get_result(s->self, run_id, status, data, len);
}

int wf_store_read_journal(wf_store *s, const char *run_id, uint64_t from_seq, uint32_t max,
                          wf_store_journal_fn fn, void *user, uint64_t *next_seq)
{
    if (next_seq)
        *next_seq = from_seq;
    if (s == NULL || !id_ok(run_id) || fn == NULL)
        return WF_EINVAL;
    return s->ops->read_journal(s->self, run_id, from_seq, max, fn, user, next_seq);
}

int wf_store_list(wf_store *s, uint32_t mask, uint64_t cursor, uint32_t limit, wf_store_list_fn fn,
                  void *user, uint64_t *next_cursor)
{
    if (next_cursor)
        *next_cursor = 0;
    if (s == NULL || fn == NULL || mask == 0 || (mask & ~WF_STORE_MASK_ALL))
        return WF_EINVAL;
    return s->ops->list(s->self, mask, cursor, limit, fn, user, next_cursor);
}

/* Appends s with '%' and '/' escaped; returns the length it needs. */
static size_t key_part(char *buf, size_t cap, size_t at, const char *s)
{
    for (; *s; s++) {
        const char *esc = *s == '%' ? "%25" : *s == '/' ? "%2F" : NULL;
        size_t n = esc ? 3 : 1;
        if (at + n < cap)
            memcpy(buf + at, esc ? esc : s, n);
        at += n;
    }
    return at;
}

int wf_store_idempotency_key(char *buf, size_t cap, const char *run_id, const char *step,
                             uint64_t seq, uint32_t attempt)
{
    if (run_id == NULL || step == NULL || (buf == NULL && cap))
        return WF_EINVAL;
    char tail[48];
    int tl = snprintf(tail, sizeof tail, "/%" PRIu64 "/%" PRIu32, seq, attempt);
    size_t at = key_part(buf, cap, 0, run_id);
    if (at + 1 < cap)
        buf[at] = '/';
    at = key_part(buf, cap, at + 1, step);
    if (at + (size_t)tl < cap)
        memcpy(buf + at, tail, (size_t)tl);
    at += (size_t)tl;
    if (at >= cap || at > INT32_MAX) {
        if (cap)
            buf[0] = 0;
        return WF_ERANGE;
    }
    buf[at] = 0;
    return (int)at;
}

static int pack_event(msgpack_packer *pk, const wf_event *ev)
{
    const char *name = ev->type->name;
    size_t nl = strlen(name);
    if (msgpack_pack_array(pk, 2) || msgpack_pack_str(pk, nl) ||
        msgpack_pack_str_body(pk, name, nl))
        return WF_ENOMEM;
    return wf__pack_fields(pk, ev);
}

int wf_store_encode_step(const char *step, uint32_t attempt, const wf_event *input,
                         const wf_event *const *emitted, size_t n, void **buf, size_t *len)
{
    if (buf)
        *buf = NULL;
    if (len)
        *len = 0;
    if (step == NULL || input == NULL || buf == NULL || len == NULL || (n && emitted == NULL) ||
        n > UINT32_MAX)
        return WF_EINVAL;
    for (size_t i = 0; i < n; i++)
        if (emitted[i] == NULL)
            return WF_EINVAL;
    wf__buf b;
    wf__buf_init(&b);
    msgpack_packer pk;
    msgpack_packer_init(&pk, &b, wf__buf_write);
    size_t sl = strlen(step);
    int rc = (msgpack_pack_array(&pk, 4) || msgpack_pack_str(&pk, sl) ||
              msgpack_pack_str_body(&pk, step, sl) || msgpack_pack_uint32(&pk, attempt))
                 ? WF_ENOMEM
                 : pack_event(&pk, input);
    if (rc == 0 && msgpack_pack_array(&pk, (uint32_t)n))
        rc = WF_ENOMEM;
    for (size_t i = 0; rc == 0 && i < n; i++)
        rc = pack_event(&pk, emitted[i]);
    return wf__buf_finish(&b, rc, buf, len);
}
