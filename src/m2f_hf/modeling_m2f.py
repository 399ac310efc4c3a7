"""Mask2Former models: backbone -> pixel decoder -> masked-attention transformer decoder -> class and mask heads."""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

import torch
from torch import nn
from transformers import PretrainedConfig, PreTrainedModel
from transformers import initialization as init
from transformers.utils import ModelOutput

from .backbones import TimmBackbone, build_backbone
from .configuration_m2f import M2FConfig
from .ops import set_default_implementation
from .pixel_decoder import MSDeformAttnPixelDecoder, MultiScaleDeformableAttention
from .transformer_decoder import MaskedAttentionDecoder, MaskedAttentionDecoderLayer


@dataclass
class M2FModelOutput(ModelOutput):
    """
    Outputs of [`M2FModel`].

    Args:
        encoder_last_hidden_state (`torch.FloatTensor` of shape `(batch_size, C, H/32, W/32)`):
            Last feature map of the backbone.
        pixel_decoder_last_hidden_state (`torch.FloatTensor` of shape `(batch_size, mask_feature_size, H/4, W/4)`):
            Per-pixel embeddings (the mask features).
        transformer_decoder_last_hidden_state (`torch.FloatTensor` of shape `(batch_size, num_queries, hidden_dim)`):
            Output of the last decoder layer, before the final layer norm.
        transformer_decoder_intermediate_states (`tuple(torch.FloatTensor)`):
            `decoder_layers + 1` normalised query states of shape `(batch_size, num_queries, hidden_dim)`: from the
            learnable queries, then after every layer.
        masks_queries_logits (`tuple(torch.FloatTensor)`):
            `decoder_layers + 1` mask logits of shape `(batch_size, num_queries, H/4, W/4)`, same order (with
            `output_intermediate_masks=False` all but the last are None).
        encoder_hidden_states (`tuple(torch.FloatTensor)`, *optional*):
            The 4 backbone feature maps (strides 4 to 32), with `output_hidden_states=True`.
        pixel_decoder_hidden_states (`tuple(torch.FloatTensor)`, *optional*):
            The pixel decoder's multi-scale maps `(batch_size, feature_size, h_l, w_l)`, lowest resolution first, with
            `output_hidden_states=True`.
        transformer_decoder_hidden_states (`tuple(torch.FloatTensor)`, *optional*):
            Input of every decoder layer plus the last output, `(batch_size, num_queries, hidden_dim)`, with
            `output_hidden_states=True`.
        pixel_decoder_attentions (`tuple(torch.FloatTensor)`, *optional*):
            Deformable attention weights of every encoder layer, `(batch_size, num_keys, heads, levels, points)`, with
            `output_attentions=True`.
        attentions (`tuple(tuple(torch.FloatTensor))`, *optional*):
            Per decoder layer, the self-attention weights `(batch_size, heads, num_queries, num_queries)` and the
            masked-attention weights `(batch_size, heads, num_queries, h_l * w_l)`, with `output_attentions=True`.
    """

    encoder_last_hidden_state: torch.FloatTensor | None = None
    pixel_decoder_last_hidden_state: torch.FloatTensor | None = None
    transformer_decoder_last_hidden_state: torch.FloatTensor | None = None
    transformer_decoder_intermediate_states: tuple[torch.FloatTensor, ...] | None = None
    masks_queries_logits: tuple[torch.FloatTensor, ...] | None = None
    encoder_hidden_states: tuple[torch.FloatTensor, ...] | None = None
    pixel_decoder_hidden_states: tuple[torch.FloatTensor, ...] | None = None
    transformer_decoder_hidden_states: tuple[torch.FloatTensor, ...] | None = None
    pixel_decoder_attentions: tuple[torch.FloatTensor, ...] | None = None
    attentions: tuple[tuple[torch.FloatTensor, ...], ...] | None = None


