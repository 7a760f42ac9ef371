"""``gatekeeper signals summarize``: feedback rates per model version and slice.

Acceptance, edit and rejection rates are shares of the signals that got feedback (verdict
other than ``none``); flag rates are shares of all signals. Every rate carries a Wilson
score interval (``scipy.stats.binomtest(...).proportion_ci(method="wilson")``) and the mean
rating a t interval. Counting happens in Polars on the lazy frame the source gives, so the
summary of ten million Parquet rows never builds a Python object per row.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from gatekeeper.kinds import Registries
from gatekeeper.signals.records import (
    VERDICTS,
    SignalFilter,
    frame_from_rows,
    frame_problem,
    iter_signals,
    normalize_frame,
    resolve_source,
    scan_signals,
)
from gatekeeper.types import UsageError

if TYPE_CHECKING:
    import polars as pl

SUMMARY_SCHEMA = "gatekeeper.signals.records-summary/1"
NEEDED = ("model", "model_version", "feedback_verdict")


@dataclass(frozen=True)
class Rate:
    """``k`` of ``n`` with a two-sided Wilson score interval at the summary's level."""

    k: int
    n: int
    rate: float | None
    low: float | None
    high: float | None


def wilson_rate(k: int, n: int, level: float = 0.95) -> Rate:
    if n == 0:
        return Rate(k, n, None, None, None)
    from scipy import stats

    ci = stats.binomtest(k, n).proportion_ci(level, method="wilson")
    return Rate(k, n, k / n, float(ci.low), float(ci.high))


def mean_interval(n: int, mean: float | None, std: float | None, level: float = 0.95) -> dict[str, Any]:
    """Mean with a t interval (``None`` bounds for fewer than two values)."""
    if n == 0 or mean is None:
        return {"n": n, "mean": None, "low": None, "high": None}
    if n < 2 or std is None or math.isnan(std):
        return {"n": n, "mean": mean, "low": None, "high": None}
    from scipy import stats

    half = float(stats.t.ppf(0.5 + level / 2, n - 1)) * std / math.sqrt(n)
    return {"n": n, "mean": mean, "low": mean - half, "high": mean + half}


def version_key(version: str) -> tuple[Any, ...]:
    """Natural order: "2" before "10"."""
    return tuple(int(p) if p.isdigit() else p for p in re.split(r"(\d+)", version))


# --------------------------------------------------------------------------- counting


def count_frames(frame: pl.LazyFrame, by: Sequence[str]) -> list[pl.DataFrame]:
    """[overall counts, overall flag counts, (per-slice counts, per-slice flag counts)].

    One pass over the source: a single ``group_by`` by version, slice values and verdict
    (counts, rating count, sum and sum of squares) and one over the flagged rows only;
    every coarser grouping is summed from those small frames.
    """
    import polars as pl

    columns = set(frame.collect_schema().names())
    keys = ["model", "model_version"]
    finest = [*keys, *by]
    rating = pl.col("feedback_rating") if "feedback_rating" in columns else pl.lit(None, dtype=pl.Float64)
    cells = frame.group_by([*finest, "feedback_verdict"]).agg(
        pl.len().alias("n"), rating.count().alias("rating_n"), rating.sum().alias("rating_sum"),
        (rating * rating).sum().alias("rating_sq"),
        ((rating < 1) | (rating > 5)).sum().alias("invalid_rating"),
        (pl.col("time").is_null().sum() if "time" in columns else pl.len()).alias("invalid_time"),
    )
    if "flags" in columns:
        flagged = (frame.filter(pl.col("flags").list.len() > 0).select([*finest, "flags"]).explode("flags")
                   .drop_nulls("flags").group_by([*finest, "flags"]).agg(pl.len().alias("k")))
    else:
        flagged = pl.LazyFrame(schema={**dict.fromkeys(finest, pl.String), "flags": pl.String, "k": pl.UInt32})
    cell_frame, flag_frame = pl.collect_all([cells, flagged])
    return roll_ups(cell_frame, flag_frame, by)


