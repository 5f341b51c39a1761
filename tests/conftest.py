import os

import torch

# Tests must be reproducible and quiet on any machine: no telemetry, two threads as in CI.
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
torch.set_num_threads(min(2, torch.get_num_threads()))