@dataclass
class M2FForUniversalSegmentationOutput(ModelOutput):
    """
    Outputs of [`M2FForUniversalSegmentation`]; the image processor's `post_process_*_segmentation` methods turn them
    into semantic, instance or panoptic results.

    Args:
        loss (`torch.FloatTensor` of shape `()`, *optional*):
            Total weighted loss, when `mask_labels` and `class_labels` are given.
        loss_dict (`dict[str, torch.FloatTensor]`, *optional*):
            The weighted loss terms (`loss_cross_entropy`, `loss_mask`, `loss_dice`, and `_{i}` suffixed auxiliary
            terms), when labels are given.
        class_queries_logits (`torch.FloatTensor` of shape `(batch_size, num_queries, num_labels + 1)`):
            Class logits of every query from the last layer; the last class is "no object".
        masks_queries_logits (`torch.FloatTensor` of shape `(batch_size, num_queries, H/4, W/4)`):
            Mask logits of every query from the last layer.
        auxiliary_logits (`list[dict[str, torch.FloatTensor]]`, *optional*):
            `decoder_layers` dicts with `class_queries_logits` and `masks_queries_logits`, from the learnable queries
            and every layer but the last, with `output_auxiliary_logits=True`.
        encoder_last_hidden_state, pixel_decoder_last_hidden_state, transformer_decoder_last_hidden_state,
        encoder_hidden_states, pixel_decoder_hidden_states, transformer_decoder_hidden_states, pixel_decoder_attentions,
        attentions: as in [`M2FModelOutput`].
    """

    loss: torch.FloatTensor | None = None
    loss_dict: dict[str, torch.FloatTensor] | None = None
    class_queries_logits: torch.FloatTensor | None = None
    masks_queries_logits: torch.FloatTensor | None = None
    auxiliary_logits: list[dict[str, torch.FloatTensor]] | None = None
    encoder_last_hidden_state: torch.FloatTensor | None = None
    pixel_decoder_last_hidden_state: torch.FloatTensor | None = None
    transformer_decoder_last_hidden_state: torch.FloatTensor | None = None
    encoder_hidden_states: tuple[torch.FloatTensor, ...] | None = None
    pixel_decoder_hidden_states: tuple[torch.FloatTensor, ...] | None = None
    transformer_decoder_hidden_states: tuple[torch.FloatTensor, ...] | None = None
    pixel_decoder_attentions: tuple[torch.FloatTensor, ...] | None = None
    attentions: tuple[tuple[torch.FloatTensor, ...], ...] | None = None


def _check_pixel_values(pixel_values: torch.Tensor, num_channels: int, min_size: int) -> None:
    if not isinstance(pixel_values, torch.Tensor):
        raise TypeError(f"pixel_values must be a torch.Tensor, got {type(pixel_values).__name__}.")
    if pixel_values.ndim != 4:
        raise ValueError(
            f"pixel_values must be a 4-D tensor (batch, channels, height, width), got shape {tuple(pixel_values.shape)}."
        )
    if not pixel_values.is_floating_point():
        raise TypeError(
            f"pixel_values must be a floating-point tensor (normalised by the image processor), got {pixel_values.dtype}."
        )
    if pixel_values.shape[1] != num_channels:
        raise ValueError(
            f"pixel_values has {pixel_values.shape[1]} channels (shape {tuple(pixel_values.shape)}); the backbone "
            f"expects {num_channels} (config.num_channels). The image processor makes as many channels as its "
            "`num_channels`, or as `image_mean` / `image_std` have values."
        )
    height, width = pixel_values.shape[-2:]
    if height < min_size or width < min_size:
        raise ValueError(
            f"pixel_values of spatial size {height}x{width} is smaller than the backbone's largest stride ({min_size}); "
            f"images must be at least {min_size}x{min_size}."
        )


def _refuse_exported_folder(name_or_path) -> None:
    """An `m2f-export` folder (model.onnx, no PyTorch weights) gets a clear error instead of "no weights found"."""
    folder = os.path.expanduser(str(name_or_path))
    has_weights = any(os.path.exists(os.path.join(folder, name)) for name in _WEIGHT_FILES)
    if os.path.isfile(os.path.join(folder, "model.onnx")) and not has_weights:
        raise OSError(
            f"{str(name_or_path)!r} is an exported ONNX model (model.onnx, no PyTorch weights): load it with "
            "m2f_hf.export.M2FOnnxModel.from_pretrained (for pipeline(): model=M2FOnnxModel.from_pretrained(path), "
            "image_processor=M2FImageProcessor.from_pretrained(path)), or run m2f-segment --model on it."
        )


