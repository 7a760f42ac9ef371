"""The PCCP policy: example policies, located errors for bad input, the scope check, docs."""

from __future__ import annotations

import copy
import hashlib
import re
import types
import typing
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import load_pem_private_key, load_pem_public_key
from pydantic import BaseModel

from gatekeeper.gate.policy import (
    Policy,
    ScopeResult,
    check_scope,
    check_sequestered,
    load_policy,
    required_approvals,
)
from gatekeeper.types import UsageError

REPO = Path(__file__).resolve().parents[1]
POLICIES = REPO / "policies"
SUPPORT = POLICIES / "support-assistant.yaml"
CLINICAL = POLICIES / "clinical-notes.yaml"
FIXTURE_KEYS = REPO / "tests" / "fixtures" / "keys"

MINIMAL = """\
metadata:
  id: test-pccp
  title: Test plan
  version: "1"
  effective_date: 2025-01-01
  owner: tests
modifications:
  - id: M1
    type: lora_adapter_retrain
    description: retrain
    bounds:
      base_model: smollm2
      max_adapter_rank: 16
      allowed_data_sources: [curated]
    authorization: automatic
    evaluation: [facts]
  - id: M2
    type: prompt_template_change
    description: prompt
    authorization: manual
    evaluation: [facts, grounding]
data_management:
  sources:
    - id: curated
  sequestered_test_sets:
    - {suite: mini, max_reuse: 3}
performance_evaluation:
  suites: [mini]
  metrics:
    - name: facts
      metric: facts
      direction: higher
      margin: 0.05
      ci_method: tango
      critical: true
    - name: grounding
      metric: grounding
      direction: lower
      hypothesis: guardrail_only
      guardrail: {max: 0.1}
update_procedures:
  approvals:
    - role: qa
      meaning: review
      public_keys: [keys/qa.pub]
      required_for: [M2]
  stages:
    - {name: canary, traffic: 0.1}
    - {name: full, traffic: 1.0}
  monitoring:
    metrics:
      - {name: acceptance, signal: acceptance_rate, margin: 0.05}
  rollback_criteria:
    - {metric: acceptance, condition: fails}
impact_assessment:
  intended_use: tests
  risks:
    - {id: R1, description: loses facts, mitigation: the gate, metrics: [facts]}
traceability:
  - {modification: M1, evaluations: [facts], rationale: retraining can lose facts}
  - {modification: M2, evaluations: [facts, grounding], rationale: prompts change everything}
"""


def write_policy(tmp_path: Path, old: str = "", new: str = "") -> Path:
    """Write MINIMAL (with ``old`` replaced by ``new``) and a public key it can point at."""
    text = MINIMAL
    if old:
        assert text.count(old) == 1, f"{old!r} must occur exactly once in MINIMAL"
        text = text.replace(old, new)
    (tmp_path / "keys").mkdir(exist_ok=True)
    (tmp_path / "keys" / "qa.pub").write_bytes((POLICIES / "keys" / "qa.pub").read_bytes())
    path = tmp_path / "policy.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def line_of(path: Path, text: str) -> int:
    lines = path.read_text(encoding="utf-8").splitlines()
    hits = [i for i, line in enumerate(lines, 1) if text in line]
    assert len(hits) == 1, f"{text!r} must occur on exactly one line, found {hits}"
    return hits[0]


def load_error(path: Path, **kwargs: Any) -> UsageError:
    with pytest.raises(UsageError) as info:
        load_policy(path, **kwargs)
    return info.value


# --------------------------------------------------------------------------- the examples


