"""Evaluation: what to evaluate (:mod:`.config`), teacher-forced masked accuracy/NLL on fixed held-out
batches (:mod:`.teacher_forced`), generation on held-out utterances with token and audio metrics
(:mod:`.generation`, :mod:`.metrics`) and plots (:mod:`.plots`)."""