_WEIGHT_FILES = (
    "model.safetensors",
    "model.safetensors.index.json",
    "pytorch_model.bin",
    "pytorch_model.bin.index.json",
)


def _is_transformers_native(name_or_path, kwargs: dict) -> bool:
    """Whether `name_or_path` holds a transformers `Mask2FormerConfig` (read from its config.json only)."""
    hub_kwargs = {k: kwargs[k] for k in ("revision", "token", "cache_dir", "local_files_only") if k in kwargs}
    try:
        config_dict, _ = PretrainedConfig.get_config_dict(str(name_or_path), **hub_kwargs)
    except OSError:
        return False  # let from_pretrained raise its usual error
    return config_dict.get("model_type") == "mask2former"


def _requested_dtype(kwargs: dict) -> torch.dtype | None:
    """`dtype=` (transformers 5) or `torch_dtype=` (its older name) of a `from_pretrained` call, as a torch dtype;
    None for neither or "auto" (the checkpoint's own float32)."""
    value = kwargs.get("dtype", kwargs.get("torch_dtype"))
    if value is None or value == "auto":
        return None
    if isinstance(value, str):
        value = getattr(torch, value, None) if not value.startswith("torch.") else getattr(torch, value[6:], None)
    if not isinstance(value, torch.dtype) or not value.is_floating_point:
        raise ValueError(f"dtype must be a floating-point torch dtype or its name (e.g. 'bfloat16'), got {value!r}.")
    return value


def _low_precision_cpu(pixel_values: torch.Tensor) -> bool:
    """bf16 / fp16 on the CPU: oneDNN's fast half-precision convolutions (AMX / AVX-512 BF16) want channels-last."""
    return pixel_values.device.type == "cpu" and pixel_values.dtype in (torch.bfloat16, torch.float16)


