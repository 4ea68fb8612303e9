"""Model registry, loading (tiny random-init models), resolution changes and the zero-shot head."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")
timm = pytest.importorskip("timm")
open_clip = pytest.importorskip("open_clip")

import torch.nn.functional as F  # noqa: E402

from extract import hub, zeroshot  # noqa: E402
from extract.models import LoadedModel, get_pos_embed, load_model, set_image_size  # noqa: E402
from extract.spec import models as spec  # noqa: E402
from extract.spec.models import REGISTRY, ModelSpec, Preprocess, list_models, resolve_model  # noqa: E402

FEW_CLASSES = ["tench", "goldfish", "great white shark", "tiger shark", "hammerhead shark"]
FEW_TEMPLATES = ["a photo of a {}.", "a bad photo of the {}.", "itap of a {}."]
RESOLUTIONS = [112, 224, 336, 512, 640]


def _images(n: int, size: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, 3, size, size, generator=torch.Generator().manual_seed(seed))


def _load(name: str, **kw) -> LoadedModel:
    spec = resolve_model(name)
    if spec.kind == "zero-shot" and "head" not in kw:
        kw.setdefault("class_names", FEW_CLASSES)
        kw.setdefault("templates", FEW_TEMPLATES)
    return load_model(spec, pretrained=False, **kw)


# ---- registry -------------------------------------------------------------------------------------

def test_paper_models_are_exactly_the_papers():
    expect = {
        "convnext-sup": ("timm", "convnext_base", "fb_in22k_ft_in1k", "classifier", False),
        "vit-sup": ("timm", "deit3_base_patch16_224", "fb_in22k_ft_in1k", "classifier", True),
        "vit-clip": ("open_clip", "ViT-B-16", "laion400m_e31", "zero-shot", True),
        "convnext-clip": ("open_clip", "convnext_base", "laion400m_s13b_b51k", "zero-shot", False),
    }
    for mid, (family, arch, tag, kind, is_vit) in expect.items():
        s = REGISTRY[mid]
        assert (s.family, s.arch, s.tag, s.kind, s.is_vit, s.demo) == (family, arch, tag, kind, is_vit, False)
    assert spec.PAPER_MODELS == ("convnext-sup", "vit-sup", "convnext-clip", "vit-clip")


def test_registry_has_appendix_sizes_and_demo_models():
    for mid in ["convnext-sup-tiny", "convnext-sup-small", "convnext-sup-large", "convnext-sup-xlarge",
                "vit-sup-small", "vit-sup-large", "vit-sup-huge",
                "convnext-clip-large", "convnext-clip-xxlarge", "vit-clip-large", "vit-clip-huge"]:
        assert mid in REGISTRY and not REGISTRY[mid].demo
    demos = {"demo-convnext-sup", "demo-vit-sup", "demo-convnext-clip", "demo-vit-clip"}
    assert demos == {s.id for s in list_models() if s.demo} == set(spec.DEMO_MODELS)
    assert not any(s.demo for s in list_models(include_demo=False))
    assert tuple(s.id for s in list_models()[:4]) == spec.PAPER_MODELS


def test_every_registry_entry_is_in_the_librarys_own_list():
    timm_pretrained = set(timm.list_pretrained())
    clip_pretrained = set(open_clip.list_pretrained())
    hub.register_demo_configs()
    clip_archs = set(open_clip.list_models())
    for s in REGISTRY.values():
        if s.family == "timm":
            assert f"{s.arch}.{s.tag}" in timm_pretrained, s.id
        else:
            assert s.arch in clip_archs, s.id
            if s.tag is not None:
                assert (s.arch, s.tag) in clip_pretrained, s.id
            else:
                assert s.demo, s.id
        if s.paper_top1 is not None:
            assert 0 < s.paper_top1 < 100


def _photo_like(w: int, h: int, seed: int):
    """A smooth RGB image with detail (gradients plus noise), so that resampling differences show."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w]
    base = np.stack([x / w * 255, y / h * 255, (x + y) / (w + h) * 255], axis=-1)
    return Image.fromarray(np.clip(base + rng.normal(0, 25, (h, w, 3)), 0, 255).astype(np.uint8))


def _our_pixels(img, pre):
    from extract.imaging import apply_transform
    from extract.tensors import normalize, to_uint8_tensor

    return normalize(to_uint8_tensor(apply_transform(img, "center", pre)), pre)


