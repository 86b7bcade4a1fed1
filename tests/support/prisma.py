"""A small parser of a Prisma schema and the catalog `prisma migrate` would build from it on PostgreSQL.

It understands what the seed uses and refuses what it does not (enums, autoincrement, scalar
lists, unknown attributes) rather than guess. The rules it applies are Prisma's:
- scalar types: String -> text, Int -> integer, BigInt -> bigint, Boolean -> boolean,
  DateTime -> timestamp(3) without time zone, Decimal -> numeric(65,30), Float -> double precision,
  Json -> jsonb, unless a @db.* native type says otherwise;
- @default(now()) is CURRENT_TIMESTAMP, dbgenerated("x") is x, uuid()/cuid() have no database
  default, and neither has @updatedAt (Prisma Client fills it);
- @id is the primary key, @unique and @@unique are unique indexes, @@index is an index whose
  fields may carry sort: Desc; @@fulltext has no PostgreSQL form and is kept aside;
- a relation with fields/references is a foreign key; onDelete defaults to SetNull when the
  relation is optional and Restrict when required, onUpdate to Cascade;
- @@map names the table, @map the column.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from tests.support.catalog import Catalog, Column, ForeignKey, Index, Key, Table, normalize_default

__all__ = [
    "Attribute",
    "Call",
    "Model",
    "PrismaField",
    "PrismaSchema",
    "Ref",
    "Str",
    "expected_catalog",
    "extract_prisma_block",
    "parse_schema",
    "seed_path",
]

_SEED_NAME = "gwm-crm-prisma-schema.md"


def seed_path() -> Path:
    """The seed document: $GWM_PRISMA_SEED, docs/seed/ in the repo, or the shared workspace copy."""
    candidates = [
        os.environ.get("GWM_PRISMA_SEED", ""),
        str(Path(__file__).resolve().parents[2] / "docs" / "seed" / _SEED_NAME),
        f"/work/shared/seed/{_SEED_NAME}",
    ]
    for candidate in candidates:
        if candidate and Path(candidate).is_file():
            return Path(candidate)
    raise FileNotFoundError(f"the seed {_SEED_NAME} is in none of {[c for c in candidates if c]}")


def extract_prisma_block(markdown: str) -> str:
    """The one ```prisma fenced block of a markdown document."""
    blocks = re.findall(r"^```prisma[ \t]*\n(.*?)^```", markdown, re.MULTILINE | re.DOTALL)
    if len(blocks) != 1:
        raise ValueError(f"expected exactly one ```prisma block, found {len(blocks)}")
    return str(blocks[0])


# --- tokens and attribute values ---------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Str:
    value: str


@dataclass(frozen=True, slots=True)
class Num:
    value: str


@dataclass(frozen=True, slots=True)
class Ref:
    """A bare identifier: a field name, an enum-like constant (Desc, Cascade) or true/false."""

    name: str


@dataclass(frozen=True, slots=True)
class Call:
    """A function call or an attribute: name(args). Named arguments carry their name."""

    name: str
    args: tuple[tuple[str | None, Value], ...] = ()

    def positional(self) -> list[Value]:
        return [v for k, v in self.args if k is None]

    def named(self, key: str) -> Value | None:
        for k, v in self.args:
            if k == key:
                return v
        return None


Value = Str | Num | Ref | Call | tuple["Value", ...]
Attribute = Call

_TOKEN = re.compile(
    r"""\s*(?:
      (?P<comment>//.*)
    | (?P<str>"(?:[^"\\]|\\.)*")
    | (?P<num>-?\d+(?:\.\d+)?)
    | (?P<name>[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*)
    | (?P<punct>@@|[@()\[\],:?])
    )""",
    re.VERBOSE,
)


def _tokenize(line: str) -> list[tuple[str, str]]:
    tokens: list[tuple[str, str]] = []
    pos = 0
    while pos < len(line):
        if not line[pos:].strip():
            break
        match = _TOKEN.match(line, pos)
        if match is None:
            raise ValueError(f"cannot read {line[pos:]!r} in {line!r}")
        kind = match.lastgroup
        assert kind is not None
        if kind == "comment":
            break
        tokens.append((kind, match[kind]))
        pos = match.end()
    return tokens


