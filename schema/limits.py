"""What one operation may cost: selections, estimated cost, validation once per shape, a deadline.

Every check here runs on the parsed document before the expensive validation rules, in this order:

1. Selections: the number of field selections after fragment expansion (every operation of the
   document, plus each fragment definition's own fields once), counted by an iterative walk that
   stops as soon as the bound is passed and never expands a fragment inside itself. Refused with
   extensions.code `TOO_MANY_SELECTIONS`. Then the pairs of same-named fields validation would
   compare (`count_overlaps`), refused with `TOO_MANY_OVERLAPPING_FIELDS`.
2. Cost: the estimate of docs/api.md ("Query cost"), page sizes multiplied along each path,
   summed over every root field and alias. Refused with extensions.code `QUERY_TOO_COSTLY`,
   naming the cost and the limit.
3. Validation (graphql-core's rules and ours), cached under the document's printed form, so
   whitespace, comments and commas do not make a document new (`DocumentCache`, which also keeps
   the parsed form of documents that passed, and only of those).

Beside them, the switches of the deployment's profile (`LimitProfile`, chosen per request by
server/security.py from GWM_ENV): the token and alias limits (aliases counted through fragment
spreads), introspection (`__schema`, `__type`; `__typename` stays) only for callers holding
graphql:adhoc, and for every profile a page size over the maximum refused before execution and no
"Did you mean ..." suggestion in any validation or variable error.

Then, during execution of a query, a deadline (`GWM_OPERATION_TIMEOUT_MS`) is checked before every
field resolution (`OperationLimits.resolve`): the stall it bounds is CPU on the event loop, which no
`await` would interrupt. Past it, every remaining field fails at once and the operation answers
one `OPERATION_TIMEOUT` error with no data; its connection goes back to the pool as for any read.
A statement already running is bounded by the statement timeout. Mutations get no deadline: they
are bounded by the statement timeout and never interrupted, least of all during COMMIT.
"""

from __future__ import annotations

import logging
import re
import sys
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from dataclasses import field as dataclass_field
from typing import Any

from graphql import (
    DocumentNode,
    FieldNode,
    FragmentDefinitionNode,
    FragmentSpreadNode,
    GraphQLError,
    GraphQLField,
    GraphQLInterfaceType,
    GraphQLNamedType,
    GraphQLObjectType,
    GraphQLSchema,
    InlineFragmentNode,
    ListValueNode,
    Node,
    ObjectValueNode,
    OperationDefinitionNode,
    OperationType,
    SelectionSetNode,
    VariableNode,
    get_named_type,
    get_nullable_type,
    is_abstract_type,
    is_composite_type,
    is_enum_type,
    is_input_object_type,
    is_list_type,
    parse,
    print_ast,
    validate,
    value_from_ast_untyped,
    visit,
)
from graphql.language import Visitor
from graphql.validation import ASTValidationRule
from strawberry.extensions import SchemaExtension
from strawberry.extensions.max_aliases import create_validator as aliases_rule
from strawberry.extensions.query_depth_limiter import create_validator as depth_rule
from strawberry.schema.validation_rules.maybe_null import MaybeNullValidationRule
from strawberry.schema.validation_rules.one_of import OneOfInputValidationRule
from strawberry.types.graphql import OperationType as StrawberryOperationType

from auth.permissions import Permission
from resolvers.common.pagination import DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE

__all__ = [
    "DEFAULT_MAX_COST",
    "DEFAULT_MAX_OVERLAPS",
    "DEFAULT_MAX_SELECTIONS",
    "DEFAULT_OPERATION_TIMEOUT_MS",
    "DEVELOPMENT",
    "FIELD_WEIGHTS",
    "PRODUCTION",
    "PROFILE_STATE_KEY",
    "DocumentCache",
    "LimitProfile",
    "OperationLimits",
    "OversizedPage",
    "ProfileRules",
    "admission_cost",
    "count_overlaps",
    "count_selections",
    "estimate",
    "estimate_cost",
    "has_introspection",
    "profile_of",
    "without_suggestions",
]

_log = logging.getLogger("gwm.graphql")

