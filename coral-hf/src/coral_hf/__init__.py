"""coral-hf: Coral plugin for HuggingFace transformers: CoralTrainerCallback, HF folder import/export."""

__all__: list[str] = []