class _Reader:
    def __init__(self, line: str) -> None:
        self.line = line
        self.tokens = _tokenize(line)
        self.pos = 0

    def peek(self, offset: int = 0) -> tuple[str, str] | None:
        i = self.pos + offset
        return self.tokens[i] if i < len(self.tokens) else None

    def next(self) -> tuple[str, str]:
        token = self.peek()
        if token is None:
            raise ValueError(f"unexpected end of {self.line!r}")
        self.pos += 1
        return token

    def accept(self, value: str) -> bool:
        token = self.peek()
        if token is not None and token[0] == "punct" and token[1] == value:
            self.pos += 1
            return True
        return False

    def expect(self, value: str) -> None:
        if not self.accept(value):
            raise ValueError(f"expected {value!r} at {self.peek()} in {self.line!r}")

    def name(self) -> str:
        kind, value = self.next()
        if kind != "name":
            raise ValueError(f"expected a name, got {value!r} in {self.line!r}")
        return value

    def value(self) -> Value:
        kind, lexeme = self.next()
        if kind == "str":
            return Str(re.sub(r"\\(.)", r"\1", lexeme[1:-1]))
        if kind == "num":
            return Num(lexeme)
        if kind == "name":
            if self.accept("("):
                return Call(lexeme, self.arguments())
            return Ref(lexeme)
        if kind == "punct" and lexeme == "[":
            items: list[Value] = []
            while not self.accept("]"):
                items.append(self.value())
                if not self.accept(","):
                    self.expect("]")
                    break
            return tuple(items)
        raise ValueError(f"unexpected {lexeme!r} in {self.line!r}")

    def arguments(self) -> tuple[tuple[str | None, Value], ...]:
        """After '(': arguments up to the matching ')'."""
        args: list[tuple[str | None, Value]] = []
        while not self.accept(")"):
            key: str | None = None
            ahead, after = self.peek(), self.peek(1)
            if ahead is not None and ahead[0] == "name" and after == ("punct", ":"):
                key = self.name()
                self.expect(":")
            args.append((key, self.value()))
            if not self.accept(","):
                self.expect(")")
                break
        return tuple(args)

    def attributes(self, marker: str) -> list[Call]:
        attrs: list[Call] = []
        while self.peek() is not None:
            self.expect(marker)
            name = self.name()
            attrs.append(Call(name, self.arguments() if self.accept("(") else ()))
        return attrs


# --- the schema ---------------------------------------------------------------------------------


@dataclass(slots=True)
class PrismaField:
    name: str
    type: str
    optional: bool
    is_list: bool
    attributes: list[Call]

    def attribute(self, name: str) -> Call | None:
        found = [a for a in self.attributes if a.name == name]
        if len(found) > 1:
            raise ValueError(f"field {self.name}: @{name} given twice")
        return found[0] if found else None

    @property
    def column(self) -> str:
        mapped = self.attribute("map")
        return _string(mapped.positional()[0]) if mapped else self.name


@dataclass(slots=True)
class Model:
    name: str
    fields: list[PrismaField] = field(default_factory=list)
    attributes: list[Call] = field(default_factory=list)

    @property
    def table(self) -> str:
        mapped = [a for a in self.attributes if a.name == "map"]
        return _string(mapped[0].positional()[0]) if mapped else self.name

    def field(self, name: str) -> PrismaField:
        for f in self.fields:
            if f.name == name:
                return f
        raise ValueError(f"model {self.name} has no field {name}")


@dataclass(slots=True)
class PrismaSchema:
    models: dict[str, Model]
    enums: dict[str, list[str]]


_BLOCK = re.compile(r"^(model|enum|generator|datasource|view|type)\s+(\w+)\s*\{\s*$")
_SCALARS = {"String", "Int", "BigInt", "Boolean", "DateTime", "Decimal", "Float", "Json", "Bytes"}


