"""Pytrees to named weights and back: key-path names, structure without a template, exact dtypes."""

from __future__ import annotations

import collections

import coral_jax
import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np
import pytest
from coral.errors import InvalidArgumentError, RefNotFoundError, ShapeMismatchError


def test_linen_params_and_adamw_state_get_stable_key_path_names(linen_state):
    variables, opt_state = linen_state
    arrays, _ = coral_jax.flatten_pytree({"params": variables["params"], "opt_state": opt_state})
    assert "params/Dense_0/kernel" in arrays
    assert arrays["params/Dense_0/kernel"].dtype == ml_dtypes.bfloat16
    # optax named tuples use field names, the chain tuple its index
    assert {"opt_state/0/count", "opt_state/0/mu/Dense_0/kernel", "opt_state/0/nu/Dense_1/bias"} <= set(
        arrays
    )
    assert coral_jax.leaf_names(variables) == sorted(coral_jax.leaf_names(variables))  # jax sorts dict keys


def test_linen_and_optax_state_round_trip_bit_exact_into_template(linen_state, bit_equal):
    variables, opt_state = linen_state
    opt_state = jax.tree_util.tree_map(lambda x: x + 1 if x.dtype != jnp.int32 else x + 7, opt_state)
    tree = {"variables": variables, "opt_state": opt_state}
    arrays, structure = coral_jax.flatten_pytree(tree)
    back = coral_jax.unflatten_pytree(arrays, structure, like=tree)
    bit_equal(tree, back)
    assert type(back["opt_state"][0]).__name__ == "ScaleByAdamState"


def test_structure_rebuilds_dicts_lists_tuples_and_scalars_without_template(bit_equal):
    tree = {
        "a": [jnp.arange(3, dtype=jnp.int8), (jnp.ones(2, jnp.float16), "tag")],
        "b": {"c": np.arange(4, dtype=np.float64)},
        "i": {7: np.float32(2.5), 1: np.uint16(3)},
        "n": None,
        "x": 3,
        "nan": float("nan"),
        "bf": jnp.asarray([1.5, -0.0, np.inf], dtype=jnp.bfloat16),
        "low": [jnp.ones(3, jnp.float8_e4m3fn), jnp.arange(4, dtype=jnp.int4)],
    }
    arrays, structure = coral_jax.flatten_pytree(tree)
    assert "i/7" in arrays  # int dict key
    back = coral_jax.unflatten_pytree(arrays, structure)
    bit_equal(tree, back)
    assert isinstance(back["b"]["c"], np.ndarray) and isinstance(back["a"][0], jax.Array)
    assert isinstance(back["i"][7], np.float32) and set(back["i"]) == {1, 7}


def test_namedtuples_without_template_come_back_as_dicts_like_orbax(linen_state):
    _, opt_state = linen_state
    arrays, structure = coral_jax.flatten_pytree(opt_state)
    back = coral_jax.unflatten_pytree(arrays, structure)
    assert isinstance(back, tuple) and set(back[0]) == {"count", "mu", "nu"}
    assert np.asarray(back[0]["count"]).tobytes() == np.asarray(opt_state[0].count).tobytes()


def test_prng_keys_typed_and_raw_round_trip_through_key_data(bit_equal):
    tree = {
        "typed": jax.random.key(7),
        "rbg": jax.random.split(jax.random.key(1, impl="rbg"), 3),
        "raw": jax.random.PRNGKey(3),
    }
    arrays, structure = coral_jax.flatten_pytree(tree)
    assert arrays["typed"].dtype == np.uint32 and arrays["rbg"].shape == (3, 4)
    bit_equal(tree, coral_jax.unflatten_pytree(arrays, structure))
    bit_equal(tree, coral_jax.unflatten_pytree(arrays, None, like=tree))
    restored = coral_jax.unflatten_pytree(arrays, structure)["typed"]
    assert np.array_equal(jax.random.normal(restored, (3,)), jax.random.normal(tree["typed"], (3,)))


def test_weak_types_are_kept(bit_equal):
    tree = {"lr": jnp.asarray(0.1), "strong": jnp.float32(0.1)}
    assert tree["lr"].weak_type and not tree["strong"].weak_type
    arrays, structure = coral_jax.flatten_pytree(tree)
    bit_equal(tree, coral_jax.unflatten_pytree(arrays, structure))
    bit_equal(tree, coral_jax.unflatten_pytree(arrays, None, like=tree))


