"""The MLflow model of a dlexp run, as MLflow runs it: a "model from code" (``mlflow.models.set_model``).

MLflow copies this file into every model dlexp logs (:mod:`dlexp.mlmodel`) and executes it when the
model is loaded (``mlflow.pyfunc.load_model``, ``mlflow models serve``), so nothing of dlexp is
pickled. It needs mlflow, numpy and torch only: the model classes (``dlexp.models``) and the
restricted checkpoint reader (``dlexp.checkpoint``) travel in the model's ``code/`` folder, the
parameters as its ``checkpoint`` artifact -- the run's own ``best_params.pkl`` (or
``pretrained_params.pkl``), numpy arrays read without ``pickle.load``.

    predict(x), x float32 (N, C*H*W) in [0, 1], as the dataset gives it:
      a classifier -> {"label": int64 (N,), "probabilities": float32 (N, K)}   softmax of the logits
      an encoder   -> {"features": float32 (N, F)}   p(h | x) through the layers of a dA, cA or RBM

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
        from dlexp import checkpoint
        from dlexp.models import build_model, config_class

        ckpt = checkpoint.load(context.artifacts["checkpoint"])
        cfg = config_class(ckpt["model"]["name"])(**ckpt["model"])
        model = build_model(cfg, tuple(ckpt["image_shape"]), ckpt["n_classes"])
        model.load_state_dict({k: torch.from_numpy(np.asarray(v)) for k, v in ckpt["params"].items()})
        self.model = model.eval()

    def predict(self, context, model_input: np.ndarray, params=None) -> dict:
        x = np.ascontiguousarray(model_input, dtype=np.float32)
        return outputs(self.model, torch.from_numpy(x.reshape(len(x), -1)))


mlflow.models.set_model(DlexpModel())
