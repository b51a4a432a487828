"""Ways to make a task vector, and the parameter-efficient methods they are compared with.

* :mod:`.vanilla`: extracted task vectors (mean ICL minus zero-shot query state);
* :mod:`.function_vectors`: Todd et al.'s function vectors (mean head outputs, causal indirect effects);
* :mod:`.training`: the one training loop (data prep, seeded batches, AdamW, divergence, early stopping);
* :mod:`.learned`: Learned Task Vectors (one run, or a batched layer sweep) on that loop;
* :mod:`.prompt_tuning`: one trained virtual token; :mod:`.lora`: rank-1 LoRA on ``W_O``;
* :mod:`.peft`: the three compared (:func:`~tvmech.experiments.peft.compare_peft`).
"""
