"""Step-by-step decoding with exact base statistics, forced tokens, steering rules and reusable KV caches."""

from __future__ import annotations

import copy
from dataclasses import dataclass, replace
from typing import Callable, Iterator, Sequence

from engine.core.errors import RmxError
from engine.core.models import LoadedModel
from engine.core.records import TopToken
from engine.core.scoring import lse_entropy

SOURCES = ("base", "teacher", "forced", "random")
SEED_LIMIT = 1 << 64
"""Seeds lie in [0, 2⁶⁴): what torch.Generator.manual_seed takes."""
MAX_NEW_TOKENS = 1 << 20
"""The most tokens one call may ask to decode."""
MAX_STOPS, MAX_STOP_CHARS = 64, 1000
"""The most stop strings, and the longest one."""
"""Who chose a token: the driving model itself, the teacher, the user, or the random control."""
ENDS = ("eos", "stop", "length", "context")
"""Why a row stopped: an EOS token, a stop string, max_new_tokens, or a full context window."""


@dataclass(frozen=True)
class SamplingSpec:
    """How the driving model picks its own tokens, and when a row stops."""

    greedy: bool = True
    """Take the argmax (ties go to the lowest id, as in HF generate); False samples."""
    temperature: float = 1.0
    """Sampling temperature (> 0); it never changes the reported entropy, which is at temperature 1."""
    top_p: float = 1.0
    """Nucleus mass in (0, 1]: sample among the fewest tokens whose probability reaches it; 1 keeps all."""
    top_k: int = 0
    """Sample among the k most likely tokens; 0 keeps all."""
    seed: int = 0
    """Seed of the torch.Generator that draws samples (and of the random-substitution control)."""
    max_new_tokens: int = 512
    """Most tokens decoded per row and call, forced ones included."""
    stop: tuple[str, ...] = ()
    """A row stops once the text decoded from its new ids contains one of these strings."""
    ignore_eos: bool = False
    """Keep decoding past an EOS token (to reach a later forced position); rows then end at a stop or the length."""

    def __post_init__(self) -> None:
        if not isinstance(self.greedy, bool):
            raise RmxError(f"greedy must be true or false, got {self.greedy!r}")
        if not isinstance(self.temperature, (int, float)) or not 0 < self.temperature < float("inf"):
            raise RmxError(f"--temperature must be a finite number > 0, got {self.temperature}")
        if not isinstance(self.top_p, (int, float)) or not 0.0 < self.top_p <= 1.0:
            raise RmxError(f"--top-p must be in (0, 1], got {self.top_p}")
        if not isinstance(self.top_k, int) or isinstance(self.top_k, bool) or self.top_k < 0:
            raise RmxError(f"--top-k must be an integer ≥ 0 (0 keeps all tokens), got {self.top_k}")
        if not isinstance(self.seed, int) or isinstance(self.seed, bool) or not 0 <= self.seed < SEED_LIMIT:
            raise RmxError(f"--seed must be an integer in [0, 2^64), got {str(self.seed)[:40]}")
        if (not isinstance(self.max_new_tokens, int) or isinstance(self.max_new_tokens, bool)
                or not 1 <= self.max_new_tokens <= MAX_NEW_TOKENS):
            raise RmxError(f"--max-new-tokens must be an integer in 1..{MAX_NEW_TOKENS}, got {str(self.max_new_tokens)[:40]}")
        if isinstance(self.stop, str) or not all(isinstance(s, str) and s for s in self.stop):
            raise RmxError(f"stop strings must be a list of non-empty strings, got {str(self.stop)[:80]}")
        if len(self.stop) > MAX_STOPS or any(len(s) > MAX_STOP_CHARS for s in self.stop):
            raise RmxError(f"at most {MAX_STOPS} stop strings of at most {MAX_STOP_CHARS} characters each")
        if not isinstance(self.ignore_eos, bool):
            raise RmxError(f"ignore_eos must be true or false, got {self.ignore_eos!r}")
        # Lists from a CLI or JSON become a tuple so that the spec stays hashable.
        object.__setattr__(self, "stop", tuple(self.stop))


