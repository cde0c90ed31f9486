/*
 * graph.c: DOT and Mermaid drawings of every possible flow of a workflow.
 *
 * Nodes: one box per step, one ellipse per event type that a step accepts or
 * emits. Edges: event -> step for what a step accepts (subtypes included for
 * steps that opted in), step -> event for what it may emit. The start event
 * (a StartEvent type) is green, stop events (StopEvent and subtypes) red.
 * Output order is deterministic: steps in the order they were added, then
 * types in registry order.
 */
#include "internal.h"

#include <stdlib.h>
#include <string.h>

typedef struct types {
    const wf_event_type **t;
    size_t n, cap;
} types;

static int types_add(types *s, const wf_event_type *t)
{
    for (size_t i = 0; i < s->n; i++)
        if (s->t[i] == t)
            return 0;
    if (s->n == s->cap) {
        size_t cap = s->cap ? s->cap * 2 : 16;
        const wf_event_type **n = wf__realloc(s->t, cap * sizeof *n);
        if (n == NULL)
            return WF_ENOMEM;
        s->t = n;
        s->cap = cap;
    }
    s->t[s->n++] = t;
    return 0;
}

static int cmp_id(const void *a, const void *b)
{
    uint32_t x = (*(const wf_event_type *const *)a)->id;
    uint32_t y = (*(const wf_event_type *const *)b)->id;
    return x < y ? -1 : x > y;
}

/* The event types drawn, in registry order. */
static int collect(const wf_workflow *wf, types *ts)
{
    for (uint32_t i = 0; i < wf->n_steps; i++) {
        const wf__step *s = wf->steps[i];
        for (uint32_t j = 0; j < s->n_accepts; j++)
            if (types_add(ts, s->accepts[j]) < 0)
                return WF_ENOMEM;
        for (uint32_t j = 0; j < s->n_emits; j++)
            if (types_add(ts, s->emits[j]) < 0)
                return WF_ENOMEM;
    }
    if (ts->n)
        qsort(ts->t, ts->n, sizeof *ts->t, cmp_id);
    return 0;
}

static int is_start(const wf_workflow *wf, const wf_event_type *t)
{
    return wf_event_type_is(t, wf->reg->types[WF_START_EVENT]);
}

/*
 * Names come from users: any bytes. Both writers below copy each well-formed
 * UTF-8 character, write a byte that is not part of one as U+FFFD (graphviz
 * warns about invalid UTF-8 and a browser shows mojibake), and a control
 * character other than a newline as a space.
 */
#define REPLACEMENT "\xef\xbf\xbd" /* U+FFFD */

/* The length of the character at s, 0 for a byte that is not UTF-8. */
static size_t char_len(const char *s)
{
    return wf__utf8_len((const unsigned char *)s, SIZE_MAX);
}

/* A DOT double-quoted string: '"' and '\\' escaped, a newline as \n, '&' as &amp;. */
void wf__dot_str(wf__buf *b, const char *s)
{
    wf__buf_puts(b, "\"");
    while (*s) {
        unsigned char c = (unsigned char)*s;
        size_t k = char_len(s);
        if (k == 0) {
            wf__buf_puts(b, REPLACEMENT);
            s++;
            continue;
        }
        if (c == '"' || c == '\\')
            wf__buf_puts(b, c == '"' ? "\\\"" : "\\\\");
        else if (c == '\n')
            wf__buf_puts(b, "\\n");
        else if (c == '&')
            wf__buf_puts(b, "&amp;"); /* graphviz decodes entities ("&amp;") in labels */
        else if (c < 0x20 || c == 0x7f)
            wf__buf_puts(b, " ");
        else
            wf__buf_append(b, s, k);
        s += k;
    }
    wf__buf_puts(b, "\"");
}

/*
 * A Mermaid label in double quotes. Mermaid renders labels as HTML, so '<',
 * '>' and '&' are written as its entity codes (#lt; #gt; #amp;), which it
 * decodes to text, and so are the characters its own syntax gives a
 * meaning: '"' (#quot;), '#' (#35;, else a name holding "#lt;" would be
 * decoded) and '`' (#96;, markdown strings). A newline becomes a space.
 */
