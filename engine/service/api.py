"""The engine's API contract: one request body per operation, its response type, and the table that ties each
client method to its HTTP route.

A body's fields are the client method's arguments (renamed where the JSON name differs, `ARGS`): `RemoteClient`
sends `Body.wire(**arguments)`, each route answers `getattr(workbench, method)(**body.arguments())`, and the
FastAPI routes take the bodies, so the OpenAPI schema is generated from them. To add an operation, see
CONTRIBUTING.md; tests/test_api_contract.py checks that the Protocol, Workbench, RemoteClient, the routes and the
schema agree with OPERATIONS.
"""

from __future__ import annotations

import dataclasses
import numbers
import typing
from dataclasses import asdict, dataclass
from typing import Annotated, Any, ClassVar

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, create_model

from engine.core.config import ModelSpec, Tau
from engine.core.data import Problem
from engine.core.fielddocs import field_docs
from engine.core.decode import MAX_NEW_TOKENS, MAX_STOP_CHARS, MAX_STOPS, SEED_LIMIT, SamplingSpec, Step
from engine.core.grading import GradeResult
from engine.core.interventions import ForkEstimate, InterventionResult
from engine.core.prompts import TemplateChoice
from engine.core.records import ScoredRollout
from engine.jobs.store import JobStatus, JobView
from engine.recipes.overlap import RolloutEdits
from engine.recipes.analysis import Analysis
from engine.recipes.pool import DEFAULT_TAUS, PoolStats
from engine.service.workbench import FORK_SAMPLING, WorkbenchInfo

MAX_ROWS = 4096
"""The most sequences one decode or fork may ask for."""
MAX_TEXT_CHARS = 1 << 20
"""The longest text a request may carry (a prompt, a completion, a gold answer)."""
MAX_NAME_CHARS = 256
"""The longest name (a dtype, a device, a mode, a template, a job kind or entry)."""
MAX_PATH_CHARS = 4096
"""The longest path or model id."""
MAX_IDS = 1 << 20
"""The most token ids one list may carry: past any model's context."""
MAX_FORCED = 1 << 16
"""The most forced (position, token) pairs one request may carry."""
MAX_TAUS = 64
"""The most τ values one pool_stats request may ask for."""
INT32 = 2**31
"""Positions, token ids and sizes are below this (torch indexes with int64, tokenizers with int32)."""


def _text(value: str) -> str:
    """Refuse strings Python can hold but the tokenizer cannot (lone surrogates, NUL)."""
    value.encode("utf-8")  # raises ValueError, which pydantic turns into a 422 with the reason
    if "\x00" in value:
        raise ValueError("text must not contain NUL characters")
    return value


Text = Annotated[str, AfterValidator(_text), Field(max_length=MAX_TEXT_CHARS)]
Name = Annotated[str, AfterValidator(_text), Field(max_length=MAX_NAME_CHARS)]
PathText = Annotated[str, AfterValidator(_text), Field(max_length=MAX_PATH_CHARS)]
TokenId = Annotated[int, Field(ge=0, lt=INT32)]
"""Below 2^31 here; below the loaded model's vocabulary is checked where the model is known (the Workbench)."""
TokenIds = Annotated[list[TokenId], Field(max_length=MAX_IDS)]
TopK = Annotated[int, Field(ge=1, le=1000)]
Count = Annotated[int, Field(ge=0, lt=INT32)]


