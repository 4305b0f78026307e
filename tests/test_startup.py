"""What a command imports: `validate` never pays for the SDK (it needs no network)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

EXAMPLES = Path(__file__).parent.parent / "pipelines/examples"


def test_validate_never_imports_the_sdk():
    probe = (
        "import sys; from batchflow.cli import run; code = run(['validate', sys.argv[1]]); "
        "print(code, sorted(m for m in sys.modules if m.startswith('google.genai')))"
    )
    done = subprocess.run([sys.executable, "-c", probe, str(EXAMPLES)], capture_output=True, text=True)
    assert done.stdout.splitlines()[-1] == "0 []", done.stderr
