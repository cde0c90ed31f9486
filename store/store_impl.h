/*
 * store_impl.h: what store.c and the backends share. Never installed.
 */
#ifndef WF_STORE_IMPL_H
#define WF_STORE_IMPL_H

#include <wf/store.h>

/* Longest run id (bytes) and workflow name the wrapper accepts. */
#define WF__STORE_ID_MAX   1024
#define WF__STORE_NAME_MAX 4096

/* sqlite.c: wf_store_open_sqlite after the wrapper checked the arguments. */
int wf__sqlite_open(wf_store **out, const char *path, const wf_store_params *params,
                    char **message);
/* sqlite.c: a run's row (info NULL: only whether it exists). */
int wf__sqlite_get_run(void *self, const char *run_id, wf_store_run_info *info);

#endif
