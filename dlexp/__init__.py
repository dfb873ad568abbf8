"""dlexp: the Deep Learning Tutorials as a Hydra + MLflow experiment tool."""
__version__ = "0.1.0"
