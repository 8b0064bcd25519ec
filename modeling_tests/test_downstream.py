"""Downstream heads (spec §3.1): VQA, NLVR2, retrieval, ITC zero-shot, and their pipelines."""

import math

import pytest
import torch
from conftest import tiny_config
from PIL import Image
from skimage import data as skimage_data
from torch.nn import functional as F
from transformers import pipeline

from transformers_scl.image_processing_scl import SCLImageProcessor
from transformers_scl.modeling_scl import (
    SCLForImagesAndTextClassification,
    SCLForImageTextRetrieval,
    SCLForPreTraining,
    SCLForQuestionAnswering,
    SCLForZeroShotImageClassification,
    SCLModel,
    sample_negative_text_indices,
)
from transformers_scl.pipelines import SCLVisualQuestionAnsweringPipeline

ANSWERS = ["red", "blue", "green", "two", "three", "yes", "no"]


def text_batch(batch_size=3, length=7, seed=0):
    generator = torch.Generator().manual_seed(seed)
    input_ids = torch.randint(5, 400, (batch_size, length), generator=generator)
    input_ids[:, 0] = 0  # <s>
    attention_mask = torch.ones_like(input_ids)
    attention_mask[0, length - 2 :] = 0  # one padded text
    return input_ids, attention_mask


