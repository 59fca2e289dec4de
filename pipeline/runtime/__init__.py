"""Where and how a job runs: hardware profiles (``hardware``), several processes (``launch``),
padding-free batches (``packing``), the divergence guard (``guard``), checkpoints and signals
(``checkpoint``), the trainer callbacks (``callbacks``) and offline resolution of Hub ids
(``offline``), the elastic agent quiet about a refusal (``elastic``), the garbage collector through
start-up (``collector``), large freed blocks kept for reuse (``allocator``), gradient clipping without
its multiplication by 1.0 (``clipping``), a process's start on the boot clock and whether a run's
process still lives (``process_clock``), and the step's own speed settings (``dropout``,
``merged_forward``). Speed and safety: what here changes a job's numbers (bf16 rounding, dropout's draws)
is a ``hardware.*`` key, which the caches of results key; the rest changes no result.
"""
