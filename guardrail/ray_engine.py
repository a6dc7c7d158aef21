"""``RayEngine``: ``guardrail eval`` over Ray Data, for prompt sets that outgrow one process or one machine.

The pending (prompt, mode) pairs become a Ray dataset; ``map_batches`` sends them to actors that each hold
their own ``Evaluation`` (a Guard and a judge, built once per actor by the ``make`` function the caller
gives: the same construction as ``--engine local``) and answer them with ``Evaluation.answer``, the one
implementation both engines share. Finished records stream back to the driver, which writes the run's files
as the local engine does (``results.jsonl`` line by line, the actors' audit records into ``audit.jsonl``), so
``resume``, ``report`` and ``export`` work unchanged: a run interrupted anywhere is resumed by running the
same command again.

Each actor audits to a private file under the run's audit key and hands its new records back with each
answer; the driver appends them to the run's audit file before the answer's result line.

Where generation happens: with ``--model URL`` (a vLLM or llama.cpp server behind an OpenAI-compatible URL)
the actors guard sentence by sentence against that server; with a local model each actor loads it and runs
token-level rewind in its own process. Install with ``pip install 'guardrail-rewind[ray]'``.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from guardrail.errors import GuardrailError
from guardrail.evaluation import AUDIT_FIELD, Evaluation
from guardrail.testset import EvalPrompt

__all__ = ["RayEngine"]

#: builds an actor's Evaluation: given the actor's private audit file and the run's audit key
MakeEvaluation = Callable[[Path, bytes | None], Evaluation]


def _ray() -> Any:
    try:
        import ray
    except ImportError:
        raise GuardrailError(
            "--engine ray needs Ray Data: pip install 'guardrail-rewind[ray]' (or use --engine local)"
        ) from None
    return ray


class _Answerer:
    """A Ray actor: one Evaluation, built once; answers batches of (prompt, mode) pairs."""

    def __init__(self, make: MakeEvaluation, key: bytes | None) -> None:
        self.audit_path = Path(tempfile.mkdtemp(prefix="guardrail-ray-")) / "audit.jsonl"
        self.evaluation = make(self.audit_path, key)
        self.offset = 0

    def _new_audit_lines(self) -> list[str]:
        if not self.audit_path.exists():
            return []
        with self.audit_path.open("rb") as handle:
            handle.seek(self.offset)
            data = handle.read()
        complete = data[: data.rfind(b"\n") + 1]
        self.offset += len(complete)
        return complete.decode("utf-8", "surrogatepass").splitlines()

    def __call__(self, batch: dict[str, Any]) -> dict[str, list[str]]:
        records = []
        for encoded in batch["pair"]:
            pair = json.loads(str(encoded))
            record = self.evaluation.answer(EvalPrompt(**pair["prompt"]), pair["mode"])
            record[AUDIT_FIELD] = self._new_audit_lines()
            records.append(json.dumps(record, ensure_ascii=False))
        return {"record": records}


class RayEngine:
    """Answers pending pairs on Ray actors (an ``Engine`` for ``Evaluation.run``).

    Example::

        engine = RayEngine(make_evaluation, workers=2)            # a local Ray with two actors
        Evaluation(guard, judge, "eval-run").run(prompts, engine=engine)

    ``address``: an existing cluster (``ray://host:10001`` or ``auto``); None starts a local Ray with
    ``workers`` CPUs. ``key``: the run's audit key, so the actors' HMACs match the run's audit file.
    """

    def __init__(
        self,
        make: MakeEvaluation,
        *,
        workers: int = 2,
        address: str | None = None,
        batch_size: int = 4,
        key: bytes | None = None,
    ) -> None:
        if workers < 1:
            raise GuardrailError("--workers must be at least 1")
        self.make = make
        self.workers = workers
        self.address = address
        self.batch_size = batch_size
        self.key = key

    def _init(self, ray: Any) -> None:
        if ray.is_initialized():
            return
        options: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False}
        if self.address:
            ray.init(address=self.address, **options)
        else:
            ray.init(num_cpus=self.workers, **options)
        ray.data.DataContext.get_current().enable_progress_bars = False

    def __call__(self, pending: Sequence[tuple[EvalPrompt, str]]) -> Iterator[dict[str, Any]]:
        if not pending:
            return
        ray = _ray()
        self._init(ray)
        pairs = [{"pair": json.dumps({"prompt": asdict(item), "mode": mode})} for item, mode in pending]
        dataset = ray.data.from_items(pairs, override_num_blocks=max(1, len(pairs) // self.batch_size))
        answered = dataset.map_batches(
            _Answerer,
            fn_constructor_args=(self.make, self.key),
            batch_size=self.batch_size,
            batch_format="numpy",
            concurrency=self.workers,
            num_cpus=1,
        )
        try:
            for row in answered.iter_rows():
                yield json.loads(str(row["record"]))
        except ray.exceptions.RayError as err:  # an actor failed (its Guard could not be built, a model crashed)
            first = str(err).strip().splitlines()
            raise GuardrailError(
                f"a Ray worker failed: {first[-1] if first else type(err).__name__}; the answers so far are kept, "
                "fix the cause and run the same command again to resume"
            ) from None
