/*
 * error.c: error names and messages, the version.
 */
#include "internal.h"

#include <stdio.h>

const char *wf_strerror(int err)
{
    switch (err) {
    case 0:
        return "success";
#define X(name, value, msg)                                                                        \
    case value:                                                                                    \
        return msg;
        WF_ERRORS(X)
#undef X
    default:
        return "unknown error";
    }
}

const char *wf_err_name(int err)
{
    switch (err) {
    case 0:
        return "WF_OK";
#define X(name, value, msg)                                                                        \
    case value:                                                                                    \
        return #name;
        WF_ERRORS(X)
#undef X
    default:
        return "WF_E?";
    }
}

const char *wf_version_string(void)
{
    return WF_VERSION_STRING;
}

uint32_t wf_version(void)
{
    return ((uint32_t)WF_VERSION_MAJOR << 16) | ((uint32_t)WF_VERSION_MINOR << 8) |
           (uint32_t)WF_VERSION_PATCH;
}

/*
 * The last error message of the thread. The default TLS model (not
 * WF__TLS's initial-exec): it is 1 KiB, too much for the static TLS room a
 * dlopen()ed library may take, and only failing calls touch it.
 */
static _Thread_local char last_message[1024];

int wf__set_error(int code, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(last_message, sizeof last_message, fmt, ap);
    va_end(ap);
    if (n < 0)
        snprintf(last_message, sizeof last_message, "%s", wf_strerror(code));
    return code;
}

const char *wf_last_error_message(void)
{
    return last_message;
}
