"""The low-rank math: the LoRA and DoRA layers (W0 + B A · alpha / rank), which layers to
adapt and what trains for each method, ΔW's SVD from its factors and the numbers read from it
(its spectrum, subspace similarity, ΔW against W0, the snapshots training records), and the PEFT
file format. Tensors in, numbers out: nothing here knows of runs.

May import: core.common.
"""
