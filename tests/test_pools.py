"""Worker pools started from a script must not re-run that script in every worker."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

SCRIPT = textwrap.dedent("""
    import os, sys
    with open(sys.argv[1], "a") as fh:  # what the parent's main costs: run once per process
        fh.write(f"{os.getpid()}\\n")
    if __name__ == "__main__":
        from dicom_deid.pools import start_pool
        with start_pool(2, sys.argv[2], "os") as pool:
            workers = {r.get(60) for r in [pool.apply_async(os.getpid) for _ in range(4)]}
        assert os.getpid() not in workers
        print(len(workers))
""")


@pytest.mark.parametrize("method", ["forkserver", "spawn", "fork"])
def test_workers_do_not_rerun_the_parent_main_script(tmp_path: Path, method: str) -> None:
    script, marker = tmp_path / "host.py", tmp_path / "ran.txt"
    script.write_text(SCRIPT)
    done = subprocess.run([sys.executable, str(script), str(marker), method],
                          capture_output=True, text=True, timeout=120, check=True)
    assert int(done.stdout) >= 1  # the pool really ran the function in other processes
    assert marker.read_text().split() == [marker.read_text().split()[0]]  # the parent only


def test_the_parent_main_is_back_after_the_pool_started() -> None:
    main = sys.modules["__main__"]
    from dicom_deid.pools import start_pool

    with start_pool(1, "spawn", "os") as pool:
        assert sys.modules["__main__"] is main
        assert pool.apply(abs, (-3,)) == 3
