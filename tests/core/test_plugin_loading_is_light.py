"""Loading every installed plugin imports no ML framework and leaves the random streams where they were."""

from __future__ import annotations

import json
import subprocess
import sys

SCRIPT = """
import json, random, sys
import numpy as np
random.seed(1); np.random.seed(2)
import coral.plugins as p
p.get_plugin_manager()
loaded = sorted(i.name for i in p.list_plugins())
heavy = [m for m in ("torch", "jax", "transformers", "pytorch_lightning", "orbax") if m in sys.modules]
print(json.dumps({"heavy": heavy, "loaded": loaded, "draws": [random.random(), float(np.random.rand())]}))
"""


def test_loading_plugins_imports_no_framework_and_keeps_rng():
    out = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, check=True)
    doc = json.loads(out.stdout.strip().splitlines()[-1])
    assert doc["heavy"] == []
    assert {"torch", "lightning", "hf", "jax"} <= set(doc["loaded"])
    import random

    import numpy as np

    random.seed(1)
    np.random.seed(2)
    assert doc["draws"] == [random.random(), float(np.random.rand())]