def _wire(value: Any) -> Any:
    """A client argument as JSON: specs as their fields, tuples as lists, a Tau written out in full (str(Tau)
    rounds to 6 digits)."""
    if isinstance(value, Tau):
        return f"q{value.value!r}" if value.quantile else repr(value.value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _wire(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, (list, tuple)):
        return [_wire(v) for v in value]
    if isinstance(value, numbers.Integral) and not isinstance(value, bool):
        return int(value)  # a numpy or torch integer (a token id from an array)
    return value


class Body(BaseModel):
    """Every request body: floats must be finite (JSON's 1e309 is inf), and the range checks below give 422s."""

    model_config = ConfigDict(allow_inf_nan=False)

    ARGS: ClassVar[dict[str, str]] = {}
    """Body field → client argument, where the JSON name differs from the Python one."""

    def arguments(self) -> dict[str, Any]:
        """The client method's keyword arguments: nested bodies become their specs (ModelSpec, SamplingSpec)."""
        return {self.ARGS.get(name, name): _argument(getattr(self, name)) for name in type(self).model_fields}

    @classmethod
    def wire(cls, **arguments: Any) -> dict[str, Any]:
        """The JSON a client sends for these arguments (unnamed ones take the body's defaults). Not validated
        here: the daemon validates, so a bad argument gets the same 422 reason from every client."""
        field = {arg: name for name, arg in cls.ARGS.items()}
        given = {field.get(arg, arg): _wire(value) for arg, value in arguments.items()}
        unknown = set(given) - set(cls.model_fields)
        if unknown:
            raise TypeError(f"{cls.__name__} has no field {', '.join(sorted(unknown))}")
        return {name: given[name] if name in given else _wire_default(info.get_default(call_default_factory=True))
                for name, info in cls.model_fields.items()}


def _argument(value: Any) -> Any:
    return value.spec() if isinstance(value, BaseModel) and hasattr(value, "spec") else value


def _wire_default(value: Any) -> Any:
    return value.model_dump(mode="json") if isinstance(value, BaseModel) else _wire(value)


class _ModelBodyBase(Body):
    def spec(self) -> ModelSpec:
        return ModelSpec(**self.model_dump())


_MODEL_TEXT = {"source": PathText, "adapter": PathText}
"""ModelSpec's str fields are names (Name) except these, which are paths or hub ids."""


def _model_body() -> type[_ModelBodyBase]:
    """ModelBody, generated from ModelSpec's fields, defaults and field docstrings so that the two cannot drift."""
    hints = typing.get_type_hints(ModelSpec)
    docs = field_docs(ModelSpec.__module__, ModelSpec.__name__)
    fields: dict[str, Any] = {}
    for spec_field in dataclasses.fields(ModelSpec):
        hint = hints[spec_field.name]
        text = _MODEL_TEXT.get(spec_field.name, Name)
        if hint is str:
            hint = text
        elif hint == str | None:
            hint = text | None
        elif hint is not bool:
            raise TypeError(f"ModelSpec.{spec_field.name}: {hint} has no JSON form in the API yet")
        default = ... if spec_field.default is dataclasses.MISSING else spec_field.default
        fields[spec_field.name] = (hint, Field(default, description=docs.get(spec_field.name)))
    return create_model("ModelBody", __base__=_ModelBodyBase, __doc__="engine.core.config.ModelSpec as JSON.",
                        **fields)


if typing.TYPE_CHECKING:
    ModelBody = _ModelBodyBase
else:
    ModelBody = _model_body()


class LoadBody(Body):
    base: ModelBody
    teacher: ModelBody | None = None


class ScoreBody(Body):
    ARGS = {"prompt_ids": "prompt", "completion_ids": "completion"}

    prompt_ids: TokenIds
    completion_ids: TokenIds
    top_k: TopK = 5
    with_teacher: bool = True


class ScoreTextBody(Body):
    prompt: Text
    completion: Text
    template: Name | None = "raw"
    top_k: TopK = 5
    with_teacher: bool = True


class PromptBody(Body):
    problem: Text
    template: Name | None = "raw"


class TemplateBody(Body):
    template: Name | None = "auto"


class TextBody(Body):
    text: Text


class IdsBody(Body):
    ids: TokenIds


class SamplingBody(Body):
    """engine.core.decode.SamplingSpec as JSON; its own checks give the one-line reasons."""

    greedy: bool = True
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: Count = 0
    seed: Annotated[int, Field(ge=0, lt=SEED_LIMIT)] = 0
    max_new_tokens: Annotated[int, Field(ge=1, le=MAX_NEW_TOKENS)] = 512
    stop: Annotated[list[Annotated[str, AfterValidator(_text), Field(max_length=MAX_STOP_CHARS)]],
                    Field(max_length=MAX_STOPS)] = Field(default_factory=list)
    ignore_eos: bool = False

    def spec(self) -> SamplingSpec:
        return SamplingSpec(**self.model_dump())


def _fork_sampling() -> SamplingBody:
    return SamplingBody(**asdict(FORK_SAMPLING))


Rows = Annotated[int, Field(ge=1, le=MAX_ROWS)]
Pair = tuple[Count, TokenId]
Pairs = Annotated[list[Pair], Field(max_length=MAX_FORCED)]


class DecodeBody(Body):
    ARGS = {"prompt_ids": "prompt"}

    prompt_ids: TokenIds
    sampling: SamplingBody = Field(default_factory=SamplingBody)
    rollout: TokenIds = Field(default_factory=list)
    force: Pairs = Field(default_factory=list)
    n: Rows = 1
    top: TopK = 5


class InterveneBody(Body):
    prompt_ids: TokenIds
    mode: Name
    sampling: SamplingBody = Field(default_factory=SamplingBody)
    tau: Name | float | None = None
    gold: Text | None = None
    force: Pairs = Field(default_factory=list)
    rollout: TokenIds = Field(default_factory=list)
    top: TopK = 5


class GenerateBody(Body):
    prompt_ids: TokenIds
    sampling: SamplingBody = Field(default_factory=SamplingBody)
    force: Pairs = Field(default_factory=list)
    intervene: Name | None = None
    tau: Name | float | None = None
    n: Rows = 1
    gold: Text | None = None
    top: TopK = 5


class AnalyzeBody(Body):
    dataset: PathText
    limit: Count | None = None
    tau: Name | float = "1.4"
    template: Name | None = "auto"
    max_new_tokens: Annotated[int, Field(ge=1, le=MAX_NEW_TOKENS)] = 512
    batch_size: Count | None = None
    """None: as many rows as fit; a size that does not fit is refused by the engine, with the largest that does."""


class ForkBody(Body):
    prompt_ids: TokenIds
    rollout: TokenIds
    pos: Count
    token: TokenId
    gold: Text | None = None
    n: Rows = 8
    sampling: SamplingBody = Field(default_factory=_fork_sampling)


class EditOverlapBody(Body):
    prompt_ids: TokenIds
    adapter: PathText
    """A PEFT adapter folder for the loaded base, on the daemon's machine."""
    max_new_tokens: Annotated[int, Field(ge=1, le=MAX_NEW_TOKENS)] = 256


class GradeBody(Body):
    completion: Text
    gold: Text
    finish: Name | None = None
    extract: Name = "strict"


class PoolStatsBody(Body):
    """The arguments of Workbench.pool_stats; PoolSpec's own checks give the one-line reasons."""

    rollouts: PathText
    size: Count | None = None
    keep_shortest: float = 1.0
    taus: Annotated[list[Name], Field(max_length=MAX_TAUS)] = Field(default_factory=lambda: list(DEFAULT_TAUS))
    with_base: bool = False


class ProblemsBody(Body):
    dataset: PathText
    limit: Count | None = None


class SubmitBody(Body):
    kind: Name
    config: dict[str, Any] = Field(default_factory=dict)
    entry: Name | None = None
    """`module:function` of the kind, when the daemon has not imported the module that registers it."""


@dataclass(frozen=True)
class Operation:
    """One engine operation as the client interface and the HTTP API both name it."""

    method: str
    """The EngineClient method (the Workbench's, in process)."""
    http: str
    """GET or POST."""
    path: str
    body: type[Body] | None
    """The request body (None for a GET, or for a job addressed by its path alone)."""
    response: Any
    """What the client method returns: a plain record (its JSON is `to_json()`), a list of them, or an iterator
    of them for a stream."""


OPERATIONS: tuple[Operation, ...] = (
    Operation("load", "POST", "/load", LoadBody, WorkbenchInfo),
    Operation("info", "GET", "/info", None, WorkbenchInfo),
    Operation("prompt_ids", "POST", "/prompt_ids", PromptBody, list[int]),
    Operation("template_choice", "POST", "/template", TemplateBody, TemplateChoice),
    Operation("tokenize", "POST", "/tokenize", TextBody, list[int]),
    Operation("detokenize", "POST", "/detokenize", IdsBody, str),
    Operation("token_texts", "POST", "/token_texts", IdsBody, list[str]),
    Operation("score", "POST", "/score", ScoreBody, ScoredRollout),
    Operation("score_text", "POST", "/score_text", ScoreTextBody, ScoredRollout),
    Operation("decode", "POST", "/decode", DecodeBody, typing.Iterator[Step]),
    Operation("intervene", "POST", "/intervene/stream", InterveneBody, InterventionResult),
    Operation("fork_outcomes", "POST", "/fork/stream", ForkBody, ForkEstimate),
    Operation("edit_overlap", "POST", "/edit_overlap", EditOverlapBody, RolloutEdits),
    Operation("generate", "POST", "/generate", GenerateBody, list[InterventionResult]),
    Operation("analyze", "POST", "/analyze", AnalyzeBody, Analysis),
    Operation("pool_stats", "POST", "/pool_stats", PoolStatsBody, PoolStats),
    Operation("grade", "POST", "/grade", GradeBody, GradeResult),
    Operation("problems", "POST", "/problems", ProblemsBody, list[Problem]),
)
"""Every model operation of EngineClient and its route. (`/intervene` and `/fork` answer the same bodies in one
JSON reply for curl; the client uses their stoppable `/stream` forms.)"""

JOB_OPERATIONS: tuple[Operation, ...] = (
    Operation("list_jobs", "GET", "/jobs", None, list[JobStatus]),
    Operation("submit_job", "POST", "/jobs", SubmitBody, JobStatus),
    Operation("job", "GET", "/jobs/{job_id}", None, JobView),
    Operation("job_events", "GET", "/jobs/{job_id}/events", None, typing.Iterator[dict[str, Any]]),
    Operation("cancel_job", "POST", "/jobs/{job_id}/cancel", None, JobStatus),
    Operation("resume_job", "POST", "/jobs/{job_id}/resume", None, JobStatus),
)
"""Every job operation of EngineClient (its JobsClient part) and its route."""

ALL_OPERATIONS: tuple[Operation, ...] = OPERATIONS + JOB_OPERATIONS
"""Everything EngineClient offers, in process (Workbench) and over HTTP (RemoteClient)."""
