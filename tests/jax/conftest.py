"""Shared helpers for the coral-jax tests: a fresh repository and a bit-for-bit pytree comparison."""

from __future__ import annotations

from typing import Any

import coral
import numpy as np
import pytest

jax = pytest.importorskip("jax")


def _leaf_bytes(x: Any) -> tuple[str, bytes] | Any:
    if hasattr(x, "dtype") and jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
        return (f"key<{jax.random.key_impl(x)}>", np.asarray(jax.random.key_data(x)).tobytes())
    if isinstance(x, (jax.Array, np.ndarray, np.generic)):
        a = np.asarray(x)
        return (f"{type(x).__name__}:{a.dtype}:{a.shape}", a.tobytes())
    return x


def assert_bit_equal(a: Any, b: Any) -> None:
    """Same pytree structure (classes included), same leaf types, dtypes, shapes and bytes."""
    assert jax.tree_util.tree_structure(a) == jax.tree_util.tree_structure(b)
    la, lb = jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)
    assert len(la) == len(lb)
    for x, y in zip(la, lb, strict=True):
        bx, by = _leaf_bytes(x), _leaf_bytes(y)
        if isinstance(x, float) and np.isnan(x):
            assert isinstance(y, float) and np.isnan(y)
        else:
            assert bx == by, (x, y)
        if isinstance(x, jax.Array) and not jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
            assert x.weak_type == y.weak_type


@pytest.fixture
def bit_equal():
    return assert_bit_equal


@pytest.fixture
def repo(tmp_path):
    return coral.Repository(tmp_path / "repo", init=True)


@pytest.fixture
def linen_state():
    """Flax linen MLP params (bf16 and fp32 layers) and their optax.adamw state."""
    import flax.linen as nn
    import jax.numpy as jnp
    import optax

    class MLP(nn.Module):
        @nn.compact
        def __call__(self, x):
            x = nn.Dense(8, param_dtype=jnp.bfloat16)(x)
            return nn.Dense(2)(nn.relu(x))

    variables = MLP().init(jax.random.key(0), jnp.ones((1, 4)))
    tx = optax.adamw(1e-3)
    return variables, tx.init(variables["params"])
