"""Evaluation: what to evaluate (:mod:`.config`), teacher-forced masked accuracy/NLL on fixed held-out
batches (:mod:`.teacher_forced`), generation on held-out utterances with token and audio metrics
(:mod:`.generation`, :mod:`.metrics`), plots (:mod:`.plots`), and the paper's Table 1 in miniature:
word/character error rates of a recognizer (:mod:`.asr`), speaker similarity of a verifier
(:mod:`.speaker`), which utterances, prompts and references (:mod:`.speech_plan`) and the table
(:mod:`.speech_table`)."""
