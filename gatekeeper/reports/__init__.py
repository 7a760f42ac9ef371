"""Built-in reporters: JSON record, JUnit XML, Markdown summary, HTML report.

Each reads only the record (``kind`` ``run`` or ``check``) and, when given, the in-memory
attestations beside it, so ``gatekeeper report`` can re-render an old run. The package
is registered as the built-in plugin ``reporters`` (``-p no:reporters`` blocks it).
"""

from __future__ import annotations

from gatekeeper import hookimpl
from gatekeeper.kinds import Register, Reporter
from gatekeeper.reports.html import HtmlReporter
from gatekeeper.reports.json_report import JsonReporter
from gatekeeper.reports.junit import JUnitReporter
from gatekeeper.reports.markdown import GITHUB_COMMENT_LIMIT, MarkdownReporter

__all__ = ["GITHUB_COMMENT_LIMIT", "HtmlReporter", "JUnitReporter", "JsonReporter", "MarkdownReporter"]


@hookimpl
def gatekeeper_register_reporters(register: Register[Reporter]) -> None:
    register(JsonReporter)
    register(JUnitReporter)
    register(MarkdownReporter)
    register(HtmlReporter)