# The defaults (docs/api.md "Query cost"). 500 selections admit GraphiQL's introspection query
# (283 with every option) and every operation in graphql/operations/ (77 at most) with room to spare.
DEFAULT_MAX_SELECTIONS = 500
# The cost counts field resolutions (about 10-20 us of CPU each here): 50,000 admits every shipped
# operation (at most 42,630) and the bench's nested pursuit read (32,701), about half a second of
# CPU, and refuses a walk that multiplies default pages four levels deep (20^4 rows).
DEFAULT_MAX_COST = 50_000
# Pairs of same-named fields to merge (`count_overlaps`): real documents have a handful (an `id` in
# a fragment and beside it), GraphiQL's introspection none; 250 copies of `viewer { credential }`
# (500 selections) have 62,250 and took up to 1.3 s to validate.
DEFAULT_MAX_OVERLAPS = 1_000
DEFAULT_OPERATION_TIMEOUT_MS = 10_000

# Weights beyond the default of 1 per resolved field, as (type, field); "*" matches any type.
FIELD_WEIGHTS: Mapping[tuple[str, str], int] = {
    ("*", "totalCount"): 10,  # a COUNT(*) over the whole filtered list
    ("Query", "pipelineSummary"): 2,  # per stage: an aggregate over every visible project
    ("Document", "searchSnippet"): 2,  # ts_headline over the document's text
}
# The assumed length of a list that is neither a page nor sized by an argument (a caller's roles
# and sessions, the pipeline's stages, a payload's errors, introspection's fields and arguments).
PLAIN_LIST_SIZE = 10

# Depth 15 admits GraphiQL's introspection query (about 13 deep) and any sensible read (the nested
# pursuit read is 7), so introspection needs no exemption.
MAX_DEPTH = 15


@dataclass(frozen=True, slots=True)
class LimitProfile:
    """The switches of one deployment profile (GWM_ENV; docs/deploy.md, "Production switches").

    `rules` are the depth and alias limits as validation rules, made once per profile: strawberry's
    limiter extensions build a new rule class per request, and the validation cache is keyed by the
    rules. The alias rule counts every alias of each operation with its fragment spreads expanded
    (a fragment spread twice counts twice; a fragment inside itself is not expanded again).
    """

    name: str
    max_tokens: int
    max_aliases: int
    # Introspection (`__schema`, `__type`) only for callers holding this permission; None: for all.
    introspection_permission: str | None
    rules: tuple[type[ASTValidationRule], ...] = dataclass_field(default=())

    @classmethod
    def make(cls, name: str, max_tokens: int, max_aliases: int, introspection_permission: str | None) -> LimitProfile:
        rules = (depth_rule(MAX_DEPTH, None, None), aliases_rule(max_aliases))
        return cls(name, max_tokens, max_aliases, introspection_permission, rules)


DEVELOPMENT = LimitProfile.make("development", max_tokens=5_000, max_aliases=30, introspection_permission=None)
PRODUCTION = LimitProfile.make(
    "production", max_tokens=2_000, max_aliases=15, introspection_permission=Permission.GRAPHQL_ADHOC
)
# Where server/security.py puts the request's profile in the ASGI scope's state; a context without
# one (a script executing the schema directly) gets DEVELOPMENT.
PROFILE_STATE_KEY = "gwm.limit_profile"


def profile_of(context: Any) -> LimitProfile:
    """The limit profile of the request `context` belongs to."""
    request = getattr(context, "request", None)
    scope = getattr(request, "scope", None)
    state = scope.get("state") if isinstance(scope, dict) else None
    profile = state.get(PROFILE_STATE_KEY) if isinstance(state, dict) else None
    return profile if isinstance(profile, LimitProfile) else DEVELOPMENT


_SUGGESTION = re.compile(r" ?Did you mean [^?]*\?")


def without_suggestions(errors: Sequence[GraphQLError]) -> None:
    """Drop graphql-core's "Did you mean ...?" from `errors` in place: they spell out the schema."""
    for error in errors:
        if "Did you mean" in error.message:
            error.message = _SUGGESTION.sub("", error.message)


class LimitExceeded(GraphQLError):
    """A document refused before validation; the message names the limit and the value."""


def _introspection_refused(permission: str) -> LimitExceeded:
    return LimitExceeded(
        f"Introspection (__schema, __type) is served only to callers holding {permission}.",
        extensions={"code": "FORBIDDEN", "permission": permission},
    )