def test_supervised_preprocessing_is_the_papers_torchvision_pipeline():
    """The paper's code (main.py of kirill-vish/Beyond-INet) evaluates the supervised models with
    Resize(256, bilinear) -> CenterCrop(224) -> ToTensor -> Normalize(ImageNet mean/std)."""
    T = pytest.importorskip("torchvision.transforms")
    from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD

    paper = T.Compose([T.Resize(256, interpolation=T.InterpolationMode.BILINEAR), T.CenterCrop(224),
                       T.ToTensor(), T.Normalize(IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD)])
    sup = [s for s in REGISTRY.values() if s.family == "timm"]
    assert {s.id for s in sup} >= {"convnext-sup", "vit-sup"}
    for k, (w, h) in enumerate([(500, 375), (375, 500), (300, 300)]):
        img = _photo_like(w, h, k)
        ref = paper(img)
        for s in sup:
            assert torch.allclose(_our_pixels(img, s.preprocess), ref, atol=1e-6), s.id


def test_clip_preprocessing_is_open_clips_own_eval_transform():
    """Each CLIP entry sees what open_clip's eval transform for that model and tag gives."""
    from open_clip.constants import OPENAI_DATASET_MEAN, OPENAI_DATASET_STD

    hub.register_demo_configs()
    images = [_photo_like(w, h, k) for k, (w, h) in enumerate([(500, 375), (375, 500)])]
    for s in REGISTRY.values():
        if s.family != "open_clip":
            continue
        size = open_clip.get_model_config(s.arch)["vision_cfg"]["image_size"]
        pcfg = (open_clip.get_pretrained_cfg(s.arch, s.tag) if s.tag else None) or {}
        theirs = open_clip.image_transform(size, is_train=False, mean=pcfg.get("mean") or OPENAI_DATASET_MEAN,
                                           std=pcfg.get("std") or OPENAI_DATASET_STD,
                                           interpolation=pcfg.get("interpolation") or "bicubic",
                                           resize_mode=pcfg.get("resize_mode") or "shortest")
        for img in images:
            assert torch.allclose(_our_pixels(img, s.preprocess), theirs(img), atol=1e-6), s.id


def test_paper_models_see_224_pixels():
    for mid in spec.PAPER_MODELS:
        assert REGISTRY[mid].preprocess.crop == 224
    assert REGISTRY["vit-clip"].preprocess.geometry_key() == (224, 224, "bicubic")
    assert REGISTRY["convnext-sup"].preprocess.geometry_key() == (256, 224, "bilinear")


def test_spec_to_dict_is_json_and_weights_ids(tmp_path):
    s = REGISTRY["convnext-sup"]
    d = json.loads(json.dumps(s.to_dict()))
    assert d["preprocess"] == s.preprocess.to_dict()
    assert d["arch"] == "convnext_base" and d["tag"] == "fb_in22k_ft_in1k"
    assert s.weights_id() == "timm/convnext_base.fb_in22k_ft_in1k"
    assert REGISTRY["vit-clip"].weights_id() == "open_clip/ViT-B-16/laion400m_e31"
    assert REGISTRY["demo-vit-sup"].weights_id().startswith("random-init:seed=")
    assert s.weights_id(pretrained=False) == f"random-init:seed={spec.random_init_seed(s)}"
    f = tmp_path / "w.bin"
    f.write_bytes(b"abc")
    assert s.weights_id(weights=f) == "file:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"


def test_resolve_user_specs_derive_preprocessing():
    s = resolve_model("timm:convnext_base.fb_in22k_ft_in1k")
    assert (s.id, s.family, s.arch, s.tag, s.kind, s.is_vit) == (
        "timm:convnext_base.fb_in22k_ft_in1k", "timm", "convnext_base", "fb_in22k_ft_in1k", "classifier", False)
    # timm's crop_pct 0.875 -> Resize(256), timm's bicubic
    assert (s.preprocess.resize, s.preprocess.crop, s.preprocess.interpolation) == (256, 224, "bicubic")
    s = resolve_model("timm:deit3_base_patch16_224.fb_in22k_ft_in1k")
    assert s.is_vit and (s.preprocess.resize, s.preprocess.crop) == (224, 224)  # crop_pct 1.0
    s = resolve_model("timm:resnet50")  # default tag filled in
    assert s.tag and s.id == f"timm:resnet50.{s.tag}" and not s.is_vit
    s = resolve_model("open_clip:ViT-L-14/laion2b_s32b_b82k")
    assert (s.family, s.arch, s.tag, s.kind, s.is_vit) == (
        "open_clip", "ViT-L-14", "laion2b_s32b_b82k", "zero-shot", True)
    assert s.preprocess.geometry_key() == (224, 224, "bicubic")
    s = resolve_model("open_clip:convnext_large_d/laion2b_s26b_b102k_augreg")
    assert not s.is_vit and s.preprocess.crop == 256
    assert resolve_model("vit-clip") is REGISTRY["vit-clip"]
    assert resolve_model(REGISTRY["vit-sup"]) is REGISTRY["vit-sup"]