def test_support_assistant_example_loads_with_the_demo_thresholds() -> None:
    policy = load_policy(SUPPORT, suite_names={"support-assistant"})

    assert policy.path == SUPPORT
    assert policy.hash == hashlib.sha256(SUPPORT.read_bytes()).hexdigest()
    assert policy.reference()["sha256"] == policy.hash
    facts, grounding, rouge = (policy.metric(n) for n in ("facts", "grounding", "rouge_l"))
    assert (facts.hypothesis, facts.margin, facts.alpha) == ("non_inferiority", 0.05, 0.05)
    assert facts.ci_method == "tango"
    assert facts.critical and facts.slices == ["topic"] and facts.min_slice_n == 8
    assert (grounding.direction, grounding.ci_method, grounding.critical) == ("lower", "tango", True)
    assert grounding.guardrail is not None and grounding.guardrail.max == 0.25
    assert grounding.guardrail.breached_by(0.3) and not grounding.guardrail.breached_by(0.2)
    assert (rouge.ci_method, rouge.critical) == ("bootstrap_bca", False)
    assert [(m.id, m.type, m.authorization) for m in policy.modifications] == [
        ("M1", "lora_adapter_retrain", "automatic"),
        ("M2", "prompt_template_change", "manual"),
    ]
    assert policy.modification("M1").bounds.max_adapter_rank == 16
    assert required_approvals(policy, ["M1"]) == []
    assert [a.role for a in required_approvals(policy, ["M2"])] == ["support-product-owner"]


def test_support_assistant_policy_names_the_bundled_suite() -> None:
    suite_file = REPO / "suites" / "support_assistant.yaml"
    if not suite_file.is_file():
        pytest.skip("suites/support_assistant.yaml is not written yet")
    from gatekeeper.engine.suites import load_yaml_suite

    suite = load_yaml_suite(suite_file)
    assert suite is not None
    load_policy(SUPPORT, suite_names={suite.name})
    for spec in load_policy(SUPPORT).performance_evaluation.metrics:
        assert spec.metric in {s.metric for s in suite.scorers}, f"the suite scores no {spec.metric!r}"
        assert set(spec.slices) <= set(suite.slices)


def test_clinical_example_loads_with_two_signatures_and_a_staged_rollout() -> None:
    policy = load_policy(CLINICAL)

    approvals = required_approvals(policy, ["M1"])
    assert [(a.role, a.meaning) for a in approvals] == [
        ("clinical-safety-officer", "approval"),
        ("quality-assurance", "review"),
    ]
    assert approvals[0].public_keys == [(POLICIES / "keys" / "clinical-safety.pub").resolve()]
    stages = policy.update_procedures.stages
    assert [(s.name, s.traffic) for s in stages] == [
        ("shadow", 0.0), ("canary-5", 0.05), ("canary-25", 0.25), ("full", 1.0)
    ]
    compared = [m for m in policy.performance_evaluation.metrics if m.hypothesis != "guardrail_only"]
    assert compared and all(m.alpha == 0.025 for m in compared)
    hallucination = policy.metric("hallucination")
    assert hallucination.guardrail is not None and hallucination.guardrail.max == 0.01
    assert hallucination.ci_method == "cluster"
    assert policy.metric("completeness").hypothesis == "superiority"
    assert policy.gate.scope.require_provenance is True
    assert policy.gate.nodata_limit(500) == 0


@pytest.mark.parametrize("name", ["clinical-safety", "qa", "support-owner"])
def test_fixture_private_keys_sign_for_the_policy_public_keys(name: str) -> None:
    private = load_pem_private_key((FIXTURE_KEYS / f"{name}.key").read_bytes(), password=None)
    public = load_pem_public_key((POLICIES / "keys" / f"{name}.pub").read_bytes())
    assert isinstance(private, Ed25519PrivateKey) and isinstance(public, Ed25519PublicKey)
    public.verify(private.sign(b"decision hash"), b"decision hash")  # raises if the pair is wrong


def test_a_minimal_policy_gets_the_documented_defaults(tmp_path: Path) -> None:
    policy = load_policy(write_policy(tmp_path), suite_names=["mini"])

    facts = policy.metric("facts")
    assert (facts.hypothesis, facts.alpha, facts.sides, facts.min_slice_n, facts.power) == (
        "non_inferiority", 0.05, "one", 10, 0.8
    )
    gate = policy.gate
    assert (gate.max_failed_noncritical, gate.max_inconclusive_noncritical, gate.max_error) == (0, None, 0)
    assert (gate.max_nodata, gate.max_error_rate, gate.scope.require_provenance) == (0.05, 0.0, None)
    assert gate.nodata_limit(40) == 2 and gate.nodata_limit(19) == 0
    assert policy.update_procedures.monitoring.metrics[0].direction == "higher"  # from acceptance_rate
    assert policy.update_procedures.approvals[0].public_keys == [(tmp_path / "keys" / "qa.pub").resolve()]
    assert policy.data_management.reuse_limit(policy.data_management.sequestered_test_sets[0]) == 3


