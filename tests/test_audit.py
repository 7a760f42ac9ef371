"""The hash-chained audit log: appends, tamper detection, concurrency, the secret guard, CLI."""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import subprocess
import sys
import types
from datetime import datetime
from pathlib import Path

import pytest

from gatekeeper.builtin.commands.audit import AuditCommand
from gatekeeper.gate.audit import GENESIS_PREV, AuditLog, record_digest
from gatekeeper.types import Config, UsageError

N = 6
HEX64 = re.compile(r"^[0-9a-f]{64}$")


def make_log(path: Path, n: int = N) -> AuditLog:
    log = AuditLog(path)
    for i in range(1, n + 1):
        log.append(
            "check",
            actor="ci",
            subject=f"run-{i}",
            refs={"policy": hashlib.sha256(b"policy").hexdigest()},
            data={"decision": "PROMOTE", "i": i},
        )
    return log


def read_lines(path: Path) -> list[str]:
    return path.read_text(encoding="utf-8").splitlines(keepends=True)


def write_lines(path: Path, lines: list[str]) -> None:
    path.write_text("".join(lines), encoding="utf-8")


def forged(seq: int, prev: str) -> str:
    """A record an attacker wrote with a correct hash of its own."""
    record = {
        "seq": seq,
        "time": "2025-01-01T00:00:00.000000Z",
        "actor": "mallory",
        "action": "approve",
        "subject": "run-x",
        "refs": {},
        "data": {"note": "forged"},
        "prev": prev,
    }
    record["hash"] = record_digest(record)
    return json.dumps(record, sort_keys=True, separators=(",", ":")) + "\n"


@pytest.fixture
def log_path(tmp_path: Path) -> Path:
    path = tmp_path / "audit" / "audit.jsonl"
    make_log(path)
    return path


# --------------------------------------------------------------------------- writing


def test_records_are_chained_canonical_lines(tmp_path: Path) -> None:
    path = tmp_path / "deep" / "dir" / "audit.jsonl"
    log = AuditLog(path)
    first = log.append("check", actor="ci", subject="run-1", refs={"policy": "a" * 64}, data={"ok": True})
    second = log.append("promote", actor="ci", subject="support-bot@prod", data={"run_id": "run-1"})

    assert path.is_file()
    assert [first["seq"], second["seq"]] == [1, 2]
    assert first["prev"] == GENESIS_PREV
    assert second["prev"] == first["hash"]
    for record, line in zip((first, second), read_lines(path), strict=True):
        body = {k: v for k, v in record.items() if k != "hash"}
        canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        assert record["hash"] == hashlib.sha256(canonical.encode()).hexdigest()
        assert line == json.dumps(record, sort_keys=True, separators=(",", ":"), ensure_ascii=False) + "\n"
        assert record["time"].endswith("Z")
        datetime.fromisoformat(record["time"].replace("Z", "+00:00"))
    assert log.records() == [first, second]