void wf__mm_str(wf__buf *b, const char *s)
{
    wf__buf_puts(b, "\"");
    while (*s) {
        unsigned char c = (unsigned char)*s;
        size_t k = char_len(s);
        if (k == 0) {
            wf__buf_puts(b, REPLACEMENT);
            s++;
            continue;
        }
        switch (c) {
        case '"':
            wf__buf_puts(b, "#quot;");
            break;
        case '<':
            wf__buf_puts(b, "#lt;");
            break;
        case '>':
            wf__buf_puts(b, "#gt;");
            break;
        case '&':
            wf__buf_puts(b, "#amp;");
            break;
        case '#':
            wf__buf_puts(b, "#35;");
            break;
        case '`':
            wf__buf_puts(b, "#96;");
            break;
        default:
            if (c < 0x20 || c == 0x7f)
                wf__buf_puts(b, " ");
            else
                wf__buf_append(b, s, k);
        }
        s += k;
    }
    wf__buf_puts(b, "\"");
}

/* How DOT and Mermaid spell the graph's parts (also the execution drawing's). */
const wf__graph_style wf__graph_dot = {
    wf__dot_str,
    "  step_%u [label=",
    ", shape=box, style=filled, fillcolor=\"#ADD8E6\"];\n",
    "  event_%u [label=",
    ", shape=ellipse, style=filled, fillcolor=\"%s\"];\n",
    {"#E8E8E8", "#90EE90", "#FFA07A"},
    "  event_%u -> step_%u;\n",
    "  step_%u -> event_%u;\n",
    "  step_%u -> event_%u [style=dashed];\n",
    "}\n",
};

const wf__graph_style wf__graph_mermaid = {
    wf__mm_str,
    "    step_%u[",
    "]:::step\n",
    "    event_%u([",
    "]):::%s\n",
    {"event", "startEvent", "stopEvent"},
    "    event_%u --> step_%u\n",
    "    step_%u --> event_%u\n",
    "    step_%u -.-> event_%u\n",
    "    classDef step fill:#ADD8E6,color:#000000,stroke:#333333\n"
    "    classDef event fill:#E8E8E8,color:#000000,stroke:#333333\n"
    "    classDef startEvent fill:#90EE90,color:#000000,stroke:#333333\n"
    "    classDef stopEvent fill:#FFA07A,color:#000000,stroke:#333333\n",
};

static int render(const wf_workflow *wf, const wf__graph_style *st, const char *header, char **out)
{
    if (out)
        *out = NULL;
    if (wf == NULL || out == NULL)
        return WF_EINVAL;
    types ts = {0};
    if (collect(wf, &ts) < 0) {
        wf__free_mem(ts.t);
        return WF_ENOMEM;
    }
    wf__buf b;
    wf__buf_init(&b);
    wf__buf_puts(&b, header);
    for (uint32_t i = 0; i < wf->n_steps; i++) {
        wf__buf_printf(&b, st->step_open, i);
        st->quote(&b, wf->steps[i]->name);
        wf__buf_puts(&b, st->step_close);
    }
    for (size_t k = 0; k < ts.n; k++) {
        const wf_event_type *t = ts.t[k];
        int c = t->is_stop ? 2 : is_start(wf, t) ? 1 : 0;
        wf__buf_printf(&b, st->event_open, t->id);
        st->quote(&b, t->name);
        wf__buf_printf(&b, st->event_close, st->colour[c]);
    }
    for (uint32_t i = 0; i < wf->n_steps; i++) {
        const wf__step *s = wf->steps[i];
        for (size_t k = 0; k < ts.n; k++)
            if (wf__step_accepts(s, ts.t[k]))
                wf__buf_printf(&b, st->accept, ts.t[k]->id, i);
        for (uint32_t j = 0; j < s->n_emits; j++)
            wf__buf_printf(&b, st->emit, i, s->emits[j]->id);
        if (s->handler >= 0) /* failures go to its error handler */
            wf__buf_printf(&b, st->fails, i, (unsigned)WF_STEP_FAILED_EVENT);
    }
    wf__graph_children(wf, st, &b); /* the child workflows steps declare */
    wf__buf_puts(&b, st->footer);
    wf__free_mem(ts.t);
    return wf__buf_take(&b, out);
}

int wf_workflow_to_dot(const wf_workflow *wf, char **out)
{
    if (wf == NULL)
        return render(wf, &wf__graph_dot, "", out);
    wf__buf h;
    wf__buf_init(&h);
    wf__buf_puts(&h, "digraph ");
    wf__dot_str(&h, wf->name);
    wf__buf_puts(&h, " {\n  rankdir=TB;\n  node [fontname=\"Helvetica\"];\n");
    if (h.oom) {
        wf__buf_free(&h);
        if (out)
            *out = NULL;
        return WF_ENOMEM;
    }
    int rc = render(wf, &wf__graph_dot, h.data, out);
    wf__buf_free(&h);
    return rc;
}

int wf_workflow_to_mermaid(const wf_workflow *wf, char **out)
{
    return render(wf, &wf__graph_mermaid, "flowchart TD\n", out);
}
