"""Signed approvals: keys, signing, checking, and the keys/approve commands."""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import stat
import types
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from gatekeeper.builtin.commands import audit as audit_commands
from gatekeeper.builtin.commands.audit import ApproveCommand, KeysCommand
from gatekeeper.gate.approvals import (
    RequiredApproval,
    check_approvals,
    new_keypair,
    promotable,
    record_hash,
    sign,
)
from gatekeeper.gate.audit import AuditLog
from gatekeeper.host.registry import Register, make_registries
from gatekeeper.kinds import Command
from gatekeeper.types import Config, UsageError

DECISION = {
    "schema_version": 1,
    "run_id": "run-7",
    "decision": "HOLD",
    "reasons": [{"clause": "update_procedures.approvals", "text": "needs qa-lead approval"}],
    "metrics": {"accuracy": {"delta": 0.02, "ci": [0.001, 0.04], "verdict": "PASS"}},
}


@pytest.fixture
def run_dir(tmp_path: Path) -> Path:
    run = tmp_path / "out"
    run.mkdir()
    (run / "decision.json").write_text(json.dumps(DECISION, indent=2))
    return run


@pytest.fixture
def alice(tmp_path: Path) -> tuple[Path, Path]:
    return new_keypair(tmp_path / "keys" / "alice", signer="Alice Auditor")


def qa_approval(*pub: Path) -> list[RequiredApproval]:
    return [RequiredApproval(role="qa-lead", meaning="approval", public_keys=list(pub))]


def approvals_lines(run: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (run / "approvals.jsonl").read_text().splitlines()]


def write_approvals(run: Path, approvals: list[dict[str, Any]]) -> None:
    (run / "approvals.jsonl").write_text("".join(json.dumps(a) + "\n" for a in approvals))


# --------------------------------------------------------------------------- keys


def test_new_keypair_writes_pem_files_with_a_private_mode(alice: tuple[Path, Path]) -> None:
    key_path, pub_path = alice
    assert (key_path.name, pub_path.name) == ("alice.key", "alice.pub")
    assert stat.S_IMODE(key_path.stat().st_mode) == 0o600

    private = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
    public = serialization.load_pem_public_key(pub_path.read_bytes())
    assert isinstance(private, Ed25519PrivateKey) and isinstance(public, Ed25519PublicKey)
    raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    assert f"# key id: {hashlib.sha256(raw).hexdigest()[:16]}" in pub_path.read_text()
    assert "# signer: Alice Auditor" in pub_path.read_text()
    assert "PRIVATE" not in pub_path.read_text()


def test_new_keypair_never_overwrites(alice: tuple[Path, Path], tmp_path: Path) -> None:
    before = alice[0].read_bytes()
    with pytest.raises(UsageError, match="already exists") as info:
        new_keypair(tmp_path / "keys" / "alice", signer="Mallory")
    assert info.value.file == str(alice[0])
    assert alice[0].read_bytes() == before


# --------------------------------------------------------------------------- the record hash


