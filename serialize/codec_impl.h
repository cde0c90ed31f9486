/*
 * codec_impl.h: the msgpack codec's internals, shared by codec.c, snapshot.c
 * and the executor's live snapshots. Never installed.
 */
#ifndef WF_CODEC_IMPL_H
#define WF_CODEC_IMPL_H

#include "internal.h"

#include <msgpack.h>

/* A msgpack_packer writer appending to a wf__buf. */
int wf__buf_write(void *data, const char *p, size_t n);
/* Hands b's bytes to the caller (*buf, *len) when rc is 0; frees them otherwise. */
int wf__buf_finish(wf__buf *b, int rc, void **buf, size_t *len);
int wf__pack_value(msgpack_packer *pk, wf_value v, int depth);
/* An event's fields as one map. */
int wf__pack_fields(msgpack_packer *pk, const wf_event *ev);
/* Checks the structure and lengths of one document, then unpacks it. */
int wf__msgpack_unpack(const void *buf, size_t len, msgpack_unpacked *res, size_t *used,
                       char **message);
/* The value of key in a checked map object, or NULL (also when it is not a map). */
const msgpack_object *wf__msgpack_get(const msgpack_object *map, const char *key);
/* A checked object as a value (caller owns *out). */
int wf__msgpack_convert(const msgpack_object *o, wf_value *out, char **message);
/* An event of type t from a checked fields map (caller owns *out, unfrozen). */
int wf__event_from_object(const wf_event_type *t, const msgpack_object *fields, wf_event **out,
                          char **message);

#endif
