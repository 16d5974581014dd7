"""Training: the loop (:mod:`.loop`), checkpoints (:mod:`.checkpoint`), optimisation (:mod:`.optim`),
the data path that applies the per-example §3.2 corruption (:mod:`.data`; the corruption itself is
:mod:`soundstorm.masking`), the evaluation hook (:mod:`.eval_hook`) and logging (:mod:`.logging`); a
run's final numbers (:mod:`.final_metrics`), a sweep job's record (:mod:`.sweep_record`) and the
sweep summary table (:mod:`.sweep_summary`).
Nothing here reads Hydra configs; :mod:`soundstorm.builders` does (and :mod:`soundstorm.hydra_sweep`
reads Hydra's multirun state)."""
