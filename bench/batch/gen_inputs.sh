#!/bin/sh
# gen_inputs.sh N FILE: N quick-start inputs, one JSON object a line, each
# with its own id and data ({"id":1,"data":"Hello, world! 1"}), so no two
# lines are alike (wf batch reuses the parsed event of a repeated line).
set -eu
n="$1"; out="$2"
awk -v n="$n" 'BEGIN { for (i = 1; i <= n; i++) printf "{\"id\":%d,\"data\":\"Hello, world! %d\"}\n", i, i }' > "$out"