@pytest.mark.parametrize("bad,hint", [
    ("convnext-sub", "convnext-sup"),
    ("vit_clip", "vit-clip"),
    ("timm:convnxt_base", "convnext_base"),
    ("timm:convnext_base.fb_in22k_ft_in2k", "fb_in22k_ft_in1k"),
    ("open_clip:ViT-B-61/laion400m_e31", "ViT-B-16"),
    ("open_clip:ViT-B-16/laion400m_e33", "laion400m_e3"),
])
def test_resolve_unknown_did_you_mean(bad, hint):
    with pytest.raises(ValueError) as e:
        resolve_model(bad)
    assert "did you mean" in str(e.value) and hint in str(e.value)


def test_resolve_unknown_lists_available():
    with pytest.raises(ValueError) as e:
        resolve_model("no-such-model")
    assert "available:" in str(e.value) and "convnext-sup" in str(e.value) and "timm:<name>" in str(e.value)
    with pytest.raises(ValueError, match="needs a pretrained tag"):
        resolve_model("open_clip:ViT-B-16")


# ---- loading ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["demo-convnext-sup", "demo-vit-sup", "demo-convnext-clip", "demo-vit-clip"])
def test_demo_models_load_and_forward(name):
    m = _load(name, precision="bf16")   # bf16 asked, CPU: fp32 used and reported
    assert isinstance(m, torch.nn.Module) and not m.training
    assert m.precision == "fp32"
    x = _images(3, 224)
    with torch.no_grad():
        logits, feats = m(x)
    k = 1000 if m.spec.kind == "classifier" else len(FEW_CLASSES)
    assert logits.shape == (3, k) and logits.dtype == torch.float32
    assert feats.shape == (3, m.feature_dim) and feats.dtype == torch.float32
    assert m.num_classes == k
    assert torch.isfinite(logits).all() and torch.isfinite(feats).all()
    # deterministic random init: a second load gives the same outputs
    m2 = _load(name)
    with torch.no_grad():
        logits2, feats2 = m2(x)
    assert torch.equal(logits, logits2) and torch.equal(feats, feats2)
    d = json.loads(json.dumps(m.describe()))
    assert d["precision"] == "fp32" and d["image_size"] == 224 and d["preprocess"] == m.spec.preprocess.to_dict()
    assert d["model"] == m.spec.to_dict() and d["weights_id"] == m.weights_id
    assert {"torch", "timm", "open_clip"} <= set(d["software"])
    if m.spec.kind == "classifier":
        assert d["logit_kind"] == "classifier"
    else:
        zs = d["logit_kind"]["zero-shot"]
        assert zs["templates"] == len(FEW_TEMPLATES) and zs["logit_scale"] == 100.0


def test_demo_models_refuse_hub_weights():
    with pytest.raises(ValueError, match="random init"):
        load_model("demo-vit-sup", pretrained=True)


@pytest.mark.parametrize("name", ["demo-convnext-sup", "demo-vit-sup"])
def test_timm_logits_are_the_models_own_head_on_the_pooled_features(name):
    m = _load(name)
    net = m.backbone
    x = _images(2, 224, seed=1)
    with torch.no_grad():
        logits, feats = m(x)
        ref_logits = net(x)
        ref_feats = net.forward_head(net.forward_features(x), pre_logits=True)
    assert torch.allclose(logits, ref_logits, atol=1e-5)
    assert torch.allclose(feats, ref_feats, atol=1e-6)
    assert m.feature_dim == net.num_features == 64


# ---- resolution --------------------------------------------------------------------------------

