"""Extended-Einsum cascades as text: a small notation, its parser and the cascade object.

One Einsum per line, in the style of FuseMax / TeAAL (our own concrete syntax)::

    # comment
    cascade attention_1pass          name of the cascade (optional)
    partition m -> m1, m0            split rank M into M1 x M0 (m = m1 * M0 + m0)
    QK[m1,m0,p] = Q[e,p] * BK[e,m1,m0]
    LM[m1,p] max= QK[m1,m0,p]
    RM[m1+1,p] = max(RM[m1,p], LM[m1,p])
    AV[f,p] = RNV[f,M1,p] / RD[M1,p]
    A[m,p] = SN[m,p] / SD[p]  where m <= p

Indices are lower-case names; the rank of index ``m1`` is ``M1``. Every index that appears on
the right but not on the left is reduced: ``=`` and ``+=`` reduce with ``+``, ``max=`` and ``min=``
with max / min. An output index ``m1+1`` whose tensor is also read at ``m1`` is a recurrence
(a running value carried over ``m1``); an upper-case index such as ``M1`` reads its final element.
Map operators: ``+ - * /``, unary ``-``, ``exp(x)``, ``log(x)``, ``sqrt(x)``, ``rsqrt(x)`` (1 / sqrt),
``max(a, b)``, ``min(a, b)``, numbers; enough for softmax, LayerNorm, RMSNorm and log-sum-exp.
A tensor may read itself only as a recurrence (``S[m+1,p] = S[m,p] + X[m,p]``).
``where`` adds iteration-space constraints (``m <= p``, ``p - m < 128``); the performance model
counts only the points they keep, and reads and keeps only the keys and queries those points need.

Every syntax error is a :class:`CascadeSyntaxError` naming the source, line and column.
"""

from __future__ import annotations

import dataclasses
import functools
import re
from pathlib import Path

import numpy as np

__all__ = [
    "BinOp",
    "Call",
    "Cascade",
    "CascadeSyntaxError",
    "Constraint",
    "Einsum",
    "IndexTerm",
    "Neg",
    "Num",
    "Ref",
    "load_cascade",
    "parse_cascade",
    "builtin_cascade",
    "BUILTIN_DIR",
]

BUILTIN_DIR = Path(__file__).parent / "cascades"
FUNCTIONS = {"exp": 1, "log": 1, "sqrt": 1, "rsqrt": 1, "max": 2, "min": 2}
# the operation (cost class of :class:`simcim.npu.dataflow.arch.Arch`) each function is charged as
FUNCTION_OPS = {"exp": "exp", "log": "log", "sqrt": "sqrt", "rsqrt": "rsqrt", "max": "max", "min": "max"}
REDUCE_OPS = {"=": "+", "+=": "+", "max=": "max", "min=": "min"}


class CascadeSyntaxError(ValueError):
    """Bad cascade notation; the message is ``source:line:col: what is wrong``."""


# ----------------------------------------------------------------------------- syntax tree


@dataclasses.dataclass(frozen=True)
class IndexTerm:
    """One subscript: a variable with an offset (``m1+1``), or a rank bound (``M1``, its last element)."""

    var: str | None
    offset: int = 0
    bound: str | None = None

    def __str__(self) -> str:
        if self.bound is not None:
            return self.bound
        if self.offset:
            return f"{self.var}{self.offset:+d}"
        return str(self.var)


@dataclasses.dataclass(frozen=True)
class Ref:
    name: str
    indices: tuple[IndexTerm, ...]
    col: int = 0

    @functools.cached_property
    def vars(self) -> tuple[str, ...]:
        return tuple(t.var for t in self.indices if t.var is not None)

    def __str__(self) -> str:
        return f"{self.name}[{','.join(str(t) for t in self.indices)}]"


@dataclasses.dataclass(frozen=True)
class Num:
    value: float


@dataclasses.dataclass(frozen=True)
class Neg:
    arg: Expr


@dataclasses.dataclass(frozen=True)
class BinOp:
    op: str
    left: Expr
    right: Expr


@dataclasses.dataclass(frozen=True)
class Call:
    fn: str
    args: tuple[Expr, ...]


Expr = Num | Ref | Neg | BinOp | Call


