"""Cream-style prioritized-path search over Arch-Net student topologies (reference 7).

Modules: :mod:`space` (per-block choices, paths, topologies), :mod:`slim` (slimmable
Arch-Net unit), :mod:`supernet` (weight-shared supernet, ``export(path)``), :mod:`cost`
(analytic MACs/params/BitOPs, budgets), :mod:`sampler` (exact uniform sampling over
feasible paths), :mod:`board` (prioritized board), :mod:`matcher` (top1 / nearest / meta),
:mod:`loss`, :mod:`trainer` (label-free supernet training), :mod:`select` (BN
recalibration, final choice), :mod:`student` (``searched_student`` for archnet-distill),
:mod:`runner` (``run_search``).
"""
