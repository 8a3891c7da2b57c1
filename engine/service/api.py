"""The engine's API contract: one request body per operation, and the table that ties each client method to its
HTTP route.

The FastAPI routes take these bodies (so the OpenAPI schema is generated from them), `RemoteClient` sends their
JSON, and `Workbench` answers them in process. To add an operation: a body here, a row in OPERATIONS, the method
on `EngineClient`, `Workbench` and `RemoteClient`, and the route in server.py; tests/test_api_contract.py checks
that all of them agree.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, Field

from engine.core.config import ModelSpec
from engine.core.decode import SamplingSpec
from engine.recipes.pool import DEFAULT_TAUS
from engine.service.workbench import FORK_SAMPLING

MAX_ROWS = 4096
"""The most sequences one decode or fork may ask for."""


def _text(value: str) -> str:
    """Refuse strings Python can hold but the tokenizer cannot (lone surrogates, NUL)."""
    value.encode("utf-8")  # raises ValueError, which pydantic turns into a 422 with the reason
    if "\x00" in value:
        raise ValueError("text must not contain NUL characters")
    return value


Text = Annotated[str, AfterValidator(_text)]
TokenId = Annotated[int, Field(ge=0, lt=2**31)]
TopK = Annotated[int, Field(ge=1, le=1000)]


class ModelBody(BaseModel):
    """engine.core.config.ModelSpec as JSON."""

    source: Text
    adapter: Text | None = None
    dtype: str = "auto"
    device: str = "auto"
    revision: Text | None = None
    trust_remote_code: bool = False

    def spec(self) -> ModelSpec:
        return ModelSpec(**self.model_dump())


class LoadBody(BaseModel):
    base: ModelBody
    teacher: ModelBody | None = None


class ScoreBody(BaseModel):
    prompt_ids: list[TokenId]
    completion_ids: list[TokenId]
    top_k: TopK = 5
    with_teacher: bool = True


class ScoreTextBody(BaseModel):
    prompt: Text
    completion: Text
    template: Text | None = "raw"
    top_k: TopK = 5
    with_teacher: bool = True


class PromptBody(BaseModel):
    problem: Text
    template: Text | None = "raw"


class TemplateBody(BaseModel):
    template: Text | None = "auto"


class TextBody(BaseModel):
    text: Text


class IdsBody(BaseModel):
    ids: list[TokenId]


class SamplingBody(BaseModel):
    """engine.core.decode.SamplingSpec as JSON; its own checks give the one-line reasons."""

    greedy: bool = True
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    seed: int = 0
    max_new_tokens: int = 512
    stop: list[Text] = Field(default_factory=list)

    def spec(self) -> SamplingSpec:
        return SamplingSpec(**self.model_dump())


def _fork_sampling() -> SamplingBody:
    return SamplingBody(**asdict(FORK_SAMPLING))


Rows = Annotated[int, Field(le=MAX_ROWS)]
Pair = tuple[int, int]


class DecodeBody(BaseModel):
    prompt_ids: list[TokenId]
    sampling: SamplingBody = Field(default_factory=SamplingBody)
    rollout: list[TokenId] = Field(default_factory=list)
    force: list[Pair] = Field(default_factory=list)
    n: Rows = 1
    top: TopK = 5


class InterveneBody(BaseModel):
    prompt_ids: list[TokenId]
    mode: str
    sampling: SamplingBody = Field(default_factory=SamplingBody)
    tau: Text | float | None = None
    gold: Text | None = None
    force: list[Pair] = Field(default_factory=list)
    rollout: list[TokenId] = Field(default_factory=list)
    top: TopK = 5


class ForkBody(BaseModel):
    prompt_ids: list[TokenId]
    rollout: list[TokenId]
    pos: int
    token: int
    gold: Text | None = None
    n: Rows = 8
    sampling: SamplingBody = Field(default_factory=_fork_sampling)


class GradeBody(BaseModel):
    completion: Text
    gold: Text
    finish: Text | None = None
    extract: Text = "strict"


class PoolStatsBody(BaseModel):
    """The arguments of Workbench.pool_stats; PoolSpec's own checks give the one-line reasons."""

    rollouts: Text
    size: int | None = None
    keep_shortest: float = 1.0
    taus: list[Text] = Field(default_factory=lambda: list(DEFAULT_TAUS))
    with_base: bool = False


class ProblemsBody(BaseModel):
    dataset: Text
    limit: int | None = None


class SubmitBody(BaseModel):
    kind: str
    config: dict[str, Any] = Field(default_factory=dict)
    entry: str | None = None
    """`module:function` of the kind, when the daemon has not imported the module that registers it."""


@dataclass(frozen=True)
class Operation:
    """One engine operation as the client interface and the HTTP API both name it."""

    method: str
    """The EngineClient method."""
    http: str
    """GET or POST."""
    path: str
    body: type[BaseModel] | None
    """The request body (None for a GET)."""


OPERATIONS: tuple[Operation, ...] = (
    Operation("load", "POST", "/load", LoadBody),
    Operation("info", "GET", "/info", None),
    Operation("prompt_ids", "POST", "/prompt_ids", PromptBody),
    Operation("template_choice", "POST", "/template", TemplateBody),
    Operation("tokenize", "POST", "/tokenize", TextBody),
    Operation("detokenize", "POST", "/detokenize", IdsBody),
    Operation("token_texts", "POST", "/token_texts", IdsBody),
    Operation("score", "POST", "/score", ScoreBody),
    Operation("score_text", "POST", "/score_text", ScoreTextBody),
    Operation("decode", "POST", "/decode", DecodeBody),
    Operation("intervene", "POST", "/intervene/stream", InterveneBody),
    Operation("fork_outcomes", "POST", "/fork/stream", ForkBody),
    Operation("pool_stats", "POST", "/pool_stats", PoolStatsBody),
    Operation("grade", "POST", "/grade", GradeBody),
    Operation("problems", "POST", "/problems", ProblemsBody),
)
"""Every EngineClient operation and its route. (`/intervene` and `/fork` answer the same bodies in one JSON reply
for curl; the client uses their stoppable `/stream` forms.)"""

JOB_OPERATIONS: tuple[Operation, ...] = (
    Operation("list_jobs", "GET", "/jobs", None),
    Operation("submit_job", "POST", "/jobs", SubmitBody),
    Operation("job", "GET", "/jobs/{job_id}", None),
    Operation("job_events", "GET", "/jobs/{job_id}/events", None),
    Operation("cancel_job", "POST", "/jobs/{job_id}/cancel", None),
    Operation("resume_job", "POST", "/jobs/{job_id}/resume", None),
)
"""Every JobsClient operation and its route."""