@dataclass(frozen=True, slots=True)
class OversizedPage:
    """A `first`/`last` over MAX_PAGE_SIZE: the argument, its value, the field and its response path."""

    argument: str
    value: int
    node: FieldNode
    path: tuple[str, ...]

    def error(self) -> GraphQLError:
        """The refusal, as the resolver's (resolvers/common/pagination.py) words and places it."""
        return GraphQLError(
            f"`{self.argument}` must be between 0 and {MAX_PAGE_SIZE}; got {self.value}.",
            nodes=[self.node],
            path=list(self.path),
            extensions={"code": "BAD_USER_INPUT"},
        )


def has_introspection(document: DocumentNode) -> bool:
    """Whether any selection of the document (fragments included) is `__schema` or `__type`."""
    stack = [
        d.selection_set for d in document.definitions
        if isinstance(d, OperationDefinitionNode | FragmentDefinitionNode)
    ]
    while stack:
        for selection in stack.pop().selections:
            if isinstance(selection, FieldNode):
                if selection.name.value in ("__schema", "__type"):
                    return True
                if selection.selection_set is not None:
                    stack.append(selection.selection_set)
            elif isinstance(selection, InlineFragmentNode):
                stack.append(selection.selection_set)
    return False


def _too_many_selections(limit: int) -> LimitExceeded:
    return LimitExceeded(
        f"The document has more than {limit} field selections after fragment expansion "
        f"(the limit is {limit}); split it into smaller operations.",
        extensions={"code": "TOO_MANY_SELECTIONS", "limit": limit},
    )


def _too_many_overlaps(limit: int) -> LimitExceeded:
    return LimitExceeded(
        f"The document repeats fields under the same name too often: more than {limit} pairs of "
        f"same-named fields would have to be compared (the limit is {limit}); select each field once.",
        extensions={"code": "TOO_MANY_OVERLAPPING_FIELDS", "limit": limit},
    )


def _too_costly(cost: int, limit: int) -> LimitExceeded:
    return LimitExceeded(
        f"The operation's estimated cost is {cost}, over the limit of {limit}: ask for smaller "
        "pages (`first`/`last`), fewer nested lists or fewer aliases (docs/api.md, Query cost).",
        extensions={"code": "QUERY_TOO_COSTLY", "cost": cost, "limit": limit},
    )


# -- 1. selections --------------------------------------------------------------------------------


def count_selections(document: DocumentNode, limit: int) -> int:
    """Field selections after fragment expansion, counting stops at `limit + 1`.

    Each operation is walked with its fragments expanded in place (a fragment already being
    expanded on the current path is not expanded again, so cycles end); each fragment definition
    adds its own fields once more, since validation visits it on its own.
    """
    fragments = {d.name.value: d for d in document.definitions if isinstance(d, FragmentDefinitionNode)}
    count = 0
    # (selection set, names of the fragments expanded on the way to it)
    stack: list[tuple[SelectionSetNode, frozenset[str]]] = []
    for definition in document.definitions:
        if isinstance(definition, OperationDefinitionNode):
            stack.append((definition.selection_set, frozenset()))
        elif isinstance(definition, FragmentDefinitionNode):
            # Its own fields, not expanding spreads (their fields are counted where they expand).
            stack.append((definition.selection_set, frozenset(fragments)))
    while stack:
        selection_set, expanding = stack.pop()
        for selection in selection_set.selections:
            if isinstance(selection, FieldNode):
                count += 1
                if count > limit:
                    return count
                if selection.selection_set is not None:
                    stack.append((selection.selection_set, expanding))
            elif isinstance(selection, InlineFragmentNode):
                stack.append((selection.selection_set, expanding))
            elif isinstance(selection, FragmentSpreadNode):
                name = selection.name.value
                fragment = fragments.get(name)
                if fragment is not None and name not in expanding:
                    stack.append((fragment.selection_set, expanding | {name}))
    return count


