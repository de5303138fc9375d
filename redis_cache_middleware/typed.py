"""Typed keys: canonicalise query values and JSON bodies the way a FastAPI route will parse them.

The route's own validators (pydantic v2, lax mode, with the field's constraints) parse each value; the
result is written back in one canonical text (`5.10`, `5.1` and `5.100` for a `float` become `5.1`), so two
requests share a canonical form only when the endpoint receives equal arguments. Only `float`, `int`,
`bool` (optionally in `Optional[...]` and `list[...]`) and pydantic models without custom validators are
canonicalised; anything else, and any value that does not validate or is not finite, is kept as sent.
"""

from __future__ import annotations

import math
import types
import typing
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from re import Pattern
from typing import TYPE_CHECKING, Annotated, Any, TypeGuard, cast

import orjson
from starlette.routing import Mount, compile_path

if TYPE_CHECKING:  # pydantic comes with FastAPI, whose routes are the only ones typed: imported when seen
    from pydantic import BaseModel, TypeAdapter

__all__ = ["RouteCanon", "RouteTypes", "route_types"]

Pairs = Sequence[tuple[bytes, bytes]]
JsonCanon = Callable[[Any, "int | None"], Any]
_SCALARS = (float, int, bool, type(None))
_MAX_INT = 2**63
_QUERY_MEMO_SIZE = 4096


@dataclass(frozen=True)
class RouteCanon:
    """One route's canonicalisers: query values by parameter name, and the JSON body.

    `round_floats`: opt-in approximate keys, every float rounded to that many decimal places (values that
    differ beyond it share a key although the app receives different arguments).
    """

    query: dict[bytes, Callable[[Any], Any]] = field(default_factory=dict)
    body: JsonCanon | None = None
    round_floats: int | None = None
    # Canonical text of query values already seen, by parameter: the same inputs come back again and
    # again, and validating them costs more than the rest of the key. Bytes only, so the garbage
    # collector never tracks these dicts; each is emptied when it reaches _QUERY_MEMO_SIZE.
    _seen: dict[bytes, dict[bytes, bytes]] = field(
        default_factory=dict, init=False, repr=False, compare=False
    )

    def with_rounding(self, places: int | None) -> RouteCanon:
        """The same canonicalisers with floats rounded to `places` decimals (None: exact)."""
        if places is not None and (isinstance(places, bool) or not isinstance(places, int) or places < 0):
            raise ValueError(f"round_floats must be None or a non-negative integer: {places!r}")
        return replace(self, round_floats=places)

    def query_value(self, name: bytes, raw: bytes) -> Any:
        """The value the app receives for `name=raw` if provable (float/int/bool), else `raw` as text."""
        validate = self.query.get(name)
        try:
            text = raw.decode()
        except UnicodeDecodeError:
            return raw.decode("utf-8", "replace")
        if validate is None:
            return text
        found = _validated(validate, text, self.round_floats)
        return text if found is _UNPROVEN else found

    def canonical_query(self, pairs: Pairs) -> list[tuple[bytes, bytes]]:
        """Percent-decoded (name, value) pairs with typed values in canonical text; order unchanged."""
        out: list[tuple[bytes, bytes]] = []
        for name, raw in pairs:
            validate = self.query.get(name)
            if validate is None:
                out.append((name, raw))
                continue
            seen = self._seen.get(name)
            if seen is None:
                seen = self._seen[name] = {}
            canonical = seen.get(raw)
            if canonical is None:
                try:
                    value = _validated(validate, raw.decode(), self.round_floats)
                except UnicodeDecodeError:
                    value = _UNPROVEN
                canonical = raw if value is _UNPROVEN else orjson.dumps(value)
                if len(seen) >= _QUERY_MEMO_SIZE:
                    seen.clear()
                seen[raw] = canonical
            out.append((name, canonical))
        return out

    def canonical_json(self, value: Any) -> Any:
        """The parsed JSON body with every typed field replaced by the value the app will receive."""
        return value if self.body is None else self.body(value, self.round_floats)


