"""The recognizers the presidio detector runs, besides the NER model.

- gatekeeper's own patterns (:data:`gatekeeper.pii.PII_KINDS`, with their Luhn / mod-97 /
  address checks) as one presidio recognizer, so presidio never finds less than the
  fallback did, with the same types;
- street addresses and postcodes in several locales (presidio has no address recognizer:
  the NER model tags cities and countries, not "221B Baker Street");
- presidio's checksum-validated national identifiers of several countries and its
  ``phonenumbers``-backed phone recognizer for international formats.

Presidio's e-mail and URL recognizers are left out on purpose: they validate domains with
``tldextract``, which downloads the public suffix list at run time (no network here); the
e-mail pattern above needs no download.
"""

from __future__ import annotations

import re
from typing import Any

from presidio_analyzer import EntityRecognizer, Pattern, PatternRecognizer, RecognizerResult
from presidio_analyzer.nlp_engine import NlpArtifacts

from gatekeeper.pii import PII_KINDS

LANGUAGE = "en"


class GatekeeperPatterns(EntityRecognizer):
    """gatekeeper's fallback patterns, unchanged, as a presidio recognizer."""

    def __init__(self) -> None:
        super().__init__(supported_entities=[k.name for k in PII_KINDS], name="gatekeeper_patterns",
                         supported_language=LANGUAGE)

    def load(self) -> None:
        return None

    def analyze(self, text: str, entities: list[str], nlp_artifacts: NlpArtifacts | None = None) -> list[Any]:
        found: list[RecognizerResult] = []
        for kind in PII_KINDS:
            if entities and kind.name not in entities:
                continue
            for match in kind.pattern.finditer(text):
                start, end = match.span()
                if kind.valid is not None and not kind.valid(match.group(0)):
                    continue
                if any(start < r.end and r.start < end for r in found):
                    continue
                found.append(RecognizerResult(kind.name, start, end, 1.0,
                                              recognition_metadata={"recognizer_name": f"pattern:{kind.name}"}))
        return found


# --------------------------------------------------------------------------- addresses

_CAP = r"[A-ZÀ-ÖØ-Þ][\wÀ-ÿ'’.-]*"
_EN_SUFFIX = (r"(?:Street|St|Road|Rd|Avenue|Ave|Boulevard|Blvd|Lane|Ln|Drive|Dr|Court|Ct|Place|Pl|Way|Terrace|"
              r"Close|Crescent|Square|Sq|Highway|Hwy|Parkway|Pkwy|Circle|Gardens|Row|Mews|Walk|Grove)\b\.?")
_UNIT = r"(?:,?\s+(?:Apt|Apartment|Suite|Ste|Unit|Flat|Floor|Fl)\.?\s*#?\s*\w{1,5})?"
_US_STATES = ("AL|AK|AZ|AR|CA|CO|CT|DE|FL|GA|HI|ID|IL|IN|IA|KS|KY|LA|ME|MD|MA|MI|MN|MS|MO|MT|NE|NV|NH|NJ|NM|NY|"
              "NC|ND|OH|OK|OR|PA|RI|SC|SD|TN|TX|UT|VT|VA|WA|WV|WI|WY|DC")

ADDRESS_PATTERNS: tuple[tuple[str, str, float], ...] = (
    # 221B Baker Street, 1600 Pennsylvania Ave NW, 42 Elm St, Apt 3
    ("street_en", rf"\b\d{{1,5}}[A-Za-z]?(?:[-/]\d{{1,4}})?,?\s+(?:{_CAP}\s+){{1,4}}{_EN_SUFFIX}"
                  rf"(?:\s+(?:N|S|E|W|NE|NW|SE|SW)\b)?{_UNIT}", 0.75),
    # 12 rue de la Paix, 5 bis avenue des Champs-Élysées
    ("street_fr", r"\b\d{1,4}(?:\s?(?:bis|ter))?,?\s+(?:rue|avenue|av\.|boulevard|bd|place|chemin|allée|impasse|quai|"
                  r"route|cours)\s+(?:(?:de|du|des|la|le|l'|d'|l’|d’)\s*)*" + _CAP + r"(?:[\s-]+" + _CAP + r")*", 0.75),
    # Hauptstraße 5, Kurfürstendamm 21a, Prinsengracht 263, Lindenweg 3
    ("street_de_nl", r"\b[A-ZÄÖÜ][a-zäöüß]+(?:straße|strasse|str\.|weg|gasse|platz|allee|ring|damm|ufer|gracht|laan|"
                     r"straat|plein|kade)\s+\d{1,4}\s?[a-z]?\b", 0.7),
    ("street_de_words", r"\b[A-ZÄÖÜ][a-zäöüß]+(?:\s[A-ZÄÖÜ][a-zäöüß]+)?\s(?:Straße|Strasse|Weg|Platz|Allee)"
                        r"\s\d{1,4}[a-z]?\b", 0.7),
    # Calle Mayor 10, Avenida de la Constitución 3, Via Roma 15, Piazza di Spagna 2, C/ Alcalá 42
    ("street_es_it_pt", r"\b(?:Calle|C/|Avenida|Avda\.|Plaza|Paseo|Carrer|Via|Viale|Piazza|Corso|Largo|Rua|Travessa)\s+"
                        r"(?:(?:de|del|la|las|los|di|della|delle|dei|da|do|dos)\s+)*" + _CAP + r"(?:\s+" + _CAP + r")*"
                        r",?\s*(?:n\.?\s?º?\s*)?\d{1,4}[a-zA-Z]?\b", 0.75),
    # Springfield, IL 62704 / Austin, TX 78701-1234
    ("us_city_state_zip", rf"\b{_CAP}(?:\s{_CAP})*,\s(?:{_US_STATES})\s\d{{5}}(?:-\d{{4}})?\b", 0.8),
    # SW1A 1AA, NW1 6XE, EH1 1YZ (UK postcodes, upper case as written on letters)
    ("uk_postcode", r"\b(?:[A-PR-UWYZ][A-HK-Y]?\d[A-Z\d]?)\s?\d[ABD-HJLNP-UW-Z]{2}\b", 0.6),
    # 75002 Paris, 10115 Berlin, D-80331 München, 28013 Madrid (postcode before the city)
    ("eu_postcode_city", r"(?<![\d-])(?:[A-Z]-)?\d{5}\s+[A-ZÄÖÜÉ][a-zäöüéèàßí]+(?:[- ][A-ZÄÖÜÉ][a-zäöüéèàßí]+)?\b",
     0.55),
    # 1012 AB Amsterdam (Dutch postcode)
    ("nl_postcode", r"\b\d{4}\s?[A-Z]{2}\s+[A-Z][a-z]+\b", 0.55),
    ("po_box", r"\b(?:P\.?\s?O\.?\s?Box|Postfach|Apartado|Casella postale)\s+\d{1,6}\b", 0.7),
)


