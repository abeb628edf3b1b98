"""`make efficacy` fails when any shard fails, and writes the table only when both succeed."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# A stand-in for the shiftkit CLI: logs its arguments, fails for the shard named in $FAIL_SHARD.
_FAKE = """#!/bin/sh
echo "$@" >> "$LOG"
case "$*" in *"--shard $FAIL_SHARD"*) exit 3;; esac
exit 0
"""


@pytest.mark.skipif(shutil.which("make") is None, reason="needs make")
@pytest.mark.parametrize("fail", ["0/2", "1/2", "none"])
def test_make_efficacy_fails_when_a_shard_fails(tmp_path: Path, fail: str) -> None:
    fake = tmp_path / "bin" / "shiftkit"
    fake.parent.mkdir()
    fake.write_text(_FAKE)
    fake.chmod(0o755)
    log = tmp_path / "calls.log"
    # -o setup: do not (re)install the virtualenv; BIN points make at the stand-in.
    proc = subprocess.run(["make", "-s", "-o", "setup", "efficacy", f"BIN={fake.parent}"], cwd=ROOT,
                          env={"PATH": "/usr/bin:/bin", "LOG": str(log), "FAIL_SHARD": fail},
                          capture_output=True, text=True, timeout=60)
    calls = log.read_text()
    assert "--shard 0/2" in calls and "--shard 1/2" in calls  # both shards ran
    if fail == "none":
        assert proc.returncode == 0, proc.stderr
        assert "--summarise" in calls
    else:
        assert proc.returncode != 0
        assert "--summarise" not in calls and "a shard failed" in proc.stderr
