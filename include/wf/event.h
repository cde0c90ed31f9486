/*
 * event.h: event types, the type registry, and events.
 *
 * Event types are named and may have a parent type (a subtype relation, as
 * Python subclasses). They live in a wf_registry: an explicit object, shared
 * by every workflow built on it (so one event can travel between workflows of
 * the same registry), with no hidden global state. Each registry starts with
 * the built-in types of wf_builtin_type. A type lives as long as its registry.
 *
 * An event is a type plus named fields holding wf_values. It is built, then
 * emitted; once emitted (returned from a step, sent, streamed or used to
 * start a run) it is frozen: immutable and shared by reference count between
 * every step that receives it. A small event (a few fields with short names)
 * takes one allocation from a per-thread cache.
 *
 * Lifetime rule: a registry must outlive every event of its types, and every
 * workflow holds a reference to its registry.
 */
#ifndef WF_EVENT_H
#define WF_EVENT_H

#include <wf/common.h>
#include <wf/value.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct wf_registry wf_registry;
typedef struct wf_event_type wf_event_type;
typedef struct wf_event wf_event;

/** The built-in types present in every registry. Values are stable ABI. */
typedef enum wf_builtin_type {
    WF_START_EVENT = 0,              /* "StartEvent" */
    WF_STOP_EVENT = 1,               /* "StopEvent", field "result" */
    WF_INPUT_REQUIRED_EVENT = 2,     /* "InputRequiredEvent" */
    WF_HUMAN_RESPONSE_EVENT = 3,     /* "HumanResponseEvent" */
    WF_STEP_FAILED_EVENT = 4,        /* "StepFailedEvent" */
    WF_WORKFLOW_TIMED_OUT_EVENT = 5, /* "WorkflowTimedOutEvent" < StopEvent */
    WF_WORKFLOW_CANCELLED_EVENT = 6, /* "WorkflowCancelledEvent" < StopEvent */
    WF_WORKFLOW_FAILED_EVENT = 7,    /* "WorkflowFailedEvent" < StopEvent */
    WF_UNHANDLED_EVENT = 8,          /* "UnhandledEvent": notification, see run.h */
    WF_STEP_STATE_CHANGED = 9,       /* "StepStateChanged": notification, see run.h */
    WF_WORKFLOW_IDLE_EVENT = 10,     /* "WorkflowIdleEvent": notification, see run.h */
    WF_BUILTIN_COUNT = 11
} wf_builtin_type;

/* ---- registry ---- */

/** A new registry holding the built-in types. Caller owns: wf_registry_free. Any thread. */
WF_API int wf_registry_new(wf_registry **out);
/**
 * Drops the caller's reference; the registry is freed with the last one
 * (workflows hold references). NULL is fine.
 */
WF_API void wf_registry_free(wf_registry *reg);

/**
 * Registers the type name with parent (NULL: no parent; a parent must belong
 * to the same registry). Registering a name again with the same parent returns
 * the existing type; with another parent it is WF_EEXIST. Names are 1..255
 * bytes. *out is borrowed: valid while the registry lives. Thread-safe.
 */
WF_API int wf_registry_add(wf_registry *reg, const char *name, const wf_event_type *parent,
                           const wf_event_type **out);
/** The type called name, or NULL. Borrowed. Thread-safe. */
WF_API const wf_event_type *wf_registry_find(const wf_registry *reg, const char *name);
/** A built-in type. Borrowed. Any thread. NULL for an unknown value. */
WF_API const wf_event_type *wf_registry_builtin(const wf_registry *reg, wf_builtin_type which);
/** Number of types registered so far (built-ins included). */
WF_API size_t wf_registry_count(const wf_registry *reg);
/** The type of id i (0 .. count-1), or NULL past the end. Borrowed. Thread-safe. */
WF_API const wf_event_type *wf_registry_type_at(const wf_registry *reg, size_t i);

/* ---- types ---- */

/** The type's name. Borrowed: valid while its registry lives. */
WF_API const char *wf_event_type_name(const wf_event_type *t);
/** The parent type or NULL. */
WF_API const wf_event_type *wf_event_type_parent(const wf_event_type *t);
/** A dense index of the type in its registry (0 .. count-1); built-ins use their enum value. */
WF_API uint32_t wf_event_type_id(const wf_event_type *t);
/** The registry the type belongs to. */
WF_API wf_registry *wf_event_type_registry(const wf_event_type *t);
/** 1 if t is ancestor or a descendant of it (t itself counts), else 0. */
WF_API int wf_event_type_is(const wf_event_type *t, const wf_event_type *ancestor);
/** 1 if t is StopEvent or one of its subtypes. */
WF_API int wf_event_type_is_stop(const wf_event_type *t);

/* ---- declared fields: the hot path's events ---- */

/** Most fields a type can declare. */
#define WF_EVENT_MAX_FIELDS 32

/**
 * A field declared on an event type (wf_event_type_add_field): its key
 * resolved once, so that building and reading the type's events is a few
 * stores and an index instead of copying and comparing keys. Borrowed from
 * the type: valid while its registry lives.
 */
typedef struct wf_event_field wf_event_field;

