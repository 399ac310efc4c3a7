"""Configuration of the Mask2Former model (one flat, validated config drives every module)."""

from __future__ import annotations

from typing import Any

from transformers import PretrainedConfig
from transformers.utils import logging

logger = logging.get_logger(__name__)

# The ResNet-50 layout of the paper's main results, used when no backbone is given.
_DEFAULT_BACKBONE = {
    "model_type": "resnet",
    "depths": [3, 4, 6, 3],
    "hidden_sizes": [256, 512, 1024, 2048],
    "embedding_size": 64,
    "layer_type": "bottleneck",
    "out_features": ["stage1", "stage2", "stage3", "stage4"],
}

_DEFORM_ATTN_IMPLEMENTATIONS = ("auto", "cuda", "cpu", "pytorch")


class M2FConfig(PretrainedConfig):
    r"""
    Configuration of [`M2FModel`] and [`M2FForUniversalSegmentation`]. The defaults are the paper's (section 4.1):
    a multi-scale deformable-attention pixel decoder with 6 layers over the 1/8, 1/16 and 1/32 features, and a
    masked-attention transformer decoder with 9 layers (L = 3 rounds over the three scales) and 100 queries.

    Args:
        backbone_config (`dict` or `PretrainedConfig`, *optional*):
            Config of a transformers backbone built with `AutoBackbone` (Swin, ResNet, ConvNeXt, DINOv2, ...). It must
            return 4 feature maps (`out_features`), from the highest resolution (stride 4) to the lowest (stride 32).
            Defaults to a ResNet-50 when neither this nor `timm_backbone` is given.
        timm_backbone (`str`, *optional*):
            Name of a timm model, built with `features_only=True`. Mutually exclusive with `backbone_config`.
        timm_out_indices (`list[int]`, *optional*):
            The timm feature indices to use (4 of them, strides 4 to 32). Defaults to the last four.
        timm_backbone_kwargs (`dict`, *optional*):
            Extra keyword arguments for `timm.create_model` (e.g. `{"strict_img_size": False}` for a Swin).
        num_channels (`int`, *optional*, defaults to 3):
            Channels of the input images (1 for grayscale microscopy, 4 for RGB + near-infrared, 13 for Sentinel-2
            tiles, ...), carried to the backbone: `num_channels` of `backbone_config`, timm's `in_chans`. Unset, it is
            the backbone's own (`backbone_config.num_channels` or `timm_backbone_kwargs["in_chans"]`), else 3. The
            image processor must make as many (its `num_channels`, or per-channel `image_mean` / `image_std`).
        use_pretrained_backbone (`bool`, *optional*, defaults to `False`):
            Load the backbone's pretrained weights (timm only; downloads them from the Hub).
        feature_size (`int`, *optional*, defaults to 256):
            Channels of the pixel decoder (a multiple of 32: the pixel decoder uses GroupNorm with 32 groups).
        mask_feature_size (`int`, *optional*, defaults to 256):
            Channels of the per-pixel embeddings that the query mask embeddings are multiplied with.
        hidden_dim (`int`, *optional*, defaults to 256):
            Width of the masked-attention transformer decoder.
        num_queries (`int`, *optional*, defaults to 100):
            Number of learnable queries (segments the model can predict).
        decoder_layers (`int`, *optional*, defaults to 9):
            Number of masked-attention decoder layers (3L in the paper).
        num_attention_heads (`int`, *optional*, defaults to 8):
            Heads of the transformer decoder's attention layers.
        dim_feedforward (`int`, *optional*, defaults to 2048):
            Hidden size of the transformer decoder's FFN.
        pre_norm (`bool`, *optional*, defaults to `False`):
            Pre-LayerNorm decoder layers (the paper uses post-norm).
        enforce_input_projection (`bool`, *optional*, defaults to `False`):
            Add 1x1 input projections in the decoder even when `feature_size == hidden_dim`.
        encoder_layers (`int`, *optional*, defaults to 6):
            Number of MSDeformAttn layers of the pixel decoder.
        encoder_attention_heads (`int`, *optional*, defaults to 8):
            Heads of the deformable attention.
        encoder_feedforward_dim (`int`, *optional*, defaults to 1024):
            Hidden size of the pixel decoder's FFN.
        encoder_num_points (`int`, *optional*, defaults to 4):
            Sampling points per head and level of the deformable attention.
        num_feature_levels (`int`, *optional*, defaults to 3):
            Scales fed to the deformable encoder and, round robin, to the decoder (1/32, 1/16, 1/8).
        common_stride (`int`, *optional*, defaults to 4):
            Stride of the per-pixel embeddings (the mask resolution).
        dropout (`float`, *optional*, defaults to 0.0):
            Dropout everywhere (the paper removes it, section 3.2.3).
        activation_function (`str`, *optional*, defaults to `"relu"`):
            Activation of the FFNs.
        deform_attn_implementation (`str`, *optional*, defaults to `"auto"`):
            `"auto"`, `"cuda"`, `"cpu"` (the compiled kernels) or `"pytorch"`; the environment variable
            `M2F_DEFORM_ATTN` overrides it. `"auto"` uses the CUDA kernel on GPUs and the CPU kernel once built.
        deform_attn_fp32 (`bool`, *optional*, defaults to `True`):
            Run the deformable-attention encoder in float32 under autocast, as the original does.
        class_weight, mask_weight, dice_weight (`float`, *optional*, defaults to 2.0, 5.0, 5.0):
            Loss weights of the classification, sigmoid cross-entropy and dice terms.
        no_object_weight (`float`, *optional*, defaults to 0.1):
            Weight of the "no object" class in the classification loss.
        train_num_points (`int`, *optional*, defaults to 12544):
            Points K sampled per mask in matching and loss (paper 3.3).
        oversample_ratio (`float`, *optional*, defaults to 3.0):
            Oversampling of candidate points for importance sampling.
        importance_sample_ratio (`float`, *optional*, defaults to 0.75):
            Fraction of the K points chosen by uncertainty.
        use_auxiliary_loss (`bool`, *optional*, defaults to `True`):
            Deep supervision on the learnable queries' prediction and every decoder layer.
        output_auxiliary_logits (`bool`, *optional*):
            Return the per-layer predictions in the output by default.
        ignore_value (`int`, *optional*, defaults to 255):
            Label value ignored by semantic label maps.
        init_std (`float`, *optional*, defaults to 0.02):
            Standard deviation of normal initialisers.
        init_xavier_std (`float`, *optional*, defaults to 1.0):
            Gain of the Xavier initialisers in the transformer decoder.
        thing_ids (`list[int]`, *optional*):
            Model class indices (keys of `id2label`) of the countable "thing" classes; the others are "stuff". `None`
            means unknown (every class may be an instance). Instance inference keeps only thing classes when known,
            as the original does.
        dataset_category_ids (`list[int]`, *optional*):
            Per model class index, the category id the training dataset used for it (COCO's 1..90, say), so that
            predictions can be written back with the dataset's own ids. `None`: the class index is the id.
    """

    model_type = "m2f_hf"
    attribute_map = {"hidden_size": "hidden_dim", "num_hidden_layers": "decoder_layers"}

    backbone_config: Any = None
    timm_backbone: str | None = None
    timm_out_indices: list[int] | None = None
    timm_backbone_kwargs: dict | None = None
    num_channels: int | None = None
    use_pretrained_backbone: bool = False
    feature_size: int = 256
    mask_feature_size: int = 256
    hidden_dim: int = 256
    num_queries: int = 100
    decoder_layers: int = 9
    num_attention_heads: int = 8
    dim_feedforward: int = 2048
    pre_norm: bool = False
    enforce_input_projection: bool = False
    encoder_layers: int = 6
    encoder_attention_heads: int = 8
    encoder_feedforward_dim: int = 1024
    encoder_num_points: int = 4
    num_feature_levels: int = 3
    common_stride: int = 4
    dropout: float = 0.0
    activation_function: str = "relu"
    deform_attn_implementation: str = "auto"
    deform_attn_fp32: bool = True
    class_weight: float = 2.0
    mask_weight: float = 5.0
    dice_weight: float = 5.0
    no_object_weight: float = 0.1
    train_num_points: int = 12544
    oversample_ratio: float = 3.0
    importance_sample_ratio: float = 0.75
    use_auxiliary_loss: bool = True
    output_auxiliary_logits: bool | None = None
    ignore_value: int = 255
    init_std: float = 0.02
    init_xavier_std: float = 1.0
    thing_ids: list[int] | None = None
    dataset_category_ids: list[int] | None = None

    @classmethod
    def from_dict(cls, config_dict: dict[str, Any], **kwargs):
        """Also reads a transformers-native Mask2Former config (`model_type` "mask2former"), converting its fields."""
        if config_dict.get("model_type") == "mask2former":
            from transformers import Mask2FormerConfig

            from .convert.transformers_native import config_from_transformers

            logger.info("converting a transformers-native Mask2Former config to M2FConfig")
            return_unused = kwargs.pop("return_unused_kwargs", False)
            source = Mask2FormerConfig.from_dict(config_dict)
            config = config_from_transformers(source)
            for key, value in kwargs.items():
                if hasattr(config, key):
                    setattr(config, key, value)
            return (config, {}) if return_unused else config
        return super().from_dict(config_dict, **kwargs)

    def __post_init__(self, **kwargs):
        super().__post_init__(**kwargs)
        self.backbone_config = self._resolve_backbone_config(self.backbone_config, self.timm_backbone)
        if self.timm_backbone_kwargs is None:
            self.timm_backbone_kwargs = {}
        self._resolve_num_channels()
        self.validate()

    def _resolve_num_channels(self) -> None:
        """One channel count for the config and its backbone (see `num_channels`); a conflict raises."""
        if self.num_channels is not None and (
            isinstance(self.num_channels, bool) or not isinstance(self.num_channels, int) or self.num_channels < 1
        ):
            raise ValueError(f"num_channels={self.num_channels!r} must be a positive integer.")
        if self.backbone_config is not None:
            name, backbone = "backbone_config.num_channels", getattr(self.backbone_config, "num_channels", None)
        else:
            name, backbone = 'timm_backbone_kwargs["in_chans"]', self.timm_backbone_kwargs.get("in_chans")
        if self.num_channels is None:
            self.num_channels = int(backbone) if backbone is not None else 3
        elif backbone is not None and backbone != self.num_channels and not self._backbone_channels_default(backbone):
            raise ValueError(
                f"num_channels={self.num_channels} but {name}={backbone}; give one channel count (num_channels is "
                "carried to the backbone)."
            )
        if self.backbone_config is not None:
            self.backbone_config.num_channels = self.num_channels
        elif self.num_channels != 3 or "in_chans" in self.timm_backbone_kwargs:
            self.timm_backbone_kwargs = {**self.timm_backbone_kwargs, "in_chans": self.num_channels}

    def _backbone_channels_default(self, backbone_channels: int) -> bool:
        # a transformers backbone config always has num_channels; 3 is its default, so only another value conflicts
        return self.backbone_config is not None and backbone_channels == 3

    @staticmethod
    def _resolve_backbone_config(backbone_config, timm_backbone):
        from transformers import CONFIG_MAPPING

        if backbone_config is not None and timm_backbone is not None:
            raise ValueError(
                f"backbone_config and timm_backbone are mutually exclusive, got backbone_config of type "
                f"{type(backbone_config).__name__} and timm_backbone={timm_backbone!r}; pass only one."
            )
        if timm_backbone is not None:
            return None
        if backbone_config is None:
            backbone_config = dict(_DEFAULT_BACKBONE)
        if isinstance(backbone_config, dict):
            backbone_config = dict(backbone_config)
            model_type = backbone_config.pop("model_type", None)
            if model_type not in CONFIG_MAPPING:
                raise ValueError(
                    f"backbone_config has model_type={model_type!r}, expected a transformers model type with a "
                    "backbone (e.g. 'resnet', 'swin', 'convnext', 'dinov2')."
                )
            backbone_config = CONFIG_MAPPING[model_type](**backbone_config)
        if not isinstance(backbone_config, PretrainedConfig):
            raise TypeError(
                f"backbone_config must be a dict or a PretrainedConfig, got {type(backbone_config).__name__}."
            )
        return backbone_config

    def validate(self) -> None:
        """Check the hyper-parameters against each other; raises `ValueError` naming the offending field."""
        if self.hidden_dim % self.num_attention_heads:
            raise ValueError(
                f"hidden_dim={self.hidden_dim} must be divisible by num_attention_heads={self.num_attention_heads}."
            )
        if self.feature_size % self.encoder_attention_heads:
            raise ValueError(
                f"feature_size={self.feature_size} must be divisible by "
                f"encoder_attention_heads={self.encoder_attention_heads}."
            )
        if self.feature_size % 32:
            raise ValueError(
                f"feature_size={self.feature_size} must be a multiple of 32 (the pixel decoder uses 32-group GroupNorm)."
            )
        for name in ("num_queries", "decoder_layers", "encoder_layers", "encoder_num_points", "num_feature_levels"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name}={value!r} must be a positive integer.")
        if self.num_feature_levels > 3:
            raise ValueError(
                f"num_feature_levels={self.num_feature_levels} must be at most 3 (the backbone's 1/8, 1/16 and 1/32 maps)."
            )
        if self.deform_attn_implementation not in _DEFORM_ATTN_IMPLEMENTATIONS:
            raise ValueError(
                f"deform_attn_implementation={self.deform_attn_implementation!r} must be one of "
                f"{_DEFORM_ATTN_IMPLEMENTATIONS}."
            )
        if self.common_stride not in (2, 4, 8):
            raise ValueError(f"common_stride={self.common_stride} must be 2, 4 or 8.")
        if not 0.0 <= self.importance_sample_ratio <= 1.0:
            raise ValueError(f"importance_sample_ratio={self.importance_sample_ratio} must lie in [0, 1].")
        if self.oversample_ratio < 1.0:
            raise ValueError(f"oversample_ratio={self.oversample_ratio} must be >= 1.")
        if self.timm_out_indices is not None and len(self.timm_out_indices) != 4:
            raise ValueError(
                f"timm_out_indices={self.timm_out_indices} must name 4 feature levels (strides 4, 8, 16 and 32)."
            )
        self._validate_class_metadata()
        if self.backbone_config is not None:
            out_features = getattr(self.backbone_config, "out_features", None)
            if out_features is not None and len(out_features) < 4:
                raise ValueError(
                    f"backbone_config.out_features={out_features} gives {len(out_features)} feature levels; Mask2Former "
                    "needs 4 (strides 4, 8, 16 and 32), e.g. ['stage1', 'stage2', 'stage3', 'stage4']."
                )

    def _validate_class_metadata(self) -> None:
        num_labels = len(self.id2label) if self.id2label is not None else None
        if self.thing_ids is not None:
            ids = list(self.thing_ids)
            if any(not isinstance(i, int) or isinstance(i, bool) for i in ids) or len(set(ids)) != len(ids):
                raise ValueError(f"thing_ids={ids!r} must be distinct integer class indices.")
            if num_labels is not None and any(not 0 <= i < num_labels for i in ids):
                raise ValueError(
                    f"thing_ids={ids!r} must lie in [0, num_labels={num_labels}) (model class indices, the keys of "
                    "id2label)."
                )
            self.thing_ids = sorted(ids)
        if self.dataset_category_ids is not None:
            ids = list(self.dataset_category_ids)
            if any(not isinstance(i, int) or isinstance(i, bool) for i in ids) or len(set(ids)) != len(ids):
                raise ValueError(f"dataset_category_ids={ids!r} must be distinct integers (one per class).")
            if num_labels is not None and len(ids) != num_labels:
                raise ValueError(
                    f"dataset_category_ids has {len(ids)} entries but the config has num_labels={num_labels}; "
                    "expected one dataset category id per model class index."
                )
            self.dataset_category_ids = ids

    @property
    def stuff_ids(self) -> list[int] | None:
        """Model class indices of the stuff classes, or `None` when `thing_ids` is unknown."""
        if self.thing_ids is None:
            return None
        things = set(self.thing_ids)
        return [i for i in range(self.num_labels) if i not in things]
