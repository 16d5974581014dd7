"""soundstorm: SoundStorm (Borsos et al., 2023) in PyTorch, for CPU, CUDA and TPU (torch_xla).

Where the paper lives:
  §3.1 model     → :mod:`soundstorm.model` (embeddings, heads) and :mod:`soundstorm.conformer`
  §3.2 training  → :mod:`soundstorm.masking`
  §3.3 decoding  → :mod:`soundstorm.sampler`

Two wings. The core (the paper and what runs it: model, sampler, codecs, semantic tokenizers, data,
training, evaluation, backends, benchmark) never imports the applications built on it:
:mod:`soundstorm.t2s` (text → semantic, the dialogue's first stage), :mod:`soundstorm.dialogue` (the
paper's showcase) and :mod:`soundstorm.synthesis` (offline speech corpora). ``tests/test_imports.py``
holds the layers.

Shape letters. A tensor's name ends with its axes, outermost first (``codes_BQT`` is ``[B, Q, T]``);
every module's docstring points here. Counts are ``num_*``.

  B  batch (examples)
  Q  RVQ levels (codebooks), coarse to fine
  T  codec frames (the model's sequence axis)
  S  semantic frames (``T = S × semantic_upsample``)
  V  vocabulary of one level (``codebook_size``; inputs add a mask id)
  D  model width (``dim``); for a codec or k-means, the vector width
  E  inner channels of the Conformer convolution module (``conv_expansion × D``)
  N  attention heads (Conformer); elsewhere the rows of a flat set of vectors (k-means, codecs)
  H  width of one attention head (``D / N``; ``H2`` is half of it, for rotary angles)
  K  codebook entries (codecs, k-means); convolution taps in ``conv_BKC``
  C  feature channels (MFCC coefficients, audio channels)
  F  mel bins; in soundstorm.t2s, the frequencies of the progress features
  L  positions of a packed text-to-semantic sequence ``[text | prompt | target]`` (soundstorm.t2s)
  P  voice-prompt semantic frames
  1, 2, 3  an axis of that size (broadcast, or stacked q/k/v)
"""

from soundstorm.masking import Corruption, corrupt
from soundstorm.model import SoundStorm, SoundStormConfig
from soundstorm.sampler import SamplerConfig, generate

__version__ = "0.1.0"
__all__ = ["SoundStorm", "SoundStormConfig", "SamplerConfig", "generate", "corrupt", "Corruption", "__version__"]
