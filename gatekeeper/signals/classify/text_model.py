"""The light classifier that stands in for the LLM: sentence embeddings + logistic regression.

One calibrated logistic regression per task (scikit-learn ``CalibratedClassifierCV`` over
``LogisticRegression``, sigmoid calibration), trained on the LLM-labelled sample less a
held-out part; the agreement report compares its labels with the LLM's on that held-out
part: accuracy, macro-F1, Cohen's kappa, per-label precision/recall/F1 and the confusion
matrix. The model that is reported on is the model that labels the table (it is not
refitted afterwards), and its version is a hash of what determines its outputs.
"""

from __future__ import annotations

import hashlib
import json
import pickle
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from gatekeeper.types import UsageError

if TYPE_CHECKING:
    import numpy as np
    import pyarrow as pa

PASSTHROUGH = ("id", "conversation_id", "model", "model_version", "time")
"""Columns copied from the signals into the labelled table, when the table has them."""


def row_text(messages: Any, answer: Any, target: str) -> str:
    """The text a row is classified by: the last user message (``input``), the answer
    (``output``), or the whole conversation (``conversation``), like the LLM classifier."""
    if isinstance(messages, str):
        try:
            messages = json.loads(messages) if messages.strip() else []
        except json.JSONDecodeError:
            messages = [{"role": "user", "content": messages}]
    turns = [(str(m["role"]), str(m["content"])) for m in (messages if messages is not None else [])]
    answer = "" if answer is None else str(answer)
    if target == "input":
        return next((c for r, c in reversed(turns) if r == "user"), "")
    if target == "output":
        return answer
    return "\n".join([*(f"{r}: {c}" for r, c in turns), f"assistant: {answer}"])


def text_columns(target: str) -> list[str]:
    return {"input": ["messages"], "output": ["answer"]}.get(target, ["messages", "answer"])


@dataclass
class TaskModel:
    """One task's fitted estimator (or the one label, when the sample had only one)."""

    labels: list[str]
    estimator: Any = None
    constant: str | None = None

    def predict(self, vectors: np.ndarray) -> tuple[list[str], np.ndarray]:
        import numpy as np

        if self.constant is not None:
            return [self.constant] * len(vectors), np.ones(len(vectors))
        probs = self.estimator.predict_proba(vectors)
        best = probs.argmax(axis=1)
        classes = [str(c) for c in self.estimator.classes_]
        return [classes[i] for i in best], probs.max(axis=1)


@dataclass
class TextClassifier:
    tasks: dict[str, TaskModel]
    target: str
    embedding: dict[str, str]
    version: str = ""
    trained_on: int = 0

    def predict(self, vectors: np.ndarray) -> dict[str, tuple[list[str], np.ndarray]]:
        return {name: model.predict(vectors) for name, model in self.tasks.items()}


def _estimator(y: Sequence[str], *, seed: int, C: float) -> tuple[Any, str]:
    from collections import Counter

    from sklearn.calibration import CalibratedClassifierCV
    from sklearn.linear_model import LogisticRegression

    smallest = min(Counter(y).values())
    base = LogisticRegression(C=C, max_iter=2000, random_state=seed)
    if smallest >= 2:
        return CalibratedClassifierCV(base, method="sigmoid", cv=min(3, smallest)), "sigmoid-calibrated"
    return base, "uncalibrated (a label has one training example)"


def _version(model: TextClassifier) -> str:
    digest = hashlib.sha256()
    digest.update(json.dumps({"target": model.target, "embedding": model.embedding}, sort_keys=True).encode())
    for name, task in sorted(model.tasks.items()):
        digest.update(name.encode())
        digest.update(pickle.dumps((task.labels, task.constant, _coefficients(task.estimator)), protocol=4))
    return f"clf-{digest.hexdigest()[:12]}"


def _coefficients(estimator: Any) -> Any:
    if estimator is None:
        return None
    fitted = getattr(estimator, "calibrated_classifiers_", None)
    if fitted:
        return [(c.estimator.coef_.round(8).tolist(), [(k.a_, k.b_) for k in c.calibrators]) for c in fitted]
    return estimator.coef_.round(8).tolist()


def train(
    vectors: np.ndarray, labels: Mapping[str, Sequence[str | None]], taxonomy: Mapping[str, Sequence[str]], *,
    target: str, holdout: float, seed: int, C: float, embedding: dict[str, str],
) -> tuple[TextClassifier, dict[str, Any]]:
    """Fit one model per task on the sample less ``holdout``; report agreement on the rest.

    ``labels[task][i]`` is the LLM's label of row ``i`` (``None``: the LLM gave none; the row
    is left out of that task). Returns the classifier and ``{task: agreement}``.
    """
    import numpy as np
    from sklearn.model_selection import train_test_split

    rows = np.arange(len(vectors))
    first = next(iter(labels.values()))
    strat = [str(v) for v in first]
    try:
        train_idx, test_idx = train_test_split(rows, test_size=holdout, random_state=seed, stratify=strat)
    except ValueError:  # a label too rare to stratify on
        train_idx, test_idx = train_test_split(rows, test_size=holdout, random_state=seed)
    tasks: dict[str, TaskModel] = {}
    report: dict[str, Any] = {}
    for name, values in labels.items():
        known = list(taxonomy[name])
        outside = sorted({str(v) for v in values if v is not None and v not in known})
        if outside:
            raise UsageError(f"label {outside[0]!r} of task {name!r} is not in the taxonomy ({', '.join(known)})",
                             field=f"classifier.tasks.{name}.labels")
        tr = [i for i in train_idx if values[i] is not None]
        te = [i for i in test_idx if values[i] is not None]
        if not tr or not te:
            raise UsageError(f"task {name!r}: too few LLM labels to train and check a classifier "
                             f"({len(tr)} to train, {len(te)} held out); raise 'sample'", field="sample")
        y_train = [str(values[i]) for i in tr]
        if len(set(y_train)) == 1:
            model = TaskModel(known, constant=y_train[0])
            method = "constant (the sample has one label)"
        else:
            estimator, method = _estimator(y_train, seed=seed, C=C)
            estimator.fit(vectors[tr], y_train)
            model = TaskModel(known, estimator=estimator)
        tasks[name] = model
        predicted, _ = model.predict(vectors[te])
        report[name] = agreement([str(values[i]) for i in te], predicted, known)
        report[name].update(trained_on=len(tr), method=method)
    classifier = TextClassifier(tasks, target, embedding, trained_on=len(train_idx))
    classifier.version = _version(classifier)
    return classifier, report