class M2FPreTrainedModel(PreTrainedModel):
    config_class = M2FConfig
    config: M2FConfig
    base_model_prefix = "model"
    main_input_name = "pixel_values"
    input_modalities = ("image",)
    supports_gradient_checkpointing = True
    _no_split_modules = ["MaskedAttentionDecoderLayer", "DeformableEncoderLayer"]

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *model_args, **kwargs):
        """Load one of our checkpoints; a transformers-native Mask2Former checkpoint (config `model_type`
        "mask2former", e.g. `facebook/mask2former-swin-small-coco-instance`) is converted on load instead of being
        read as if it were ours (its weight names differ, so every weight would be missing)."""
        _refuse_exported_folder(pretrained_model_name_or_path)
        if (
            kwargs.get("config") is None
            and not model_args
            and _is_transformers_native(pretrained_model_name_or_path, kwargs)
        ):
            from .convert.transformers_native import from_transformers_pretrained

            hub_kwargs = {k: kwargs[k] for k in ("revision", "token", "cache_dir", "local_files_only") if k in kwargs}
            model = from_transformers_pretrained(str(pretrained_model_name_or_path), **hub_kwargs)
            dtype = _requested_dtype(kwargs)
            if dtype is not None:
                model = model.to(dtype)
            if cls is M2FModel or (isinstance(cls, type) and issubclass(cls, M2FModel)):
                return model.model
            if not isinstance(model, cls):
                raise TypeError(f"{cls.__name__} cannot be loaded from a transformers-native Mask2Former checkpoint.")
            return model
        return super().from_pretrained(pretrained_model_name_or_path, *model_args, **kwargs)

    @torch.no_grad()
    def _init_weights(self, module: nn.Module) -> None:
        if getattr(module, "_m2f_external_init", False):
            return  # timm modules keep their own initialisation
        xavier_gain = self.config.init_xavier_std
        if isinstance(module, MultiScaleDeformableAttention):
            # Deformable DETR's initialisation: offsets start on a ring of directions, one per head, growing per point.
            init.constant_(module.sampling_offsets.weight, 0.0)
            thetas = torch.arange(module.num_heads, dtype=torch.float32) * (2.0 * math.pi / module.num_heads)
            grid = torch.stack([thetas.cos(), thetas.sin()], -1)
            grid = (grid / grid.abs().max(-1, keepdim=True)[0]).view(module.num_heads, 1, 1, 2)
            grid = grid.repeat(1, module.num_levels, module.num_points, 1)
            grid = grid * torch.arange(1, module.num_points + 1, dtype=torch.float32).view(1, 1, -1, 1)
            init.copy_(module.sampling_offsets.bias, grid.flatten())
            init.constant_(module.attention_weights.weight, 0.0)
            init.constant_(module.attention_weights.bias, 0.0)
            for linear in (module.value_proj, module.output_proj):
                init.xavier_uniform_(linear.weight)
                init.constant_(linear.bias, 0.0)
        elif isinstance(module, MaskedAttentionDecoderLayer):
            for name, param in module.named_parameters():
                if param.dim() > 1:
                    init.xavier_uniform_(param, gain=xavier_gain)
                elif name.startswith(("cross_attn", "self_attn")) and "layer_norm" not in name:
                    init.zeros_(param)
        elif isinstance(module, MSDeformAttnPixelDecoder):
            init.normal_(module.level_embed, std=1.0)
        elif isinstance(module, nn.Conv2d):
            # detectron2's c2_xavier_fill for the pixel decoder and decoder input projections.
            init.kaiming_uniform_(module.weight, a=1)
            if module.bias is not None:
                init.zeros_(module.bias)
        elif isinstance(module, nn.Linear):
            init.kaiming_uniform_(module.weight, a=math.sqrt(5))
            if module.bias is not None:
                bound = 1.0 / math.sqrt(module.weight.shape[1])
                init.uniform_(module.bias, -bound, bound)
        elif isinstance(module, nn.Embedding):
            init.normal_(module.weight, mean=0.0, std=1.0)
        elif isinstance(module, (nn.LayerNorm, nn.GroupNorm)):
            init.ones_(module.weight)
            init.zeros_(module.bias)


