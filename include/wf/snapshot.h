/*
 * snapshot.h: msgpack encoding of values and events, the building blocks of
 * context snapshots.
 *
 * Values map one to one onto msgpack types (nil, bool, int, uint, float64,
 * str, bin, array, map with string keys). An event is the two-element array
 * [type name, map of fields]; it is decoded against a registry by name, never
 * by pointer or numeric id.
 *
 * The decoder trusts nothing: every length is checked against the bytes
 * that remain before anything is allocated, nesting is limited
 * (WF_MSGPACK_MAX_DEPTH), and extension types, non-string map keys and
 * duplicate keys are refused. A bad document gives WF_EFORMAT and, when
 * message is not NULL, a text naming the offset and the problem (caller
 * owns: wf_free); never a crash.
 *
 * Buffers handed out are caller owned: release with wf_free. Any thread.
 */
#ifndef WF_SNAPSHOT_H
#define WF_SNAPSHOT_H

#include <wf/common.h>
#include <wf/value.h>
#include <wf/event.h>

#ifdef __cplusplus
extern "C" {
#endif

/** Deepest nesting of arrays and maps the decoder accepts (msgpack-c's own limit). */
#define WF_MSGPACK_MAX_DEPTH 32

/** Encodes v. *buf caller owned (wf_free), *len its length. */
WF_API int wf_value_to_msgpack(wf_value v, void **buf, size_t *len);
/**
 * Decodes one value from buf[0..len). *out caller owned (wf_value_release);
 * *used (optional) gets the bytes consumed; trailing bytes are left alone.
 */
WF_API int wf_value_from_msgpack(const void *buf, size_t len, wf_value *out, size_t *used,
                                 char **message);

/** Encodes ev as [type name, {fields}]. */
WF_API int wf_event_to_msgpack(const wf_event *ev, void **buf, size_t *len);
/**
 * Decodes an event, resolving its type by name in reg (WF_ENOTFOUND for a
 * name reg does not know). *out caller owned, unfrozen.
 */
WF_API int wf_event_from_msgpack(const wf_registry *reg, const void *buf, size_t len,
                                 wf_event **out, size_t *used, char **message);

#ifdef __cplusplus
}
#endif

#endif
