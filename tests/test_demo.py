"""`make demo` end to end: the same story as `python -m demo`, shortened with `--fast`, run as a
subprocess with a deadline; every act must pass, the picture must exist, nothing may be left
running."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DEADLINE_S = 300


def _processes_mentioning(text: str) -> list[str]:
    """Command lines of live processes that mention `text` (their config or data paths)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if text in cmdline:
            found.append(f"{entry.name}: {cmdline.strip()}")
    return found


@pytest.mark.slow
@pytest.mark.timeout(DEADLINE_S + 30)
def test_demo_plays_all_three_acts_draws_the_timeline_and_cleans_up(tmp_path):
    """Exit 0, each act's marker in the narration, a PNG, no process or directory left."""
    output = tmp_path / "demo-output"
    done = subprocess.run(
        [sys.executable, "-m", "demo", "--fast", "--output-dir", str(output)],
        cwd=ROOT, capture_output=True, text=True, timeout=DEADLINE_S)
    narration = done.stdout + done.stderr
    assert done.returncode == 0, narration[-6000:]
    for act in (1, 2, 3):
        assert f"ACT {act} PASSED" in narration, narration[-6000:]
    assert "FAILED" not in narration
    assert "ALL ACTS PASSED" in narration

    # The acts' key moments, as the narration tells them.
    assert re.search(r"phase\s+validating → ready \[auto\]", narration)
    assert re.search(r"flip\s+production-blue → production-green \[auto\]", narration)
    assert re.search(r"exit 1\n.*NOT SAFE.*\n(.*\n)*?.*error-rate \[key\] on production-blue",
                     narration)
    assert re.search(r"rollback\s+production-blue → production-green \[alertmanager\]",
                     narration)
    assert "webhook received → route patched and verified in" in narration

    picture = output / "timeline.png"
    assert picture.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert picture.stat().st_size > 20_000

    workdir = re.search(r"throw-away directory\s+(\S+)", narration)
    assert workdir, narration[:2000]
    assert not Path(workdir.group(1)).exists()
    assert _processes_mentioning(workdir.group(1)) == []
