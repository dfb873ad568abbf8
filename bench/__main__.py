"""``python -m bench``: dlexp's trainer against the loop a user would write, protocol by protocol.

    python -m bench                   # all six protocols + compile / device_chunk / MLflow / sweep extras (~10 min)
    python -m bench --quick           # smaller epochs, same columns (~2 min)
    python -m bench --only mlp,logreg --no-extras --no-write
    python -m bench --device cuda     # on a GPU (CUDA graphs, bf16 extras)

With the tutorials' original code set up (../shared/peers/seedcode, ./setup.sh once; see
bench/original.py), each protocol is also timed there, in the same rounds: the "original" column.

Prints one table and writes bench/RESULTS.md (unless --no-write). See
bench/report.py for what every column means.
"""
import argparse
import sys


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", default="", help="comma-separated protocols: logreg,mlp,lenet,da,rbm,sda")
    ap.add_argument("--quick", action="store_true", help="time fewer rows per epoch (scale 0.4)")
    ap.add_argument("--scale", type=float, default=None, help="multiply the rows timed per epoch")
    ap.add_argument("--device", default="cpu", help="cpu (default), cuda, cuda:N")
    ap.add_argument("--data", default="fashion_mnist", choices=["fashion_mnist", "mnist", "random"],
                    help="data to time on (falls back to random data of the same shape if not installed)")
    ap.add_argument("--no-extras", action="store_true", help="skip the compile, device_chunk, MLflow and sweep-overhead tables")
    ap.add_argument("--no-lightning", action="store_true", help="skip the Lightning column even if installed")
    ap.add_argument("--rounds", type=int, default=None,
                    help="alternating rounds per protocol (default 2, --quick 1): more rounds, more chances of a "
                         "quiet epoch on a shared machine")
    ap.add_argument("--threads", type=int, default=None,
                    help="threads for every side (dlexp, the plain loop: torch intra-op; the original code: OpenBLAS "
                         "and OpenMP), e.g. 1 on a machine another job keeps busy; default: each side's own default")
    ap.add_argument("--no-original", action="store_true",
                    help="skip the original-code column even if ../shared/peers/seedcode is set up")
    ap.add_argument("--out", default="bench/RESULTS.md", help="where to write the results")
    ap.add_argument("--no-write", action="store_true", help="print only")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        from .worker import main as worker_main

        worker_main(args.worker)
        return 0
    from .runner import run_all

    return run_all(args)


if __name__ == "__main__":
    sys.exit(main())