def test_nnx_state_round_trip_and_hooks_update_module_in_place(bit_equal):
    from coral.plugins import hook
    from flax import nnx

    class Net(nnx.Module):
        def __init__(self, rngs):
            self.l1 = nnx.Linear(4, 8, rngs=rngs, param_dtype=jnp.bfloat16)
            self.bn = nnx.BatchNorm(8, rngs=rngs)
            self.out = nnx.List([nnx.Linear(8, 2, rngs=rngs)])

    model = Net(nnx.Rngs(0))
    state = nnx.state(model)
    arrays, structure = coral_jax.flatten_pytree(state)
    assert {"l1/kernel", "bn/mean", "out/0/bias"} <= set(arrays)  # nnx Variable's .value is not in the name
    bit_equal(state, coral_jax.unflatten_pytree(arrays, structure, like=state))

    weights = hook().coral_model_to_weights(model=model)
    assert weights["l1/kernel"].metadata.dtype == "bfloat16"
    other = Net(nnx.Rngs(1))
    assert not np.array_equal(np.asarray(other.l1.kernel[...]), np.asarray(model.l1.kernel[...]))
    report = hook().coral_weights_to_model(weights=weights, model=other, strict=True)
    assert report["missing"] == [] and report["unexpected"] == []
    bit_equal(nnx.state(model), nnx.state(other))


def test_hooks_claim_jax_pytrees_only():
    import torch
    from coral.plugins import hook

    assert hook().coral_model_to_weights(model={"w": np.ones(2)}) is None
    assert set(hook().coral_model_to_weights(model=torch.nn.Linear(2, 2))) == {"weight", "bias"}
    got = hook().coral_model_to_weights(model={"w": jnp.ones(2, jnp.bfloat16), "n": np.zeros(1)})
    assert set(got) == {"w", "n"} and got["w"].metadata.dtype == "bfloat16"
    arr = hook().coral_tensor_to_array(value=jax.random.key(0))
    assert arr.dtype == np.uint32 and arr.shape == (2,)


def test_weights_to_model_updates_dict_pytree_in_place_and_reports(linen_state):
    from coral.plugins import hook

    variables, _ = linen_state
    target = jax.tree_util.tree_map(jnp.zeros_like, variables)
    inner = target["params"]
    weights = coral_jax.pytree_to_weights(variables)
    weights.pop("params/Dense_1/bias")
    weights["extra"] = weights["params/Dense_0/bias"]
    report = hook().coral_weights_to_model(weights=weights, model=target, strict=False)
    assert report["missing"] == ["params/Dense_1/bias"] and report["unexpected"] == ["extra"]
    assert inner is target["params"]  # nested dicts updated, not replaced
    assert np.array_equal(
        np.asarray(target["params"]["Dense_0"]["kernel"]),
        np.asarray(variables["params"]["Dense_0"]["kernel"]),
    )
    assert not np.asarray(target["params"]["Dense_1"]["bias"]).any()
    with pytest.raises(InvalidArgumentError, match="strict"):
        hook().coral_weights_to_model(weights=weights, model=target, strict=True)


def test_template_mismatches_are_reported_by_name():
    tree = {"a": jnp.ones((2, 3)), "b": jnp.ones(2)}
    arrays, structure = coral_jax.flatten_pytree(tree)
    with pytest.raises(ShapeMismatchError, match="'a'.*\\(2, 3\\).*\\(3, 2\\)"):
        coral_jax.unflatten_pytree(arrays, structure, like={"a": jnp.ones((3, 2)), "b": jnp.ones(2)})
    with pytest.raises(RefNotFoundError, match="c"):
        coral_jax.unflatten_pytree(arrays, structure, like={"a": jnp.ones((2, 3)), "c": jnp.ones(2)})
    # a template may ask for a subset, and for another dtype (cast on purpose)
    sub = coral_jax.unflatten_pytree(arrays, structure, like={"b": jax.ShapeDtypeStruct((2,), jnp.bfloat16)})
    assert sub["b"].dtype == jnp.bfloat16


