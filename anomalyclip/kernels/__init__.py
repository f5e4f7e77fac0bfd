"""Faster ways to compute what the model computes: an opt-in performance layer.

Nothing here defines the model. :mod:`anomalyclip.kernels.winograd` computes the temporal
model's 3x3 convolution feed-forward with Winograd's minimal filtering (the same values up to
float rounding, ~4x fewer multiplies), and :mod:`anomalyclip.kernels.native` compiles and
loads its C tile transforms (``winograd_kernels.c``). The model picks an algorithm through
its ``conv`` constructor argument (:class:`anomalyclip.model.temporal.ConvFeedForward`);
``"direct"`` never touches that code. :mod:`anomalyclip.kernels.attention` gives the axial
attention a faster backward in bfloat16 and float16 on the CPU (PyTorch's own attention
everywhere else, and the same forward everywhere). :mod:`anomalyclip.kernels.allocator` is a
process-wide memory policy that only entry points (``anomaly train``, the benchmarks) apply.
"""

# How the temporal model can compute its 3x3 convolutions (a choice of algorithm, not of
# model): never part of the model's config or state dict. Importing this needs no torch.
CONV_ALGORITHMS = ("auto", "direct", "winograd")
