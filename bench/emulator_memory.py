"""The emulator streams files: a large upload and download keep its memory flat.

Starts `batchflow emulator` as a subprocess, uploads a file of SIZE bytes with
the google-genai SDK, downloads it back to disk, and reports the emulator's
peak RSS (VmHWM) before and after.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from ten_million import proc_status

SIZE = int(os.environ.get("BENCH_UPLOAD_BYTES", 1024**3))


def peak_rss_mb(pid: int) -> float:
    return proc_status(pid, "VmHWM:") / 1024


def main() -> None:
    from google import genai

    proc = subprocess.Popen(
        [sys.executable, "-m", "batchflow", "emulator", "--port", "0"], stdout=subprocess.PIPE, text=True
    )
    try:
        url = proc.stdout.readline().strip().removeprefix("listening on ")
        idle = peak_rss_mb(proc.pid)
        client = genai.Client(api_key="bench", http_options={"base_url": url})
        with tempfile.TemporaryDirectory() as tmp:
            src, dst = Path(tmp) / "big.bin", Path(tmp) / "back.bin"
            with open(src, "wb") as f:
                f.truncate(SIZE)  # sparse: no time spent writing
            start = time.perf_counter()
            uploaded = client.files.upload(file=str(src), config={"mime_type": "application/octet-stream"})
            up_s = time.perf_counter() - start
            start = time.perf_counter()
            client.files.download(file=uploaded.name, destination=str(dst))
            down_s = time.perf_counter() - start
            assert dst.stat().st_size == SIZE
        peak = peak_rss_mb(proc.pid)
        mb = SIZE / 1024**2
        print(
            f"emulator: {mb:.0f} MB upload {up_s:.1f} s ({mb / up_s:.0f} MB/s), "
            f"download {down_s:.1f} s ({mb / down_s:.0f} MB/s); "
            f"peak RSS {idle:.0f} MB idle, {peak:.0f} MB after (limit 200 MB)"
        )
    finally:
        proc.terminate()
        proc.wait()


if __name__ == "__main__":
    main()
