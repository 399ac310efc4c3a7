"""Model tests: parity with transformers' Mask2Former on the same weights, contract, errors, save/load."""

from __future__ import annotations

import pytest
import torch
from transformers import (
    AutoConfig,
    AutoModel,
    AutoModelForUniversalSegmentation,
    Mask2FormerForUniversalSegmentation,
    ResNetConfig,
    SwinConfig,
)

from m2f_hf import M2FConfig, M2FForUniversalSegmentation, M2FModel
from m2f_hf.convert import config_from_transformers, state_dict_from_transformers, state_dict_to_transformers
from m2f_hf.testing import tiny_config, tiny_transformers_config

TOLERANCE = 1e-4


def _pair(transformers_config, seed: int = 0):
    """transformers' model with random weights and ours converted from it."""
    torch.manual_seed(seed)
    reference = Mask2FormerForUniversalSegmentation(transformers_config).eval()
    ours = M2FForUniversalSegmentation(config_from_transformers(transformers_config)).eval()
    ours.load_state_dict(state_dict_from_transformers(reference.state_dict()), strict=True)
    return reference, ours


def _max_logit_diff(reference_output, our_output) -> float:
    diffs = [
        (reference_output.class_queries_logits - our_output.class_queries_logits).abs().max().item(),
        (reference_output.masks_queries_logits - our_output.masks_queries_logits).abs().max().item(),
    ]
    assert len(reference_output.auxiliary_logits) == len(our_output.auxiliary_logits)
    for theirs, ours in zip(reference_output.auxiliary_logits, our_output.auxiliary_logits):
        for key in ("class_queries_logits", "masks_queries_logits"):
            assert theirs[key].shape == ours[key].shape
            diffs.append((theirs[key] - ours[key]).abs().max().item())
    return max(diffs)


@pytest.mark.parametrize("backbone", ["resnet", "swin"])
def test_logits_match_transformers_tiny(backbone):
    reference, ours = _pair(tiny_transformers_config(backbone))
    pixel_values = torch.randn(2, 3, 64, 96)  # batch 2, non-square
    with torch.no_grad():
        expected = reference(pixel_values, output_auxiliary_logits=True)
        actual = ours(pixel_values, output_auxiliary_logits=True)
    assert actual.class_queries_logits.shape == (2, 6, 6)
    assert actual.masks_queries_logits.shape == (2, 6, 16, 24)
    assert len(actual.auxiliary_logits) == 3
    assert _max_logit_diff(expected, actual) <= TOLERANCE


@pytest.mark.slow  # reason: full-size R50 and Swin-T models take about a minute each on 2 CPU cores
@pytest.mark.parametrize("backbone", ["resnet50", "swin_tiny"])
def test_logits_match_transformers_full_size(backbone):
    stages = ["stage1", "stage2", "stage3", "stage4"]
    if backbone == "resnet50":
        backbone_config = ResNetConfig(out_features=stages)  # transformers' default ResNetConfig is ResNet-50
    else:
        backbone_config = SwinConfig(embed_dim=96, depths=[2, 2, 6, 2], num_heads=[3, 6, 12, 24], out_features=stages)
    from transformers import Mask2FormerConfig

    reference, ours = _pair(Mask2FormerConfig(backbone_config=backbone_config, num_labels=133))
    assert ours.config.hidden_dim == 256 and ours.config.num_queries == 100 and ours.config.decoder_layers == 9
    pixel_values = torch.randn(2, 3, 256, 352)
    with torch.no_grad():
        expected = reference(pixel_values, output_auxiliary_logits=True)
        actual = ours(pixel_values, output_auxiliary_logits=True)
    assert _max_logit_diff(expected, actual) <= TOLERANCE


def test_state_dict_round_trip_with_transformers_is_exact():
    reference, ours = _pair(tiny_transformers_config("swin"))
    back = state_dict_to_transformers(ours.state_dict())
    expected = {k: v for k, v in reference.state_dict().items() if k != "criterion.empty_weight"}
    assert set(back) == set(expected)
    for key, tensor in expected.items():
        assert torch.equal(back[key], tensor), key