def roll_ups(cell_frame: pl.DataFrame, flag_frame: pl.DataFrame, by: Sequence[str]) -> list[pl.DataFrame]:
    """:func:`count_frames`' result from the finest cells and flag counts (what an engine's
    ``count_signals`` returns), so every engine's figures come from the same arithmetic."""
    import polars as pl

    keys = ["model", "model_version"]
    finest = [*keys, *by]
    out: list[pl.DataFrame] = []
    for group in ([keys, finest] if by else [keys]):
        out.append(_roll_up(cell_frame, group))
        out.append(flag_frame.group_by([*group, "flags"]).agg(pl.col("k").sum()))
    return out


def _roll_up(cells: pl.DataFrame, group: list[str]) -> pl.DataFrame:
    import polars as pl

    verdict, n = pl.col("feedback_verdict"), pl.col("n")
    rating_n, rating_sum, rating_sq = pl.col("rating_n").sum(), pl.col("rating_sum").sum(), pl.col("rating_sq").sum()
    return cells.group_by(group).agg(
        n.sum().alias("signals"),
        n.filter(verdict != "none").sum().alias("with_feedback"),
        *[n.filter(verdict == v).sum().alias(v) for v in VERDICTS if v != "none"],
        n.filter(~verdict.is_in(list(VERDICTS)) | verdict.is_null()).sum().alias("_invalid"),
        pl.col("invalid_rating").sum().alias("_invalid_rating"),
        pl.col("invalid_time").sum().alias("_invalid_time"),
        rating_n.alias("rating_n"),
        (rating_sum / rating_n).alias("rating_mean"),
        ((rating_sq - rating_sum * rating_sum / rating_n) / (rating_n - 1)).clip(0).sqrt().alias("rating_std"),
    )


def _count(location: str, registries: Registries, filters: SignalFilter, by: Sequence[str],
           engine: Any = None) -> list[Any]:
    """Count on the source's lazy frame; when that frame cannot be read or holds invalid
    values, re-read row by row so the error names the file, row and field."""
    import polars as pl

    try:
        if engine is not None:
            cells, flagged = engine.count_signals(location, filters, list(by))
            frames = roll_ups(cells, flagged, list(by))
        else:
            frame = scan_signals(location, registries, filters)
            _check_columns(frame, [*by, *filters.where], location, list(filters.where))
            # The whole source, unfiltered: a bad or duplicate row is refused as every
            # other command refuses it (re-read row by row below for its file:line).
            source, target = resolve_source(location, registries)
            native = source.scan(target, SignalFilter())  # None: rows already validated
            problem = frame_problem(normalize_frame(native)) if native is not None else None
            if problem:
                return count_frames(_row_by_row(location, registries, filters, problem), by)
            frames = count_frames(frame, by)
    except UsageError:
        raise
    except (pl.exceptions.PolarsError, OSError, ValueError) as exc:
        problem = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
        return count_frames(_row_by_row(location, registries, filters, problem), by)
    overall = frames[0]
    invalid = [c for c in ("_invalid", "_invalid_rating", "_invalid_time") if overall[c].sum()]
    if invalid or overall["model"].null_count() or overall["model_version"].null_count():
        return count_frames(_row_by_row(location, registries, filters, "invalid feedback values"), by)
    return frames


def _row_by_row(location: str, registries: Registries, filters: SignalFilter, problem: str) -> pl.LazyFrame:
    # Validating every row raises the located UsageError for the first bad one.
    for _ in iter_signals(location, registries, SignalFilter()):
        pass
    source, target = resolve_source(location, registries)
    try:
        from gatekeeper.signals.records import normalize_frame

        frame = normalize_frame(frame_from_rows(source.read(target, filters)))
    except UsageError:
        raise
    except Exception:
        raise UsageError(f"cannot summarize the signals: {problem}", file=location) from None
    predicate = filters.polars_predicate(set(frame.collect_schema().names()))
    return frame if predicate is None else frame.filter(predicate)


