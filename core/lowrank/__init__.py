"""The low-rank math: the LoRA and DoRA layers (W0 + B A · alpha / rank), which layers to
adapt and what trains for each method, ΔW's spectrum from its factors, and the PEFT file format.

May import: core.common.
"""
