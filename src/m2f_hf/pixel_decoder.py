"""Multi-scale deformable-attention pixel decoder (paper 4.1, "Pixel decoder"; Deformable DETR's MSDeformAttn).

Six MSDeformAttn encoder layers refine the 1/32, 1/16 and 1/8 backbone features jointly; a lateral connection with
upsampling then adds the 1/4 map, and a 1x1 projection of it gives the per-pixel embeddings that the transformer
decoder's mask embeddings are multiplied with.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F
from transformers.activations import ACT2FN
from transformers.modeling_layers import GradientCheckpointingLayer

from .fused_linear import apply, conv1x1, conv1x1_nchw, fusion_applies, has_weight_tensor, linear
from .ops import multi_scale_deformable_attention, winograd
from .position_encoding import sine_position_embedding


class _SmallSoftmax(torch.autograd.Function):
    """Softmax over a short last dimension (the levels x points of one head, 12 by default).

    torch's softmax kernel is several times slower than plain reductions for rows this short; same formula
    (exp(x - max) / sum), so the results agree to float rounding.
    """

    @staticmethod
    def forward(ctx, logits):
        probs = (logits - logits.amax(-1, keepdim=True)).exp_()
        probs = probs.div_(probs.sum(-1, keepdim=True))
        ctx.save_for_backward(probs)
        return probs

    @staticmethod
    def backward(ctx, grad):
        (probs,) = ctx.saved_tensors
        weighted = grad * probs
        return weighted.sub_(probs * weighted.sum(-1, keepdim=True))


class MultiScaleDeformableAttention(nn.Module):
    """Deformable attention over several feature levels: each query samples `num_points` locations per head and
    level around its reference point and takes their softmax-weighted sum."""

    def __init__(self, *, embed_dim: int, num_heads: int, num_levels: int, num_points: int) -> None:
        super().__init__()
        self.embed_dim = embed_dim
        self.num_heads = num_heads
        self.num_levels = num_levels
        self.num_points = num_points
        self.sampling_offsets = nn.Linear(embed_dim, num_heads * num_levels * num_points * 2)
        self.attention_weights = nn.Linear(embed_dim, num_heads * num_levels * num_points)
        self.value_proj = nn.Linear(embed_dim, embed_dim)
        self.output_proj = nn.Linear(embed_dim, embed_dim)

    def forward(
        self,
        query: torch.Tensor,
        value_input: torch.Tensor,
        *,
        reference_points: torch.Tensor,
        spatial_shapes: torch.Tensor,
        level_start_index: torch.Tensor,
        return_weights: bool = False,
        residual: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """
        Args:
            query: `(batch, num_queries, embed_dim)`, features plus positional embeddings.
            value_input: `(batch, num_keys, embed_dim)`, the flattened levels.
            reference_points: `(num_queries, 2)` normalised (x, y), shared by the batch and the levels.
            spatial_shapes: `(num_levels, 2)` int64 (height, width).
            level_start_index: `(num_levels,)` int64.
            residual: added to the output projection's result (in the same call where `fused_linear` applies).
        """
        batch, num_queries, _ = query.shape
        num_keys = value_input.shape[1]
        heads, levels, points = self.num_heads, self.num_levels, self.num_points
        value = apply(self.value_proj, value_input)
        value = value.view(batch, num_keys, heads, self.embed_dim // heads)
        # Offsets and attention logits read the same query: one matrix product instead of two. Offsets are in
        # pixels of each level and are normalised by its (width, height): dividing the offset rows of the weights
        # and bias does that inside the product instead of in a pass over the (queries, heads, levels, points, 2)
        # result.
        num_offsets = self.sampling_offsets.out_features
        normalizer = spatial_shapes.flip(-1).to(query.dtype)  # (num_levels, 2) as (width, height)
        normalizer = normalizer[None, :, None, :].expand(heads, levels, points, 2).reshape(num_offsets, 1)
        if has_weight_tensor(self.sampling_offsets) and has_weight_tensor(self.attention_weights):
            projected = linear(
                query,
                torch.cat((self.sampling_offsets.weight / normalizer, self.attention_weights.weight)),
                torch.cat((self.sampling_offsets.bias / normalizer[:, 0], self.attention_weights.bias)),
            )
            offsets, logits = projected[..., :num_offsets], projected[..., num_offsets:]
        else:  # int8 modules: two products, the offsets normalised after
            offsets = self.sampling_offsets(query) / normalizer[:, 0]
            logits = self.attention_weights(query)
        offsets = offsets.reshape(batch, num_queries, heads, levels, points, 2)
        logits = logits.reshape(batch, num_queries, heads, levels * points)
        # torch's fused softmax on accelerators; on the CPU its kernel is slow for rows this short
        if logits.dtype in (torch.bfloat16, torch.float16):
            # half precision: the weights and the locations (float32 reference points + offsets) in float32, as
            # the sampling computes them (8 mantissa bits would move a point by a quarter pixel at 64 pixels)
            logits = logits.float()
        probs = _SmallSoftmax.apply(logits) if logits.device.type == "cpu" else logits.softmax(-1)
        weights = probs.view(batch, num_queries, heads, levels, points)
        locations = reference_points[None, :, None, None, None, :] + offsets.to(reference_points.dtype)
        output = multi_scale_deformable_attention(value, spatial_shapes, level_start_index, locations, weights)
        attended = apply(self.output_proj, output, residual=residual)
        return attended, (weights if return_weights else None)


# tokens per block of the encoder FFN on the CPU (a 4 MB hidden block at the default width of 1024)
_FFN_CHUNK = 1024


def _block_rows(flat: torch.Tensor) -> int:
    """Rows per FFN block: `_FFN_CHUNK` on the CPU, where a block that stays in cache pays; every row at once on an
    accelerator, where each block would cost kernel launches and the whole product is no slower."""
    return _FFN_CHUNK if flat.device.type == "cpu" else max(1, flat.shape[0])


class _BlockwiseNormFeedForward(torch.autograd.Function):
    """h + fc2(relu(fc1(h))) with h = LayerNorm(x), for training, a block of tokens at a time, keeping only `x`.

    The post-norm layer's second half up to the final norm. Neither the normalised `h` nor the 4x-wide hidden
    activation is stored for all tokens: the forward computes them block by block, and the backward recomputes each
    block and consumes it at once (weight gradients accumulated over blocks). That saves the two largest tensors of
    each encoder layer's backward (31 MB per layer for two 384x384 images) for one extra fc1 product and layer norm,
    and every large temporary of the plain formulation (bias broadcasts, the hidden gradient) becomes a block that
    stays warm in memory.
    """

    @staticmethod
    def forward(ctx, x, norm_weight, norm_bias, eps, weight1, bias1, weight2, bias2):
        channels = x.shape[-1]
        flat = x.reshape(-1, channels)
        out = torch.empty_like(flat)
        rows = _block_rows(flat)
        for start in range(0, flat.shape[0], rows):
            block = slice(start, start + rows)
            normed = F.layer_norm(flat[block], (channels,), norm_weight, norm_bias, eps)
            hidden = torch.addmm(bias1, normed, weight1.t()).relu_()
            torch.addmm(bias2, hidden, weight2.t(), out=out[block]).add_(normed)
        ctx.eps = eps
        ctx.save_for_backward(x, norm_weight, norm_bias, weight1, bias1, weight2)
        return out.view_as(x)

    @staticmethod
    def backward(ctx, grad):
        x, norm_weight, norm_bias, weight1, bias1, weight2 = ctx.saved_tensors
        channels = x.shape[-1]
        flat = x.reshape(-1, channels)
        grad = grad.reshape(-1, channels)
        grad_x = torch.empty_like(flat)
        grad_norm_weight, grad_norm_bias = torch.zeros_like(norm_weight), torch.zeros_like(norm_bias)
        grad_weight1, grad_bias1 = torch.zeros_like(weight1), torch.zeros_like(bias1)
        grad_weight2 = torch.zeros_like(weight2)
        rows = _block_rows(flat)
        for start in range(0, flat.shape[0], rows):
            block = slice(start, start + rows)
            with torch.enable_grad():  # the norm's own backward, from autograd on the block
                block_x = flat[block].detach().requires_grad_()
                block_weight, block_bias = norm_weight.detach().requires_grad_(), norm_bias.detach().requires_grad_()
                normed = F.layer_norm(block_x, (channels,), block_weight, block_bias, ctx.eps)
            hidden = torch.addmm(bias1, normed.detach(), weight1.t()).relu_()
            block_grad = grad[block]
            grad_weight2.addmm_(block_grad.t(), hidden)
            grad_hidden = (block_grad @ weight2).mul_(hidden > 0)
            grad_weight1.addmm_(grad_hidden.t(), normed.detach())
            grad_bias1 += grad_hidden.sum(0)
            grad_normed = torch.addmm(block_grad, grad_hidden, weight1)  # the residual path plus the FFN's
            dx, dw, db = torch.autograd.grad(normed, (block_x, block_weight, block_bias), grad_normed)
            grad_x[block] = dx
            grad_norm_weight += dw
            grad_norm_bias += db
        return (
            grad_x.view_as(x), grad_norm_weight, grad_norm_bias, None,
            grad_weight1, grad_bias1, grad_weight2, grad.sum(0),
        )  # fmt: skip


class DeformableEncoderLayer(GradientCheckpointingLayer):
    """Post-norm layer: deformable self-attention over all levels, then an FFN."""

    def __init__(
        self,
        *,
        embed_dim: int,
        num_heads: int,
        num_levels: int,
        num_points: int,
        ffn_dim: int,
        dropout: float,
        activation: str,
    ) -> None:
        super().__init__()
        self.self_attn = MultiScaleDeformableAttention(
            embed_dim=embed_dim, num_heads=num_heads, num_levels=num_levels, num_points=num_points
        )
        self.self_attn_layer_norm = nn.LayerNorm(embed_dim)
        self.fc1 = nn.Linear(embed_dim, ffn_dim)
        self.fc2 = nn.Linear(ffn_dim, embed_dim)
        self.final_layer_norm = nn.LayerNorm(embed_dim)
        # ReLU in place on the fresh fc1 output (its backward needs only the result): one 4x-wide tensor fewer.
        self.activation = F.relu_ if activation == "relu" else ACT2FN[activation]
        self.dropout = dropout

    def forward(
        self,
        hidden_states: torch.Tensor,
        position_embeddings: torch.Tensor,
        reference_points: torch.Tensor,
        spatial_shapes: torch.Tensor,
        level_start_index: torch.Tensor,
        return_weights: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        dropout = self.training and self.dropout > 0
        attended, weights = self.self_attn(
            hidden_states + position_embeddings,
            hidden_states,
            reference_points=reference_points,
            spatial_shapes=spatial_shapes,
            level_start_index=level_start_index,
            return_weights=return_weights,
            residual=None if dropout else hidden_states,
        )
        residual = hidden_states + F.dropout(attended, self.dropout, self.training) if dropout else attended
        if self._blockwise_training(residual):
            norm = self.self_attn_layer_norm
            hidden_states = _BlockwiseNormFeedForward.apply(
                residual, norm.weight, norm.bias, norm.eps,
                self.fc1.weight, self.fc1.bias, self.fc2.weight, self.fc2.bias,
            )  # fmt: skip
        else:
            hidden_states = self.self_attn_layer_norm(residual)
            if fusion_applies(hidden_states) and not self._plain_feed_forward(hidden_states):
                # inference on the CPU: fc1 + bias + ReLU, then fc2 + bias + residual, each one oneDNN call
                hidden = apply(self.fc1, hidden_states, relu=True)
                hidden_states = apply(self.fc2, hidden, residual=hidden_states)
            else:
                ffn = self._feed_forward(hidden_states)
                hidden_states = hidden_states + F.dropout(ffn, self.dropout, self.training)
        return self.final_layer_norm(hidden_states), weights

    def _plain_feed_forward(self, hidden_states: torch.Tensor) -> bool:
        """Whether the FFN must run as written (dropout in training, autocast, an activation other than ReLU)."""
        return (
            (self.training and self.dropout > 0)
            or torch.is_autocast_enabled(hidden_states.device.type)
            or self.activation is not F.relu_
        )

    def _blockwise_training(self, residual: torch.Tensor) -> bool:
        """With autograd and ReLU: `_BlockwiseNormFeedForward` (norm, FFN and residual, keeping only the input)."""
        if not (has_weight_tensor(self.fc1) and has_weight_tensor(self.fc2)):
            return False  # int8 modules (inference only)
        needs_grad = residual.requires_grad or self.fc1.weight.requires_grad
        if torch.compiler.is_compiling():  # its loop over token blocks would fix the token count in a traced graph
            return False
        return torch.is_grad_enabled() and needs_grad and not self._plain_feed_forward(residual)

    def _feed_forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        """fc2(activation(fc1(x))); without autograd (and where the arithmetic allows) a block of tokens at a time
        into a preallocated output: the same row-by-row products as the plain formulation."""
        # traced (torch.compile / torch.export): no Python loop over a token count that may be symbolic
        plain = torch.is_grad_enabled() or torch.compiler.is_compiling() or self._plain_feed_forward(hidden_states)
        plain = plain or not has_weight_tensor(self.fc2)
        if plain:
            return self.fc2(F.dropout(self.activation(self.fc1(hidden_states)), self.dropout, self.training))
        flat = hidden_states.reshape(-1, hidden_states.shape[-1])
        out = torch.empty_like(flat)
        rows = _block_rows(flat)
        for start in range(0, flat.shape[0], rows):
            hidden = self.activation(self.fc1(flat[start : start + rows]))
            torch.addmm(self.fc2.bias, hidden, self.fc2.weight.t(), out=out[start : start + rows])
        return out.view_as(hidden_states)


def _channels_last(x: torch.Tensor) -> bool:
    return x.dim() == 4 and x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()


def _halfs_on_cpu_channels_last(coarse: torch.Tensor, lateral: torch.Tensor) -> bool:
    """The low-precision CPU FPN step: bf16/fp16 channels-last maps, the lateral one twice the coarse one's size."""
    return (
        coarse.device.type == "cpu"
        and coarse.dtype in (torch.bfloat16, torch.float16)
        and _channels_last(coarse)
        and _channels_last(lateral)
        and tuple(lateral.shape[-2:]) == (2 * coarse.shape[-2], 2 * coarse.shape[-1])
        and not torch.is_grad_enabled()
        and not torch.compiler.is_compiling()
    )


