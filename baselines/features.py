"""Features of a candidate activation computed without training it, as AQuaSurF describes them.

Bingham & Miikkulainen (2023) characterise an activation function by two things a network shows
before any training step: the function's **output distribution** (its values on a fixed set of
N(0, 1) points; here the genotype fingerprint's points) and the **eigenvalue spectrum of the
Fisher information matrix** of the network at initialisation with that activation.

The Fisher is approximated per layer with K-FAC (Martens & Grosse 2015; Grosse & Martens 2016 for
convolutions): for each Linear / Conv layer, ``A`` is the second moment of its inputs (unfolded
patches for a convolution, with a constant 1 for a bias) and ``G`` that of the gradients at its
outputs, on one batch whose labels are sampled from the model's own predictive distribution (so
the matrix is the Fisher, not the empirical Fisher). The eigenvalues of ``A ⊗ G`` are the
products of the eigenvalues of ``A`` and ``G``; each layer's spectrum is summarised by fixed
quantiles of their base-10 logarithms, and the layers' summaries are concatenated. Every
candidate sees the same initial weights and the same batch (both fixed by the seed), so the
vector has the same length and meaning for every activation of a task.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from baselines.options import FISHER_BATCH
from bench.data.base import Dataset
from bench.search_task import ARCH_SHARE
from bench.tasks import Task
from bench.training import BatchStream, build_model, seed_everything
from grafs.cost import Cost
from grafs.genotype import Genotype, fingerprint_points
from grafs.ops import INF

QUANTILES = np.linspace(0.0, 1.0, 9)
"""Where each layer's log-eigenvalue distribution is read: minimum, octiles, maximum."""

EIGENVALUE_FLOOR = 1e-20
"""Eigenvalues below this (numerically zero: dead units, rank-deficient batches) count as this."""

MAX_FACTOR_SIZE = 1024
"""Layers with a wider K-FAC factor (e.g. a language model's vocabulary head) are left out of the
spectrum for every candidate alike: their eigendecomposition would cost more than the rest."""



def output_features(genotype: Genotype) -> np.ndarray:
    """The activation's values at the fingerprint's fixed N(0, 1) points, non-finite values clipped to ±INF."""
    with torch.no_grad():
        values = genotype.to_module().double()(fingerprint_points()).numpy()
    return np.clip(np.nan_to_num(values, nan=0.0, posinf=INF, neginf=-INF), -INF, INF)


def spectrum_summary(eigenvalues_a: Tensor, eigenvalues_g: Tensor) -> np.ndarray:
    """Quantiles of log10 of the eigenvalues of A ⊗ G, from those of A and of G."""
    products = torch.outer(eigenvalues_a.clamp_min(0), eigenvalues_g.clamp_min(0)).flatten()
    logs = torch.log10(products.clamp_min(EIGENVALUE_FLOOR)).numpy()
    return np.quantile(logs, QUANTILES)


def _layer_rows(layer: nn.Module, inputs: Tensor, output_grads: Tensor) -> tuple[Tensor, Tensor]:
    """The rows whose second moments are A and G: one per sample (and per position, per token)."""
    if isinstance(layer, nn.Linear):
        a = inputs.reshape(-1, inputs.shape[-1])
        g = output_grads.reshape(-1, output_grads.shape[-1])
    else:
        if isinstance(layer, nn.Conv1d):
            inputs = inputs.unsqueeze(2)
            kernel, stride, padding, dilation = (
                (1, layer.kernel_size[0]),
                (1, layer.stride[0]),
                (0, layer.padding[0]),
                (1, layer.dilation[0]),
            )
        else:
            kernel, stride, padding, dilation = layer.kernel_size, layer.stride, layer.padding, layer.dilation
        patches = F.unfold(inputs, kernel, dilation=dilation, padding=padding, stride=stride)
        a = patches.transpose(1, 2).reshape(-1, patches.shape[1])
        g = output_grads.flatten(2).transpose(1, 2).reshape(-1, output_grads.shape[1])
        # Gradients sum over a sample's positions: G is a per-sample second moment (Grosse & Martens 2016).
        g = g * output_grads.flatten(2).shape[2] ** 0.5
    if layer.bias is not None:
        a = torch.cat([a, torch.ones(a.shape[0], 1, dtype=a.dtype, device=a.device)], dim=1)
    return a, g