def parse_schema(source: str) -> PrismaSchema:
    """Models (and enum names) of a Prisma schema; generator and datasource blocks are skipped."""
    models: dict[str, Model] = {}
    enums: dict[str, list[str]] = {}
    lines = iter(source.splitlines())
    for raw in lines:
        line = raw.strip()
        if not line or line.startswith("//"):
            continue
        match = _BLOCK.match(line)
        if match is None:
            raise ValueError(f"unexpected line outside a block: {raw!r}")
        kind, name = match.groups()
        body = list(_block_body(lines, name))
        if kind == "model":
            if name in models:
                raise ValueError(f"model {name} defined twice")
            models[name] = _parse_model(name, body)
        elif kind == "enum":
            enums[name] = [_Reader(b).name() for b in body if _tokenize(b) and not b.strip().startswith("@@")]
        elif kind in ("view", "type"):
            raise NotImplementedError(f"{kind} blocks are not supported ({name})")
    return PrismaSchema(models, enums)


def _block_body(lines: Iterator[str], name: str) -> Iterator[str]:
    # Prisma puts a block's closing brace on a line of its own; braces inside strings ("{}") are data.
    for raw in lines:
        if raw.strip() == "}":
            return
        yield raw
    raise ValueError(f"block {name} is not closed")


def _parse_model(name: str, body: list[str]) -> Model:
    model = Model(name)
    for raw in body:
        reader = _Reader(raw)
        first = reader.peek()
        if first is None:
            continue
        if first == ("punct", "@@"):
            model.attributes.extend(reader.attributes("@@"))
            continue
        field_name = reader.name()
        field_type = reader.name()
        optional = reader.accept("?")
        is_list = False
        if reader.accept("["):
            reader.expect("]")
            is_list = True
        model.fields.append(PrismaField(field_name, field_type, optional, is_list, reader.attributes("@")))
    return model


def _string(value: Value | None) -> str:
    if not isinstance(value, Str):
        raise ValueError(f"expected a string, got {value!r}")
    return value.value


def _names(value: Value | None) -> list[str]:
    if not isinstance(value, tuple) or not all(isinstance(v, Ref) for v in value):
        raise ValueError(f"expected a list of field names, got {value!r}")
    return [v.name for v in value if isinstance(v, Ref)]


# --- from schema to catalog ---------------------------------------------------------------------

_DEFAULT_TYPES = {
    "String": "text",
    "Int": "integer",
    "BigInt": "bigint",
    "Boolean": "boolean",
    "DateTime": "timestamp(3) without time zone",
    "Decimal": "numeric(65,30)",
    "Float": "double precision",
    "Json": "jsonb",
    "Bytes": "bytea",
}

# @db.<native>: (scalar types it applies to, format_type() spelling with and without arguments)
_NATIVE_TYPES: dict[str, tuple[set[str], str, str]] = {
    "Uuid": ({"String"}, "uuid", ""),
    "Text": ({"String"}, "text", ""),
    "Inet": ({"String"}, "inet", ""),
    "Citext": ({"String"}, "citext", ""),
    "VarChar": ({"String"}, "character varying", "character varying({0})"),
    "Char": ({"String"}, "character(1)", "character({0})"),
    "Timestamptz": ({"DateTime"}, "timestamp with time zone", "timestamp({0}) with time zone"),
    "Timestamp": ({"DateTime"}, "timestamp without time zone", "timestamp({0}) without time zone"),
    "Date": ({"DateTime"}, "date", ""),
    "Decimal": ({"Decimal"}, "numeric", "numeric({0},{1})"),
    "Integer": ({"Int"}, "integer", ""),
    "SmallInt": ({"Int"}, "smallint", ""),
    "BigInt": ({"BigInt"}, "bigint", ""),
    "Boolean": ({"Boolean"}, "boolean", ""),
    "DoublePrecision": ({"Float"}, "double precision", ""),
    "Real": ({"Float"}, "real", ""),
    "Json": ({"Json"}, "json", ""),
    "JsonB": ({"Json"}, "jsonb", ""),
}

