"""User metadata that looks like jsonsafe's own tags comes back as the user's dict, in commits and documents."""

import json
import math

import numpy as np
import pytest
from coral import Repository
from coral.version_control.jsonsafe import canonical_dumps, from_jsonable, to_jsonable

LOOKALIKES = [
    {"__float__": "inf"},
    {"__float__": "nan"},
    {"__float__": 1.5},
    {"__dict__": {"a": 1}},
    {"__dict__": {"__float__": "inf"}},
    {"outer": {"__float__": "-inf"}},
    [{"__float__": "inf"}, {"__dict__": 3}],
]


@pytest.mark.parametrize("value", LOOKALIKES, ids=[str(i) for i in range(len(LOOKALIKES))])
def test_user_dicts_that_look_like_tags_round_trip(value):
    text = canonical_dumps(to_jsonable(value))
    assert from_jsonable(json.loads(text)) == value


def test_real_non_finite_floats_still_round_trip_beside_lookalikes():
    back = from_jsonable(json.loads(canonical_dumps(to_jsonable({"x": math.inf, "y": {"__float__": math.nan}}))))
    assert back["x"] == math.inf and math.isnan(back["y"]["__float__"])


def test_old_documents_still_read():
    # written before escaping existed: a tagged float is a float, a plain dict is a dict
    assert from_jsonable(json.loads('{"loss": {"__float__": "nan"}, "m": {"__dict__": 5}}'))["m"] == {"__dict__": 5}
    assert from_jsonable({"__float__": "-inf"}) == -math.inf


def test_commit_metadata_and_documents_keep_the_users_dict(tmp_path):
    with Repository(tmp_path / "r", init=True) as repo:
        meta = {"limits": {"__float__": "inf"}, "loss": math.inf}
        cid = repo.commit_weights({"w": np.zeros(3, np.float32)}, "m", meta)
        got = repo.get_commit(cid).metadata
        assert got["limits"] == {"__float__": "inf"} and got["loss"] == math.inf
        repo.update_document("doc", lambda _old: {"__float__": "inf"})
        assert repo.read_document("doc") == {"__float__": "inf"}
