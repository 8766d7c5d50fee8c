"""Run every lesson notebook under nbval, one fresh kernel each, and print a table of
wall time and peak memory per notebook.

    python scripts/test_notebooks.py                 # all of lessons/*.ipynb
    python scripts/test_notebooks.py lessons/01_*.ipynb
    python scripts/test_notebooks.py --jobs 1         # one at a time (default: two at a time)

Each notebook runs in its own ``pytest --nbval-lax`` process; the peak resident memory
of that process tree (the kernel included) comes from the operating system
(``os.wait4``). Each notebook is also saved with its outputs under ``_build/executed/``
(scripts/nbval_outputs.py), from which ``scripts/build_site.py`` builds the book. Budgets: 180 s and 3 GB per notebook on a 2-core CPU; a notebook over
budget is flagged in the table.
"""
import argparse
import glob
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor, as_completed

BUDGET_S, BUDGET_GB = 180, 3.0
SCRIPTS = os.path.dirname(os.path.abspath(__file__))
EXECUTED = os.path.join(os.path.dirname(SCRIPTS), "_build", "executed")  # scripts/nbval_outputs.py writes here


def run(nb: str):
    env = dict(os.environ, DIFFEDU_WIDGETS="static", PYTHONUNBUFFERED="1",
               OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "1"))  # see the Makefile
    env["PYTHONPATH"] = os.pathsep.join([SCRIPTS, env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    cmd = [sys.executable, "-m", "pytest", "--nbval-lax", "--nbval-current-env", "-q", "-p", "no:cacheprovider",
           "-p", "nbval_outputs", "--save-executed", EXECUTED, nb]
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    out = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    code = os.waitstatus_to_exitcode(status)
    return code, wall, usage.ru_maxrss / 1024**2, out  # ru_maxrss is in KiB on Linux


def main(argv):
    p = argparse.ArgumentParser(description="Run lesson notebooks under nbval with a table of times.")
    p.add_argument("paths", nargs="*", help="notebooks (default: lessons/*.ipynb)")
    p.add_argument("--jobs", type=int, default=min(2, os.cpu_count() or 1),
                   help="notebooks at a time, one kernel (one thread) each (default: 2, or 1 on one core)")
    args = p.parse_args(argv)
    notebooks = args.paths or sorted(glob.glob("lessons/*.ipynb"))
    if not notebooks:
        print("no notebooks found in lessons/")
        return 1
    results, failed, start = {}, 0, time.perf_counter()
    with ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
        futures = {pool.submit(run, nb): nb for nb in notebooks}
        for future in as_completed(futures):
            nb = futures[future]
            code, wall, gb, out = future.result()
            ok = code == 0
            failed += not ok
            last = out.strip().splitlines()[-1] if out.strip() else ""
            print(f"{'PASS' if ok else 'FAIL'}  {nb}  {wall:6.1f} s  {gb:4.2f} GB  | {last}", flush=True)
            if not ok:
                print(out[-6000:], flush=True)
            results[nb] = (nb, ok, wall, gb)
    rows = [results[nb] for nb in notebooks]
    print(f"\n| notebook | result | wall time (s) | peak memory (GB) |\n|---|---|---:|---:|")
    for nb, ok, wall, gb in rows:
        flag = " (over budget)" if wall > BUDGET_S or gb > BUDGET_GB else ""
        print(f"| {os.path.basename(nb)} | {'pass' if ok else 'FAIL'} | {wall:.1f}{flag} | {gb:.2f} |")
    print(f"| total | | {sum(r[2] for r in rows):.1f} | max {max(r[3] for r in rows):.2f} |\n")
    print(f"elapsed {time.perf_counter() - start:.1f} s, {max(1, args.jobs)} notebook(s) at a time")
    print(f"notebooks: {len(rows) - failed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
