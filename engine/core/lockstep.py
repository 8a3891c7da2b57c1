"""Continuously batched decoding of many independent rows, each with its own prompt, forcing, rule and stopping.

Rows sit left-padded in one KV cache per model (the base, and a teacher fed in lockstep when
rules need it or rows are driven by it). A finished row leaves the batch at once and a waiting row joins it: its
prompt is prefilled on its own, then its cache is padded and stacked onto the running one, so
every row's positions, and so its tokens, are those of a decode of that row alone.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field, replace
from typing import Iterable, Iterator

from engine.core.decode import (
    Rule, SamplingSpec, Step, StepContext, _check_top, _hits_stop, _sample, _Track, check_force,
    check_prompt,
)
from engine.core.errors import RmxError
from engine.core.models import LoadedModel
from engine.core.records import TopToken
from engine.core.scoring import lse_entropy


@dataclass(frozen=True)
class RowRequest:
    """One completion to decode: a prompt, who drives it, tokens forced at given positions, and a steering rule."""

    prompt: tuple[int, ...]
    """The prompt's token ids."""
    force: tuple[tuple[int, int], ...] = ()
    """(position, token id) pairs, positions 0-based from the first completion token; they win over the rule."""
    rule: Rule | None = field(default=None, compare=False)
    """This row's own steering rule (its StepContext.row is 0), or None to let the driver pick."""
    drive: str = "base"
    """Whose picks and statistics the row's steps carry: the base's, or the teacher's alone."""
    sampling: SamplingSpec | None = None
    """This row's own sampling and stopping; None takes the batch's."""

    def __post_init__(self) -> None:
        if self.drive not in ("base", "teacher"):
            raise RmxError(f"drive must be base or teacher, got '{self.drive}'")
        object.__setattr__(self, "prompt", tuple(int(t) for t in self.prompt))
        object.__setattr__(self, "force", tuple(tuple(pair) for pair in self.force))


class RowQueue:
    """Requests waiting for a slot in a lockstep batch, numbered in the order they are put.

    A caller may put more while the decode runs (say, a row that needs another row's result):
    the decode takes them as slots free up and ends only when the batch and the queue are empty.
    """

    def __init__(self, requests: Iterable[RowRequest] = ()):
        self._waiting: deque[tuple[int, RowRequest]] = deque()
        self._count = 0
        for request in requests:
            self.put(request)

    def put(self, request: RowRequest, *, first: bool = False) -> int:
        """Queue a request (at the front with `first`); returns its row number (Step.row of its steps)."""
        if not isinstance(request, RowRequest):
            raise RmxError(f"a lockstep row is a RowRequest, got {type(request).__name__}")
        row = self._count
        self._count += 1
        if first:
            self._waiting.appendleft((row, request))
        else:
            self._waiting.append((row, request))
        return row

    def __len__(self) -> int:
        return len(self._waiting)

    def peek(self, n: int) -> list[RowRequest]:
        """The next n requests, left waiting."""
        return [request for _, request in list(self._waiting)[:n]]

    def take(self, n: int) -> list[tuple[int, RowRequest]]:
        """Up to n waiting (row, request) pairs, front first."""
        return [self._waiting.popleft() for _ in range(min(n, len(self._waiting)))]


@dataclass
class _Row:
    """A row of the running batch: what it was asked, what it decoded, and its own sampler."""

    number: int
    drive: int
    """Which track drives it: 0 the base's, 1 the teacher's."""
    sampling: SamplingSpec
    forced: dict[int, int]
    rule: Rule | None
    seq: list[int]
    new: list[int] = field(default_factory=list)
    generator: object = None


def decode_rows(
    base: LoadedModel,
    requests: RowQueue | Iterable[RowRequest],
    sampling: SamplingSpec = SamplingSpec(),
    *,
    teacher: LoadedModel | None = None,
    batch_size: int = 8,
    top: int = 5,
) -> Iterator[Step]:
    """Decode every request, at most `batch_size` rows at a time, yielding one step at a time.

    `Step.row` is the request's number in its queue. Each row stops on its own (EOS, a stop
    string, max_new_tokens or a full context window); its last step carries `end`, and a waiting
    request takes its slot before the next step. With a `teacher`, both models are fed every
    row's tokens in lockstep: rules read the teacher's logits for their row, and a row may be
    driven by the teacher alone. A sampled row draws from its own generator seeded with its
    sampling's seed, so its tokens do not depend on its neighbours. The first requests are
    checked here, before the first step is asked for; later ones as they join.
    """
    if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
        raise RmxError(f"--batch-size must be a positive integer, got {batch_size}")
    if teacher is not None and teacher.vocab_size != base.vocab_size:
        raise RmxError(
            f"teacher vocabulary ({teacher.vocab_size}) differs from base vocabulary ({base.vocab_size}): "
            "a teacher must share the base's tokenizer"
        )
    _check_top(base, top)
    queue = requests if isinstance(requests, RowQueue) else RowQueue(requests)
    views = [base] + ([teacher] if teacher is not None else [])
    for request in queue.peek(batch_size):
        check_row(views, request, sampling)
    return _Lockstep(views, sampling, batch_size, top).run(queue)


