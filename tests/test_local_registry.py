"""The ``local`` deploy target: versions, aliases, stages, history, rollback, atomic state."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from gatekeeper.builtin.local_registry import STATE_FILE, LocalRegistry, consistency_problems
from gatekeeper.kinds import RegistryConflict
from gatekeeper.testing import Project
from gatekeeper.types import Config, UsageError


@pytest.fixture
def registry(tmp_path: Path) -> LocalRegistry:
    return LocalRegistry(Config(root=tmp_path))


def test_versions_aliases_and_history(registry: LocalRegistry) -> None:
    v1 = registry.register_version("assistant", "hf:smollm2", {"identity": {"digest": "aa" * 32}})
    v2 = registry.register_version("assistant", "hf:smollm2?adapter=a2", {"decision": "bb" * 32})
    assert (v1, v2) == ("1", "2")
    registry.set_alias("assistant", "production", v1, stage="full")
    registry.set_alias("assistant", "candidate", v2, traffic=0.1, stage="canary", expected=None)

    assert registry.get_alias("assistant", "production") == "1"
    aliases = registry.aliases("assistant")
    assert aliases["candidate"] | {"since": None} == {"version": "2", "traffic": 0.1, "stage": "canary", "since": None}
    assert registry.versions("assistant")["2"]["spec"] == "hf:smollm2?adapter=a2"
    assert registry.versions("assistant")["2"]["provenance"] == {"decision": "bb" * 32}
    assert [(e["seq"], e["action"], e.get("alias")) for e in registry.history("assistant")] == [
        (1, "register", None), (2, "register", None), (3, "alias", "production"), (4, "alias", "candidate"),
    ]
    assert consistency_problems(registry.load()) == []
    # The default location is the configured one, and it is plain JSON.
    state = json.loads((registry.config.root / ".gatekeeper/registry" / STATE_FILE).read_text())
    assert state["models"]["assistant"]["aliases"]["production"]["version"] == "1"


def test_a_stale_expectation_is_a_conflict_and_changes_nothing(registry: LocalRegistry) -> None:
    for spec in ("replay:a.jsonl", "replay:b.jsonl", "replay:c.jsonl"):
        registry.register_version("m", spec, {})
    registry.set_alias("m", "candidate", "2", traffic=0.1, expected=None)
    before = registry.load()
    with pytest.raises(RegistryConflict, match=r"alias 'candidate' changed while this command ran \(it was unset, "
                                               r"it is now version 2\)"):
        registry.set_alias("m", "candidate", "3", traffic=0.1, expected=None)
    assert registry.load() == before


def test_rollback_restores_the_previous_version_and_skips_rolled_back_ones(registry: LocalRegistry) -> None:
    for spec in ("replay:1.jsonl", "replay:2.jsonl", "replay:3.jsonl"):
        registry.register_version("m", spec, {})
    registry.set_alias("m", "production", "1", stage="full")
    registry.set_alias("m", "production", "2", stage="full")
    assert registry.rollback("m", "production", reason="acceptance fell") == "1"
    registry.set_alias("m", "production", "3", stage="full")
    # 2 was rolled back from, so going back from 3 returns to 1, not 2.
    assert registry.rollback("m", "production", reason="again") == "1"
    last = registry.history("m")[-1]
    assert last | {"time": None, "actor": None} == {
        "seq": last["seq"], "time": None, "actor": None, "action": "rollback", "model": "m", "alias": "production",
        "previous": "3", "version": "1", "traffic": 1.0, "stage": "full", "reason": "again",
    }
    assert registry.rollback("m", "production", to="3", reason="explicit") == "3"


def test_rolling_back_a_canary_removes_it_and_production_needs_an_earlier_version(registry: LocalRegistry) -> None:
    registry.register_version("m", "replay:1.jsonl", {})
    registry.register_version("m", "replay:2.jsonl", {})
    registry.set_alias("m", "production", "1")
    registry.set_alias("m", "candidate", "2", traffic=0.1, stage="canary")
    assert registry.rollback("m", "candidate", reason="worse") is None
    assert "candidate" not in registry.aliases("m")
    with pytest.raises(UsageError, match="no earlier version to roll back to"):
        registry.rollback("m", "production", reason="nothing before")
    with pytest.raises(UsageError, match="no version '9'"):
        registry.rollback("m", "production", to="9", reason="x")


def test_unknown_model_version_and_bad_traffic_are_usage_errors(registry: LocalRegistry) -> None:
    with pytest.raises(UsageError, match="no model 'ghost'"):
        registry.set_alias("ghost", "production", "1")
    registry.register_version("m", "replay:1.jsonl", {})
    with pytest.raises(UsageError, match="has no version '7'"):
        registry.set_alias("m", "production", "7")
    with pytest.raises(UsageError, match=r"traffic 1\.5 is outside 0\.\.1"):
        registry.set_alias("m", "candidate", "1", traffic=1.5)


def test_temporaries_of_a_dead_writer_are_ignored_and_cleaned(registry: LocalRegistry) -> None:
    registry.register_version("m", "replay:1.jsonl", {})
    leftover = registry.root / f".{STATE_FILE}.12345.deadbeef.tmp"
    leftover.write_text('{"half": ')
    assert registry.versions("m").keys() == {"1"}
    registry.register_version("m", "replay:2.jsonl", {})
    assert not leftover.exists()
    assert sorted(p.name for p in registry.root.iterdir()) == [".lock", STATE_FILE]


def test_a_corrupt_registry_file_is_a_clear_error(registry: LocalRegistry) -> None:
    registry.root.mkdir(parents=True)
    registry.path.write_text("{not json")
    with pytest.raises(UsageError, match=r"registry.json:1: the registry is not valid JSON"):
        registry.load()


def test_registry_commands_register_show_history_check(project: Project) -> None:
    project.write_jsonl("base.jsonl", [{"id": "a", "output": "hi"}])
    registered = project.run("registry", "register", "replay:base.jsonl", "--model", "assistant",
                             "--alias", "production", "--reason", "in production before gatekeeper")
    assert registered.exit_code == 0, registered.output
    assert registered.stdout.strip() == "registered assistant version 1 (replay:base.jsonl) as @production"

    shown = project.run("registry", "show", "--model", "assistant")
    assert shown.exit_code == 0, shown.output
    shown.fnmatch_lines(["assistant (local)", "  @production  -> version 1    stage full     traffic 100%*",
                         "  version 1    replay:base.jsonl  decision -*"])
    as_json = json.loads(project.run("registry", "show", "--model", "assistant", "--json").stdout)
    assert as_json["versions"]["1"]["provenance"]["identity"]["provider"] == "replay"
    history = project.run("registry", "history", "--model", "assistant")
    history.fnmatch_lines(["   1 * register     version=1", "   2 * alias        version=1, alias=production, "
                           "stage=full, traffic=1.0, reason=in production before gatekeeper"])
    assert project.run("registry", "check", "--model", "assistant").stdout.endswith("OK\n")
    audit = [
        json.loads(line) for line in (project.path / ".gatekeeper/audit.jsonl").read_text().splitlines()]
    assert [r["action"] for r in audit] == ["register"]
    assert audit[0]["data"]["spec"] == "replay:base.jsonl"


def test_registry_check_reports_an_alias_to_a_missing_version(project: Project) -> None:
    registry = LocalRegistry(Config(root=project.path))
    registry.register_version("m", "replay:1.jsonl", {})
    registry.set_alias("m", "production", "1")
    state = registry.load()
    state["models"]["m"]["aliases"]["production"]["version"] = "5"
    registry.path.write_text(json.dumps(state))
    result = project.run("registry", "check", "--model", "m")
    assert result.exit_code == 1
    result.fnmatch_lines(["  m: alias 'production' points at missing version '5'", "registry *: INCONSISTENT"])


def test_registry_location_from_flag(project: Project) -> None:
    project.write_jsonl("base.jsonl", [{"id": "a", "output": "hi"}])
    result = project.run("registry", "register", "replay:base.jsonl", "--model", "m", "--registry", "elsewhere")
    assert result.exit_code == 0, result.output
    assert (project.path / "elsewhere" / STATE_FILE).is_file()
    assert not (project.path / ".gatekeeper/registry").exists()
