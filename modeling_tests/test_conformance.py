"""transformers' own common tests, run on tiny SCL models: `ModelTesterMixin` for every model class, `ConfigTester`
for both configs and `ProcessorTesterMixin` for `SCLProcessor` (issue 14).

The mixins come from the source distribution of the installed transformers release, fetched at setup time by
`scripts/fetch_transformers_tests.py` (see `conformance_support`). The layout follows transformers' tests of CLIP,
ViLT and BridgeTower: one model tester per input format, one test class per model class, and a common test skipped
only where it cannot apply to SCL, with the reason in the skip message.
"""

import tempfile
import unittest

import torch
from conformance_support import SDPA_CASES, ConfigTester, ModelTesterMixin, ProcessorTesterMixin
from conftest import build_tokenizer, tiny_config
from parameterized import parameterized

from transformers_scl import (
    SCLConfig,
    SCLForImagesAndTextClassification,
    SCLForImageTextRetrieval,
    SCLForPreTraining,
    SCLForQuestionAnswering,
    SCLForZeroShotImageClassification,
    SCLImageProcessor,
    SCLModel,
    SCLProcessor,
    SCLVideoProcessor,
    SCLVisionConfig,
    SCLVisionModel,
)

# The tiny SCL of conftest.tiny_config: 2-layer towers and 2 fusion layers, all 32 wide with 4 heads, 32px images in
# 8px patches (16 patches + a frame CLS per frame), a 400-token vocabulary with RoBERTa's specials (<s>=0, <pad>=1).
HIDDEN, LAYERS, HEADS, IMAGE, PATCH, VOCAB = 32, 2, 4, 32, 8, 400
IMAGE_TOKENS = 1 + (IMAGE // PATCH) ** 2


def _generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


class SCLVisionModelTester:
    """Images `(B, 3, 32, 32)` or, with `num_frames`, videos `(B, F, 3, 32, 32)` for the vision tower."""

    def __init__(self, parent, batch_size=2, num_frames=None):
        self.parent = parent
        self.batch_size = batch_size
        self.num_frames = num_frames
        self.is_training = True
        self.num_channels = 3
        self.image_size = IMAGE
        self.patch_size = PATCH
        self.hidden_size = HIDDEN
        self.num_hidden_layers = LAYERS
        self.num_attention_heads = HEADS
        # Tokens per frame (the attention is frame-local); a video's sequence is `num_frames` times longer.
        self.seq_length = IMAGE_TOKENS * (num_frames or 1)
        self.encoder_seq_length = self.seq_length
        self.key_length = IMAGE_TOKENS

    def get_config(self) -> SCLVisionConfig:
        return tiny_config().vision_config

    def pixels(self, seed=0) -> dict:
        frames = () if self.num_frames is None else (self.num_frames,)
        pixels = torch.randn(self.batch_size, *frames, 3, IMAGE, IMAGE, generator=_generator(seed))
        return {"pixel_values" if self.num_frames is None else "pixel_values_videos": pixels}

    def prepare_config_and_inputs_for_common(self):
        return self.get_config(), self.pixels()


class SCLTextModelTester:
    """Token ids with real padding in the second row, for the text side of the two-tower models."""

    def __init__(self, parent, batch_size=2, seq_length=7):
        self.parent = parent
        self.batch_size = batch_size
        self.seq_length = seq_length
        self.vocab_size = VOCAB
        self.hidden_size = HIDDEN
        self.num_hidden_layers = LAYERS
        self.num_attention_heads = HEADS

    def get_config(self):
        return tiny_config().text_config

    def text(self, seed=1) -> dict:
        input_ids = torch.randint(5, VOCAB, (self.batch_size, self.seq_length), generator=_generator(seed))
        input_ids[:, 0] = 0  # <s>
        attention_mask = torch.ones_like(input_ids)
        input_ids[-1, -2:], attention_mask[-1, -2:] = 1, 0  # <pad>
        return {"input_ids": input_ids, "attention_mask": attention_mask}

    def prepare_config_and_inputs_for_common(self):
        return self.get_config(), self.text()


class SCLModelTester:
    """Text + image inputs of the two-tower models; `images_per_sample=2` gives NLVR2's image pairs."""

    def __init__(self, parent, batch_size=2, seq_length=7, images_per_sample=None, config_overrides=None):
        self.parent = parent
        self.batch_size = batch_size
        self.seq_length = seq_length
        self.images_per_sample = images_per_sample
        self.config_overrides = config_overrides or {}
        self.is_training = True
        self.vocab_size = VOCAB
        self.hidden_size = HIDDEN
        self.num_attention_heads = HEADS
        self.image_size = IMAGE
        self.patch_size = PATCH
        self.num_channels = 3
        self.text_model_tester = SCLTextModelTester(parent, batch_size, seq_length)
        self.vision_model_tester = SCLVisionModelTester(parent, batch_size)
        self.video_model_tester = SCLVisionModelTester(parent, batch_size, num_frames=2)
        # NLVR2 fuses the text with each of its two images and returns both fusions' states, left then right.
        fusions = images_per_sample or 1
        fusion_layers = self.get_config().num_fusion_layers
        # `attentions` holds the text stream's self-attention, one per fusion layer (the other three attentions of a
        # layer have fields of their own); the mixin caps this count at 2, so NLVR2's tester has one fusion layer.
        self.num_hidden_layers = fusions * fusion_layers
        # The fusion's `hidden_states`: the text stream's input and each text layer's output, then the same for the
        # image stream (the towers' own states are in `text_model_output` / `vision_model_output`).
        self.expected_num_hidden_layers = fusions * 2 * (fusion_layers + 1)
        self.encoder_seq_length = self.key_length = seq_length  # the first attention is the text stream's

    @property
    def text_config(self):
        return self.get_config().text_config

    @property
    def vision_config(self):
        return self.get_config().vision_config

    def get_config(self) -> SCLConfig:
        return tiny_config(**self.config_overrides)

    def prepare_config_and_inputs_for_common(self):
        inputs = self.text_model_tester.text()
        pixels = self.vision_model_tester.pixels()["pixel_values"]
        if self.images_per_sample:
            pixels = torch.randn(self.batch_size, self.images_per_sample, 3, IMAGE, IMAGE, generator=_generator(2))
        inputs["pixel_values"] = pixels
        return self.get_config(), inputs


class SCLPreTrainingModelTester(SCLModelTester):
    """Adds the pre-training inputs, every random choice fixed so that a forward is a function of its inputs: ITM
    pairs each text with its own image (so one row is a valid batch too), and patch dropping keeps fixed patches.
    The masked captions are derived from `input_ids` in `_prepare_for_class`, so they follow the common tests' edits
    of `input_ids` (e.g. new token ids after `resize_token_embeddings`)."""

    masked_positions = (2, 5)

    def prepare_config_and_inputs_for_common(self):
        config, inputs = super().prepare_config_and_inputs_for_common()
        batch = self.batch_size
        inputs["itm_labels"] = torch.ones(batch, dtype=torch.long)
        inputs["itm_negative_indices"] = torch.zeros(batch, dtype=torch.long)
        inputs["patch_keep_indices"] = torch.arange(3).repeat(batch, 1)
        return config, inputs

    def add_masked_captions(self, inputs: dict) -> dict:
        input_ids = inputs["input_ids"]
        masked = torch.zeros_like(input_ids, dtype=torch.bool)
        masked[:, list(self.masked_positions)] = True
        inputs["mlm_input_ids"] = input_ids.masked_fill(masked, 4)  # <mask>
        inputs["mlm_labels"] = input_ids.masked_fill(~masked, -100)
        inputs["mlsc_input_ids"] = input_ids.masked_fill(masked, 4)
        return inputs


NO_LOSS = (
    "{} is a base model without a loss. The mixin exempts base models from its training tests by their names in "
    "transformers' own MODEL_MAPPING, which a model registered from outside the library is not part of"
)


class SCLModelTestBase(ModelTesterMixin):
    """Settings shared by the two-tower test classes (transformers' CLIPModelTest / ViltModelTest)."""

    _is_composite = True
    # The common eager-vs-sdpa test feeds the main input (`input_ids`) and these; SCL needs its image too.
    additional_model_inputs = ["pixel_values"]

    def setUp(self):
        self.model_tester = SCLModelTester(self)

    def test_reverse_loading_mapping(self):
        # SCL's checkpoint conversion upgrades tensors (a 0-d temperature, a smaller token-type table) under their
        # own names, so saving maps no key: the check of renamed keys does not apply, the round trip does.
        super().test_reverse_loading_mapping(check_keys_were_modified=False)


class SCLVisionModelTest(ModelTesterMixin, unittest.TestCase):
    all_model_classes = (SCLVisionModel,)
    test_resize_embeddings = False  # no token embeddings to resize: pixels enter through a Conv2d (as CLIP's tower)

    def setUp(self):
        self.model_tester = SCLVisionModelTester(self)
        self.config_tester = ConfigTester(
            self, config_class=SCLVisionConfig, has_text_modality=False, hidden_size=36, num_attention_heads=4
        )

    def test_config(self):
        self.config_tester.run_common_tests()

    def test_video_forward(self):
        # The tower's own contract beside the common tests: a video is F frames of frame-local tokens.
        model = SCLVisionModel(self.model_tester.get_config()).eval()
        video = SCLVisionModelTester(self, num_frames=3).pixels()
        with torch.no_grad():
            output = model(**video, output_hidden_states=True)
        self.assertEqual(output.last_hidden_state.shape, (2, 3 * IMAGE_TOKENS, HIDDEN))
        self.assertEqual(len(output.hidden_states), LAYERS + 1)

    @unittest.skip(reason=NO_LOSS.format("SCLVisionModel"))
    def test_training(self):
        pass

    @unittest.skip(reason=NO_LOSS.format("SCLVisionModel"))
    def test_training_gradient_checkpointing(self):
        pass

    @unittest.skip(reason=NO_LOSS.format("SCLVisionModel"))
    def test_training_gradient_checkpointing_use_reentrant_false(self):
        pass

    @unittest.skip(reason=NO_LOSS.format("SCLVisionModel"))
    def test_training_gradient_checkpointing_use_reentrant_true(self):
        pass

    @unittest.skip(reason="The vision tower's input embedding is a Conv2d patch embedding, not a token embedding")
    def test_model_get_set_embeddings(self):
        pass


class SCLModelTest(SCLModelTestBase, unittest.TestCase):
    all_model_classes = (SCLModel,)

    def setUp(self):
        super().setUp()
        self.config_tester = ConfigTester(
            self, config_class=SCLConfig, has_text_modality=False, hidden_size=36, num_attention_heads=4
        )

    def test_config(self):
        self.config_tester.run_common_tests()

    def test_model(self):
        config, inputs = self.model_tester.prepare_config_and_inputs_for_common()
        model = SCLModel(config).eval()
        with torch.no_grad():
            output = model(**inputs)
        self.assertEqual(output.text_features.shape, (2, 7, HIDDEN))
        self.assertEqual(output.image_features.shape, (2, IMAGE_TOKENS, HIDDEN))
        self.assertEqual(output.pooler_output.shape, (2, 2 * HIDDEN))

    @unittest.skip(reason=NO_LOSS.format("SCLModel"))
    def test_training(self):
        pass

    @unittest.skip(reason=NO_LOSS.format("SCLModel"))
    def test_training_gradient_checkpointing(self):
        pass

    @unittest.skip(reason=NO_LOSS.format("SCLModel"))
    def test_training_gradient_checkpointing_use_reentrant_false(self):
        pass

    @unittest.skip(reason=NO_LOSS.format("SCLModel"))
    def test_training_gradient_checkpointing_use_reentrant_true(self):
        pass


NO_STATES = "This head returns scores and losses, no per-layer hidden states or attentions (checked on SCLModel)"


class NoLayerStatesMixin:
    """For heads whose output holds scores and losses but no per-layer states (as CLIPModel's, whose test skips the
    same checks): the states of their towers and fusion are checked on SCLModel, VQA and NLVR2, which run the same
    modules."""

    @unittest.skip(reason=NO_STATES)
    def test_hidden_states_output(self):
        pass

    @unittest.skip(reason=NO_STATES)
    def test_attention_outputs(self):
        pass

    @unittest.skip(reason=NO_STATES)
    def test_retain_grad_hidden_states_attentions(self):
        pass


class SCLForPreTrainingTest(NoLayerStatesMixin, SCLModelTestBase, unittest.TestCase):
    all_model_classes = (SCLForPreTraining,)

    def setUp(self):
        self.model_tester = SCLPreTrainingModelTester(self)

    def _prepare_for_class(self, inputs_dict, model_class, return_labels=False):
        inputs_dict = super()._prepare_for_class(inputs_dict, model_class, return_labels)
        return self.model_tester.add_masked_captions(inputs_dict)

    @parameterized.expand(SDPA_CASES)
    @unittest.skip(
        reason="The common test compares `hidden_states[-1]` (or classification/contrastive logits), which the "
        "pre-training output does not have, and fills the batch with random ITM labels; SCLModelTest runs it on the "
        "same attention modules"
    )
    def test_eager_matches_sdpa_inference(self, *args):
        pass


class SCLForQuestionAnsweringTest(SCLModelTestBase, unittest.TestCase):
    all_model_classes = (SCLForQuestionAnswering,)

    def setUp(self):
        answers = {index: f"answer {index}" for index in range(5)}
        self.model_tester = SCLModelTester(self, config_overrides={"id2label": answers})

    def _prepare_for_class(self, inputs_dict, model_class, return_labels=False):
        # As ViltModelTest: VQA labels are soft scores over the answers (the mixin knows no VQA mapping).
        inputs_dict = super()._prepare_for_class(inputs_dict, model_class, return_labels)
        if return_labels:
            scores = torch.zeros(self.model_tester.batch_size, 5)
            scores[:, 1], scores[0, 3] = 1.0, 0.3
            inputs_dict["labels"] = scores
        return inputs_dict


class SCLForImagesAndTextClassificationTest(SCLModelTestBase, unittest.TestCase):
    all_model_classes = (SCLForImagesAndTextClassification,)

    def setUp(self):
        self.model_tester = SCLModelTester(self, images_per_sample=2, config_overrides={"num_fusion_layers": 1})

    def _prepare_for_class(self, inputs_dict, model_class, return_labels=False):
        inputs_dict = super()._prepare_for_class(inputs_dict, model_class, return_labels)
        if return_labels:
            inputs_dict["labels"] = torch.tensor([1, 0][: self.model_tester.batch_size])
        return inputs_dict


class SCLForImageTextRetrievalTest(NoLayerStatesMixin, SCLModelTestBase, unittest.TestCase):
    all_model_classes = (SCLForImageTextRetrieval,)

    def _prepare_for_class(self, inputs_dict, model_class, return_labels=False):
        # Training ranks each image against its own text and the other text of the batch.
        inputs_dict = super()._prepare_for_class(inputs_dict, model_class, return_labels)
        if return_labels:
            batch = self.model_tester.batch_size
            inputs_dict["return_loss"] = True
            inputs_dict["negative_text_indices"] = ((torch.arange(batch) + 1) % batch)[:, None]
        return inputs_dict


class SCLForZeroShotImageClassificationTest(NoLayerStatesMixin, SCLModelTestBase, unittest.TestCase):
    all_model_classes = (SCLForZeroShotImageClassification,)

    def _prepare_for_class(self, inputs_dict, model_class, return_labels=False):
        # As CLIPModelTest: the contrastive loss is asked for with `return_loss`.
        inputs_dict = super()._prepare_for_class(inputs_dict, model_class, return_labels)
        if return_labels:
            inputs_dict["return_loss"] = True
        return inputs_dict


class SCLProcessorTest(ProcessorTesterMixin, unittest.TestCase):
    processor_class = SCLProcessor

    @unittest.skip(
        reason="SCL fuses every text with its own image or video, so the processor rejects a sample without one by "
        "name; the test (transformers#40263) is for generative VLMs, where a text-only sample is valid"
    )
    def test_processor_text_has_no_visual(self):
        pass

    @classmethod
    def _setup_image_processor(cls):
        return SCLImageProcessor(size=IMAGE)

    @classmethod
    def _setup_video_processor(cls):
        return SCLVideoProcessor(size=IMAGE)

    @classmethod
    def _setup_tokenizer(cls):
        cls._tokenizer_dir = tempfile.mkdtemp()
        return build_tokenizer(cls._tokenizer_dir)