def test_unknown_names_asked_of_a_policy_are_usage_errors(tmp_path: Path) -> None:
    path = write_policy(tmp_path)
    policy = load_policy(path)
    with pytest.raises(UsageError, match=r"no metric 'bleu' in the policy \(it has: facts, grounding\)"):
        policy.metric("bleu")
    with pytest.raises(UsageError, match=r"no modification 'M7'"):
        required_approvals(policy, ["M7"])


# --------------------------------------------------------------------------- located errors


MALFORMED = {
    "unknown field": (
        "  owner: tests\n", "  owner: tests\n  colour: blue\n",
        "metadata.colour", "colour: blue", "unknown field",
    ),
    "negative margin": (
        "      margin: 0.05\n", "      margin: -0.05\n",
        "performance_evaluation.metrics[0].margin", "margin: -0.05", "positive distance",
    ),
    "unknown ci_method": (
        "ci_method: tango", "ci_method: wald",
        "performance_evaluation.metrics[0].ci_method", "ci_method: wald",
        "unknown ci_method 'wald'; allowed: auto, bootstrap_bca, bootstrap_percentile, tango, cluster, t",
    ),
    "unknown hypothesis": (
        "hypothesis: guardrail_only", "hypothesis: noninferior",
        "performance_evaluation.metrics[1].hypothesis", "hypothesis: noninferior",
        "unknown hypothesis 'noninferior'; allowed: non_inferiority, superiority",
    ),
    "alpha out of range": (
        "      ci_method: tango\n", "      ci_method: tango\n      alpha: 0.6\n",
        "performance_evaluation.metrics[0].alpha", "alpha: 0.6", "less than 0.5",
    ),
    "traceability to an unknown metric": (
        "evaluations: [facts, grounding], rationale", "evaluations: [facts, groundng], rationale",
        "traceability[1].evaluations[1]", "groundng", "unknown metric 'groundng' (known: facts, grounding)",
    ),
    "traceability to an unknown modification": (
        "{modification: M2,", "{modification: M9,",
        "traceability[1].modification", "modification: M9", "unknown modification 'M9'",
    ),
    "modification without a traceability entry": (
        "  - {modification: M2, evaluations: [facts, grounding], rationale: prompts change everything}\n", "",
        "modifications[1].id", "  - id: M2", "modification 'M2' has no traceability entry",
    ),
    "guardrail_only without a guardrail": (
        "      guardrail: {max: 0.1}\n", "",
        "performance_evaluation.metrics[1].guardrail", "- name: grounding", "needs a guardrail",
    ),
    "non-inferiority without a margin": (
        "      margin: 0.05\n", "",
        "performance_evaluation.metrics[0].margin", "- name: facts", "non_inferiority needs a margin > 0",
    ),
    "equivalence with a zero margin": (
        "      margin: 0.05\n", "      hypothesis: equivalence\n      margin: 0  # no band\n",
        "performance_evaluation.metrics[0].margin", "no band", "equivalence needs a margin > 0",
    ),
    "duplicate metric name": (
        "      guardrail: {max: 0.1}\n",
        "      guardrail: {max: 0.1}\n    - {name: facts, metric: rouge_l, direction: higher, margin: 0.1}\n",
        "performance_evaluation.metrics[2].name", "metric: rouge_l", "duplicate metric name 'facts'",
    ),
    "version read as a number": (
        'version: "1"', "version: 1.10", "metadata.version", "version: 1.1", "quote it",
    ),
    "unknown modification type": (
        "type: prompt_template_change", "type: prompt_tweak",
        "modifications[1].type", "type: prompt_tweak",
        "unknown modification type 'prompt_tweak'; allowed: lora_adapter_retrain",
    ),
    "bound that does not apply to the type": (
        "    description: prompt\n", "    description: prompt\n    bounds: {max_adapter_rank: 8}\n",
        "modifications[1].bounds.max_adapter_rank", "max_adapter_rank: 8",
        "max_adapter_rank does not apply to a prompt_template_change",
    ),
    "undeclared data source": (
        "allowed_data_sources: [curated]", "allowed_data_sources: [curated, web]",
        "modifications[0].bounds.allowed_data_sources[1]", "[curated, web]", "unknown data source 'web'",
    ),
    "manual modification nobody approves": (
        "required_for: [M2]", "required_for: [M1]",
        "modifications[1].authorization", "authorization: manual", "is manual but no update_procedures",
    ),
    "approval for an automatic modification": (
        "required_for: [M2]", "required_for: [M2, M1]",
        "update_procedures.approvals[0].required_for[1]", "required_for", "'M1' is automatic",
    ),
    "approval for an unknown modification": (
        "required_for: [M2]", "required_for: [M2, M9]",
        "update_procedures.approvals[0].required_for[1]", "required_for", "unknown modification 'M9'",
    ),
    "missing public key": (
        "public_keys: [keys/qa.pub]", "public_keys: [keys/nobody.pub]",
        "update_procedures.approvals[0].public_keys[0]", "nobody.pub", "cannot read public key",
    ),
    "public key that is not a key": (
        "public_keys: [keys/qa.pub]", "public_keys: [policy.yaml]",
        "update_procedures.approvals[0].public_keys[0]", "public_keys: [policy.yaml]",
        "is not an Ed25519 public key in PEM format",
    ),
    "rollout that narrows": (
        "{name: full, traffic: 1.0}", "{name: full, traffic: 0.05}",
        "update_procedures.stages[1].traffic", "name: full", "a rollout only widens",
    ),
    "signal direction contradicted": (
        "signal: acceptance_rate, margin", "signal: acceptance_rate, direction: lower, margin",
        "update_procedures.monitoring.metrics[0].direction", "acceptance_rate, direction: lower",
        "acceptance_rate gets better when higher",
    ),
    "rollback on an unknown monitoring metric": (
        "{metric: acceptance, condition: fails}", "{metric: acceptence, condition: fails}",
        "update_procedures.rollback_criteria[0].metric", "acceptence",
        "unknown monitoring metric 'acceptence'",
    ),
    "rollback threshold missing": (
        "{metric: acceptance, condition: fails}", "{metric: acceptance, condition: below}",
        "update_procedures.rollback_criteria[0].threshold", "condition: below", "needs a threshold",
    ),
    "nodata limit above one": (
        "update_procedures:\n", "gate:\n  max_nodata: 1.5\nupdate_procedures:\n",
        "gate.max_nodata", "max_nodata", "a share of cases (a decimal from 0.0 to 1.0)",
    ),
    "comparator that is neither spec nor alias": (
        "  suites: [mini]\n", "  suites: [mini]\n  comparators: {last_authorized: production}\n",
        "performance_evaluation.comparators.last_authorized", "comparators", "registry alias",
    ),
    "metric restricted to a suite the protocol does not run": (
        "      ci_method: tango\n", "      ci_method: tango\n      suite: other\n",
        "performance_evaluation.metrics[0].suite", "suite: other", "not one of performance_evaluation.suites",
    ),
    "missing required field": (
        "  owner: tests\n", "", "metadata.owner", "metadata:", "field required",
    ),
}


