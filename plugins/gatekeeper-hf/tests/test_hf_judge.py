"""A local ``hf`` model as the judge: any provider can judge. The tiny random Llama writes
no JSON, so the strict parser sends its reply back for a repair and then scores NODATA —
never a silent 0 — with the judge's identity in the provenance."""

from __future__ import annotations

from pathlib import Path

from gatekeeper.testing import Project

SUITE = """\
suite: judged
prompt:
  messages:
    - role: user
      content: "{{{{ input }}}}"
cases:
  - {{id: a, input: "What is 2 + 2?"}}
evaluators:
  - {{rubric: {{judge: 'hf:{model}?device=cpu', criteria: Correctness, max_tokens: 8}}}}
"""


def test_a_local_hf_model_judges_and_garbage_is_nodata(tmp_path: Path, tiny_model: Path) -> None:
    project = Project(tmp_path)
    project.write("suites/judged.yaml", SUITE.format(model=tiny_model))
    project.write_jsonl("answers.jsonl", [{"id": "a", "output": "4"}])

    result = project.run("run", "suites", "--model", "replay:answers.jsonl", "--out", "out", "--no-progress")

    assert result.exit_code == 0, result.output
    score = project.read_record("out/results.json")["cases"][0]["scores"]["rubric"]
    assert score["status"] == "nodata" and score["value"] is None
    assert score["reason"].startswith("judge reply unusable after 2 attempt(s):")
    assert score["details"]["judge"]["provider"] == "hf"
    assert len(score["details"]["judge"]["digest"]) == 64
    assert score["details"]["judge_calls"] == 2