@dataclasses.dataclass(frozen=True)
class Constraint:
    """``left op right``, kept as the linear form sum(coef * index) + const ``op`` 0.

    Supported (and modelled) forms bound one index (``m < 4``) or the difference of two
    (``m <= p``, ``p - m < 4096``).
    """

    left: str
    op: str
    right: str
    coefs: tuple[tuple[str, int], ...] = ()
    const: int = 0

    def __str__(self) -> str:
        return f"{self.left} {self.op} {self.right}"

    def difference_range(self) -> tuple[tuple[str, ...], float, float]:
        """(indices, lo, hi): ``lo <= u - v <= hi`` for two indices (u, v), ``lo <= u <= hi`` for one."""
        coefs = dict(self.coefs)
        names = sorted(coefs, key=lambda v: -coefs[v])  # +1 first
        c = self.const
        lo, hi = -np.inf, np.inf
        if self.op in ("<=", "=="):
            hi = -c
        if self.op == "<":
            hi = -c - 1
        if self.op in (">=", "=="):
            lo = -c
        if self.op == ">":
            lo = -c + 1
        if len(names) == 1 and coefs[names[0]] == -1:  # -u + c op 0  ->  u op' c
            lo, hi = -hi, -lo
        return tuple(names), lo, hi


@dataclasses.dataclass(frozen=True)
class Einsum:
    output: Ref
    expr: Expr
    reduce: str
    constraints: tuple[Constraint, ...] = ()
    line: int = 0

    @property
    def name(self) -> str:
        return self.output.name

    @functools.cached_property
    def inputs(self) -> tuple[Ref, ...]:
        out: list[Ref] = []

        def walk(e: Expr) -> None:
            if isinstance(e, Ref):
                out.append(e)
            elif isinstance(e, Neg):
                walk(e.arg)
            elif isinstance(e, BinOp):
                walk(e.left)
                walk(e.right)
            elif isinstance(e, Call):
                for a in e.args:
                    walk(a)

        walk(self.expr)
        return tuple(out)

    @property
    def is_recurrence(self) -> bool:
        """The output is indexed ``i+1``: a running value over ``i``, whose state is read at ``i``."""
        return any(t.offset == 1 for t in self.output.indices)

    @functools.cached_property
    def iteration_vars(self) -> tuple[str, ...]:
        seen: dict[str, None] = {}
        for v in self.output.vars:
            seen[v] = None
        for r in self.inputs:
            for v in r.vars:
                seen[v] = None
        return tuple(seen)

    @functools.cached_property
    def reduced_vars(self) -> tuple[str, ...]:
        out = set(self.output.vars)
        return tuple(v for v in self.iteration_vars if v not in out)

    def op_counts(self) -> dict[str, int]:
        """Operations per point of the iteration space: mac, mul, add, max, div, exp, log, sqrt, rsqrt.

        A product reduced with ``+`` is one multiply-accumulate; a reduction adds one
        ``add``/``max`` per point; a recurrence's carried operand costs nothing extra.
        """
        counts: dict[str, int] = {}

        def bump(op: str, n: int = 1) -> None:
            counts[op] = counts.get(op, 0) + n

        def walk(e: Expr) -> None:
            if isinstance(e, Neg):
                walk(e.arg)
            elif isinstance(e, BinOp):
                bump({"+": "add", "-": "add", "*": "mul", "/": "div"}[e.op])
                walk(e.left)
                walk(e.right)
            elif isinstance(e, Call):
                bump(FUNCTION_OPS[e.fn])
                for a in e.args:
                    walk(a)

        walk(self.expr)
        if self.reduced_vars:
            if self.reduce == "+" and isinstance(self.expr, BinOp) and self.expr.op == "*":
                counts["mul"] -= 1
                if not counts["mul"]:
                    del counts["mul"]
                bump("mac")
            else:
                bump("add" if self.reduce == "+" else "max")
        return counts

    def __str__(self) -> str:
        op = {"+": "=", "max": "max=", "min": "min="}[self.reduce]
        text = f"{self.output} {op} {_expr_str(self.expr)}"
        if self.constraints:
            text += " where " + ", ".join(str(c) for c in self.constraints)
        return text


