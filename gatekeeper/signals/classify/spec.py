"""The classify specification: what the LLM classifier labels, how the sample is drawn, how
the embedding classifier is trained, and how much it must agree with the LLM to be used.

A YAML file (the project's safe loader, errors at ``file:line: field``)::

    classifier:                 # the `classifier` evaluator's parameters (docs/judges.md)
      judge: openai:gpt-4o-mini
      target: conversation      # conversation | input | output
      votes: 1
      tasks:
        topic: {labels: [billing, shipping, returns, other]}
    sample: 2000                # rows labelled by the LLM (stratified)
    stratify: [model_version]
    holdout: 0.25               # share of the labelled sample kept for the agreement report
    seed: 0
    min_agreement: {kappa: 0.6, accuracy: 0.8}
    batch_size: 256             # rows embedded per forward pass
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr

from gatekeeper.types import UsageError


class Agreement(BaseModel):
    """The floor the embedding classifier must reach on the held-out sample, per task."""

    model_config = ConfigDict(extra="forbid")

    kappa: float | None = Field(0.6, ge=-1, le=1)
    """Cohen's kappa against the LLM labels."""
    accuracy: float | None = Field(None, ge=0, le=1)
    macro_f1: float | None = Field(None, ge=0, le=1)


class ClassifySpec(BaseModel):
    """See the module docstring."""

    model_config = ConfigDict(extra="forbid")

    classifier: dict[str, Any]
    sample: int = Field(2000, ge=20)
    stratify: list[str] = Field(default_factory=lambda: ["model_version"])
    holdout: float = Field(0.25, gt=0, lt=1)
    seed: int = 0
    min_agreement: Agreement = Field(default_factory=Agreement)
    batch_size: int = Field(256, ge=1, le=8192)
    C: float = Field(1.0, gt=0)
    """Inverse regularization strength of the logistic regression."""

    _taxonomy: dict[str, list[str]] = PrivateAttr(default_factory=dict)

    def tasks(self) -> dict[str, list[str]]:
        """Task name → its label set, as the classifier evaluator declares them."""
        return dict(self._taxonomy)

    @property
    def target(self) -> str:
        return str(self.classifier.get("target", "output"))


def load_spec(path: Path, registries: Any) -> ClassifySpec:
    """Read and validate a classify specification (UsageError at file:line: field). The
    ``classifier`` section is checked by the ``classifier`` evaluator's own parameter model,
    found in the registries like any evaluator."""
    from pydantic import ValidationError

    from gatekeeper.host import yamlfile

    if not path.is_file():
        raise UsageError("classify specification not found", file=str(path), field="--spec")
    data, locator = yamlfile.load(path)
    if not isinstance(data, dict):
        raise UsageError("the classify specification must be a mapping", file=str(path), line=1)
    spec = yamlfile.validate(ClassifySpec, data, path, locator)
    evaluator = registries["evaluators"].get("classifier", field="classifier")
    try:
        params = evaluator.Params.model_validate(spec.classifier)
    except ValidationError as exc:
        loc, msg = yamlfile.first_error(exc)
        where = ("classifier", *loc)
        raise UsageError(msg, file=str(path), line=locator.line(where) or locator.line(("classifier",)),
                         field=yamlfile.field_path(where)) from None
    spec._taxonomy = {name: list(task.labels) for name, task in params.task_specs("label").items()}
    return spec
