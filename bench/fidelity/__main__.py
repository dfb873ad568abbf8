"""``python -m bench.fidelity``: the command line (see the package's doc)."""
import argparse
import sys
from pathlib import Path

from . import __doc__ as DOC
from .jobs import plan, run_all
from .protocols import ALIASES, BY_NAME, PROTOCOLS
from .report import write_report
from .store import REPO, absolute_store, default_store, sqlite_file, work_dir


def refuse(message: str):
    """A user's mistake: one line on stderr, exit 2, before any work starts."""
    print(f"bench.fidelity: error: {message}", file=sys.stderr)
    raise SystemExit(2)


def select(models: str) -> list:
    """The protocols named by ``--models`` (aliases expanded), or the default ones."""
    if not models:
        return [p for p in PROTOCOLS if p.default]
    names = [n for m in models.split(",") if m.strip() for n in ALIASES.get(m.strip(), (m.strip(),))]
    unknown = [n for n in names if n not in BY_NAME]
    if unknown:
        refuse(f"unknown protocol {unknown[0]!r}: one of {', '.join([*BY_NAME, *ALIASES])}")
    return [BY_NAME[n] for n in dict.fromkeys(names)]


def parse(argv) -> argparse.Namespace:
    """The command line (see the module doc)."""
    ap = argparse.ArgumentParser(prog="python -m bench.fidelity", description=DOC,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default="", help=f"comma-separated protocols: {', '.join([*BY_NAME, *ALIASES])}")
    ap.add_argument("--seeds", default="", help="comma-separated seeds, instead of each protocol's own")
    ap.add_argument("--store", default=None, help="MLflow tracking URI or sqlite file (default "
                    "outputs/fidelity/mlflow.db; with --quick outputs/fidelity-quick/mlflow.db)")
    ap.add_argument("--out", default=None, help="the report (default bench/FIDELITY.md; with --dataset mnist "
                    "bench/FIDELITY_MNIST.md)")
    ap.add_argument("--dataset", default="fashion_mnist", choices=["fashion_mnist", "mnist", "digits"])
    ap.add_argument("--threads", type=int, default=None, help="trainer.threads for every run")
    ap.add_argument("--quick", action="store_true", help="2 epochs, 2,000 rows, one seed: checks the script")
    ap.add_argument("--report-only", action="store_true", help="write the report from the store, run nothing")
    ap.add_argument("--timing-only", action="store_true", help="run only the full-protocol timing runs (sda, dbn)")
    ap.add_argument("--dry-run", action="store_true", help="print the commands that would run, run nothing")
    return ap.parse_args(argv)


def main(argv=None) -> int:
    """Run what the store lacks of the selection, then write the report from the store; the exit status."""
    args = parse(argv)
    protocols = select(args.models)
    try:
        seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    except ValueError:
        refuse(f"--seeds {args.seeds!r}: comma-separated whole numbers, e.g. 1,2,3")
    store = absolute_store(args.store or default_store(args.quick))
    db = sqlite_file(store)
    if args.report_only and db and not db.is_file():
        refuse(f"no store at {db}: --report-only reads an existing store (give --store)")
    failed = 0
    if not args.report_only:
        jobs = plan(protocols, seeds, args.dataset, args.quick, args.timing_only)
        try:
            failed = run_all(jobs, store, args.threads, args.dry_run)
        except KeyboardInterrupt:
            print("\nstopped: the interrupted run saved its state; the same command continues it", file=sys.stderr)
            return 130
    if not args.dry_run:
        out = args.out or REPO / "bench" / ("FIDELITY_MNIST.md" if args.dataset == "mnist" else "FIDELITY.md")
        write_report(Path(out), store, args.dataset, args.quick, protocols)
    if failed:
        print(f"{failed} run(s) did not finish; see the logs under {work_dir(store) / 'logs'}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