@pytest.mark.parametrize("case", MALFORMED.values(), ids=list(MALFORMED))
def test_malformed_policy_is_a_usage_error_naming_file_line_and_field(
    tmp_path: Path, case: tuple[str, str, str, str, str]
) -> None:
    old, new, field, anchor, message = case
    path = write_policy(tmp_path, old, new)

    error = load_error(path)

    assert (error.file, error.field) == (str(path), field)
    assert error.line == line_of(path, anchor)
    assert message in error.message
    assert str(error).startswith(f"{path}:{error.line}: {field}: ")


def test_negative_margin_message_explains_margins_are_positive_distances(tmp_path: Path) -> None:
    error = load_error(write_policy(tmp_path, "      margin: 0.05\n", "      margin: -0.05\n"))
    assert error.message == (
        "margin -0.05 is negative; a margin is a positive distance in the metric's units "
        "(0.05 = five points on a 0..1 scale) and 'direction' says which way is worse, so write 0.05"
    )


def test_suite_that_does_not_exist_is_an_error_at_its_line(tmp_path: Path) -> None:
    path = write_policy(tmp_path, "{suite: mini, max_reuse: 3}", "{suite: other, max_reuse: 3}")

    error = load_error(path, suite_names={"support-assistant", "other"})

    assert error.field == "performance_evaluation.suites[0]"
    assert error.line == line_of(path, "suites: [mini]")
    assert "unknown suite 'mini'" in error.message and "known: other, support-assistant" in error.message


