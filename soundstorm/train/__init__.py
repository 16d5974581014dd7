"""Training: the loop (:mod:`.loop`), checkpoints (:mod:`.checkpoint`), optimisation (:mod:`.optim`),
the data path that applies the per-example §3.2 corruption (:mod:`.data`; the corruption itself is
:mod:`soundstorm.masking`), the evaluation hook (:mod:`.eval_hook`) and logging (:mod:`.logging`).
Nothing here reads Hydra configs; :mod:`soundstorm.builders` does."""
