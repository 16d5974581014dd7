"""Training: the loop (:mod:`.loop`), checkpoints (:mod:`.checkpoint`), optimisation (:mod:`.optim`),
the data path with the per-example corruption (:mod:`.data`; the corruption itself is :mod:`soundstorm.masking`) and logging
(:mod:`.logging`). Nothing here reads Hydra configs; :mod:`soundstorm.builders` does."""