def test_sequestered_test_set_must_name_an_existing_suite(tmp_path: Path) -> None:
    path = write_policy(tmp_path, "{suite: mini, max_reuse: 3}", "{suite: holdout, max_reuse: 3}")

    error = load_error(path, suite_names={"mini"})

    assert error.field == "data_management.sequestered_test_sets[0].suite"
    assert error.line == line_of(path, "suite: holdout")


def test_the_first_problem_in_the_file_is_reported(tmp_path: Path) -> None:
    # Two problems: an unknown metric in traceability (late) and an undeclared data source (early).
    path = write_policy(tmp_path, "allowed_data_sources: [curated]", "allowed_data_sources: [web]")
    text = path.read_text().replace("evaluations: [facts], rationale", "evaluations: [fact], rationale")
    path.write_text(text)

    error = load_error(path)

    assert error.field == "modifications[0].bounds.allowed_data_sources[0]"


def test_bad_yaml_is_a_usage_error_with_its_line(tmp_path: Path) -> None:
    path = write_policy(tmp_path, "  title: Test plan\n", "  title: [Test plan\n")

    error = load_error(path)

    assert error.file == str(path)
    assert error.message.startswith("invalid YAML")
    assert error.line is not None and error.line >= line_of(path, "title: [Test plan")


def test_a_policy_that_is_not_a_mapping_says_what_a_policy_is(tmp_path: Path) -> None:
    path = tmp_path / "policy.yaml"
    path.write_text("- metadata\n- modifications\n")

    error = load_error(path)

    assert (error.file, error.line) == (str(path), 1)
    assert "a policy is a mapping with the sections metadata, modifications" in error.message


def test_a_missing_policy_file_is_a_usage_error(tmp_path: Path) -> None:
    error = load_error(tmp_path / "nope.yaml")
    assert error.file == str(tmp_path / "nope.yaml") and "cannot read" in error.message


# --------------------------------------------------------------------------- scope check


IN_SCOPE: dict[str, Any] = {  # shaped like the provenance.json of gatekeeper-hf's lora tuner
    "modification": "lora_adapter_retrain",
    "tuner": "lora",
    "base_model": {"spec": "hf:smollm2", "name": "smollm2", "digest": "sha256:" + "a" * 64},
    "adapter": {"path": "runs/a7", "rank": 16, "alpha": 32.0, "target_modules": ["q_proj", "v_proj"]},
    "data": {"path": "train.jsonl", "sha256": "b" * 64, "rows": 1200, "sources": ["curated-v1", "production-signals"]},
    "hyperparameters": {
        "rank": 16, "alpha": 32.0, "dropout": 0.05, "target_modules": ["q_proj", "v_proj"],
        "learning_rate": 2e-4, "epochs": 3, "max_steps": 60, "batch_size": 8, "seed": 7, "max_length": 512,
    },
    "seed": 7,
}


