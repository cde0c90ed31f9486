/*
 * json.h: events and values as JSON (the separate library libwf-json,
 * pkg-config wf-json; libwf itself has no JSON dependency). Parsing is done
 * by jansson; writing appends to a caller's buffer (wf_json_buf) so a
 * program writing many documents reuses one buffer.
 *
 * The mapping (docs/CLI.md, "JSON"):
 *   nil <-> null, bool <-> true/false, double <-> a number with a fraction
 *   or exponent (always written with one, so it reads back as a double;
 *   NaN and infinities are written as null), string <-> string (UTF-8; NUL
 *   bytes as \u0000; invalid UTF-8 is written as U+FFFD), array <-> array,
 *   map <-> object (keys in insertion order).
 *   int <-> an integer from -2^63 to 2^63-1, exact. uint: written as a plain
 *   integer up to 2^63-1 (it reads back as int; wf_value_equal treats them
 *   as equal), and as {"$uint": "18446744073709551615"} above, because a JSON
 *   integer past 2^63-1 is refused by jansson and rounded by JavaScript and
 *   jq; {"$uint": N} with N a string or integer reads back as a uint.
 *   bytes <-> {"$bytes": "base64"} (RFC 4648 with padding).
 *   An object of one member whose key is "$bytes", "$uint" or "$map" is a
 *   tag; a map that would look like one is written as {"$map": {...}}.
 * An event is the envelope {"type": "Name", "value": {fields}}, its type
 * found by name in a registry.
 *
 * Nesting deeper than WF_JSON_MAX_DEPTH levels of arrays and objects is
 * refused. Errors: WF_EFORMAT with *message (optional, caller owns:
 * wf_json_free_message) naming the line and column or the member at fault,
 * WF_ENOTFOUND for an unknown event type, WF_ETYPE for a start event of
 * another type, WF_ENOMEM. Any thread; a wf_json_buf is used by one thread
 * at a time.
 */
#ifndef WF_JSON_H
#define WF_JSON_H

#include <wf/common.h>
#include <wf/value.h>
#include <wf/event.h>
#include <wf/workflow.h>
#include <wf/schema.h>
#include <wf/resource.h>

