"""Import transformers' common test mixins from the source distribution that `scripts/fetch_transformers_tests.py`
extracted at setup time (`.cache/transformers-tests/<installed version>/tests/`, or `$SCL_TRANSFORMERS_TESTS_DIR`).

The sdist's `tests/` folder is loaded as the package `transformers_common_tests`. Its relative imports of modules that
the sdist does not ship (`exporters/test_export.py`, `generation/test_utils.py`, `utils/test_configuration_utils.py`,
and `utils/fetch_hub_objects_for_ci.py` outside `tests/`) resolve to our own stand-ins in `standins.py`.

If the folder is missing, `ModelTesterMixin`, `ConfigTester` and `ProcessorTesterMixin` are replaced by classes whose
every use fails with the command to run: the conformance tests then fail (not skip), since CI runs the setup first.
"""

import importlib
import os
import sys
import types
from pathlib import Path

import transformers

from . import standins

PACKAGE = "transformers_common_tests"
REPO_ROOT = Path(__file__).resolve().parents[2]
FETCH_COMMAND = "python scripts/fetch_transformers_tests.py"


def common_tests_dir(version: str = transformers.__version__) -> Path:
    root = Path(os.environ.get("SCL_TRANSFORMERS_TESTS_DIR", REPO_ROOT / ".cache" / "transformers-tests"))
    return root / version / "tests"


def _register(name: str, module: types.ModuleType | None = None, path: list[str] | None = None):
    if module is None:
        module = types.ModuleType(name)
        module.__path__ = path or []
    sys.modules[name] = module
    parent, _, child = name.rpartition(".")
    if parent:
        setattr(sys.modules[parent], child, module)


def _load(tests_dir: Path) -> dict:
    if PACKAGE not in sys.modules:
        _register(PACKAGE, path=[str(tests_dir)])
        for subpackage, module in (
            ("exporters", "test_export"),
            ("generation", "test_utils"),
            ("utils", "test_configuration_utils"),
        ):
            _register(f"{PACKAGE}.{subpackage}", path=[])
            _register(f"{PACKAGE}.{subpackage}.{module}", standins)
        _register("fetch_hub_objects_for_ci", standins)
    modeling = importlib.import_module(f"{PACKAGE}.test_modeling_common")
    configuration = importlib.import_module(f"{PACKAGE}.test_configuration_common")
    processing = importlib.import_module(f"{PACKAGE}.test_processing_common")
    return {
        "SDPA_CASES": modeling.TEST_EAGER_MATCHES_SDPA_INFERENCE_PARAMETERIZATION,
        "ModelTesterMixin": modeling.ModelTesterMixin,
        "ConfigTester": configuration.ConfigTester,
        "ProcessorTesterMixin": processing.ProcessorTesterMixin,
    }


MISSING_MESSAGE = (
    f"transformers' common tests for the installed version {transformers.__version__} are not at "
    f"{common_tests_dir()}. Run `{FETCH_COMMAND}` (scripts/setup_env.sh does) with the interpreter under test, or "
    "point SCL_TRANSFORMERS_TESTS_DIR at the folder that holds <version>/tests/."
)


def _missing(message: str):
    class MissingTesterMixin:
        """Stands for a mixin that could not be imported: the test class fails with the reason."""

        def test_transformers_common_tests_are_importable(self):
            raise AssertionError(message)

    class MissingConfigTester:
        def __init__(self, parent, **kwargs):
            pass

        def run_common_tests(self, *args, **kwargs):
            raise AssertionError(message)

    return {
        "ModelTesterMixin": MissingTesterMixin,
        "ConfigTester": MissingConfigTester,
        "ProcessorTesterMixin": MissingTesterMixin,
        "SDPA_CASES": [("unavailable", None, None, None, None, None)],
    }


if not (common_tests_dir() / "test_modeling_common.py").is_file():
    _mixins = _missing(MISSING_MESSAGE)
else:
    try:
        _mixins = _load(common_tests_dir())
    except ImportError as error:  # e.g. `parameterized`, which the common tests need (the `dev` extra)
        _mixins = _missing(f"transformers' common tests in {common_tests_dir()} do not import: {error!r}")
ModelTesterMixin = _mixins["ModelTesterMixin"]
ConfigTester = _mixins["ConfigTester"]
ProcessorTesterMixin = _mixins["ProcessorTesterMixin"]
SDPA_CASES = _mixins["SDPA_CASES"]  # the parameterisation of test_eager_matches_sdpa_inference, to skip it by name

__all__ = ["ConfigTester", "MISSING_MESSAGE", "ModelTesterMixin", "ProcessorTesterMixin", "SDPA_CASES"]
