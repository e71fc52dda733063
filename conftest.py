"""Root pytest configuration: the names the library's docstring examples use (`pytest --doctest-modules moe_tf`).

`make test` runs the examples in `moe_tf/` as doctests; an example reads like
user code, with `np` and `keras` imported as a user would have them.
"""

import pytest


@pytest.fixture(autouse=True)
def _doctest_names(request):
    if isinstance(request.node, pytest.DoctestItem):
        import keras
        import numpy as np

        request.getfixturevalue("doctest_namespace").update(np=np, keras=keras)
