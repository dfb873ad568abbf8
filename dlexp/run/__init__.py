"""The run wing: one run from a validated config to its end, FINISHED, FAILED or KILLED.

experiment (the run composed in one short function), preflight (every check before a run exists),
lifecycle (the MLflow run started and ended; the listeners' ``end``), phases (pretrain, finetune),
resume, progress, curves, params (what a run logs), skip (skip-finished), requeue (SLURM preemption),
pruning (a sweep's pruner as the run's listener), artifacts (what a run saves).
"""
