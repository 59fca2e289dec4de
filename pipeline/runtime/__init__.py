"""Where and how a job runs: hardware profiles (``hardware``), several processes (``launch``),
padding-free batches (``packing``), the divergence guard (``guard``), checkpoints and signals
(``checkpoint``), the trainer callbacks (``callbacks``) and offline resolution of Hub ids
(``offline``), the elastic agent quiet about a refusal (``elastic``), the garbage collector through
start-up (``collector``) and large freed blocks kept for reuse (``allocator``). Speed and safety only: nothing here changes a job's results.
"""
