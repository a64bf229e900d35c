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



HANG = textwrap.dedent("""
    import multiprocessing as mp, os, signal, sys, threading, time
    from dicom_deid.pools import start_pool
    PARENT = os.getpid()
    def handler(signum, frame):  # the parent unwinds; a worker would wait on
        if os.getpid() == PARENT:
            raise SystemExit(143)
    signal.signal(signal.SIGTERM, handler)
    SEM = mp.get_context("fork").Semaphore(0)
    def block():
        SEM.acquire()  # a worker waiting in a lock nobody releases, as in a pool's queue
    if __name__ == "__main__":
        pool = start_pool(2, "fork", "os")
        for _ in range(2):
            pool.apply_async(block)
        time.sleep(1)
        done = threading.Thread(target=pool.terminate, daemon=True)
        done.start()
        done.join(20)
        print("hung" if done.is_alive() else "ended")
        sys.stdout.flush()
        for worker in pool._pool:  # what a hang left: nothing may outlive the test
            if worker.exitcode is None:
                os.kill(worker.pid, signal.SIGKILL)
        os._exit(0)
""")


def test_a_pool_ends_its_workers_whatever_handler_its_parent_installed(tmp_path: Path) -> None:
    """A command-line run hung at its very end: the pool ended its workers with SIGTERM,
    and a worker blocked in the queue's lock kept the Python handler it had inherited from
    the command (which unwinds the command on SIGTERM) and did not die. Workers now take
    the kernel's default action for SIGTERM, wherever they are blocked."""
    script = tmp_path / "hang.py"
    script.write_text(HANG)
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                          timeout=120, check=False)
    assert proc.stdout.strip() == "ended", proc.stdout + proc.stderr[-2000:]