def test_unmapped_key_is_an_error():
    reference, _ = _pair(tiny_transformers_config())
    state_dict = dict(reference.state_dict())
    state_dict["model.some_new_module.weight"] = torch.zeros(1)
    with pytest.raises(KeyError, match="some_new_module"):
        state_dict_from_transformers(state_dict)


@pytest.mark.parametrize(
    "name,kwargs", [("resnet18", {}), ("swin_tiny_patch4_window7_224", {"strict_img_size": False})]
)
def test_timm_backbone(name, kwargs):
    config = tiny_config(f"timm:{name}", timm_backbone_kwargs=kwargs, use_pretrained_backbone=False)
    model = M2FForUniversalSegmentation(config).eval()
    assert len(model.model.backbone.channels) == 4
    with torch.no_grad():
        output = model(torch.randn(1, 3, 64, 96))
    assert output.masks_queries_logits.shape == (1, 6, 16, 24)
    assert torch.isfinite(output.masks_queries_logits).all()


def test_timm_weights_survive_post_init():
    """Our initialiser must not overwrite a timm backbone's own initialisation (e.g. BN weights of 1)."""
    model = M2FForUniversalSegmentation(tiny_config("timm:resnet18"))
    bn = model.model.backbone.body.bn1
    assert torch.equal(bn.weight, torch.ones_like(bn.weight))


@pytest.mark.parametrize("backbone", ["resnet", "swin"])
def test_every_parameter_gets_a_gradient(backbone):
    torch.manual_seed(0)
    model = M2FForUniversalSegmentation(tiny_config(backbone)).train()
    output = model(torch.randn(2, 3, 64, 64), output_auxiliary_logits=True)
    loss = output.class_queries_logits.square().mean() + output.masks_queries_logits.square().mean()
    for aux in output.auxiliary_logits:
        loss = loss + aux["class_queries_logits"].square().mean() + aux["masks_queries_logits"].square().mean()
    loss.backward()
    # transformers' SwinBackbone keeps the classifier's final `swin.layernorm` but never calls it (it normalises each
    # stage with `hidden_states_norms`); that parameter is unused in transformers' Mask2Former too.
    unused_by_backbone = {"model.backbone.body.swin.layernorm.weight", "model.backbone.body.swin.layernorm.bias"}
    no_grad = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    assert set(no_grad) <= unused_by_backbone, no_grad
    bad = [n for n, p in model.named_parameters() if p.grad is not None and not torch.isfinite(p.grad).all()]
    assert not bad, bad


def test_training_loss_backpropagates_to_every_parameter():
    pytest.importorskip("m2f_hf.loss")
    torch.manual_seed(0)
    model = M2FForUniversalSegmentation(tiny_config()).train()
    masks = [(torch.rand(2, 64, 64) > 0.5).float(), (torch.rand(1, 64, 64) > 0.5).float()]
    classes = [torch.tensor([0, 3]), torch.tensor([4])]
    output = model(torch.randn(2, 3, 64, 64), mask_labels=masks, class_labels=classes)
    assert output.loss.ndim == 0 and torch.isfinite(output.loss)
    output.loss.backward()
    no_grad = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    assert not no_grad, no_grad


def test_save_and_load_is_bitwise_exact(tmp_path):
    torch.manual_seed(0)
    model = M2FForUniversalSegmentation(tiny_config("swin")).eval()
    model.save_pretrained(tmp_path)
    assert (tmp_path / "model.safetensors").is_file()
    loaded = M2FForUniversalSegmentation.from_pretrained(tmp_path).eval()
    pixel_values = torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        a, b = model(pixel_values), loaded(pixel_values)
    assert torch.equal(a.class_queries_logits, b.class_queries_logits)
    assert torch.equal(a.masks_queries_logits, b.masks_queries_logits)
    for key, tensor in model.state_dict().items():
        assert torch.equal(tensor, loaded.state_dict()[key]), key


