"""gatekeeper-presidio: the ``presidio`` PII detector (presidio + a spaCy NER model)."""
