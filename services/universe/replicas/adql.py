"""A parser for the small part of ADQL that the Gaia TAP replica answers.

What people send to ``gaiadr3.gaia_source`` through astroquery or by hand: a single-table
SELECT with ``TOP``, a column list or ``*``, ``DISTANCE(POINT, POINT)``, a WHERE clause of
AND-ed predicates (``1=CONTAINS(POINT(...), CIRCLE(...)|BOX(...))``, comparisons,
BETWEEN, IN, IS NULL) and ORDER BY. Anything else is valid ADQL the replica cannot
answer: it raises :class:`AdqlUnsupported` naming the construct, so the replica can send
back a TAP error instead of a wrong answer. Syntax errors raise :class:`AdqlSyntaxError`
with the line and column, as the real service's parser reports them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

# -- errors -------------------------------------------------------------------------


class AdqlError(Exception):
    """Any query the replica refuses; ``str()`` is the message for the TAP error."""


class AdqlSyntaxError(AdqlError):
    pass


class AdqlUnsupported(AdqlError):
    """Valid ADQL (or close to it) that this replica does not implement."""


# -- syntax tree --------------------------------------------------------------------


@dataclass(frozen=True)
class Span:
    """Where a token or identifier sits in the query (1-based, like the real parser)."""

    line: int
    col: int
    end_line: int
    end_col: int

    def __str__(self) -> str:
        return f"[l.{self.line} c.{self.col} - l.{self.end_line} c.{self.end_col}]"


@dataclass(frozen=True)
class ColumnRef:
    name: str  # lower-cased unless it was a delimited ("quoted") identifier
    qualifier: str | None
    span: Span


@dataclass(frozen=True)
class Point:
    lon: ColumnRef | float
    lat: ColumnRef | float


@dataclass(frozen=True)
class Distance:
    a: Point
    b: Point


@dataclass(frozen=True)
class Circle:
    ra: float
    dec: float
    radius: float


@dataclass(frozen=True)
class Box:
    ra: float
    dec: float
    width: float
    height: float


@dataclass(frozen=True)
class Contains:
    point: Point
    region: Circle | Box


Number = int | float  # integer literals stay int: source_ids do not fit a float
Operand = ColumnRef | Number | str | Distance | Contains


@dataclass(frozen=True)
class Comparison:
    left: Operand
    op: str  # one of = != < <= > >=
    right: Operand


@dataclass(frozen=True)
class Between:
    operand: Operand
    low: Operand
    high: Operand
    negated: bool


@dataclass(frozen=True)
class InList:
    operand: Operand
    values: tuple[Number | str, ...]
    negated: bool


@dataclass(frozen=True)
class IsNull:
    column: ColumnRef
    negated: bool


Predicate = Comparison | Between | InList | IsNull


@dataclass(frozen=True)
class Star:
    qualifier: str | None


@dataclass(frozen=True)
class SelectItem:
    expr: ColumnRef | Distance | Star
    alias: str | None


@dataclass(frozen=True)
class OrderItem:
    expr: ColumnRef | Distance | int  # an int is a 1-based select-list position
    descending: bool


@dataclass(frozen=True)
class Query:
    top: int | None
    items: tuple[SelectItem, ...]
    schema: str | None
    table: str
    alias: str | None
    table_span: Span
    where: tuple[Predicate, ...]
    order: tuple[OrderItem, ...]


# -- tokens -------------------------------------------------------------------------

_TOKEN = re.compile(
    r"""
    (?P<ws>\s+|--[^\n]*)
  | (?P<number>(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?)
  | (?P<string>'(?:[^']|'')*')
  | (?P<qident>"(?:[^"]|"")+")
  | (?P<ident>[A-Za-z_][A-Za-z0-9_]*)
  | (?P<op><=|>=|<>|!=|\|\||[=<>(),.*;+\-/])
    """,
    re.VERBOSE,
)

# Keywords that end a select item or a table reference (so they are not read as aliases).
_RESERVED = {
    "SELECT", "FROM", "WHERE", "ORDER", "BY", "GROUP", "HAVING", "AND", "OR", "NOT", "AS", "ASC", "DESC",
    "TOP", "DISTINCT", "ALL", "JOIN", "INNER", "LEFT", "RIGHT", "FULL", "OUTER", "NATURAL", "CROSS", "ON",
    "USING", "UNION", "EXCEPT", "INTERSECT", "OFFSET", "LIMIT", "BETWEEN", "IN", "IS", "NULL", "LIKE", "ILIKE",
    "EXISTS", "CASE", "WITH",
}  # fmt: skip


@dataclass(frozen=True)
class Token:
    kind: str  # number, string, ident, qident, op, eof
    text: str
    line: int
    col: int

    @property
    def upper(self) -> str:
        return self.text.upper() if self.kind == "ident" else self.text

    @property
    def end_col(self) -> int:
        return self.col + len(self.text) - 1

    def describe(self) -> str:
        return "<EOF>" if self.kind == "eof" else f'"{self.text}"'


def tokenize(text: str) -> list[Token]:
    tokens: list[Token] = []
    pos, line, line_start = 0, 1, 0
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        col = pos - line_start + 1
        if not m:
            raise AdqlSyntaxError(f'Lexical error at line {line}, column {col}. Encountered: "{text[pos]}"')
        kind = m.lastgroup or "ws"
        if kind != "ws":
            tokens.append(Token(kind, m.group(), line, col))
        for offset, ch in enumerate(m.group()):
            if ch == "\n":
                line, line_start = line + 1, pos + offset + 1
        pos = m.end()
    tokens.append(Token("eof", "", line, pos - line_start + 1))
    return tokens


# -- parser -------------------------------------------------------------------------

_FUNCTIONS_KNOWN_UNSUPPORTED = {
    "COUNT", "SUM", "AVG", "MIN", "MAX", "ABS", "SQRT", "POWER", "LOG", "LOG10", "EXP", "FLOOR", "CEILING",
    "ROUND", "TRUNCATE", "MOD", "SIN", "COS", "TAN", "ASIN", "ACOS", "ATAN", "ATAN2", "DEGREES", "RADIANS",
    "RAND", "PI", "AREA", "CENTROID", "COORD1", "COORD2", "COORDSYS", "INTERSECTS", "POLYGON", "REGION",
    "LOWER", "UPPER", "CAST", "COALESCE", "GAIA_HEALPIX_INDEX",
}  # fmt: skip


class _Parser:
    def __init__(self, text: str) -> None:
        self.tokens = tokenize(text)
        self.i = 0

    # token helpers
    @property
    def tok(self) -> Token:
        return self.tokens[self.i]

    def peek(self, ahead: int = 1) -> Token:
        return self.tokens[min(self.i + ahead, len(self.tokens) - 1)]

    def advance(self) -> Token:
        tok = self.tok
        self.i = min(self.i + 1, len(self.tokens) - 1)
        return tok

    def at(self, *words: str) -> bool:
        return self.tok.kind in ("ident", "op") and self.tok.upper in words

    def accept(self, *words: str) -> Token | None:
        return self.advance() if self.at(*words) else None

    def expect(self, *words: str) -> Token:
        if not self.at(*words):
            self.fail(" or ".join(f'"{w}"' for w in words))
        return self.advance()

    def fail(self, expected: str) -> None:
        tok = self.tok
        raise AdqlSyntaxError(
            f"Encountered {tok.describe()} at line {tok.line}, column {tok.col}. Was expecting one of: {expected}"
        )

    # grammar
    def query(self) -> Query:
        if self.at("WITH"):
            raise AdqlUnsupported("common table expressions (WITH)")
        self.expect("SELECT")
        if self.accept("DISTINCT"):
            raise AdqlUnsupported("SELECT DISTINCT")
        self.accept("ALL")
        top = None
        if self.accept("TOP"):
            tok = self.advance()
            if tok.kind != "number" or not tok.text.isdigit():
                self.i -= 1
                self.fail("an unsigned integer after TOP")
            top = int(tok.text)
        items = [self.select_item()]
        while self.accept(","):
            items.append(self.select_item())
        self.expect("FROM")
        if self.at("("):
            raise AdqlUnsupported("sub-queries")
        schema, table, table_span = self.table_name()
        alias = self.alias()
        if self.at(","):
            raise AdqlUnsupported("queries on more than one table")
        if self.at("JOIN", "INNER", "LEFT", "RIGHT", "FULL", "NATURAL", "CROSS"):
            raise AdqlUnsupported("JOIN")
        where: list[Predicate] = []
        if self.accept("WHERE"):
            where = self.condition()
        if self.at("GROUP", "HAVING"):
            raise AdqlUnsupported(f"{self.tok.upper} BY" if self.tok.upper == "GROUP" else "HAVING")
        order: list[OrderItem] = []
        if self.accept("ORDER"):
            self.expect("BY")
            order = [self.order_item()]
            while self.accept(","):
                order.append(self.order_item())
        if self.at("UNION", "EXCEPT", "INTERSECT"):
            raise AdqlUnsupported(self.tok.upper)
        if self.at("OFFSET", "LIMIT"):
            raise AdqlUnsupported(self.tok.upper + " (use TOP)")
        self.accept(";")
        if self.tok.kind != "eof":
            self.fail("<EOF>")
        return Query(top, tuple(items), schema, table, alias, table_span, tuple(where), tuple(order))

    def identifier(self) -> tuple[str, Span]:
        tok = self.tok
        if tok.kind == "qident":
            self.advance()
            return tok.text[1:-1].replace('""', '"'), Span(tok.line, tok.col, tok.line, tok.end_col)
        if tok.kind != "ident" or tok.upper in _RESERVED:
            self.fail("an identifier")
        self.advance()
        return tok.text.lower(), Span(tok.line, tok.col, tok.line, tok.end_col)

    def table_name(self) -> tuple[str | None, str, Span]:
        first, span = self.identifier()
        if self.accept("."):
            second, span2 = self.identifier()
            return first, second, Span(span.line, span.col, span2.end_line, span2.end_col)
        return None, first, span

    def alias(self) -> str | None:
        if self.accept("AS"):
            return self.identifier()[0]
        if self.tok.kind == "qident" or (self.tok.kind == "ident" and self.tok.upper not in _RESERVED):
            return self.identifier()[0]
        return None

    def select_item(self) -> SelectItem:
        if self.accept("*"):
            return SelectItem(Star(None), None)
        if self.tok.kind in ("ident", "qident") and self.peek().text == ".":
            ahead = 2 if self.peek(2).text == "*" else 4 if self.peek(3).text == "." and self.peek(4).text == "*" else 0
            if ahead:
                qualifier = self.identifier()[0]
                if ahead == 4:
                    self.advance()
                    qualifier += "." + self.identifier()[0]
                self.advance()
                self.advance()
                return SelectItem(Star(qualifier), None)
        expr = self.value()
        if isinstance(expr, (int, float, str, Contains)):
            raise AdqlUnsupported("constants or geometries in the select list")
        self.reject_arithmetic()
        return SelectItem(expr, self.alias())

    def reject_arithmetic(self) -> None:
        if self.at("+", "-", "*", "/", "||"):
            raise AdqlUnsupported("arithmetic expressions")

    def order_item(self) -> OrderItem:
        expr: ColumnRef | Distance | int
        if self.tok.kind == "number" and self.tok.text.isdigit():
            expr = int(self.advance().text)
        else:
            value = self.value()
            if not isinstance(value, (ColumnRef, Distance)):
                raise AdqlUnsupported("ORDER BY on an expression")
            expr = value
        self.reject_arithmetic()
        descending = bool(self.accept("DESC"))
        if not descending:
            self.accept("ASC")
        return OrderItem(expr, descending)

    def condition(self) -> list[Predicate]:
        predicates = self.conjunct()
        while self.accept("AND"):
            predicates += self.conjunct()
        if self.at("OR"):
            raise AdqlUnsupported("OR in the WHERE clause")
        return predicates

    def conjunct(self) -> list[Predicate]:
        if self.at("NOT") and self.peek().upper != "EXISTS":
            raise AdqlUnsupported("NOT (except NOT BETWEEN, NOT IN and IS NOT NULL)")
        if self.at("EXISTS") or (self.at("NOT") and self.peek().upper == "EXISTS"):
            raise AdqlUnsupported("EXISTS")
        if self.at("(") and not self._parenthesised_value():
            self.advance()
            inner = self.condition()
            self.expect(")")
            return inner
        return [self.predicate()]

    def _parenthesised_value(self) -> bool:
        """Whether a '(' opens a value such as (1) rather than a nested condition."""
        return self.peek().kind == "number" and self.peek(2).text == ")"

    def predicate(self) -> Predicate:
        left = self.value()
        self.reject_arithmetic()
        if self.accept("IS"):
            negated = bool(self.accept("NOT"))
            self.expect("NULL")
            if not isinstance(left, ColumnRef):
                raise AdqlUnsupported("IS NULL on an expression")
            return IsNull(left, negated)
        negated = bool(self.accept("NOT"))
        if self.accept("BETWEEN"):
            low = self.value()
            self.expect("AND")
            high = self.value()
            return Between(left, low, high, negated)
        if self.accept("IN"):
            self.expect("(")
            if self.at("SELECT"):
                raise AdqlUnsupported("sub-queries")
            values = [self.literal()]
            while self.accept(","):
                values.append(self.literal())
            self.expect(")")
            return InList(left, tuple(values), negated)
        if self.at("LIKE", "ILIKE"):
            raise AdqlUnsupported(self.tok.upper)
        if negated:
            self.fail('"BETWEEN" or "IN"')
        op_tok = self.tok
        if not self.at("=", "!=", "<>", "<", "<=", ">", ">="):
            self.fail('"=", "<>", "<", "<=", ">", ">=", "BETWEEN", "IN" or "IS"')
        self.advance()
        right = self.value()
        self.reject_arithmetic()
        return Comparison(left, "!=" if op_tok.text == "<>" else op_tok.text, right)

    def literal(self) -> Number | str:
        value = self.value()
        if not isinstance(value, (int, float, str)):
            raise AdqlUnsupported("IN lists of anything but constants")
        return value

    def number(self) -> float:
        value = self.value()
        if not isinstance(value, (int, float)):
            raise AdqlUnsupported("region parameters that are not numeric constants")
        return float(value)

    def value(self) -> Operand:
        tok = self.tok
        if self.accept("("):
            inner = self.value()
            self.expect(")")
            return inner
        if self.at("-", "+"):
            self.advance()
            if self.tok.kind != "number":
                raise AdqlUnsupported("arithmetic expressions")
            number = _number(self.advance().text)
            return -number if tok.text == "-" else number
        if tok.kind == "number":
            self.advance()
            return _number(tok.text)
        if tok.kind == "string":
            self.advance()
            return tok.text[1:-1].replace("''", "'")
        if tok.kind == "ident" and self.peek().text == "(":
            return self.function()
        if tok.kind in ("ident", "qident"):
            if tok.kind == "ident" and tok.upper == "NULL":
                raise AdqlUnsupported("NULL outside IS [NOT] NULL")
            name, span = self.identifier()
            parts, end = [name], span
            while self.accept("."):  # column, table.column or schema.table.column
                part, end = self.identifier()
                parts.append(part)
            if len(parts) > 3:
                self.fail("a column reference of at most three parts")
            qualifier = ".".join(parts[:-1]) or None
            return ColumnRef(parts[-1], qualifier, Span(span.line, span.col, end.end_line, end.end_col))
        self.fail("a column, a number, a string or a function")
        raise AssertionError  # fail() always raises

    def function(self) -> Distance | Contains:
        name = self.advance().upper
        self.expect("(")
        if name == "DISTANCE":
            a = self.point()
            self.expect(",")
            b = self.point()
            self.expect(")")
            return Distance(a, b)
        if name == "CONTAINS":
            point = self.point()
            self.expect(",")
            region = self.region()
            self.expect(")")
            return Contains(point, region)
        if name in ("POINT", "CIRCLE", "BOX"):
            raise AdqlUnsupported(f"{name} outside CONTAINS or DISTANCE")
        if name in _FUNCTIONS_KNOWN_UNSUPPORTED:
            raise AdqlUnsupported(f"the function {name}")
        raise AdqlSyntaxError(f"Unknown function {name} at line {self.tok.line}, column {self.tok.col}")

    def coordsys(self) -> None:
        """The optional leading coordinate-system string (deprecated in ADQL 2.1)."""
        if self.tok.kind == "string":
            frame = self.advance().text[1:-1].strip().upper()
            if frame not in ("ICRS", ""):
                raise AdqlUnsupported(f"the coordinate system '{frame}' (only ICRS)")
            self.expect(",")

    def point(self) -> Point:
        word = self.expect("POINT").upper
        self.expect("(")
        self.coordsys()
        lon = self.value()
        self.expect(",")
        lat = self.value()
        self.expect(")")
        for part in (lon, lat):
            if not isinstance(part, (ColumnRef, int, float)):
                raise AdqlUnsupported(f"{word} coordinates that are not columns or numbers")
        return Point(*(p if isinstance(p, ColumnRef) else float(p) for p in (lon, lat)))  # type: ignore[arg-type]

    def region(self) -> Circle | Box:
        if not self.at("CIRCLE", "BOX"):
            if self.at("POLYGON", "POINT", "REGION"):
                raise AdqlUnsupported(f"CONTAINS with a {self.tok.upper}")
            self.fail('"CIRCLE" or "BOX"')
        kind = self.advance().upper
        self.expect("(")
        self.coordsys()
        args = [self.number()]
        while self.accept(","):
            args.append(self.number())
        self.expect(")")
        if kind == "CIRCLE":
            if len(args) != 3:
                raise AdqlSyntaxError("CIRCLE takes a centre (ra, dec) and a radius")
            return Circle(*args)
        if len(args) != 4:
            raise AdqlSyntaxError("BOX takes a centre (ra, dec), a width and a height")
        return Box(*args)


def _number(text: str) -> Number:
    return int(text) if text.isdigit() else float(text)


def parse(text: str) -> Query:
    """Parse one ADQL query; raise :class:`AdqlSyntaxError` or :class:`AdqlUnsupported`."""
    return _Parser(text).query()