def _check_columns(frame: pl.LazyFrame, by: Sequence[str], location: str, where: Sequence[str] = ()) -> None:
    names = frame.collect_schema().names()
    for column in NEEDED:
        if column not in names:
            raise UsageError(f"the signals have no {column!r} column", file=location, field=column)
    for column in by:
        if column not in names:
            known = ", ".join(n for n in names if n not in ("messages", "context", "answer")) or "none"
            flag = "--by" if column not in where else "--where"
            raise UsageError(f"no field or attribute {column!r} in the signals (known: {known})", field=flag)


# --------------------------------------------------------------------------- summary


def summarize(
    location: str,
    registries: Registries,
    filters: SignalFilter | None = None,
    *,
    by: Sequence[str] = (),
    level: float = 0.95,
    baseline_version: str | None = None,
    engine: Any = None,
) -> dict[str, Any]:
    """The summary record (``--json`` prints it): one group per model version, and per
    version and slice value when ``by`` names slice fields. With ``baseline_version``, every
    other version's group also gets ``vs_baseline``: the difference of each rate from the
    baseline version's group with the same model and slice, with Newcombe's hybrid score
    interval (independent samples: the versions answered different traffic)."""
    filters = filters or SignalFilter()
    by = list(dict.fromkeys(by))
    frames = _count(location, registries, filters, by, engine)
    groups = _groups(frames[0], frames[1], [], level)
    if by:
        groups += _groups(frames[2], frames[3], by, level)
    groups.sort(key=lambda g: (g["model"], version_key(g["model_version"]), len(g["slice"]),
                               [str(v) for v in g["slice"].values()]))
    if baseline_version is not None:
        _compare_to(groups, str(baseline_version), level)
    return {
        "schema": SUMMARY_SCHEMA,
        "location": location,
        "filters": {
            "since": filters.since.isoformat() if filters.since else None,
            "until": filters.until.isoformat() if filters.until else None,
            "model": filters.model,
            "model_version": filters.model_version,
            "where": {k: list(v) for k, v in filters.where.items()},
        },
        "by": by,
        "confidence_level": level,
        "interval": "wilson",
        "baseline_version": baseline_version,
        "groups": groups,
    }


RATES = ("acceptance_rate", "edit_rate", "rejection_rate")


def _compare_to(groups: list[dict[str, Any]], baseline: str, level: float) -> None:
    from gatekeeper.gate.stats import newcombe_independent_ci

    def key(g: Mapping[str, Any]) -> tuple[Any, ...]:
        return g["model"], tuple(sorted((k, str(v)) for k, v in g["slice"].items()))

    bases = {key(g): g for g in groups if g["model_version"] == baseline}
    if not bases:
        raise UsageError(f"no signals of version {baseline!r} to compare with", field="--baseline-version")
    for group in groups:
        base = bases.get(key(group))
        if base is None or group is base:
            continue
        deltas: dict[str, Any] = {}
        pairs = [(r, group[r], base[r]) for r in RATES]
        pairs += [(f"flag_rates.{f}", rate, base["flag_rates"].get(f, {"k": 0, "n": base["signals"]}))
                  for f, rate in group["flag_rates"].items()]
        for name, new, old in pairs:
            if not new["n"] or not old["n"]:
                deltas[name] = {"delta": None, "low": None, "high": None}
                continue
            low, high = newcombe_independent_ci(new["k"], new["n"], old["k"], old["n"], alpha=1 - level, sides="two")
            deltas[name] = {"delta": new["k"] / new["n"] - old["k"] / old["n"], "low": low, "high": high}
        group["vs_baseline"] = {"version": baseline, **deltas}


