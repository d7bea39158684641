"""The claims' formula syntax: a small language for the formulas the documents print.

    dW1 = ((W2^T (yhat - y)) ∘ relu'(z1)) x^T        a gradient (dW<l>, db<l>)
    delta2 = yhat - y                                 an error (delta<l>, dZ<l>, e<l>)
    d gelu/dz = Phi(z) + z phi(z)                     a local derivative (also gelu'(z))
    dL/dyhat = -(y - yhat)                            the loss's derivative in the output
    L = -(y log(yhat) + (1 - y) log(1 - yhat))        the per-example loss
    W2 := W2 - alpha dW2                              an update rule
    z1[3] = -0.04                                     a number of the worked example

Operators, loosest first: ``+ -``; the matrix product (``*``, ``·`` or juxtaposition: a
scalar factor scales), the element-wise product (``∘``, ``⊙`` or ``.*``) and ``/`` (by a
scalar, else element-wise), all left to right; unary ``-``; ``^T`` (or ``ᵀ``) transposes,
``^k`` is an element-wise power.  Functions apply entry by entry; ``g'`` is the derivative.
A function's argument follows its name without a space (``relu(z)``; ``a (1 - a)`` is a
product).  ``sum`` adds every entry, ``rowsum`` along each row (over the examples), ``colsum`` down each
column (over the units).  A 1x1 value broadcasts in ``+ - ∘ /``.

The parser only builds a tree (``Node``); names and functions are resolved by
``derive.claims``, which knows the Derivation and the registries.  Errors are
``FormulaError`` with the 1-based column in the formula.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from fractions import Fraction

__all__ = ["FormulaError", "Node", "Num", "Name", "Call", "Unary", "Binary", "Power",
           "Transpose", "Vector", "Equation", "parse_equation", "parse_expression", "names_in",
           "calls_in", "OPERATORS"]

# operator spellings -> the operation
OPERATORS = {"+": "add", "-": "sub", "−": "sub", "*": "matmul", "·": "matmul",
             "∘": "hadamard", "⊙": "hadamard", ".*": "hadamard", "/": "div"}


class FormulaError(ValueError):
    """A formula that cannot be read; ``column`` is 1-based in the formula's text."""

    def __init__(self, message: str, column: int):
        super().__init__(message)
        self.message, self.column = message, column


@dataclass(frozen=True)
class Node:
    column: int  # 1-based, where the node starts


@dataclass(frozen=True)
class Num(Node):
    value: Fraction
    text: str  # as written: its decimals matter for a worked example's figures


@dataclass(frozen=True)
class Name(Node):
    name: str


@dataclass(frozen=True)
class Call(Node):
    function: str
    prime: bool  # g'(...): the derivative
    arg: Node


@dataclass(frozen=True)
class Unary(Node):
    arg: Node  # negation


@dataclass(frozen=True)
class Binary(Node):
    op: str  # add, sub, matmul, hadamard, div
    left: Node
    right: Node


@dataclass(frozen=True)
class Power(Node):
    base: Node
    exponent: int


@dataclass(frozen=True)
class Transpose(Node):
    arg: Node


@dataclass(frozen=True)
class Vector(Node):
    items: tuple[Node, ...]  # a list of numbers: [0.23, 0.28, 0.49]


@dataclass(frozen=True)
class Equation:
    lhs: str  # the left-hand side as written, spaces removed ("dgelu/dz", "z1[3]", "W2")
    lhs_column: int
    update: bool  # ':=' (an update rule) rather than '='
    rhs: Node
    text: str


_TOKEN = re.compile(r"""
    (?P<space>\s+)
  | (?P<number>\d+\.\d*|\.\d+|\d+)
  | (?P<name>[^\W\d]\w*)
  | (?P<op>:=|\.\*|[-+*/^()\[\],'=∘⊙·−ᵀ])
""", re.VERBOSE)


@dataclass(frozen=True)
class _Tok:
    kind: str  # number, name, op, end
    text: str
    column: int


MAX_DIGITS = 100  # characters of a number or a name in a formula
MAX_POWER = 64  # a whole-number exponent: squares and cubes are what formulas hold
MAX_NESTING = 100  # parentheses, calls, lists and signs inside one another


def _tokens(text: str) -> list[_Tok]:
    out, pos = [], 0
    while pos < len(text):
        match = _TOKEN.match(text, pos)
        if match is None:
            raise FormulaError(f"unexpected character {text[pos]!r}", pos + 1)
        if match.lastgroup in ("number", "name") and len(match.group()) > MAX_DIGITS:
            raise FormulaError(f"a {match.lastgroup} of {len(match.group())} characters: a "
                               f"formula's {match.lastgroup}s have at most {MAX_DIGITS}", pos + 1)
        if match.lastgroup != "space":
            out.append(_Tok(match.lastgroup, match.group(), pos + 1))
        pos = match.end()
    out.append(_Tok("end", "", len(text) + 1))
    return out