def _expr_str(e: Expr) -> str:
    if isinstance(e, Num):
        return f"{e.value:g}"
    if isinstance(e, Ref):
        return str(e)
    if isinstance(e, Neg):
        return f"-({_expr_str(e.arg)})"
    if isinstance(e, BinOp):
        return f"({_expr_str(e.left)} {e.op} {_expr_str(e.right)})"
    return f"{e.fn}({', '.join(_expr_str(a) for a in e.args)})"


@dataclasses.dataclass(frozen=True)
class Cascade:
    """An ordered list of Einsums; tensors never produced are the cascade's inputs."""

    name: str
    einsums: tuple[Einsum, ...]
    partitions: dict[str, tuple[str, str]] = dataclasses.field(default_factory=dict)
    source: str = "<cascade>"

    @property
    def produced(self) -> dict[str, Einsum]:
        return {e.name: e for e in self.einsums}

    @property
    def inputs(self) -> dict[str, Ref]:
        produced = self.produced
        out: dict[str, Ref] = {}
        for e in self.einsums:
            for r in e.inputs:
                if r.name not in produced and r.name not in out:
                    out[r.name] = r
        return out

    @property
    def outputs(self) -> tuple[str, ...]:
        consumed = {r.name for e in self.einsums for r in e.inputs if r.name != e.name}
        return tuple(e.name for e in self.einsums if e.name not in consumed)

    def consumers(self, tensor: str) -> tuple[Einsum, ...]:
        return tuple(e for e in self.einsums if e.name != tensor and any(r.name == tensor for r in e.inputs))

    def einsum(self, name: str) -> Einsum:
        for e in self.einsums:
            if e.name == name:
                return e
        raise ValueError(f"cascade {self.name!r}: no Einsum named {name!r} (has {', '.join(self.produced)})")

    def __str__(self) -> str:
        lines = [f"cascade {self.name}"]
        lines += [f"partition {k} -> {a}, {b}" for k, (a, b) in self.partitions.items()]
        lines += [str(e) for e in self.einsums]
        return "\n".join(lines)


# ----------------------------------------------------------------------------- tokenizer / parser

_TOKEN = re.compile(
    r"\s*(?:(?P<op>max=|min=|\+=|->|<=|>=|==|[-+*/()\[\],=<>])"
    r"|(?P<num>\d+(?:\.\d*)?(?:[eE][-+]?\d+)?)|(?P<name>[A-Za-z_][A-Za-z0-9_]*))"
)


@dataclasses.dataclass
class _Tok:
    kind: str
    text: str
    col: int  # 1-based


class _Line:
    def __init__(self, text: str, source: str, lineno: int) -> None:
        self.source, self.lineno, self.text = source, lineno, text
        self.toks: list[_Tok] = []
        pos = 0
        stripped = text.rstrip()
        while pos < len(stripped):
            m = _TOKEN.match(stripped, pos)
            if m is None or m.end() == pos:
                col = pos + 1 + (len(stripped[pos:]) - len(stripped[pos:].lstrip()))
                raise self.error(col, f"unexpected character {stripped[col - 1]!r}")
            kind = m.lastgroup or "op"
            self.toks.append(_Tok(kind, m.group(kind), m.start(kind) + 1))
            pos = m.end()
        self.i = 0

    def error(self, col: int, msg: str) -> CascadeSyntaxError:
        return CascadeSyntaxError(f"{self.source}:{self.lineno}:{col}: {msg}")

    def peek(self) -> _Tok | None:
        return self.toks[self.i] if self.i < len(self.toks) else None

    def end_col(self) -> int:
        return len(self.text.rstrip()) + 1

    def next(self, what: str) -> _Tok:
        tok = self.peek()
        if tok is None:
            raise self.error(self.end_col(), f"expected {what}, got end of line")
        self.i += 1
        return tok

    def expect(self, text: str) -> _Tok:
        tok = self.next(repr(text))
        if tok.text != text:
            raise self.error(tok.col, f"expected {text!r}, got {tok.text!r}")
        return tok

    def accept(self, text: str) -> bool:
        tok = self.peek()
        if tok is not None and tok.text == text:
            self.i += 1
            return True
        return False


