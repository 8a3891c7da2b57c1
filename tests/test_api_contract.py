"""One contract per operation: the client Protocol, Workbench, RemoteClient, the routes and the OpenAPI schema agree."""

from __future__ import annotations

import dataclasses
import inspect
import typing
from typing import Generic, Protocol

from fastapi.routing import APIRoute

from engine.core.config import ModelSpec
from engine.jobs.store import JobsClient, LocalJobs
from engine.service.api import (
    ALL_OPERATIONS, JOB_OPERATIONS, OPERATIONS, InterveneBody, LoadBody, ModelBody, ScoreBody,
)
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


def all_protocol_methods(protocol: type) -> set[str]:
    """The Protocol's methods, inherited ones (JobsClient's) included."""
    return {name for klass in protocol.__mro__ if klass not in (object, Protocol, Generic)
            for name in protocol_methods(klass)}


def test_one_client_covers_models_and_jobs_in_process_and_remote():
    assert all_protocol_methods(EngineClient) == {op.method for op in ALL_OPERATIONS}
    workbench = Workbench()
    assert isinstance(workbench, EngineClient) and isinstance(workbench, JobsClient)
    for op in ALL_OPERATIONS:
        want = parameters(getattr(EngineClient, op.method))
        assert parameters(getattr(Workbench, op.method)) == want, f"Workbench.{op.method}"
        assert parameters(getattr(RemoteClient, op.method)) == want, f"RemoteClient.{op.method}"
        returned = typing.get_type_hints(getattr(EngineClient, op.method))["return"]
        assert returned == op.response, f"EngineClient.{op.method} returns {returned}, the contract says {op.response}"


def test_each_body_is_its_client_methods_arguments():
    """Body field names, renamed by ARGS, are exactly the client method's positional arguments (the keyword-only
    ones, should_stop and on_progress, are callbacks the stream carries), so RemoteClient can send them and the
    route can pass them on without unpacking by hand."""
    for op in ALL_OPERATIONS:
        if op.body is None:
            continue
        arguments = {name for name, kind, _ in parameters(getattr(EngineClient, op.method))
                     if name != "self" and kind is not inspect.Parameter.KEYWORD_ONLY}
        assert {op.body.ARGS.get(f, f) for f in op.body.model_fields} == arguments, op.method


def test_model_body_is_generated_from_model_spec():
    spec_fields = {f.name: f.default for f in dataclasses.fields(ModelSpec)}
    body_fields = {name: dataclasses.MISSING if info.is_required() else info.default
                   for name, info in ModelBody.model_fields.items()}
    assert body_fields == spec_fields
    spec = ModelSpec("some/model", adapter="a", dtype="float32", device="cpu", revision="main")
    assert ModelBody(**LoadBody.wire(base=spec)["base"]).spec() == spec


def test_remote_client_sends_the_bodies_json():
    """What RemoteClient sends for a call is the body's JSON, defaults filled, and the route reads it back into
    the very arguments the caller gave."""
    from engine.core.config import Tau
    from engine.core.decode import SamplingSpec

    sampling = SamplingSpec(greedy=False, temperature=0.7, stop=("\n\n",))
    sent = InterveneBody.wire(prompt_ids=[1, 2], mode="gated", sampling=sampling, tau=Tau.parse("q0.97"),
                              force=[(3, 4)])
    assert sent["force"] == [[3, 4]] and sent["sampling"]["stop"] == ["\n\n"] and sent["top"] == 5
    back = InterveneBody(**sent).arguments()
    assert back["sampling"] == sampling and back["force"] == [(3, 4)] and back["prompt_ids"] == [1, 2]
    assert ScoreBody(**ScoreBody.wire(prompt=(1,), completion=(2, 3))).arguments() == {
        "prompt": [1], "completion": [2, 3], "top_k": 5, "with_teacher": True}