class _Parser:
    def __init__(self, tokens: list[_Tok]):
        self.toks, self.k = tokens, 0
        self.depth = 0

    def nested(self, method, column: int) -> Node:
        """``method()`` one level deeper; a located error past MAX_NESTING levels."""
        if self.depth >= MAX_NESTING:
            raise FormulaError(f"nested more than {MAX_NESTING} levels deep", column)
        self.depth += 1
        try:
            return method()
        finally:
            self.depth -= 1

    @property
    def tok(self) -> _Tok:
        return self.toks[self.k]

    def take(self) -> _Tok:
        tok = self.toks[self.k]
        self.k += 1
        return tok

    def expect(self, text: str, what: str) -> _Tok:
        if self.tok.text != text:
            raise FormulaError(f"expected {what}, found {_shown(self.tok)}", self.tok.column)
        return self.take()

    def expression(self) -> Node:
        node = self.term()
        while self.tok.text in ("+", "-", "−"):
            op = self.take()
            node = Binary(op.column, OPERATORS[op.text], node, self.term())
        return node

    def term(self) -> Node:
        node = self.unary()
        while True:
            tok = self.tok
            if tok.text in OPERATORS and OPERATORS[tok.text] in ("matmul", "hadamard", "div"):
                self.take()
                node = Binary(tok.column, OPERATORS[tok.text], node, self.unary())
            elif tok.kind in ("name", "number") or tok.text == "(":  # juxtaposition
                node = Binary(tok.column, "matmul", node, self.unary())
            else:
                return node

    def unary(self) -> Node:
        if self.tok.text in ("-", "−"):
            tok = self.take()
            return Unary(tok.column, self.nested(self.unary, tok.column))
        if self.tok.text == "+":
            tok = self.take()
            return self.nested(self.unary, tok.column)
        return self.postfix(self.primary())

    def postfix(self, node: Node) -> Node:
        while True:
            if self.tok.text == "ᵀ":
                node = Transpose(self.take().column, node)
            elif self.tok.text == "^":
                caret = self.take()
                tok = self.take()
                if tok.text == "T":
                    node = Transpose(caret.column, node)
                elif tok.kind == "number" and tok.text.isdigit():
                    if int(tok.text) > MAX_POWER:
                        raise FormulaError(f"the power {tok.text} is above {MAX_POWER}: write "
                                           "the formula without it", tok.column)
                    node = Power(caret.column, node, int(tok.text))
                else:
                    raise FormulaError(f"after '^' expected T (transpose) or a whole number, "
                                       f"found {_shown(tok)}", tok.column)
            else:
                return node

    def primary(self) -> Node:
        tok = self.tok
        if tok.kind == "number":
            self.take()
            return Num(tok.column, Fraction(tok.text), tok.text)
        if tok.kind == "name":
            self.take()
            prime = self.tok.text == "'"
            if prime:
                self.take()
            end = tok.column + len(tok.text) + prime
            if self.tok.text == "(" and self.tok.column == end:  # g(...): no space before '('
                self.take()
                arg = self.nested(self.expression, tok.column)
                self.expect(")", f"')' closing {tok.text}(")
                return Call(tok.column, tok.text, prime, arg)
            if prime:
                raise FormulaError(f"expected '(' after {tok.text}' (a derivative is applied "
                                   f"to an argument: {tok.text}'(z))", self.tok.column)
            return Name(tok.column, tok.text)
        if tok.text == "(":
            self.take()
            node = self.nested(self.expression, tok.column)
            self.expect(")", "')'")
            return node
        if tok.text == "[":
            self.take()
            items = [self.nested(self.expression, tok.column)]
            while self.tok.text == ",":
                self.take()
                items.append(self.nested(self.expression, tok.column))
            self.expect("]", "']' closing the list")
            return Vector(tok.column, tuple(items))
        raise FormulaError(f"expected a number, a name or '(', found {_shown(tok)}", tok.column)


def _shown(tok: _Tok) -> str:
    return "the end of the formula" if tok.kind == "end" else repr(tok.text)


def parse_expression(text: str, offset: int = 0) -> Node:
    """A formula's right-hand side as a tree (columns counted from ``offset`` + 1)."""
    try:
        tokens = [_Tok(t.kind, t.text, t.column + offset) for t in _tokens(text)]
    except FormulaError as err:
        raise FormulaError(err.message, err.column + offset) from None
    parser = _Parser(tokens)
    node = parser.expression()
    if parser.tok.kind != "end":
        raise FormulaError(f"unexpected {_shown(parser.tok)} (an operator missing before it?)",
                           parser.tok.column)
    return node


def parse_equation(text: str) -> Equation:
    """``quantity = formula`` or ``parameter := formula``."""
    match = re.search(r":=|=", text)
    if match is None:
        raise FormulaError("expected an equation: quantity = formula (or W1 := formula for an "
                           "update rule)", len(text) + 1)
    lhs_raw = text[:match.start()]
    if not lhs_raw.strip():
        raise FormulaError("expected the quantity before '='", 1)
    column = len(lhs_raw) - len(lhs_raw.lstrip()) + 1
    if len(lhs_raw.strip()) > MAX_DIGITS:
        raise FormulaError(f"the quantity before '{match.group()}' has {len(lhs_raw.strip())} "
                           f"characters: at most {MAX_DIGITS}", column)
    rhs = text[match.end():]
    if not rhs.strip():
        raise FormulaError("expected a formula after '='", match.end() + 1)
    node = parse_expression(rhs, match.end())
    return Equation("".join(lhs_raw.split()), column, match.group() == ":=", node, text)


def names_in(node: Node) -> set[str]:
    """Every plain name the formula uses."""
    if isinstance(node, Name):
        return {node.name}
    return set().union(*(names_in(child) for child in _children(node)))


def calls_in(node: Node) -> set[str]:
    """Every function the formula applies."""
    own = {node.function} if isinstance(node, Call) else set()
    return own.union(*(calls_in(child) for child in _children(node)))


def _children(node: Node) -> tuple[Node, ...]:
    if isinstance(node, (Call, Unary, Transpose)):
        return (node.arg,)
    if isinstance(node, Binary):
        return (node.left, node.right)
    if isinstance(node, Power):
        return (node.base,)
    if isinstance(node, Vector):
        return node.items
    return ()
