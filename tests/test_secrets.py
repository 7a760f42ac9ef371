"""No API key appears in any report, cache, state file, log line or audit record.

A key is planted in an environment variable, used for real against the fake server
(which also echoes a wrong key back in its 401 message, as careless servers do), and
then every byte gatekeeper wrote or printed is searched for it.
"""

from __future__ import annotations

import secrets
from pathlib import Path

from gatekeeper.testing import Project
from tests.fakes import FakeOpenAIServer
from tests.test_check import paired_project

PLANTED = f"sk-test-PLANTED-{secrets.token_hex(12)}"
WRONG = f"sk-test-PLANTED-wrong-{secrets.token_hex(12)}"
ENV = {"GK_PLANTED_KEY": PLANTED, "GK_WRONG_KEY": WRONG, "GATEKEEPER_DISABLE_PLUGIN_AUTOLOAD": "1"}


def files_containing(root: Path, needles: list[str]) -> list[str]:
    hits = []
    for path in root.rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            if any(n.encode() in data for n in needles):
                hits.append(str(path.relative_to(root)))
    return hits


def test_planted_key_is_nowhere_in_outputs_cache_state_logs_or_audit(project: Project) -> None:
    paired_project(project, improved=0, regressed=0, both_right=30, n=30)
    project.write("gatekeeper.yaml", "runner: {retries: 1, backoff_s: 0.01}\n")
    with FakeOpenAIServer(api_keys={PLANTED}, responder=lambda body: "yes") as server:
        def model(name: str, env: str = "GK_PLANTED_KEY", extra: str = "") -> str:
            return f"openai:{name}?base_url={server.base_url}&api_key_env={env}{extra}"

        outputs = [
            project.run("check", "--baseline", model("base-v1"), "--candidate", model("cand-v2"),
                        "--provenance", "candidate.provenance.json", "--policy", "policy.yaml",
                        "--out", "out/check", env=ENV),
            project.run("run", "suites", "--model", model("batch-v1", extra="&batch=true&poll_s=0.02"),
                        "--out", "out/batch", env=ENV),
            project.run("run", "suites", "--model", model("wrong-v1", env="GK_WRONG_KEY"),
                        "--out", "out/wrong", env=ENV),
        ]
        assert server.keys_seen[PLANTED] >= 60 and server.keys_seen[WRONG] >= 30  # really used
    check, batch, wrong = outputs
    assert check.exit_code in (0, 2, 3), check.output
    assert "tokens: " in check.output
    assert batch.exit_code == 0, batch.output
    assert wrong.exit_code == 5 and "HTTP 401: check the key in $GK_WRONG_KEY" in wrong.output
    assert "Incorrect API key provided: [redacted" in wrong.output  # [redacted:GK_WRONG_KEY]

    written = [p for p in project.path.rglob("*") if p.is_file()]
    assert any(p.name == "decision.json" for p in written) and any(p.name == "audit.jsonl" for p in written)
    assert any(p.name.startswith("cache.sqlite") for p in written)
    assert files_containing(project.path, [PLANTED, WRONG]) == []
    for result in outputs:
        assert PLANTED not in result.output and WRONG not in result.output
