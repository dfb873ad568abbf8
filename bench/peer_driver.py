"""Runs one tutorial through the peer's own timing harness, in the peer's venv (not dlexp's).

    <peer venv>/bin/python bench/peer_driver.py SEEDCODE MODEL EPOCHS DATASET [SDA_PY]

``SEEDCODE`` is the peer folder (``../shared/peers/seedcode``: the LISA-lab tutorials on PyTensor,
with ``harness.py``). The tutorial runs unchanged, timed by the harness's own machinery (every
printed line time-stamped, compile time excluded, an epoch = its training steps + the tutorial's own
validation, + the test pass when validation improved); this driver adds what the benchmark needs:

* the CPU time other processes took during each epoch (the same foreign-load measure as dlexp's
  side, bench/timing.py), sampled at the very time stamps that bound the epoch;
* the SdA tutorial's layer-0 pretraining (``sda``: SdA.py's ``test_SdA``, batch 1, lr 0.001, from
  the upstream file given as SDA_PY, which the peer folder does not ship), timed like the others
  from its "Pre-training layer 0, epoch k" lines;
  (SdA passes its layers' shared W and b to dA, whose ``if not W:`` -- true of any Theano variable,
  a TypeError on PyTensor's -- becomes ``if W is None:``, the fix the peer made to rbm.py; dA.py is
  otherwise run as it is; and SdA's ``theano.In(x, value=default)``, which PyTensor refuses, drops
  the default: test_SdA passes every such input at every call);
* an early stop once the timed epochs are done (rbm: before the tutorial's sampling; sda: before
  layers 1 and 2), so nothing after them costs time.

Prints one line ``PEER-EPOCHS {json}``: the headline phase's epochs as [seconds, foreign load],
the errors / costs the tutorial printed, and versions.
"""
import json
import os
import re
import sys
import tempfile


def _busy():
    try:
        with open("/proc/stat") as f:
            v = [int(t) for t in f.readline().split()[1:]]
        return sum(v) - v[3] - v[4]
    except OSError:
        return None


def _own():
    try:
        with open("/proc/self/stat") as f:
            parts = f.read().rsplit(")", 1)[1].split()
        return int(parts[11]) + int(parts[12])
    except (OSError, IndexError, ValueError):
        return None


class StopPeer(Exception):
    """Raised from the output stream once the timed epochs are over."""


STOP = {"rbm": re.compile(r"^Training took"), "sda": re.compile(r"^Pre-training layer 1,")}


def _patch_sda(harness, seedcode: str, sda_py: str) -> None:
    """SdA.py from SDA_PY, with the peer's dA.py made to take its layers' shared W and b (``if W is None``), its
    layer-0 pretraining registered as the model ``sda``, timed from its "Pre-training layer 0" lines."""
    sys.path.insert(0, os.path.dirname(os.path.abspath(sda_py)))
    patched = tempfile.mkdtemp(prefix="peer-sda-")
    with open(os.path.join(seedcode, "tutorials", "dA.py")) as f:
        text = f.read()
    for name in ("W", "bvis", "bhid"):
        text = text.replace(f"if not {name}:", f"if {name} is None:  # (Theano: bool(var) was True)")
    with open(os.path.join(patched, "dA.py"), "w") as f:
        f.write(text)
    sys.path.insert(0, patched)

    def run_sda(n_epochs, data):
        import SdA

        SdA.test_SdA(finetune_lr=0.1, pretraining_epochs=n_epochs, pretrain_lr=0.001, training_epochs=0,
                     dataset=data, batch_size=1)

    harness.MODELS["sda"] = run_sda
    harness.RE_COST = re.compile(r"^Pre-training layer 0, epoch (\d+), cost\s+([-0-9.eE+naif]+)")


def _run_tutorial(harness, model: str, epochs: int, dataset: str) -> dict:
    """The tutorial run unchanged, its output time-stamped by the harness and cut short once the timed
    epochs are over; {time stamp: (system busy ticks, own ticks)} sampled at each stamp."""
    samples = {}
    clock = harness.now

    def now():
        t = clock()
        samples[t] = (_busy(), _own())
        return t

    harness.now = now
    stop = STOP.get(model)

    class Tee(harness.TimestampTee):
        def write(self, s):
            n = super().write(s)
            if stop is not None and any(stop.match(e[2]) for e in harness.EVENTS[-3:] if e[1] == "out"):
                raise StopPeer()
            return n

    os.chdir(tempfile.mkdtemp(prefix=f"peer-{model}-"))
    import theano

    harness.install_function_wrapper(theano)
    if model == "sda":
        plain_in = theano.In

        def In(variable, value=None, **kw):  # noqa: N802  (theano's name)
            return plain_in(variable, **kw)

        theano.In = In
    real_out, real_err = sys.stdout, sys.stderr
    sys.stdout, sys.stderr = Tee(real_out, "out"), Tee(real_err, "err")
    try:
        harness.MODELS[model](epochs, dataset)
    except StopPeer:
        pass
    finally:
        sys.stdout.flush()
        sys.stdout, sys.stderr = real_out, real_err
    return samples


def _epochs(head: list, samples: dict) -> list:
    """[seconds, foreign load] of each epoch: the CPU time other processes took between its two stamps, as a
    share of the machine's CPUs over the epoch."""
    tick = os.sysconf("SC_CLK_TCK")
    try:
        ncpu = len(os.sched_getaffinity(0))
    except AttributeError:
        ncpu = os.cpu_count() or 1
    out = []
    for e in head:
        a, b = samples.get(e["start"]), samples.get(e["end"])
        foreign = 0.0
        if a and b and None not in a + b and e["seconds"]:
            foreign = max(0.0, ((b[0] - a[0]) - (b[1] - a[1])) / (tick * ncpu * e["seconds"]))
        out.append([e["seconds"], foreign])
    return out


def main(argv):
    seedcode, model, epochs, dataset = argv[0], argv[1], int(argv[2]), os.path.abspath(argv[3])
    sda_py = argv[4] if len(argv) > 4 else None
    sys.path.insert(0, seedcode)
    import harness  # puts the peer's tutorials/ and shim/ on sys.path

    if sda_py:
        _patch_sda(harness, seedcode, sda_py)
    samples = _run_tutorial(harness, model, epochs, dataset)
    import pytensor
    import theano

    phases, final, _ = harness.analyse(harness.EVENTS)
    head = phases[-1]["epochs"] if phases else []
    info = {"epochs": _epochs(head, samples),
            "errors": [{k: v for k, v in e.items() if k.endswith("_pct") or k == "cost"} for e in head],
            "train_step_seconds": [e["train_step_seconds"] for e in head], "pytensor": pytensor.__version__,
            "linker": theano.config.linker, "floatX": theano.config.floatX, "final": final}
    sys.stdout.write("\nPEER-EPOCHS " + json.dumps(info) + "\n")
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
