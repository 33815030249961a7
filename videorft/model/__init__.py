"""The policy model: building the embedded tiny default, loading any checkpoint, making inputs.

- :mod:`videorft.model.tiny`: :func:`build_tiny_model`, a small random Qwen2.5-VL made offline.
- :mod:`videorft.model.loading`: :func:`load_model_and_processor` through the Auto classes.
- :mod:`videorft.model.inputs`: :func:`video_inputs`, dataset rows + frame store -> tensors.

Importing this package does not import torch or transformers; the functions do, when called.
"""

from videorft.model.inputs import row_messages, video_inputs
from videorft.model.loading import DTYPES, ModelNotFoundError, load_model_and_processor
from videorft.model.tiny import TinyModelSpec, build_tiny_model, default_corpus

__all__ = [
    "DTYPES",
    "ModelNotFoundError",
    "TinyModelSpec",
    "build_tiny_model",
    "default_corpus",
    "load_model_and_processor",
    "row_messages",
    "video_inputs",
]
