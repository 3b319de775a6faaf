#!/usr/bin/env bash
# The Elastic Beanstalk source bundle: the zip that `eb deploy` (with
# `deploy: artifact:` in .elasticbeanstalk/config.yml) and the console's "Upload and
# deploy" accept. Holds application.py, s3maptiler/ (with the preview map's built
# library), requirements.txt, Procfile, gunicorn.conf.py, .ebextensions/ and .platform/
# at the top level; no tests, caches or virtual environments.
#
# Files: what git tracks plus new files git does not ignore (like `eb deploy` with an
# .ebignore, uncommitted work is included), less everything .ebignore matches, plus
# s3maptiler/static/vendor/ (git-ignored, built by scripts/build-viewer.sh).
#
#   bash scripts/build-bundle.sh [OUTPUT.zip]     (default var/bundle/s3maptiler.zip)
set -euo pipefail
cd "$(dirname "$0")/.."

out="${1:-var/bundle/s3maptiler.zip}"
bash scripts/build-viewer.sh
if ! git rev-parse --is-inside-work-tree >/dev/null 2>&1; then
  echo "build-bundle: run it in a git checkout (the file list comes from git)" >&2
  exit 1
fi

python3 - "$out" <<'PY'
import os
import subprocess
import sys
import zipfile
from pathlib import Path

out = Path(sys.argv[1])
VENDOR = Path("s3maptiler/static/vendor")
REQUIRED = [
    "application.py",
    "requirements.txt",
    "Procfile",
    "gunicorn.conf.py",
    "s3maptiler/__init__.py",
    "s3maptiler/http/preview.py",
    "s3maptiler/static/vendor/ol/ol.js",
    ".ebextensions/",
    ".platform/",
]


def git_files(*args: str) -> set[str]:
    listed = subprocess.run(["git", "ls-files", "-z", *args], check=True, capture_output=True)
    return {name for name in listed.stdout.decode().split("\0") if name}


candidates = git_files("--cached", "--others", "--exclude-standard")
ignored = git_files("--cached", "--ignored", "--exclude-from=.ebignore") | git_files(
    "--others", "--ignored", "--exclude-from=.ebignore"
)
names = {name for name in candidates - ignored if Path(name).is_file()}
names |= {str(path) for path in VENDOR.rglob("*") if path.is_file()}

missing = [r for r in REQUIRED if not any(n == r or n.startswith(r) for n in names if r)]
if missing:
    sys.exit(f"build-bundle: missing from the bundle: {', '.join(missing)}")

out.parent.mkdir(parents=True, exist_ok=True)
partial = out.with_name(out.name + ".partial")
with zipfile.ZipFile(partial, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as bundle:
    for name in sorted(names):
        bundle.write(name, name)  # keeps the mode bits, so hooks stay executable
os.replace(partial, out)
size = out.stat().st_size
print(f"build-bundle: {out} ({len(names)} files, {size / 1e6:.1f} MB)")
PY
