"""Fixtures shared by the test suite.

Integration tests share one lab per session: it is brought up on first use and removed at the
end, whatever happened. Set PIPFEED_LAB=<name> to run them against a lab that is already up
(`make lab-up`), which then is left running.
"""
from __future__ import annotations

import pytest

from tests.lab.lab import reused_or_running


@pytest.fixture(scope="session")
def lab():
    with reused_or_running("PIPFEED_LAB") as lab_:
        yield lab_