def changed(path: str, value: Any) -> dict[str, Any]:
    """IN_SCOPE with the value at ``a.b`` replaced (``None`` removes it)."""
    provenance = copy.deepcopy(IN_SCOPE)
    *parents, key = path.split(".")
    target = provenance
    for part in parents:
        target = target[part]
    if value is None:
        del target[key]
    else:
        target[key] = value
    return provenance


@pytest.fixture(scope="module")
def support() -> Policy:
    return load_policy(SUPPORT)


@pytest.fixture(scope="module")
def clinical() -> Policy:
    return load_policy(CLINICAL)


def test_in_scope_lora_retrain_matches_m1_without_deviations(support: Policy) -> None:
    assert check_scope(support, IN_SCOPE) == ScopeResult("M1", [])
    assert check_scope(support, changed("modification", "M1")).in_scope
    assert check_scope(support, changed("hyperparameters.seed", None)).in_scope  # the top-level seed counts
    assert check_scope(support, changed("base_model", "hf:smollm2")).in_scope


def test_adapter_rank_above_the_bound_names_both_clauses(support: Policy) -> None:
    result = check_scope(support, changed("adapter.rank", 32))

    assert result.modification_id == "M1" and not result.in_scope
    assert result.deviations == [
        "modifications[M1].bounds.max_adapter_rank: adapter rank 32 exceeds 16",
        "retraining.hyperparameters.rank.max: adapter rank 32 exceeds 16",
    ]


def test_another_base_model_is_a_deviation(support: Policy) -> None:
    result = check_scope(support, changed("base_model", {"name": "llama-3-8b", "digest": "sha256:cc"}))

    assert result.deviations == [
        "modifications[M1].bounds.base_model: base model 'llama-3-8b' (digest sha256:cc) is not 'smollm2'"
    ]


def test_a_fixed_base_model_can_be_named_by_digest(support: Policy) -> None:
    policy = support.model_copy(deep=True)
    policy.modifications[0].bounds.base_model = "a" * 64

    renamed = {"name": "renamed", "digest": "sha256:" + "a" * 64}
    assert check_scope(policy, changed("base_model", renamed)).in_scope
    assert not check_scope(policy, changed("base_model", {"name": "smollm2", "digest": "b" * 64})).in_scope


def test_unlisted_data_source_is_a_deviation(support: Policy) -> None:
    result = check_scope(support, changed("data.sources", ["curated-v1", "web-scrape"]))

    assert result.deviations == [
        "modifications[M1].bounds.allowed_data_sources: data source 'web-scrape' not allowed "
        "(allowed: curated-v1, production-signals)",
        "data_management.sources: 'web-scrape' is not a declared data source",
    ]


@pytest.mark.parametrize(
    ("path", "value", "deviation"),
    [
        ("data.rows", 60000, "modifications[M1].bounds.max_training_rows: training rows 60000 exceeds 50000"),
        ("data.sha256", None, "modifications[M1].bounds.require_data_sha256: the provenance does not state"),
        ("adapter.alpha", 64, "retraining.hyperparameters.alpha.max: adapter alpha 64 exceeds 32"),
        ("hyperparameters.learning_rate", 1e-6,
         "retraining.hyperparameters.learning_rate.min: learning rate 1e-06 is below 1e-05"),
        ("hyperparameters.epochs", "three",
         "retraining.hyperparameters.epochs: epochs 'three' in the provenance is not a number"),
        ("data.sources", [], "modifications[M1].bounds.allowed_data_sources: the provenance does not state"),
    ],
)
def test_each_bound_breached_names_its_clause(support: Policy, path: str, value: Any, deviation: str) -> None:
    result = check_scope(support, changed(path, value))

    assert result.modification_id == "M1"
    assert len(result.deviations) == 1, result.deviations
    assert result.deviations[0].startswith(deviation)


def test_unlisted_target_module_breaks_the_bound_and_the_retraining_rule(support: Policy) -> None:
    result = check_scope(support, changed("adapter.target_modules", ["q_proj", "lm_head"]))

    allowed = "(allowed: q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj, down_proj)"
    assert result.deviations == [
        f"modifications[M1].bounds.allowed_target_modules: target module 'lm_head' not allowed {allowed}",
        f"retraining.hyperparameters.target_modules: target module 'lm_head' not allowed {allowed}",
    ]