@dataclass(frozen=True)
class Step:
    """One emitted token, with the driving model's exact statistics at its position."""

    pos: int
    """0-based position counted from the first completion token."""
    id: int
    """The emitted token id."""
    text: str
    """This token's text alone, for display; whole texts are always decoded from ids."""
    logprob: float
    """Log-probability of the emitted token under the driving model at temperature 1, in nats."""
    entropy: float
    """Exact full-vocabulary entropy of the driving model at temperature 1, in nats."""
    top: tuple[TopToken, ...]
    """The driving model's most likely tokens here, most likely first."""
    source: str
    """Who chose the token: base (the driving model's own pick), teacher, forced or random."""
    row: int = 0
    """Which sequence of the batch this step belongs to."""
    end: str | None = None
    """On a row's last step, why it stopped (one of ENDS); None before that."""

    def __post_init__(self) -> None:
        if self.source not in SOURCES:
            raise RmxError(f"unknown step source '{self.source}': use one of {', '.join(SOURCES)}")
        if self.end is not None and self.end not in ENDS:
            raise RmxError(f"unknown end reason '{self.end}': use one of {', '.join(ENDS)}")
        if self.pos < 0 or self.row < 0:
            raise RmxError(f"a step's position and row must be ≥ 0, got pos {self.pos}, row {self.row}")

    def to_json(self, with_ids: bool = False) -> dict:
        """The public per-token shape of `rmx generate --json`; `with_ids` adds what `from_json` needs."""
        if with_ids:
            top = [{"id": t.id, "text": t.text, "logprob": t.logprob} for t in self.top]
            return {"pos": self.pos, "id": self.id, "text": self.text, "logprob": self.logprob, "entropy": self.entropy,
                    "top": top, "source": self.source, "row": self.row, "end": self.end}
        return {"pos": self.pos, "id": self.id, "text": self.text, "source": self.source, "entropy": self.entropy}

    @classmethod
    def from_json(cls, data: dict) -> "Step":
        """Rebuild a step from `to_json(with_ids=True)`; a NaN sent as null comes back as NaN."""
        return cls(pos=int(data["pos"]), id=int(data["id"]), text=data["text"], logprob=_float(data["logprob"]),
                   entropy=_float(data["entropy"]),
                   top=tuple(TopToken(id=int(t["id"]), text=t["text"], logprob=_float(t["logprob"]))
                             for t in data["top"]),
                   source=data["source"], row=int(data.get("row", 0)), end=data.get("end"))


def _float(value: float | None) -> float:
    """JSON carries NaN as null (engine.jobs.store.json_bytes): read it back as NaN."""
    return float("nan") if value is None else float(value)


@dataclass(frozen=True)
class StepContext:
    """What a steering rule sees for one row at one position, before the token is emitted."""

    row: int
    pos: int
    logits: object
    """The driving model's next-token logits (fp32 tensor over the vocabulary)."""
    entropy: float
    argmax: int
    """The driving model's most likely token."""
    pick: int
    """The token the driving model would emit on its own (its argmax, or its sample)."""
    teacher_logits: Callable[[], object]
    """The teacher's next-token logits for this row, computed on first use (its cache catches up lazily)."""


Rule = Callable[[StepContext], "tuple[int, str] | None"]
"""A steering rule: (token, source) to emit instead of the driving model's pick, or None to keep it."""


def _common_prefix(cached: list[int], wanted: list[int]) -> int:
    if wanted[: len(cached)] == cached:
        return len(cached)
    limit = min(len(cached), len(wanted))
    for index in range(limit):
        if cached[index] != wanted[index]:
            return index
    return limit


