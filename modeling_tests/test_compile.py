"""`torch.compile(fullgraph=True)` traces the model and the pre-training step without a graph break, and the compiled
model equals eager in fp32.

The tests compile with `backend="aot_eager"`: it runs dynamo's full-graph capture and AOTAutograd's forward/backward
split (where graph breaks and value-dependent control flow would fail) but no code generation, which keeps them fast
on CPU. `benchmarks/bench_compile.py` runs inductor and reports the time ratio.

The pre-training step's MLM logits are gathered at the masked tokens (`text_features[mlm_labels != -100]`), a shape
that depends on values: dynamo traces it only with `capture_dynamic_output_shape_ops`, set here.
"""

import pytest
import torch
from conftest import tiny_config
from test_modeling import build, make_inputs
from test_pretraining import make_batch

from transformers_scl import SCLForPreTraining


@pytest.fixture(autouse=True)
def fresh_dynamo():
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


@pytest.mark.parametrize("num_frames", [None, 3])
def test_compiled_model_equals_eager(num_frames):
    model = build()
    inputs = make_inputs(num_frames=num_frames)
    eager = model(**inputs, output_hidden_states=True)
    compiled = torch.compile(model, fullgraph=True, backend="aot_eager")(**inputs, output_hidden_states=True)
    for name in ("text_features", "image_features", "pooler_output", "text_embeds", "image_embeds"):
        torch.testing.assert_close(getattr(compiled, name), getattr(eager, name), atol=1e-5, rtol=1e-5)
    assert len(compiled.hidden_states) == len(eager.hidden_states)
    for a, b in zip(compiled.hidden_states, eager.hidden_states):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


@torch._dynamo.config.patch(capture_dynamic_output_shape_ops=True)
def test_compiled_pretraining_step_equals_eager_in_losses_and_gradients():
    config = tiny_config(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    config.text_config.hidden_dropout_prob = config.text_config.attention_probs_dropout_prob = 0.0
    torch.manual_seed(0)
    model = SCLForPreTraining(config).train()
    batch = make_batch()  # images; the video path of the towers is compiled in the test above
    results = []
    for run in (model, torch.compile(model, fullgraph=True, backend="aot_eager")):
        model.zero_grad(set_to_none=True)
        out = run(**batch)
        out.loss.backward()
        grads = {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}
        results.append((out, grads))
    (eager, eager_grads), (compiled, compiled_grads) = results
    torch.testing.assert_close(compiled.loss, eager.loss, atol=1e-5, rtol=1e-5)
    for name, value in eager.loss_info.items():
        torch.testing.assert_close(compiled.loss_info[name], value, atol=1e-5, rtol=1e-5)
    assert compiled_grads.keys() == eager_grads.keys()
    for name, grad in eager_grads.items():
        torch.testing.assert_close(compiled_grads[name], grad, atol=1e-5, rtol=1e-4, msg=name)
