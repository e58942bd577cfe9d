"""coral-lightning's hook implementations, registered through the ``coral`` entry point."""