def agreement(truth: Sequence[str], predicted: Sequence[str], labels: Sequence[str]) -> dict[str, Any]:
    """Accuracy, macro-F1, Cohen's kappa, per-label scores and the confusion matrix."""
    from sklearn.metrics import (
        accuracy_score,
        cohen_kappa_score,
        confusion_matrix,
        f1_score,
        precision_recall_fscore_support,
    )

    present = [lab for lab in labels if lab in set(truth) | set(predicted)]
    precision, recall, f1, support = precision_recall_fscore_support(
        truth, predicted, labels=present, zero_division=0)
    kappa = cohen_kappa_score(truth, predicted, labels=present) if len(set(truth) | set(predicted)) > 1 else 1.0
    return {
        "n": len(truth),
        "accuracy": float(accuracy_score(truth, predicted)),
        "macro_f1": float(f1_score(truth, predicted, labels=present, average="macro", zero_division=0)),
        "kappa": float(kappa),
        "per_label": {lab: {"precision": float(p), "recall": float(r), "f1": float(f), "support": int(s)}
                      for lab, p, r, f, s in zip(present, precision, recall, f1, support, strict=True)},
        "confusion": {"labels": list(labels), "rows_llm_columns_classifier":
                      confusion_matrix(truth, predicted, labels=list(labels)).tolist()},
    }


def below_floor(report: Mapping[str, Any], floor: Mapping[str, float | None]) -> list[str]:
    """``task: measure 0.41 < 0.60`` for every measure under its floor."""
    out = []
    for task, scores in report.items():
        for measure in ("kappa", "accuracy", "macro_f1"):
            minimum = floor.get(measure)
            if minimum is not None and scores[measure] < minimum:
                out.append(f"{task}: {measure} {scores[measure]:.3f} < {minimum:.2f}")
    return out


# --------------------------------------------------------------------------- labelling


@dataclass
class Labeller:
    """Labels batches of rows with a trained :class:`TextClassifier`. Picklable: a Spark
    engine ships it to executors, which load the embedding model once per process."""

    classifier: TextClassifier
    passthrough: list[str]
    batch_size: int = 256
    tasks: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.tasks = list(self.classifier.tasks)
        clash = [t for t in self.tasks if t in self.passthrough or t.endswith("_confidence")
                 or t == "classifier_version"]
        if clash:
            raise UsageError(f"task name {clash[0]!r} is also a column of the labelled table; rename the task",
                             field=f"classifier.tasks.{clash[0]}")

    @property
    def input_columns(self) -> list[str]:
        return list(dict.fromkeys([*self.passthrough, *text_columns(self.classifier.target)]))

    def output_schema(self, source: pa.Schema | None = None) -> pa.Schema:
        import pyarrow as pa

        fields = []
        for name in self.passthrough:
            dtype = pa.timestamp("us", tz="UTC") if name == "time" else pa.string()
            fields.append(pa.field(name, dtype))
        for task in self.tasks:
            fields += [pa.field(task, pa.string()), pa.field(f"{task}_confidence", pa.float64())]
        fields.append(pa.field("classifier_version", pa.string()))
        return pa.schema(fields)

    def label_columns(self, columns: Mapping[str, Sequence[Any]]) -> pa.Table:
        """One batch: ``columns`` (name → values, the :attr:`input_columns`) → labelled rows."""
        import pyarrow as pa

        from gatekeeper.signals.classify.embedding import get_encoder

        n = len(next(iter(columns.values()))) if columns else 0
        target = self.classifier.target
        messages = columns.get("messages", [None] * n)
        answers = columns.get("answer", [None] * n)
        texts = [row_text(messages[i], answers[i], target) for i in range(n)]
        vectors = get_encoder().encode(texts, self.batch_size)
        out: dict[str, Any] = {}
        schema = self.output_schema()
        for name in self.passthrough:
            values = list(columns[name])
            out[name] = values if name == "time" else [None if v is None else str(v) for v in values]
        for task, (labels, confidence) in self.classifier.predict(vectors).items():
            out[task] = labels
            out[f"{task}_confidence"] = [float(c) for c in confidence]
        out["classifier_version"] = [self.classifier.version] * n
        return pa.Table.from_pydict(out, schema=schema)

    def label_pandas(self, frame: Any) -> Any:
        """:meth:`label_columns` for a pandas DataFrame (Spark's ``mapInPandas``)."""
        columns = {c: frame[c].tolist() for c in self.input_columns}
        if "time" in columns:
            columns["time"] = [None if v is None or v != v else v.to_pydatetime() for v in frame["time"]]
        return self.label_columns(columns).to_pandas()
