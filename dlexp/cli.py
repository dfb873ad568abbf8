"""The ``dlexp`` command: Hydra composes the config tree, we validate it, then run.

    dlexp model=mlp dataset=fashion_mnist regularization=l2
    dlexp experiment=tutorial_lenet
    dlexp -m model=mlp optimizer.lr=0.1,0.01,0.001
    dlexp --help / dlexp --cfg job
"""
import logging
import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from .config import ConfigError, register_configs, validate

log = logging.getLogger("dlexp")

_HERE = Path(__file__).resolve().parent
# Installed: the tree ships as dlexp/conf; in a source checkout it is ../conf.
CONFIG_PATH = str(_HERE / "conf" if (_HERE / "conf" / "config.yaml").exists() else _HERE.parent / "conf")

register_configs()


@hydra.main(version_base="1.3", config_path=CONFIG_PATH, config_name="config")
def main(cfg: DictConfig) -> float:
    from .checkpoint import CheckpointError
    from .data.device import DeviceError
    from .data.formats import DataError
    from .tracking import TrackingError
    from .train.result import Diverged

    hc = HydraConfig.get()
    try:
        run = validate(cfg)
        from .experiment import run_experiment

        final = run_experiment(run, OmegaConf.to_yaml(cfg), list(hc.overrides.task), hc.runtime.output_dir)
    except (ConfigError, DataError, DeviceError, CheckpointError, TrackingError) as e:
        print(f"dlexp: error: {e}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt as e:  # Ctrl-C / SIGTERM: the run is marked KILLED
        print(f"dlexp: stopped ({e or 'interrupted'})", file=sys.stderr)
        sys.exit(130)
    except (Diverged, OSError) as e:  # the run is marked FAILED with the reason as a tag
        print(f"dlexp: error: {e}", file=sys.stderr)
        sys.exit(1)
    # the sweep objective (e.g. for Optuna): validation error, or the final cost of an unsupervised model
    return final.get("best_valid_error", final.get("final_cost"))


if __name__ == "__main__":
    main()
