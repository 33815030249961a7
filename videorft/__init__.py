"""videorft: reinforcement fine-tuning of video multimodal LLMs (VideoChat-R1, reproducibly).

The package is the science: data sources, video sampling and frame extraction, prompts,
datasets (and, later, rewards, the trainer, evaluation and publishing). It never imports
Prefect; `tasks/` and `flows/` wrap it for orchestration, and `dvc.yaml` mirrors the stages.
"""

__version__ = "0.1.0"
