"""transformers-scl: SCL (Semantic Completion Learning) as a Hugging Face transformers model.

Importing the package registers SCL with the transformers Auto classes.
"""

from transformers import AutoConfig, AutoImageProcessor, AutoModel, AutoProcessor, AutoVideoProcessor

from .configuration_scl import SCLConfig, SCLVisionConfig
from .image_processing_pil_scl import SCLImageProcessorPil
from .image_processing_scl import SCLImageProcessor
from .modeling_scl import SCLModel, SCLModelOutput, SCLPreTrainedModel, SCLVisionModel, SCLVisionModelOutput
from .processing_scl import SCLProcessor
from .transforms import eval_transform, finetuning_transform, pretraining_transform
from .video_processing_scl import SCLVideoProcessor, sample_frame_indices

__version__ = "0.1.0"

AutoConfig.register(SCLConfig.model_type, SCLConfig, exist_ok=True)
AutoConfig.register(SCLVisionConfig.model_type, SCLVisionConfig, exist_ok=True)
AutoModel.register(SCLConfig, SCLModel, exist_ok=True)
AutoModel.register(SCLVisionConfig, SCLVisionModel, exist_ok=True)
AutoImageProcessor.register(
    SCLConfig, image_processor_classes={"torchvision": SCLImageProcessor, "pil": SCLImageProcessorPil}, exist_ok=True
)
AutoVideoProcessor.register(SCLConfig, video_processor_class=SCLVideoProcessor, exist_ok=True)
AutoProcessor.register(SCLConfig, SCLProcessor, exist_ok=True)

__all__ = [
    "SCLConfig",
    "SCLImageProcessor",
    "SCLImageProcessorPil",
    "SCLProcessor",
    "SCLVideoProcessor",
    "eval_transform",
    "finetuning_transform",
    "pretraining_transform",
    "sample_frame_indices",
    "SCLModel",
    "SCLModelOutput",
    "SCLPreTrainedModel",
    "SCLVisionConfig",
    "SCLVisionModel",
    "SCLVisionModelOutput",
]