def test_auto_classes(tmp_path):
    model = M2FForUniversalSegmentation(tiny_config())
    model.save_pretrained(tmp_path)
    config = AutoConfig.from_pretrained(tmp_path)
    assert isinstance(config, M2FConfig) and config.model_type == "m2f_hf"
    assert isinstance(AutoModelForUniversalSegmentation.from_pretrained(tmp_path), M2FForUniversalSegmentation)
    assert isinstance(AutoModel.from_config(config), M2FModel)


def test_config_round_trip_keeps_backbone_and_labels(tmp_path):
    config = tiny_config("swin", num_labels=7)
    config.save_pretrained(tmp_path)
    loaded = M2FConfig.from_pretrained(tmp_path)
    assert loaded.backbone_config.model_type == "swin"
    assert loaded.backbone_config.out_features == ["stage1", "stage2", "stage3", "stage4"]
    assert loaded.num_labels == 7 and loaded.id2label[6] == "class_6"
    assert loaded.decoder_layers == 3


def test_config_defaults_are_the_papers():
    config = M2FConfig()
    assert (config.hidden_dim, config.num_queries, config.decoder_layers, config.num_attention_heads) == (
        256,
        100,
        9,
        8,
    )
    assert (config.dim_feedforward, config.encoder_layers, config.encoder_feedforward_dim) == (2048, 6, 1024)
    assert (config.encoder_num_points, config.num_feature_levels, config.mask_feature_size, config.dropout) == (
        4,
        3,
        256,
        0.0,
    )
    assert (config.class_weight, config.mask_weight, config.dice_weight, config.no_object_weight) == (
        2.0,
        5.0,
        5.0,
        0.1,
    )
    assert (config.train_num_points, config.oversample_ratio, config.importance_sample_ratio) == (12544, 3.0, 0.75)
    assert config.backbone_config.model_type == "resnet" and config.backbone_config.depths == [3, 4, 6, 3]


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(hidden_dim=30), "hidden_dim=30 must be divisible by num_attention_heads=8"),
        (dict(feature_size=48, encoder_attention_heads=4), "feature_size=48 must be a multiple of 32"),
        (dict(deform_attn_implementation="triton"), "deform_attn_implementation='triton'"),
        (dict(num_queries=0), "num_queries=0"),
        (dict(timm_backbone="resnet18", backbone_config={"model_type": "resnet"}), "mutually exclusive"),
        (dict(backbone_config={"model_type": "not_a_model"}), "backbone_config has model_type='not_a_model'"),
        (
            dict(backbone_config={"model_type": "resnet", "out_features": ["stage3", "stage4"]}),
            "gives 2 feature levels",
        ),
    ],
)
def test_config_validation_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        M2FConfig(**kwargs)


def test_backbone_that_cannot_be_built_is_a_clear_error():
    with pytest.raises(ValueError, match="timm_backbone='no_such_model'"):
        M2FForUniversalSegmentation(tiny_config("timm:no_such_model"))


def test_backbone_with_wrong_strides_is_a_clear_error():
    with pytest.raises(ValueError, match="feature levels"):
        M2FForUniversalSegmentation(tiny_config("timm:resnet18", timm_out_indices=[1, 2, 3], num_labels=2))


@pytest.mark.parametrize(
    "pixel_values,error,match",
    [
        (torch.randn(1, 4, 64, 64), ValueError, "has 4 channels"),
        (torch.randn(3, 64, 64), ValueError, "must be a 4-D tensor"),
        (torch.randn(1, 3, 16, 64), ValueError, "smaller than the backbone's largest stride"),
        (torch.zeros(1, 3, 64, 64, dtype=torch.uint8), TypeError, "floating-point"),
    ],
)
def test_bad_input_is_a_clear_error(pixel_values, error, match):
    model = M2FForUniversalSegmentation(tiny_config()).eval()
    with pytest.raises(error, match=match):
        model(pixel_values)


