"""A visual-question-answering pipeline for SCL's VQA classifier.

transformers 5 removed its `visual-question-answering` task (`pipeline("visual-question-answering")` raises a
KeyError pointing to `image-text-to-text`, which is for generative chat models). A classifier such as
`SCLForQuestionAnswering` needs the old behaviour: sigmoid answer scores over `config.id2label`. This module brings it
back as a custom pipeline, through transformers' mechanism for them: every folder that `SCLForQuestionAnswering`
saves names this class under `custom_pipelines` in its config and carries this file (see `hub.py`), so

    >>> from transformers import pipeline
    >>> vqa = pipeline("visual-question-answering", model="scl-vqa", trust_remote_code=True)
    >>> vqa(image, question="what color is the circle?", top_k=3)
    [{'score': 0.93, 'answer': 'red'}, ...]

works with or without transformers-scl installed. With the package and no remote code, pass the class:
`pipeline("visual-question-answering", model="scl-vqa", pipeline_class=SCLVisualQuestionAnsweringPipeline)`; or
build it from objects: `SCLVisualQuestionAnsweringPipeline(model=model, tokenizer=tokenizer,
image_processor=image_processor)`. Importing this module registers nothing: transformers' own tasks stay as they are.
The file imports nothing from `transformers_scl`, so the copy saved beside a model runs on its own.

`pipeline("zero-shot-image-classification")` needs no custom class: `SCLForZeroShotImageClassification` returns the
`logits_per_image` it reads.
"""

from typing import Any

from transformers.dynamic_module_utils import custom_object_save
from transformers.image_utils import load_image
from transformers.pipelines import Pipeline


class SCLVisualQuestionAnsweringPipeline(Pipeline):
    """Answer questions about images with a VQA classifier whose `logits` score the answers of `config.id2label`.

    Scores are sigmoids, as the classifier is trained with binary cross-entropy on soft scores (spec §3.1), so they
    do not sum to 1. Works with any such model (SCL, ViLT) with a tokenizer and an image processor.
    """

    _load_processor = False
    _load_image_processor = True
    _load_feature_extractor = False
    _load_tokenizer = True

    def _sanitize_parameters(self, top_k=None, padding=None, truncation=None, timeout=None, **kwargs):
        preprocess_params = {}
        if padding is not None:
            preprocess_params["padding"] = padding
        if truncation is not None:
            preprocess_params["truncation"] = truncation
        if timeout is not None:
            preprocess_params["timeout"] = timeout
        postprocess_params = {} if top_k is None else {"top_k": top_k}
        return preprocess_params, {}, postprocess_params

    def __call__(self, image, question: str | list[str] | None = None, **kwargs: Any):
        """
        Args:
            image: a PIL image, numpy array, local path or URL; a list of them; or `{"image": …, "question": …}`
                dicts (then leave `question` out).
            question: the question, or one question per image.
            top_k (`int`, *optional*, defaults to 5): how many answers to return, best first.

        Returns:
            Per input, a list of `{"score": float, "answer": str}`.
        """
        if question is None:
            inputs = image
        elif isinstance(image, list) and isinstance(question, list):
            if len(image) != len(question):
                raise ValueError(f"Got {len(image)} images but {len(question)} questions.")
            inputs = [
                {"image": one_image, "question": one_question} for one_image, one_question in zip(image, question)
            ]
        elif isinstance(image, list):
            inputs = [{"image": one_image, "question": question} for one_image in image]
        else:
            inputs = {"image": image, "question": question}
        for item in inputs if isinstance(inputs, list) else [inputs]:
            if not isinstance(item, dict) or "image" not in item or not isinstance(item.get("question"), str):
                raise ValueError(
                    "Pass `image` and a string `question`, or dicts with an 'image' and a string 'question'; got "
                    f"{item!r}."
                )
        return super().__call__(inputs, **kwargs)

    def preprocess(self, inputs, padding=False, truncation=False, timeout=None):
        image = load_image(inputs["image"], timeout=timeout)
        model_inputs = self.tokenizer(inputs["question"], return_tensors="pt", padding=padding, truncation=truncation)
        model_inputs.update(self.image_processor(images=image, return_tensors="pt").to(self.dtype))
        return model_inputs

    def _forward(self, model_inputs):
        return self.model(**model_inputs)

    def save_pretrained(self, save_directory, **kwargs):
        """Save model, tokenizer and image processor, and this file, which the config's `custom_pipelines` names (also
        when this class was itself loaded as remote code, which transformers would not copy)."""
        super().save_pretrained(save_directory, **kwargs)
        if getattr(self.model.config, "custom_pipelines", None):
            custom_object_save(self, save_directory)

    def postprocess(self, model_outputs, top_k: int = 5):
        id2label = self.model.config.id2label
        top_k = min(top_k, len(id2label))
        scores, answer_ids = model_outputs.logits.sigmoid()[0].topk(top_k)
        return [
            {"score": score, "answer": id2label[answer_id]}
            for score, answer_id in zip(scores.tolist(), answer_ids.tolist())
        ]


__all__ = ["SCLVisualQuestionAnsweringPipeline"]
