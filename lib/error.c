/*
 * error.c: error names and messages, the version.
 */
#include "internal.h"

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