def test_labels_must_come_together():
    model = M2FForUniversalSegmentation(tiny_config())
    with pytest.raises(ValueError, match="mask_labels and class_labels must be given together"):
        model(torch.randn(1, 3, 64, 64), mask_labels=[torch.zeros(1, 64, 64)])


def test_pixel_mask_is_accepted_and_does_not_change_the_math():
    model = M2FForUniversalSegmentation(tiny_config()).eval()
    pixel_values = torch.randn(2, 3, 64, 64)
    pixel_mask = torch.ones(2, 64, 64, dtype=torch.long)
    pixel_mask[1, :, 48:] = 0
    with torch.no_grad():
        a = model(pixel_values)
        b = model(pixel_values, pixel_mask=pixel_mask)
    assert torch.equal(a.masks_queries_logits, b.masks_queries_logits)


def test_hidden_states_attentions_and_tuple_output():
    config = tiny_config()
    model = M2FForUniversalSegmentation(config).eval()
    with torch.no_grad():
        output = model(torch.randn(2, 3, 64, 96), output_hidden_states=True, output_attentions=True)
        plain = model(torch.randn(2, 3, 64, 96), return_dict=False)
    assert [f.shape[-1] for f in output.encoder_hidden_states] == [24, 12, 6, 3]
    assert [f.shape[-2:] for f in output.pixel_decoder_hidden_states] == [(2, 3), (4, 6), (8, 12)]
    assert len(output.transformer_decoder_hidden_states) == config.decoder_layers + 1
    assert len(output.attentions) == config.decoder_layers
    self_weights, cross_weights = output.attentions[0]
    assert self_weights.shape == (2, 4, 6, 6)
    assert cross_weights.shape == (2, 4, 6, 2 * 3)  # first layer attends to the 1/32 level
    assert torch.allclose(cross_weights.sum(-1), torch.ones(()))
    assert len(output.pixel_decoder_attentions) == config.encoder_layers
    assert isinstance(plain, tuple) and plain[0].shape == (2, 6, 6)


def test_eager_attention_path_matches_sdpa():
    """output_attentions switches the decoder to an explicit softmax; the logits must not change."""
    model = M2FForUniversalSegmentation(tiny_config()).eval()
    pixel_values = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        a = model(pixel_values)
        b = model(pixel_values, output_attentions=True)
    assert torch.allclose(a.masks_queries_logits, b.masks_queries_logits, atol=1e-5)


def test_fully_masked_query_attends_everywhere():
    """paper 3.2.1: a query whose previous mask is empty must not produce NaN (it attends to the whole map)."""
    from m2f_hf.transformer_decoder import MaskedAttentionDecoder

    decoder = MaskedAttentionDecoder(
        in_channels=32,
        hidden_dim=32,
        mask_feature_size=32,
        num_queries=4,
        num_layers=1,
        num_heads=4,
        ffn_dim=64,
        dropout=0.0,
        activation="relu",
        pre_norm=False,
        num_levels=3,
        enforce_input_projection=False,
    )
    mask_features = -torch.ones(1, 32, 16, 16) * 100  # every query's mask logits are very negative or positive
    queries = decoder.layer_norm(decoder.query_features.weight[None])
    _, allowed = decoder.predict_masks(queries, mask_features, (4, 4))
    assert allowed.shape == (1, 1, 4, 16)
    assert allowed.any(-1).all()
    features = tuple(torch.randn(1, 32, s, s) for s in (2, 4, 8))
    output = decoder(features, mask_features)
    assert all(torch.isfinite(m).all() for m in output.masks_queries_logits)


