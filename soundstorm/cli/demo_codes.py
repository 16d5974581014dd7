"""`soundstorm-demo-codes`: a random small model generates 30 s of codes; prints shapes and passes.

Shows the decoding contract without any data or training: Q = 12 levels, 1500 frames from 750
semantic ids, a 150-frame (3 s) prompt returned unchanged, and 16 + 11 = 27 forward passes.

Shape letters: see :mod:`soundstorm`.
"""

from __future__ import annotations

import time

import torch

from soundstorm import SamplerConfig, SoundStorm, SoundStormConfig, generate


def main() -> None:
    torch.manual_seed(0)
    config = SoundStormConfig(num_levels=12, codebook_size=1024, semantic_vocab_size=1024, semantic_upsample=2,
                              dim=128, depth=2, heads=4, ff_dim=256, conv_kernel=5)
    model = SoundStorm(config).eval()
    semantic_BS = torch.randint(0, config.semantic_vocab_size, (1, 750))
    prompt_BQT = torch.randint(0, config.codebook_size, (1, config.num_levels, 150))
    passes = []
    model.register_forward_hook(lambda *_: passes.append(1))
    start = time.perf_counter()
    codes_BQT = generate(model, semantic_BS, prompt=prompt_BQT, config=SamplerConfig(),
                         generator=torch.Generator().manual_seed(0))
    seconds = time.perf_counter() - start
    print(f"model: {model.num_parameters():,} parameters (random weights), Q={config.num_levels}")
    print(f"semantic ids: {tuple(semantic_BS.shape)} -> codes: {tuple(codes_BQT.shape)}")
    print(f"forward passes: {len(passes)} (steps {SamplerConfig().resolve(config.num_levels).steps})")
    print(f"prompt unchanged: {bool(torch.equal(codes_BQT[:, :, :150], prompt_BQT))}")
    print(f"generated 30 s of codes in {seconds:.2f} s on CPU")


if __name__ == "__main__":
    main()
