"""Update rules and learning-rate schedules -> ``DIR/_rules.py``, shared by the folder's modules.

Every declared optimizer is printed as one function over the flattened parameters: the
rule's assignments once per entry, in order, inside one loop (compiled by numba: one fused
pass over theta, g and the state), and the same assignments on whole arrays for NumPy alone.
What does not depend on the entry (the bias corrections 1 - beta^t) is computed once per step,
before the loop.  Schedules print as functions of the initial rate and the epoch.

The declarations are read through their public attributes (duck-typed: ``name``, ``title``,
``source``, ``hyperparameters``, ``state``, ``assignments``, ``plain_when``); this package
does not import ``derive``.
"""

from __future__ import annotations

import keyword
from dataclasses import dataclass

import sympy as sp

from .printers.numpy import NumPyCodePrinter
from .printers.text import TextPrinter

__all__ = ["RuleCode", "ScheduleCode", "lower_rules", "lower_schedules", "RULE_ARGUMENTS"]

# the printed functions' arguments: update(theta, g, state, t, lr, hyper), all flat
RULE_ARGUMENTS = ("theta", "g", "state", "t", "lr", "hyper")


@dataclass(frozen=True)
class RuleCode:
    name: str
    title: str
    source: str
    hyperparameters: tuple[tuple[str, object, int], ...]  # (name, default, entries)
    # (local, hyperparameter, entry): the local is entry ``entry`` of the hyperparameter's
    # value (None: the value itself, a number)
    bindings: tuple[tuple[str, str, int | None], ...]
    state: tuple[str, ...]  # the state arrays' names, rows of ``state``
    hoisted: tuple[tuple[str, str], ...]  # (name, code): once per step
    load: tuple[tuple[str, str], ...]  # (local, array): theta, g, then the state, into locals
    body: tuple[str, ...]  # the assignments on the locals, one per formula
    store: tuple[tuple[str, str], ...]  # (array, local): theta, then the state, written back
    formulas: tuple[str, ...]  # the assignments in words, for the docstring
    plain_when: tuple[str, ...] | None
    learning_rate: float

    @property
    def defaults(self) -> str:
        return repr({name: default for name, default, _ in self.hyperparameters})

    @property
    def unpack(self) -> tuple[str, ...]:
        """Lines binding the hyperparameters' locals from ``hyper``, a flat sequence of
        every entry in the declared order (the form ``_rules.py`` takes)."""
        return tuple(f"{local} = hyper[{offset}]" for offset, (local, _, _) in
                     enumerate(self.bindings))


@dataclass(frozen=True)
class ScheduleCode:
    name: str
    title: str
    source: str
    parameters: tuple[tuple[str, object], ...]  # (name, default or None)
    formula: str
    code: str  # an expression in eta, e and the parameters' names

    @property
    def defaults(self) -> str:
        return repr(dict(self.parameters))


def _local(symbol: sp.Symbol) -> str:
    return f"{symbol.name}_"


def _hyper_name(symbol: sp.Symbol) -> str:
    """A hyperparameter's symbol as a Python name (``lambda`` is a keyword)."""
    name = symbol.name
    return name + "_" if keyword.iskeyword(name) else name


def _hoist(expr: sp.Expr, entrywise: set, found: dict) -> sp.Expr:
    """expr with every largest non-atomic part free of the per-entry symbols replaced by a
    symbol of ``found`` (computed once per step)."""
    if not expr.free_symbols & entrywise:
        if expr.is_Atom:
            return expr
        if expr not in found:
            found[expr] = sp.Symbol(f"c{len(found)}_")
        return found[expr]
    if expr.is_Atom:
        return expr
    return expr.func(*(_hoist(arg, entrywise, found) for arg in expr.args))


def lower_rules(optimizers, theta: sp.Symbol, gradient: sp.Symbol, eta: sp.Symbol,
                step: sp.Symbol, printer=NumPyCodePrinter) -> tuple[RuleCode, ...]:
    """The printed form of every optimizer declaration, its code in ``printer``'s spelling
    (NumPy's; the JAX module passes JAX's)."""
    return tuple(_rule(decl, theta, gradient, eta, step, printer) for decl in optimizers)


def _rule(decl, theta, gradient, eta, step, printer) -> RuleCode:
    state = [symbol for symbol, _ in decl.state]
    locals_ = [theta, gradient] + state + [target for target, _ in decl.assignments
                                           if target not in (theta, gradient, *state)]
    entrywise = set(locals_)
    names = {symbol: _local(symbol) for symbol in locals_}
    names |= {eta: "lr", step: "t"}
    bindings = []
    for h in decl.hyperparameters:
        for entry, symbol in enumerate(h.symbols):
            names[symbol] = _hyper_name(symbol)
            bindings.append((names[symbol], h.name, entry if h.size > 1 else None))
    found: dict = {}  # per-step subexpression -> its name
    hoisted = [(target, _hoist(formula, entrywise, found)) for target, formula in decl.assignments]
    hoisted_code = tuple((symbol.name, printer(names).doprint(expr))
                         for expr, symbol in found.items())
    names |= {symbol: symbol.name for symbol in found.values()}
    code, text = printer(names), TextPrinter()
    body = [f"{names[target]} = {code.doprint(formula)}" for target, formula in hoisted]
    arrays = ["theta", "g"] + [s.name for s in state]
    return RuleCode(
        decl.name, decl.title, decl.source,
        tuple((h.name, h.default, h.size) for h in decl.hyperparameters), tuple(bindings),
        tuple(s.name for s in state), hoisted_code,
        tuple((_local(s), a) for s, a in zip([theta, gradient] + state, arrays)),
        tuple(body), tuple((a, _local(s)) for a, s in zip(["theta"] + arrays[2:], [theta] + state)),
        tuple(f"{target} <- {text.doprint(formula)}" for target, formula in decl.assignments),
        decl.plain_when, decl.learning_rate)


def lower_schedules(schedules, eta: sp.Symbol, epoch: sp.Symbol) -> tuple[ScheduleCode, ...]:
    out = []
    text = TextPrinter()
    for decl in schedules:
        names = {eta: "eta", epoch: "e"}
        for symbol in decl.rate.free_symbols - {eta, epoch}:
            names[symbol] = symbol.name
        out.append(ScheduleCode(decl.name, decl.title, decl.source,
                                tuple((name, default) for name, default, _ in decl.parameters),
                                text.doprint(decl.rate),
                                NumPyCodePrinter(names).doprint(decl.rate)))
    return tuple(out)