def _grid(pos: torch.Tensor, prefix: int) -> tuple[torch.Tensor, torch.Tensor]:
    pos = pos.detach().reshape(-1, pos.shape[-1])
    g = int(round((pos.shape[0] - prefix) ** 0.5))
    return pos[:prefix], pos[prefix:].reshape(g, g, -1)


def _reference_resample(pos: torch.Tensor, prefix: int, new_grid: int) -> torch.Tensor:
    """Independent: bicubic + antialias on the patch grid, prefix (class) tokens kept."""
    tok, grid = _grid(pos, prefix)
    img = grid.permute(2, 0, 1)[None].float()
    out = F.interpolate(img, size=(new_grid, new_grid), mode="bicubic", antialias=True, align_corners=False)
    return torch.cat([tok, out[0].permute(1, 2, 0).reshape(new_grid * new_grid, -1)], dim=0)


@pytest.mark.parametrize("name", ["demo-vit-sup", "demo-vit-clip"])
def test_vit_runs_at_every_resolution(name):
    native = _load(name)
    pos0 = get_pos_embed(native.backbone).detach().clone()
    prefix = 1  # class token
    for r in RESOLUTIONS:
        m = _load(name, image_size=r)
        assert m.image_size == r
        with torch.no_grad():
            logits, feats = m(_images(1, r))
        assert logits.shape == (1, m.num_classes) and feats.shape == (1, native.feature_dim)
        assert torch.isfinite(logits).all()
        pos = get_pos_embed(m.backbone).detach().reshape(-1, pos0.shape[-1])
        g = r // 16
        assert pos.shape[0] == g * g + prefix
        assert torch.allclose(pos, _reference_resample(pos0, prefix, g), atol=1e-6), r
        desc = m.describe()
        assert desc["pos_embed"] == ("native" if r == 224 else f"resampled bicubic antialias 224->{r}")
        if r == 224:  # nothing is resampled: exactly the original
            assert torch.equal(get_pos_embed(m.backbone), get_pos_embed(native.backbone))