def _groups(counts: pl.DataFrame, flags: pl.DataFrame, by: list[str], level: float) -> list[dict[str, Any]]:
    keys = ["model", "model_version", *by]
    flag_counts: dict[tuple[Any, ...], dict[str, int]] = {}
    for row in flags.iter_rows(named=True):
        flag_counts.setdefault(tuple(row[k] for k in keys), {})[row["flags"]] = int(row["k"])
    all_flags = sorted({f for counts_ in flag_counts.values() for f in counts_})
    out = []
    for row in counts.iter_rows(named=True):
        n, with_feedback = int(row["signals"]), int(row["with_feedback"])
        found = flag_counts.get(tuple(row[k] for k in keys), {})
        out.append({
            "model": row["model"],
            "model_version": str(row["model_version"]),
            "slice": {k: row[k] for k in by},
            "signals": n,
            "with_feedback": with_feedback,
            "feedback_rate": asdict(wilson_rate(with_feedback, n, level)),
            "acceptance_rate": asdict(wilson_rate(int(row["accepted"]), with_feedback, level)),
            "edit_rate": asdict(wilson_rate(int(row["edited"]), with_feedback, level)),
            "rejection_rate": asdict(wilson_rate(int(row["rejected"]), with_feedback, level)),
            "rating": mean_interval(int(row.get("rating_n") or 0), row.get("rating_mean"), row.get("rating_std"),
                                    level),
            "flag_rates": {f: asdict(wilson_rate(found.get(f, 0), n, level)) for f in all_flags},
        })
    return out


# --------------------------------------------------------------------------- table


def _pct(rate: Mapping[str, Any]) -> str:
    if rate["rate"] is None:
        return "-"
    return f"{rate['rate'] * 100:5.1f}% [{rate['low'] * 100:4.1f}, {rate['high'] * 100:4.1f}]"


def _points(delta: Mapping[str, Any] | None) -> str:
    """A difference of rates in percentage points with its interval."""
    if not delta or delta["delta"] is None:
        return "-"
    return f"{delta['delta'] * 100:+5.1f} [{delta['low'] * 100:+.1f}, {delta['high'] * 100:+.1f}]"


def format_table(summary: Mapping[str, Any]) -> list[str]:
    """The summary as text lines, one block per model version."""
    lines: list[str] = []
    level = round(summary["confidence_level"] * 100)
    flags = sorted({f for g in summary["groups"] for f in g["flag_rates"]})
    header = f"  {'slice':<26} {'fb n':>6} {'accepted':>22} {'edited':>22} {'rejected':>22} {'rating':>12}"
    header += "".join(f" {f:>22}" for f in flags)
    current: tuple[str, str] | None = None
    for group in summary["groups"]:
        ident = (group["model"], group["model_version"])
        if ident != current:
            current = ident
            if lines:
                lines.append("")
            share = group["feedback_rate"]["rate"]
            lines.append(f"{group['model']} version {group['model_version']}: {group['signals']} signals, "
                         f"{group['with_feedback']} with feedback"
                         + (f" ({share * 100:.1f}%)" if share is not None else ""))
            lines.append(header)
        label = ", ".join(f"{k}={v}" for k, v in group["slice"].items()) or "(all)"
        rating = group["rating"]
        shown = "-" if rating["mean"] is None else f"{rating['mean']:.2f} (n={rating['n']})"
        row = (f"  {label[:26]:<26} {group['with_feedback']:>6} {_pct(group['acceptance_rate']):>22} "
               f"{_pct(group['edit_rate']):>22} {_pct(group['rejection_rate']):>22} {shown:>12}")
        row += "".join(f" {_pct(group['flag_rates'][f]) if f in group['flag_rates'] else '-':>22}" for f in flags)
        lines.append(row)
        if "vs_baseline" in group:
            vs = group["vs_baseline"]
            row = f"  {'  vs version ' + vs['version']:<26} {'':>6} " + " ".join(
                f"{_points(vs[r]):>22}" for r in RATES) + f" {'':>12}"
            row += "".join(f" {_points(vs.get(f'flag_rates.{f}')):>22}" for f in flags)
            lines.append(row)
    if not summary["groups"]:
        lines.append("no signals match")
    else:
        lines.append("")
        lines.append(f"rates: accepted/edited/rejected of the signals with feedback, flags of all signals; "
                     f"[{level}% Wilson interval]")
        if summary.get("baseline_version") is not None:
            lines.append(f"vs version {summary['baseline_version']}: difference in percentage points "
                         f"[{level}% Newcombe interval, independent samples]")
    return lines
