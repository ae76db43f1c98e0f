"""Print a pip constraints file that pins every dependency of simcim (dev extra included) to the
lower bound pyproject.toml states, so CI can check that the oldest versions we claim still pass."""

import re
import sys
from pathlib import Path

import tomllib

project = tomllib.loads((Path(__file__).resolve().parents[1] / "pyproject.toml").read_text())["project"]
requirements = project["dependencies"] + project["optional-dependencies"]["dev"]
pins = {}
for req in requirements:
    spec, _, marker = req.partition(";")
    if marker.strip() and "python_version < '3.11'" in marker and sys.version_info >= (3, 11):
        continue
    m = re.fullmatch(r"\s*([A-Za-z0-9_.-]+)(\[[^\]]*\])?\s*>=\s*([0-9][^,\s]*)\s*", spec)
    if m is None:
        sys.exit(f"lower_bounds: {req!r} states no lower bound (write it as NAME>=VERSION)")
    pins[m.group(1).lower()] = m.group(3)
print("\n".join(f"{name}=={version}" for name, version in sorted(pins.items())))
