"""Declarations the package does not ship generate, with no edit but their declaration.

The networks of ``test_declarations`` (mish; hard tanh as a 3-branch Piecewise, as Max/Min,
with an And and with an Or condition; Huber and absolute-error losses) are lowered, printed
and imported; their ``backward`` agrees with central finite differences (kinks taken from
each activation's own conditions), and the Trainer's in-place step leaves the same parameters
as the functional ``backward``.
"""

from __future__ import annotations


import numpy as np
import pytest

from codegen.emit import write_module
from codegen.fdcheck import finite_difference_check
from codegen.files import import_module_from
from codegen.lower import lower
import sympy as sp

from derive.activations import Activation
from derive.derivation import derive
from derive.netspec import ActivationSpec, LayerSpec, NetSpec
from test_declarations import PROVED, declared
from test_fast_path import assert_fast_step_equals_functional


def network(name, hidden, output, loss, units) -> NetSpec:
    """2 inputs, a hidden layer of 3 units per hidden activation, ``units`` outputs."""
    layers = tuple(LayerSpec(3, ActivationSpec(h)) for h in hidden)
    return NetSpec(name, 2, layers + (LayerSpec(units, ActivationSpec(output)),), loss)


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """name -> (module, Program) for every network of PROVED, generated once."""
    out = {}
    with declared():
        for name, hidden, output, loss, units in PROVED:
            derivation = derive(network(name, hidden, output, loss, units))
            folder = tmp_path_factory.mktemp(f"extra_{name}")
            path = write_module(derivation, folder)
            out[name] = (import_module_from(path), lower(derivation))
    return out


@pytest.mark.parametrize("name", [p[0] for p in PROVED])
def test_finite_differences(built, name):
    module, program = built[name]
    report = finite_difference_check(module, switches=program.switches, m=6)
    assert report.ok, report.summary()
    assert sum(r.checked for r in report.results) > 0


@pytest.mark.parametrize("name", [p[0] for p in PROVED])
def test_fast_step_equals_functional(built, name):
    assert_fast_step_equals_functional(built[name][0], sizes=(4, 1, 3), scale=1.5, seed=7)


def test_switches_come_from_each_activations_conditions(built):
    """hard tanh's kinks are found at z = ±1, whichever way it is written."""
    grid = np.linspace(-3, 3, 6001) + 1e-4  # sign changes of s(z) between grid points
    for name in ("hard_tanh", "hard_tanh_max", "hard_tanh_and", "hard_tanh_or"):
        _, program = built[f"out_{name}"]
        kinks = set()
        for layer, s, z in program.switches:
            if layer == 2:  # the output layer
                values = np.broadcast_to(sp.lambdify(z, s, "numpy")(grid), grid.shape)
                kinks |= {round(float(grid[i]), 2) for i in np.flatnonzero(np.diff(np.signbit(values)))}
        # z = 0 too for the form with sign(z) in a branch not taken there: a superset only
        # skips a few more finite-difference entries
        assert {-1.0, 1.0} <= kinks <= {-1.0, -0.0, 1.0}, (name, program.switches)


def test_a_function_with_no_numpy_spelling_is_a_clear_error(tmp_path):
    """Nothing is written; the message names the function and how to give it a spelling."""
    from codegen.emit import Unprintable

    bessel = Activation("bessel", r"J_0", lambda x: sp.besselj(0, x))
    with declared({"bessel": bessel}, {}):
        derivation = derive(network("bessel_net", ("bessel",), "identity", "mse", 1))
        with pytest.raises(Unprintable, match="besselj.*_numpycode"):
            write_module(derivation, tmp_path)
    assert not list(tmp_path.iterdir())