@dataclass(frozen=True)
class RouteTypes:
    """Every typed route of an app: `for_request(method, path)` gives its canonicalisers, or None."""

    routes: tuple[tuple[Pattern[str], frozenset[str] | None, RouteCanon | None], ...]

    def for_request(self, method: str, path: str) -> RouteCanon | None:
        """The canonicalisers of the first route matching `method` and `path` (None: untyped or unknown)."""
        for regex, methods, canon in self.routes:
            if (methods is None or method in methods) and regex.match(path):
                return canon
        return None


def route_types(app: Any) -> RouteTypes:
    """Walk the app's routes once (mounted routers included) and learn each FastAPI route's types.

    `app` may be the FastAPI/Starlette app, its router, or a middleware in front of them: the chain of
    `.app` attributes is followed to the first object with `routes`.
    """
    for _ in range(64):
        if isinstance(getattr(app, "routes", None), list):
            break
        app = getattr(app, "app", None)
    found: _Found = []
    _walk(getattr(app, "routes", None) or (), "", found)
    return RouteTypes(tuple(found))


_Found = list[tuple[Pattern[str], frozenset[str] | None, "RouteCanon | None"]]


def _walk(routes: Sequence[Any], prefix: str, found: _Found) -> None:
    """Append each route in routing order; routes without FastAPI types are kept (as None) so that a
    request they would handle never takes the types of a later route."""
    for route in routes:
        if isinstance(route, Mount):
            inner = getattr(route, "routes", None)
            if inner:
                _walk(inner, prefix + route.path, found)
            else:  # an opaque sub-application: everything under its prefix is untyped
                found.append((compile_path(prefix + route.path + "/{rest:path}")[0], None, None))
        elif hasattr(route, "effective_route_contexts"):  # FastAPI's lazily included router
            _walk(list(route.effective_route_contexts()), prefix, found)
        elif isinstance(getattr(route, "path", None), str):
            methods = frozenset(getattr(route, "methods", None) or ()) or None
            if methods is not None and "GET" in methods:
                methods |= {"HEAD"}
            dependant = getattr(route, "dependant", None)
            canon = _route_canon(dependant) if dependant is not None else None
            found.append((compile_path(prefix + route.path)[0], methods, canon))


def _route_canon(dependant: Any) -> RouteCanon:
    from fastapi.dependencies.utils import _get_flat_body_params, _should_embed_body_fields, get_flat_params
    from fastapi.params import Query

    query: dict[bytes, Callable[[Any], Any]] = {}
    ambiguous: set[bytes] = set()
    for param in get_flat_params(dependant):
        if not isinstance(param.field_info, Query):
            continue
        name = param.alias.encode()
        va = param.field_info.validation_alias
        typed = _is_scalar(param.field_info.annotation) and (va is None or isinstance(va, str))
        if not typed or name in query:
            ambiguous.add(name)
            continue
        query[name] = _param_validator(param)
    for name in ambiguous:
        query.pop(name, None)
    body_params = _get_flat_body_params(dependant)
    body: JsonCanon | None = None
    if body_params and len({p.name for p in body_params}) == len(body_params):
        if _should_embed_body_fields(body_params):
            members = {p.alias: _param_canon(p) for p in body_params}
            body = _object_canon({k: v for k, v in members.items() if v is not None})
        else:
            body = _param_canon(body_params[0])
    return RouteCanon(query, body)


# --- canonicalisers --------------------------------------------------------------------------------------

_UNPROVEN: Any = object()


def _param_validator(param: Any) -> Callable[[Any], Any]:
    def validate(value: Any) -> Any:
        result, errors = param.validate(value)
        if errors:
            raise ValueError("invalid")
        return result

    return validate


def _validated(validate: Callable[[Any], Any], value: Any, places: int | None) -> Any:
    """`validate(value)` if the result is plain, finite and exactly representable in JSON, else _UNPROVEN."""
    try:
        result = validate(value)
    except (ValueError, TypeError):  # pydantic's ValidationError is a ValueError
        return _UNPROVEN
    return _plain(result, places)


