"""coral-hf's hook implementations, registered through the ``coral`` entry point."""
