#!/usr/bin/env bash
# Create a virtual environment (default ./.venv, kept if it exists) and install transformers-scl with its test
# dependencies into it.
#
#   bash scripts/setup_env.sh                   # the tested set: the exact versions in constraints.txt (what CI last tested)
#   SCL_DEPS=newest bash scripts/setup_env.sh   # the newest versions that pyproject.toml's ranges resolve
#   SCL_DEPS=oldest bash scripts/setup_env.sh   # the oldest supported transformers and accelerate (the ranges' floors)
#   SCL_VENV=.venv-newest ...                   # install into another folder
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
VENV=${SCL_VENV:-.venv}
DEPS=${SCL_DEPS:-tested}

if [ ! -x "$VENV/bin/python" ]; then
    "$PYTHON" -m venv "$VENV"
fi
pip_install() { "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check "$@"; }
pip_install --upgrade pip

case "$DEPS" in
    tested)
        # Constraints, not requirements: they pin whatever pyproject.toml asks for to the tested version.
        pip_install --constraint constraints.txt -e ".[dev]"
        ;;
    newest)
        pip_install --upgrade --upgrade-strategy eager -e ".[dev]"
        ;;
    oldest)
        # `transformers>=5.23` → `transformers==5.23.*`, `accelerate>=A.B` → `accelerate==A.B.*`; torch and torchvision
        # stay at the tested pair (an older torch is a multi-gigabyte download); everything else resolves freely.
        floors=$("$VENV/bin/python" - <<'PY'
import re, tomllib
for dependency in tomllib.load(open("pyproject.toml", "rb"))["project"]["dependencies"]:
    match = re.fullmatch(r"(transformers|accelerate)>=([0-9.]+)(,.*)?", dependency.replace(" ", ""))
    if match:
        print(f"{match[1]}=={match[2]}.*")
PY
)
        torch_pair=$(grep -E '^(torch|torchvision)==' constraints.txt)
        # shellcheck disable=SC2086  # one requirement per word
        pip_install -e ".[dev]" $floors $torch_pair
        ;;
    *)
        echo "SCL_DEPS must be tested, newest or oldest, not '$DEPS'" >&2
        exit 2
        ;;
esac

# transformers' own common tests (ModelTesterMixin, ConfigTester, ProcessorTesterMixin) for the version just installed,
# extracted from its PyPI source distribution into the git-ignored .cache/ (modeling_tests/test_conformance.py).
"$VENV/bin/python" scripts/fetch_transformers_tests.py
