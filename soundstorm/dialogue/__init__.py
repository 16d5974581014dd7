"""Spoken dialogue, the paper's showcase: a script and one voice per speaker → one conversation wav.

``DialoguePipeline.from_pretrained(t2s_dir, soundstorm_dir, assets).speak(script, {"A": a_wav, "B": b_wav})``
runs text → semantic tokens (:mod:`soundstorm.t2s`) → SoundStorm → codec per turn, with timings.
"""

from soundstorm.dialogue.evaluate import evaluate_dialogue
from soundstorm.dialogue.pipeline import DialoguePipeline, DialogueResult, Voice
from soundstorm.dialogue.script import Turn, parse_script

__all__ = ["DialoguePipeline", "DialogueResult", "Voice", "Turn", "parse_script", "evaluate_dialogue", "dialogue"]


def dialogue(script, voices: dict, *, t2s_checkpoint, soundstorm_checkpoint, assets, seed: int = 0, **kwargs):
    """One call: load both stages and speak ``script`` with ``voices``; returns a :class:`DialogueResult`."""
    return DialoguePipeline.from_pretrained(t2s_checkpoint, soundstorm_checkpoint, assets, **kwargs).speak(
        script, voices, seed=seed)
