"""lstmcast.cells is a package; `cells.X` works for every name, and the switches and hooks that
cells.fastpath reads at call time are forwarded there: setting or monkeypatching `cells.X` is
what fastpath's functions see, and monkeypatch's undo restores (never deletes) them."""

import pytest
import torch

from lstmcast import cells
from lstmcast.cells import fastpath


def test_every_exported_name_resolves():
    for name in cells.__all__:
        assert getattr(cells, name) is not None or name == "triton"


@pytest.mark.parametrize("name", sorted(cells._FORWARDED))
def test_a_monkeypatched_switch_is_what_fastpath_reads_and_is_restored(name):
    original = getattr(fastpath, name)
    assert getattr(cells, name) is original
    sentinel = object()
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(cells, name, sentinel)
        assert getattr(fastpath, name) is sentinel and getattr(cells, name) is sentinel
    assert vars(fastpath)[name] is original and getattr(cells, name) is original


def test_plain_assignment_reaches_fastpath():
    """As benchmarks/cells.py does: cells.USE_SCRIPT = False turns scripting off."""
    def double(x):
        return 2 * x

    try:
        cells.USE_SCRIPT = False
        assert fastpath.USE_SCRIPT is False
        assert cells.compiled(double) is double
    finally:
        cells.USE_SCRIPT = True
    assert isinstance(cells.compiled(double), torch.jit.ScriptFunction)
    cells._COMPILED.pop(double)