#ifdef __cplusplus
extern "C" {
#endif

/** Deepest nesting of arrays and objects accepted (the msgpack codec's limit). */
#define WF_JSON_MAX_DEPTH 32

/** A growable output buffer. Plain struct: data is NUL-terminated when not NULL. */
typedef struct wf_json_buf {
    char *data;
    size_t len;
    size_t cap;
    int oom; /* a write ran out of memory: the content is incomplete */
} wf_json_buf;

/** An empty buffer (no allocation yet). */
WF_API void wf_json_buf_init(wf_json_buf *b);
/** Frees the buffer's memory; it can be used again after wf_json_buf_init. */
WF_API void wf_json_buf_free(wf_json_buf *b);
/** Empties the buffer, keeping its memory. */
WF_API void wf_json_buf_reset(wf_json_buf *b);
/** Appends len raw bytes (no escaping): WF_ENOMEM. */
WF_API int wf_json_buf_append(wf_json_buf *b, const char *s, size_t len);

/** Appends v as JSON. WF_ENOMEM, WF_EINVAL past WF_JSON_MAX_DEPTH. */
WF_API int wf_json_write_value(wf_json_buf *b, wf_value v);
/** Appends a JSON string of len bytes at s (escaped). */
WF_API int wf_json_write_string(wf_json_buf *b, const char *s, size_t len);
/** Appends ev's fields as one object. */
WF_API int wf_json_write_fields(wf_json_buf *b, const wf_event *ev);
/** Appends the envelope {"type": name, "value": {fields}}. */
WF_API int wf_json_write_event(wf_json_buf *b, const wf_event *ev);

/** Parses a JSON document of len bytes into a value. Caller owns *out (wf_value_release). */
WF_API int wf_json_parse_value(const char *text, size_t len, wf_value *out, char **message);
/**
 * Parses an envelope {"type": name, "value": {fields}} ("value" optional)
 * into an event of reg's type name. Caller owns *out (unfrozen event).
 */
WF_API int wf_json_parse_event(const wf_registry *reg, const char *text, size_t len, wf_event **out,
                               char **message);
/**
 * Builds a start event of wf (frozen: its start type is known) from a JSON
 * object whose members are the fields. Also accepts the envelope form when
 * the object has exactly the members "type" (naming the start type or a
 * subtype of it) and "value". Caller owns *out.
 */
WF_API int wf_json_parse_start(wf_workflow *wf, const char *text, size_t len, wf_event **out,
                               char **message);

/* ---- workflows: representation, schemas, config resources ---- */

/**
 * Appends the workflow's structure as JSON, the reference's
 * get_workflow_representation (WorkflowGraph) with wf's additions:
 *   {"name", "description": null, "start_event", "stop_event",
 *    "nodes": [...], "edges": [{"source", "target", "label"}]}
 * Nodes, in the reference's order (each step, then the event types it
 * accepts and emits as first seen, then its resources):
 *   step:     {"id": name, "label", "node_type": "step", "description": null,
 *              "num_workers", "accepts": [types], "emits": [types],
 *              "resources": [names]}
 *   event:    {"id": type name, "label", "node_type": "event", "event_type",
 *              "event_types": [the type, its parent, ...], "event_schema":
 *              a JSON Schema (wf_json_write_schema) or null, "produced_by":
 *              [steps]}
 *   external: {"id": "external_step", ...} when a step emits an
 *              InputRequiredEvent (edges to it and on to the
 *              HumanResponseEvent types steps accept), as the reference;
 *   resource: {"id": "resource_" name, "label", "node_type": "resource",
 *              "getter_name", "scope": "run"|"invocation"|"workflow",
 *              "type_name": null, "description": null}, or for a config
 *              resource {"node_type": "resource_config", "config_file",
 *              "path_selector", "config_value", "config_schema"}.
 *   workflow: {"id": "workflow_" name, "label", "node_type": "workflow",
 *              "description": null}: a child workflow the step declares
 *              (wf_workflow_declare_child; the reference's generic node),
 *              once per workflow, after the step's resources.
 * Edges: step -> each type it emits, type -> each step accepting it, step
 * -> resource (label: the resource name), resource -> dependency (label:
 * its name), step -> each child workflow it declares (label "runs"). wf is
 * frozen first (WF_EVALIDATION if it cannot be).
 */
WF_API int wf_json_write_representation(wf_json_buf *b, wf_workflow *wf);
/**
 * Appends a JSON Schema (draft 2020-12 subset, as pydantic writes) for the
 * fields of event type t: its schema's and its ancestors' fields as
 * "properties" (kinds as JSON types, nested arrays/maps/records, defaults,
 * nullable as anyOf with null), "required", "additionalProperties": true;
 * with no schema, {"title", "type": "object", "additionalProperties": true}.
 */
WF_API int wf_json_write_schema(wf_json_buf *b, const wf_event_type *t);
/** The same for a schema (title: title, may be NULL). */
WF_API int wf_json_write_schema_of(wf_json_buf *b, const wf_schema *s, const char *title);

/**
 * Declares a config resource (the reference's ResourceConfig): a
 * workflow-scoped resource whose value is the JSON object at selector
 * (dotted keys, each an object; NULL: the whole document) in the file at
 * path (a ".json" file), as a wf_value map. It is read and checked when the
 * workflow is frozen (validation fails naming the resource when the file is
 * missing or not JSON, a selector key is missing or not an object, or the
 * value does not match schema, which may be NULL; the schema takes a
 * reference). A step (or factory) that declares it gets, through
 * wf_ctx_resource, a `const wf_value *` (borrowed for the workflow's life).
 * Errors as wf_workflow_add_resource; WF_EINVAL for a path not ending in
 * ".json".
 */
WF_API int wf_json_add_config_resource(wf_workflow *wf, const char *name, const char *path,
                                       const char *selector, wf_schema *schema);

/** Frees a message of this library. NULL is fine. */
WF_API void wf_json_free_message(char *message);

#ifdef __cplusplus
}
#endif

#endif
