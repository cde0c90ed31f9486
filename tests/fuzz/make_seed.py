#!/usr/bin/env python3
"""make_seed.py: writes corpus/run1.msgpack and run2.msgpack, snapshots of a
running context of the fuzz harness's workflow ("Counter", one step "count")
that use every part of the run map (docs/SNAPSHOT.md): queued and
in-progress tasks with every optional item, a pending retry, waiters,
collect and join buffers, nested list fan-out groups and the counters.
run1 lists the tasks before the groups they refer to (the decoder passes
over them and comes back), run2 in the order wf writes (one walk). Seeds
the fuzzer mutates from, so it reaches the run decoder's deeper checks.

Usage: python3 tests/fuzz/make_seed.py   (no msgpack module needed)
"""
import os
import struct


def pack(v):
    if v is None:
        return b"\xc0"
    if v is True:
        return b"\xc3"
    if v is False:
        return b"\xc2"
    if isinstance(v, int):
        if 0 <= v < 128:
            return bytes([v])
        if -32 <= v < 0:
            return struct.pack("b", v)
        if v >= 0:
            return b"\xcf" + struct.pack(">Q", v)
        return b"\xd3" + struct.pack(">q", v)
    if isinstance(v, float):
        return b"\xcb" + struct.pack(">d", v)
    if isinstance(v, str):
        b = v.encode()
        assert len(b) < 256
        return (bytes([0xA0 | len(b)]) if len(b) < 32 else b"\xd9" + bytes([len(b)])) + b
    if isinstance(v, bytes):
        return b"\xc4" + bytes([len(v)]) + v
    if isinstance(v, list):
        assert len(v) < 16
        return bytes([0x90 | len(v)]) + b"".join(pack(x) for x in v)
    if isinstance(v, dict):
        assert len(v) < 16
        return bytes([0x80 | len(v)]) + b"".join(pack(k) + pack(x) for k, x in v.items())
    raise TypeError(v)


START, STOP, HR = 0, 1, 2  # indices in the run's type table
run = {
    "steps": ["count"],
    "types": ["StartEvent", "StopEvent", "HumanResponseEvent"],
    # [step, type, fields, state, attempt, lineage, group, branch, retry, tuple]
    "tasks": [
        [0, START, {}],
        [0, START, {"a": 1}, 1],
        [0, START, {"b": [1, "x", None, -7, 2.5]}, 0, 2, 1, 0, 0,
         [5, -3, "boom"], [[HR, {"response": "y"}]]],
    ],
    "retries": [[100, [0, START, {"r": True}, 0, 2]]],
    "waiters": [
        [0, "w1", HR, {"id": 7}, 0, None, -1, None, [0, START, {}]],
        [0, "w2", HR, None, 1, [HR, {"response": "z"}], 500, None, None],
    ],
    "buffers": [
        [0, "answers", [[HR, [[HR, {"response": "a"}]]]]],
        [0, None, []],
    ],
    # newest first: group 0 is nested in branch 0 of group 1
    "groups": [
        [1, 0, 0, STOP, [START, {}], 0, b"\x00", [None]],
        [None, 0, 0, STOP, [START, {}], 0, b"\x00\x01", [None, [STOP, {"result": 3}]]],
    ],
    "counters": {"queued": 3, "in_progress": 1, "dropped": 0, "unhandled": 0},
    "timeout_ms": -1,
}
doc = {
    "magic": "wf-snapshot",
    "version": 2,
    "workflow": "Counter",
    "fingerprint": 0,
    "running": True,
    "state": {"k": 1},
    "run": run,
}
corpus = os.path.join(os.path.dirname(os.path.abspath(__file__)), "corpus")
with open(os.path.join(corpus, "run1.msgpack"), "wb") as f:
    f.write(pack(doc))
order = ["steps", "types", "groups", "buffers", "waiters", "retries", "counters", "timeout_ms",
         "tasks"]
doc["run"] = {k: run[k] for k in order}
with open(os.path.join(corpus, "run2.msgpack"), "wb") as f:
    f.write(pack(doc))
