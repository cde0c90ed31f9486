/*
 * schema.h: typed events and typed state (the reference's pydantic event
 * fields and typed state models).
 *
 * A schema is a list of named fields, each with a kind (a wf_kind, or
 * WF_SCHEMA_ANY), for arrays and maps the kind of their elements (array
 * items, map values), for maps and records a nested schema, and either
 * required, optional, or optional with a default value. It is built on one
 * thread, then attached (which freezes it): to an event type
 * (wf_event_type_set_schema) or to a workflow's context store
 * (wf_workflow_set_state_schema). Schemas are reference counted; attaching
 * takes a reference.
 *
 * Kind matching is JSON-friendly, as pydantic's lax mode: a WF_DOUBLE field
 * takes any number (int and uint too), WF_INT takes a uint up to 2^63-1,
 * WF_UINT takes a non-negative int. nil is accepted only where `nullable`
 * is set (or the kind is WF_SCHEMA_ANY). Fields a schema does not name are
 * allowed (pydantic's default, extra="ignore", keeps them here).
 *
 * When events are checked:
 *  - a field's kind: when it is set, by wf_event_new1, wf_event_new2 and
 *    wf_event_set (WF_EKIND; the value is released as those calls say);
 *  - required fields and defaults: when the event is emitted (returned by a
 *    step, sent, listed in wf_ctx_emit_list, completed, or used to start a
 *    run) or by wf_event_check: a missing field with a default gets it, a
 *    missing required one is WF_EFORMAT. A step whose returned event fails
 *    the check fails (like a step error: retries apply); wf_ctx_send_event,
 *    wf_handler_send_event and wf_run_start refuse the event with the
 *    error; any other emission (list fan-out, completion) fails the run.
 * Errors name the event type and the field path ("Order.items[2]: expected
 * int, got string"), through wf_last_error_message and the run's error.
 * An event type's schema applies to its subtypes too (they may add their
 * own: each schema along the parent chain is checked).
 *
 * Threads: build a schema on one thread; once attached it is immutable and
 * shared. Attach schemas before building events of the type (as types are
 * registered before use).
 */
#ifndef WF_SCHEMA_H
#define WF_SCHEMA_H

#include <wf/common.h>
#include <wf/value.h>
#include <wf/event.h>
#include <wf/workflow.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct wf_schema wf_schema;

/** Any kind (a field's kind or an element kind). */
#define WF_SCHEMA_ANY (-1)

/** One field. Fill with wf_schema_field_init; the struct only grows at the end. */
typedef struct wf_schema_field {
    /** A wf_kind or WF_SCHEMA_ANY (the default). */
    int32_t kind;
    /** Arrays: their items' kind; maps: their values' kind. WF_SCHEMA_ANY (default). */
    int32_t elem_kind;
    /**
     * A nested schema (borrowed: the field takes its own reference): the
     * field's value (kind WF_MAP) or, for arrays and maps with elem_kind
     * WF_MAP, each element is checked against it as a record. May be NULL.
     */
    const wf_schema *fields;
    /** Nonzero: the field must be present (at emission). Default 0. */
    int32_t required;
    /** Nonzero: nil is accepted besides the kind. Default 0. */
    int32_t nullable;
    /** Nonzero: a missing field gets dflt (retained) at emission. Default 0. */
    int32_t has_default;
    /** The default (borrowed: the field keeps its own reference); must match the kind. */
    wf_value dflt;
} wf_schema_field;

/** Fills f with the defaults: any kind, optional, not nullable, no default. */
WF_API void wf_schema_field_init(wf_schema_field *f);

/** A new, empty schema. Caller owns: wf_schema_free. Any thread. */
WF_API int wf_schema_new(wf_schema **out);
/** A new reference (for wf_schema_free); returns s. NULL is fine. */
WF_API wf_schema *wf_schema_retain(wf_schema *s);
/** Drops the caller's reference (attached schemas live on). NULL is fine. */
WF_API void wf_schema_free(wf_schema *s);
/**
 * Adds field name (1..255 bytes, no '.'; copied). WF_EEXIST for a
 * duplicate, WF_EINVAL for a bad kind, a nested schema on a field that is
 * not a map or a collection of maps, or a default that does not match the
 * field, WF_EFROZEN once the schema is attached.
 */
WF_API int wf_schema_add_field(wf_schema *s, const char *name, const wf_schema_field *f);
/** Number of fields. */
WF_API size_t wf_schema_field_count(const wf_schema *s);
/** Field i: its name and declaration (borrowed: valid while the schema is). WF_ERANGE past the end.
 */
WF_API int wf_schema_field_at(const wf_schema *s, size_t i, const char **name,
                              const wf_schema_field **f);
/** The kind's name ("int", "map", ...; "any" for WF_SCHEMA_ANY). */
WF_API const char *wf_schema_kind_name(int32_t kind);

/**
 * Checks map (a record) against s: every field present has its kind, every
 * required one is present. 0, or WF_EKIND / WF_EFORMAT naming the field
 * path under `what` (e.g. a type name) through wf_last_error_message.
 */
WF_API int wf_schema_check(const wf_schema *s, wf_value map, const char *what);

/**
 * Attaches s to event type t (and its subtypes), taking a reference. Once
 * per type: WF_EEXIST if t has one. Before events of t are built.
 */
WF_API int wf_event_type_set_schema(const wf_event_type *t, wf_schema *s);
/** t's own schema (not its parents'), or NULL. Borrowed: valid while t's registry is. */
WF_API const wf_schema *wf_event_type_schema(const wf_event_type *t);
/**
 * What emission does to an unfrozen event: fills in missing defaults and
 * checks every field against the schemas of its type and the type's
 * ancestors. 0 when it passes (or no schema applies); WF_EKIND or
 * WF_EFORMAT naming type and field; WF_EFROZEN for a frozen event that
 * would need a default.
 */
WF_API int wf_event_check(wf_event *ev);

/**
 * The context store's schema (the reference's typed state): a fresh context
 * of wf starts with the defaults of its fields (nested schemas' defaults
 * too, as nested maps); wf_ctx_set of a value whose kind does not match the
 * field declared at that path (a dotted path through nested schemas) is
 * WF_EKIND, naming the path; wf_ctx_edit_state's result is checked as a
 * whole (WF_EKIND / WF_EFORMAT, nothing changed); a snapshot whose state
 * does not match is refused when loaded (WF_EMISMATCH naming the path).
 * Takes a reference on s. Before the workflow is frozen (WF_EFROZEN).
 */
WF_API int wf_workflow_set_state_schema(wf_workflow *wf, wf_schema *s);
/** The state schema, or NULL. Borrowed. */
WF_API const wf_schema *wf_workflow_state_schema(const wf_workflow *wf);

#ifdef __cplusplus
}
#endif

#endif