def test_a_bound_the_provenance_does_not_state_is_a_deviation(support: Policy) -> None:
    provenance = changed("adapter", {"alpha": 16, "target_modules": ["q_proj"]})
    del provenance["hyperparameters"]["rank"]

    assert check_scope(support, provenance).deviations == [
        "modifications[M1].bounds.max_adapter_rank: the provenance does not state adapter rank "
        "(adapter.rank), so this bound cannot be checked",
        "retraining.hyperparameters.rank: the provenance does not state adapter rank (adapter.rank), "
        "so this bound cannot be checked",
    ]


def test_prompt_change_is_checked_against_its_own_bounds_only(support: Policy) -> None:
    provenance = {"modification": "prompt_template_change", "base_model": {"name": "smollm2"}}
    result = check_scope(support, provenance)
    assert result == ScopeResult("M2", [])


def test_undeclared_change_type_is_out_of_scope(support: Policy) -> None:
    result = check_scope(support, changed("modification", "full_finetune"))

    assert result == ScopeResult(None, [
        "modifications: 'full_finetune' is not a modification this policy allows "
        "(allowed: M1 (lora_adapter_retrain), M2 (prompt_template_change))"
    ])
    assert check_scope(support, changed("modification", None)).deviations[0].startswith(
        "modifications: the provenance names no modification"
    )


def test_missing_provenance_is_a_deviation_only_where_the_policy_requires_it(
    support: Policy, clinical: Policy
) -> None:
    assert check_scope(support, None) == ScopeResult(None, [])
    result = check_scope(clinical, None)
    assert result.modification_id is None
    assert result.deviations == [
        "gate.scope.require_provenance: no modification declared: the candidate comes with no provenance, "
        "so it cannot be shown to be a change the policy allows"
    ]


def test_clinical_scope_checks_consent_and_decoding_bounds(clinical: Policy) -> None:
    retrain: dict[str, Any] = {
        "modification": "M1",
        "base_model": {"name": "smollm2"},
        "adapter": {"rank": 8, "alpha": 16, "target_modules": ["q_proj", "v_proj"]},
        "data": {"sources": ["corrected-notes"], "rows": 900, "sha256": "c" * 64, "pii_scrubbed": True},
        "hyperparameters": {"learning_rate": 1e-4, "epochs": 2, "max_steps": 800, "seed": 1},
    }
    assert check_scope(clinical, retrain).deviations == [
        "data_management.consent_required: the provenance does not record verified consent "
        "(data.consent_verified: true)"
    ]
    retrain["data"]["consent_verified"] = True
    del retrain["data"]["pii_scrubbed"]
    assert check_scope(clinical, retrain).deviations == [
        "data_management.pii_scrubbing_required: the provenance does not record that the training data "
        "was PII-scrubbed (data.pii_scrubbed: true)"
    ]
    retrain["data"]["pii_scrubbed"] = True
    del retrain["hyperparameters"]["seed"]
    assert check_scope(clinical, retrain).deviations == [
        "retraining.hyperparameters.seed.required: the provenance records no training seed (hyperparameters.seed)"
    ]
    retrain["hyperparameters"]["seed"] = 1
    assert check_scope(clinical, retrain) == ScopeResult("M1", [])

    decoding = {"modification": "decoding_params_change", "base_model": "smollm2",
                "decoding": {"temperature": 0.7, "max_tokens": 512}}
    assert check_scope(clinical, decoding) == ScopeResult(
        "M3", ["modifications[M3].bounds.max_temperature: temperature 0.7 exceeds 0.3"]
    )