def _parse_ref(ln: _Line, name_tok: _Tok, lhs: bool) -> Ref:
    ln.expect("[")
    terms: list[IndexTerm] = []
    if ln.accept("]"):
        return Ref(name_tok.text, (), name_tok.col)
    while True:
        tok = ln.next("an index")
        if tok.kind == "name" and tok.text[0].islower():
            offset = 0
            nxt = ln.peek()
            if nxt is not None and nxt.text in "+-" and nxt.text:
                ln.i += 1
                num = ln.next("an integer offset")
                if num.kind != "num" or not num.text.isdigit():
                    raise ln.error(num.col, f"expected an integer offset after {nxt.text!r}, got {num.text!r}")
                offset = int(num.text) * (1 if nxt.text == "+" else -1)
            terms.append(IndexTerm(tok.text, offset))
        elif tok.kind == "name":
            if lhs:
                raise ln.error(tok.col, f"output index must be a lower-case index variable, got {tok.text!r}")
            terms.append(IndexTerm(None, 0, tok.text))
        else:
            raise ln.error(tok.col, f"expected an index name, got {tok.text!r}")
        sep = ln.next("',' or ']'")
        if sep.text == "]":
            break
        if sep.text != ",":
            raise ln.error(sep.col, f"expected ',' or ']', got {sep.text!r}")
    return Ref(name_tok.text, tuple(terms), name_tok.col)


def _parse_expr(ln: _Line) -> Expr:
    left = _parse_term(ln)
    while (tok := ln.peek()) is not None and tok.text in ("+", "-"):
        ln.i += 1
        left = BinOp(tok.text, left, _parse_term(ln))
    return left


def _parse_term(ln: _Line) -> Expr:
    left = _parse_unary(ln)
    while (tok := ln.peek()) is not None and tok.text in ("*", "/"):
        ln.i += 1
        left = BinOp(tok.text, left, _parse_unary(ln))
    return left


def _parse_unary(ln: _Line) -> Expr:
    if ln.accept("-"):
        return Neg(_parse_unary(ln))
    return _parse_atom(ln)


def _parse_atom(ln: _Line) -> Expr:
    tok = ln.next("a tensor, number, function or '('")
    if tok.kind == "num":
        return Num(float(tok.text))
    if tok.text == "(":
        inner = _parse_expr(ln)
        ln.expect(")")
        return inner
    if tok.kind == "name":
        nxt = ln.peek()
        if nxt is not None and nxt.text == "(":
            if tok.text not in FUNCTIONS:
                raise ln.error(tok.col, f"unknown function {tok.text!r} (known: {', '.join(sorted(FUNCTIONS))})")
            ln.i += 1
            args = [_parse_expr(ln)]
            while ln.accept(","):
                args.append(_parse_expr(ln))
            ln.expect(")")
            if len(args) != FUNCTIONS[tok.text]:
                raise ln.error(tok.col, f"{tok.text}() takes {FUNCTIONS[tok.text]} argument(s), got {len(args)}")
            return Call(tok.text, tuple(args))
        if nxt is not None and nxt.text == "[":
            return _parse_ref(ln, tok, lhs=False)
        raise ln.error(tok.col, f"tensor {tok.text!r} needs indices, e.g. {tok.text}[m,p]")
    raise ln.error(tok.col, f"expected a tensor, number, function or '(', got {tok.text!r}")


_SIDE_TERM = re.compile(r"\s*([-+]?)\s*([a-z][a-z0-9_]*|\d+)\s*")


def _linear(side: str) -> tuple[dict[str, int], int] | None:
    coefs: dict[str, int] = {}
    const = 0
    pos = 0
    first = True
    while pos < len(side):
        m = _SIDE_TERM.match(side, pos)
        if m is None or m.end() == pos or (not first and not m.group(1)):
            return None
        sign = -1 if m.group(1) == "-" else 1
        if m.group(2).isdigit():
            const += sign * int(m.group(2))
        else:
            coefs[m.group(2)] = coefs.get(m.group(2), 0) + sign
        pos = m.end()
        first = False
    return (coefs, const) if not first else None


