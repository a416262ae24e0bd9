"""MultiTab-Net: a transformer over one token per feature (a pooled sparse feature, the pair
products, each dense float) and one learned token per task."""

from __future__ import annotations

from recmtl.config import ModelConfig
from recmtl.models.architecture import Architecture, BackboneInputs
from recmtl.modules.multitab import MultiTab, MultiTabTransformer
from recmtl.modules.tokens import FeatureTokenizer


def build(model: ModelConfig, inputs: BackboneInputs, tasks: list[str]) -> MultiTab:
    """A token per block of ``inputs.blocks``, then one per dense column; without blocks every
    column is a token of its own."""
    tokenizer = FeatureTokenizer(block_widths=list(inputs.blocks), num_scalars=inputs.num_scalars,
                                 dim=model.multitab_dim)
    encoder = MultiTabTransformer(dim=model.multitab_dim, num_features=tokenizer.num_tokens,
                                  num_tasks=len(tasks), num_layers=model.multitab_layers,
                                  num_heads=model.multitab_heads,
                                  features_see_tasks=model.multitab_features_see_tasks)
    return MultiTab(tokenizer=tokenizer, encoder=encoder)


ARCH = Architecture(build, about="a transformer over feature tokens and one token per task")
