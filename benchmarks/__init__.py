"""Benchmarks of knet_d2, run from the repository root as modules (``python -m benchmarks.x``).

Scripts: :mod:`.bench_inference`, :mod:`.bench_train`, :mod:`.bench_scaling`,
:mod:`.bench_demo_folder`, :mod:`.fit_real_images`, :mod:`.train_synthetic`, :mod:`.quickstart`.
Their shared parts, one concern each: :mod:`.bench_lock` (one timed run at a time), :mod:`.cli`
(common arguments, data root, run set-up, run header), :mod:`.models` (configs and random-weight
models), :mod:`.data` (real COCO inputs), :mod:`.measure` (timing and peak memory),
:mod:`.report` (tables), :mod:`.batching` (batched inference).
"""