@pytest.mark.parametrize("name", ["demo-vit-sup", "demo-vit-clip"])
def test_pos_embed_round_trip_returns_the_original(name):
    m = _load(name)
    pos = get_pos_embed(m.backbone)
    flat = pos.detach().reshape(-1, pos.shape[-1])
    g = int(round((flat.shape[0] - 1) ** 0.5))
    # a smooth embedding (what trained position embeddings look like) survives 224 -> r -> 224 for r > 224
    # (upsampling then antialiased downsampling; going down to 112 first is lossy by nature and is
    # checked exactly against an independent resample in test_vit_runs_at_every_resolution instead)
    yy, xx = torch.meshgrid(torch.linspace(0, 1, g), torch.linspace(0, 1, g), indexing="ij")
    freqs = torch.linspace(0.5, 2.0, flat.shape[1])
    smooth = torch.sin(xx[..., None] * freqs) + torch.cos(yy[..., None] * freqs * 0.7)
    new = torch.cat([flat[:1], smooth.reshape(g * g, -1)]).reshape(pos.shape)
    with torch.no_grad():
        pos.copy_(new)
    for r in (336, 512, 640):
        set_image_size(m.backbone, r)
        assert get_pos_embed(m.backbone).reshape(-1, flat.shape[1]).shape[0] == (r // 16) ** 2 + 1
        set_image_size(m.backbone, 224)
        back = get_pos_embed(m.backbone).detach().reshape(pos.shape)
        assert torch.equal(back.reshape(-1, flat.shape[1])[0], new.reshape(-1, flat.shape[1])[0])  # class token kept
        assert (back - new).abs().max() < 0.015 * new.abs().max(), r
        with torch.no_grad():
            get_pos_embed(m.backbone).copy_(new)  # restart from the exact original
    set_image_size(m.backbone, 224)
    assert torch.equal(get_pos_embed(m.backbone).detach().reshape(pos.shape), new)  # 224 -> 224 is the identity


def test_convnets_run_at_other_resolutions_unchanged():
    m = _load("demo-convnext-sup", image_size=336)
    with torch.no_grad():
        logits, feats = m(_images(1, 336))
    assert logits.shape == (1, 1000) and m.describe()["pos_embed"] == "native"


# ---- zero-shot head --------------------------------------------------------------------------------

def test_class_names_and_templates_come_from_the_sources():
    from open_clip.zero_shot_metadata import IMAGENET_CLASSNAMES, OPENAI_IMAGENET_TEMPLATES

    names = zeroshot.imagenet_class_names()
    assert len(names) == 1000 and names == list(IMAGENET_CLASSNAMES)
    temps = zeroshot.openai_templates()
    assert len(temps) == 80 and all("{}" in t for t in temps)
    assert [t.replace("{}", "dog") for t in temps] == [t("dog") for t in OPENAI_IMAGENET_TEMPLATES]


@pytest.mark.parametrize("arch", list(spec.DEMO_OPEN_CLIP_CONFIGS))
def test_zeroshot_head_matches_independent_computation(arch):
    hub.register_demo_configs()
    torch.manual_seed(0)
    clip = open_clip.create_model(arch).eval()
    tok = open_clip.get_tokenizer(arch)
    names = FEW_CLASSES + ["jack-o'-lantern", "Bernese Mountain Dog"]
    head = zeroshot.build_zeroshot_head(clip, tok, names, FEW_TEMPLATES, "cpu", batch_size=4)
    assert head.dtype == np.float32 and head.shape == (len(names), 64)
    rows = []
    with torch.no_grad():
        for c in names:
            e = clip.encode_text(tok([t.format(c) for t in FEW_TEMPLATES])).float()
            e = e / e.norm(dim=-1, keepdim=True)
            m = e.mean(dim=0)
            rows.append((m / m.norm()).numpy())
    assert np.allclose(head, np.stack(rows), atol=2e-5)
    assert np.allclose(np.linalg.norm(head, axis=1), 1, atol=1e-5)


@pytest.mark.parametrize("name", ["demo-vit-clip", "demo-convnext-clip"])
def test_clip_logits_are_100_times_cosine(name):
    m = _load(name)
    x = _images(4, 224, seed=3)
    with torch.no_grad():
        logits, feats = m(x)
        emb = m.backbone(x).double()          # the image embedding, computed again
    head = torch.from_numpy(m.zero_shot_head).double()
    cos = (emb / emb.norm(dim=-1, keepdim=True)) @ (head / head.norm(dim=-1, keepdim=True)).T
    assert torch.allclose(logits.double(), 100 * cos, atol=1e-4)
    assert torch.allclose(feats.double(), emb, atol=1e-6)  # features are the unnormalised embedding
    # a given head is used as is
    rng = np.random.default_rng(0)
    given = rng.standard_normal((7, m.feature_dim)).astype(np.float32)
    given /= np.linalg.norm(given, axis=1, keepdims=True)
    m2 = load_model(name, pretrained=False, head=given)
    with torch.no_grad():
        logits2, _ = m2(x)
    cos2 = (emb / emb.norm(dim=-1, keepdim=True)) @ torch.from_numpy(given).double().T
    assert logits2.shape == (4, 7) and torch.allclose(logits2.double(), 100 * cos2, atol=1e-4)
    assert m2.describe()["logit_kind"]["zero-shot"]["head_source"] == "given"


def test_clip_head_from_the_loader_equals_build_zeroshot_head():
    m = _load("demo-vit-clip")
    hub.register_demo_configs()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(spec.random_init_seed(m.spec))
        clip = open_clip.create_model(m.spec.arch).eval()
    ref = zeroshot.build_zeroshot_head(clip, open_clip.get_tokenizer(m.spec.arch), FEW_CLASSES, FEW_TEMPLATES, "cpu")
    assert np.allclose(m.zero_shot_head, ref, atol=1e-6)


# ---- weights from a file ----------------------------------------------------------------------------

def test_timm_weights_from_file(tmp_path):
    from safetensors.torch import save_file

    src = _load("demo-vit-sup")
    sd = {k: v.clone() * 0.5 for k, v in src.backbone.state_dict().items()}
    st, pt = tmp_path / "w.safetensors", tmp_path / "w.pth"
    save_file(sd, str(st))
    torch.save({"model": {f"module.{k}": v for k, v in sd.items()}}, pt)
    x = _images(2, 224, seed=4)
    outs = []
    for path in (st, pt):
        m = load_model("demo-vit-sup", weights=path)
        assert m.weights_id == f"file:{spec.file_sha256(path)}" and not m.pretrained
        with torch.no_grad():
            outs.append(m(x))
    assert torch.equal(outs[0][0], outs[1][0])
    with torch.no_grad():
        assert not torch.allclose(outs[0][0], src(x)[0])   # really the file's weights
    # a file at another resolution still loads at 224 weights then resamples
    m = load_model("demo-vit-sup", weights=st, image_size=336)
    assert get_pos_embed(m.backbone).shape[1] == 21 * 21 + 1


def test_open_clip_weights_from_file(tmp_path):
    from safetensors.torch import save_file

    hub.register_demo_configs()
    arch = spec.REGISTRY["demo-vit-clip"].arch
    torch.manual_seed(123)
    clip = open_clip.create_model(arch).eval()
    path = tmp_path / "clip.safetensors"
    save_file({k: v.contiguous() for k, v in clip.state_dict().items()}, str(path))
    m = load_model("demo-vit-clip", weights=path, class_names=FEW_CLASSES, templates=FEW_TEMPLATES)
    x = _images(2, 224, seed=5)
    with torch.no_grad():
        _, feats = m(x)
        assert torch.allclose(feats, clip.encode_image(x), atol=1e-5)
    ref = zeroshot.build_zeroshot_head(clip, open_clip.get_tokenizer(arch), FEW_CLASSES, FEW_TEMPLATES, "cpu")
    assert np.allclose(m.zero_shot_head, ref, atol=1e-6)


class _NotATensor:
    pass


def test_arbitrary_pickles_are_refused(tmp_path):
    path = tmp_path / "evil.pth"
    torch.save({"model": {"x": torch.zeros(1)}, "obj": _NotATensor()}, path)
    with pytest.raises(Exception) as e:
        load_model("demo-vit-sup", weights=path)
    assert "weights_only" in str(e.value) or "Unpickl" in type(e.value).__name__ or "Unsupported" in str(e.value)
    with pytest.raises(FileNotFoundError):
        load_model("demo-vit-sup", weights=tmp_path / "missing.pth")


# ---- GPU (skipped without CUDA) ----------------------------------------------------------------------

@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("name", ["demo-vit-sup", "demo-vit-clip"])
def test_bf16_backbone_fp32_head_on_cuda(name):
    m = _load(name, device="cuda", precision="bf16")
    if not torch.cuda.is_bf16_supported():
        pytest.skip("no bf16 on this GPU")
    assert m.precision == "bf16"
    x = _images(4, 224).cuda()
    with torch.no_grad():
        logits, feats = m(x)
        ref = _load(name, device="cuda", precision="fp32")
        logits32, feats32 = ref(x)
    assert logits.dtype == feats.dtype == torch.float32
    assert torch.allclose(feats, feats32, rtol=0.1, atol=0.1)
    # the head is applied in fp32 to the (bf16-computed) features
    if m.spec.kind == "classifier":
        head_logits = m.backbone.get_classifier()(feats)
    else:
        head_logits = 100 * F.normalize(feats, dim=-1) @ m.zs_head.T
    assert torch.allclose(logits, head_logits, atol=1e-5)


def test_spec_dataclasses_are_frozen_and_hashable():
    s = REGISTRY["vit-sup"]
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.arch = "x"  # type: ignore[misc]
    assert hash(s) == hash(ModelSpec(**{f: getattr(s, f) for f in s.__dataclass_fields__}))
    p = Preprocess(256, 224, "bilinear", [0.5, 0.5, 0.5], [0.5, 0.5, 0.5])
    assert p.mean == (0.5, 0.5, 0.5) and p.to_dict()["mean"] == [0.5, 0.5, 0.5]


@pytest.mark.parametrize("name", ["demo-convnext-sup", "demo-vit-clip"])
def test_channels_last_gives_the_same_logits_as_the_contiguous_layout(name):
    """What load_model(channels_last=True) changes on a GPU is the memory order, not the numbers."""
    x = _images(3, 224)
    plain, nhwc = _load(name, device="cpu", precision="fp32"), _load(name, device="cpu", precision="fp32",
                                                                     channels_last=True)
    assert nhwc.channels_last and nhwc.describe()["memory_format"] == "channels_last"
    convs = [m.weight for m in nhwc.modules() if isinstance(m, torch.nn.Conv2d)]
    assert convs and all(w.is_contiguous(memory_format=torch.channels_last) for w in convs)
    with torch.inference_mode():
        (a, fa), (b, fb) = plain.forward(x), nhwc.forward(x)
    torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(fb, fa, rtol=1e-4, atol=1e-4)
