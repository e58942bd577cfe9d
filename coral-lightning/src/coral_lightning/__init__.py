"""coral-lightning: Coral plugin for PyTorch Lightning: CoralCallback with exact resume."""

__all__: list[str] = []