def test_record_hash_ignores_approvals_and_covers_everything_else() -> None:
    base = record_hash(DECISION)
    body = json.dumps(DECISION, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    assert base == hashlib.sha256(body.encode()).hexdigest()
    assert record_hash({**DECISION, "approvals": [{"x": 1}], "record_hash": "abc"}) == base
    assert record_hash({**DECISION, "decision": "PROMOTE"}) != base
    assert record_hash({**DECISION, "metrics": {"accuracy": {"delta": 0.021}}}) != base


# --------------------------------------------------------------------------- sign and check


def test_sign_and_check_round_trip(run_dir: Path, alice: tuple[Path, Path]) -> None:
    key_path, pub_path = alice
    assert promotable(run_dir, qa_approval(pub_path)) == (
        False,
        "HOLD: missing approval(s) qa-lead (approval)",
    )

    approval = sign(run_dir, key_file=key_path, signer="Alice Auditor", meaning="approval", role="qa-lead")

    assert approvals_lines(run_dir) == [approval]
    assert approval["record_hash"] == record_hash(DECISION)
    assert approval["time"].endswith("Z")
    assert approval["public_key"] == pub_path.read_text().split("\n", 3)[3]
    # The signature covers exactly the canonical JSON of the five signed fields.
    public = serialization.load_pem_public_key(approval["public_key"].encode())
    assert isinstance(public, Ed25519PublicKey)
    payload = {k: approval[k] for k in ("record_hash", "signer", "role", "meaning", "time")}
    public.verify(
        base64.b64decode(approval["signature"]),
        json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode(),
    )

    status = check_approvals(run_dir, qa_approval(pub_path))
    assert (status.satisfied, status.valid, status.problems, status.missing) == (True, [approval], [], [])
    assert promotable(run_dir, qa_approval(pub_path))[0] is True


def test_every_required_role_must_sign(run_dir: Path, alice: tuple[Path, Path], tmp_path: Path) -> None:
    bob_key, bob_pub = new_keypair(tmp_path / "bob", signer="Bob")
    required = [
        RequiredApproval("qa-lead", "approval", [alice[1]]),
        RequiredApproval("clinical-safety", "responsibility", [bob_pub]),
    ]
    sign(run_dir, key_file=alice[0], signer="Alice Auditor", meaning="approval", role="qa-lead")
    status = check_approvals(run_dir, required)
    assert (status.satisfied, status.missing) == (False, ["clinical-safety (responsibility)"])

    sign(run_dir, key_file=bob_key, signer="Bob", meaning="responsibility", role="clinical-safety")
    status = check_approvals(run_dir, required)
    assert (status.satisfied, len(status.valid), status.problems) == (True, 2, [])


def test_an_edited_decision_voids_the_signature(run_dir: Path, alice: tuple[Path, Path]) -> None:
    sign(run_dir, key_file=alice[0], signer="Alice Auditor", meaning="approval", role="qa-lead")
    edited = {**DECISION, "decision": "PROMOTE", "reasons": []}
    (run_dir / "decision.json").write_text(json.dumps(edited))

    status = check_approvals(run_dir, qa_approval(alice[1]))
    assert (status.satisfied, status.valid, status.missing) == (False, [], ["qa-lead (approval)"])
    assert len(status.problems) == 1
    assert status.problems[0].startswith("approvals.jsonl:1: 'Alice Auditor' (qa-lead, approval): ")
    assert "signs a different decision record" in status.problems[0]
    assert "changed after signing" in status.problems[0]


def test_adding_approvals_to_the_decision_keeps_the_signature(
    run_dir: Path, alice: tuple[Path, Path]
) -> None:
    approval = sign(run_dir, key_file=alice[0], signer="Alice Auditor", meaning="approval", role="qa-lead")
    embedded = {**DECISION, "approvals": [approval], "record_hash": approval["record_hash"]}
    (run_dir / "decision.json").write_text(json.dumps(embedded))
    assert check_approvals(run_dir, qa_approval(alice[1])).satisfied


def test_a_key_the_policy_does_not_list_is_refused(
    run_dir: Path, alice: tuple[Path, Path], tmp_path: Path
) -> None:
    mallory_key, _ = new_keypair(tmp_path / "mallory", signer="Alice Auditor")
    approval = sign(run_dir, key_file=mallory_key, signer="Alice Auditor", meaning="approval", role="qa-lead")

    status = check_approvals(run_dir, qa_approval(alice[1]))
    assert status.satisfied is False
    assert status.problems == [
        f"approvals.jsonl:1: 'Alice Auditor' (qa-lead, approval): key {approval['key_id']} is not one of "
        "the keys allowed to sign for role 'qa-lead'"
    ]


@pytest.mark.parametrize(
    ("field", "value"),
    [("signature", None), ("meaning", "approval"), ("signer", "Bob"), ("role", "admin"), ("time", "2030")],
)
def test_a_tampered_approval_line_does_not_verify(
    run_dir: Path, alice: tuple[Path, Path], field: str, value: str | None
) -> None:
    sign(run_dir, key_file=alice[0], signer="Alice Auditor", meaning="review", role="qa-lead")
    [approval] = approvals_lines(run_dir)
    if field == "signature":
        raw = bytearray(base64.b64decode(approval["signature"]))
        raw[0] ^= 1
        approval["signature"] = base64.b64encode(bytes(raw)).decode()
    else:
        approval[field] = value
    write_approvals(run_dir, [approval])

    required = [RequiredApproval("qa-lead", "review", [alice[1]])]
    status = check_approvals(run_dir, required)
    assert status.satisfied is False
    assert len(status.problems) == 1
    assert "the signature does not verify: the line was altered after it was signed" in status.problems[0]


def test_a_swapped_public_key_in_the_line_is_refused(
    run_dir: Path, alice: tuple[Path, Path], tmp_path: Path
) -> None:
    sign(run_dir, key_file=alice[0], signer="Alice Auditor", meaning="approval", role="qa-lead")
    [approval] = approvals_lines(run_dir)
    _, other_pub = new_keypair(tmp_path / "other", signer="Other")
    approval["public_key"] = other_pub.read_text().split("\n", 3)[3]
    write_approvals(run_dir, [approval])
    status = check_approvals(run_dir, qa_approval(alice[1], other_pub))
    assert not status.satisfied
    assert "does not match its public key" in status.problems[0]


def test_a_wrong_meaning_is_refused(run_dir: Path, alice: tuple[Path, Path]) -> None:
    sign(run_dir, key_file=alice[0], signer="Alice Auditor", meaning="review", role="qa-lead")
    status = check_approvals(run_dir, qa_approval(alice[1]))
    assert (status.satisfied, status.missing) == (False, ["qa-lead (approval)"])
    assert status.problems[0].endswith("its meaning is 'review' but role 'qa-lead' requires 'approval'")


def test_a_role_the_policy_does_not_require_does_not_count(run_dir: Path, alice: tuple[Path, Path]) -> None:
    sign(run_dir, key_file=alice[0], signer="Alice Auditor", meaning="approval", role="intern")
    status = check_approvals(run_dir, qa_approval(alice[1]))
    assert not status.satisfied
    assert status.problems[0].endswith("role 'intern' is not one the policy requires (required: qa-lead)")


def test_the_signer_name_is_bound_to_the_key(run_dir: Path, alice: tuple[Path, Path], tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="this key belongs to 'Alice Auditor', not 'Bob'"):
        sign(run_dir, key_file=alice[0], signer="Bob", meaning="approval", role="qa-lead")
    # A bare PEM file names nobody, so sign() cannot check; the policy's .pub file can.
    bare = tmp_path / "bare.key"
    bare.write_text(alice[0].read_text().split("\n", 3)[3])
    sign(run_dir, key_file=bare, signer="Bob", meaning="approval", role="qa-lead")
    status = check_approvals(run_dir, qa_approval(alice[1]))
    assert not status.satisfied
    assert status.problems[0].endswith("signed as 'Bob' with the key of 'Alice Auditor'")


def test_bad_lines_in_approvals_are_reported_and_good_ones_still_count(
    run_dir: Path, alice: tuple[Path, Path]
) -> None:
    sign(run_dir, key_file=alice[0], signer="Alice Auditor", meaning="approval", role="qa-lead")
    with (run_dir / "approvals.jsonl").open("a") as handle:
        handle.write('{"signer": "x"}\n{broken\n')
    status = check_approvals(run_dir, qa_approval(alice[1]))
    assert status.satisfied
    assert status.problems[0].startswith("approvals.jsonl:2: missing field(s) record_hash")
    assert status.problems[1].startswith("approvals.jsonl:3: not valid JSON")


@pytest.mark.parametrize("decision", ["REJECT", "INCONCLUSIVE", "ROLLBACK"])
def test_only_promote_or_an_approved_hold_is_promotable(
    run_dir: Path, alice: tuple[Path, Path], decision: str
) -> None:
    (run_dir / "decision.json").write_text(json.dumps({**DECISION, "decision": decision}))
    sign(run_dir, key_file=alice[0], signer="Alice Auditor", meaning="approval", role="qa-lead")
    allowed, why = promotable(run_dir, qa_approval(alice[1]))
    assert (allowed, why.split(";")[0]) == (False, f"the decision is {decision}")
    (run_dir / "decision.json").write_text(json.dumps({**DECISION, "decision": "PROMOTE"}))
    assert promotable(run_dir, [])[0] is True


# --------------------------------------------------------------------------- errors a user can act on


def test_a_missing_key_file_is_named(run_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(UsageError) as info:
        sign(run_dir, key_file=tmp_path / "nope.key", signer="A", meaning="approval", role=None)
    assert (info.value.exit_code, str(info.value)) == (
        4,
        f"{tmp_path / 'nope.key'}: private key file not found",
    )


@pytest.mark.parametrize(
    "content", ["not a key", "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n"]
)
def test_a_malformed_key_is_named(run_dir: Path, tmp_path: Path, content: str) -> None:
    bad = tmp_path / "bad.key"
    bad.write_text(content)
    with pytest.raises(UsageError, match="not an unencrypted PEM private key") as info:
        sign(run_dir, key_file=bad, signer="A", meaning="approval", role=None)
    assert info.value.file == str(bad)


def test_a_malformed_public_key_in_the_policy_is_named(run_dir: Path, tmp_path: Path) -> None:
    bad = tmp_path / "bad.pub"
    bad.write_text("ssh-ed25519 AAAA")
    with pytest.raises(UsageError, match="not a PEM public key") as info:
        check_approvals(run_dir, qa_approval(bad))
    assert info.value.file == str(bad)
    with pytest.raises(UsageError, match="public key file not found"):
        check_approvals(run_dir, qa_approval(tmp_path / "gone.pub"))


def test_a_non_ed25519_key_is_refused(run_dir: Path, tmp_path: Path) -> None:
    from cryptography.hazmat.primitives.asymmetric import ec

    key = ec.generate_private_key(ec.SECP256R1())
    path = tmp_path / "ec.key"
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    with pytest.raises(UsageError, match="is not an Ed25519 key"):
        sign(run_dir, key_file=path, signer="A", meaning="approval", role=None)


def test_a_run_without_a_decision_is_named(tmp_path: Path, alice: tuple[Path, Path]) -> None:
    with pytest.raises(UsageError) as info:
        sign(tmp_path, key_file=alice[0], signer="Alice Auditor", meaning="approval", role=None)
    assert info.value.file == str(tmp_path / "decision.json")
    (tmp_path / "decision.json").write_text("{\n  oops")
    with pytest.raises(UsageError, match="not valid JSON") as info:
        check_approvals(tmp_path, [])
    assert (info.value.file, info.value.line) == (str(tmp_path / "decision.json"), 2)


def test_a_bad_meaning_is_refused(run_dir: Path, alice: tuple[Path, Path]) -> None:
    with pytest.raises(UsageError, match="not one of approval, review, responsibility"):
        sign(run_dir, key_file=alice[0], signer="Alice Auditor", meaning="blessing", role=None)  # type: ignore[arg-type]


# --------------------------------------------------------------------------- the commands


def run_command(command: Command, argv: list[str], root: Path) -> int:
    parser = argparse.ArgumentParser(prog=f"gatekeeper {command.name}")
    command.configure(parser)
    return command.run(parser.parse_args(argv), types.SimpleNamespace(config=Config(root=root)))


def test_keys_new_and_show(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run_command(KeysCommand(), ["new", str(tmp_path / "k" / "qa"), "--signer", "Quinn"], tmp_path) == 0
    out = capsys.readouterr().out
    assert (tmp_path / "k" / "qa.key").is_file() and (tmp_path / "k" / "qa.pub").is_file()
    key_id = out.split()[2]
    assert out.splitlines()[0] == f"key id {key_id} for Quinn"

    assert run_command(KeysCommand(), ["show", str(tmp_path / "k" / "qa.pub")], tmp_path) == 0
    assert capsys.readouterr().out.strip() == f"key id {key_id} signer Quinn"


def test_approve_signs_and_writes_an_audit_record(
    run_dir: Path, alice: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = [
        str(run_dir),
        "--key",
        str(alice[0]),
        "--signer",
        "Alice Auditor",
        "--meaning",
        "approval",
        "--role",
        "qa-lead",
    ]
    assert run_command(ApproveCommand(), argv, tmp_path) == 0

    out = capsys.readouterr().out.splitlines()
    assert out[0] == "signed run-7 (HOLD) as Alice Auditor, role qa-lead, meaning approval"
    assert out[1] == f"decision record {record_hash(DECISION)}"
    assert check_approvals(run_dir, qa_approval(alice[1])).satisfied

    log = AuditLog(tmp_path / ".gatekeeper" / "audit.jsonl")
    [entry] = log.records()
    assert (entry["action"], entry["subject"], entry["refs"]) == (
        "approve",
        "run-7",
        {"decision": record_hash(DECISION)},
    )
    assert entry["data"]["signer"] == "Alice Auditor" and entry["data"]["meaning"] == "approval"
    assert log.verify().ok


def test_approve_with_a_missing_key_is_a_usage_error(run_dir: Path, tmp_path: Path) -> None:
    argv = [str(run_dir), "--key", str(tmp_path / "nope.key"), "--signer", "A", "--meaning", "review"]
    with pytest.raises(UsageError) as info:
        run_command(ApproveCommand(), argv, tmp_path)
    assert info.value.file == str(tmp_path / "nope.key")
    assert not (run_dir / "approvals.jsonl").exists()
    assert not (tmp_path / ".gatekeeper" / "audit.jsonl").exists()


def test_approve_refuses_an_unknown_meaning(run_dir: Path, alice: tuple[Path, Path], tmp_path: Path) -> None:
    argv = [str(run_dir), "--key", str(alice[0]), "--signer", "A", "--meaning", "blessing"]
    with pytest.raises(SystemExit):
        run_command(ApproveCommand(), argv, tmp_path)


def test_the_plugin_registers_its_commands() -> None:
    registry = make_registries()["commands"]
    audit_commands.gatekeeper_register_commands(register=Register(registry, "audit_commands"))
    assert registry.names() == ["approve", "audit", "keys"]


# --------------------------------------------------------------------------- the auditor's snippet


def auditor_snippet() -> dict[str, Any]:
    """Run the "Verifying by hand" code of docs/audit.md and return its functions."""
    doc = (Path(__file__).parents[1] / "docs" / "audit.md").read_text(encoding="utf-8")
    section = doc.split("## Verifying by hand", 1)[1]
    code = section.split("```python\n", 1)[1].split("```", 1)[0]
    namespace: dict[str, Any] = {}
    exec(compile(code, "docs/audit.md", "exec"), namespace)
    return namespace


def test_the_documented_snippet_verifies_what_gatekeeper_wrote(
    run_dir: Path, alice: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    snippet = auditor_snippet()
    argv = [str(run_dir), "--key", str(alice[0]), "--signer", "Alice Auditor", "--meaning", "approval"]
    run_command(ApproveCommand(), [*argv, "--role", "qa-lead"], tmp_path)
    _, stranger_pub = new_keypair(tmp_path / "stranger", signer="Stranger")
    log_path = tmp_path / ".gatekeeper" / "audit.jsonl"
    AuditLog(log_path).append("promote", actor="ci", subject="bot@prod", data={"run_id": "run-7"})

    count, head = snippet["verify_chain"](log_path)
    assert (count, head) == (2, AuditLog(log_path).verify().head)
    [approval] = snippet["verify_approvals"](run_dir, [alice[1]])
    assert (approval["signer"], approval["role"], approval["meaning"]) == (
        "Alice Auditor",
        "qa-lead",
        "approval",
    )
    assert snippet["verify_approvals"](run_dir, [stranger_pub]) == []

    lines = log_path.read_text().splitlines(keepends=True)
    log_path.write_text(lines[1])
    with pytest.raises(AssertionError, match="line 1: deleted, inserted or reordered"):
        snippet["verify_chain"](log_path)
    (run_dir / "decision.json").write_text(json.dumps({**DECISION, "decision": "PROMOTE"}))
    assert snippet["verify_approvals"](run_dir, [alice[1]]) == []
