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

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from engine.core.config import ModelSpec
from engine.core.decode import MAX_NEW_TOKENS, MAX_STOP_CHARS, MAX_STOPS, SEED_LIMIT, SamplingSpec
from engine.recipes.pool import DEFAULT_TAUS
from engine.service.workbench import FORK_SAMPLING

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


class Body(BaseModel):
    """Every request body: floats must be finite (JSON's 1e309 is inf), and the range checks below give 422s."""

    model_config = ConfigDict(allow_inf_nan=False)


class ModelBody(Body):
    """engine.core.config.ModelSpec as JSON."""

    source: PathText
    adapter: PathText | None = None
    dtype: Name = "auto"
    device: Name = "auto"
    revision: Name | None = None
    trust_remote_code: bool = False

    def spec(self) -> ModelSpec:
        return ModelSpec(**self.model_dump())


class LoadBody(Body):
    base: ModelBody
    teacher: ModelBody | None = None


class ScoreBody(Body):
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
    Operation("edit_overlap", "POST", "/edit_overlap", EditOverlapBody),
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