def _parse_constraints(ln: _Line, text_from: int) -> tuple[Constraint, ...]:
    rest = ln.text[text_from - 1 :].rstrip()
    out: list[Constraint] = []
    col = text_from
    for part in rest.split(","):
        part_col = col + (len(part) - len(part.lstrip()))
        col += len(part) + 1
        m = re.match(r"^\s*(.+?)\s*(<=|>=|==|<|>)\s*(.+?)\s*$", part)
        if m is None:
            raise ln.error(part_col, f"expected a constraint such as 'm <= p', got {part.strip()!r}")
        left, op, right = m.groups()
        sides = [_linear(left), _linear(right)]
        for side, parsed in zip((left, right), sides):
            if parsed is None:
                raise ln.error(part_col, f"constraint side {side!r} is not a sum of indices and integers")
        (lc, lk), (rc, rk) = sides  # type: ignore[misc]
        coefs = dict(lc)
        for v, k in rc.items():
            coefs[v] = coefs.get(v, 0) - k
        coefs = {v: k for v, k in coefs.items() if k}
        vals = sorted(coefs.values())
        if vals not in ([1], [-1], [-1, 1]):
            raise ln.error(
                part_col,
                f"constraint {part.strip()!r} must bound one index or the difference of two "
                f"(e.g. 'm <= p', 'p - m < 4096')",
            )
        out.append(Constraint(left, op, right, tuple(sorted(coefs.items())), lk - rk))
    return tuple(out)


def _parse_line(ln: _Line, partitions: dict[str, tuple[str, str]]) -> Einsum:
    name_tok = ln.next("an output tensor")
    if name_tok.kind != "name":
        raise ln.error(name_tok.col, f"expected an output tensor name, got {name_tok.text!r}")
    if ln.peek() is None or ln.peek().text != "[":
        raise ln.error(name_tok.col + len(name_tok.text), f"expected '[' after output tensor {name_tok.text!r}")
    out = _parse_ref(ln, name_tok, lhs=True)
    op_tok = ln.next("'=', '+=', 'max=' or 'min='")
    if op_tok.text not in REDUCE_OPS:
        raise ln.error(op_tok.col, f"expected '=', '+=', 'max=' or 'min=', got {op_tok.text!r}")
    expr = _parse_expr(ln)
    constraints: tuple[Constraint, ...] = ()
    tok = ln.peek()
    if tok is not None:
        if tok.text == "where":
            ln.i += 1
            if ln.peek() is None:
                raise ln.error(ln.end_col(), "expected a constraint after 'where'")
            constraints = _parse_constraints(ln, ln.peek().col)
            ln.i = len(ln.toks)
        else:
            raise ln.error(tok.col, f"unexpected {tok.text!r} after the expression")
    e = Einsum(out, expr, REDUCE_OPS[op_tok.text], constraints, ln.lineno)
    if op_tok.text in ("max=", "min=") and not e.reduced_vars:
        raise ln.error(
            op_tok.col, f"{op_tok.text!r} needs an index to reduce, but every right-hand index is on the left"
        )
    out_vars = out.vars
    if len(set(out_vars)) != len(out_vars):
        raise ln.error(out.col, f"output {out} repeats an index")
    for t in out.indices:
        if t.offset not in (0, 1):
            raise ln.error(out.col, f"output index {t} must be a plain index or index+1 (a recurrence)")
    if not e.is_recurrence:
        for r in e.inputs:
            if r.name == out.name:
                raise ln.error(
                    r.col,
                    f"{out.name} reads itself but is not a recurrence: write a running value as "
                    f"{out.name}[i+1,..] = {out.name}[i,..] + ..., or a reduction as {out.name}[..] = X[i,..]",
                )
    in_vars = {v for r in e.inputs for v in r.vars}
    for v in out_vars:
        if v not in in_vars:
            raise ln.error(out.col, f"output index {v!r} of {out.name} does not appear on the right side")
    iterated = set(e.iteration_vars)
    # a constraint on a split index applies per element, or per tile when only the outer part is iterated
    iterated |= {whole for whole, (outer, _) in partitions.items() if outer in iterated}
    for c in constraints:
        for v, _ in c.coefs:
            if v not in iterated:
                raise ln.error(out.col, f"constraint {c} uses index {v!r}, which {out.name} does not iterate")
    return e


