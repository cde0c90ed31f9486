/*
 * wf-snapshot: prints a saved snapshot (wf_ctx_save) as JSON, through
 * wf_snapshot_to_json: bytes as base64 strings, 64-bit integers exact, the
 * run map as docs/SNAPSHOT.md describes it. The workflow fingerprint, an
 * identifier, is printed as a decimal string ("fingerprint": "123..."):
 * jq and JavaScript read numbers as doubles and would change it (above
 * 2^53); the values of the state stay numbers, as they were saved. For looking into saved runs and
 * diffing them (`wf-snapshot a.snap | python3 -m json.tool`).
 *
 * Usage: wf-snapshot FILE     (FILE "-" reads standard input)
 * Exit status: 0 printed; 1 the file cannot be read or is not a snapshot
 * (the reason on standard error, the library's message when it has one);
 * 2 usage.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <wf/wf.h>

static void usage(FILE *to)
{
    fprintf(to, "usage: wf-snapshot FILE\n"
                "prints the wf snapshot in FILE (\"-\": standard input) as JSON\n");
}

/* The whole of f in *buf (malloc'd), or -1 with errno. */
static int slurp(FILE *f, char **buf, size_t *len)
{
    size_t cap = 1 << 16, n = 0;
    char *b = malloc(cap);
    if (b == NULL)
        return -1;
    for (;;) {
        n += fread(b + n, 1, cap - n, f);
        if (n < cap)
            break;
        char *nb = cap <= SIZE_MAX / 2 ? realloc(b, cap * 2) : NULL;
        if (nb == NULL) {
            free(b);
            errno = ENOMEM;
            return -1;
        }
        b = nb;
        cap *= 2;
    }
    if (ferror(f)) {
        int e = errno;
        free(b);
        errno = e ? e : EIO;
        return -1;
    }
    *buf = b;
    *len = n;
    return 0;
}

int main(int argc, char **argv)
{
    if (argc == 2 && (strcmp(argv[1], "-h") == 0 || strcmp(argv[1], "--help") == 0)) {
        usage(stdout);
        return 0;
    }
    if (argc != 2) {
        usage(stderr);
        return 2;
    }
    const char *path = argv[1];
    int from_stdin = strcmp(path, "-") == 0;
    FILE *f = from_stdin ? stdin : fopen(path, "rb");
    if (f == NULL) {
        fprintf(stderr, "wf-snapshot: %s: %s\n", path, strerror(errno));
        return 1;
    }
    char *buf;
    size_t len;
    int rd = slurp(f, &buf, &len);
    int e = errno;
    if (!from_stdin)
        fclose(f);
    if (rd < 0) {
        fprintf(stderr, "wf-snapshot: %s: %s\n", path, strerror(e));
        return 1;
    }
    char *json = NULL, *msg = NULL;
    int rc = wf_snapshot_to_json(buf, len, &json, &msg);
    free(buf);
    if (rc < 0) {
        fprintf(stderr, "wf-snapshot: %s: %s\n", path, msg ? msg : wf_strerror(rc));
        wf_free(msg);
        return 1;
    }
    int ok = fputs(json, stdout) >= 0 && putchar('\n') != EOF && fflush(stdout) == 0;
    wf_free(json);
    if (!ok) {
        fprintf(stderr, "wf-snapshot: writing: %s\n", strerror(errno));
        return 1;
    }
    return 0;
}
