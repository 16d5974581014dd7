"""soundstorm: SoundStorm (Borsos et al., 2023) in PyTorch, for CPU, CUDA and TPU (torch_xla).

Where the paper lives:
  §3.1 model     → :mod:`soundstorm.model` (embeddings, heads) and :mod:`soundstorm.conformer`
  §3.2 training  → :mod:`soundstorm.masking`
  §3.3 decoding  → :mod:`soundstorm.sampler`
  text → semantic (the dialogue's first stage) → :mod:`soundstorm.t2s`; the dialogue → :mod:`soundstorm.dialogue`
"""

from soundstorm.masking import Corruption, corrupt
from soundstorm.model import SoundStorm, SoundStormConfig
from soundstorm.sampler import SamplerConfig, generate
from soundstorm.t2s import T2SConfig, TextToSemantic

__version__ = "0.1.0"
__all__ = ["SoundStorm", "SoundStormConfig", "SamplerConfig", "generate", "corrupt", "Corruption", "T2SConfig",
           "TextToSemantic", "__version__"]
