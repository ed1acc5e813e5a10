#!/usr/bin/env python3
"""A small external component following the "imageflow.step/1" contract (see
executions/engine/runners/container.py): JSON request on stdin, JSON answer on stdout, logs on stderr.

Parameters: "operation" ("invert" or "none"), "sleep_seconds" (pause first), "fail_unless_exists"
(a path: fail with status 1 while it is missing), "tempfail_marker" (a path: report a transient
failure with status 75 the first time, creating the marker), "done_marker" (a path written when
the work is finished), "allocate_mb" (hold that many MiB of memory while it works), "data" (JSON
given back as the answer's data), "metrics" (more metrics given back), "report_env" (a list of
environment variable names whose values are given back in data.env).
"""

import io
import json
import os
import sys
import time
import urllib.request

from PIL import Image, ImageOps


def main() -> int:
    request = json.load(sys.stdin)
    params = request.get("parameters", {})
    print(f"step {request['node_id']} attempt {request['attempt']}: {len(request['inputs'])} inputs", file=sys.stderr)
    marker = params.get("tempfail_marker")
    if marker and not os.path.exists(marker):
        open(marker, "w").close()
        print("ERROR: object store briefly unavailable", file=sys.stderr)
        return 75
    needed = params.get("fail_unless_exists")
    if needed and not os.path.exists(needed):
        print(f"ERROR: required resource {needed} is missing", file=sys.stderr)
        return 1
    held = b"\x01" * (int(params.get("allocate_mb", 0)) * 1024 * 1024)  # written: resident, not only mapped
    time.sleep(float(params.get("sleep_seconds", 0)))
    outputs = []
    for index, item in enumerate(request["inputs"]):
        with urllib.request.urlopen(item["url"], timeout=30) as response:
            image = Image.open(io.BytesIO(response.read()))
            image.load()
        if params.get("operation", "invert") == "invert":
            image = ImageOps.invert(image.convert("RGB"))
        path = os.path.join(request["output_dir"], f"out-{index}.png")
        image.save(path, format="PNG")
        outputs.append({"path": f"out-{index}.png", "name": f"inverted-{index}.png"})
        print(f"WARNING: wrote {path} ({image.width}x{image.height})", file=sys.stderr)
    if params.get("done_marker"):
        open(params["done_marker"], "w").close()
    answer = {"outputs": outputs, "metrics": {"images": len(outputs), **params.get("metrics", {})}}
    if held:
        answer["metrics"]["held_mb"] = len(held) // 2 ** 20
    if "data" in params:
        answer["data"] = params["data"]
    if "report_env" in params:
        answer["data"] = {"env": {name: os.environ.get(name) for name in params["report_env"]}}
    json.dump(answer, sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
