/*
 * json_internal.h: the jansson side of libwf-json, for programs of this tree
 * that hold jansson trees already (the CLI, the HTTP server). Not installed.
 */
#ifndef WF_JSON_INTERNAL_H
#define WF_JSON_INTERNAL_H

#include <jansson.h>

#include <wf/json.h>

/* Parses text; NULL with *message ("line L column C: ...") on error. */
json_t *wf__json_load(const char *text, size_t len, char **message);
/* j's value (tags decoded). Caller owns *out. */
int wf__json_to_value(const json_t *j, wf_value *out, char **message);
/* An unfrozen event of type with the members of the object obj as fields. */
int wf__json_event_fields(const json_t *obj, const wf_event_type *type, wf_event **out,
                          char **message);
/* An event from the envelope {"type", "value"}. */
int wf__json_event_envelope(const wf_registry *reg, const json_t *j, wf_event **out,
                            char **message);
/* A start event of wf from the object j (fields, or the envelope). */
int wf__json_start(wf_workflow *wf, const json_t *j, wf_event **out, char **message);
/* Sets *message (if message; NULL or a message of this library on entry) to a
 * formatted text; returns WF_EFORMAT. */
int wf__json_msg(char **message, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#endif