def check_row(views: list[LoadedModel], request: RowRequest, sampling: SamplingSpec) -> dict[int, int]:
    """The request's forced tokens as a dict, after refusing a bad prompt, forcing or driver in one line."""
    if request.drive == "teacher" and len(views) < 2:
        raise RmxError("a row driven by the teacher needs a teacher model: pass --teacher")
    view = views[1 if request.drive == "teacher" else 0]
    check_prompt(view, request.prompt)
    return check_force(view, request.force, 0, (request.sampling or sampling).max_new_tokens)


class _Lockstep:
    """The running batch: its rows, one track per model, and the step that serves them all."""

    def __init__(self, views: list[LoadedModel], sampling: SamplingSpec, batch_size: int, top: int):
        self.views = views
        self.sampling = sampling
        self.batch_size = batch_size
        self.top = top
        self.rows: list[_Row] = []
        self.tracks: list[_Track] = []

    def run(self, queue: RowQueue) -> Iterator[Step]:
        import torch

        with torch.inference_mode():
            self._admit(queue)
        while self.rows:
            with torch.inference_mode():
                steps = self._step()
            finished: set[int] = set()
            for index, step in enumerate(steps):
                row = self.rows[index]
                row.new.append(step.id)
                row.seq.append(step.id)
                end = self._end(row, step.id)
                if end is not None:
                    finished.add(index)
                    step = replace(step, end=end)
                yield step
            with torch.inference_mode():
                if finished:
                    self._drop([i for i in range(len(self.rows)) if i not in finished])
                if self.rows:
                    feed = [[row.seq[-1]] for row in self.rows]
                    for track in self.tracks:
                        track.extend(feed)
                self._admit(queue)

    def _end(self, row: _Row, token: int) -> str | None:
        """Why the row stops after `token`, in the single decoder's order of checks, or None."""
        view = self.views[row.drive]
        sampling = row.sampling
        if token in view.eos_ids:
            return "eos"
        # Enough trailing tokens to spell any stop string, even at one byte per token plus merges.
        window = 4 * max((len(s) for s in sampling.stop), default=0) + 4
        if sampling.stop and _hits_stop(view, row.new[-window:], sampling.stop):
            return "stop"
        if len(row.new) == sampling.max_new_tokens:
            return "length"
        if len(row.seq) >= view.context_length:
            return "context"
        return None

    def _admit(self, queue: RowQueue) -> None:
        """Prefill waiting requests into free slots and stack their caches under the running rows'."""
        import torch

        if self.rows and not all(_stackable(track) for track in self.tracks):
            # A cache kind that cannot be stacked (sliding windows, say): newcomers wait for an empty batch.
            return
        joining = queue.take(self.batch_size - len(self.rows))
        if not joining:
            return
        rows = []
        for number, request in joining:
            forced = check_row(self.views, request, self.sampling)
            sampling = request.sampling or self.sampling
            generator = None
            if not sampling.greedy:
                generator = torch.Generator(device=self.views[0].device).manual_seed(sampling.seed)
            rows.append(_Row(number=number, drive=1 if request.drive == "teacher" else 0, sampling=sampling,
                             forced=forced, rule=request.rule, seq=list(request.prompt), generator=generator))
        prompts = [list(row.seq) for row in rows]
        fresh = []
        for view in self.views:
            track = _Track(view)
            track.reach(prompts)
            fresh.append(track)
        if not self.rows:
            self.tracks = fresh
        else:
            self.tracks = [_stack(old, new) for old, new in zip(self.tracks, fresh)]
        self.rows.extend(rows)

    def _drop(self, keep: list[int]) -> None:
        """Keep only the rows at `keep`, and cut the padding columns no remaining row needs."""
        import torch

        self.rows = [self.rows[i] for i in keep]
        if not self.rows:
            self.tracks = []
            return
        index = torch.tensor(keep, dtype=torch.long)
        for track in self.tracks:
            # The logits need no selection: the next feed replaces them.
            track.cache.batch_select_indices(index.to(track.view.device))
            track.mask = track.mask[index]
            track.rows = [track.rows[i] for i in keep]
            unused = int((track.mask.sum(0) == 0).long().cumprod(0).sum())
            if unused and _stackable(track):
                for layer in track.cache.layers:
                    layer.keys = layer.keys[:, :, unused:, :]
                    layer.values = layer.values[:, :, unused:, :]
                track.mask = track.mask[:, unused:]

    def _step(self) -> list[Step]:
        """Each row's next token: forced, else its rule's override, else its driver's own pick."""
        import torch

        teacher = self.tracks[1].logits if len(self.tracks) > 1 else None
        driven = [index for index, row in enumerate(self.rows) if row.drive == 1]
        logits = self.tracks[0].logits
        if driven:
            # A copy, so that centring the drivers' logits leaves the teacher's as rules read them.
            logits = logits.clone()
            logits[driven] = teacher[driven]
        lse, entropy = lse_entropy(logits)
        top_values, top_ids = torch.topk(logits, self.top, dim=-1)
        top_logprobs = (top_values - lse[:, None]).tolist()
        top_ids = top_ids.tolist()
        # argmax, not topk's first, so that ties break to the lowest id exactly as in HF generate.
        argmax = logits.argmax(-1).tolist()
        entropies = entropy.tolist()
        chosen: list[tuple[int, str]] = []
        for index, row in enumerate(self.rows):
            pos = len(row.new)
            own = "teacher" if row.drive == 1 else "base"
            token = argmax[index]
            if not row.sampling.greedy:
                token = int(_sample(logits[index : index + 1], row.sampling, row.generator)[0])
            source = own
            if pos in row.forced:
                token, source = row.forced[pos], "forced"
            elif row.rule is not None:
                decision = row.rule(StepContext(
                    row=0, pos=pos, logits=logits[index], entropy=entropies[index], argmax=argmax[index],
                    pick=token, teacher_logits=_teacher_row(teacher, index),
                ))
                # An override that names the model's own pick changes nothing, so it is not a touch.
                if decision is not None and int(decision[0]) != token:
                    token, source = int(decision[0]), decision[1]
            chosen.append((token, source))
        tokens = torch.tensor([token for token, _ in chosen], device=logits.device)
        logprobs = (logits.gather(1, tokens[:, None])[:, 0] - lse).tolist()
        return [
            Step(pos=len(row.new), id=token, text=self.views[row.drive].token_text(token), logprob=logprob,
                 entropy=entropies[index], source=source, row=row.number,
                 top=tuple(TopToken(id=i, text=self.views[row.drive].token_text(i), logprob=lp)
                           for i, lp in zip(top_ids[index], top_logprobs[index])))
            for index, (row, (token, source), logprob) in enumerate(zip(self.rows, chosen, logprobs))
        ]