def _kfac_layers(model: nn.Module) -> list[nn.Module]:
    """The layers K-FAC covers: Linear, and Conv1d / Conv2d with plain (ungrouped, zero-padded) kernels."""
    layers = []
    for module in model.modules():
        if isinstance(module, nn.Linear):
            sizes = (module.in_features + (module.bias is not None), module.out_features)
        elif (
            isinstance(module, (nn.Conv1d, nn.Conv2d))
            and module.groups == 1
            and module.padding_mode == "zeros"
            and not isinstance(module.padding, str)
        ):
            fan_in = module.in_channels * int(np.prod(module.kernel_size))
            sizes = (fan_in + (module.bias is not None), module.out_channels)
        else:
            continue
        if max(sizes) <= MAX_FACTOR_SIZE:
            layers.append(module)
    return layers


@dataclass(frozen=True)
class FeatureSet:
    """Features of many genotypes (rows in their order) and what computing them cost."""

    outputs: np.ndarray
    spectra: np.ndarray
    cost: Cost


class FeatureExtractor:
    """Computes both features of genotypes for one task and seed: same initial weights, same batch.

    The batch comes from the part of the training split that trains weights during a search, so
    the features see no data the search scores on.
    """

    def __init__(
        self, task: Task, data: Dataset, seed: int, device: str | torch.device = "cpu", batch_size: int = FISHER_BATCH
    ):
        self.task, self.data, self.seed, self.device = task, data, seed, torch.device(device)
        weight_part, _ = data.search_split(ARCH_SHARE)
        stream = BatchStream(task, data, batch_size, seed, self.device, weight_part)
        self.batch = stream.next_batch()
        self.description = {
            "fisher": "kfac",
            "batch_size": batch_size,
            "quantiles": len(QUANTILES),
            "max_factor_size": MAX_FACTOR_SIZE,
            "output_points": len(fingerprint_points()),
        }

    def fisher_spectrum(self, genotype: Genotype) -> np.ndarray:
        """The K-FAC Fisher spectrum of the task's search model at initialisation with ``genotype``."""
        seed_everything(self.seed)  # the same initial weights for every candidate
        model = build_model(self.task, self.data, genotype.to_module).to(self.device)
        model.train()
        layers = _kfac_layers(model)
        captured: dict[nn.Module, list[Tensor]] = {}

        def keep(layer, inputs, output):
            captured[layer] = [inputs[0].detach()]
            output.register_hook(lambda grad: captured[layer].append(grad.detach()))

        handles = [layer.register_forward_hook(keep) for layer in layers]
        try:
            logits = model(self.batch.inputs)
            logits = logits.reshape(-1, logits.shape[-1])
            generator = torch.Generator().manual_seed(self.seed)
            probabilities = torch.softmax(logits.detach().double().cpu(), dim=-1)
            probabilities = torch.nan_to_num(probabilities, nan=1.0).clamp_min(0) + 1e-12
            sampled = torch.multinomial(probabilities, 1, generator=generator).squeeze(1).to(logits.device)
            # Summed, not averaged, so each row's gradient is that of its own sample's loss.
            loss = F.cross_entropy(logits, sampled, reduction="sum")
            if torch.isfinite(loss):
                loss.backward()
        finally:
            for handle in handles:
                handle.remove()
        summaries = []
        for layer in layers:
            if len(captured.get(layer, ())) < 2:  # no finite gradient: an all-floor spectrum
                summaries.append(np.full(len(QUANTILES), np.log10(EIGENVALUE_FLOOR)))
                continue
            a, g = (rows.double().cpu() for rows in _layer_rows(layer, *captured[layer]))
            a, g = torch.nan_to_num(a), torch.nan_to_num(g)
            eigenvalues_a = torch.linalg.eigvalsh(a.T @ a / a.shape[0])
            eigenvalues_g = torch.linalg.eigvalsh(g.T @ g / g.shape[0])
            summaries.append(spectrum_summary(eigenvalues_a, eigenvalues_g))
        return np.concatenate(summaries)

    def __call__(self, genotypes: list[Genotype]) -> FeatureSet:
        started = time.perf_counter()
        outputs = np.stack([output_features(genotype) for genotype in genotypes])
        spectra = np.stack([self.fisher_spectrum(genotype) for genotype in genotypes])
        passes = len(genotypes) * self.batch.size  # one forward + backward per candidate
        return FeatureSet(outputs, spectra, Cost(time.perf_counter() - started, passes, 0))
