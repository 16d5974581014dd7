"""Evaluation: teacher-forced masked accuracy/NLL (:mod:`.teacher_forced`), generation on held-out
utterances with token and audio metrics (:mod:`.generation`, :mod:`.metrics`) and plots (:mod:`.plots`)."""
