-- wrk script of bench/serve/run.sh: POST /workflows/MyWorkflow/run with the
-- quick start's input; at the end one JSON line (requests/s = runs/s).
wrk.method = "POST"
wrk.body = '{"start_event": {"data": "Hello, world!"}}'
wrk.headers["Content-Type"] = "application/json"

done = function(summary, latency, requests)
  local secs = summary.duration / 1e6
  local e = summary.errors
  io.write(string.format(
    '{"bench":"serve_runs","impl":"wf-serve","connections":%s,"threads":%s,"seconds":%.2f,' ..
    '"requests":%d,"runs_per_s":%.0f,"non_2xx":%d,"socket_errors":%d,"p50_us":%d,"p99_us":%d,"round":%s}\n',
    os.getenv("WRK_CONNECTIONS") or "0", os.getenv("WF_THREADS") or "0", secs, summary.requests,
    summary.requests / secs, e.status, e.connect + e.read + e.write + e.timeout,
    latency:percentile(50), latency:percentile(99), os.getenv("ROUND") or "0"))
end
