"""Masked-attention transformer decoder (paper 3.2).

Learnable query features and positions (3.2.3) are refined by `decoder_layers` layers, each doing masked attention
(3.2.1) to one scale of the pixel decoder's pyramid, round robin from 1/32 to 1/8 (3.2.2), then self-attention, then
an FFN. A mask and a class are predicted from the queries before the first layer and after every layer.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F
from transformers.activations import ACT2FN
from transformers.modeling_layers import GradientCheckpointingLayer

from .position_encoding import sine_position_embedding


class Attention(nn.Module):
    """Multi-head attention with separate q/k/v projections; runs on `scaled_dot_product_attention` unless the
    attention weights are asked for."""

    def __init__(self, *, embed_dim: int, num_heads: int, dropout: float) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = embed_dim // num_heads
        self.dropout = dropout
        self.q_proj = nn.Linear(embed_dim, embed_dim)
        self.k_proj = nn.Linear(embed_dim, embed_dim)
        self.v_proj = nn.Linear(embed_dim, embed_dim)
        self.out_proj = nn.Linear(embed_dim, embed_dim)

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        batch, length, _ = x.shape
        return x.view(batch, length, self.num_heads, self.head_dim).transpose(1, 2)  # (B, heads, length, head_dim)

    def forward(
        self,
        query: torch.Tensor,
        key: torch.Tensor,
        value: torch.Tensor,
        *,
        attn_mask: torch.Tensor | None = None,
        return_weights: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """`attn_mask`: boolean `(batch, 1, num_queries, num_keys)`, True where attention is allowed."""
        batch, num_queries, embed_dim = query.shape
        q = self._heads(self.q_proj(query))
        k = self._heads(self.k_proj(key))
        v = self._heads(self.v_proj(value))
        dropout = self.dropout if self.training else 0.0
        weights = None
        if return_weights:
            scores = (q * self.head_dim**-0.5) @ k.transpose(-1, -2)  # (B, heads, Q, K)
            if attn_mask is not None:
                scores = scores.masked_fill(~attn_mask, float("-inf"))
            weights = scores.softmax(-1)
            out = F.dropout(weights, dropout, self.training) @ v
        else:
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, dropout_p=dropout)
        out = out.transpose(1, 2).reshape(batch, num_queries, embed_dim)  # (B, Q, C)
        return self.out_proj(out), weights


class MaskedAttentionDecoderLayer(GradientCheckpointingLayer):
    """Masked cross-attention, then self-attention, then FFN (the order of paper 3.2.3); post-norm by default."""

    def __init__(
        self, *, hidden_dim: int, num_heads: int, ffn_dim: int, dropout: float, activation: str, pre_norm: bool
    ) -> None:
        super().__init__()
        self.cross_attn = Attention(embed_dim=hidden_dim, num_heads=num_heads, dropout=dropout)
        self.cross_attn_layer_norm = nn.LayerNorm(hidden_dim)
        self.self_attn = Attention(embed_dim=hidden_dim, num_heads=num_heads, dropout=dropout)
        self.self_attn_layer_norm = nn.LayerNorm(hidden_dim)
        self.fc1 = nn.Linear(hidden_dim, ffn_dim)
        self.fc2 = nn.Linear(ffn_dim, hidden_dim)
        self.final_layer_norm = nn.LayerNorm(hidden_dim)
        self.activation = ACT2FN[activation]
        self.dropout = dropout
        self.pre_norm = pre_norm

    def _residual(self, x: torch.Tensor, update: torch.Tensor) -> torch.Tensor:
        return x + F.dropout(update, self.dropout, self.training)

    def forward(
        self,
        hidden_states: torch.Tensor,
        query_position: torch.Tensor,
        memory: torch.Tensor,
        memory_key: torch.Tensor,
        attn_mask: torch.Tensor | None,
        return_weights: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        """
        Args:
            hidden_states: `(batch, num_queries, hidden_dim)`.
            query_position: `(batch or 1, num_queries, hidden_dim)` learnable query positions.
            memory: `(batch, h*w, hidden_dim)` one level of the pixel decoder, with its level embedding.
            memory_key: `memory` plus the level's sine positions, `(batch, h*w, hidden_dim)` (computed once per level
                and shared by the layers that attend to it).
            attn_mask: `(batch, 1, num_queries, h*w)` boolean, True where a query may attend.
        """
        x = hidden_states
        norm = (lambda module, t: module(t)) if self.pre_norm else (lambda module, t: t)
        post = (lambda module, t: t) if self.pre_norm else (lambda module, t: module(t))

        # paper 3.2.1: masked attention, restricted to the foreground of the previous layer's mask
        h = norm(self.cross_attn_layer_norm, x)
        update, cross_weights = self.cross_attn(
            h + query_position, memory_key, memory, attn_mask=attn_mask, return_weights=return_weights
        )
        x = post(self.cross_attn_layer_norm, self._residual(x, update))

        h = norm(self.self_attn_layer_norm, x)
        q = h + query_position
        update, self_weights = self.self_attn(q, q, h, return_weights=return_weights)
        x = post(self.self_attn_layer_norm, self._residual(x, update))

        h = norm(self.final_layer_norm, x)
        update = self.fc2(F.dropout(self.activation(self.fc1(h)), self.dropout, self.training))
        x = post(self.final_layer_norm, self._residual(x, update))
        return x, self_weights, cross_weights


class MLP(nn.Module):
    """A stack of Linear layers with ReLU in between (the mask embedding head)."""

    def __init__(self, *, input_dim: int, hidden_dim: int, output_dim: int, num_layers: int) -> None:
        super().__init__()
        dims = [input_dim] + [hidden_dim] * (num_layers - 1) + [output_dim]
        self.layers = nn.ModuleList(nn.Linear(d_in, d_out) for d_in, d_out in zip(dims[:-1], dims[1:]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for i, layer in enumerate(self.layers):
            x = layer(x)
            if i < len(self.layers) - 1:
                x = F.relu(x)
        return x


@dataclass
class TransformerDecoderOutput:
    """Outputs of the masked-attention decoder.

    Attributes:
        last_hidden_state: `(batch, num_queries, hidden_dim)` output of the last layer (before the final norm).
        intermediate_hidden_states: `decoder_layers + 1` normalised query states `(batch, num_queries, hidden_dim)`,
            from the learnable queries and every layer; the class head reads these.
        masks_queries_logits: `decoder_layers + 1` mask logits `(batch, num_queries, H/4, W/4)` (all but the last
            None when the decoder ran with `intermediate_masks=False`).
        hidden_states: inputs of every layer plus the last output, when asked for.
        attentions: per layer `(self-attention weights, masked-attention weights)`, when asked for.
    """

    last_hidden_state: torch.Tensor
    intermediate_hidden_states: tuple[torch.Tensor, ...]
    masks_queries_logits: tuple[torch.Tensor, ...]
    hidden_states: tuple[torch.Tensor, ...] | None = None
    attentions: tuple[tuple[torch.Tensor, torch.Tensor], ...] | None = None


class _MaskLogitsSparseBackward(torch.autograd.Function):
    """`bmm(embeddings, mask_features)` whose backward skips the queries that get no gradient.

    In training the mask losses reach only the matched queries (a few of the 100 per image): every other row of
    the incoming (B, Q, H*W) gradient is exactly zero, and so is its contribution to both input gradients. The
    backward multiplies only the nonzero rows; the result is the same as the dense products'.
    """

    @staticmethod
    def forward(ctx, embeddings, flat_features):  # (B, Q, C), (B, C, H*W)
        ctx.save_for_backward(embeddings, flat_features)
        return torch.bmm(embeddings, flat_features)

    @staticmethod
    def backward(ctx, grad):
        saved_embeddings, saved_features = ctx.saved_tensors
        # under autocast the product ran in half precision: differentiate in that precision, return input dtypes
        embeddings, flat_features = saved_embeddings.to(grad.dtype), saved_features.to(grad.dtype)
        grad_embeddings, grad_features = _MaskLogitsSparseBackward._gradients(ctx, grad, embeddings, flat_features)
        if grad_embeddings is not None:
            grad_embeddings = grad_embeddings.to(saved_embeddings.dtype)
        if grad_features is not None:
            grad_features = grad_features.to(saved_features.dtype)
        return grad_embeddings, grad_features

    @staticmethod
    def _gradients(ctx, grad, embeddings, flat_features):
        need_embeddings, need_features = ctx.needs_input_grad
        live = grad.abs().amax(-1) != 0  # (B, Q): queries with any gradient (NaN counts as gradient)
        if torch.compiler.is_compiling() or bool(live.all()):
            grad_embeddings = torch.bmm(grad, flat_features.transpose(1, 2)) if need_embeddings else None
            grad_features = torch.bmm(embeddings.transpose(1, 2), grad) if need_features else None
            return grad_embeddings, grad_features
        grad_embeddings = torch.zeros_like(embeddings) if need_embeddings else None
        grad_features = torch.empty_like(flat_features) if need_features else None
        for image in range(grad.shape[0]):
            rows = live[image].nonzero().flatten()
            if rows.numel() == 0:
                if need_features:
                    grad_features[image].zero_()
                continue
            block = grad[image].index_select(0, rows)  # (n, H*W)
            if need_embeddings:
                grad_embeddings[image].index_copy_(0, rows, block @ flat_features[image].t())
            if need_features:
                torch.mm(embeddings[image].index_select(0, rows).t(), block, out=grad_features[image])
        return grad_embeddings, grad_features


def _mask_logits(embeddings: torch.Tensor, mask_features: torch.Tensor) -> torch.Tensor:
    """(B, Q, C) mask embeddings x (B, C, H, W) per-pixel embeddings -> (B, Q, H, W) logits."""
    batch, channels, height, width = mask_features.shape
    # (B, Q, C) @ (B, C, H*W) -> (B, Q, H*W); a plain bmm avoids the copy einsum makes of its output
    flat = mask_features.reshape(batch, channels, height * width)
    # On the CPU the backward skips the queries without gradient; on an accelerator finding them would stall the
    # device queue (a host sync per image and layer) to save products that are cheap there.
    sparse_backward = flat.device.type == "cpu" and (embeddings.requires_grad or flat.requires_grad)
    if torch.is_grad_enabled() and sparse_backward:
        masks = _MaskLogitsSparseBackward.apply(embeddings, flat)
    else:
        masks = torch.bmm(embeddings, flat)
    return masks.view(batch, -1, height, width)


def _bilinear_taps(source: int, target: int) -> torch.Tensor | None:
    """The source rows that a bilinear (align_corners=False) downsampling by an even integer factor reads.

    With factor k, output i samples source position k*i + k/2 - 1/2, i.e. rows k*i + k/2 - 1 and k*i + k/2 with
    weights 1/2 each; resizing just those 2 * target rows by a factor of 2 reads the same rows with the same weights.
    None when the factor is not an even integer of at least 4 (then every row is read anyway, or the taps vary).
    """
    if source % target:
        return None
    factor = source // target
    if factor < 4 or factor % 2:
        return None
    low = torch.arange(target) * factor + factor // 2 - 1
    return torch.stack((low, low + 1), dim=1).flatten()


def _select_taps(x: torch.Tensor, dim: int, factor: int) -> torch.Tensor:
    """The rows `_bilinear_taps` lists, by two strided slices (every `factor`-th row from k/2 - 1 and from k/2)
    interleaved: the same values as `index_select` with those indices, which is 20x slower along the last dimension
    (21 vs 0.9 ms for a 256-channel 64x128 map on the project's CPU)."""
    first, second = [slice(None)] * x.dim(), [slice(None)] * x.dim()
    first[dim] = slice(factor // 2 - 1, None, factor)
    second[dim] = slice(factor // 2, None, factor)
    return torch.stack((x[tuple(first)], x[tuple(second)]), dim + 1).flatten(dim, dim + 1)


def _resized_mask_logits(embeddings: torch.Tensor, mask_features: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """`interpolate(_mask_logits(embeddings, mask_features), size)` computing only the logits the resize reads.

    The attention masks of the 1/32 and 1/16 levels need a 16th and a 4th of the 1/4-resolution logits; the same
    products on the same rows, resized with the same weights, give the same values (a test checks equality).
    """
    for dim, target in ((2, size[0]), (3, size[1])):
        if _bilinear_taps(mask_features.shape[dim], target) is not None:
            mask_features = _select_taps(mask_features, dim, mask_features.shape[dim] // target)
    logits = _mask_logits(embeddings, mask_features)
    return F.interpolate(logits, size=size, mode="bilinear", align_corners=False)


class MaskedAttentionDecoder(nn.Module):
    def __init__(
        self,
        *,
        in_channels: int,
        hidden_dim: int,
        mask_feature_size: int,
        num_queries: int,
        num_layers: int,
        num_heads: int,
        ffn_dim: int,
        dropout: float,
        activation: str,
        pre_norm: bool,
        num_levels: int,
        enforce_input_projection: bool,
    ) -> None:
        super().__init__()
        self.hidden_dim = hidden_dim
        self.num_heads = num_heads
        self.num_levels = num_levels
        # paper 3.2.3: learnable query features X_0 and learnable query positions
        self.query_features = nn.Embedding(num_queries, hidden_dim)
        self.query_position = nn.Embedding(num_queries, hidden_dim)
        # paper 3.2.2: learnable scale-level embedding e_vl
        self.level_embed = nn.Embedding(num_levels, hidden_dim)
        project = in_channels != hidden_dim or enforce_input_projection
        self.input_projections = nn.ModuleList(
            nn.Conv2d(in_channels, hidden_dim, kernel_size=1) if project else nn.Identity() for _ in range(num_levels)
        )
        self.layers = nn.ModuleList(
            MaskedAttentionDecoderLayer(
                hidden_dim=hidden_dim,
                num_heads=num_heads,
                ffn_dim=ffn_dim,
                dropout=dropout,
                activation=activation,
                pre_norm=pre_norm,
            )
            for _ in range(num_layers)
        )
        self.layer_norm = nn.LayerNorm(hidden_dim)
        self.mask_embed = MLP(input_dim=hidden_dim, hidden_dim=hidden_dim, output_dim=mask_feature_size, num_layers=3)

    def predict_masks(
        self,
        queries: torch.Tensor,
        mask_features: torch.Tensor,
        attention_size: tuple[int, int] | None,
        *,
        full_masks: bool = True,
    ) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """Mask logits of the (normalised) queries, and the attention mask for the next layer at `attention_size`.

        Returns `(batch, Q, H/4, W/4)` logits (None when `full_masks` is False) and a boolean `(batch, 1, Q, h*w)`
        mask, True where attention is allowed.
        """
        embeddings = self.mask_embed(queries)  # (B, Q, mask_dim)
        masks = _mask_logits(embeddings, mask_features) if full_masks or attention_size is None else None
        if attention_size is None:
            return masks, None
        if masks is not None:
            resized = F.interpolate(masks, size=attention_size, mode="bilinear", align_corners=False)
        else:
            resized = _resized_mask_logits(embeddings, mask_features, attention_size)
        # paper 3.2.1, eq. 3: attend where the previous prediction, thresholded at 0.5, is foreground.
        allowed = (resized.sigmoid() >= 0.5).flatten(2)  # (B, Q, h*w)
        # A query whose mask is empty would attend to nothing: let it attend everywhere instead.
        allowed = allowed | ~allowed.any(-1, keepdim=True)
        return masks, allowed.unsqueeze(1).detach()

    def forward(
        self,
        multi_scale_features: tuple[torch.Tensor, ...],
        mask_features: torch.Tensor,
        *,
        output_hidden_states: bool = False,
        output_attentions: bool = False,
        intermediate_masks: bool = True,
    ) -> TransformerDecoderOutput:
        """`multi_scale_features`: `num_levels` maps `(batch, C, h_l, w_l)`, lowest resolution first.

        With `intermediate_masks=False` (inference without auxiliary outputs) only the last layer's full-resolution
        masks are computed; the earlier entries of `masks_queries_logits` are None, and their attention masks come
        from just the logits the bilinear resize reads (same values, less work).
        """
        batch = mask_features.shape[0]
        memories, memory_keys, sizes = [], [], []
        for level in range(self.num_levels):
            feature = multi_scale_features[level]
            height, width = feature.shape[-2:]
            sizes.append((height, width))
            pos = sine_position_embedding(
                height, width, num_features=self.hidden_dim // 2, device=feature.device, dtype=feature.dtype
            )
            memory = self.input_projections[level](feature).flatten(2) + self.level_embed.weight[level][None, :, None]
            memories.append(memory.transpose(1, 2))  # (B, h*w, C)
            # keys of the masked attention: memory plus positions, once per level for the layers that use it
            memory_keys.append(memories[-1] + pos.flatten(1).transpose(0, 1)[None])

        query_position = self.query_position.weight[None].expand(batch, -1, -1)
        hidden = self.query_features.weight[None].expand(batch, -1, -1)

        normed = self.layer_norm(hidden)
        masks, attn_mask = self.predict_masks(normed, mask_features, sizes[0], full_masks=intermediate_masks)
        intermediate, all_masks = (normed,), (masks,)
        all_hidden = () if output_hidden_states else None
        all_attentions = () if output_attentions else None
        num_layers = len(self.layers)
        for index, layer in enumerate(self.layers):
            if output_hidden_states:
                all_hidden += (hidden,)
            level = index % self.num_levels  # paper 3.2.2: round robin over the scales
            hidden, self_weights, cross_weights = layer(
                hidden, query_position, memories[level], memory_keys[level], attn_mask, output_attentions
            )
            if output_attentions:
                all_attentions += ((self_weights, cross_weights),)
            normed = self.layer_norm(hidden)
            last = index + 1 == num_layers
            next_size = None if last else sizes[(index + 1) % self.num_levels]
            masks, attn_mask = self.predict_masks(
                normed, mask_features, next_size, full_masks=intermediate_masks or last
            )
            intermediate += (normed,)
            all_masks += (masks,)
        if output_hidden_states:
            all_hidden += (hidden,)
        return TransformerDecoderOutput(
            last_hidden_state=hidden,
            intermediate_hidden_states=intermediate,
            masks_queries_logits=all_masks,
            hidden_states=all_hidden,
            attentions=all_attentions,
        )