def _upsample2x_channels_last(x: torch.Tensor) -> torch.Tensor:
    """`interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)` of a channels-last map, channels-last.

    torch's bilinear kernel returns NCHW for a bf16 channels-last input and takes 64 ms for a 256-channel 64x64 map
    on the project's CPU (one thread); the same weights as whole-row operations on the (B, h, w, C) view take 15 ms.
    Output 2i reads rows i and i-1 with weights 3/4 and 1/4, output 2i+1 rows i and i+1 (the border row repeated),
    which is align_corners=False at an exact factor of 2.
    """

    def along(v: torch.Tensor, dim: int) -> torch.Tensor:
        size = v.shape[dim]
        before = torch.cat((v.narrow(dim, 0, 1), v.narrow(dim, 0, size - 1)), dim)
        after = torch.cat((v.narrow(dim, 1, size - 1), v.narrow(dim, size - 1, 1)), dim)
        near = v * 0.75
        return torch.stack((near + before * 0.25, near + after * 0.25), dim + 1).flatten(dim, dim + 1)

    rows_first = x.permute(0, 2, 3, 1)  # (B, h, w, C), contiguous
    return along(along(rows_first, 1), 2).permute(0, 3, 1, 2)


def _shape_tensor(shapes: list[tuple[int, int]], device) -> torch.Tensor:
    """`(num_levels, 2)` int64 tensor of the levels' (height, width).

    Built from scalar `full`s rather than `torch.tensor(shapes)`: under `torch.export` with dynamic height and width
    the sizes are symbolic, and `torch.tensor` would bake the example's sizes into the program.
    """
    rows = [torch.stack([torch.full((), size, dtype=torch.long, device=device) for size in shape]) for shape in shapes]
    return torch.stack(rows)


