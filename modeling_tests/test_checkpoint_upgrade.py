"""`conversion.upgrade`: older checkpoints' parameter shapes (0-d `itc_temperature`, a 2-row token-type table under
the NLVR2 head) are upgraded as one named step, by hand or while `from_pretrained` reads the file."""

import torch
from conftest import tiny_config
from safetensors.torch import load_file, save_file

from transformers_scl import SCLForImagesAndTextClassification, SCLForPreTraining
from transformers_scl.conversion.upgrade import upgrade_state_dict


def test_upgrade_state_dict_reshapes_the_temperature_and_grows_only_scls_token_type_table():
    table, text_table = torch.randn(2, 4), torch.randn(1, 4)
    state = {
        "itc_temperature": torch.tensor(0.05),
        "scl.token_type_embeddings.weight": table,
        "scl.text_model.embeddings.token_type_embeddings.weight": text_table,
        "other": torch.ones(3),
    }
    upgraded = upgrade_state_dict(state, num_token_types=3)
    torch.testing.assert_close(upgraded["itc_temperature"], torch.tensor([0.05]))
    grown = upgraded["scl.token_type_embeddings.weight"]
    assert grown.shape == (3, 4)
    torch.testing.assert_close(grown[:2], table)
    torch.testing.assert_close(grown[2], table[1])  # spec §1.1: the new row copies the last one
    assert upgraded["scl.text_model.embeddings.token_type_embeddings.weight"] is text_table
    assert upgraded["other"] is state["other"]
    assert state["itc_temperature"].dim() == 0  # the input is left as it was


def test_from_pretrained_loads_a_checkpoint_with_a_scalar_temperature(tmp_path):
    torch.manual_seed(0)
    model = SCLForPreTraining(tiny_config())
    with torch.no_grad():
        model.itc_temperature.fill_(0.042)
    model.save_pretrained(tmp_path)
    weights = load_file(tmp_path / "model.safetensors")
    weights["itc_temperature"] = weights["itc_temperature"].reshape(())  # the reference's (and pre-0.1) layout
    save_file(weights, tmp_path / "model.safetensors", metadata={"format": "pt"})

    for cls in (SCLForPreTraining, SCLForImagesAndTextClassification):
        reloaded, info = cls.from_pretrained(tmp_path, output_loading_info=True)
        assert not info["mismatched_keys"]
        assert all(key.startswith("nlvr2_classifier.") for key in info["missing_keys"])  # only the new head
    assert reloaded.scl.token_type_embeddings.weight.shape == (3, 32)
    reloaded = SCLForPreTraining.from_pretrained(tmp_path)
    assert reloaded.itc_temperature.shape == (1,)
    torch.testing.assert_close(reloaded.itc_temperature, torch.tensor([0.042]))
