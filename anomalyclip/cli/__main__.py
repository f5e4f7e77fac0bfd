"""``python -m anomalyclip.cli``: the ``anomaly`` script's entry point (what torchrun starts)."""

from anomalyclip.cli import main

main()
