/*
 * flat.h: wf batch's start events from flat JSON lines without a DOM
 * (flat.c, yajl). Internal to the wf command and its tests.
 */
#ifndef WF_CLI_FLAT_H
#define WF_CLI_FLAT_H

#include <stddef.h>

#include <wf/wf.h>

/*
 * The start event of type `type` from the line s[0..n) when it is one flat
 * object of scalars that the general path (json.c) would read the same way:
 * 1, with *out (caller owns) and the last "id" member's value in *id
 * (caller releases; *has_id 0 when there is none). *arena_slot (NULL, or
 * one a thread, starting NULL) keeps yajl's memory between lines; free it
 * with cli_flat_arena_free. 0: not such a line, or
 * anything about it that only the general path decides or words: parse it
 * there. WF_ENOMEM.
 */
int cli_flat_start(const wf_event_type *type, const char *s, size_t n, void **arena_slot,
                   wf_event **out, wf_value *id, int *has_id);
/* Frees an arena cli_flat_start made in *arena_slot (NULL is fine). */
void cli_flat_arena_free(void *arena);

#endif