class M2FModel(M2FPreTrainedModel):
    """Mask2Former without the class head: backbone, pixel decoder and masked-attention decoder."""

    def __init__(self, config: M2FConfig) -> None:
        super().__init__(config)
        set_default_implementation(config.deform_attn_implementation)
        self.backbone = build_backbone(config)
        if isinstance(self.backbone, TimmBackbone):
            for module in self.backbone.modules():
                module._m2f_external_init = True
        self.pixel_decoder = MSDeformAttnPixelDecoder(
            in_channels=self.backbone.channels,
            in_strides=self.backbone.strides,
            feature_size=config.feature_size,
            mask_feature_size=config.mask_feature_size,
            num_levels=config.num_feature_levels,
            encoder_layers=config.encoder_layers,
            num_heads=config.encoder_attention_heads,
            num_points=config.encoder_num_points,
            ffn_dim=config.encoder_feedforward_dim,
            dropout=config.dropout,
            activation=config.activation_function,
            common_stride=config.common_stride,
            compute_in_fp32=config.deform_attn_fp32,
        )
        self.transformer_decoder = MaskedAttentionDecoder(
            in_channels=config.feature_size,
            hidden_dim=config.hidden_dim,
            mask_feature_size=config.mask_feature_size,
            num_queries=config.num_queries,
            num_layers=config.decoder_layers,
            num_heads=config.num_attention_heads,
            ffn_dim=config.dim_feedforward,
            dropout=config.dropout,
            activation=config.activation_function,
            pre_norm=config.pre_norm,
            num_levels=config.num_feature_levels,
            enforce_input_projection=config.enforce_input_projection,
        )
        self.post_init()

    @property
    def _num_input_channels(self) -> int:
        return self.config.num_channels

    def forward(
        self,
        pixel_values: torch.Tensor,
        pixel_mask: torch.Tensor | None = None,
        output_hidden_states: bool | None = None,
        output_attentions: bool | None = None,
        return_dict: bool | None = None,
        output_intermediate_masks: bool = True,
        **kwargs,
    ) -> M2FModelOutput | tuple:
        """
        Args:
            pixel_values (`torch.FloatTensor` of shape `(batch_size, num_channels, height, width)`):
                Normalised images, padded to a common size (see the image processor).
            pixel_mask (`torch.LongTensor` of shape `(batch_size, height, width)`, *optional*):
                1 for real pixels, 0 for padding. Accepted for API compatibility; as in the original, padding is not
                masked in the computation (it is cropped off in post-processing).
            output_hidden_states (`bool`, *optional*): return every stage's hidden states.
            output_attentions (`bool`, *optional*): return the attention weights (computed on an eager path).
            return_dict (`bool`, *optional*): return an [`M2FModelOutput`] instead of a tuple.
            output_intermediate_masks (`bool`, defaults to `True`): compute the full-resolution masks of every layer;
                with `False` only the last layer's are computed (the others are None in `masks_queries_logits`) and
                the attention masks are derived from just the logits their resize reads. Same results, less work.
        """
        output_hidden_states = (
            output_hidden_states if output_hidden_states is not None else self.config.output_hidden_states
        )
        output_attentions = output_attentions if output_attentions is not None else self.config.output_attentions
        return_dict = return_dict if return_dict is not None else self.config.return_dict
        _check_pixel_values(pixel_values, self._num_input_channels, max(self.backbone.strides))
        if pixel_mask is not None and pixel_mask.shape[-2:] != pixel_values.shape[-2:]:
            raise ValueError(
                f"pixel_mask has spatial size {tuple(pixel_mask.shape[-2:])}, expected that of pixel_values "
                f"{tuple(pixel_values.shape[-2:])}."
            )

        # the processor gives float32; a model loaded or cast to bf16 computes in its own dtype
        dtype = next(self.backbone.parameters()).dtype
        if pixel_values.dtype != dtype and dtype.is_floating_point:
            pixel_values = pixel_values.to(dtype)
        if _low_precision_cpu(pixel_values):
            pixel_values = pixel_values.contiguous(memory_format=torch.channels_last)
        features = self.backbone(pixel_values)
        pixel_output = self.pixel_decoder(
            features, output_hidden_states=output_hidden_states, output_attentions=output_attentions
        )
        decoder_output = self.transformer_decoder(
            pixel_output.multi_scale_features,
            pixel_output.mask_features,
            output_hidden_states=output_hidden_states,
            output_attentions=output_attentions,
            intermediate_masks=output_intermediate_masks,
        )
        output = M2FModelOutput(
            encoder_last_hidden_state=features[-1],
            pixel_decoder_last_hidden_state=pixel_output.mask_features,
            transformer_decoder_last_hidden_state=decoder_output.last_hidden_state,
            transformer_decoder_intermediate_states=decoder_output.intermediate_hidden_states,
            masks_queries_logits=decoder_output.masks_queries_logits,
            encoder_hidden_states=tuple(features) if output_hidden_states else None,
            pixel_decoder_hidden_states=pixel_output.multi_scale_features if output_hidden_states else None,
            transformer_decoder_hidden_states=decoder_output.hidden_states,
            pixel_decoder_attentions=pixel_output.attentions,
            attentions=decoder_output.attentions,
        )
        return output if return_dict else output.to_tuple()


