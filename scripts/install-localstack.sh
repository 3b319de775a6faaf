#!/usr/bin/env bash
# LocalStack's S3, a real S3 website endpoint (routing rules, CORS) for the tests and for
# `make run-website`: localstack-core at the versions pinned in requirements-localstack.txt,
# in a virtual environment of its own, .venv-localstack/ (its boto3 pin clashes with ours).
#
# The runtime uses Python 3.12+ syntax and was tried on 3.13, so this looks for a
# Python 3.13 (then 3.12): $LOCALSTACK_PYTHON, python3.13 on PATH, pyenv's versions,
# /usr/bin and /usr/local/bin. pyenv's shim on PATH is not enough: it fails unless 3.13
# is the selected version, so each candidate is run before it is trusted.
#
# Idempotent and silent when the venv was built from the current requirements file.
# Without a usable Python it prints one line and exits 0; the tests that need LocalStack
# then skip with that reason (under CI=true they fail).
set -euo pipefail
cd "$(dirname "$0")/.."

venv=.venv-localstack
requirements=requirements-localstack.txt
stamp="$venv/.requirements.sha256"
want=$(sha256sum "$requirements" | cut -d' ' -f1)
if [ -x "$venv/bin/python" ] && [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
  exit 0
fi

usable() {  # a Python interpreter of version 3.12 or 3.13 that really runs
  [ -n "$1" ] && [ -x "$1" ] &&
    "$1" -c 'import sys, venv; sys.exit(sys.version_info[:2] not in ((3, 13), (3, 12)))' \
      >/dev/null 2>&1
}

find_python() {
  local candidates=()
  [ -n "${LOCALSTACK_PYTHON:-}" ] && candidates+=("$LOCALSTACK_PYTHON")
  for minor in 13 12; do
    command -v "python3.$minor" >/dev/null 2>&1 && candidates+=("$(command -v "python3.$minor")")
    local roots=()
    command -v pyenv >/dev/null 2>&1 && roots+=("$(pyenv root 2>/dev/null || true)")
    roots+=("${PYENV_ROOT:-}" "$HOME/.pyenv")
    for root in "${roots[@]}"; do
      [ -n "$root" ] && [ -d "$root/versions" ] || continue
      # Newest patch release first.
      while IFS= read -r dir; do
        candidates+=("$dir/bin/python3.$minor")
      done < <(find "$root/versions" -maxdepth 1 -name "3.$minor*" | sort -rV)
    done
    candidates+=("/usr/bin/python3.$minor" "/usr/local/bin/python3.$minor")
  done
  for candidate in "${candidates[@]}"; do
    if usable "$candidate"; then
      echo "$candidate"
      return 0
    fi
  done
  return 1
}

if ! python=$(find_python); then
  echo "install-localstack: no Python 3.13 or 3.12 found (set LOCALSTACK_PYTHON, or" \
       "install one, e.g. 'pyenv install 3.13'); tests of the S3 website endpoint will skip"
  exit 0
fi

echo "install-localstack: $requirements into $venv ($("$python" --version))"
rm -rf "$venv"
"$python" -m venv "$venv"
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r "$requirements"
# The import that failed with a newer cbor2: fail here, not in the first test.
"$venv/bin/python" -c "import localstack.aws.components, localstack.services.s3.website_hosting"
echo "$want" >"$stamp"
