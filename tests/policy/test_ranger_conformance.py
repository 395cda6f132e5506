"""Apache Ranger's own policy-engine tests, run through pgveil's importer and decision engine."""
from __future__ import annotations

from pathlib import Path

import pytest

from .ranger_harness import run_all

FOLDER = Path(__file__).resolve().parents[2] / ".." / "shared" / "conformance" / "ranger"


@pytest.mark.skipif(not FOLDER.is_dir(), reason=f"Ranger conformance data not found at {FOLDER}")
def test_ranger_conformance() -> None:
    outcome = run_all(FOLDER)
    unsupported = sum(outcome.unsupported.values())
    print(f"\nranger conformance: {outcome.passed} passed, {len(outcome.failed)} failed, {unsupported} unsupported")
    for reason, count in sorted(outcome.unsupported.items()):
        print(f"  unsupported ({count}): {reason}")
    print(f"  access cases whose deciding policy equals Ranger's policyId (not compared by Ranger's runner): "
          f"{outcome.access_policy_agree} of {outcome.access_cases}")
    for failure in outcome.failed:
        print(f"  FAILED {failure}")
    assert outcome.passed > 0
    assert not outcome.failed, f"{len(outcome.failed)} Ranger cases failed"
