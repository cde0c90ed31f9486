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
 * message is not NULL, a text naming the offset (and, in a snapshot's run,
 * the field) and the problem (caller owns: wf_free); never a crash.
 *
 * Buffers handed out are caller owned: release with wf_free. Any thread.
 */
#ifndef WF_SNAPSHOT_H
#define WF_SNAPSHOT_H

#include <wf/common.h>
#include <wf/value.h>
#include <wf/event.h>
#include <wf/workflow.h>
#include <wf/context.h>

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

/* ---- context snapshots ---- */

/** The snapshot format this library writes (independent of the library version). */
#define WF_SNAPSHOT_VERSION 4
/** wf_ctx_load flag: accept a snapshot of a differently defined workflow. */
#define WF_LOAD_ALLOW_MISMATCH 1u

/**
 * A fingerprint of the definition: its name, and each step's name, accepted
 * and emitted type names in order (FNV-1a, 64 bits). Any thread.
 */
WF_API uint64_t wf_workflow_fingerprint(const wf_workflow *wf);

/** What wf_ctx_save_ex did. */
typedef struct wf_save_info {
    int running;      /**< the snapshot holds a run (in flight or parked): it can be resumed */
    int live;         /**< the run was in flight: a live cut was taken */
    int64_t pause_ns; /**< live: how long the run's tasks were held for the cut */
} wf_save_info;

/**
 * Saves a context: a msgpack map with "magic" ("wf-snapshot"), "version",
 * "workflow", "fingerprint", "running", "state" (the store) and, when
 * running, "run" (docs/SNAPSHOT.md). A context whose run is in flight is cut
 * live: the run is held only while its bookkeeping is copied (its events
 * are retained, not copied; the store is taken at the cut too), then it goes
 * on while the copy is encoded; other runs never stop. Events in progress
 * at the cut are saved as such and run again on resume (at-least-once). A
 * context whose run was cancelled, or that was loaded from a snapshot of a
 * running context, saves that parked run.
 * Not from a thread of an executor (a step): WF_EBUSY. *buf caller owned
 * (wf_free). Any other thread.
 */
WF_API int wf_ctx_save(wf_ctx *ctx, void **buf, size_t *len);
/** wf_ctx_save, telling what it did (info may be NULL). */
WF_API int wf_ctx_save_ex(wf_ctx *ctx, void **buf, size_t *len, wf_save_info *info);
/**
 * A new context for wf from a snapshot (caller owns *out: wf_ctx_free).
 * WF_EFORMAT for a malformed document, WF_EVERSION for a newer format,
 * WF_EMISMATCH when it was taken of another workflow definition (unless
 * flags has WF_LOAD_ALLOW_MISMATCH); *message (optional) says why. A
 * snapshot of a running context gives a context holding that run, checked
 * against wf (every step and type is resolved by name now, every event's
 * fields checked; nothing is built until the run is resumed): continue it
 * with wf_run_resume (or wf_run_start with no start event). Version 1
 * snapshots (at rest only) are migrated. buf is borrowed for the call.
 */
WF_API int wf_ctx_load(wf_workflow *wf, const void *buf, size_t len, uint32_t flags, wf_ctx **out,
                       char **message);
/**
 * A JSON rendering of a snapshot (bytes as base64, 64-bit integers exact,
 * non-finite doubles as null); WF_EFORMAT for a document that is not one.
 * Caller owns *json (wf_free). The wf-snapshot tool prints it. Any thread.
 */
WF_API int wf_snapshot_to_json(const void *buf, size_t len, char **json, char **message);

#ifdef __cplusplus
}
#endif

#endif