def test_actor_defaults_to_env_then_os_user(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    log = AuditLog(tmp_path / "a.jsonl")
    monkeypatch.setenv("GATEKEEPER_ACTOR", "pipeline#812")
    assert log.append("check", subject="r")["actor"] == "pipeline#812"
    monkeypatch.delenv("GATEKEEPER_ACTOR")
    monkeypatch.setattr("getpass.getuser", lambda: "alice")
    assert log.append("check", subject="r")["actor"] == "alice"
    assert log.append("check", actor="bob", subject="r")["actor"] == "bob"


def test_non_ascii_data_is_kept_and_verifies(tmp_path: Path) -> None:
    log = AuditLog(tmp_path / "a.jsonl")
    log.append("policy_change", actor="Zoë", subject="policy", data={"title": "Änderung - 変更"})
    assert "Änderung - 変更" in (tmp_path / "a.jsonl").read_text(encoding="utf-8")
    assert log.verify().ok


@pytest.mark.parametrize(
    "field",
    [
        "api_key",
        "token",
        "password",
        "secret",
        "authorization",
        "access_token",
        "apiKey",
        "X-Api-Key",
        "client_secret",
        "private_key",
    ],
)
def test_secret_looking_keys_are_refused(tmp_path: Path, field: str) -> None:
    log = AuditLog(tmp_path / "a.jsonl")
    with pytest.raises(ValueError, match=re.escape(f"data.{field}")):
        log.append("check", actor="ci", subject="r", data={field: "x"})
    with pytest.raises(ValueError, match="looks like a secret"):
        log.append("check", actor="ci", subject="r", data={"endpoint": {"headers": {field: "x"}}})
    with pytest.raises(ValueError, match=re.escape(f"refs.{field}")):
        log.append("check", actor="ci", subject="r", refs={field: "a" * 64})
    assert not (tmp_path / "a.jsonl").exists()


def test_harmless_names_near_secret_words_pass(tmp_path: Path) -> None:
    log = AuditLog(tmp_path / "a.jsonl")
    record = log.append(
        "check",
        actor="ci",
        subject="r",
        data={"max_tokens": 256, "usage": {"prompt_tokens": 10}, "key_id": "ab" * 8, "keyword": "x"},
    )
    assert record["data"]["usage"] == {"prompt_tokens": 10}


def test_bad_arguments_are_refused(tmp_path: Path) -> None:
    log = AuditLog(tmp_path / "a.jsonl")
    with pytest.raises(ValueError, match="hex digest"):
        log.append("check", actor="ci", subject="r", refs={"policy": "policy.yaml"})
    with pytest.raises(ValueError, match="plain JSON"):
        log.append("check", actor="ci", subject="r", data={"when": datetime.now()})
    with pytest.raises(ValueError, match="plain JSON"):
        log.append("check", actor="ci", subject="r", data={"rate": float("nan")})
    with pytest.raises(ValueError, match="limit"):
        log.append("check", actor="ci", subject="r", data={"blob": "x" * 70_000})
    with pytest.raises(ValueError, match="subject"):
        log.append("check", actor="ci", subject="")
    with pytest.raises(ValueError, match="lower-case word"):
        log.append("Check things", actor="ci", subject="r")
    assert not (tmp_path / "a.jsonl").exists()


def test_append_refuses_to_chain_onto_a_truncated_line(log_path: Path) -> None:
    lines = read_lines(log_path)
    write_lines(log_path, [*lines[:-1], lines[-1][:40]])
    with pytest.raises(UsageError) as info:
        AuditLog(log_path).append("check", actor="ci", subject="r")
    assert str(info.value).startswith(f"{log_path}:{N}: ")
    assert "audit verify" in str(info.value)


# --------------------------------------------------------------------------- verification


def test_intact_log_verifies(log_path: Path) -> None:
    result = AuditLog(log_path).verify()
    assert (result.ok, result.count, result.first_bad, result.reason) == (True, N, None, "")
    assert result.head == AuditLog(log_path).records()[-1]["hash"]


def test_missing_or_empty_log_verifies_as_empty(tmp_path: Path) -> None:
    assert AuditLog(tmp_path / "none.jsonl").verify().count == 0
    (tmp_path / "empty.jsonl").write_text("")
    assert AuditLog(tmp_path / "empty.jsonl").verify().ok


@pytest.mark.parametrize("k", range(1, N + 1))
@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("data", {"decision": "REJECT"}),
        ("actor", "mallory"),
        ("time", "2020-01-01T00:00:00.000000Z"),
        ("refs", {}),
        ("seq", 99),
    ],
)
def test_an_edited_field_is_a_hash_mismatch_at_that_record(
    log_path: Path, k: int, field: str, value: object
) -> None:
    lines = read_lines(log_path)
    record = json.loads(lines[k - 1])
    record[field] = value
    lines[k - 1] = json.dumps(record, sort_keys=True, separators=(",", ":")) + "\n"
    write_lines(log_path, lines)

    result = AuditLog(log_path).verify()
    assert (result.ok, result.first_bad) == (False, k)
    assert "hash mismatch" in result.reason


@pytest.mark.parametrize("k", range(1, N))
def test_an_edit_with_a_recomputed_hash_breaks_the_next_link(log_path: Path, k: int) -> None:
    lines = read_lines(log_path)
    record = json.loads(lines[k - 1])
    record["data"]["decision"] = "REJECT"
    record["hash"] = record_digest(record)
    lines[k - 1] = json.dumps(record, sort_keys=True, separators=(",", ":")) + "\n"
    write_lines(log_path, lines)

    result = AuditLog(log_path).verify()
    assert (result.ok, result.first_bad) == (False, k + 1)
    assert "prev link broken" in result.reason
    assert "rewritten" in result.reason


@pytest.mark.parametrize("k", range(1, N))
def test_a_deleted_record_is_found_where_it_was(log_path: Path, k: int) -> None:
    lines = read_lines(log_path)
    del lines[k - 1]
    write_lines(log_path, lines)

    result = AuditLog(log_path).verify()
    assert (result.ok, result.count, result.first_bad) == (False, N - 1, k)
    assert f"seq {k} were deleted" in result.reason