@dataclass
class PixelDecoderOutput:
    """What the pixel decoder hands to the transformer decoder.

    Attributes:
        mask_features: `(batch, mask_feature_size, H/4, W/4)` per-pixel embeddings.
        multi_scale_features: `num_feature_levels` maps `(batch, feature_size, h_l, w_l)`, lowest resolution first.
        encoder_hidden_states: `(batch, num_keys, feature_size)` input of each encoder layer and the final output,
            when asked for.
        attentions: per-layer deformable attention weights `(batch, num_keys, heads, levels, points)`, when asked for.
    """

    mask_features: torch.Tensor
    multi_scale_features: tuple[torch.Tensor, ...]
    encoder_hidden_states: tuple[torch.Tensor, ...] | None = None
    attentions: tuple[torch.Tensor, ...] | None = None


class MSDeformAttnPixelDecoder(nn.Module):
    """Deformable-attention encoder over the coarsest `num_levels` backbone maps plus an FPN step to 1/4."""

    def __init__(
        self,
        *,
        in_channels: list[int],
        in_strides: list[int],
        feature_size: int,
        mask_feature_size: int,
        num_levels: int,
        encoder_layers: int,
        num_heads: int,
        num_points: int,
        ffn_dim: int,
        dropout: float,
        activation: str,
        common_stride: int,
        compute_in_fp32: bool,
    ) -> None:
        super().__init__()
        self.num_levels = num_levels
        self.feature_size = feature_size
        self.compute_in_fp32 = compute_in_fp32
        # Input projections, lowest resolution first (the order of the encoder's levels).
        self.input_projections = nn.ModuleList(
            nn.Sequential(nn.Conv2d(channels, feature_size, kernel_size=1), nn.GroupNorm(32, feature_size))
            for channels in in_channels[-num_levels:][::-1]
        )
        self.level_embed = nn.Parameter(torch.zeros(num_levels, feature_size))
        self.layers = nn.ModuleList(
            DeformableEncoderLayer(
                embed_dim=feature_size,
                num_heads=num_heads,
                num_levels=num_levels,
                num_points=num_points,
                ffn_dim=ffn_dim,
                dropout=dropout,
                activation=activation,
            )
            for _ in range(encoder_layers)
        )
        # FPN levels between the finest encoder level and the mask stride (one, 1/8 -> 1/4, by default).
        num_fpn_levels = int(math.log2(min(in_strides[-num_levels:])) - math.log2(common_stride))
        fpn_channels = in_channels[:num_fpn_levels][::-1]  # coarse to fine
        self.lateral_convs = nn.ModuleList(
            nn.Sequential(nn.Conv2d(c, feature_size, kernel_size=1, bias=False), nn.GroupNorm(32, feature_size))
            for c in fpn_channels
        )
        self.output_convs = nn.ModuleList(
            nn.Sequential(
                nn.Conv2d(feature_size, feature_size, kernel_size=3, padding=1, bias=False),
                nn.GroupNorm(32, feature_size),
                nn.ReLU(),
            )
            for _ in fpn_channels
        )
        self.num_fpn_levels = num_fpn_levels
        self.mask_projection = nn.Conv2d(feature_size, mask_feature_size, kernel_size=1)

    @staticmethod
    def reference_points(shapes: list[tuple[int, int]], *, device, dtype) -> torch.Tensor:
        """Centres of every cell of every level, normalised to [0, 1]: `(num_keys, 2)` as (x, y)."""
        points = []
        for height, width in shapes:
            # arange + 0.5 (the same values as linspace(0.5, n - 0.5, n)) keeps a symbolic n symbolic in torch.export
            y = (torch.arange(height, device=device, dtype=dtype) + 0.5) / height
            x = (torch.arange(width, device=device, dtype=dtype) + 0.5) / width
            grid_y, grid_x = torch.meshgrid(y, x, indexing="ij")
            points.append(torch.stack((grid_x.reshape(-1), grid_y.reshape(-1)), -1))
        return torch.cat(points, 0)

    def forward(
        self, features: list[torch.Tensor], *, output_hidden_states: bool = False, output_attentions: bool = False
    ) -> PixelDecoderOutput:
        """`features`: the backbone maps, highest resolution (stride 4) first."""
        if self.compute_in_fp32 and torch.is_autocast_enabled(features[0].device.type):
            # As the original: deformable attention is numerically fragile in half precision.
            with torch.autocast(features[0].device.type, enabled=False):
                return self._forward([f.float() for f in features], output_hidden_states, output_attentions)
        return self._forward(features, output_hidden_states, output_attentions)

    def _forward(
        self, features: list[torch.Tensor], output_hidden_states: bool, output_attentions: bool
    ) -> PixelDecoderOutput:
        coarse = features[::-1][: self.num_levels]  # 1/32, 1/16, 1/8
        batch = coarse[0].shape[0]
        device = coarse[0].device
        shapes = [(f.shape[-2], f.shape[-1]) for f in coarse]
        projected, positions = [], []
        for level, feature in enumerate(coarse):
            projected.append(self.input_projections[level](feature).flatten(2).transpose(1, 2))  # (B, h*w, C)
            pos = sine_position_embedding(
                *shapes[level], num_features=self.feature_size // 2, device=device, dtype=projected[-1].dtype
            )
            positions.append(pos.flatten(1).transpose(0, 1) + self.level_embed[level])  # (h*w, C)
        hidden_states = torch.cat(projected, 1)  # (batch, num_keys, C)
        position_embeddings = torch.cat(positions, 0)[None]  # (1, num_keys, C)
        spatial_shapes = _shape_tensor(shapes, device)
        sizes = [h * w for h, w in shapes]
        level_sizes = spatial_shapes.prod(1)
        level_start_index = torch.cat((level_sizes.new_zeros(1), level_sizes.cumsum(0)[:-1]))
        # at least float32: in bf16 the cell centres of a 64-wide level would be a quarter pixel off
        points_dtype = torch.promote_types(hidden_states.dtype, torch.float32)
        reference_points = self.reference_points(shapes, device=device, dtype=points_dtype)

        all_states = () if output_hidden_states else None
        all_weights = () if output_attentions else None
        for layer in self.layers:
            if output_hidden_states:
                all_states += (hidden_states,)
            hidden_states, weights = layer(
                hidden_states,
                position_embeddings,
                reference_points,
                spatial_shapes,
                level_start_index,
                output_attentions,
            )
            if output_attentions:
                all_weights += (weights,)
        if output_hidden_states:
            all_states += (hidden_states,)

        outputs = [
            level.transpose(1, 2).reshape(batch, self.feature_size, h, w)  # (B, C, h, w)
            for level, (h, w) in zip(hidden_states.split(sizes, dim=1), shapes)
        ]
        for fine, lateral, output_conv in zip(
            features[: self.num_fpn_levels][::-1], self.lateral_convs, self.output_convs
        ):
            lateral_features = lateral[1:](conv1x1(lateral[0], fine))
            # the coarser map is a (B, C, h, w) view of token-major memory; torch's bilinear kernel is ten times
            # slower on that layout than on a contiguous copy (43 vs 4 ms at 64x64 -> 128x128, 256 channels)
            coarse_map = outputs[-1]
            if _halfs_on_cpu_channels_last(coarse_map, lateral_features):
                upsampled = _upsample2x_channels_last(coarse_map)
            else:
                upsampled = F.interpolate(
                    coarse_map.contiguous(), size=lateral_features.shape[-2:], mode="bilinear", align_corners=False
                )
            # CPU inference with the CPU kernel built: the 3x3 by Winograd's F(2x2, 3x3) (ops/winograd.py)
            convolved = winograd.conv3x3(output_conv[0], lateral_features + upsampled)
            outputs.append(output_conv[1:](convolved))
        return PixelDecoderOutput(
            # NCHW: the decoder's mask products read it as (B, C, H*W) once per layer
            mask_features=conv1x1_nchw(self.mask_projection, outputs[-1]),
            multi_scale_features=tuple(outputs[: self.num_levels]),
            encoder_hidden_states=all_states,
            attentions=all_weights,
        )
