"""Every request held to the Calendar v3 discovery document packaged with
google-api-python-client: the parameters a method takes (names, types, enums, minimums,
repetition, required ones) and the OAuth scopes that permit it.

Google refuses a request whose parameters its API description does not allow (400) and a method
the access token's scopes do not cover (403 ``insufficientPermissions``, "Request had
insufficient authentication scopes." — "Handle API errors" guide). Checking against the same
document the client library is built from means a request the stand-in accepts is one Google's
front end would accept too.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from functools import cache
from importlib import resources
from typing import Any

from ._errors import ApiError, bad_request, required

SCOPE_PREFIX = "https://www.googleapis.com/auth/"
APP_CREATED = SCOPE_PREFIX + "calendar.app.created"
EVENTS_OWNED = SCOPE_PREFIX + "calendar.events.owned"


@cache
def packaged_document() -> dict[str, Any]:
    docs = resources.files("googleapiclient.discovery_cache") / "documents"
    doc: dict[str, Any] = json.loads((docs / "calendar.v3.json").read_text(encoding="utf-8"))
    return doc


@dataclass(frozen=True)
class MethodSpec:
    name: str  # "events.insert"
    parameters: dict[str, Any]  # the method's own and the API's global ones
    scopes: frozenset[str]


@cache
def methods() -> dict[str, MethodSpec]:
    """Method specs by the stand-in's method name (``events.list``, ``freebusy.query``...)."""
    doc = packaged_document()
    global_params = doc.get("parameters", {})
    out: dict[str, MethodSpec] = {}

    def walk(resources_: dict[str, Any]) -> None:
        for resource in resources_.values():
            for method in resource.get("methods", {}).values():
                name = method["id"].removeprefix("calendar.")
                out[name] = MethodSpec(
                    name,
                    {**global_params, **method.get("parameters", {})},
                    frozenset(method.get("scopes", [])),
                )
            walk(resource.get("resources", {}))

    walk(doc.get("resources", {}))
    return out


def method_scopes(name: str) -> frozenset[str]:
    """The scopes that permit a method, by the discovery document."""
    return methods()[name].scopes


def permitting(name: str, granted: frozenset[str]) -> frozenset[str]:
    """The granted scopes that permit ``name``; empty means Google answers 403."""
    spec = methods().get(name)
    return frozenset() if spec is None else spec.scopes & granted


def insufficient_scopes() -> ApiError:
    return ApiError(
        403,
        "insufficientPermissions",
        "Request had insufficient authentication scopes.",
    )


def _typed(name: str, spec: dict[str, Any], value: str) -> None:
    kind = spec.get("type", "string")
    if kind == "integer":
        try:
            number = int(value)
        except ValueError:
            raise bad_request(
                f"Invalid value '{value}'. Values must be integers.",
                reason="invalidParameter",
                location=name,
            ) from None
        if "minimum" in spec and number < int(spec["minimum"]):
            raise bad_request(
                f"Invalid value '{value}'. Values must be at least {spec['minimum']}.",
                reason="invalidParameter",
                location=name,
            )
        if "maximum" in spec and number > int(spec["maximum"]):
            raise bad_request(
                f"Invalid value '{value}'. Values must be at most {spec['maximum']}.",
                reason="invalidParameter",
                location=name,
            )
    elif kind == "boolean":
        if value.lower() not in ("true", "false"):
            raise bad_request(
                f"Invalid boolean value '{value}'.", reason="invalidBoolean", location=name
            )
    elif spec.get("format") == "date-time":
        try:
            parsed = datetime.fromisoformat(value)
        except ValueError:
            parsed = None
        if parsed is None or parsed.tzinfo is None:
            raise bad_request(f"Bad Request: {name}", reason="badRequest", location=name)
    if "enum" in spec and value not in spec["enum"]:
        raise bad_request(f"Invalid value for: {name}", reason="invalidParameter", location=name)


def check_parameters(name: str, query: dict[str, list[str]], path: dict[str, str]) -> None:
    """400 for a query parameter the method does not define, a repeated one that may not
    repeat, a value of the wrong type or outside its enum/minimum, or a required one missing."""
    spec = methods().get(name)
    if spec is None:
        return
    for param, values in query.items():
        definition = spec.parameters.get(param)
        if definition is None or definition.get("location") != "query":
            raise bad_request(
                f'Invalid JSON payload received. Unknown name "{param}": '
                "Cannot bind query parameter.",
                reason="invalidParameter",
                location=param,
            )
        if len(values) > 1 and not definition.get("repeated"):
            raise bad_request(
                f"Parameter {param} may be given only once.",
                reason="invalidParameter",
                location=param,
            )
        for value in values:
            _typed(param, definition, value)
    for param, definition in spec.parameters.items():
        if not definition.get("required"):
            continue
        where = definition.get("location")
        present = param in path if where == "path" else param in query
        if not present:
            raise required(f"Required parameter: {param}", location=param)
