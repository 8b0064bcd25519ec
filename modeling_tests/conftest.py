"""Shared fixtures: tiny configs and a real byte-level BPE RoBERTa tokenizer trained on the fly."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest  # noqa: E402
import torch  # noqa: E402
from tokenizers import ByteLevelBPETokenizer  # noqa: E402
from transformers import RobertaTokenizer  # noqa: E402

from transformers_scl import SCLConfig  # noqa: E402

# Tiny models gain nothing from intra-op threads, and on a busy 2-core machine spinning threads slow them ~30x.
torch.set_num_threads(1)

CORPUS = [
    "a red circle to the left of a blue square",
    "a green triangle moving up",
    "two yellow squares below a purple circle",
    "the cat sits on the mat near a small dog",
    "an astronaut floats above the blue earth",
    "what color is the circle? how many shapes are there?",
    "a person walking down the street with a bag",
] * 20


def build_tokenizer(save_dir: str) -> RobertaTokenizer:
    """Train a tiny byte-level BPE with RoBERTa's special tokens and load it as a real `RobertaTokenizer`."""
    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(
        CORPUS, vocab_size=400, min_frequency=1, special_tokens=["<s>", "<pad>", "</s>", "<unk>", "<mask>"]
    )
    os.makedirs(save_dir, exist_ok=True)
    bpe.save_model(save_dir)
    tokenizer = RobertaTokenizer.from_pretrained(save_dir, model_max_length=64)
    tokenizer.save_pretrained(save_dir)  # writes tokenizer.json / tokenizer_config.json beside the BPE files
    return tokenizer


@pytest.fixture(scope="session")
def tokenizer(tmp_path_factory):
    return build_tokenizer(str(tmp_path_factory.mktemp("tokenizer")))


def tiny_config(**overrides) -> SCLConfig:
    """A <1M-parameter SCL: 2-layer towers, hidden 32, 32px images with 8px patches (16 patches per frame)."""
    kwargs = dict(
        text_config=dict(
            model_type="roberta",
            vocab_size=400,
            hidden_size=32,
            num_hidden_layers=2,
            num_attention_heads=4,
            intermediate_size=64,
            max_position_embeddings=64,
            pad_token_id=1,
            bos_token_id=0,
            eos_token_id=2,
        ),
        vision_config=dict(
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=4,
            image_size=32,
            patch_size=8,
            max_frames=8,
        ),
        hidden_size=32,
        num_fusion_layers=2,
        num_attention_heads=4,
        intermediate_size=64,
        image_size=32,
        num_frames=4,
        itc_projection_dim=16,
    )
    kwargs.update(overrides)
    return SCLConfig(**kwargs)


@pytest.fixture
def config():
    return tiny_config()
