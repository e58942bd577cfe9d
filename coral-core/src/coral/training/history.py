"""CheckpointHistory: one experiment's checkpoint records, persisted as the repository document
``checkpoints/<experiment>`` together with the save policy's counters, so both survive restarts."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from ..errors import CorruptObjectError
from ..version_control.repository import Repository
from .policy import SavePolicy
from .state import TrainingState


class CheckpointHistory:
    """Records oldest first; a pruned checkpoint stays, marked ``"pruned": True`` (its weights are gone)."""

    def __init__(self, repository: Repository, experiment_name: str, model_name: str | None = None) -> None:
        self.repository = repository
        self.experiment_name = experiment_name
        self.model_name = model_name
        self.records: list[dict[str, Any]] = []

    @property
    def doc_name(self) -> str:
        return f"checkpoints/{self.experiment_name}"

    def load(self, policy: SavePolicy) -> None:
        """Read the records and hand the policy its persisted counters; a malformed document is named."""
        doc = self.repository.read_document(self.doc_name) or {}
        try:  # the document may come from someone else's repository: check its shape, name what is wrong
            if not isinstance(doc, dict):
                raise TypeError(f"expected an object, found {type(doc).__name__}")
            history = doc.get("history", [])
            if not isinstance(history, list) or not all(
                isinstance(h, dict) and isinstance(h.get("commit_hash"), str) for h in history
            ):
                raise TypeError("history is not a list of checkpoint records")
            self.records = list(history)
            policy.load_doc(doc, self.records[-1] if self.records else None)
        except (TypeError, ValueError, OverflowError) as exc:
            raise CorruptObjectError(f"ref meta/{self.doc_name}", f"checkpoint history is malformed: {exc}") from None

    def persist(self, policy: SavePolicy) -> None:
        """Write records and policy counters in one document update."""
        doc = {"experiment_name": self.experiment_name, "model_name": self.model_name, "history": self.records}
        doc.update(policy.to_doc())
        self.repository.update_document(self.doc_name, lambda _old: doc)

    def append(self, commit_hash: str, state: TrainingState, value: float | None, is_best: bool) -> None:
        self.records.append(
            {
                "commit_hash": commit_hash,
                "epoch": state.epoch,
                "global_step": state.global_step,
                "timestamp": datetime.now(UTC).isoformat(),
                "metrics": dict(state.metrics) | ({"loss": state.loss} if state.loss is not None else {}),
                "metric_value": value,
                "is_best": is_best,
                "pruned": False,
            }
        )

    def live(self) -> list[dict[str, Any]]:
        """The records whose weights are still stored (not pruned), oldest first."""
        return [h for h in self.records if not h.get("pruned")]

    def find(self, commit_hash: str) -> dict[str, Any] | None:
        for h in self.records:
            if h["commit_hash"] == commit_hash:
                return h
        return None
