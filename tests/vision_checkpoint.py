"""A tiny EXAONE 4.5 checkpoint (text + vision) for the projector tests.

Made with transformers' own `Exaone4_5_ForConditionalGeneration` (the `reference` extra) so the tensor names and
config keys are the real ones; weights are random but scaled so the vision tower's output is not degenerate.
Swap `make_tiny_exaone45` for `exaone-gguf make-tiny exaone4.5` once that family recipe exists.
"""

from __future__ import annotations

import json
from pathlib import Path

VISION = {
    "model_type": "exaone4_5_vision",
    "depth": 4,
    "hidden_size": 64,
    "hidden_act": "silu",
    "intermediate_size": 128,
    "num_heads": 4,
    "num_key_value_heads": 2,
    "in_channels": 3,
    "patch_size": 14,
    "spatial_merge_size": 2,
    "temporal_patch_size": 2,
    "window_size": 112,
    "fullatt_block_indexes": [1, 3],
    "out_hidden_size": 256,
}

TEXT = {
    "model_type": "exaone4",
    "architectures": ["Exaone4ForCausalLM"],
    "bos_token_id": 1,
    "eos_token_id": 53,
    "pad_token_id": 0,
    "head_dim": 64,
    "hidden_act": "silu",
    "hidden_size": 256,
    "intermediate_size": 512,
    "max_position_embeddings": 4096,
    "num_attention_heads": 4,
    "num_hidden_layers": 2,
    "num_key_value_heads": 2,
    "rms_norm_eps": 1e-05,
    "rope_theta": 1000000,
    "sliding_window": 4096,
    "sliding_window_pattern": "LLLG",
    "layer_types": ["full_attention", "full_attention"],
    "tie_word_embeddings": False,
    "vocab_size": 256,
}

# Qwen2VLImageProcessor settings; clip's smart resize keeps an image whose sides are multiples of 28 and whose
# area lies between min and max pixels as it is (the test image is 224 x 336: 2 x 3 windows of 112 pixels).
PREPROCESSOR = {
    "image_processor_type": "Qwen2VLImageProcessor",
    "min_pixels": 3136,
    "max_pixels": 200704,
    "patch_size": 14,
    "merge_size": 2,
    "temporal_patch_size": 2,
    "image_mean": [0.48145466, 0.4578275, 0.40821073],
    "image_std": [0.26862954, 0.26130258, 0.27577711],
}


def make_tiny_exaone45(out: Path, seed: int = 0, vision: dict | None = None) -> Path:
    """Write config.json, model.safetensors (float32) and preprocessor_config.json of a tiny EXAONE 4.5."""
    import torch
    from transformers import Exaone4_5_Config, Exaone4_5_ForConditionalGeneration

    torch.manual_seed(seed)
    cfg = Exaone4_5_Config(text_config=dict(TEXT), vision_config=dict(vision or VISION))
    cfg.architectures = ["Exaone4_5_ForConditionalGeneration"]
    model = Exaone4_5_ForConditionalGeneration(cfg).to(torch.float32)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("norm.weight") or ".norm" in name or "ln_q" in name:
                p.copy_(1.0 + 0.1 * torch.randn_like(p))
            elif name.endswith(".bias"):
                p.copy_(0.02 * torch.randn_like(p))
            else:
                p.copy_(
                    torch.randn_like(p)
                    / max(1.0, p.shape[-1] ** 0.5 if p.ndim == 2 else 1.0)
                    * (1.0 if p.ndim == 2 else 0.05)
                )
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out, safe_serialization=True)
    (out / "preprocessor_config.json").write_text(json.dumps(PREPROCESSOR, indent=2))
    return out