_ACTIONS = {
    "Cascade": "CASCADE",
    "Restrict": "RESTRICT",
    "NoAction": "NO ACTION",
    "SetNull": "SET NULL",
    "SetDefault": "SET DEFAULT",
}
_FIELD_ATTRIBUTES = {"id", "default", "map", "unique", "updatedAt", "relation"}
_MODEL_ATTRIBUTES = {"map", "id", "unique", "index", "fulltext"}
_RELATION_ARGUMENTS = {None, "name", "fields", "references", "onDelete", "onUpdate", "map"}
_CLIENT_SIDE_DEFAULTS = {"uuid", "cuid", "nanoid", "ulid"}


def expected_catalog(schema: PrismaSchema) -> Catalog:
    """The tables, keys, indexes and foreign keys `prisma migrate` creates for these models."""
    catalog: Catalog = {}
    for model in schema.models.values():
        table = Table(model.table)
        if table.name in catalog:
            raise ValueError(f"two models map to table {table.name}")
        catalog[table.name] = table
        for f in model.fields:
            unknown = {a.name for a in f.attributes if not a.name.startswith("db.")} - _FIELD_ATTRIBUTES
            if unknown:
                raise NotImplementedError(f"{model.name}.{f.name}: unsupported attribute {sorted(unknown)}")
            if f.type in _SCALARS:
                _add_scalar(model, f, table, schema)
            elif f.type in schema.models:
                relation = f.attribute("relation")
                if relation is not None and relation.named("fields") is not None:
                    table.foreign_keys.append(_foreign_key(model, f, relation, schema))
            elif f.type in schema.enums:
                raise NotImplementedError(f"{model.name}.{f.name}: enum columns are not supported")
            else:
                raise ValueError(f"{model.name}.{f.name}: unknown type {f.type}")
        for attribute in model.attributes:
            _apply_model_attribute(model, attribute, table)
        if table.primary_key is None:
            raise ValueError(f"model {model.name} has no @id or @@id")
    return catalog


def _add_scalar(model: Model, f: PrismaField, table: Table, schema: PrismaSchema) -> None:
    where = f"{model.name}.{f.name}"
    if f.is_list:
        raise NotImplementedError(f"{where}: scalar lists are not supported")
    pg_type = _DEFAULT_TYPES[f.type]
    natives = [a for a in f.attributes if a.name.startswith("db.")]
    if len(natives) > 1:
        raise ValueError(f"{where}: more than one native type")
    if natives:
        native = natives[0]
        spec = _NATIVE_TYPES.get(native.name[3:])
        if spec is None:
            raise NotImplementedError(f"{where}: native type @{native.name} is not supported")
        scalars, bare, with_args = spec
        if f.type not in scalars:
            raise ValueError(f"{where}: @{native.name} does not apply to {f.type}")
        args = [a.value for a in native.positional() if isinstance(a, Num)]
        if len(args) != len(native.args):
            raise ValueError(f"{where}: @{native.name} takes numbers")
        pg_type = with_args.format(*args) if args else bare
        if args and not with_args:
            raise ValueError(f"{where}: @{native.name} takes no arguments")
    default = None
    default_attr = f.attribute("default")
    if default_attr is not None:
        default = _default_sql(where, f.type, default_attr)
    column = Column(pg_type, f.optional, normalize_default(default, pg_type))
    if f.column in table.columns:
        raise ValueError(f"{where}: column {f.column} defined twice")
    table.columns[f.column] = column
    if f.attribute("id") is not None:
        if table.primary_key is not None:
            raise ValueError(f"{model.name}: more than one @id")
        table.primary_key = (f.column,)
    if f.attribute("unique") is not None:
        table.unique_keys.append(Key((f.column,)))


def _default_sql(where: str, scalar: str, attribute: Call) -> str | None:
    args = attribute.positional()
    if len(args) != 1:
        raise ValueError(f"{where}: @default takes one value")
    value = args[0]
    if isinstance(value, Call):
        if value.name == "dbgenerated":
            return _string(value.positional()[0])
        if value.name == "now" and scalar == "DateTime":
            return "CURRENT_TIMESTAMP"
        if value.name in _CLIENT_SIDE_DEFAULTS and scalar == "String":
            return None  # generated by Prisma Client, not by the database
        raise NotImplementedError(f"{where}: @default({value.name}()) is not supported")
    if isinstance(value, Str) and scalar in ("String", "Json", "DateTime", "Decimal", "BigInt"):
        return "'" + value.value.replace("'", "''") + "'"
    if isinstance(value, Num) and scalar in ("Int", "BigInt", "Decimal", "Float"):
        return value.value
    if isinstance(value, Ref) and value.name in ("true", "false") and scalar == "Boolean":
        return value.name
    raise ValueError(f"{where}: @default({value!r}) does not fit {scalar}")