class _Track:
    """One view's KV cache over a batch of left-padded rows, and the logits that follow each row."""

    def __init__(self, view: LoadedModel):
        self.view = view
        self.cache = None
        self.rows: list[list[int]] = []
        self.mask = None
        self.logits = None
        self.lease = 0
        """Bumped whenever a new decode takes this track, so an older one still running can tell."""

    @property
    def width(self) -> int:
        return 0 if self.mask is None else int(self.mask.shape[1])

    def reach(self, rows: list[list[int]]):
        """Make the cache cover `rows` and return the logits after each, feeding only what is not cached."""
        keep = self._reusable(rows)
        if keep is None:
            return self._prefill(rows)
        pads = [self.width - len(row) for row in self.rows]
        if keep == len(rows[0]) + pads[0]:
            return self.logits
        self._crop(keep)
        return self.extend([row[keep - pad :] for row, pad in zip(rows, pads)])

    def _reusable(self, rows: list[list[int]]) -> int | None:
        """How many cached columns `rows` can keep, or None when only a fresh prefill will do."""
        if self.cache is None or len(rows) != len(self.rows):
            return None
        pads = [self.width - len(row) for row in self.rows]
        # Left padding is fixed, so the new rows must stay right-aligned with the cached ones.
        targets = {len(row) + pad for row, pad in zip(rows, pads)}
        if len(targets) != 1:
            return None
        target = targets.pop()
        keep = min(pad + _common_prefix(cached, wanted) for cached, wanted, pad in zip(self.rows, rows, pads))
        if keep == target == self.width:
            return keep
        # Logits come out of a forward pass, so at least one token is always fed.
        keep = min(keep, target - 1)
        if keep < max(1, max(pads)) or (keep < self.width and not self._croppable()):
            return None
        return keep

    def _croppable(self) -> bool:
        return bool(getattr(self.cache, "is_croppable", True))

    def _crop(self, keep: int) -> None:
        if keep < self.width:
            # Negative counts mean "remove this many" in every transformers version with DynamicCache.crop.
            self.cache.crop(keep - self.width)
            pads = [self.width - len(row) for row in self.rows]
            self.rows = [row[: keep - pad] for row, pad in zip(self.rows, pads)]
            self.mask = self.mask[:, :keep]

    def _prefill(self, rows: list[list[int]]):
        import torch
        from transformers import DynamicCache

        width = max(len(row) for row in rows)
        ids = torch.full((len(rows), width), _pad_id(self.view), dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for index, row in enumerate(rows):
            ids[index, width - len(row) :] = torch.tensor(row, dtype=torch.long)
            mask[index, width - len(row) :] = 1
        self.cache = DynamicCache(config=self.view.core.config)
        self.rows = [[] for _ in rows]
        self.mask = mask[:, :0]
        return self._forward(ids, mask, [list(row) for row in rows])

    def extend(self, fresh: list[list[int]]):
        """Feed the same number of new tokens to every row; return the logits after them."""
        import torch

        ids = torch.tensor(fresh, dtype=torch.long)
        mask = torch.cat([self.mask, torch.ones_like(ids)], dim=1)
        return self._forward(ids, mask, fresh)

    def _forward(self, ids, mask, fresh: list[list[int]]):
        device = self.view.device
        # As HF generate does: positions count real tokens only, so left padding does not shift them.
        # A finished row's filler may run past the window; clamping keeps its lookups in range, and
        # nothing it computes is used.
        positions = (mask.cumsum(-1) - 1).clamp(0, self.view.context_length - 1)[:, -ids.shape[1] :]
        try:
            with self.view.active() as module:
                out = module(
                    input_ids=ids.to(device), attention_mask=mask.to(device), position_ids=positions.to(device),
                    cache=self.cache, use_cache=True, logits_to_keep=1,
                )
        except BaseException:
            # The cache may hold part of this feed; forget it rather than trust it.
            self.cache, self.rows, self.mask, self.logits = None, [], None, None
            raise
        self.mask = mask
        for row, new in zip(self.rows, fresh):
            row.extend(new)
        self.logits = out.logits[:, -1, :].float()
        return self.logits

    def expand(self, n: int) -> "_Track":
        """A copy of this one-row track repeated n times; this track's own cache is left untouched."""
        clone = _Track(self.view)
        clone.cache = copy.copy(self.cache)
        # Layers reassign their tensors on update and crop, so shallow copies never write into ours.
        clone.cache.layers = [copy.copy(layer) for layer in self.cache.layers]
        clone.cache.batch_repeat_interleave(n)
        clone.rows = [list(self.rows[0]) for _ in range(n)]
        clone.mask = self.mask.repeat(n, 1)
        clone.logits = self.logits.repeat(n, 1)
        return clone


def _pad_id(view: LoadedModel) -> int:
    tokenizer = view.tokenizer
    for candidate in (tokenizer.pad_token_id, tokenizer.eos_token_id):
        if candidate is not None:
            return int(candidate)
    return 0


def check_prompt(view: LoadedModel, prompt_ids: Sequence[int], kept: int = 0) -> list[int]:
    """The prompt as a list of ints, refused when empty, out of vocabulary, or leaving no room in the context."""
    prompt = [int(t) for t in prompt_ids]
    if not prompt:
        raise RmxError("empty prompt: decoding needs at least one prompt token")
    vocab = view.vocab_size
    bad = next((t for t in prompt if not 0 <= t < vocab), None)
    if bad is not None:
        raise RmxError(f"prompt token id {bad} is outside the vocabulary (0..{vocab - 1})")
    if len(prompt) + kept >= view.context_length:
        what = "prompt and kept completion are" if kept else "prompt is"
        raise RmxError(
            f"{what} {len(prompt) + kept} tokens, which leaves no room in the model's context "
            f"({view.context_length}): shorten it"
        )
    return prompt


def check_force(view: LoadedModel, force: Sequence[tuple[int, int]], rollout_len: int,
                max_new_tokens: int) -> dict[int, int]:
    """Forced (position, token) pairs as a dict, each bad pair refused in one line.

    Decoding starts at the first forced position or at the end of the rollout, whichever comes
    first, so a forced position must lie in [0, start + max_new_tokens − 1] to be reached.
    """
    forced: dict[int, int] = {}
    vocab = view.vocab_size
    for pair in force:
        try:
            pos, token = (int(v) for v in pair)
        except (TypeError, ValueError):
            raise RmxError(f"a forced token is a (position, token id) pair, got {pair!r}") from None
        if not 0 <= token < vocab:
            raise RmxError(f"forced token id {token} is outside the vocabulary (0..{vocab - 1})")
        if pos < 0:
            raise RmxError(f"forced position {pos} is negative: positions count from 0 at the first completion token")
        if pos in forced:
            raise RmxError(f"position {pos} is forced twice")
        forced[pos] = token
    if forced:
        start = min(rollout_len, min(forced))
        last = start + max_new_tokens - 1
        beyond = max(forced)
        if beyond > last:
            raise RmxError(
                f"forced position {beyond} is outside [0, {last}]: decoding starts at position {start} "
                f"and makes at most {max_new_tokens} tokens"
            )
    return forced


class DecodeSession:
    """The KV caches of the sequence being browsed, for a base and an optional teacher.

    Each decode leaves its sequence cached; the next one keeps the longest common start and
    crops the rest, so forking a cached rollout at position t feeds only the new tokens.
    """

    def __init__(self, base: LoadedModel, teacher: LoadedModel | None = None):
        if teacher is not None and teacher.vocab_size != base.vocab_size:
            raise RmxError(
                f"teacher vocabulary ({teacher.vocab_size}) differs from base vocabulary ({base.vocab_size}): "
                "a teacher must share the base's tokenizer"
            )
        self.base = base
        self.teacher = teacher
        self._tracks = {"base": _Track(base), "teacher": _Track(teacher) if teacher is not None else None}

    def cached(self, role: str = "base") -> tuple[int, ...]:
        """The token ids (prompt included) whose keys and values the base (or teacher) cache holds."""
        track = self._tracks[role]
        return tuple(track.rows[0]) if track is not None and len(track.rows) == 1 else ()

    def prefill(self, ids: Sequence[int]) -> None:
        """Teacher-force `ids` (a prompt and any completion) into the base cache, reusing its cached start."""
        import torch

        row = check_prompt(self.base, ids)
        track = self._tracks["base"]
        track.lease += 1
        with torch.inference_mode():
            track.reach([row])

    def decode(
        self,
        prompt_ids: Sequence[int],
        sampling: SamplingSpec = SamplingSpec(),
        *,
        rollout: Sequence[int] = (),
        force: Sequence[tuple[int, int]] = (),
        rule: Rule | None = None,
        n: int = 1,
        top: int = 5,
        drive: str = "base",
    ) -> Iterator[Step]:
        """Decode n rows from one prompt, yielding one step at a time (steps of the n rows interleave).

        `rollout` is an earlier completion to continue or fork: decoding starts at its end or at the
        first forced position, whichever comes first, keeping the rollout's tokens before that as
        given, so positions continue the rollout's. Forced tokens and rule overrides go through the same
        loop as the model's own picks. `drive="teacher"` decodes with the teacher alone: its steps
        carry the teacher's statistics and the source "teacher". Inputs are checked here, before
        the first step is asked for.
        """
        if not isinstance(n, int) or isinstance(n, bool) or n < 1:
            raise RmxError(f"n must be a positive integer, got {n}")
        if drive not in ("base", "teacher"):
            raise RmxError(f"drive must be base or teacher, got '{drive}'")
        driver = self._tracks[drive]
        if driver is None:
            raise RmxError("decoding with the teacher needs a teacher model: pass --teacher")
        view = driver.view
        _check_top(view, top)
        rollout_ids = [int(t) for t in rollout]
        forced = check_force(view, force, len(rollout_ids), sampling.max_new_tokens)
        start = min([len(rollout_ids), *forced])
        kept = rollout_ids[:start]
        bad = next((t for t in kept if not 0 <= t < view.vocab_size), None)
        if bad is not None:
            raise RmxError(f"completion token id {bad} is outside the vocabulary (0..{view.vocab_size - 1})")
        prefix = check_prompt(view, prompt_ids, len(kept)) + kept
        follower = self._tracks["teacher"] if drive == "base" else None
        loop = _Loop(driver, sampling, start=start, forced=forced, rule=rule, top=top,
                     own="base" if drive == "base" else "teacher")
        return loop.run(lambda track: _branch(track, prefix, n), follower)


def decode_batch(
    base: LoadedModel,
    prompts: Sequence[Sequence[int]],
    sampling: SamplingSpec = SamplingSpec(),
    *,
    top: int = 5,
) -> Iterator[Step]:
    """Decode independent prompts as one left-padded batch with fresh caches; `Step.row` says which prompt."""
    if not prompts:
        raise RmxError("no prompts to decode")
    _check_top(base, top)
    rows = [check_prompt(base, p) for p in prompts]

    def prepare(track: _Track):
        track.reach(rows)
        return track

    return _Loop(_Track(base), sampling, start=0, forced={}, rule=None, top=top, own="base").run(prepare, None)


def _check_top(view: LoadedModel, top: int) -> None:
    if not isinstance(top, int) or isinstance(top, bool) or not 1 <= top <= view.vocab_size:
        raise RmxError(f"--top-k alternatives must be between 1 and the vocabulary size ({view.vocab_size}), got {top}")


def _branch(track: _Track, prefix: list[int], n: int) -> _Track:
    """A track over n rows that start with `prefix`: the session's own track for one row, else a repeated copy."""
    track.lease += 1
    track.reach([prefix])
    return track if n == 1 else track.expand(n)


class _Loop:
    """The decoding loop every entry point shares: pick, maybe override, emit, check stops, feed."""

    def __init__(self, driver: _Track, sampling: SamplingSpec, *, start: int, forced: dict[int, int],
                 rule: Rule | None, top: int, own: str):
        self.driver = driver
        self.view = driver.view
        self.sampling = sampling
        self.start = start
        self.forced = forced
        self.rule = rule
        self.top = top
        self.own = own
        self.prepare = None
        self.follower: _Track | None = None
        self.following: _Track | None = None
        self.leases: list[tuple[_Track, int]] = []

    def run(self, prepare: Callable[[_Track], _Track], follower: _Track | None) -> Iterator[Step]:
        """`prepare` turns a track into one covering the starting rows; the follower is prepared the same way."""
        import torch

        self.prepare = prepare
        self.follower = follower
        sampling = self.sampling
        view = self.view
        with torch.inference_mode():
            driver = prepare(self.driver)
        self._own(driver)
        generator = None
        if not sampling.greedy:
            generator = torch.Generator(device=view.device).manual_seed(sampling.seed)
        seqs = [list(row) for row in driver.rows]
        new: list[list[int]] = [[] for _ in seqs]
        done = [False] * len(seqs)
        eos = view.eos_ids
        pad = _pad_id(view)
        context = view.context_length
        # Enough trailing tokens to spell any stop string, even at one byte per token plus merges.
        stop_window = 4 * max((len(s) for s in sampling.stop), default=0) + 4
        for index in range(sampling.max_new_tokens):
            with torch.inference_mode():
                steps = self._step(driver.logits, seqs, done, self.start + index, generator)
            for step in steps:
                row = step.row
                new[row].append(step.id)
                seqs[row].append(step.id)
                end = None
                if step.id in eos and not sampling.ignore_eos:
                    end = "eos"
                elif sampling.stop and _hits_stop(view, new[row][-stop_window:], sampling.stop):
                    end = "stop"
                elif index + 1 == sampling.max_new_tokens:
                    end = "length"
                elif len(seqs[row]) >= context:
                    end = "context"
                if end is not None:
                    done[row] = True
                    step = replace(step, end=end)
                    unreached = [pos for pos in self.forced if pos > step.pos]
                    if unreached:
                        # A silently dropped forced token would read as "forcing changed nothing".
                        raise RmxError(f"forced position {min(unreached)} is past the end: the model stopped at "
                                       f"{step.pos}; use --ignore-eos or force an earlier position")
                yield step
            if all(done):
                return
            # Finished rows keep the batch rectangular with padding; nothing they compute is emitted.
            emitted = {step.row for step in steps}
            for row in range(len(seqs)):
                if row not in emitted:
                    seqs[row].append(pad)
            feed = [[seq[-1]] for seq in seqs]
            self._check_leases()
            with torch.inference_mode():
                driver.extend(feed)

    def _teacher(self, seqs: list[list[int]]):
        if self.follower is None:
            raise RmxError("this intervention needs a teacher model: pass --teacher")
        if self.following is None:
            self.following = self.prepare(self.follower)
            self._own(self.following)
        self._check_leases()
        return self.following.reach(seqs)

    def _own(self, track: _Track) -> None:
        """Remember the lease of a session track this loop decodes on; private copies need none."""
        if track.lease:
            self.leases.append((track, track.lease))

    def _check_leases(self) -> None:
        if any(track.lease != lease for track, lease in self.leases):
            raise RmxError("this decode was superseded: a newer decode on the same session took over its cache")

    def _step(self, logits, seqs: list[list[int]], done: list[bool], pos: int, generator) -> list[Step]:
        import torch

        view = self.view
        lse, entropy = lse_entropy(logits)
        top_values, top_ids = torch.topk(logits, self.top, dim=-1)
        top_logprobs = (top_values - lse[:, None]).tolist()
        top_ids = top_ids.tolist()
        # argmax, not topk's first, so that ties break to the lowest id exactly as in HF generate.
        argmax = logits.argmax(-1).tolist()
        picks = argmax if self.sampling.greedy else _sample(logits, self.sampling, generator).tolist()
        entropies = entropy.tolist()
        teacher: list = []

        def teacher_row(row: int):
            def fetch():
                if not teacher:
                    teacher.append(self._teacher(seqs))
                return teacher[0][row]

            return fetch

        chosen: list[tuple[int, int, str]] = []
        for row in range(len(seqs)):
            if done[row]:
                continue
            token, source = picks[row], self.own
            if pos in self.forced:
                token, source = self.forced[pos], "forced"
            elif self.rule is not None:
                decision = self.rule(StepContext(
                    row=row, pos=pos, logits=logits[row], entropy=entropies[row], argmax=argmax[row],
                    pick=token, teacher_logits=teacher_row(row),
                ))
                # An override that names the model's own pick changes nothing, so it is not a touch.
                if decision is not None and int(decision[0]) != token:
                    token, source = int(decision[0]), decision[1]
            chosen.append((row, token, source))
        rows = torch.tensor([row for row, _, _ in chosen], device=logits.device)
        tokens = torch.tensor([token for _, token, _ in chosen], device=logits.device)
        logprobs = (logits[rows, tokens] - lse[rows]).tolist()
        return [
            Step(pos=pos, id=token, text=view.token_text(token), logprob=logprob, entropy=entropies[row],
                 source=source, row=row,
                 top=tuple(TopToken(id=i, text=view.token_text(i), logprob=lp)
                           for i, lp in zip(top_ids[row], top_logprobs[row])))
            for (row, token, source), logprob in zip(chosen, logprobs)
        ]


def _hits_stop(view: LoadedModel, tail: list[int], stops: tuple[str, ...]) -> bool:
    text = view.tokenizer.decode(tail, skip_special_tokens=False, clean_up_tokenization_spaces=False)
    return any(s in text for s in stops)


def _sample(logits, sampling: SamplingSpec, generator):
    """Draw one token per row after temperature, top-k and top-p, in HF generate's order."""
    import torch

    scores = logits / sampling.temperature
    if sampling.top_k:
        kth = torch.topk(scores, min(sampling.top_k, scores.shape[-1]), dim=-1).values[:, -1:]
        scores = scores.masked_fill(scores < kth, float("-inf"))
    if sampling.top_p < 1.0:
        ordered, order = torch.sort(scores, descending=False, dim=-1)
        drop = ordered.softmax(-1).cumsum(-1) <= 1.0 - sampling.top_p
        drop[:, -1] = False  # the most likely token always stays
        scores = scores.masked_fill(drop.scatter(1, order, drop), float("-inf"))
    return torch.multinomial(scores.softmax(-1), 1, generator=generator)[:, 0]
