# Copyright (c) torchgeo-scalemae contributors. Licensed under the MIT License.

"""Measure what the torchgeo-scalemae start-up hook costs every Python process.

Three measurements, each a median over many fresh interpreters:

1. ``site`` cost of the hook alone: in ``python -S`` (after a warm-up import), time
   ``site.addsitedir`` on a temporary folder holding only the hook's three files (.pth,
   .start, module) against an empty folder. This is exactly what every interpreter start pays (reading the .pth,
   importing the module, ``install()``), isolated from the rest of site-packages.
2. End to end: wall clock of a fresh ``python -S`` process that adds a temporary site
   folder holding the hook versus an empty one.
3. ``python -X importtime -c pass`` in the current environment: the hook module's import
   time as Python reports it (only when the hook is installed here).

It also checks that start-up imports neither torch nor torchgeo nor torchgeo_scalemae.

Usage: ``python benchmarks/startup_overhead.py [--runs 200]``. Timings are noisy on a
busy machine: compare the medians and the spread, and run it on a quiet one.
"""

import argparse
import compileall
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
STARTUP = ROOT / 'torchgeo_scalemae' / '_startup'
FILES = (
    '_torchgeo_scalemae_autoregister.py',
    'torchgeo_scalemae_autoregister.pth',
    'torchgeo_scalemae_autoregister.start',
)

# ``import json`` first: in -S mode nothing has used the path-based finder yet, and its
# one-off set-up (path hooks, zipimport) would otherwise be charged to the
# first module imported from a folder. A normal start-up pays that set-up anyway
# (site.py looks for sitecustomize/usercustomize on sys.path).
SITE_TIMER = (
    'import json, time, site, sys; t = time.perf_counter_ns(); site.addsitedir(sys.argv[1]); '
    'dt = time.perf_counter_ns() - t; '
    "bad = [m for m in ('torch', 'torchgeo', 'torchgeo_scalemae') if m in sys.modules]; "
    'print(dt, ",".join(bad) or "-")'
)


def _site_cost(folder: Path, runs: int) -> tuple[list[float], set[str]]:
    times, leaked = [], set()
    for _ in range(runs):
        out = subprocess.run(
            [sys.executable, '-S', '-c', SITE_TIMER, str(folder)],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.split()
        times.append(int(out[0]) / 1e3)  # microseconds
        if out[1] != '-':
            leaked.update(out[1].split(','))
    return times, leaked


def _wall(folder: Path, runs: int) -> list[float]:
    code = f'import site; site.addsitedir({str(folder)!r})'
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run([sys.executable, '-S', '-c', code], check=True)
        times.append((time.perf_counter() - start) * 1e3)  # milliseconds
    return times


def _importtime(runs: int) -> list[float]:
    times = []
    for _ in range(runs):
        err = subprocess.run(
            [sys.executable, '-X', 'importtime', '-c', 'pass'],
            capture_output=True,
            text=True,
            check=True,
        ).stderr
        for line in err.splitlines():
            if line.rstrip().endswith('_torchgeo_scalemae_autoregister'):
                times.append(float(line.split('|')[1]))  # cumulative microseconds
    return times


def _summary(name: str, values: list[float], unit: str) -> str:
    q = statistics.quantiles(values, n=10)
    return (
        f'{name}: median {statistics.median(values):.1f} {unit} '
        f'(p10 {q[0]:.1f}, p90 {q[-1]:.1f}, n={len(values)})'
    )


def main() -> None:
    """Run the three measurements and print medians and differences."""
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--runs', type=int, default=200)
    args = parser.parse_args()
    missing = [f for f in FILES if not (STARTUP / f).exists()]
    if missing:
        sys.exit(f'hook files missing under {STARTUP}: {missing}')

    with tempfile.TemporaryDirectory() as tmp:
        hooked, empty = Path(tmp, 'hooked'), Path(tmp, 'empty')
        hooked.mkdir()
        empty.mkdir()
        for name in FILES:
            shutil.copy(STARTUP / name, hooked / name)
        # byte-compile as pip does at install (PYTHONDONTWRITEBYTECODE may be set)
        compileall.compile_dir(str(hooked), quiet=1)
        env_note = os.environ.get('TORCHGEO_SCALEMAE_AUTOREGISTER', '(unset)')
        print(
            f'python {sys.version.split()[0]}, TORCHGEO_SCALEMAE_AUTOREGISTER={env_note}'
        )

        with_hook, leaked = _site_cost(hooked, args.runs)
        without, _ = _site_cost(empty, args.runs)
        print('1. site.addsitedir cost (microseconds)')
        print('  ', _summary('with hook', with_hook, 'us'))
        print('  ', _summary('empty dir', without, 'us'))
        print(
            f'   hook overhead: {statistics.median(with_hook) - statistics.median(without):.1f} us'
        )
        print(f'   modules leaked at start-up: {sorted(leaked) or "none"}')

        wall_hook = _wall(hooked, args.runs)
        wall_empty = _wall(empty, args.runs)
        print('2. python -S -c "addsitedir(...)" wall clock per process (ms)')
        print('  ', _summary('with hook', wall_hook, 'ms'))
        print('  ', _summary('empty dir', wall_empty, 'ms'))
        print(
            f'   difference of medians: '
            f'{statistics.median(wall_hook) - statistics.median(wall_empty):.2f} ms'
        )

    imports = _importtime(min(args.runs, 50))
    if imports:
        print('3. -X importtime of _torchgeo_scalemae_autoregister in this environment')
        print('  ', _summary('cumulative import', imports, 'us'))
    else:
        print('3. hook not installed in this environment (no -X importtime line)')


if __name__ == '__main__':
    main()
