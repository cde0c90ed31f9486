/* wf.h: the umbrella header of wf. */
#ifndef WF_WF_H
#define WF_WF_H

#include <wf/common.h>
#include <wf/value.h>
#include <wf/event.h>
#include <wf/retry.h>
#include <wf/workflow.h>
#include <wf/resource.h>
#include <wf/schema.h>
#include <wf/context.h>
#include <wf/run.h>
#include <wf/child.h>
#include <wf/snapshot.h>
#include <wf/observe.h>
#include <wf/store.h>
#include <wf/cluster.h>
#include <wf/durable.h>
#include <wf/testing.h>
#include <wf/plugin.h>

/* wf/json.h belongs to the separate library libwf-json (pkg-config wf-json). */

#endif
