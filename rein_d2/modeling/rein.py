"""The Rein module: learnable low-rank tokens that refine a frozen ViT after its blocks.

Parameter names follow the reference release (``learnable_tokens_a``, ``learnable_tokens_b``,
``scale``, ``mlp_token2feat``, ``mlp_delta_f``, ``transform``, ``merge``) so that a released
``backbone.reins.*`` state dict loads after a prefix change only.
"""
import math
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["Rein"]


class Rein(nn.Module):
    """Refines patch tokens after each of ``num_layers`` blocks (docs/method.md sections 1-2).

    Args:
        num_layers: L, number of refined blocks (one token set each; MLPs are shared).
        embed_dim: C, the ViT width.
        patch_size: p, only used by the token initialisation bound.
        token_length: m, tokens per layer; token 0 is the "null" token.
        lora_dim: r, rank of the token factorisation; 0 keeps a full [L, m, C] tensor.
        query_dim: D, width of the linked Mask2Former queries.
        link_token_to_query: build queries from the tokens (``transform`` + ``merge``).
        use_softmax: softmax(f T^T / sqrt(C)) over tokens; off uses the raw similarities.
        scale_init: initial value of the learnable scale.
        zero_mlp_delta_f: zero-initialise ``mlp_delta_f`` and fix the scale to 1.
    """

    def __init__(
        self,
        *,
        num_layers: int,
        embed_dim: int,
        patch_size: int = 16,
        token_length: int = 100,
        lora_dim: int = 16,
        query_dim: int = 256,
        link_token_to_query: bool = True,
        use_softmax: bool = True,
        scale_init: float = 1e-3,
        zero_mlp_delta_f: bool = False,
    ):
        super().__init__()
        if token_length < 2:
            raise ValueError(f"token_length must be >= 2 (token 0 is the null token), got {token_length}")
        self.num_layers = num_layers
        self.embed_dim = embed_dim
        self.token_length = token_length
        self.lora_dim = lora_dim
        self.use_softmax = use_softmax
        self.link_token_to_query = link_token_to_query

        if lora_dim > 0:
            bound = math.sqrt(6.0 / (3 * patch_size**2 + math.sqrt(embed_dim * lora_dim)))
            self.learnable_tokens_a = nn.Parameter(torch.empty(num_layers, token_length, lora_dim))
            self.learnable_tokens_b = nn.Parameter(torch.empty(num_layers, lora_dim, embed_dim))
            nn.init.uniform_(self.learnable_tokens_a, -bound, bound)
            nn.init.uniform_(self.learnable_tokens_b, -bound, bound)
        else:
            bound = math.sqrt(6.0 / (3 * patch_size**2 + embed_dim))
            self.learnable_tokens = nn.Parameter(torch.empty(num_layers, token_length, embed_dim))
            nn.init.uniform_(self.learnable_tokens, -bound, bound)

        self.mlp_token2feat = nn.Linear(embed_dim, embed_dim)
        self.mlp_delta_f = nn.Linear(embed_dim, embed_dim)
        if zero_mlp_delta_f:
            # The refinement starts as an exact no-op; the fixed scale is then redundant.
            nn.init.zeros_(self.mlp_delta_f.weight)
            nn.init.zeros_(self.mlp_delta_f.bias)
            self.register_buffer("scale", torch.tensor(1.0), persistent=False)
        else:
            self.scale = nn.Parameter(torch.tensor(float(scale_init)))

        if link_token_to_query:
            self.transform = nn.Linear(embed_dim, query_dim)
            self.merge = nn.Linear(3 * query_dim, query_dim)

    def tokens(self, layer: Optional[int] = None) -> torch.Tensor:
        """T_i = A_i @ B_i for one layer ([m, C]), or all layers ([L, m, C]) when layer is None."""
        if self.lora_dim > 0:
            if layer is None:
                return self.learnable_tokens_a @ self.learnable_tokens_b
            return self.learnable_tokens_a[layer] @ self.learnable_tokens_b[layer]
        return self.learnable_tokens if layer is None else self.learnable_tokens[layer]

    def forward(self, x: torch.Tensor, layer: int, num_prefix_tokens: int = 1) -> torch.Tensor:
        """Refine block ``layer``'s output ``x`` [B, P + N, C]; the P prefix tokens
        (cls, registers) pass through unchanged."""
        prefix, feats = x[:, :num_prefix_tokens], x[:, num_prefix_tokens:]
        feats = feats + self.scale * self.delta_f(feats, self.tokens(layer))
        return torch.cat([prefix, feats], dim=1) if num_prefix_tokens else feats

    def delta_f(self, feats: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        attn = feats @ tokens.t()  # [B, N, m]
        if self.use_softmax:
            attn = F.softmax(attn * self.embed_dim**-0.5, dim=-1)
        # Token 0 takes part in the softmax, but its column is dropped: a "null" token that lets
        # a patch attend to nothing. Its row of the right-hand side is zero instead of slicing
        # the column off: the same sum, without copying the strided [B, N, m - 1] slice.
        token_feats = F.pad(self.mlp_token2feat(tokens[1:]), (0, 0, 1, 0))
        return self.mlp_delta_f(attn @ token_feats + feats)

    def linked_queries(self) -> Optional[torch.Tensor]:
        """The Mask2Former queries Q [m, D] made from all layers' tokens (None if unlinked)."""
        if not self.link_token_to_query:
            return None
        x = self.transform(self.tokens())  # [L, m, D]
        # Per token and channel: max, mean and last layer, interleaved per channel -> [m, 3D].
        stats = torch.stack([x.amax(dim=0), x.mean(dim=0), x[-1]], dim=-1)
        return self.merge(stats.flatten(-2))
