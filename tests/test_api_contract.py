"""One contract per operation: the client Protocol, Workbench, RemoteClient, the routes and the OpenAPI schema agree."""

from __future__ import annotations

import inspect

from fastapi.routing import APIRoute

from engine.jobs.store import JobsClient, LocalJobs
from engine.service.api import JOB_OPERATIONS, OPERATIONS
from engine.service.client import EngineClient
from engine.service.remote import RemoteClient
from engine.service.server import create_app
from engine.service.workbench import Workbench

CURL_ONLY = {("POST", "/intervene"), ("POST", "/fork"), ("GET", "/health")}
"""Routes with no client method: one-shot JSON forms of the streamed calls, and the liveness probe."""


def protocol_methods(protocol: type) -> set[str]:
    return {name for name, value in vars(protocol).items() if callable(value) and not name.startswith("_")}


def parameters(function) -> list[tuple[str, object]]:
    """Names, kinds and defaults: what a caller can rely on."""
    return [(p.name, p.kind, p.default) for p in inspect.signature(function).parameters.values()]


def test_every_client_operation_has_one_row_and_every_implementation_the_same_signature():
    assert protocol_methods(EngineClient) == {op.method for op in OPERATIONS}
    assert protocol_methods(JobsClient) == {op.method for op in JOB_OPERATIONS}
    for op in OPERATIONS:
        want = parameters(getattr(EngineClient, op.method))
        assert parameters(getattr(Workbench, op.method)) == want, f"Workbench.{op.method}"
        assert parameters(getattr(RemoteClient, op.method)) == want, f"RemoteClient.{op.method}"
    for op in JOB_OPERATIONS:
        want = parameters(getattr(JobsClient, op.method))
        assert parameters(getattr(LocalJobs, op.method)) == want, f"LocalJobs.{op.method}"
        assert parameters(getattr(RemoteClient, op.method)) == want, f"RemoteClient.{op.method}"


def test_the_workbench_is_the_in_process_client():
    assert isinstance(Workbench(), EngineClient)


def test_routes_and_openapi_schema_take_the_contracts_bodies():
    app = create_app(Workbench())
    routes = {(method, route.path): route for route in app.routes if isinstance(route, APIRoute)
              for method in route.methods}
    rows = {(op.http, op.path): op for op in OPERATIONS + JOB_OPERATIONS}
    assert set(routes) - CURL_ONLY == set(rows)
    schema = app.openapi()
    for (http, path), op in rows.items():
        route = routes[(http, path)]
        body = route.body_field.field_info.annotation if route.body_field is not None else None
        assert body is op.body, f"{http} {path} takes {body}, the contract says {op.body}"
        documented = schema["paths"][path][http.lower()]
        if op.body is None:
            assert "requestBody" not in documented
        else:
            ref = documented["requestBody"]["content"]["application/json"]["schema"]["$ref"]
            assert ref == f"#/components/schemas/{op.body.__name__}"
    for http, path in CURL_ONLY - {("GET", "/health")}:
        assert routes[(http, path)].body_field.field_info.annotation is rows[(http, f"{path}/stream")].body