def test_bf16_autocast_keeps_the_deformable_encoder_in_float32():
    model = M2FForUniversalSegmentation(tiny_config()).eval()
    pixel_values = torch.randn(1, 3, 64, 64)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        fp32_encoder = model(pixel_values)
    assert fp32_encoder.pixel_decoder_last_hidden_state.dtype == torch.float32
    half = M2FForUniversalSegmentation(tiny_config(deform_attn_fp32=False)).eval()
    half.load_state_dict(model.state_dict())
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        half_encoder = half(pixel_values)
    assert half_encoder.pixel_decoder_last_hidden_state.dtype == torch.bfloat16
    with torch.no_grad():
        reference = model(pixel_values)
    error_fp32 = (fp32_encoder.masks_queries_logits.float() - reference.masks_queries_logits).abs().mean()
    assert torch.isfinite(half_encoder.masks_queries_logits.float()).all()
    assert error_fp32 < 0.5  # bf16 decoder on top of an fp32 encoder stays close to the fp32 model


def test_gradient_checkpointing_gives_the_same_gradients():
    torch.manual_seed(0)
    model = M2FForUniversalSegmentation(tiny_config()).train()
    pixel_values = torch.randn(1, 3, 64, 64)

    def grads():
        model.zero_grad()
        model(pixel_values).masks_queries_logits.square().mean().backward()
        return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}

    plain = grads()
    model.activation_checkpointing_enable()
    checkpointed = grads()
    assert plain.keys() == checkpointed.keys()
    for name in plain:
        torch.testing.assert_close(plain[name], checkpointed[name], rtol=1e-4, atol=1e-6)


def test_torch_compile_matches_eager():
    """Inductor compiles the whole tiny model (about 45 s on 2 idle CPU cores, so it stays in the default run)."""
    model = M2FForUniversalSegmentation(tiny_config()).eval()
    pixel_values = torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        eager = model(pixel_values)
        compiled = torch.compile(model)(pixel_values)
    assert (eager.masks_queries_logits - compiled.masks_queries_logits).abs().max() <= TOLERANCE
    assert (eager.class_queries_logits - compiled.class_queries_logits).abs().max() <= TOLERANCE


def test_convnext_and_single_scale_dinov2_backbones():
    """ConvNeXt is hierarchical; DINOv2 gives every layer at the patch stride and is resized into a 4-level pyramid."""
    from transformers import ConvNextConfig, Dinov2Config

    stages = ["stage1", "stage2", "stage3", "stage4"]
    backbones = {
        "convnext": ConvNextConfig(hidden_sizes=[8, 16, 32, 64], depths=[1, 1, 1, 1], out_features=stages),
        "dinov2": Dinov2Config(
            hidden_size=32,
            num_hidden_layers=4,
            num_attention_heads=2,
            intermediate_size=64,
            patch_size=14,
            image_size=56,
            out_features=stages,
        ),
    }
    for name, backbone_config in backbones.items():
        model = M2FForUniversalSegmentation(tiny_config(backbone_config=backbone_config)).eval()
        assert model.model.backbone.single_scale == (name == "dinov2")
        with torch.no_grad():
            output = model(torch.randn(1, 3, 64, 96), output_hidden_states=True)
        assert [tuple(f.shape[-2:]) for f in output.encoder_hidden_states] == [(16, 24), (8, 12), (4, 6), (2, 3)], name
        assert output.masks_queries_logits.shape == (1, 6, 16, 24), name


def test_inference_without_intermediate_masks_gives_identical_outputs():
    """Without auxiliary outputs the decoder skips the intermediate full-resolution masks and computes each attention
    mask from only the logits its bilinear resize reads: the outputs must not change at all."""
    model = M2FForUniversalSegmentation(tiny_config()).eval()
    pixel_values = torch.randn(2, 3, 64, 96)  # masks 16x24; levels 2x3 (factor 8), 4x6 (4), 8x12 (2)
    with torch.no_grad():
        full = model(pixel_values, output_auxiliary_logits=True)
        lean = model(pixel_values)
        lean_base = model.model(pixel_values, output_intermediate_masks=False)
    assert lean.auxiliary_logits is None
    assert torch.equal(full.masks_queries_logits, lean.masks_queries_logits)
    assert torch.equal(full.class_queries_logits, lean.class_queries_logits)
    assert all(m is None for m in lean_base.masks_queries_logits[:-1])