def count_overlaps(document: DocumentNode, limit: int) -> int:
    """Pairs of same-named fields that validation must check can merge; counting stops past `limit`.

    Fields answering under one name in one selection set (fragments expanded in place) merge, and
    graphql-core's OverlappingFieldsCanBeMerged compares every pair of them, then every pair of
    their merged sub-selections: the quadratic step that one selection repeated 600 times turned
    into seconds. Counted group by group, each field once per place it expands.
    """
    fragments = {d.name.value: d for d in document.definitions if isinstance(d, FragmentDefinitionNode)}
    Group = list[tuple[SelectionSetNode, frozenset[str]]]
    stack: list[Group] = []
    for definition in document.definitions:
        if isinstance(definition, OperationDefinitionNode):
            stack.append([(definition.selection_set, frozenset())])
        elif isinstance(definition, FragmentDefinitionNode):
            stack.append([(definition.selection_set, frozenset(fragments))])
    total = 0
    while stack:
        pending = stack.pop()
        by_name: dict[str, Group] = {}
        counts: dict[str, int] = {}
        while pending:
            selection_set, expanding = pending.pop()
            for selection in selection_set.selections:
                if isinstance(selection, FieldNode):
                    name = (selection.alias or selection.name).value
                    counts[name] = counts.get(name, 0) + 1
                    if selection.selection_set is not None:
                        by_name.setdefault(name, []).append((selection.selection_set, expanding))
                elif isinstance(selection, InlineFragmentNode):
                    pending.append((selection.selection_set, expanding))
                elif isinstance(selection, FragmentSpreadNode):
                    spread = selection.name.value
                    fragment = fragments.get(spread)
                    if fragment is not None and spread not in expanding:
                        pending.append((fragment.selection_set, expanding | {spread}))
        for name, k in counts.items():
            total += k * (k - 1) // 2
            if total > limit:
                return total
            if name in by_name:
                stack.append(by_name[name])  # their sub-selections merge: compare those too
    return total


# -- 2. cost --------------------------------------------------------------------------------------


@dataclass(slots=True)
class _CostWalk:
    schema: GraphQLSchema
    fragments: Mapping[str, FragmentDefinitionNode]
    variables: Mapping[str, Any]
    # The first `first`/`last` over the maximum page size, and the response path of the field walked.
    oversized: OversizedPage | None = None
    path: list[str] = dataclass_field(default_factory=list)

    def selection_set(
        self, node: SelectionSetNode, parent: GraphQLNamedType, multiplier: int, page: int, expanding: frozenset[str]
    ) -> int:
        total = 0
        for selection in node.selections:
            if isinstance(selection, FieldNode):
                total += self.field(selection, parent, multiplier, page, expanding)
            elif isinstance(selection, InlineFragmentNode):
                condition = selection.type_condition
                target = self.schema.get_type(condition.name.value) if condition is not None else parent
                if target is not None:
                    total += self.selection_set(selection.selection_set, target, multiplier, page, expanding)
            elif isinstance(selection, FragmentSpreadNode):
                name = selection.name.value
                fragment = self.fragments.get(name)
                if fragment is None or name in expanding:
                    continue  # validation refuses both
                target = self.schema.get_type(fragment.type_condition.name.value)
                if target is not None:
                    total += self.selection_set(fragment.selection_set, target, multiplier, page, expanding | {name})
        return total

    def field(
        self, node: FieldNode, parent: GraphQLNamedType, multiplier: int, page: int, expanding: frozenset[str]
    ) -> int:
        name = node.name.value
        definition = self._definition(parent, name)
        if definition is None:
            return 0  # __typename, or a field validation will refuse
        named = get_named_type(definition.type)
        composite = is_composite_type(named)
        is_list = is_list_type(get_nullable_type(definition.type))
        arguments = {a.name.value: a.value for a in node.arguments or ()}
        size = 1
        child_page = page
        if named.name.endswith("Connection") and isinstance(named, GraphQLObjectType) and "pageInfo" in named.fields:
            child_page = self._page_size(arguments, node)  # its `nodes` and `edges` multiply by it
        elif is_list:
            if parent.name.endswith("Connection") and name in ("nodes", "edges"):
                size = page
            elif "ids" in arguments:  # Query.nodes(ids:)
                size = self._list_items(arguments["ids"])
            elif parent.name.startswith("__"):
                size = _introspection_sizes(self.schema).get(name, PLAIN_LIST_SIZE)
            else:
                size = PLAIN_LIST_SIZE
        if parent.name.startswith("__") or named.name.startswith("__"):
            weight = 1 if is_list else 0  # introspection, read from memory: only its lists' elements count
        else:
            weight = FIELD_WEIGHTS.get((parent.name, name), FIELD_WEIGHTS.get(("*", name), 1))
        total = multiplier * (weight * size + sum(self._list_items(v) for v in arguments.values()))
        if not composite or node.selection_set is None:
            return total
        self.path.append((node.alias or node.name).value)
        try:
            return total + self.selection_set(node.selection_set, named, multiplier * size, child_page, expanding)
        finally:
            self.path.pop()

    def _definition(self, parent: GraphQLNamedType, name: str) -> GraphQLField | None:
        if name == "__schema" and parent is self.schema.query_type:
            return GraphQLField(self.schema.get_type("__Schema"))  # type: ignore[arg-type]
        if name == "__type" and parent is self.schema.query_type:
            return GraphQLField(self.schema.get_type("__Type"))  # type: ignore[arg-type]
        if isinstance(parent, GraphQLObjectType | GraphQLInterfaceType):
            field: GraphQLField | None = parent.fields.get(name)
            return field
        return None

    def _value(self, node: Node) -> Any:
        try:
            return value_from_ast_untyped(node, self.variables)  # type: ignore[arg-type]
        except Exception:  # a malformed value is validation's to refuse
            return None

    def _page_size(self, arguments: Mapping[str, Node], node: FieldNode) -> int:
        for key in ("first", "last"):
            if key in arguments:
                value = self._value(arguments[key])
                if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
                    if value > MAX_PAGE_SIZE and self.oversized is None:
                        path = (*self.path, (node.alias or node.name).value)
                        self.oversized = OversizedPage(key, value, node, path)
                    return min(value, MAX_PAGE_SIZE)
        return DEFAULT_PAGE_SIZE

    def _list_items(self, node: Node) -> int:
        """How many list elements an argument holds, however deep (an `in:` list inside a filter)."""
        if isinstance(node, ListValueNode):
            return len(node.values) + sum(self._list_items(v) for v in node.values)
        if isinstance(node, ObjectValueNode):
            return sum(self._list_items(f.value) for f in node.fields)
        if isinstance(node, VariableNode):
            return _items_in(self.variables.get(node.name.value))
        return 0