def _foreign_key(model: Model, f: PrismaField, relation: Call, schema: PrismaSchema) -> ForeignKey:
    where = f"{model.name}.{f.name}"
    if f.is_list:
        raise ValueError(f"{where}: a list side cannot hold fields/references")
    target = schema.models[f.type]
    fk_fields = [model.field(n) for n in _names(relation.named("fields"))]
    ref_fields = [target.field(n) for n in _names(relation.named("references"))]
    if len(fk_fields) != len(ref_fields) or not fk_fields:
        raise ValueError(f"{where}: fields and references differ in length")
    optional = any(x.optional for x in fk_fields)
    if optional != f.optional:
        raise ValueError(f"{where}: relation optionality ({f.optional}) disagrees with its fields")
    unknown = {k for k, _ in relation.args} - _RELATION_ARGUMENTS
    if unknown:
        raise NotImplementedError(f"{where}: @relation argument(s) {sorted(map(str, unknown))}")
    return ForeignKey(
        columns=tuple(x.column for x in fk_fields),
        ref_table=target.table,
        ref_columns=tuple(x.column for x in ref_fields),
        on_delete=_action(where, relation.named("onDelete"), "SET NULL" if optional else "RESTRICT"),
        on_update=_action(where, relation.named("onUpdate"), "CASCADE"),
    )


def _action(where: str, value: Value | None, default: str) -> str:
    if value is None:
        return default
    if not isinstance(value, Ref) or value.name not in _ACTIONS:
        raise ValueError(f"{where}: unknown referential action {value!r}")
    return _ACTIONS[value.name]


def _apply_model_attribute(model: Model, attribute: Call, table: Table) -> None:
    where = f"{model.name} @@{attribute.name}"
    if attribute.name not in _MODEL_ATTRIBUTES:
        raise NotImplementedError(f"{where} is not supported")
    if attribute.name == "map":
        return
    args = attribute.positional()
    extra = {k for k, _ in attribute.args} - {None, "name", "map", "type"}
    if len(args) != 1 or extra:
        raise ValueError(f"{where}: expected one list of fields")
    index_type = attribute.named("type")
    columns: list[str] = []
    descending = False
    for item in args[0] if isinstance(args[0], tuple) else ():
        if isinstance(item, Ref):
            columns.append(model.field(item.name).column)
        elif isinstance(item, Call) and set(k for k, _ in item.args) == {"sort"}:
            sort = item.named("sort")
            if sort not in (Ref("Asc"), Ref("Desc")):
                raise ValueError(f"{where}: sort must be Asc or Desc")
            column = model.field(item.name).column
            descending = descending or sort == Ref("Desc")
            columns.append(f"{column} DESC" if sort == Ref("Desc") else column)
        else:
            raise NotImplementedError(f"{where}: field argument {item!r}")
    if not columns:
        raise ValueError(f"{where}: no fields")
    if attribute.name == "id":
        if table.primary_key is not None or descending:
            raise ValueError(f"{where}: a second or sorted primary key")
        table.primary_key = tuple(columns)
    elif attribute.name == "unique":
        if descending or index_type is not None:
            raise NotImplementedError(f"{where}: sorted or typed unique keys")
        table.unique_keys.append(Key(tuple(columns)))
    elif attribute.name == "index":
        method = "btree"
        if index_type is not None:
            if not isinstance(index_type, Ref):
                raise ValueError(f"{where}: type must be a name")
            method = index_type.name.lower()
        table.indexes.append(Index(tuple(columns), method=method))
    else:  # fulltext
        table.fulltext.append(tuple(columns))
