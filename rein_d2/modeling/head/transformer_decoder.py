"""Mask2Former's masked-attention transformer decoder with Rein-linked queries.

Each layer: masked cross-attention to one level of the pixel decoder (cycling coarsest to
finest), self-attention, FFN, each followed by LayerNorm (names as the reference's
Mask2FormerTransformerDecoderLayer). Queries: with Rein's query link, the positional part is
Q in every layer and the initial content querys2feat(Q); otherwise both are learned.
"""
from typing import Dict, List, Optional

import torch
import torch.nn.functional as F
from torch import nn

from .pixel_decoder import FFN
from .position_encoding import SinePositionEncoding


class _Attention(nn.Module):
    """nn.MultiheadAttention with positions added to query and key, and a residual."""

    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.attn = nn.MultiheadAttention(dim, heads, batch_first=True)

    def forward(self, query, key, value, query_pos, key_pos, attn_mask=None):
        out = self.attn(query + query_pos, key + key_pos, value, attn_mask=attn_mask,
                        need_weights=False)[0]
        return query + out


class MaskedDecoderLayer(nn.Module):
    def __init__(self, dim: int, heads: int, ffn_dim: int):
        super().__init__()
        self.self_attn = _Attention(dim, heads)
        self.cross_attn = _Attention(dim, heads)
        self.ffn = FFN(dim, ffn_dim)
        self.norms = nn.ModuleList([nn.LayerNorm(dim) for _ in range(3)])

    def forward(self, query, memory, query_pos, memory_pos, attn_mask):
        query = self.norms[0](self.cross_attn(query, memory, memory, query_pos, memory_pos, attn_mask))
        query = self.norms[1](self.self_attn(query, query, query, query_pos, query_pos))
        return self.norms[2](self.ffn(query))


class MaskedTransformerDecoder(nn.Module):
    def __init__(self, num_layers: int, dim: int, heads: int, ffn_dim: int):
        super().__init__()
        self.layers = nn.ModuleList([MaskedDecoderLayer(dim, heads, ffn_dim) for _ in range(num_layers)])
        self.post_norm = nn.LayerNorm(dim)