def test_sequestered_test_set_changed_or_reused_too_often_is_a_deviation(tmp_path: Path) -> None:
    pinned = "d" * 64
    path = write_policy(
        tmp_path, "{suite: mini, max_reuse: 3}", f"{{suite: mini, sha256: 'sha256:{pinned}', max_reuse: 3}}"
    )
    policy = load_policy(path)

    assert check_sequestered(policy, {"mini": ["e" * 64, pinned]}, {"mini": 2}) == []
    assert check_sequestered(policy, {"other": ["e" * 64]}, {"other": 99}) == []  # not sequestered
    assert check_sequestered(policy, {"mini": ["e" * 64]}, {"mini": 3}) == [
        "data_management.sequestered_test_sets[mini].sha256: the test data of suite 'mini' changed "
        "(pinned dddddddddddd…, found eeeeeeeeeeee)",
        "data_management.sequestered_test_sets[mini].max_reuse: suite 'mini' has already been evaluated "
        "3 times; the limit is 3, so it is no longer a sequestered test set",
    ]


def test_sequestered_reuse_falls_back_to_the_section_default(tmp_path: Path) -> None:
    old, new = "    - {suite: mini, max_reuse: 3}\n", "    - {suite: mini}\n  max_reuse: 5\n"
    path = write_policy(tmp_path, old, new)
    policy = load_policy(path)

    assert check_sequestered(policy, {"mini": []}, {"mini": 4}) == []
    assert check_sequestered(policy, {"mini": []}, {"mini": 5})[0].startswith("data_management.max_reuse: ")


# --------------------------------------------------------------------------- docs


def test_the_error_messages_shown_in_the_docs_are_the_real_ones(tmp_path: Path, monkeypatch: Any) -> None:
    docs = (REPO / "docs" / "policy.md").read_text(encoding="utf-8")
    shown = re.findall(r"^policies/support-assistant\.yaml:\d+: .*$", docs, re.M)
    assert len(shown) == 2
    lines = SUPPORT.read_text(encoding="utf-8").splitlines(keepends=True)
    margin = next(i for i, line in enumerate(lines) if "margin: 0.05" in line)
    trace = next(i for i, line in enumerate(lines) if "evaluations: [facts, grounding, rouge_l]" in line
                 and i > lines.index("traceability:\n"))
    (tmp_path / "policies").mkdir()
    (tmp_path / "policies" / "keys").symlink_to(POLICIES / "keys")
    monkeypatch.chdir(tmp_path)
    actual = []
    for index, old, new in [(margin, "0.05", "-0.05"), (trace, "rouge_l]", "rougel]")]:
        broken = [*lines[:index], lines[index].replace(old, new), *lines[index + 1:]]
        Path("policies/support-assistant.yaml").write_text("".join(broken), encoding="utf-8")
        actual.append(str(load_error(Path("policies/support-assistant.yaml"))))
    assert actual == shown


def _models_in(annotation: Any) -> list[type[BaseModel]]:
    """The pydantic models an annotation refers to (through list, Optional, unions)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    if typing.get_origin(annotation) in (list, typing.Union, types.UnionType):
        return [m for arg in typing.get_args(annotation) for m in _models_in(arg)]
    return []


def _field_paths(model: type[BaseModel], prefix: str = "") -> list[str]:
    paths = []
    for name, info in model.model_fields.items():
        path = f"{prefix}{name}"
        paths.append(path)
        is_list = typing.get_origin(info.annotation) is list
        for sub in _models_in(info.annotation):
            paths += _field_paths(sub, f"{path}[]." if is_list else f"{path}.")
    return paths


def test_every_policy_field_is_documented() -> None:
    docs = (REPO / "docs" / "policy.md").read_text(encoding="utf-8")
    tables = re.findall(r"^\| field \| type \| default \| meaning \|\n((?:\|.*\n)+)", docs, re.M)
    documented = {m for table in tables for m in re.findall(r"^\| `([^`]+)` \|", table, re.M)}

    paths = _field_paths(Policy)

    assert "performance_evaluation.metrics[].guardrail.max" in paths  # the walk reaches nested fields
    missing = [p for p in paths if p not in documented]
    assert not missing, f"docs/policy.md has no table row for: {missing}"
    stale = sorted(documented - set(paths))
    assert not stale, f"docs/policy.md documents fields that do not exist: {stale}"
