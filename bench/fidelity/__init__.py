"""``python -m bench.fidelity``: every tutorial's protocol run to its own end, over seeds, into bench/FIDELITY.md.

    python -m bench.fidelity                                   # every default protocol, every seed (days on 2 cores)
    python -m bench.fidelity --models logreg,cg,mlp --threads 1   # a part; a later sitting continues the rest
    python -m bench.fidelity --seeds 1 --models lenet          # one seed only
    python -m bench.fidelity --report-only                     # rewrite the report from the store, run nothing
    python -m bench.fidelity --quick --dataset digits          # every protocol for 2 epochs, one seed (~2 min)
    python -m bench.fidelity --dry-run                         # print the dlexp commands that would run

Each run is one ``python -m dlexp.cli experiment=tutorial_<x> ...`` subprocess, one at a time, logged to the
MLflow store ``--store`` (default ``outputs/fidelity/mlflow.db``, experiment ``fidelity``) under the run name
``fidelity/<protocol>/seed<s>``. The report is written only from what that store holds, read back with
``MlflowClient``: nothing a run prints is parsed. A (protocol, seed) pair with a FINISHED run whose overrides
are the protocol's is skipped, so the script can run in several sittings; an interrupted run (Ctrl-C, SIGTERM,
a crash) is continued where it stopped through ``trainer.resume=auto``.

A protocol is a small declarative entry (``protocols.PROTOCOLS``): the overrides, the seeds, the protocol in words,
what differs from the tutorial, the reference figures. Where the tutorial's own protocol is too slow for a
CPU machine of ours (SdA's batch-1 pretraining, the DBN's 100 pretraining epochs a layer), the default entry
is the closest protocol that can finish, and an ``Estimate`` times the exact protocol: one capped run of the
tutorial's settings (one epoch over a few thousand training rows) whose per-row seconds, read back from the
store, are extrapolated to 50,000 rows and the tutorial's epoch counts. The exact protocols are entries too
(``sda_full``, ``dbn_full``), outside the default selection.

``--quick`` runs every protocol for 2 epochs (1 pretraining epoch a layer) on at most 2,000 training rows, one
seed, under the run names ``fidelity-quick/...``; its report says so in its title. Exit status: 0 if every
selected run finished, 1 if one did not (it failed, or was stopped on its own; the others still run), 130
on Ctrl-C.

One idea a module: ``protocols`` (the entries), ``store`` (what a run is and where it is kept), ``jobs``
(running what the store lacks), ``readback`` (a run's figures from the store), ``report`` (the Markdown),
``__main__`` (the command line).
"""
