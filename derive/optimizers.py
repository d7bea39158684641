"""Batching schemes and update rules, each declared once.

A *batching scheme* says how many examples each descent step averages over (the documents'
batch, stochastic and mini-batch gradient descent).  An *update rule* says how a parameter
moves given its gradient; it is a SymPy expression, so the LaTeX prints it and the code
generator lowers it into the training step.  The spec reader, the CLI, the LaTeX, the
generated module and the tests all read these registries.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import sympy as sp

from .registry import Registry

__all__ = ["Batching", "BATCHING", "UpdateRuleDecl", "UPDATE_RULES", "ALL_EXAMPLES", "BATCH_SIZE"]

ALL_EXAMPLES = "all"  # Batching.examples: every training example in one step
BATCH_SIZE = "batch_size"  # Batching.examples: the spec's training.batch_size


@dataclass(frozen=True)
class Batching:
    """How many examples one step averages over: ``ALL_EXAMPLES``, 1, or the ``batch_size``."""

    name: str
    title: str  # as the documents name the variant
    examples: str | int  # ALL_EXAMPLES | 1 | BATCH_SIZE
    batch: str  # what m is in this variant, in words
    description: str  # the title as it reads inside a sentence: "mini-batch gradient descent"

    def examples_per_step(self, m: int, batch_size: int) -> int:
        if self.examples == ALL_EXAMPLES:
            return m
        if self.examples == BATCH_SIZE:
            return min(batch_size, m)
        return min(int(self.examples), m)


BATCHING: Registry[Batching] = Registry("optimizer")
BATCHING.add("batch", Batching("batch", "Batch gradient descent", ALL_EXAMPLES,
                               "all N training examples, one step per epoch",
                               "batch gradient descent"))
BATCHING.add("sgd", Batching("sgd", "Stochastic gradient descent", 1,
                             "one example (m = 1), N steps per epoch",
                             "stochastic gradient descent"))
BATCHING.add("minibatch", Batching("minibatch", "Mini-batch gradient descent", BATCH_SIZE,
                                   "a batch of B examples (m = B), N/B steps per epoch",
                                   "mini-batch gradient descent"))


@dataclass(frozen=True)
class UpdateRuleDecl:
    """theta <- new(theta, g, eta) for a parameter theta with gradient g and step size eta.

    ``plain`` marks a rule that is linear in g with no state (theta - eta g): the code
    generator may then fold eta/m into the output error and update each parameter with one
    subtraction.
    """

    name: str
    title: str
    new: Callable[[sp.Expr, sp.Expr, sp.Expr], sp.Expr]
    plain: bool = False


UPDATE_RULES: Registry[UpdateRuleDecl] = Registry("update rule")
UPDATE_RULES.add("gradient_descent", UpdateRuleDecl(
    "gradient_descent", "Gradient descent", lambda theta, g, eta: theta - eta * g, plain=True))