def images(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def manual_bce_with_logits(logits, targets):
    return -(targets * F.logsigmoid(logits) + (1 - targets) * F.logsigmoid(-logits)).mean()


@pytest.fixture(scope="module")
def astronaut():
    return Image.fromarray(skimage_data.astronaut())


@pytest.fixture(scope="module")
def image_processor():
    return SCLImageProcessor(size={"height": 32, "width": 32})


# -- VQA ---------------------------------------------------------------------------------------------------------------


def test_vqa_without_answer_names_has_the_3129_vqav2_answers():
    model = SCLForQuestionAnswering(tiny_config())
    assert model.config.num_labels == 3129
    assert model.vqa_classifier[3].out_features == 3129


def test_vqa_with_answer_names_has_one_logit_per_answer():
    model = SCLForQuestionAnswering(tiny_config(id2label=dict(enumerate(ANSWERS))))
    input_ids, attention_mask = text_batch()
    logits = model(input_ids=input_ids, attention_mask=attention_mask, pixel_values=images(3, 3, 32, 32)).logits
    assert logits.shape == (3, len(ANSWERS))
    assert model.config.id2label[0] == "red"


def test_vqa_classifier_keeps_the_reference_state_dict_names():
    model = SCLForQuestionAnswering(tiny_config(id2label=dict(enumerate(ANSWERS))))
    keys = {key for key in model.state_dict() if key.startswith("vqa_classifier.")}
    assert keys == {f"vqa_classifier.{i}.{p}" for i in (0, 1, 3) for p in ("weight", "bias")}
    assert model.vqa_classifier[0].in_features == 2 * model.config.hidden_size


def test_vqa_loss_is_bce_summed_over_answers_and_averaged_over_the_batch():
    model = SCLForQuestionAnswering(tiny_config(id2label=dict(enumerate(ANSWERS)))).eval()
    input_ids, attention_mask = text_batch()
    labels = torch.zeros(3, len(ANSWERS))
    labels[0, 1], labels[1, 5], labels[1, 6], labels[2, 3] = 1.0, 0.6, 0.3, 0.9
    output = model(
        input_ids=input_ids, attention_mask=attention_mask, pixel_values=images(3, 3, 32, 32), labels=labels
    )
    expected = manual_bce_with_logits(output.logits, labels) * len(ANSWERS)
    torch.testing.assert_close(output.loss, expected)


def test_vqa_answers_questions_about_videos():
    model = SCLForQuestionAnswering(tiny_config(id2label=dict(enumerate(ANSWERS))))
    input_ids, attention_mask = text_batch(batch_size=2)
    output = model(input_ids=input_ids, attention_mask=attention_mask, pixel_values_videos=images(2, 4, 3, 32, 32))
    assert output.logits.shape == (2, len(ANSWERS))


def test_vqa_logits_classify_the_full_models_pooler_output_with_or_without_returned_states():
    model = SCLForQuestionAnswering(tiny_config(id2label=dict(enumerate(ANSWERS)))).eval()
    input_ids, attention_mask = text_batch()
    pixel_values = images(3, 3, 32, 32)
    pooled = model.scl(input_ids=input_ids, attention_mask=attention_mask, pixel_values=pixel_values).pooler_output
    expected = model.vqa_classifier(pooled)
    for output_hidden_states in (False, True):  # without returned states only the CLS rows of the last layer run
        output = model(
            input_ids=input_ids,
            attention_mask=attention_mask,
            pixel_values=pixel_values,
            output_hidden_states=output_hidden_states,
        )
        torch.testing.assert_close(output.logits, expected)
    assert output.hidden_states[2].shape == (3, 7, 32)  # the fused text stream's full last layer


def test_vqa_rejects_labels_that_are_not_soft_scores_per_answer():
    model = SCLForQuestionAnswering(tiny_config(id2label=dict(enumerate(ANSWERS))))
    input_ids, attention_mask = text_batch()
    with pytest.raises(ValueError, match="soft scores"):
        model(input_ids=input_ids, pixel_values=images(3, 3, 32, 32), labels=torch.tensor([0, 1, 2]))


# -- NLVR2 -------------------------------------------------------------------------------------------------------------


def test_nlvr2_has_three_token_types_and_false_true_labels():
    model = SCLForImagesAndTextClassification(tiny_config())
    assert model.config.num_token_types == 3
    assert model.scl.token_type_embeddings.weight.shape == (3, 32)
    assert model.config.id2label == {0: "False", 1: "True"}
    assert model.nlvr2_classifier[0].in_features == 4 * model.config.hidden_size


def test_nlvr2_fuses_the_left_image_with_token_type_1_and_the_right_with_token_type_2():
    model = SCLForImagesAndTextClassification(tiny_config()).eval()
    input_ids, attention_mask = text_batch(batch_size=2)
    pair = images(2, 2, 3, 32, 32)
    logits = model(input_ids=input_ids, attention_mask=attention_mask, pixel_values=pair).logits

    pooled = [
        model.scl(
            input_ids=input_ids,
            attention_mask=attention_mask,
            pixel_values=pair[:, side],
            image_token_type_idx=side + 1,
        ).pooler_output
        for side in range(2)
    ]
    torch.testing.assert_close(logits, model.nlvr2_classifier(torch.cat(pooled, dim=-1)))
    swapped = model(input_ids=input_ids, attention_mask=attention_mask, pixel_values=pair.flip(1)).logits
    assert not torch.allclose(logits, swapped)


def test_nlvr2_accepts_the_two_images_as_two_tensors():
    model = SCLForImagesAndTextClassification(tiny_config()).eval()
    input_ids, attention_mask = text_batch(batch_size=2)
    pair = images(2, 2, 3, 32, 32)
    stacked = model(input_ids=input_ids, attention_mask=attention_mask, pixel_values=pair).logits
    separate = model(input_ids=input_ids, attention_mask=attention_mask, pixel_values=(pair[:, 0], pair[:, 1])).logits
    torch.testing.assert_close(stacked, separate)


def test_nlvr2_loss_is_cross_entropy_over_false_true():
    model = SCLForImagesAndTextClassification(tiny_config()).eval()
    input_ids, attention_mask = text_batch(batch_size=2)
    labels = torch.tensor([1, 0])
    output = model(
        input_ids=input_ids, attention_mask=attention_mask, pixel_values=images(2, 2, 3, 32, 32), labels=labels
    )
    expected = -output.logits.log_softmax(dim=-1)[torch.arange(2), labels].mean()
    torch.testing.assert_close(output.loss, expected)


def test_nlvr2_rejects_a_single_image():
    model = SCLForImagesAndTextClassification(tiny_config())
    input_ids, _ = text_batch(batch_size=2)
    with pytest.raises(ValueError, match=r"\(batch, 2, 3, height, width\)"):
        model(input_ids=input_ids, pixel_values=images(2, 3, 32, 32))


@pytest.mark.parametrize("source_class", [SCLModel, SCLForPreTraining])
def test_nlvr2_loading_a_two_token_type_checkpoint_copies_row_1_into_row_2(tmp_path, source_class):
    source = source_class(tiny_config())
    source.save_pretrained(tmp_path)
    table = (source if source_class is SCLModel else source.scl).token_type_embeddings.weight

    model, info = SCLForImagesAndTextClassification.from_pretrained(tmp_path, output_loading_info=True)
    grown = model.scl.token_type_embeddings.weight
    assert grown.shape == (3, 32)
    torch.testing.assert_close(grown[:2], table, rtol=0, atol=0)
    torch.testing.assert_close(grown[2], table[1], rtol=0, atol=0)
    assert model.config.num_token_types == 3
    assert not info["mismatched_keys"]


def test_nlvr2_checkpoint_round_trips_its_three_token_types(tmp_path):
    model = SCLForImagesAndTextClassification(tiny_config())
    model.save_pretrained(tmp_path)
    reloaded = SCLForImagesAndTextClassification.from_pretrained(tmp_path)
    torch.testing.assert_close(reloaded.scl.token_type_embeddings.weight, model.scl.token_type_embeddings.weight)
    torch.testing.assert_close(reloaded.nlvr2_classifier[3].weight, model.nlvr2_classifier[3].weight)


# -- retrieval ---------------------------------------------------------------------------------------------------------


def test_sampled_negatives_are_distinct_other_texts_of_the_batch():
    negatives = sample_negative_text_indices(6, 4, generator=torch.Generator().manual_seed(0))
    assert negatives.shape == (6, 4)
    for row, texts in enumerate(negatives.tolist()):
        assert row not in texts
        assert len(set(texts)) == 4


def test_a_small_batch_yields_fewer_negatives():
    assert sample_negative_text_indices(3, 15).shape == (3, 2)
    with pytest.raises(ValueError, match="2 samples"):
        sample_negative_text_indices(1, 15)


def test_retrieval_logits_are_rank_scores_of_each_image_with_its_own_then_its_negative_texts():
    model = SCLForImageTextRetrieval(tiny_config()).eval()
    input_ids, attention_mask = text_batch()
    pixel_values = images(3, 3, 32, 32)
    negatives = torch.tensor([[1, 2], [2, 0], [0, 1]])
    logits = model(
        input_ids=input_ids, attention_mask=attention_mask, pixel_values=pixel_values, negative_text_indices=negatives
    ).logits
    assert logits.shape == (3, 3)
    candidates = torch.cat([torch.arange(3)[:, None], negatives], dim=1)
    for image in range(3):
        for column, text in enumerate(candidates[image].tolist()):
            fused = model.scl(
                input_ids=input_ids[text : text + 1],
                attention_mask=attention_mask[text : text + 1],
                pixel_values=pixel_values[image : image + 1],
            )
            torch.testing.assert_close(logits[image, column], model.rank_output(fused.pooler_output)[0, 0])


def test_retrieval_loss_is_cross_entropy_over_one_positive_and_n_negatives_plus_weighted_itc():
    config = tiny_config(itc_weight=0.5)
    model = SCLForImageTextRetrieval(config).eval()
    input_ids, attention_mask = text_batch(batch_size=4)
    pixel_values = images(4, 3, 32, 32)
    negatives = torch.tensor([[1, 2, 3], [0, 2, 3], [3, 0, 1], [2, 1, 0]])
    output = model(
        input_ids=input_ids,
        attention_mask=attention_mask,
        pixel_values=pixel_values,
        negative_text_indices=negatives,
        return_loss=True,
    )
    rank_loss = -output.logits.log_softmax(dim=-1)[:, 0].mean()
    similarity = output.itc_image_embeds @ output.itc_text_embeds.t() / config.itc_temperature_init
    targets = torch.arange(4)
    itc_loss = F.cross_entropy(similarity, targets) + F.cross_entropy(similarity.t(), targets)
    torch.testing.assert_close(output.rank_loss, rank_loss)
    torch.testing.assert_close(output.itc_loss, itc_loss)
    torch.testing.assert_close(output.loss, rank_loss + 0.5 * itc_loss)


def test_retrieval_loss_samples_the_configured_number_of_negatives():
    model = SCLForImageTextRetrieval(tiny_config(num_retrieval_negatives=3))
    input_ids, attention_mask = text_batch(batch_size=5)
    output = model(
        input_ids=input_ids, attention_mask=attention_mask, pixel_values=images(5, 3, 32, 32), return_loss=True
    )
    assert output.logits.shape == (5, 4)
    assert output.negative_text_indices.shape == (5, 3)
    output.loss.backward()
    assert model.rank_output.weight.grad is not None and model.itc_temperature.grad is not None
    assert model.itm_score.fc.weight.grad is None


def test_retrieval_trains_on_videos():
    model = SCLForImageTextRetrieval(tiny_config())
    input_ids, attention_mask = text_batch(batch_size=3)
    output = model(
        input_ids=input_ids,
        attention_mask=attention_mask,
        pixel_values_videos=images(3, 4, 3, 32, 32),
        return_loss=True,
    )
    assert output.logits.shape == (3, 3) and torch.isfinite(output.loss)


def test_rank_output_starts_as_the_itm_match_row_of_a_pretraining_checkpoint(tmp_path):
    pretrained = SCLForPreTraining(tiny_config())
    pretrained.save_pretrained(tmp_path)
    model = SCLForImageTextRetrieval.from_pretrained(tmp_path)
    torch.testing.assert_close(model.rank_output.weight, pretrained.itm_score.fc.weight[1:], rtol=0, atol=0)
    torch.testing.assert_close(model.rank_output.bias, pretrained.itm_score.fc.bias[1:], rtol=0, atol=0)
    # the rank score of a pair is then the ITM "match" logit
    input_ids, attention_mask = text_batch(batch_size=1)
    pixel_values = images(1, 3, 32, 32)
    fused = pretrained.eval().scl(input_ids=input_ids, attention_mask=attention_mask, pixel_values=pixel_values)
    score = model(input_ids=input_ids, attention_mask=attention_mask, pixel_values=pixel_values).logits
    torch.testing.assert_close(score[0, 0], pretrained.itm_score(fused.pooler_output)[0, 1])
    assert not model.itm_score.fc.weight.requires_grad


def test_a_fine_tuned_rank_output_is_loaded_not_replaced_by_the_itm_row(tmp_path):
    model = SCLForImageTextRetrieval(tiny_config())
    with torch.no_grad():
        model.rank_output.weight.fill_(0.25)
    model.save_pretrained(tmp_path)
    reloaded = SCLForImageTextRetrieval.from_pretrained(tmp_path)
    assert torch.all(reloaded.rank_output.weight == 0.25)


def test_text_image_and_video_features_are_unit_norm_itc_embeddings_over_the_cacheable_tokens():
    model = SCLForImageTextRetrieval(tiny_config()).eval()
    input_ids, attention_mask = text_batch(batch_size=2)
    text = model.get_text_features(input_ids=input_ids, attention_mask=attention_mask)
    image = model.get_image_features(images(2, 3, 32, 32))
    video = model.get_video_features(images(2, 4, 3, 32, 32))
    assert text.last_hidden_state.shape == (2, 7, 32)
    assert image.last_hidden_state.shape == (2, 1 + 16, 32)
    assert video.last_hidden_state.shape == (2, 4 * (1 + 16), 32)
    for features in (text, image, video):
        assert features.pooler_output.shape == (2, 16)
        torch.testing.assert_close(features.pooler_output.norm(dim=-1), torch.ones(2))
    # spec §2.3: a video's ITC embedding comes from the mean of its frame-CLS tokens
    expected = F.normalize(model.itc_image_projection(video.last_hidden_state[:, :4].mean(dim=1)), dim=-1)
    torch.testing.assert_close(video.pooler_output, expected)


def test_features_match_the_embeddings_of_forward():
    model = SCLForImageTextRetrieval(tiny_config()).eval()
    input_ids, attention_mask = text_batch()
    pixel_values = images(3, 3, 32, 32)
    output = model(input_ids=input_ids, attention_mask=attention_mask, pixel_values=pixel_values)
    torch.testing.assert_close(
        model.get_text_features(input_ids=input_ids, attention_mask=attention_mask).pooler_output,
        output.itc_text_embeds,
    )
    torch.testing.assert_close(model.get_image_features(pixel_values).pooler_output, output.itc_image_embeds)


def test_image_features_reject_videos():
    model = SCLForImageTextRetrieval(tiny_config())
    with pytest.raises(ValueError, match="get_video_features"):
        model.get_image_features(images(2, 4, 3, 32, 32))


# -- zero-shot (ITC) ----------------------------------------------------------------------------------------------------


def test_zero_shot_logits_are_itc_similarities_over_the_temperature_for_any_number_of_texts(tmp_path):
    retrieval = SCLForImageTextRetrieval(tiny_config()).eval()
    retrieval.save_pretrained(tmp_path)
    model = SCLForZeroShotImageClassification.from_pretrained(tmp_path)
    input_ids, attention_mask = text_batch(batch_size=3)
    pixel_values = images(1, 3, 32, 32)
    logits = model(input_ids=input_ids, attention_mask=attention_mask, pixel_values=pixel_values).logits_per_image
    text = retrieval.get_text_features(input_ids=input_ids, attention_mask=attention_mask).pooler_output
    image = retrieval.get_image_features(pixel_values).pooler_output
    assert logits.shape == (1, 3)
    torch.testing.assert_close(logits, image @ text.t() / 0.07)


# -- pipelines ---------------------------------------------------------------------------------------------------------


def test_vqa_pipeline_top_answer_is_the_model_argmax(tmp_path, tokenizer, image_processor, astronaut):
    torch.manual_seed(0)
    model = SCLForQuestionAnswering(tiny_config(id2label=dict(enumerate(ANSWERS)))).eval()
    vqa = SCLVisualQuestionAnsweringPipeline(model=model, tokenizer=tokenizer, image_processor=image_processor)
    answers = vqa(astronaut, question="what color is the circle?", top_k=3)

    inputs = tokenizer("what color is the circle?", return_tensors="pt")
    inputs.update(image_processor(images=astronaut, return_tensors="pt"))
    with torch.no_grad():
        probabilities = model(**inputs).logits.sigmoid()[0]
    assert [answer["answer"] for answer in answers] == [ANSWERS[i] for i in probabilities.topk(3).indices]
    assert math.isclose(answers[0]["score"], probabilities.max().item(), rel_tol=1e-5)


def test_saved_vqa_pipeline_reloads_with_the_visual_question_answering_task(
    tmp_path, tokenizer, image_processor, astronaut
):
    torch.manual_seed(0)
    model = SCLForQuestionAnswering(tiny_config(id2label=dict(enumerate(ANSWERS)))).eval()
    expected = SCLVisualQuestionAnsweringPipeline(model=model, tokenizer=tokenizer, image_processor=image_processor)
    expected.save_pretrained(tmp_path)
    reloaded = pipeline("visual-question-answering", model=str(tmp_path), trust_remote_code=True)
    question = "how many shapes are there?"
    got, want = reloaded(astronaut, question=question, top_k=2), expected(astronaut, question=question, top_k=2)
    assert [answer["answer"] for answer in got] == [answer["answer"] for answer in want]
    assert [answer["score"] for answer in got] == pytest.approx([answer["score"] for answer in want])


def test_zero_shot_image_classification_pipeline_runs_on_itc(tmp_path, tokenizer, image_processor, astronaut):
    torch.manual_seed(0)
    model = SCLForZeroShotImageClassification(tiny_config()).eval()
    model.save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    image_processor.save_pretrained(tmp_path)
    classifier = pipeline("zero-shot-image-classification", model=str(tmp_path), trust_remote_code=True)
    labels = ["cat", "dog", "astronaut"]
    result = classifier(astronaut, candidate_labels=labels, hypothesis_template="a photo of {}.")

    inputs = tokenizer([f"a photo of {label}." for label in labels], padding=True, return_tensors="pt")
    with torch.no_grad():
        probabilities = model(**inputs, **image_processor(images=astronaut, return_tensors="pt")).logits_per_image
    probabilities = probabilities.softmax(dim=-1)[0]
    assert {item["label"]: item["score"] for item in result} == pytest.approx(
        dict(zip(labels, probabilities.tolist()))
    )


def test_zero_shot_model_builds_no_fusion_and_loads_full_checkpoints_ignoring_it(tmp_path):
    pretraining = SCLForPreTraining(tiny_config()).eval()
    pretraining.save_pretrained(tmp_path / "pretraining")
    pretraining.scl.save_pretrained(tmp_path / "base")
    fusion = (
        "token_type_embeddings",
        "cross_modal_text_layers",
        "cross_modal_image_layers",
        "cross_modal_text_pooler",
    )
    input_ids, attention_mask = text_batch(batch_size=2)
    pixel_values = images(2, 3, 32, 32)
    text = pretraining.get_text_features(input_ids=input_ids, attention_mask=attention_mask).pooler_output
    image = pretraining.get_image_features(pixel_values).pooler_output
    for folder in ("pretraining", "base"):  # with and without the `scl.` prefix
        model, info = SCLForZeroShotImageClassification.from_pretrained(tmp_path / folder, output_loading_info=True)
        assert not any(name.startswith(fusion, len("scl.")) for name, _ in model.named_parameters())
        assert {key.removeprefix("scl.").split(".")[0] for key in info["unexpected_keys"]} >= set(fusion)
        assert not any(key.startswith("scl.") for key in info["missing_keys"]), folder
        for name, tensor in model.scl.state_dict().items():
            torch.testing.assert_close(tensor, pretraining.scl.state_dict()[name], msg=name)
        if folder == "pretraining":
            logits = model(input_ids=input_ids, attention_mask=attention_mask, pixel_values=pixel_values)
            torch.testing.assert_close(logits.logits_per_image, image @ text.t() / 0.07)
    with pytest.raises(ValueError, match="add_fusion_layers=False"):
        model.scl.fuse(torch.zeros(1, 3, 32), torch.zeros(1, 17, 32))


# -- ITC features and the zero-shot loss --------------------------------------------------------------------------------


def test_zero_shot_return_loss_is_the_itc_loss_and_trains():
    model = SCLForZeroShotImageClassification(tiny_config()).train()
    input_ids, attention_mask = text_batch()
    output = model(input_ids=input_ids, attention_mask=attention_mask, pixel_values=images(3, 3, 32, 32))
    assert output.loss is None
    output = model(
        input_ids=input_ids, attention_mask=attention_mask, pixel_values=images(3, 3, 32, 32), return_loss=True
    )
    labels = torch.arange(3)
    expected = F.cross_entropy(output.logits_per_image, labels) + F.cross_entropy(output.logits_per_text, labels)
    torch.testing.assert_close(output.loss, expected)
    output.loss.backward()
    assert model.itc_temperature.grad is not None and model.itc_text_projection[0].weight.grad is not None
    with pytest.raises(ValueError, match="pairs text i with image i"):
        model(input_ids=input_ids, pixel_values=images(2, 3, 32, 32), return_loss=True)


def test_feature_getters_return_the_tower_outputs_and_tuples_on_request():
    model = SCLForImageTextRetrieval._from_config(tiny_config(), attn_implementation="eager").eval()
    input_ids, attention_mask = text_batch()
    text = model.get_text_features(input_ids, attention_mask, output_hidden_states=True, output_attentions=True)
    assert len(text.hidden_states) == 3 and len(text.attentions) == 2
    video = model.get_video_features(images(3, 2, 3, 32, 32), output_hidden_states=True, output_attentions=True)
    assert len(video.hidden_states) == 3 and video.hidden_states[0].shape == (3, 2 * 17, 32)
    assert video.attentions[0].shape == (3 * 2, 4, 17, 17)
    assert model.get_image_features(images(3, 3, 32, 32)).hidden_states is None
    as_tuple = model.get_image_features(images(3, 3, 32, 32), return_dict=False)
    assert isinstance(as_tuple, tuple) and as_tuple[0].shape == (3, 17, 32)