_INTROSPECTION_SIZES: dict[int, dict[str, int]] = {}


def _introspection_sizes(schema: GraphQLSchema) -> dict[str, int]:
    """The expected length of each introspection list: the served schema's averages, rounded up."""
    sizes = _INTROSPECTION_SIZES.get(id(schema))
    if sizes is None:
        types = list(schema.type_map.values())
        composite = [t for t in types if isinstance(t, GraphQLObjectType | GraphQLInterfaceType)]
        fields = [f for t in composite for f in t.fields.values()]
        n = max(len(types), 1)

        def average(total: int, over: int) -> int:
            return max(1, -(-total // max(over, 1)))

        sizes = {
            "types": len(types),
            "directives": len(schema.directives),
            "fields": average(len(fields), n),
            "args": average(sum(len(f.args) for f in fields), len(fields)),
            "inputFields": average(sum(len(getattr(t, "fields", {})) for t in types if is_input_object_type(t)), n),
            "enumValues": average(sum(len(t.values) for t in types if is_enum_type(t)), n),
            "interfaces": average(sum(len(getattr(t, "interfaces", ())) for t in types), n),
            "possibleTypes": average(sum(len(schema.get_possible_types(t)) for t in types if is_abstract_type(t)), n),
        }
        _INTROSPECTION_SIZES[id(schema)] = sizes
    return sizes


def _items_in(value: Any) -> int:
    if isinstance(value, list):
        return len(value) + sum(_items_in(v) for v in value)
    if isinstance(value, dict):
        return sum(_items_in(v) for v in value.values())
    return 0


def _variables(operation: OperationDefinitionNode, given: Mapping[str, Any] | None) -> dict[str, Any]:
    """The operation's variables as given, with the document's defaults for those not given."""
    values: dict[str, Any] = {}
    for definition in operation.variable_definitions or ():
        name = definition.variable.name.value
        if given is not None and name in given:
            values[name] = given[name]
        elif definition.default_value is not None:
            try:
                values[name] = value_from_ast_untyped(definition.default_value)
            except Exception:  # a malformed default is validation's to refuse
                values[name] = None
    return values


def estimate_cost(
    schema: GraphQLSchema,
    document: DocumentNode,
    operation_name: str | None = None,
    variables: Mapping[str, Any] | None = None,
) -> int:
    """The cost of the operation `operation_name` would select (every operation's, if none is named)."""
    return estimate(schema, document, operation_name, variables)[0]


def admission_cost(
    schema: GraphQLSchema,
    document: DocumentNode,
    operation_name: str | None = None,
    variables: Mapping[str, Any] | None = None,
) -> int:
    """`estimate_cost`, or more than any limit when a page (`first`/`last`) is over the maximum.

    For a caller that only compares the cost with the limit: the prepared fast path (schema/context.py)
    then declines, and the executor's pipeline answers the request with `OperationLimits`' refusal.
    """
    cost, oversized = estimate(schema, document, operation_name, variables)
    return sys.maxsize if oversized is not None else cost


def estimate(
    schema: GraphQLSchema,
    document: DocumentNode,
    operation_name: str | None = None,
    variables: Mapping[str, Any] | None = None,
) -> tuple[int, OversizedPage | None]:
    """`estimate_cost`, and the first page size (`first`/`last`) over the maximum the operation asks for."""
    oversized: OversizedPage | None = None
    fragments = {d.name.value: d for d in document.definitions if isinstance(d, FragmentDefinitionNode)}
    roots = {
        OperationType.QUERY: schema.query_type,
        OperationType.MUTATION: schema.mutation_type,
        OperationType.SUBSCRIPTION: schema.subscription_type,
    }
    total = 0
    for definition in document.definitions:
        if not isinstance(definition, OperationDefinitionNode):
            continue
        if operation_name is not None and (definition.name is None or definition.name.value != operation_name):
            continue
        root = roots[definition.operation]
        if root is None:
            continue
        given = variables if isinstance(variables, Mapping) else None
        walk = _CostWalk(schema, fragments, _variables(definition, given))
        total += walk.selection_set(definition.selection_set, root, 1, DEFAULT_PAGE_SIZE, frozenset())
        oversized = oversized or walk.oversized
    return total, oversized


# -- 3. validation, once per printed document -----------------------------------------------------


class _NodePaths(Visitor):
    def __init__(self) -> None:
        super().__init__()
        self.paths: dict[int, tuple[str | int, ...]] = {}

    def enter(self, node: Node, key: Any, parent: Any, path: list[str | int], ancestors: Any) -> None:
        self.paths[id(node)] = tuple(path)


def _node_at(document: DocumentNode, path: Sequence[str | int]) -> Node | None:
    current: Any = document
    for step in path:
        current = current[step] if isinstance(step, int) else getattr(current, step, None)
        if current is None:
            return None
    return current if isinstance(current, Node) else None


def _relocated(errors: list[GraphQLError], source: DocumentNode, target: DocumentNode) -> list[GraphQLError]:
    """`errors` found in `source`, pointing at the same nodes of `target` (same print, other spacing)."""
    finder = _NodePaths()
    visit(source, finder)
    out = []
    for error in errors:
        nodes = [_node_at(target, finder.paths.get(id(n), ())) for n in error.nodes or ()]
        if not all(nodes):
            out.append(error)
            continue
        out.append(GraphQLError(error.message, nodes=nodes, extensions=error.extensions))  # type: ignore[arg-type]
    return out


class DocumentCache:
    """Parsed documents by text, and validation results by printed document and rules (LRU each).

    A document is kept parsed only once it has passed the limits and validation: a refused
    document (thousands of AST nodes and tokens, linked in cycles) is garbage at once instead of
    filling the cache, and the cyclic garbage collector's pauses, with copies an abuser varies at will.

    Validation results are keyed by the printed form, which drops whitespace, comments and commas,
    so reformatting a document does not make it new. A hit with errors from a differently spaced
    document points them at the nodes of the document at hand. `runs` counts the validations
    actually run, `hits` those served from the cache.
    """

    def __init__(self, maxsize: int) -> None:
        self.maxsize = maxsize
        self.runs = 0
        self.hits = 0
        # text -> (document, the token limit it was parsed under: a tighter limit parses it again)
        self._parsed: OrderedDict[str, tuple[DocumentNode, int | None]] = OrderedDict()
        self._results: OrderedDict[Hashable, tuple[DocumentNode, list[GraphQLError]]] = OrderedDict()
        # The printed form of recently seen documents: the parse cache hands out the same
        # DocumentNode for the same text, so a repeated request prints nothing.
        self._printed: OrderedDict[int, tuple[DocumentNode, str]] = OrderedDict()
        # A kept document's estimates (`estimate`) by operation name and what of the variables the
        # estimate reads: a repeated request walks nothing.
        self._costs: OrderedDict[int, tuple[DocumentNode, dict[Hashable, tuple[int, OversizedPage | None]]]] = (
            OrderedDict()
        )

    def parse(self, text: str, options: Mapping[str, Any]) -> DocumentNode:
        kept = self._parsed.get(text)
        limit = options.get("max_tokens")
        if kept is not None and (limit is None or (kept[1] is not None and kept[1] <= limit)):
            self._parsed.move_to_end(text)
            return kept[0]
        return parse(text, **options)

    def kept(self, text: str, max_tokens: int | None) -> DocumentNode | None:
        """The document kept for `text` that `parse(text, {"max_tokens": max_tokens})` would hand out, or
        None (it would parse): no parsing here."""
        kept = self._parsed.get(text)
        if kept is None or (max_tokens is not None and (kept[1] is None or kept[1] > max_tokens)):
            return None
        self._parsed.move_to_end(text)
        return kept[0]

    def __contains__(self, text: object) -> bool:
        """Whether the document `text` is kept parsed."""
        return text in self._parsed

    def passed(self, text: str | None, document: DocumentNode) -> bool:
        """Whether `document` is the one kept for `text`: it passed the selection and overlap bounds."""
        kept = self._parsed.get(text) if text is not None else None
        return kept is not None and kept[0] is document

    def keep(self, text: str, document: DocumentNode, max_tokens: int | None = None) -> None:
        """Keep `document` (parsed under the token limit `max_tokens`) for the next request sending `text`."""
        self._parsed[text] = (document, max_tokens)
        self._parsed.move_to_end(text)
        if len(self._parsed) > self.maxsize:
            self._parsed.popitem(last=False)

    def estimate(
        self, schema: GraphQLSchema, document: DocumentNode, operation_name: str | None, variables: Any
    ) -> tuple[int, OversizedPage | None]:
        """`estimate` of a document kept parsed (`passed`), remembered: the estimate reads only the
        integers, the list lengths and which variables are given (schema/compiled/runner.py `cost_key`),
        so a request whose variables agree on those gets the estimate already made."""
        from schema.compiled.runner import PREPARED_COSTS, cost_key  # the schema's package imports this one

        seen = self._costs.get(id(document))
        if seen is None or seen[0] is not document:
            seen = (document, {})
            self._costs[id(document)] = seen
            if len(self._costs) > self.maxsize:
                self._costs.popitem(last=False)
        else:
            self._costs.move_to_end(id(document))
        known = seen[1]
        key = (schema, operation_name, cost_key(variables if isinstance(variables, Mapping) else None))
        found = known.get(key)
        if found is None:
            found = estimate(schema, document, operation_name, variables)
            if len(known) >= PREPARED_COSTS:
                known.clear()
            known[key] = found
        return found

    def key(self, document: DocumentNode) -> str:
        seen = self._printed.get(id(document))
        if seen is not None and seen[0] is document:
            self._printed.move_to_end(id(document))
            return seen[1]
        printed = print_ast(document)
        self._printed[id(document)] = (document, printed)
        if len(self._printed) > self.maxsize:
            self._printed.popitem(last=False)
        return printed

    def validate(
        self, schema: GraphQLSchema, document: DocumentNode, rules: tuple[type[Any], ...]
    ) -> list[GraphQLError]:
        key = (self.key(document), rules)
        cached = self._results.get(key)
        if cached is not None:
            self.hits += 1
            self._results.move_to_end(key)
            source, errors = cached
            return errors if source is document or not errors else _relocated(errors, source, document)
        self.runs += 1
        # strawberry's own rules as its validate_document adds them; no "Did you mean ...?" in any message.
        errors = validate(
            schema, document, (*rules, MaybeNullValidationRule, OneOfInputValidationRule), hide_suggestions=True
        )
        without_suggestions(errors)
        self._results[key] = (document, errors)
        if len(self._results) > self.maxsize:
            self._results.popitem(last=False)
        return errors


# -- the extension --------------------------------------------------------------------------------


class OperationLimits(SchemaExtension):
    """The selection bound, the cost limit, cached validation and the deadline of one operation.

    `timeout_ms(context)` gives the deadline's length for the request (None: no deadline), read
    when execution starts; `cost_limit(context)` the cost limit (None: `max_cost`).
    """

    def __init__(
        self,
        *,
        cache: DocumentCache,
        max_selections: int = DEFAULT_MAX_SELECTIONS,
        max_overlaps: int = DEFAULT_MAX_OVERLAPS,
        max_cost: int = DEFAULT_MAX_COST,
        timeout_ms: Callable[[Any], int | None] = lambda context: DEFAULT_OPERATION_TIMEOUT_MS,
        cost_limit: Callable[[Any], int | None] = lambda context: None,
    ) -> None:
        super().__init__()
        self.cache = cache
        self.max_selections = max_selections
        self.max_overlaps = max_overlaps
        self.max_cost = max_cost
        self.timeout_ms = timeout_ms
        self.cost_limit = cost_limit
        self.deadline: float | None = None
        self.expired = False

    def on_parse(self) -> Iterator[None]:
        ec = self.execution_context
        if ec.graphql_document is None and ec.query:
            ec.graphql_document = self.cache.parse(ec.query, ec.parse_options)
        yield

    def on_validate(self) -> Iterator[None]:
        ec = self.execution_context
        document = ec.graphql_document
        if document is not None and ec.pre_execution_errors is None:
            errors = self._check(document)
            ec.pre_execution_errors = errors
            if not errors and ec.query:
                self.cache.keep(ec.query, document, ec.parse_options.get("max_tokens"))
        yield

    def _check(self, document: DocumentNode) -> list[GraphQLError]:
        ec = self.execution_context
        # A document kept parsed passed both bounds when it was kept; only its cost depends on the variables.
        if not self.cache.passed(ec.query, document):
            if count_selections(document, self.max_selections) > self.max_selections:
                return [_too_many_selections(self.max_selections)]
            if count_overlaps(document, self.max_overlaps) > self.max_overlaps:
                return [_too_many_overlaps(self.max_overlaps)]
        permission = profile_of(ec.context).introspection_permission
        if permission is not None and not _holds(ec.context, permission) and has_introspection(document):
            return [_introspection_refused(permission)]
        schema = ec.schema._schema
        measure = self.cache.estimate if self.cache.passed(ec.query, document) else estimate
        try:
            cost, oversized = measure(schema, document, ec.operation_name, ec.variables)
        except RecursionError:
            return [_too_many_selections(self.max_selections)]
        if oversized is not None:
            return [oversized.error()]
        limit = self.cost_limit(ec.context) or self.max_cost
        if cost > limit:
            return [_too_costly(cost, limit)]
        return self.cache.validate(schema, document, tuple(ec.validation_rules))

    def on_execute(self) -> Iterator[None]:
        ec = self.execution_context
        timeout = self.timeout_ms(ec.context) if ec.operation_type is StrawberryOperationType.QUERY else None
        self.deadline = time.monotonic() + timeout / 1000 if timeout else None
        yield
        result = ec.result
        if result is not None and not isinstance(result, Exception) and result.errors:
            without_suggestions(result.errors)  # a variable's coercion error names the enum values
        if self.expired:
            _log.warning(
                "GraphQL request %s stopped at its deadline of %s ms",
                getattr(ec.context, "request_id", "unknown"),
                timeout,
            )
        if self.expired and result is not None and not isinstance(result, Exception):
            # One error for the operation rather than one per field left unresolved.
            error = GraphQLError(
                f"The operation ran past its deadline of {timeout} ms and was stopped; ask for less "
                "(smaller pages, fewer fields) or split it.",
                extensions={"code": "OPERATION_TIMEOUT", "timeoutMs": timeout},
            )
            result.data = None
            result.errors = [error]

    def resolve(self, _next: Callable[..., Any], root: Any, info: Any, *args: Any, **kwargs: Any) -> Any:
        deadline = self.deadline
        if deadline is not None and (self.expired or time.monotonic() > deadline):
            self.expired = True
            raise GraphQLError("Operation deadline passed.", extensions={"code": "OPERATION_TIMEOUT"})
        return _next(root, info, *args, **kwargs)


def _holds(context: Any, permission: str) -> bool:
    caller = getattr(context, "caller", None)
    allows = getattr(caller, "allows", None)
    return bool(allows(permission)) if callable(allows) else False


class ProfileRules(SchemaExtension):
    """The request profile's token limit (enforced by the parser) and depth and alias rules.

    Takes the place of strawberry's MaxTokensLimiter and AddValidationRules, whose limits are fixed
    when the schema is built; the profile is the request's (`profile_of`).
    """

    def on_operation(self) -> Iterator[None]:
        ec = self.execution_context
        profile = profile_of(ec.context)
        ec.parse_options["max_tokens"] = profile.max_tokens
        ec.validation_rules = (*ec.validation_rules, *profile.rules)
        yield
