"""README's first command: ``clipshards example DIR`` makes, converts and loads a tiny dataset."""

from __future__ import annotations

import json
import subprocess
import sys


def test_example_command_converts_and_loads_every_clip(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-c", "import sys; from clipshards.convert.cli import main; sys.exit(main(sys.argv[1:]))",
         "example", str(tmp_path), "--workers", "1", "--no-progress"],
        capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    index = json.loads((tmp_path / "shards" / "train" / "index.json").read_text())
    clips = index["counts"]["clips"]
    assert index["counts"]["videos_ok"] == 9 and clips > 0
    assert f"{clips} clips in" in proc.stdout
    assert "IndexedKinetics[0]: video (16, 3, 72, 96)" in proc.stdout
    assert "first batch: video (4, 16, 3, 72, 96) torch.uint8" in proc.stdout
