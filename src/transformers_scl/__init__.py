"""transformers-scl: SCL (Semantic Completion Learning) as a Hugging Face transformers model.

Importing the package registers SCL with the transformers Auto classes.
"""

from transformers import AutoConfig, AutoModel

from .configuration_scl import SCLConfig, SCLVisionConfig
from .modeling_scl import SCLModel, SCLModelOutput, SCLPreTrainedModel, SCLVisionModel, SCLVisionModelOutput

__version__ = "0.1.0"

AutoConfig.register(SCLConfig.model_type, SCLConfig, exist_ok=True)
AutoConfig.register(SCLVisionConfig.model_type, SCLVisionConfig, exist_ok=True)
AutoModel.register(SCLConfig, SCLModel, exist_ok=True)
AutoModel.register(SCLVisionConfig, SCLVisionModel, exist_ok=True)

__all__ = [
    "SCLConfig",
    "SCLModel",
    "SCLModelOutput",
    "SCLPreTrainedModel",
    "SCLVisionConfig",
    "SCLVisionModel",
    "SCLVisionModelOutput",
]
