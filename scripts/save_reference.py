"""Commit a finished run as a notebook's reference result: copies its tables and JSON (no checkpoints or adapters)
into results/<preset>/<run name>/ with provenance.json (command, UTC date, machine, preset, commit, wall time).

    python scripts/save_reference.py --runs-dir ~/grpo_runs/logprob-reasoning --preset cpu \
        --run 01_rule_based --wall-seconds 1084 --command "bash scripts/run-notebook.sh 01 -p PRESET cpu"
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from helpers import reference  # noqa: E402


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs-dir", required=True, help="the runs folder (GRPO_RUNS_DIR of the run)")
    ap.add_argument("--run", required=True, help="run name, e.g. 01_rule_based")
    ap.add_argument("--preset", required=True)
    ap.add_argument("--command", required=True, help="the command that produced the run, as a reader would type it")
    ap.add_argument("--wall-seconds", type=float, default=None)
    ap.add_argument("--commit", default=None, help="the commit the run was made at (default: this checkout's HEAD)")
    ap.add_argument("--note", default="", help="what a reader must know about the run (e.g. other jobs ran beside it)")
    args = ap.parse_args(argv)
    dest = reference.save(Path(args.runs_dir) / args.run, command=args.command, preset=args.preset,
                          wall_seconds=args.wall_seconds, commit=args.commit, note=args.note)
    print(f"saved {len(reference.provenance(args.run, args.preset)['files'])} files to {dest}")
    print(reference.describe(args.run, args.preset))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