class M2FForUniversalSegmentation(M2FPreTrainedModel):
    """Mask2Former with its class head, for semantic, instance and panoptic segmentation; computes the training loss
    (Hungarian matching and point-sampled mask losses, paper 3.3) when `mask_labels` and `class_labels` are given."""

    def __init__(self, config: M2FConfig) -> None:
        super().__init__(config)
        self.model = M2FModel(config)
        self.class_predictor = nn.Linear(config.hidden_dim, config.num_labels + 1)
        self.criterion = None
        self.post_init()

    def build_criterion(self):
        from .loss import Mask2FormerCriterion

        return Mask2FormerCriterion.from_config(self.config)

    def forward(
        self,
        pixel_values: torch.Tensor,
        mask_labels: list[torch.Tensor] | None = None,
        class_labels: list[torch.Tensor] | None = None,
        pixel_mask: torch.Tensor | None = None,
        output_hidden_states: bool | None = None,
        output_auxiliary_logits: bool | None = None,
        output_attentions: bool | None = None,
        return_dict: bool | None = None,
        **kwargs,
    ) -> M2FForUniversalSegmentationOutput | tuple:
        """
        Args:
            pixel_values (`torch.FloatTensor` of shape `(batch_size, num_channels, height, width)`):
                Normalised, padded images (see the image processor).
            mask_labels (`list[torch.Tensor | SegmentIndexMap]`, *optional*):
                Per image, the `(num_targets, height, width)` binary target masks, or a
                [`~m2f_hf.segment_targets.SegmentIndexMap`] of target indices (what the training data path gives;
                the same loss with far less memory). Targets beyond `num_queries` are left unmatched (no loss).
            class_labels (`list[torch.LongTensor]`, *optional*):
                Per image, the `(num_targets,)` class of each target mask.
            pixel_mask (`torch.LongTensor` of shape `(batch_size, height, width)`, *optional*):
                1 for real pixels, 0 for padding (accepted, see [`M2FModel.forward`]).
            output_hidden_states, output_attentions, return_dict: see [`M2FModel.forward`].
            output_auxiliary_logits (`bool`, *optional*):
                Return the predictions of the learnable queries and of every layer but the last.
        """
        return_dict = return_dict if return_dict is not None else self.config.return_dict
        if (mask_labels is None) != (class_labels is None):
            raise ValueError(
                "mask_labels and class_labels must be given together, got "
                f"mask_labels={'None' if mask_labels is None else 'a value'} and "
                f"class_labels={'None' if class_labels is None else 'a value'}."
            )
        if output_auxiliary_logits is None:
            output_auxiliary_logits = bool(self.config.output_auxiliary_logits)
        # Every layer's full-resolution masks are needed for the loss's deep supervision and the auxiliary outputs.
        need_all_masks = mask_labels is not None or output_auxiliary_logits
        outputs = self.model(
            pixel_values,
            pixel_mask=pixel_mask,
            output_hidden_states=output_hidden_states,
            output_attentions=output_attentions,
            return_dict=True,
            output_intermediate_masks=need_all_masks,
        )
        mask_logits = outputs.masks_queries_logits
        if need_all_masks:
            states = outputs.transformer_decoder_intermediate_states
        else:
            states = outputs.transformer_decoder_intermediate_states[-1:]
        class_logits = [self.class_predictor(state) for state in states]
        auxiliary = [
            {"class_queries_logits": c, "masks_queries_logits": m} for c, m in zip(class_logits[:-1], mask_logits[:-1])
        ]

        loss = loss_dict = None
        if mask_labels is not None:
            if self.criterion is None:
                self.criterion = self.build_criterion()
            loss_dict = self.criterion(
                masks_queries_logits=mask_logits[-1],
                class_queries_logits=class_logits[-1],
                mask_labels=mask_labels,
                class_labels=class_labels,
                auxiliary_predictions=auxiliary if self.config.use_auxiliary_loss else None,
            )
            loss = sum(loss_dict.values())

        output = M2FForUniversalSegmentationOutput(
            loss=loss,
            loss_dict=loss_dict,
            class_queries_logits=class_logits[-1],
            masks_queries_logits=mask_logits[-1],
            auxiliary_logits=auxiliary if output_auxiliary_logits else None,
            encoder_last_hidden_state=outputs.encoder_last_hidden_state,
            pixel_decoder_last_hidden_state=outputs.pixel_decoder_last_hidden_state,
            transformer_decoder_last_hidden_state=outputs.transformer_decoder_last_hidden_state,
            encoder_hidden_states=outputs.encoder_hidden_states,
            pixel_decoder_hidden_states=outputs.pixel_decoder_hidden_states,
            transformer_decoder_hidden_states=outputs.transformer_decoder_hidden_states,
            pixel_decoder_attentions=outputs.pixel_decoder_attentions,
            attentions=outputs.attentions,
        )
        return output if return_dict else output.to_tuple()
