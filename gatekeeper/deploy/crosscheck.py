"""``registry check`` against the audit trail: two records of one history must tell the same story.

The registry (``registry.json``) says which version an alias serves; the audit trail says who
promoted what under which decision. Someone who edits one without the other — swaps a
version's model spec, adds an alias change, deletes a promotion — leaves a disagreement this
module lists. Each registry history event also anchors the audit head of its time
(``audit_head``): a trail whose tail was cut, or that was rewritten, no longer holds it.
"""

from __future__ import annotations

from typing import Any

AUDITED_ALIAS_ACTIONS = ("promote", "register", "rollback")


def audit_problems(state: dict[str, Any], records: list[dict[str, Any]]) -> list[str]:
    """Disagreements between a local registry document and the (verified) audit records."""
    problems: list[str] = []
    hashes = {r["hash"]: r["seq"] for r in records}
    for event in state.get("history", []):
        head = event.get("audit_head")
        if isinstance(head, dict) and head.get("hash") and hashes.get(head["hash"]) != head.get("seq"):
            problems.append(f"history event {event.get('seq')} anchors audit record {head.get('seq')} "
                            f"({str(head['hash'])[:12]}…), which is not in the audit trail: it was truncated "
                            "or rewritten")
    problems += _version_problems(state, records)
    problems += _alias_problems(state, records)
    return problems


def _version_problems(state: dict[str, Any], records: list[dict[str, Any]]) -> list[str]:
    registered = {(r["data"].get("model"), str(r["data"].get("version"))): r["data"].get("spec")
                  for r in records if r["action"] == "register"}
    checked = {r["refs"].get("decision"): r["data"].get("candidate") for r in records if r["action"] == "check"}
    problems = []
    for model, entry in state.get("models", {}).items():
        for version, info in entry.get("versions", {}).items():
            decision = (info.get("provenance") or {}).get("decision")
            if (model, version) in registered:
                expected, source = registered[(model, version)], "its register record"
            elif decision in checked:
                expected, source = checked[decision], "the check that promoted it"
            else:
                problems.append(f"{model} version {version}: no audit record (register or check) vouches for it")
                continue
            if expected is not None and info.get("spec") != expected:
                problems.append(f"{model} version {version}: spec {info.get('spec')!r} in registry.json, but "
                                f"{source} recorded {expected!r}: the spec was swapped")
    return problems


def _alias_problems(state: dict[str, Any], records: list[dict[str, Any]]) -> list[str]:
    problems = []
    alias_events = {(e.get("model"), e.get("alias"), str(e.get("version")))
                    for e in state.get("history", []) if e.get("action") == "alias"}
    for r in records:
        data = r["data"]
        if r["action"] == "promote" and data.get("target") in (None, "local"):
            key = (data.get("model"), data.get("alias"), str(data.get("version")))
            if key not in alias_events:
                problems.append(f"the audit trail records promoting {key[0]} version {key[2]} to @{key[1]} "
                                f"(record {r['seq']}), but the registry has no such change")
    audited = {(r["data"].get("model"), str(r["data"].get(field)))
               for r in records if r["action"] in AUDITED_ALIAS_ACTIONS for field in ("version", "to")}
    for event in state.get("history", []):
        if event.get("action") == "alias" and (event.get("model"), str(event.get("version"))) not in audited:
            problems.append(f"registry history event {event.get('seq')}: {event.get('model')} @{event.get('alias')} "
                            f"-> version {event.get('version')} has no promote/register/rollback audit record")
    return problems
