"""The NLTK data azure's BLEU, GLEU and METEOR (and deepeval's BLEU) need, built offline.

NLTK downloads its data at run time from a host that is not a package registry: offline
that fails, and it is a connection the plugins promise not to make. azure checks for four
resources before tokenizing (and downloads any that are missing): ``corpora/wordnet.zip``,
``misc/perluniprops.zip``, ``tokenizers/punkt.zip`` and ``tokenizers/punkt_tab.zip``.
``gatekeeper-nltk-data --out DIR`` builds all four without NLTK's downloader:

* **WordNet 3.0** from Debian's ``wordnet-base`` (the database) and ``wordnet-sense-index``
  (``index.sense``), fetched with ``apt-get download`` and unpacked with ``dpkg -x`` (no root
  and no change to the system), laid out as NLTK's ``wordnet`` corpus.
* **English Punkt parameters** (``punkt_tab/english``): trained here with NLTK's own
  ``PunktTrainer`` on the WordNet glosses (117,000 English definitions and examples), since
  no registry package ships NLTK's pre-trained ones. ``punkt.zip`` holds the same
  parameters: azure only checks that it exists (NLTK 3.9+ no longer loads punkt pickles).
* **perluniprops** (Unicode character classes for NLTK's NIST tokenizer, which azure uses for
  non-ASCII text): generated from Python's ``unicodedata``.

The result is a directory to point ``NLTK_DATA`` at (``make nltk-data`` builds
``.gatekeeper/nltk_data``). :func:`require` checks it before a metric runs.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
import unicodedata
import zipfile
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

from gatekeeper import PluginError

DEBIAN_PACKAGES = ("wordnet-base", "wordnet-sense-index")
LOCAL = Path(".gatekeeper") / "nltk_data"
WORDNET_FILES = re.compile(r"^(data|index)\.(noun|verb|adj|adv)$|^(adj|adv|noun|verb)\.exc$|^lexnames$|^index\.sense$"
                           r"|^cntlist(\.rev)?$|^sentidx\.vrb$|^sents\.vrb$|^verb\.Framestext$|^LICENSE$")


# --------------------------------------------------------------------------- checking


TOKENIZER_DATA = ("corpora/wordnet.zip", "misc/perluniprops.zip", "tokenizers/punkt.zip", "tokenizers/punkt_tab.zip")
"""The NLTK resources azure's BLEU, GLEU and METEOR evaluators look up."""


def search_paths(root: Path | None = None) -> list[str]:
    """NLTK's data path, with the project-local directory added when it exists."""
    import nltk

    # NLTK reads NLTK_DATA once, when it is imported; read it again (it may be set later).
    for entry in reversed(os.environ.get("NLTK_DATA", "").split(os.pathsep)):
        if entry and entry not in nltk.data.path:
            nltk.data.path.insert(0, entry)
    for base in (root, Path.cwd()):
        if base is None:
            continue
        local = str(Path(base) / LOCAL)
        if os.path.isdir(local) and local not in nltk.data.path:
            nltk.data.path.append(local)
    return list(nltk.data.path)


def missing(resources: Sequence[str], root: Path | None = None) -> list[str]:
    import nltk

    search_paths(root)
    absent = []
    for resource in resources:
        try:
            nltk.data.find(resource)
        except LookupError:
            absent.append(resource)
    return absent


def require(resources: Sequence[str], metric: str, root: Path | None = None) -> None:
    """Raise a :class:`PluginError` naming each missing resource and how to build it."""
    absent = missing(resources, root) if resources else []
    if absent:
        raise PluginError("azure-eval", (
            f"{metric} needs NLTK data that is not installed: {', '.join(absent)}. NLTK would download it at run "
            "time, which fails offline; build it from Debian packages with `gatekeeper-nltk-data --out "
            ".gatekeeper/nltk_data` (make nltk-data) and point NLTK_DATA at that directory"
        ))


# --------------------------------------------------------------------------- building