def test_two_deleted_records_are_named(log_path: Path) -> None:
    lines = read_lines(log_path)
    del lines[2:4]
    write_lines(log_path, lines)
    result = AuditLog(log_path).verify()
    assert (result.first_bad, result.reason) == (
        3,
        "prev link broken: the record(s) with seq 3..4 were deleted before this line",
    )


def test_deleting_the_tail_needs_an_anchor(log_path: Path) -> None:
    head = AuditLog(log_path).verify().head
    assert head is not None
    write_lines(log_path, read_lines(log_path)[:-2])

    assert AuditLog(log_path).verify().ok  # a shorter chain is still a chain ...
    result = AuditLog(log_path).verify(anchor=head)  # ... but the head noted earlier is gone
    assert (result.ok, result.first_bad) == (False, N - 1)
    assert "anchor" in result.reason
    assert AuditLog(log_path).verify(anchor=AuditLog(log_path).records()[1]["hash"]).ok


@pytest.mark.parametrize("k", range(1, N))
def test_swapped_records_are_out_of_order_at_the_first(log_path: Path, k: int) -> None:
    lines = read_lines(log_path)
    lines[k - 1], lines[k] = lines[k], lines[k - 1]
    write_lines(log_path, lines)

    result = AuditLog(log_path).verify()
    assert (result.ok, result.first_bad) == (False, k)
    assert "out of order" in result.reason


def test_a_record_moved_far_back_is_found(log_path: Path) -> None:
    lines = read_lines(log_path)
    moved = lines.pop(4)  # record 5 ...
    lines.insert(1, moved)  # ... now at line 2
    write_lines(log_path, lines)
    result = AuditLog(log_path).verify()
    assert (result.first_bad, "out of order" in result.reason) == (2, True)


@pytest.mark.parametrize("cut", [1, 30, -2])
def test_a_truncated_final_line_is_invalid_json(log_path: Path, cut: int) -> None:
    lines = read_lines(log_path)
    lines[-1] = lines[-1][:cut]
    write_lines(log_path, lines)

    result = AuditLog(log_path).verify()
    assert (result.ok, result.first_bad) == (False, N)
    assert "not valid JSON" in result.reason
    assert "truncated" in result.reason


def test_a_missing_final_newline_alone_is_harmless(log_path: Path) -> None:
    log_path.write_text(log_path.read_text().rstrip("\n"))
    log = AuditLog(log_path)
    assert log.verify().ok
    log.append("check", actor="ci", subject="r")
    assert log.verify().count == N + 1


@pytest.mark.parametrize("k", range(1, N + 1))
def test_a_forged_inserted_record_is_found_at_its_line(log_path: Path, k: int) -> None:
    lines = read_lines(log_path)
    prev = GENESIS_PREV if k == 1 else json.loads(lines[k - 2])["hash"]
    lines.insert(k - 1, forged(k, prev))
    write_lines(log_path, lines)

    result = AuditLog(log_path).verify()
    assert (result.ok, result.count, result.first_bad) == (False, N + 1, k)
    assert "inserted" in result.reason


def test_an_inserted_record_linking_further_back_is_found(log_path: Path) -> None:
    lines = read_lines(log_path)
    lines.insert(3, forged(2, json.loads(lines[0])["hash"]))  # line 4 claims to follow line 1
    write_lines(log_path, lines)
    result = AuditLog(log_path).verify()
    assert (result.first_bad, "inserted" in result.reason) == (4, True)


@pytest.mark.parametrize(("copied", "at"), [(1, 3), (2, 4), (5, 6), (6, 7)])
def test_a_copied_record_is_found_at_its_line(log_path: Path, copied: int, at: int) -> None:
    lines = read_lines(log_path)
    lines.insert(at - 1, lines[copied - 1])
    write_lines(log_path, lines)
    result = AuditLog(log_path).verify()
    assert (result.first_bad, result.reason) == (
        at,
        f"duplicate of line {copied}: a copied record was inserted",
    )


@pytest.mark.parametrize("junk", ["\n", "not json\n", "[1, 2]\n", '{"seq": 3}\n'])
def test_a_junk_line_is_reported(log_path: Path, junk: str) -> None:
    lines = read_lines(log_path)
    lines.insert(2, junk)
    write_lines(log_path, lines)
    assert AuditLog(log_path).verify().first_bad == 3


# --------------------------------------------------------------------------- concurrency


