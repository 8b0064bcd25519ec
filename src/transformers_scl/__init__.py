"""transformers-scl: SCL (Semantic Completion Learning) as a Hugging Face transformers model.

Importing the package registers SCL with the transformers Auto classes, and for remote code (`hub.register_remote_code`:
saved folders load with `trust_remote_code=True` without the package). It leaves transformers' pipeline tasks as they
are: the VQA pipeline is a custom pipeline that saved VQA folders name in their config.
"""

from transformers import (
    AutoConfig,
    AutoImageProcessor,
    AutoModel,
    AutoModelForPreTraining,
    AutoModelForVisualQuestionAnswering,
    AutoModelForZeroShotImageClassification,
    AutoProcessor,
    AutoVideoProcessor,
)

from .configuration_scl import SCLConfig, SCLVisionConfig
from .conversion.upgrade import register_checkpoint_upgrades
from .hub import register_remote_code
from .image_processing_pil_scl import SCLImageProcessorPil
from .image_processing_scl import SCLImageProcessor
from .modeling_scl import (
    SCLContrastiveOutput,
    SCLForImagesAndTextClassification,
    SCLForImageTextRetrieval,
    SCLForPreTraining,
    SCLForPreTrainingOutput,
    SCLForQuestionAnswering,
    SCLForZeroShotImageClassification,
    SCLImageTextRetrievalOutput,
    SCLLosses,
    SCLModel,
    SCLModelOutput,
    SCLPreTrainedModel,
    SCLSequenceClassifierOutput,
    SCLVisionModel,
    SCLVisionModelOutput,
)
from .pipelines import SCLVisualQuestionAnsweringPipeline
from .processing_scl import SCLProcessor
from .transforms import eval_transform, finetuning_transform, pretraining_transform
from .video_processing_scl import SCLVideoProcessor, sample_frame_indices

__version__ = "0.1.0"

register_checkpoint_upgrades()  # older checkpoints' shapes load (`conversion/upgrade.py`)
AutoConfig.register(SCLConfig.model_type, SCLConfig, exist_ok=True)
AutoConfig.register(SCLVisionConfig.model_type, SCLVisionConfig, exist_ok=True)
AutoModel.register(SCLConfig, SCLModel, exist_ok=True)
AutoModel.register(SCLVisionConfig, SCLVisionModel, exist_ok=True)
AutoModelForPreTraining.register(SCLConfig, SCLForPreTraining, exist_ok=True)
AutoModelForVisualQuestionAnswering.register(SCLConfig, SCLForQuestionAnswering, exist_ok=True)
AutoModelForZeroShotImageClassification.register(SCLConfig, SCLForZeroShotImageClassification, exist_ok=True)
AutoImageProcessor.register(
    SCLConfig, image_processor_classes={"torchvision": SCLImageProcessor, "pil": SCLImageProcessorPil}, exist_ok=True
)
AutoVideoProcessor.register(SCLConfig, video_processor_class=SCLVideoProcessor, exist_ok=True)
AutoProcessor.register(SCLConfig, SCLProcessor, exist_ok=True)
register_remote_code()

__all__ = [
    "SCLConfig",
    "SCLContrastiveOutput",
    "SCLForImageTextRetrieval",
    "SCLForImagesAndTextClassification",
    "SCLForPreTraining",
    "SCLForPreTrainingOutput",
    "SCLForQuestionAnswering",
    "SCLForZeroShotImageClassification",
    "SCLImageTextRetrievalOutput",
    "SCLLosses",
    "SCLImageProcessor",
    "SCLImageProcessorPil",
    "SCLProcessor",
    "SCLVideoProcessor",
    "SCLVisualQuestionAnsweringPipeline",
    "eval_transform",
    "finetuning_transform",
    "pretraining_transform",
    "sample_frame_indices",
    "SCLModel",
    "SCLModelOutput",
    "SCLPreTrainedModel",
    "SCLSequenceClassifierOutput",
    "SCLVisionConfig",
    "SCLVisionModel",
    "SCLVisionModelOutput",
]
