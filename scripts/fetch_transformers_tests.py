"""Fetch transformers' common test modules for `modeling_tests/test_conformance.py` (run at setup time).

Downloads the source distribution of the *installed* transformers version from PyPI with pip and extracts its
`tests/` folder (`test_modeling_common.py`, `test_configuration_common.py`, `test_processing_common.py` and the
modules they import) to `.cache/transformers-tests/<version>/tests/`. Nothing is copied into the repository: the
cache folder is git-ignored. Run it with the interpreter of the environment under test, e.g.

    .venv/bin/python scripts/fetch_transformers_tests.py

`--version` fetches another release (to check that its sdist carries the tests); `SCL_TRANSFORMERS_TESTS_DIR`
overrides the cache root, as it does for the test module.
"""

import argparse
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
# The modules that test_conformance.py imports; the extraction fails loudly if a release stops shipping one.
REQUIRED = ("test_modeling_common.py", "test_configuration_common.py", "test_processing_common.py")


def cache_root() -> Path:
    return Path(os.environ.get("SCL_TRANSFORMERS_TESTS_DIR", REPO_ROOT / ".cache" / "transformers-tests"))


def installed_version() -> str:
    from importlib.metadata import version

    return version("transformers")


def fetch(version: str, force: bool = False) -> Path:
    """Extract the sdist's `tests/` of `version` under the cache root and return that `tests` folder."""
    target = cache_root() / version
    tests_dir = target / "tests"
    if not force and all((tests_dir / name).is_file() for name in (*REQUIRED, "__init__.py")):
        print(f"transformers {version} common tests already in {tests_dir}")
        return tests_dir
    with tempfile.TemporaryDirectory() as download_dir:
        # --no-binary :all: makes pip take the sdist (the wheel has no tests); --no-deps keeps it to that one file.
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--no-binary", ":all:"]
            + ["--dest", download_dir, f"transformers=={version}"],
            check=True,
        )
        archives = list(Path(download_dir).glob("transformers-*.tar.gz"))
        if len(archives) != 1:
            raise SystemExit(f"Expected one transformers sdist in {download_dir}, found {archives}.")
        prefix = f"transformers-{version}/tests/"
        staging = Path(download_dir) / "extracted"
        with tarfile.open(archives[0]) as archive:
            members = [m for m in archive.getmembers() if m.name.startswith(prefix) and m.isfile()]
            archive.extractall(staging, members=members, filter="data")
        missing = [name for name in REQUIRED if not (staging / prefix / name).is_file()]
        if missing:
            raise SystemExit(f"The sdist of transformers {version} lacks {missing} under tests/.")
        if tests_dir.exists():
            shutil.rmtree(tests_dir)
        target.mkdir(parents=True, exist_ok=True)
        shutil.move(staging / prefix, tests_dir)
    # The repository's tests/ is a package (an empty __init__.py, which the sdist leaves out): the common modules
    # import each other relatively, and test_configuration_common.py execs tests/__init__.py.
    (tests_dir / "__init__.py").touch()
    print(f"transformers {version} common tests extracted to {tests_dir} ({len(members)} files)")
    return tests_dir


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--version", help="transformers release to fetch (default: the installed one)")
    parser.add_argument("--force", action="store_true", help="download again even if the cache is complete")
    args = parser.parse_args()
    fetch(args.version or installed_version(), force=args.force)


if __name__ == "__main__":
    main()