def test_awkward_keys_get_distinct_names_and_bad_leaves_are_refused():
    tree = {"a/b": jnp.ones(1), "a": {"b": jnp.zeros(1)}, "..": jnp.ones(1), "": jnp.ones(1)}
    arrays, structure = coral_jax.flatten_pytree(tree)
    assert len(arrays) == 4 and "a%2Fb" in arrays and "a/b" in arrays
    back = coral_jax.unflatten_pytree(arrays, structure)
    assert set(back) == set(tree)
    with pytest.raises(InvalidArgumentError, match="object"):
        coral_jax.flatten_pytree({"o": object()})
    with pytest.raises(InvalidArgumentError, match="tracer"):
        jax.jit(lambda x: coral_jax.flatten_pytree({"x": x}) and x)(jnp.ones(1))
    od = collections.OrderedDict([("z", jnp.ones(1)), ("y", jnp.zeros(1))])
    assert coral_jax.leaf_names(od) == ["z", "y"]


def test_save_pytree_and_load_pytree_through_a_repository(repo, linen_state, bit_equal):
    variables, opt_state = linen_state
    tree = {"params": variables["params"], "opt_state": opt_state}
    cid = coral_jax.save_pytree(repo, tree, "init")
    assert repo.get_weights(cid)["params/Dense_0/kernel"].metadata.dtype == "bfloat16"
    bit_equal(tree, coral_jax.load_pytree(repo, cid, like=tree))
    plain = coral_jax.load_pytree(repo)
    assert set(plain) == {"params", "opt_state"} and isinstance(plain["opt_state"], tuple)
    # a commit coral-jax did not write still loads, as nested dicts
    repo.stage_weights({"enc/w": np.ones(2, np.float32), "dec/w": np.zeros(2, np.float32)})
    repo.commit("foreign")
    nested = coral_jax.load_pytree(repo)
    assert set(nested) == {"enc", "dec"} and isinstance(nested["enc"]["w"], jax.Array)


def test_flax_train_state_round_trips_with_its_static_fields(linen_state, bit_equal):
    import optax
    from flax.training import train_state

    variables, _ = linen_state
    state = train_state.TrainState.create(
        apply_fn=lambda *a: None, params=variables["params"], tx=optax.adamw(1e-3)
    )
    state = state.replace(step=jnp.asarray(7, jnp.int32))
    arrays, structure = coral_jax.flatten_pytree(state)
    assert {"step", "params/Dense_0/kernel", "opt_state/0/mu/Dense_1/bias"} <= set(arrays)
    back = coral_jax.unflatten_pytree(arrays, structure, like=state.replace(step=jnp.asarray(0, jnp.int32)))
    bit_equal(state, back)
    assert back.apply_fn is state.apply_fn and back.tx is state.tx
    assert set(coral_jax.unflatten_pytree(arrays, structure)) == {"step", "params", "opt_state"}


def test_nnx_rng_stream_keeps_its_rngkey_wrapper_through_restore(tmp_path, repo, bit_equal):
    from coral_jax import CoralCheckpointManager
    from flax import nnx

    class NM(nnx.Module):
        def __init__(self, rngs):
            self.lin = nnx.Linear(3, 2, rngs=rngs)
            self.do = nnx.Dropout(0.1, rngs=rngs)

    st = nnx.state(NM(nnx.Rngs(0)))
    assert isinstance(st["do"]["rngs"]["key"], nnx.RngKey)
    arrays, structure = coral_jax.flatten_pytree(st)
    back = coral_jax.unflatten_pytree(arrays, structure, like=st)
    assert isinstance(back["do"]["rngs"]["key"], nnx.RngKey)
    bit_equal(st, back)

    cid = coral_jax.save_pytree(repo, st, "nnx with rng stream")
    bit_equal(st, coral_jax.load_pytree(repo, cid, like=st))

    m = CoralCheckpointManager(tmp_path / "jnnx")
    assert m.save(1, {"model": st})
    m.wait_until_finished()
    r = m.restore(items_like={"model": st})["model"]
    assert isinstance(r["do"]["rngs"]["key"], nnx.RngKey)
    bit_equal(st, r)
