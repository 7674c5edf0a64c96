"""sftc's own JAX model as an lm-evaluation-harness language model: `SftcLM`.

lm_eval asks a model three kinds of request; `SftcLM` answers each as lm_eval's Hugging Face
backend (`lm_eval.models.huggingface.HFLM`) does, so the same weights give the same numbers
(`tests/runtime/evaluate/test_benchmarks.py` holds it to HFLM's per request):

- ``loglikelihood(context, continuation)``: the sum of the continuation tokens' log-softmax
  and whether each is the argmax. Tokens are lm_eval's (`TemplateLM._encode_pair`: the whole
  text encoded, the context's tokens cut off; an empty context becomes `prefix_token_id`), the
  model reads ``(context + continuation)[-(max_length + 1):][:-1]``.
- ``loglikelihood_rolling(text)``: the text's tokens in HFLM's disjoint windows of
  ``max_length`` (`lm_eval.utils.get_rolling_token_windows`, the prefix token first,
  ``context_len=1``), each window's log-likelihood summed.
- ``generate_until(context, gen_kwargs)``: greedy, or sampled (`runtime.models.decode.Sampling`,
  a fixed seed) when ``do_sample`` / ``temperature > 0`` say so, through sftc's one decoder
  (`runtime.evaluate.answers.answer_ids`). The context is encoded as HFLM encodes a batch
  (no BOS added to a text that starts with the BOS text) and left-truncated to ``max_length -
  max_gen_toks``; ``max_gen_toks`` (default 256) new tokens at most, stopping at the tokenizer's
  EOS and the model config's EOS ids (what transformers' ``generate`` stops at). The new tokens are
  decoded with special tokens skipped and cut at the first occurrence of each ``until`` string
  (the EOS text added to them), as HFLM does. A generation setting the decoder does not have
  (``num_beams``, ``repetition_penalty``, ...) is refused, not ignored.

No chat template is applied: a request's text is the task's prompt as it is (lm_eval's default,
``apply_chat_template=False``), for the base model and the tuned one alike.

Scoring runs in fixed-size batches (``batch_size`` rows, a short last batch filled with copies),
right-padded to a length bucket (a multiple of 16 up to 128, of 32 up to 512, of 128 above), so
one jitted function compiles once per bucket (a compile costs about one batch of a 135M model on a
CPU; coarser buckets would pad short multiple-choice prompts by half again). Padding is segment 0
(`Transformer.__call__`'s ``segment_ids``). The log-probability of each target and whether it is the argmax are computed
inside that function, one row's ``[L, V]`` logits at a time: the logits never reach the host.
Requests are scored longest first (HFLM's order, which changes only the speed) and answered in
request order; each answer goes to lm_eval's ``cache_hook`` as HFLM's does.

Progress: `RequestProgress` shows one line per request kind (count, rate, ETA) on the console
`runtime.evaluate.benchmarks` passes; lm_eval's own tqdm bars and prints go to the log
(`library_output_to_log`).
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import sys
import time
from collections.abc import Iterator, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from lm_eval import utils as lm_utils
from lm_eval.api.model import TemplateLM
from lm_eval.models.utils import handle_stop_sequences, has_bos_prefix, normalize_gen_kwargs, postprocess_generated_text

__all__ = ["DEFAULT_MAX_GEN_TOKS", "RequestProgress", "SftcLM", "library_output_to_log", "length_bucket"]

DEFAULT_MAX_GEN_TOKS = 256  # HFLM.max_gen_toks: a task that names no max_gen_toks generates this many at most
HEAD_TOKENS = 1024  # scoring projects this many positions to the vocabulary at a time (~200 MB at 49k)
SAMPLING_SETTINGS = frozenset({"do_sample", "temperature", "top_p", "top_k"})  # what the decoder takes
SAMPLING_SEED = 1234  # a sampled task's draws: the same on every run (lm_eval's own default seed)
log = logging.getLogger(__name__)


def length_bucket(n: int) -> int:
    """The padded length of a batch whose longest row is ``n`` tokens: few shapes, little padding."""
    step = 16 if n <= 128 else 32 if n <= 512 else 128
    return max(step, -(-n // step) * step)


@functools.partial(jax.jit, static_argnums=0)
def _score_jit(graphdef, state, ids, segments, targets, scored):
    """Per row: the sum over ``scored`` positions of log_softmax(logits)[target], and whether every
    scored target is the argmax. ``ids``/``segments``/``targets``/``scored``: ``[B, L]``."""
    model = nnx.merge(graphdef, state)
    b, length = ids.shape
    hidden = model.hidden(ids, segment_ids=segments).reshape(b, length, -1)
    weight = model.head_weight()

    def one_row(row):
        x_ld, target_l, scored_l = row
        logp = jax.nn.log_softmax(model.logits_of(x_ld, weight), axis=-1)  # [L, V] float32
        target_logp = jnp.take_along_axis(logp, target_l[:, None], axis=-1)[:, 0]
        greedy = jnp.argmax(logp, axis=-1) == target_l
        return jnp.sum(jnp.where(scored_l, target_logp, 0.0)), jnp.all(greedy | ~scored_l)

    rows = max(1, min(b, HEAD_TOKENS // length))  # rows whose logits exist at once: ~HEAD_TOKENS x V floats
    return jax.lax.map(one_row, (hidden, targets, scored), batch_size=rows)


class SftcLM(TemplateLM):
    """An sftc model (`runtime.models.transformer.Transformer`, with LoRA adapters or a quantized
    base alike: it is only split and merged) and its Hugging Face tokenizer, as an lm_eval model.

    ``max_length`` (default: the model config's ``max_position_embeddings``, as HFLM resolves it)
    is the longest input; ``batch_size`` the rows of one scored or generated batch; ``console``
    (a rich Console, or None) shows one progress line per request kind.
    """

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        *,
        batch_size: int = 16,
        max_length: int | None = None,
        console: Any = None,
        seed: int = SAMPLING_SEED,
    ) -> None:
        super().__init__()
        self._model = model
        self._graphdef, self._state = nnx.split(model)
        self.tokenizer = tokenizer
        self._batch_size = max(1, int(batch_size))
        self._max_length = int(max_length) if max_length else int(model.config.max_position_embeddings)
        self._device = str(jax.devices()[0].platform)
        self.progress = RequestProgress(console)
        self.seed = int(seed)

    # ------------------------------------------------------------------ what lm_eval reads
    @property
    def eot_token_id(self) -> int:
        return self.tokenizer.eos_token_id

    @property
    def prefix_token_id(self) -> int:
        bos = self.tokenizer.bos_token_id
        return bos if bos is not None else self.tokenizer.eos_token_id

    @property
    def max_length(self) -> int:
        return self._max_length

    @property
    def max_gen_toks(self) -> int:
        return DEFAULT_MAX_GEN_TOKS

    @property
    def batch_size(self) -> int:
        return self._batch_size

    @property
    def tokenizer_name(self) -> str:
        return str(getattr(self.tokenizer, "name_or_path", "") or type(self.tokenizer).__name__).replace("/", "__")

    def tok_encode(
        self, string: str, add_special_tokens: bool | None = None, left_truncate_len: int | None = None, **kwargs
    ) -> list[int]:
        """HFLM's: the tokenizer's own special tokens unless told (none for a text that already
        starts with the prefix token's text), left-truncated to ``left_truncate_len``."""
        special = {} if add_special_tokens is None else {"add_special_tokens": add_special_tokens}
        if add_special_tokens is None and has_bos_prefix(string, self.tokenizer.decode(self.prefix_token_id)):
            special = {"add_special_tokens": False}
        encoding = self.tokenizer.encode(string, **special)
        return encoding[-left_truncate_len:] if left_truncate_len else encoding

    def tok_decode(self, tokens: Sequence[int] | int, skip_special_tokens: bool = True) -> str:
        return self.tokenizer.decode(tokens, skip_special_tokens=skip_special_tokens)

    # ------------------------------------------------------------------ loglikelihood
    def loglikelihood(self, requests: list[Any], disable_tqdm: bool = False) -> list[tuple[float, bool]]:
        return super().loglikelihood(requests, disable_tqdm=True)

    def _loglikelihood_tokens(
        self,
        requests: list[tuple[tuple[str, str] | None, list[int], list[int]]],
        disable_tqdm: bool = False,
        kind: str = "loglikelihood",
        **kwargs: Any,
    ) -> list[tuple[float, bool]]:
        rows = []
        for _, context, continuation in requests:
            if not context or not continuation:
                raise ValueError("a loglikelihood request needs context and continuation tokens")
            if len(continuation) > self.max_length:
                raise ValueError(
                    f"a continuation of {len(continuation)} tokens does not fit the model's {self.max_length}"
                )
            tokens = (list(context) + list(continuation))[-(self.max_length + 1) :]
            rows.append((tokens[:-1], tokens[1:], len(continuation)))
        order = sorted(range(len(rows)), key=lambda i: (-(len(requests[i][1]) + len(requests[i][2])), i))
        results: list[tuple[float, bool]] = [(0.0, False)] * len(rows)
        size = self.batch_size
        with self.progress.kind(kind, len(rows)) as advance:
            for start in range(0, len(order), size):
                chosen = order[start : start + size]
                batch = [rows[i] for i in chosen]
                batch += [batch[-1]] * (size - len(batch))
                width = min(length_bucket(max(len(r[0]) for r in batch)), max(self.max_length, 1))
                ids = np.zeros((size, width), np.int32)
                targets = np.zeros((size, width), np.int32)
                segments = np.zeros((size, width), np.int32)
                scored = np.zeros((size, width), bool)
                for r, (inp, tgt, n_cont) in enumerate(batch):
                    ids[r, : len(inp)], targets[r, : len(tgt)], segments[r, : len(inp)] = inp, tgt, 1
                    scored[r, len(inp) - n_cont : len(inp)] = True
                sums, greedy = _score_jit(
                    self._graphdef,
                    self._state,
                    jnp.asarray(ids),
                    jnp.asarray(segments),
                    jnp.asarray(targets),
                    jnp.asarray(scored),
                )
                sums, greedy = np.asarray(sums), np.asarray(greedy)
                for r, i in enumerate(chosen):
                    answer = (float(sums[r]), bool(greedy[r]))
                    results[i] = answer
                    if requests[i][0] is not None:
                        self.cache_hook.add_partial("loglikelihood", requests[i][0], answer)
                advance(len(chosen))
        return results

    def loglikelihood_rolling(self, requests: list[Any], disable_tqdm: bool = False) -> list[float]:
        windows: list[tuple[None, list[int], list[int]]] = []
        counts = []
        for request in requests:
            (string,) = request.args
            rolling = [
                lm_utils.make_disjoint_window(pair)
                for pair in lm_utils.get_rolling_token_windows(
                    token_list=self.tok_encode(string),
                    prefix_token=self.prefix_token_id,
                    max_seq_len=self.max_length,
                    context_len=1,
                )
            ]
            windows += [(None, context, continuation) for context, continuation in rolling]
            counts.append(len(rolling))
        scores = self._loglikelihood_tokens(windows, kind="loglikelihood_rolling")
        totals, at = [], 0
        for request, count in zip(requests, counts):
            total = sum(score for score, _ in scores[at : at + count])
            at += count
            totals.append(total)
            self.cache_hook.add_partial("loglikelihood_rolling", (request.args[0],), total)
        return totals

    # ------------------------------------------------------------------ generation
    def _context_tokens(self, context: str, max_context: int) -> list[int]:
        """A generation context as HFLM's `tok_batch_encode` encodes it: no special tokens for a text
        that starts with the BOS text, else the tokenizer's default; the last ``max_context`` tokens."""
        special = {"add_special_tokens": False} if has_bos_prefix(context, self.tokenizer.bos_token) else {}
        tokens = list(self.tokenizer.encode(context, **special))[-max_context:]
        return tokens or [self.prefix_token_id]  # an empty prompt: the prefix token, as scoring does

    def _stop_ids(self) -> list[int]:
        stops = {self.eot_token_id}
        config_eos = getattr(getattr(self._model, "config", None), "eos_token_id", None)
        stops |= set(config_eos) if isinstance(config_eos, (tuple, list)) else {config_eos}
        return sorted(int(s) for s in stops if s is not None)

    def generate_until(self, requests: list[Any], disable_tqdm: bool = False) -> list[str]:
        from runtime.evaluate.answers import answer_ids
        from runtime.models.decode import Sampling

        eos_text = self.tok_decode(self.eot_token_id, skip_special_tokens=False)
        groups: dict[str, list[int]] = {}
        for i, request in enumerate(requests):
            groups.setdefault(repr(sorted(request.args[1].items(), key=lambda kv: kv[0])), []).append(i)
        results: list[str] = [""] * len(requests)
        with self.progress.kind("generate_until", len(requests)) as advance:
            for group in groups.values():
                gen_kwargs = requests[group[0]].args[1]
                kwargs = dict(normalize_gen_kwargs(gen_kwargs, self.max_gen_toks))
                until = handle_stop_sequences(kwargs.pop("until", None), eos=eos_text)
                max_gen_toks = int(kwargs.pop("max_gen_toks"))
                max_context = self.max_length - max_gen_toks
                if max_context <= 0:
                    raise ValueError(
                        f"max_gen_toks {max_gen_toks} leaves no room for a context in the model's "
                        f"{self.max_length} positions"
                    )
                unsupported = sorted(set(kwargs) - SAMPLING_SETTINGS)
                if unsupported:
                    raise ValueError(
                        f"the task's generation_kwargs {', '.join(unsupported)} are not supported by sftc's decoder "
                        f"(it takes until, max_gen_toks, {', '.join(sorted(SAMPLING_SETTINGS))})"
                    )
                temperature = float(kwargs.get("temperature") or 0.0)
                if kwargs.get("do_sample") and temperature == 0.0:
                    temperature = 1.0  # transformers' default temperature when sampling
                sampling = Sampling(
                    temperature=temperature if kwargs.get("do_sample") else 0.0,
                    top_p=float(kwargs.get("top_p") or 1.0),
                    top_k=int(kwargs.get("top_k") or 0),
                )
                prompts = {i: self._context_tokens(requests[i].args[0], max_context) for i in group}
                order = sorted(group, key=lambda i: (-len(prompts[i]), requests[i].args[0]))
                for b, start in enumerate(range(0, len(order), self.batch_size)):
                    chosen = order[start : start + self.batch_size]
                    answers = answer_ids(
                        self._model,
                        self.tokenizer,
                        [prompts[i] for i in chosen],
                        max_gen_toks,
                        sampling,
                        self.seed + b,
                        batch_size=self.batch_size,
                        eos_ids=self._stop_ids(),
                    )
                    for i, (tokens, _) in zip(chosen, answers):
                        text = postprocess_generated_text(self.tok_decode(tokens), until, None)
                        results[i] = text
                        self.cache_hook.add_partial("generate_until", requests[i].args, text)
                    advance(len(chosen))
        return results

    def get_model_info(self) -> dict:
        return {"model": "sftc", "max_length": self.max_length}


# ---------------------------------------------------------------------- progress and quiet
_TERMINAL_STREAMS: list[tuple[Any, Any]] = []  # (stdout, stderr) outside `library_output_to_log`


@contextlib.contextmanager
def _terminal_streams() -> Iterator[None]:
    """sys.stdout/sys.stderr as they were before `library_output_to_log` (a no-op outside it)."""
    if not _TERMINAL_STREAMS:
        yield
        return
    saved = sys.stdout, sys.stderr
    sys.stdout, sys.stderr = _TERMINAL_STREAMS[-1]
    try:
        yield
    finally:
        sys.stdout, sys.stderr = saved


class RequestProgress:
    """One progress line per request kind (`loglikelihood`, `generate_until`, ...): requests done of
    all, rate and ETA. A live bar on a terminal, a plain line every ``every`` seconds and at the end
    otherwise; nothing without a console."""

    def __init__(self, console: Any, every: float = 10.0) -> None:
        self.console, self.every = console, every

    @contextlib.contextmanager
    def kind(self, name: str, total: int) -> Iterator[Any]:
        if self.console is None or total == 0:
            yield lambda n: None
            return
        if self.console.is_terminal:
            with self._bar(name, total) as advance:
                yield advance
            return
        started = last = time.perf_counter()
        done = 0

        def advance(n: int) -> None:
            nonlocal done, last
            done += n
            now = time.perf_counter()
            if done < total and now - last < self.every:
                return
            last = now
            rate = done / max(now - started, 1e-9)
            tail = f"ETA {(total - done) / rate:.0f}s" if done < total else f"in {now - started:.1f}s"
            with _terminal_streams():
                self.console.print(f"  {name} {done}/{total}  {rate:,.1f}/s  {tail}", highlight=False)

        yield advance

    @contextlib.contextmanager
    def _bar(self, name: str, total: int) -> Iterator[Any]:
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            ProgressColumn,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )
        from rich.text import Text

        class Rate(ProgressColumn):
            def render(self, task: Any) -> Text:
                return Text(f"{task.speed:,.1f}/s" if task.speed else "")

        progress = Progress(
            TextColumn("  {task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            Rate(),
            TimeElapsedColumn(),
            TextColumn("ETA"),
            TimeRemainingColumn(),
            console=self.console,
            auto_refresh=False,
            redirect_stdout=False,
            redirect_stderr=False,
        )
        with _terminal_streams():
            progress.start()
            task = progress.add_task(name, total=total)

        def advance(n: int) -> None:
            with _terminal_streams():
                progress.advance(task, n)
                progress.refresh()

        try:
            yield advance
        finally:
            with _terminal_streams():
                progress.stop()


class _ToLog:
    """A text stream whose lines become records of ``logger`` (lm_eval's prints and tqdm bars)."""

    def __init__(self, logger: logging.Logger) -> None:
        self.logger, self.pending = logger, ""

    def write(self, text: str) -> int:
        *lines, self.pending = (self.pending + text.replace("\r", "\n")).split("\n")
        for line in lines:
            if line.strip():
                self.logger.info(line.rstrip())
        return len(text)

    def flush(self) -> None:
        pass

    def isatty(self) -> bool:
        return False


@contextlib.contextmanager
def library_output_to_log() -> Iterator[None]:
    """While lm_eval runs: its prints and tqdm bars (sys.stdout/sys.stderr) become log records of
    the logger ``lm_eval.output``, its loggers keep no terminal handler (records reach the root
    logger's file, `runtime.platform.library_logs`, or nothing), datasets shows no progress bars,
    and a bootstrapped stderr is computed in this process (``DISABLE_MULTIPROC``: no fork of a
    process that runs JAX). `RequestProgress` still writes to the terminal."""
    import datasets

    lm_logger = logging.getLogger("lm_eval")
    for handler in list(lm_logger.handlers):
        if type(handler) is logging.StreamHandler:  # lm_eval's CLI setup_logging: the terminal
            lm_logger.removeHandler(handler)
    lm_logger.propagate = True
    quiet = logging.NullHandler()  # a handler, so Python's last-resort stderr printer never fires
    lm_logger.addHandler(quiet)
    bars = not datasets.utils.are_progress_bars_disabled()
    datasets.disable_progress_bars()
    multiproc = os.environ.get("DISABLE_MULTIPROC")
    os.environ["DISABLE_MULTIPROC"] = "1"
    _TERMINAL_STREAMS.append((sys.stdout, sys.stderr))
    sink = _ToLog(logging.getLogger("lm_eval.output"))
    sys.stdout = sys.stderr = sink  # type: ignore[assignment]
    try:
        yield
    finally:
        sys.stdout, sys.stderr = _TERMINAL_STREAMS.pop()
        if multiproc is None:
            os.environ.pop("DISABLE_MULTIPROC", None)
        else:
            os.environ["DISABLE_MULTIPROC"] = multiproc
        if bars:
            datasets.enable_progress_bars()
        lm_logger.removeHandler(quiet)
