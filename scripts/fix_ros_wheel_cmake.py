#!/usr/bin/env python3
"""Point the ROS 2 PyPI wheels' exported CMake targets at this interpreter.

The ``*_msgs`` wheels hard-code the wheel builder's Python and numpy include
directories in ``share/**/*.cmake``; ``rosidl_generate_interfaces`` then fails
with "includes non-existent path". Rewriting them once after install fixes it.
Idempotent.
"""

from __future__ import annotations

import pathlib
import re
import sys
import sysconfig

import numpy


def main() -> int:
    prefix = pathlib.Path(sys.prefix)
    py_inc = sysconfig.get_paths()["include"]
    np_inc = numpy.get_include()
    builder_py = re.compile(r"/opt/python/cp311-cp311/include/python3\.11")
    builder_np = re.compile(r"/opt/python/cp311-cp311/lib/python3\.11/site-packages/numpy/[^;\"]*include")
    changed = 0
    for path in (prefix / "share").rglob("*.cmake"):
        text = path.read_text()
        new = builder_np.sub(np_inc, builder_py.sub(py_inc, text))
        if new != text:
            path.write_text(new)
            changed += 1
    print(f"fix_ros_wheel_cmake: rewrote {changed} file(s) under {prefix / 'share'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