def fetch_wordnet(work: Path) -> Path:
    """Download and unpack the Debian WordNet packages; the directory with the database."""
    debs = work / "debs"
    debs.mkdir()
    try:
        download = ["apt-get", "download", *DEBIAN_PACKAGES]
        if subprocess.run(download, cwd=debs, capture_output=True, text=True).returncode != 0 and os.geteuid() == 0:
            # A fresh machine may have no package lists yet (root: refresh them, once).
            subprocess.run(["apt-get", "update", "-q"], check=False, capture_output=True)
        subprocess.run(download, cwd=debs, check=True, capture_output=True, text=True)
    except FileNotFoundError:
        raise SystemExit("gatekeeper-nltk-data: apt-get not found: this builds WordNet from Debian packages "
                         f"({', '.join(DEBIAN_PACKAGES)})") from None
    except subprocess.CalledProcessError as exc:
        raise SystemExit(f"gatekeeper-nltk-data: apt-get download {' '.join(DEBIAN_PACKAGES)} failed "
                         f"(run apt-get update first?): {exc.stderr.strip()}") from None
    tree = work / "tree"
    for deb in sorted(debs.glob("*.deb")):
        subprocess.run(["dpkg", "-x", str(deb), str(tree)], check=True)
    dicts = [p.parent for p in tree.rglob("data.noun")]
    if not dicts:
        raise SystemExit("gatekeeper-nltk-data: the Debian packages hold no WordNet database (data.noun)")
    database = dicts[0]
    for sense in tree.rglob("index.sense"):
        if sense.parent != database:
            shutil.copy(sense, database / "index.sense")
    return database


