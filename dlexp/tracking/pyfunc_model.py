"""The MLflow model of a dlexp run, as MLflow runs it: a "model from code" (``mlflow.models.set_model``).

MLflow copies this file into every model dlexp logs (:mod:`dlexp.tracking.mlmodel`) and executes it when the
model is loaded (``mlflow.pyfunc.load_model``, ``mlflow models serve``), so nothing of dlexp is
pickled. It needs mlflow, numpy and torch only: the model classes (``dlexp.models``) and the
restricted checkpoint reader (``dlexp.safe_pickle``) travel in the model's ``code/`` folder, the
parameters as its ``checkpoint`` artifact -- the run's own ``best_params.pkl`` (or
``pretrained_params.pkl``), numpy arrays read without ``pickle.load``.

    predict(x), x float32 (N, C*H*W) in [0, 1], as the dataset gives it:
      a classifier -> {"label": int64 (N,), "probabilities": float32 (N, K)}   softmax of the logits
      an encoder   -> {"features": float32 (N, F)}   p(h | x) through the layers of a dA, cA or RBM
      rows holding NaN or Inf are refused (MlflowException: the server answers HTTP 400 with the message)

dlexp itself never imports this file (``set_model`` below is for MLflow's loader).
"""
import mlflow
import numpy as np
import torch
from mlflow.pyfunc import PythonModel


def outputs(model, x: torch.Tensor) -> dict:
    """What the MLflow model answers for rows ``x``: labels and probabilities, or features."""
    with torch.inference_mode():
        if model.supervised:
            logits = model(x).float()
            return {"label": logits.argmax(1).cpu().numpy(), "probabilities": torch.softmax(logits, 1).cpu().numpy()}
        for layer in model.pretrain_layers():
            x = layer.encode(x)
        return {"features": x.float().cpu().numpy()}


class DlexpModel(PythonModel):
    """A dlexp model rebuilt from its checkpoint artifact."""

    def load_context(self, context):
        from dlexp import safe_pickle
        from dlexp.models import build_model, config_class

        ckpt = safe_pickle.load(context.artifacts["checkpoint"])
        cfg = config_class(ckpt["model"]["name"])(**ckpt["model"])
        model = build_model(cfg, tuple(ckpt["image_shape"]), ckpt["n_classes"])
        model.load_state_dict({k: torch.from_numpy(np.asarray(v)) for k, v in ckpt["params"].items()})
        self.model = model.eval()

    def predict(self, context, model_input: np.ndarray, params=None) -> dict:
        """Rows with a NaN or an infinity are refused (MLflow's server answers 400 with the message): the
        model would give them a label all the same."""
        x = np.ascontiguousarray(model_input, dtype=np.float32)
        bad = ~np.isfinite(x.reshape(len(x), -1)).all(axis=1)
        if bad.any():
            from mlflow.exceptions import MlflowException

            raise MlflowException.invalid_parameter_value(
                f"{int(bad.sum())} of {len(x)} input rows hold NaN or Inf (first: row {int(np.flatnonzero(bad)[0])}); "
                "every pixel must be a finite number in [0, 1]")
        return outputs(self.model, torch.from_numpy(x.reshape(len(x), -1)))


mlflow.models.set_model(DlexpModel())
