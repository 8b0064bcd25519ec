"""Our own minimal stand-ins for the modules that transformers' common tests import but its sdist does not ship.

`conformance_support` registers this one module under each missing name:

- `tests/exporters/test_export.py` -> `ExportTesterMixin`, the base class of `ModelTesterMixin`. The real mixin drives
  transformers' exporter framework (dynamo, ONNX, ExecuTorch...); here it adds no test. SCL's export is checked by
  `modeling_tests/test_export.py` (`torch.export` of the base model and the VQA head against eager).
- `tests/generation/test_utils.py` -> `GenerationTesterMixin`, only used by `ModelTesterMixin` to check that a tester
  of a model that cannot generate does not inherit it. SCL does not generate, so nothing inherits it.
- `tests/utils/test_configuration_utils.py` -> `config_common_kwargs`: common `PreTrainedConfig` arguments, each set
  to a non-default value, that `ConfigTester.check_config_arguments_init` passes to a config and reads back.
- `utils/fetch_hub_objects_for_ci.py` -> `url_to_local_path`: transformers' CI maps fixture URLs to copies it
  downloaded beforehand. The suite is offline and keeps no copies, so the URL is returned as it is; only the chat
  template tests read these fixtures, and they do not apply to SCL's processor (it has no chat template).
"""


class ExportTesterMixin:
    """Stand-in for transformers' `ExportTesterMixin`: no tests (see the module docstring)."""


class GenerationTesterMixin:
    """Stand-in for transformers' `GenerationTesterMixin`: no tests (see the module docstring)."""


# Written for this suite: every value differs from `PreTrainedConfig`'s default. The common test demands float16.
config_common_kwargs = {
    "return_dict": False,
    "output_hidden_states": True,
    "output_attentions": True,
    "dtype": "float16",
    "chunk_size_feed_forward": 3,
    "architectures": ["SCLModel"],
    "id2label": {0: "no", 1: "yes", 2: "maybe"},
    "label2id": {"no": 0, "yes": 1, "maybe": 2},
    "problem_type": "multi_label_classification",
}


def url_to_local_path(url: str) -> str:
    """Stand-in for transformers' CI helper: no local copies exist offline, so the URL itself is returned."""
    return url