APPEND_MANY = """
import sys
from gatekeeper.gate.audit import AuditLog
path, worker, count = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
log = AuditLog(path)
for i in range(count):
    log.append("check", actor=f"worker-{worker}", subject=f"run-{worker}-{i}", data={"i": i})
"""


def test_concurrent_appends_from_processes_form_one_chain(tmp_path: Path) -> None:
    path = tmp_path / "shared" / "audit.jsonl"
    workers = [
        subprocess.Popen([sys.executable, "-c", APPEND_MANY, str(path), str(w), "50"]) for w in range(4)
    ]
    assert [p.wait(timeout=120) for p in workers] == [0, 0, 0, 0]

    log = AuditLog(path)
    result = log.verify()
    assert (result.ok, result.count) == (True, 200), result.reason
    records = log.records()
    assert [r["seq"] for r in records] == list(range(1, 201))
    for w in range(4):
        mine = [r["data"]["i"] for r in records if r["actor"] == f"worker-{w}"]
        assert mine == list(range(50))


# --------------------------------------------------------------------------- history


def test_history_matches_subject_and_alias(tmp_path: Path) -> None:
    log = AuditLog(tmp_path / "a.jsonl")
    log.append("check", actor="ci", subject="run-1")
    log.append("check", actor="ci", subject="run-2")
    log.append("approve", actor="qa", subject="run-1", refs={"decision": "b" * 64})
    log.append("promote", actor="ci", subject="bot@production", data={"run_id": "run-1"})
    log.append("rollback", actor="ci", subject="bot", data={"alias": "bot@production"})

    assert [r["action"] for r in log.history("run-1")] == ["check", "approve", "promote"]
    assert [r["action"] for r in log.history("bot@production")] == ["promote", "rollback"]
    assert log.history("run-9") == []
    assert len(log.history()) == 5


# --------------------------------------------------------------------------- the command


def run_audit(argv: list[str], root: Path) -> int:
    command = AuditCommand()
    parser = argparse.ArgumentParser(prog="gatekeeper audit")
    command.configure(parser)
    session = types.SimpleNamespace(config=Config(root=root))
    return command.run(parser.parse_args(argv), session)


def test_audit_verify_command_reports_ok_and_broken(
    log_path: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run_audit(["verify", "--log", str(log_path)], tmp_path) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == f"audit trail OK: {N} records"
    assert out[1] == f"head: {AuditLog(log_path).records()[-1]['hash']}"

    lines = read_lines(log_path)
    lines[2] = lines[2].replace('"PROMOTE"', '"REJECT"')
    write_lines(log_path, lines)
    assert run_audit(["verify", "--log", str(log_path)], tmp_path) == 1
    assert capsys.readouterr().out.startswith("audit trail BROKEN at record 3 (line 3): hash mismatch")


def test_audit_verify_anchor_option(
    log_path: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    head = AuditLog(log_path).records()[-1]["hash"]
    write_lines(log_path, read_lines(log_path)[:-1])
    assert run_audit(["verify", "--log", str(log_path), "--anchor", head], tmp_path) == 1
    assert "anchor" in capsys.readouterr().out


def test_audit_commands_use_the_project_log_by_default(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    make_log(tmp_path / ".gatekeeper" / "audit.jsonl", 2)
    assert run_audit(["verify"], tmp_path) == 0
    assert capsys.readouterr().out.startswith("audit trail OK: 2 records")

    assert run_audit(["show", "run-2"], tmp_path) == 0
    table = capsys.readouterr().out.splitlines()
    assert table[0].split() == ["seq", "time", "actor", "action", "subject", "details"]
    assert len(table) == 2
    assert table[1].split()[0] == "2"
    assert "run-2" in table[1] and "decision=PROMOTE" in table[1] and "refs=policy" in table[1]

    assert run_audit(["show", "--json"], tmp_path) == 0
    shown = json.loads(capsys.readouterr().out)
    assert [r["subject"] for r in shown] == ["run-1", "run-2"]
    assert all(HEX64.match(r["hash"]) for r in shown)

    assert run_audit(["show", "nothing-here"], tmp_path) == 0
    assert capsys.readouterr().out.strip() == "no audit records about 'nothing-here'"


def test_audit_command_without_a_log_is_a_usage_error(tmp_path: Path) -> None:
    with pytest.raises(UsageError) as info:
        run_audit(["verify"], tmp_path)
    assert info.value.exit_code == 4
    assert info.value.file == str(tmp_path / ".gatekeeper" / "audit.jsonl")


def test_audit_command_needs_an_action(tmp_path: Path) -> None:
    with pytest.raises(SystemExit):
        run_audit([], tmp_path)
