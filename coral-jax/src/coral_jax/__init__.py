"""coral-jax: Coral plugin for JAX, Flax, Optax and Orbax."""

__all__: list[str] = []