/**
 * Declares field key on type t at its next position (0, 1, ... in the order
 * of the calls) and gives its handle. Declaring a key again gives the same
 * handle. Declare a type's fields when defining it, before events are built
 * with wf_event_new_fields (an event built earlier keeps the fields it had).
 * Thread-safe. WF_EINVAL (a NULL, an empty key or one over 255 bytes),
 * WF_ERANGE (more than WF_EVENT_MAX_FIELDS), WF_ENOMEM.
 */
WF_API int wf_event_type_add_field(const wf_event_type *t, const char *key,
                                   const wf_event_field **out);
/** Number of fields declared on t (0 for NULL). */
WF_API size_t wf_event_type_field_count(const wf_event_type *t);
/** The key of a declared field (NULL for NULL). Borrowed. */
WF_API const char *wf_event_field_key(const wf_event_field *f);
/** The position of a declared field in its type (UINT32_MAX for NULL). */
WF_API uint32_t wf_event_field_index(const wf_event_field *f);

/* ---- events ---- */

/**
 * A new, unfrozen event of type with room for capacity fields (it grows past
 * that). Caller owns: emit it or wf_event_release it. Any thread.
 */
WF_API int wf_event_new(wf_event **out, const wf_event_type *type, size_t capacity);
/**
 * The hot-path constructor: an event with one field, in one allocation from
 * the calling thread's cache. Takes ownership of val (also on failure).
 * key may be NULL for an event with no fields.
 */
WF_API int wf_event_new1(wf_event **out, const wf_event_type *type, const char *key, wf_value val);
/** An event with two fields. Takes ownership of both values. */
WF_API int wf_event_new2(wf_event **out, const wf_event_type *type, const char *k1, wf_value v1,
                         const char *k2, wf_value v2);
/**
 * An event of type with every field it declares (wf_event_type_add_field):
 * vals[i] is the value of the field at position i, n the number declared.
 * One allocation from the calling thread's cache and a copy of each
 * resolved key: the constructor of the hot path. Takes ownership of the
 * values (also on failure). WF_EINVAL for a NULL out or type, vals NULL
 * with n > 0, or n other than the number of fields type declares; a
 * schema's refusal (schema.h); WF_ENOMEM.
 */
WF_API int wf_event_new_fields(wf_event **out, const wf_event_type *type, const wf_value *vals,
                               size_t n);
/**
 * A StopEvent (or a StopEvent subtype given as type; NULL means the registry's
 * StopEvent, which then needs reg) with field "result" = result. Takes
 * ownership of result.
 */
WF_API int wf_event_new_stop(wf_event **out, const wf_registry *reg, const wf_event_type *type,
                             wf_value result);

/**
 * Sets field key to val (replacing an existing one). Takes ownership of val.
 * Only while the event is unfrozen and the caller holds its only reference:
 * WF_EFROZEN otherwise. WF_EINVAL for a NULL or empty key.
 */
WF_API int wf_event_set(wf_event *ev, const char *key, wf_value val);

/** Makes the event frozen: immutable from now on. wf does this when an event is emitted. */
WF_API void wf_event_freeze(wf_event *ev);
/** 1 when frozen. */
WF_API int wf_event_is_frozen(const wf_event *ev);

/** A new reference: returns ev. Any thread. */
WF_API wf_event *wf_event_retain(const wf_event *ev);
/** Gives up a reference; the event is freed with the last. NULL is fine. Any thread. */
WF_API void wf_event_release(wf_event *ev);

/** The event's type. Borrowed. */
WF_API const wf_event_type *wf_event_type_of(const wf_event *ev);
/** Shortcut: the type's name. Borrowed. */
WF_API const char *wf_event_type_name_of(const wf_event *ev);

/** Field key, or dflt when absent. Borrowed: valid while ev is (dflt is returned as given). */
WF_API wf_value wf_event_get(const wf_event *ev, const char *key, wf_value dflt);
/**
 * The declared field f of ev, or dflt when absent: an index when ev was built
 * by wf_event_new_fields of f's type, else a lookup of f's key (so it reads
 * any event: decoded, built by name, of another type). Borrowed as
 * wf_event_get.
 */
WF_API wf_value wf_event_get_field(const wf_event *ev, const wf_event_field *f, wf_value dflt);
/** Field key into *out (borrowed). WF_ENOTFOUND when absent. */
WF_API int wf_event_lookup(const wf_event *ev, const char *key, wf_value *out);
/** 1 when the field is present. */
WF_API int wf_event_has(const wf_event *ev, const char *key);
/** Number of fields. */
WF_API size_t wf_event_field_count(const wf_event *ev);
/** Field i in insertion order: key and value borrowed. WF_ERANGE past the end. */
WF_API int wf_event_field_at(const wf_event *ev, size_t i, const char **key, wf_value *val);
/** The field "result" (StopEvent) or nil. Borrowed. */
WF_API wf_value wf_event_result(const wf_event *ev);
/** Same type and equal fields (any order). */
WF_API int wf_event_equal(const wf_event *a, const wf_event *b);

#ifdef __cplusplus
}
#endif

#endif