def parse_cascade(text: str, source: str = "<cascade>") -> Cascade:
    """Parse cascade notation; raises :class:`CascadeSyntaxError` naming line and column."""
    name = Path(source).stem if source != "<cascade>" else "cascade"
    einsums: list[Einsum] = []
    partitions: dict[str, tuple[str, str]] = {}
    arity: dict[str, tuple[int, int, int]] = {}  # tensor -> (n indices, line, col) where first seen
    for lineno, raw in enumerate(text.splitlines(), start=1):
        code = raw.split("#", 1)[0]
        if not code.strip():
            continue
        ln = _Line(code, source, lineno)
        first = ln.peek()
        assert first is not None
        if first.text == "cascade":
            ln.i += 1
            tok = ln.next("a cascade name")
            if tok.kind != "name":
                raise ln.error(tok.col, f"expected a cascade name, got {tok.text!r}")
            name = tok.text
            if ln.peek() is not None:
                raise ln.error(ln.peek().col, f"unexpected {ln.peek().text!r} after the cascade name")
            continue
        if first.text == "partition":
            ln.i += 1
            whole = ln.next("an index to partition")
            ln.expect("->")
            outer = ln.next("the outer index")
            ln.expect(",")
            inner = ln.next("the inner index")
            for tok in (whole, outer, inner):
                if tok.kind != "name" or not tok.text[0].islower():
                    raise ln.error(tok.col, f"expected a lower-case index name, got {tok.text!r}")
            if ln.peek() is not None:
                raise ln.error(ln.peek().col, f"unexpected {ln.peek().text!r} after the partition")
            if whole.text in partitions:
                raise ln.error(whole.col, f"index {whole.text!r} is partitioned twice")
            if outer.text == inner.text or whole.text in (outer.text, inner.text):
                raise ln.error(outer.col, "partition needs two new, distinct index names")
            partitions[whole.text] = (outer.text, inner.text)
            continue
        e = _parse_line(ln, partitions)
        for r in (e.output, *e.inputs):
            n = len(r.indices)
            if r.name in arity and arity[r.name][0] != n:
                was = arity[r.name]
                raise ln.error(r.col, f"{r.name} has {n} indices here but {was[0]} at line {was[1]}")
            arity.setdefault(r.name, (n, lineno, r.col))
        if any(x.name == e.name for x in einsums):
            raise ln.error(e.output.col, f"tensor {e.name!r} is defined twice (Einsums are single-assignment)")
        einsums.append(e)
    if not einsums:
        raise CascadeSyntaxError(f"{source}:1:1: the cascade has no Einsums")
    produced_at = {e.name: i for i, e in enumerate(einsums)}
    for i, e in enumerate(einsums):
        for r in e.inputs:
            j = produced_at.get(r.name)
            # a recurrence's previous value may be read before its update line (RD[m1] before RD[m1+1])
            if j is not None and j > i and not einsums[j].is_recurrence:
                raise CascadeSyntaxError(
                    f"{source}:{e.line}:{r.col}: {r.name} is read before the Einsum that "
                    f"defines it (line {einsums[j].line})"
                )
            for k, t in enumerate(r.indices):
                if t.bound is None:
                    continue
                d = einsums[j] if j is not None else None
                carried = d.output.indices[k] if d is not None and k < len(d.output.indices) else None
                if carried is None or carried.offset != 1 or carried.var is None or carried.var.upper() != t.bound:
                    raise CascadeSyntaxError(
                        f"{source}:{e.line}:{r.col}: {r.name}[..{t.bound}..] reads a final element, but "
                        f"{r.name} is not a recurrence over {t.bound.lower()} at that position"
                    )
    return Cascade(name, tuple(einsums), partitions, source)


def load_cascade(path: str | Path) -> Cascade:
    path = Path(path)
    if not path.exists():
        raise ValueError(f"cascade file not found: {path}")
    return parse_cascade(path.read_text(), str(path))


def cascade_path(name: str) -> Path:
    """The file of a cascade shipped in ``npu/dataflow/cascades`` (by stem), or a user's path."""
    path = BUILTIN_DIR / f"{name}.einsum"
    if path.exists():
        return path
    if name.endswith(".einsum") or "/" in name:
        if not Path(name).exists():
            raise ValueError(f"cascade file not found: {name}")
        return Path(name)
    known = ", ".join(sorted(p.stem for p in BUILTIN_DIR.glob("*.einsum")))
    raise ValueError(f"unknown cascade {name!r} (shipped: {known}; or give a path to a .einsum file)")


def builtin_cascade(name: str) -> Cascade:
    """A cascade shipped in ``npu/dataflow/cascades`` by file stem, or a path to a user's file."""
    return load_cascade(cascade_path(name))
