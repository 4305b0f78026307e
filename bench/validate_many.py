"""`batchflow validate` on 1,000 spec files: the whole command, timed end to end.

Compared with the floor a hand-written checker pays: parsing the same YAML
files with PyYAML alone (libyaml's parser when available, as batchflow uses).
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

SPECS = 1000
SPEC = """\
version: 1
name: pipeline-{n}
model: gemini-3.8-flash
labels: {{team: t{n}}}
source: {{uri: data.jsonl, key: "{{{{ id }}}}"}}
request:
  system: You are helpful.
  prompt: "Summarise {{{{ text }}}}"
  generation_config:
    temperature: 0.2
    response_mime_type: application/json
    response_schema: {{type: OBJECT, properties: {{summary: {{type: STRING}}}}, required: [summary]}}
batch: {{max_requests: 5000, max_bytes: 500MB}}
output: {{uri: out/{n}.jsonl, columns: [id]}}
"""


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        (folder / "data.jsonl").write_text('{"id": 1, "text": "hello"}\n')
        for n in range(SPECS):
            (folder / f"p{n:04d}.yaml").write_text(SPEC.format(n=n))
        start = time.perf_counter()
        done = subprocess.run(
            [sys.executable, "-m", "batchflow", "validate", str(folder)], capture_output=True, text=True
        )
        took = time.perf_counter() - start
        assert done.returncode == 0, done.stderr[:500]
        start = time.perf_counter()
        for path in sorted(folder.glob("*.yaml")):
            yaml.load(path.read_text(), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
        floor = time.perf_counter() - start
    print(
        f"validate: {SPECS} specs in {took:.2f} s (target < 2 s); "
        f"PyYAML parsing alone {floor:.2f} s; ratio {took / floor:.1f}"
    )


if __name__ == "__main__":
    main()
