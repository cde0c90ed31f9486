/*
 * graph_names.c: a workflow whose step and event names are full of what DOT
 * and Mermaid give a meaning to, or cannot hold: writes its DOT (argv[1])
 * and Mermaid (argv[2]) drawings, and what a reader must see for each node
 * (argv[3]: JSON {"step_0": {"dot": ..., "mermaid": ...}, ...}) for
 * check_graph_names.sh and check_mermaid.mjs. The expected texts are
 * written out here by hand, not derived from the library's escaping.
 */
#include <stdio.h>
#include <string.h>

#include <wf/wf.h>

typedef struct name {
    const char *raw;     /* the name given to wf */
    const char *dot;     /* what graphviz must draw (lines joined by \n) */
    const char *mermaid; /* what Mermaid must show */
} name;

#define FFFD "\xef\xbf\xbd"

static const name steps[] = {
    {"work <a>", "work <a>", "work <a>"},
    {"a & b <b>bold</b> &amp;", "a & b <b>bold</b> &amp;", "a & b <b>bold</b> &amp;"},
    {"quote \" back \\ slash \\n", "quote \" back \\ slash \\n", "quote \" back \\ slash \\n"},
    {"hash #lt; #35; #quot; `tick`", "hash #lt; #35; #quot; `tick`",
     "hash #lt; #35; #quot; `tick`"},
    {"bad \xff\xfe utf8 \xc3", "bad " FFFD FFFD " utf8 " FFFD, "bad " FFFD FFFD " utf8 " FFFD},
    {"brackets [x] (y) {z} |p| ; : --> end", "brackets [x] (y) {z} |p| ; : --> end",
     "brackets [x] (y) {z} |p| ; : --> end"},
    {"new\nline\ttab", "new\nline tab", "new line tab"},
    {"caf\xc3\xa9 \xe2\x98\x95 \xf0\x9f\x98\x80 \xed\xa0\x80",
     "caf\xc3\xa9 \xe2\x98\x95 \xf0\x9f\x98\x80 " FFFD FFFD FFFD,
     "caf\xc3\xa9 \xe2\x98\x95 \xf0\x9f\x98\x80 " FFFD FFFD FFFD},
};
enum { N = sizeof steps / sizeof steps[0] };

static int nop(wf_ctx *ctx, const wf_event *in, wf_event **out, void *u)
{
    (void)ctx;
    (void)in;
    (void)out;
    (void)u;
    return 0;
}

/* s as a JSON string (s is valid UTF-8 here). */
static void json(FILE *f, const char *s)
{
    fputc('"', f);
    for (; *s; s++) {
        if (*s == '"' || *s == '\\')
            fprintf(f, "\\%c", *s);
        else if (*s == '\n')
            fputs("\\n", f);
        else
            fputc(*s, f);
    }
    fputc('"', f);
}

int main(int argc, char **argv)
{
    if (argc != 4)
        return 2;
    wf_workflow *wf;
    if (wf_workflow_new(&wf, "names <&> \"x\"", NULL) < 0)
        return 1;
    const wf_event_type *start = wf_workflow_builtin(wf, WF_START_EVENT);
    const wf_event_type *stop = wf_workflow_builtin(wf, WF_STOP_EVENT);
    const wf_event_type *ev;
    if (wf_workflow_event_type(wf, "Event<T> & \"x\" #amp;", NULL, &ev) < 0)
        return 1;
    for (int i = 0; i < N; i++) {
        const wf_event_type *acc[] = {i == 0 ? start : ev};
        const wf_event_type *em[] = {i == 0 ? ev : stop};
        wf_step_params p;
        wf_step_params_init(&p);
        p.accepts = acc;
        p.n_accepts = 1;
        p.emits = em;
        p.n_emits = 1;
        if (wf_workflow_add_step(wf, steps[i].raw, nop, &p, NULL) < 0)
            return 1;
    }
    char *dot = NULL, *mm = NULL;
    if (wf_workflow_to_dot(wf, &dot) < 0 || wf_workflow_to_mermaid(wf, &mm) < 0)
        return 1;
    FILE *f1 = fopen(argv[1], "w"), *f2 = fopen(argv[2], "w"), *f3 = fopen(argv[3], "w");
    if (f1 == NULL || f2 == NULL || f3 == NULL)
        return 1;
    fputs(dot, f1);
    fputs(mm, f2);
    fputs("{", f3);
    for (int i = 0; i < N; i++) {
        fprintf(f3, "%s\"step_%d\": {\"dot\": ", i ? ", " : "", i);
        json(f3, steps[i].dot);
        fputs(", \"mermaid\": ", f3);
        json(f3, steps[i].mermaid);
        fputs("}", f3);
    }
    fprintf(f3, ", \"event_%u\": {\"dot\": ", (unsigned)wf_event_type_id(ev));
    json(f3, "Event<T> & \"x\" #amp;");
    fputs(", \"mermaid\": ", f3);
    json(f3, "Event<T> & \"x\" #amp;");
    fputs("}}\n", f3);
    fclose(f1);
    fclose(f2);
    fclose(f3);
    wf_free(dot);
    wf_free(mm);
    wf_workflow_free(wf);
    return 0;
}