@pytest.mark.parametrize("size", [(128, 128), (96, 128), (16, 24)])
def test_resized_mask_logits_equal_the_full_resize(size):
    from torch.nn import functional as F

    from m2f_hf.transformer_decoder import _mask_logits, _resized_mask_logits

    generator = torch.Generator().manual_seed(0)
    embeddings = torch.randn(2, 10, 32, generator=generator)
    features = torch.randn(2, 32, *size, generator=generator)
    full = _mask_logits(embeddings, features)
    for factor in (1, 2, 4, 8):
        target = (size[0] // factor, size[1] // factor)
        expected = F.interpolate(full, size=target, mode="bilinear", align_corners=False)
        assert torch.equal(_resized_mask_logits(embeddings, features, target), expected), factor


def test_mask_logits_backward_skipping_zero_rows_equals_dense_products():
    """Only matched queries get mask gradients; the backward multiplies just those rows, with the same result."""
    from m2f_hf.transformer_decoder import _mask_logits

    torch.manual_seed(0)
    embeddings = torch.randn(2, 7, 5, dtype=torch.float64, requires_grad=True)
    features = torch.randn(2, 5, 4, 6, dtype=torch.float64, requires_grad=True)
    grad = torch.randn(2, 7, 4, 6, dtype=torch.float64)
    grad[0, [1, 2, 5]] = 0  # unmatched queries
    grad[1] = 0  # an image without targets
    sparse = torch.autograd.grad(_mask_logits(embeddings, features), (embeddings, features), grad)
    dense = torch.autograd.grad(torch.einsum("bqc,bchw->bqhw", embeddings, features), (embeddings, features), grad)
    for got, expected in zip(sparse, dense):
        torch.testing.assert_close(got, expected)
    assert torch.autograd.gradcheck(_mask_logits, (embeddings, features))


@pytest.mark.parametrize("deform_attn_fp32", [True, False])
def test_training_step_under_bf16_autocast(deform_attn_fp32):
    """Mixed-precision training (accelerate's --mixed_precision bf16): forward and loss under autocast, backward."""
    torch.manual_seed(0)
    model = M2FForUniversalSegmentation(tiny_config(deform_attn_fp32=deform_attn_fp32)).train()
    pixel_values = torch.randn(2, 3, 64, 64)
    mask_labels = [(torch.rand(3, 64, 64) > 0.5).float() for _ in range(2)]
    class_labels = [torch.tensor([0, 1, 2]), torch.tensor([1, 1, 0])]
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = model(pixel_values=pixel_values, mask_labels=mask_labels, class_labels=class_labels).loss
    loss.backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert all(g.dtype == torch.float32 for g in grads)


def test_config_class_metadata_round_trip_and_validation(tmp_path):
    config = tiny_config(num_labels=4, thing_ids=[3, 1], dataset_category_ids=[1, 5, 7, 90])
    assert config.thing_ids == [1, 3]
    assert config.stuff_ids == [0, 2]
    config.save_pretrained(tmp_path)
    loaded = M2FConfig.from_pretrained(tmp_path)
    assert loaded.thing_ids == [1, 3] and loaded.dataset_category_ids == [1, 5, 7, 90]
    assert tiny_config().thing_ids is None and tiny_config().stuff_ids is None
    with pytest.raises(ValueError, match="thing_ids"):
        tiny_config(num_labels=4, thing_ids=[4])
    with pytest.raises(ValueError, match="thing_ids"):
        tiny_config(num_labels=4, thing_ids=[1, 1])
    with pytest.raises(ValueError, match="dataset_category_ids has 2 entries"):
        tiny_config(num_labels=4, dataset_category_ids=[1, 2])