class QueryDecoder(nn.Module):
    """Turns the pixel decoder's output and the queries into per-layer class and mask logits.

    The reference keeps these parameters on the head itself (level_embed, cls_embed,
    mask_embed, querys2feat); so does this module, so the names match after a prefix change.
    """

    def __init__(self, *, num_classes: int, dim: int = 256, num_queries: int = 100,
                 num_heads: int = 8, num_layers: int = 9, ffn_dim: int = 2048,
                 num_feature_levels: int = 3, linked_queries: bool = True):
        super().__init__()
        self.num_heads = num_heads
        self.num_queries = num_queries
        self.num_feature_levels = num_feature_levels
        self.transformer_decoder = MaskedTransformerDecoder(num_layers, dim, num_heads, ffn_dim)
        self.decoder_position_encoding = SinePositionEncoding(dim // 2)
        self.level_embed = nn.Embedding(num_feature_levels, dim)
        self.cls_embed = nn.Linear(dim, num_classes + 1)
        self.mask_embed = nn.Sequential(nn.Linear(dim, dim), nn.ReLU(inplace=True),
                                        nn.Linear(dim, dim), nn.ReLU(inplace=True),
                                        nn.Linear(dim, dim))
        self.linked_queries = linked_queries
        if linked_queries:
            self.querys2feat = nn.Linear(dim, dim)
        else:
            self.query_feat = nn.Embedding(num_queries, dim)
            self.query_embed = nn.Embedding(num_queries, dim)

    def initial_queries(self, batch: int, queries: Optional[torch.Tensor]):
        """(content, position) [B, m, D] each."""
        if self.linked_queries:
            if queries is None:
                raise ValueError("this head expects Rein's linked queries: build the backbone "
                                 "with MODEL.REIN.LINK_TOKEN_TO_QUERY True")
            if queries.shape[-2] != self.num_queries:
                raise ValueError(f"Rein gives {queries.shape[-2]} queries but the head has "
                                 f"{self.num_queries}: MODEL.REIN.TOKEN_LENGTH must equal the "
                                 "number of queries")
            pos = queries.expand(batch, -1, -1) if queries.dim() == 2 else queries
            return self.querys2feat(pos), pos
        content = self.query_feat.weight.unsqueeze(0).expand(batch, -1, -1)
        return content, self.query_embed.weight.unsqueeze(0).expand(batch, -1, -1)

    def predict(self, query: torch.Tensor, mask_features: torch.Tensor, mask_size):
        """Class logits, mask logits and the next layer's attention mask (True = blocked)."""
        out = self.transformer_decoder.post_norm(query)
        cls = self.cls_embed(out)
        masks = torch.einsum("bqc,bchw->bqhw", self.mask_embed(out), mask_features)
        attn = F.interpolate(masks, size=mask_size, mode="bilinear", align_corners=False)
        attn = attn.flatten(2).sigmoid() < 0.5  # [B, Q, hw]
        return cls, masks, attn.detach()

    def attention_mask(self, query: torch.Tensor, features: torch.Tensor) -> torch.Tensor:
        """The next layer's attention mask alone, from mask features already resized to the
        attention level. Resizing is linear per channel, so it commutes with the mask
        embedding: the same logits as predict()'s, without the full-resolution masks."""
        emb = self.mask_embed(self.transformer_decoder.post_norm(query))
        logits = torch.einsum("bqc,bchw->bqhw", emb, features)
        return (logits.flatten(2).sigmoid() < 0.5).detach()

    def forward(self, mask_features: torch.Tensor, memories: List[torch.Tensor],
                queries: Optional[torch.Tensor] = None, stages: Optional[Dict] = None,
                all_layers: bool = True):
        """memories: the pixel decoder's maps, coarsest first. Returns per-prediction lists of
        class logits [B, Q, K+1] and mask logits [B, Q, H/4, W/4]: the prediction before the
        first layer, then one per layer. ``stages``, when given, collects intermediates.

        ``all_layers=False`` (inference) returns the last prediction only: earlier layers then
        compute just their attention masks, at the attention levels' sizes."""
        b = mask_features.shape[0]
        inputs, positions = [], []
        for i, mem in enumerate(memories[: self.num_feature_levels]):
            inputs.append(mem.flatten(2).transpose(1, 2) + self.level_embed.weight[i].view(1, 1, -1))
            positions.append(self.decoder_position_encoding(mem).flatten(2).transpose(1, 2))
        query, query_pos = self.initial_queries(b, queries)
        if stages is not None:
            stages["query_feat0"] = query
            stages.setdefault("attn_masks", [])
            stages.setdefault("decoder_layer_outputs", [])
        shapes = [m.shape[-2:] for m in memories]
        all_layers = all_layers or not self.transformer_decoder.layers
        if all_layers:
            cls, masks, attn = self.predict(query, mask_features, shapes[0])
            cls_list, mask_list = [cls], [masks]
        else:
            resized = [F.interpolate(mask_features, size=s, mode="bilinear", align_corners=False)
                       for s in shapes[: self.num_feature_levels]]
            attn = self.attention_mask(query, resized[0])
            cls_list, mask_list = [], []
        last = len(self.transformer_decoder.layers) - 1
        for i, layer in enumerate(self.transformer_decoder.layers):
            level = i % self.num_feature_levels
            if stages is not None:
                stages["attn_masks"].append(attn)
            # A query whose mask blocks everything attends everywhere instead.
            attn = attn & ~attn.all(dim=-1, keepdim=True)
            attn = attn.repeat_interleave(self.num_heads, dim=0)  # [B * heads, Q, hw]
            query = layer(query, inputs[level], query_pos, positions[level], attn)
            if stages is not None:
                stages["decoder_layer_outputs"].append(query)
            level = (i + 1) % self.num_feature_levels
            if all_layers or i == last:
                cls, masks, attn = self.predict(query, mask_features, shapes[level])
                cls_list.append(cls)
                mask_list.append(masks)
            else:
                attn = self.attention_mask(query, resized[level])
        if stages is not None:
            stages["attn_masks"].append(attn)
        return cls_list, mask_list