def _plain(result: Any, places: int | None) -> Any:
    if type(result) is list:  # one pass, no per-item call for floats: batches are lists of float rows
        items = []
        for item in result:
            if type(item) is float and places is None:
                if item - item != 0.0:  # inf or nan
                    return _UNPROVEN
            else:
                item = _plain(item, places)
                if item is _UNPROVEN:
                    return _UNPROVEN
            items.append(item)
        return items
    if isinstance(result, list):
        return _UNPROVEN
    if type(result) is float:
        if not math.isfinite(result):
            return _UNPROVEN
        return round(result, places) if places is not None else result
    if type(result) is int:
        return result if -_MAX_INT <= result < _MAX_INT else _UNPROVEN
    if type(result) is bool or result is None:
        return result
    return _UNPROVEN


def _is_scalar(annotation: Any) -> bool:
    """float, int, bool, or Optional of one of them."""
    if annotation in (float, int, bool):
        return True
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        return len(args) == 1 and len(typing.get_args(annotation)) == 2 and args[0] in (float, int, bool)
    return False


def _is_plain_tree(annotation: Any) -> bool:
    """Built only from float/int/bool, `list[...]` and `Optional[...]`."""
    if _is_scalar(annotation):
        return True
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is list and len(args) == 1:
        return _is_plain_tree(args[0])
    if origin in (typing.Union, types.UnionType) and len(args) == 2 and type(None) in args:
        return _is_plain_tree(next(a for a in args if a is not type(None)))
    return False


def _param_canon(param: Any) -> JsonCanon | None:
    """The canonicaliser of one body parameter (a FastAPI ModelField): validated wholesale or by model."""
    annotation = param.field_info.annotation
    if _is_plain_tree(annotation):
        validate = _param_validator(param)
        return lambda value, places: _leaf(validate, value, places)
    if _is_model(annotation) and not param.field_info.metadata:
        return _model_canon(annotation)
    return None


def _is_model(annotation: Any) -> TypeGuard[type[BaseModel]]:
    from pydantic import BaseModel

    return isinstance(annotation, type) and issubclass(annotation, BaseModel)


def _adapter_canon(adapter: TypeAdapter[Any]) -> JsonCanon:
    return lambda value, places: _leaf(adapter.validate_python, value, places)


def _leaf(validate: Callable[[Any], Any], value: Any, places: int | None) -> Any:
    found = _validated(validate, value, places)
    return value if found is _UNPROVEN else found


def _object_canon(members: dict[str, JsonCanon]) -> JsonCanon:
    def canon(value: Any, places: int | None) -> Any:
        if not isinstance(value, dict):
            return value
        return {k: members[k](v, places) if k in members else v for k, v in value.items()}

    return canon


def _model_canon(model: type[BaseModel]) -> JsonCanon | None:
    """Per-field canonicalisers of a pydantic model, or None when its parsing is not per-field and plain."""
    from pydantic import ConfigDict, TypeAdapter

    decorators = model.__pydantic_decorators__
    config = model.model_config
    if (
        decorators.field_validators
        or decorators.model_validators
        or decorators.root_validators
        or decorators.validators
        or config.get("populate_by_name")
        or config.get("validate_by_name")
        or config.get("alias_generator")
        or model.__pydantic_root_model__
    ):
        return None
    strict = ConfigDict(strict=True) if config.get("strict") else None
    members: dict[str, JsonCanon] = {}
    for name, info in model.model_fields.items():
        va = info.validation_alias
        if va is not None and not isinstance(va, str):
            return None
        key = va or info.alias or name
        if _is_plain_tree(info.annotation):
            hint = Annotated[(info.annotation, *info.metadata)] if info.metadata else info.annotation
            members[key] = _adapter_canon(TypeAdapter(cast(Any, hint), config=strict))
        elif _is_model(info.annotation) and not info.metadata:
            nested = _model_canon(info.annotation)
            if nested is not None:
                members[key] = nested
    return _object_canon(members)