def address_recognizer() -> PatternRecognizer:
    """Street addresses and postcodes, case-sensitive (a lower-case "st" is not a street)."""
    patterns = [Pattern(name, regex, score) for name, regex, score in ADDRESS_PATTERNS]
    return PatternRecognizer(supported_entity="ADDRESS", patterns=patterns, name="gatekeeper_address",
                             supported_language=LANGUAGE, global_regex_flags=re.DOTALL | re.MULTILINE,
                             context=["address", "live", "lives", "living", "ship", "deliver", "send", "moved",
                                      "street", "postcode", "zip"])


# --------------------------------------------------------------------------- identifiers and phones

# presidio's checksum- or format-validated identifiers (their own scores and context words),
# all reported as ``national_id``; US SSN and UK NI stay with the gatekeeper patterns.
ID_RECOGNIZERS = (
    "NhsRecognizer", "UkPassportRecognizer", "UsItinRecognizer", "UsPassportRecognizer", "EsNifRecognizer",
    "EsNieRecognizer", "ItFiscalCodeRecognizer", "InPanRecognizer", "InAadhaarRecognizer", "AuTfnRecognizer",
    "CaSinRecognizer", "PlPeselRecognizer", "SePersonnummerRecognizer", "FiPersonalIdentityCodeRecognizer",
    "DeTaxIdRecognizer", "DeIdCardRecognizer", "DePassportRecognizer", "SgFinRecognizer", "KrRrnRecognizer",
)
# phonenumbers scans the text once per region: the regions of the locales in the labelled
# sample and of the largest markets; other formats are left to the +country-code pattern.
PHONE_REGIONS = ("US", "GB", "DE", "FR", "ES", "IT", "IN", "AU")


def presidio_recognizers() -> list[Any]:
    """The presidio recognizers instantiated for English text (every locale's IDs appear
    in English-language support conversations)."""
    from presidio_analyzer import predefined_recognizers as pre

    out: list[Any] = [pre.PhoneRecognizer(supported_regions=PHONE_REGIONS, supported_language=LANGUAGE),
                      pre.CreditCardRecognizer(supported_language=LANGUAGE)]
    for cls_name in ID_RECOGNIZERS:
        cls = getattr(pre, cls_name, None)
        if cls is None:  # a presidio without that country's recognizer: skip it, describe() lists what ran
            continue
        out.append(cls(supported_language=LANGUAGE))
    return out


# presidio entity → gatekeeper type
ENTITY_TYPES: dict[str, str] = {
    "PERSON": "person", "ORGANIZATION": "organization", "LOCATION": "location", "ADDRESS": "address",
    "PHONE_NUMBER": "phone", "CREDIT_CARD": "card_number",
    "UK_NHS": "national_id", "UK_PASSPORT": "national_id", "US_ITIN": "national_id", "US_PASSPORT": "national_id",
    "ES_NIF": "national_id", "ES_NIE": "national_id", "IT_FISCAL_CODE": "national_id", "IN_PAN": "national_id",
    "IN_AADHAAR": "national_id", "AU_TFN": "national_id", "CA_SIN": "national_id", "PL_PESEL": "national_id",
    "SE_PERSONNUMMER": "national_id", "FI_PERSONAL_IDENTITY_CODE": "national_id", "DE_TAX_ID": "national_id",
    "DE_ID_CARD": "national_id", "DE_PASSPORT": "national_id", "SG_NRIC_FIN": "national_id", "KR_RRN": "national_id",
    **{k.name: k.name for k in PII_KINDS},
}
