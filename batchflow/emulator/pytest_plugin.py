"""pytest fixture for users' own tests: `gemini_emulator`, the emulator on a free port.

Installed with batchflow (entry point `pytest11`), so any project can write:

    def test_my_batch_code(gemini_emulator):
        client = genai.Client(api_key="k", http_options={"base_url": gemini_emulator.url})
"""

from __future__ import annotations

import pytest

from .server import EmulatorServer


@pytest.fixture
def gemini_emulator():
    """The Gemini API emulator at 3600x speed (a job takes hundredths of a second)."""
    with EmulatorServer(speed=3600) as emulator:
        yield emulator