def _teacher_row(teacher, index: int):
    def fetch():
        if teacher is None:
            raise RmxError("this intervention needs a teacher model: pass --teacher")
        return teacher[index]

    return fetch


def _stackable(track: _Track) -> bool:
    """Whether every layer of the track's cache is a plain growing one, whose tensors can be padded and stacked."""
    from transformers.cache_utils import DynamicLayer

    return all(type(layer) is DynamicLayer for layer in track.cache.layers)


def _stack(old: _Track, new: _Track) -> _Track:
    """One track over old's rows then new's, both left-padded to the wider of the two."""
    import torch

    width = max(old.width, new.width)
    for track in (old, new):
        pad = width - track.width
        if pad:
            for layer in track.cache.layers:
                shape = list(layer.keys.shape)
                shape[2] = pad
                layer.keys = torch.cat([layer.keys.new_zeros(shape), layer.keys], dim=2)
                shape = list(layer.values.shape)
                shape[2] = pad
                layer.values = torch.cat([layer.values.new_zeros(shape), layer.values], dim=2)
            track.mask = torch.cat([track.mask.new_zeros((track.mask.shape[0], pad)), track.mask], dim=1)
    for mine, theirs in zip(old.cache.layers, new.cache.layers):
        mine.keys = torch.cat([mine.keys, theirs.keys], dim=0)
        mine.values = torch.cat([mine.values, theirs.values], dim=0)
    old.mask = torch.cat([old.mask, new.mask], dim=0)
    old.rows = old.rows + new.rows
    old.logits = torch.cat([old.logits, new.logits], dim=0)
    return old