def zip_dir(source: Path, target: Path, arcroot: str) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(target, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr(f"{arcroot}/", "")
        for path in sorted(source.rglob("*")):
            name = f"{arcroot}/{path.relative_to(source).as_posix()}"
            archive.write(path, name + ("/" if path.is_dir() else ""))


def build_wordnet(database: Path, out: Path) -> None:
    staging = out / ".wordnet-staging"
    staging.mkdir(parents=True, exist_ok=True)
    for path in database.iterdir():
        if path.is_file() and WORDNET_FILES.match(path.name):
            shutil.copy(path, staging / path.name)
    if not (staging / "lexnames").exists():
        (staging / "lexnames").write_text(lexnames(database), encoding="utf-8")
    zip_dir(staging, out / "corpora" / "wordnet.zip", "wordnet")
    shutil.rmtree(staging)


_LEXNAME = re.compile(r"^(\d\d)\t+(adj|adv|noun|verb)\.(\S+)")
_SYNTACTIC_CATEGORY = {"noun": 1, "verb": 2, "adj": 3, "adv": 4}


def lexnames(database: Path) -> str:
    """WordNet's ``lexnames`` file (Debian ships its table only in the lexnames(5WN) manual
    page): ``NN<TAB>file name<TAB>syntactic category`` for the 45 lexicographer files."""
    import gzip

    pages = list((database.parent / "man").rglob("lexnames.5*"))
    if not pages:
        raise SystemExit("gatekeeper-nltk-data: neither WordNet's lexnames file nor its manual page is in the "
                         "Debian packages")
    text = gzip.decompress(pages[0].read_bytes()).decode("latin-1")
    rows = [(int(m.group(1)), f"{m.group(2)}.{m.group(3)}", _SYNTACTIC_CATEGORY[m.group(2)])
            for m in map(_LEXNAME.match, text.splitlines()) if m]
    if [n for n, _, _ in rows] != list(range(len(rows))) or len(rows) < 45:
        raise SystemExit(f"gatekeeper-nltk-data: could not read the lexnames table ({len(rows)} rows)")
    return "".join(f"{n:02d}\t{name}\t{cat}\n" for n, name, cat in rows)


_GLOSS = re.compile(r"\|\s*(.*)$")


def glosses(database: Path) -> str:
    """The WordNet glosses (definitions and quoted examples) as running English text."""
    sentences: list[str] = []
    for part in ("noun", "verb", "adj", "adv"):
        for line in (database / f"data.{part}").read_text(encoding="latin-1").splitlines():
            if line.startswith("  "):  # the licence header
                continue
            match = _GLOSS.search(line)
            if not match:
                continue
            for piece in match.group(1).split(";"):
                text = piece.strip().strip('"').strip()
                if text:
                    text = text[0].upper() + text[1:]
                    sentences.append(text if text.endswith((".", "?", "!")) else text + ".")
    return " ".join(sentences)


# Titles and month/business abbreviations that the glosses rarely end a word with, but
# English answers do (NLTK's pre-trained model knows them too); lower case, no final dot.
COMMON_ABBREVIATIONS = frozenset({
    "mr", "mrs", "ms", "dr", "prof", "st", "jr", "sr", "vs", "etc", "inc", "ltd", "co", "corp", "dept",
    "approx", "no", "nos", "fig", "gen", "gov", "sen", "rep", "jan", "feb", "mar", "apr", "jun", "jul",
    "aug", "sep", "sept", "oct", "nov", "dec", "mon", "tue", "wed", "thu", "fri", "sat", "sun",
})


def build_punkt(database: Path, out: Path) -> None:
    from nltk.tokenize.punkt import PunktSentenceTokenizer, PunktTrainer

    trainer = PunktTrainer()
    trainer.INCLUDE_ALL_COLLOCS = True
    with _no_regex_time_limit():
        trainer.train(glosses(database), finalize=True)
    params = trainer.get_params()
    params.abbrev_types.update(COMMON_ABBREVIATIONS)
    tokenizer = PunktSentenceTokenizer(params)
    staging = out / ".punkt-staging" / "english"
    staging.mkdir(parents=True, exist_ok=True)
    tokenizer.save(str(staging)) if hasattr(tokenizer, "save") else _save_params(params, staging)
    # NLTK's word_tokenize looks up punkt_tab/english; azure also checks punkt.zip exists.
    zip_dir(staging.parent, out / "tokenizers" / "punkt_tab.zip", "punkt_tab")
    zip_dir(staging.parent, out / "tokenizers" / "punkt.zip", "punkt")
    shutil.rmtree(staging.parent)


@contextlib.contextmanager
def _no_regex_time_limit() -> Iterator[None]:
    """NLTK 3.10 runs its tokenizers' patterns under a wall-clock limit (``nltk.redos``, 5 s
    a match) against hostile patterns; training reads all the glosses as one line, which on
    a loaded machine takes longer. The pattern is NLTK's own and the text ours: lifted for
    the training only (and not there at all before 3.10)."""
    try:
        from nltk import redos
    except ImportError:
        yield
        return
    saved = redos.DEFAULT_TIMEOUT
    redos.DEFAULT_TIMEOUT = None
    try:
        yield
    finally:
        redos.DEFAULT_TIMEOUT = saved


def _save_params(params: object, directory: Path) -> None:
    """punkt_tab's four files, for NLTK versions without ``PunktTokenizer.save``."""
    p = params
    (directory / "abbrev_types.txt").write_text("\n".join(sorted(p.abbrev_types)) + "\n")  # type: ignore[attr-defined]
    (directory / "sent_starters.txt").write_text("\n".join(sorted(p.sent_starters)) + "\n")  # type: ignore[attr-defined]
    (directory / "collocations.tab").write_text(
        "".join(f"{a}\t{b}\n" for a, b in sorted(p.collocations)))  # type: ignore[attr-defined]
    (directory / "ortho_context.tab").write_text(
        "".join(f"{k}\t{v}\n" for k, v in sorted(p.ortho_context.items())))  # type: ignore[attr-defined]


PERLUNIPROPS: dict[str, Callable[[str, str], bool]] = {
    # file name -> predicate on the Unicode general category (and the character)
    "Number": lambda cat, ch: cat.startswith("N"),
    "Punctuation": lambda cat, ch: cat.startswith("P"),
    "Symbol": lambda cat, ch: cat.startswith("S"),
    "Separator": lambda cat, ch: cat.startswith("Z"),
    "Letter": lambda cat, ch: cat.startswith("L"),
    "Lowercase_Letter": lambda cat, ch: cat == "Ll",
    "Uppercase_Letter": lambda cat, ch: cat == "Lu",
    "Titlecase_Letter": lambda cat, ch: cat == "Lt",
    "Open_Punctuation": lambda cat, ch: cat == "Ps",
    "Close_Punctuation": lambda cat, ch: cat == "Pe",
    "Currency_Symbol": lambda cat, ch: cat == "Sc",
    "Line_Separator": lambda cat, ch: cat == "Zl",
    "IsAlnum": lambda cat, ch: cat.startswith(("L", "N")),
    "IsAlpha": lambda cat, ch: cat.startswith("L"),
    "IsLower": lambda cat, ch: cat == "Ll",
    "IsUpper": lambda cat, ch: cat == "Lu",
    "IsN": lambda cat, ch: cat.startswith("N"),
    "IsPf": lambda cat, ch: cat == "Pf",
    "IsPi": lambda cat, ch: cat == "Pi",
    "IsSc": lambda cat, ch: cat == "Sc",
    "IsSo": lambda cat, ch: cat == "So",
    "CJK": lambda cat, ch: "CJK" in unicodedata.name(ch, ""),
    "Han": lambda cat, ch: unicodedata.name(ch, "").startswith("CJK UNIFIED IDEOGRAPH"),
    "Hangul": lambda cat, ch: unicodedata.name(ch, "").startswith("HANGUL"),
    "Hiragana": lambda cat, ch: unicodedata.name(ch, "").startswith("HIRAGANA"),
    "Katakana": lambda cat, ch: unicodedata.name(ch, "").startswith("KATAKANA"),
}


def build_perluniprops(out: Path) -> None:
    staging = out / ".perluniprops-staging"
    staging.mkdir(parents=True, exist_ok=True)
    chars = [chr(c) for c in range(sys.maxunicode + 1) if not 0xD800 <= c <= 0xDFFF]
    categories = [unicodedata.category(ch) for ch in chars]
    for name, keep in PERLUNIPROPS.items():
        text = "".join(ch for ch, cat in zip(chars, categories, strict=True) if cat != "Cn" and keep(cat, ch))
        (staging / f"{name}.txt").write_text(text, encoding="utf-8")
    (staging / "README").write_text(f"Generated from Python {sys.version.split()[0]}'s unicodedata "
                                    f"(Unicode {unicodedata.unidata_version}) by gatekeeper-nltk-data.\n")
    zip_dir(staging, out / "misc" / "perluniprops.zip", "perluniprops")
    shutil.rmtree(staging)


def build(out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="gk-nltk-") as tmp:
        database = fetch_wordnet(Path(tmp))
        build_wordnet(database, out)
        build_punkt(database, out)
    build_perluniprops(out)


def check(out: Path) -> None:
    """Use the built data as the metrics do: fail loudly if NLTK cannot read it."""
    import nltk

    nltk.data.path.insert(0, str(out))
    from nltk.corpus import wordnet
    from nltk.tokenize.nist import NISTTokenizer

    assert nltk.word_tokenize("Dr. Smith arrived. He left at 5 p.m. on Monday.")
    assert wordnet.synsets("dog"), "wordnet has no synsets for 'dog'"
    assert NISTTokenizer().international_tokenize("Preis: 15 €, bitte.")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="gatekeeper-nltk-data", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path(os.environ.get("NLTK_DATA", str(LOCAL))).absolute(),
                        help="directory to build into (default: $NLTK_DATA or .gatekeeper/nltk_data)")
    parser.add_argument("--force", action="store_true", help="rebuild even when the data is already there")
    args = parser.parse_args(argv)
    out: Path = args.out
    if not args.force and out.is_dir() and all((out / r).exists() for r in TOKENIZER_DATA):
        print(f"NLTK data already in {out}")
        return 0
    build(out)
    check(out)
    print(f"built NLTK data (wordnet, punkt_tab, punkt, perluniprops) in {out}; set NLTK_DATA={out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
