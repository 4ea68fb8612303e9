"""The real weight-loading path, offline: registry models with hub weights read from a local Hugging Face cache.

The test writes random weights into the cache layout huggingface_hub reads (``models--org--name/refs/main``,
``snapshots/<revision>/<file>`` -> ``blobs/<sha256>``), for timm (``model.safetensors``) and open_clip
(``open_clip_model.safetensors``), then runs ``extract run`` under ``HF_HUB_OFFLINE=1`` on ``vit-sup-small``
(timm DeiT3-S) and ``vit-clip`` (open_clip ViT-B/16; its zero-shot head is put in the store first, as a
previous run would have, since building it means 80,000 prompts through the text tower). The logits must
equal a direct library load (``timm.create_model(..., pretrained=True)``, ``open_clip.create_model(...,
pretrained=tag)``) in another process on the same images, preprocessed by torchvision. Without the cache,
the run is one line naming the model, the hub id and ``--weights``, and no store is written.
"""
from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("timm")
pytest.importorskip("open_clip")

import zarr  # noqa: E402

from imagenet_val import make_imagenet_val  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
TIMM_MODEL, TIMM_HUB = "vit-sup-small", "timm/deit3_small_patch16_224.fb_in22k_ft_in1k"
CLIP_MODEL, CLIP_HUB = "vit-clip", "timm/vit_base_patch16_clip_224.laion400m_e31"
REVISION = hashlib.sha1(b"random weights for the tests").hexdigest()
N = 4


def put_in_hub_cache(cache: Path, repo: str, filename: str, tensors: dict) -> Path:
    """A snapshot of ``repo`` holding ``filename`` (safetensors of ``tensors``), as huggingface_hub lays it out."""
    from safetensors.torch import save_file

    folder = cache / f"models--{repo.replace('/', '--')}"
    (folder / "refs").mkdir(parents=True, exist_ok=True)
    (folder / "refs" / "main").write_text(REVISION)
    (folder / "blobs").mkdir(exist_ok=True)
    tmp = folder / "blobs" / "incoming"
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(tmp))
    blob = folder / "blobs" / hashlib.sha256(tmp.read_bytes()).hexdigest()
    tmp.rename(blob)
    snapshot = folder / "snapshots" / REVISION
    snapshot.mkdir(parents=True, exist_ok=True)
    (snapshot / filename).symlink_to(Path("..") / ".." / "blobs" / blob.name)
    return snapshot / filename


def random_state(build, head: str | None = None) -> dict:
    """A fresh random init, every parameter jittered (no zero-initialised tensor left) and the classifier
    ``head`` widened (a fresh timm ViT says almost nothing: its logits are ~1e-3)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(7)
        model = build()
        with torch.no_grad():
            for name, p in model.named_parameters():
                p += 0.02 * torch.randn_like(p)
                if head and name.startswith(head):
                    p.normal_(0, 1)
    # float16 halves the files; the libraries cast into their float32 parameters
    return {k: v.detach().to(torch.float16) for k, v in model.state_dict().items()}


def offline_env(hf_home: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HF_")}
    return {**env, "HF_HOME": str(hf_home), "HF_HUB_CACHE": str(hf_home / "hub"), "HF_HUB_OFFLINE": "1",
            "PYTHONPATH": os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")])}


def extract(env: dict, *args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "extract", *map(str, args)], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=900)


DIRECT = r"""
import json, sys
import numpy as np, open_clip, timm, torch
from PIL import Image
from torchvision import transforms as T

files, head = json.loads(sys.argv[1]), np.load(sys.argv[2])
def batch(size, crop, interpolation, mean, std):
    tf = T.Compose([T.Resize(size, interpolation=interpolation), T.CenterCrop(crop), T.ToTensor(), T.Normalize(mean, std)])
    return torch.stack([tf(Image.open(f).convert("RGB")) for f in files])
with torch.inference_mode():
    sup = timm.create_model("deit3_small_patch16_224.fb_in22k_ft_in1k", pretrained=True).eval()
    x = batch(256, 224, T.InterpolationMode.BILINEAR, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
    a = sup(x).numpy()
    clip = open_clip.create_model("ViT-B-16", pretrained="laion400m_e31").eval()
    x = batch(224, 224, T.InterpolationMode.BICUBIC, (0.48145466, 0.4578275, 0.40821073),
              (0.26862954, 0.26130258, 0.27577711))
    f = torch.nn.functional.normalize(clip.encode_image(x), dim=-1)
    b = (100 * f @ torch.from_numpy(head).T).numpy()
np.savez(sys.argv[3], sup=a, clip=b)
"""


def test_registry_models_with_hub_weights_from_an_offline_cache_equal_a_direct_library_load(tmp_path):
    import open_clip
    import timm

    from extract.heads_store import head_attrs, write_head
    from extract.spec.models import resolve_model
    from extract.zeroshot import imagenet_class_names, openai_templates
    import schemas

    hub = tmp_path / "hf" / "hub"
    put_in_hub_cache(hub, TIMM_HUB, "model.safetensors",
                     random_state(lambda: timm.create_model("deit3_small_patch16_224", pretrained=False), "head."))
    put_in_hub_cache(hub, CLIP_HUB, "open_clip_model.safetensors",
                     random_state(lambda: open_clip.create_model("ViT-B-16", pretrained=None)))
    data = make_imagenet_val(tmp_path / "data", N, size=(90, 70))
    store = tmp_path / "s.zarr"
    # the zero-shot head a previous run would have stored: random unit rows, under the attrs the run expects
    spec = resolve_model(CLIP_MODEL)
    head = np.random.default_rng(0).standard_normal((1000, 512)).astype(np.float32)
    head /= np.linalg.norm(head, axis=1, keepdims=True)
    names, templates = list(imagenet_class_names()), list(openai_templates())
    write_head(schemas.open_root(str(store)), CLIP_MODEL, head,
               head_attrs(spec, spec.weights_id(pretrained=True), names, templates, "imagenet-1k"))

    env = offline_env(tmp_path / "hf")
    p = extract(env, "run", "--store", store, "--models", TIMM_MODEL, CLIP_MODEL, "--datasets", "imagenet-val",
                "--data-root", data, "--device", "cpu", "--batch-size", N, "--allow-partial", "--no-progress")
    assert p.returncode == 0, p.stderr

    files = sorted(str(f) for f in (data / "imagenet-val").glob("*.JPEG"))
    np.save(tmp_path / "head.npy", head)
    q = subprocess.run([sys.executable, "-c", DIRECT, json.dumps(files), str(tmp_path / "head.npy"),
                        str(tmp_path / "direct.npz")], env=env, capture_output=True, text=True, timeout=900)
    assert q.returncode == 0, q.stderr
    direct = np.load(tmp_path / "direct.npz")

    g = zarr.open_group(str(store), mode="r")["imagenet-val/center"]
    for model, hub_id, key, weights_id in ((TIMM_MODEL, TIMM_HUB, "sup", TIMM_HUB),
                                           (CLIP_MODEL, CLIP_HUB, "clip", "open_clip/ViT-B-16/laion400m_e31")):
        run = g[model]
        assert run.attrs["weights_id"] == weights_id
        assert run.attrs["weights_source"]["repo"] == hub_id and run.attrs["weights_source"]["revision"] == REVISION
        ours = np.asarray(run["logits"][...])
        assert np.asarray(run["valid"][...]).all()
        assert np.abs(direct[key]).max() > 0.5  # logits that say something
        np.testing.assert_allclose(ours, direct[key], rtol=1e-4, atol=1e-4, err_msg=model)
        assert (ours.argmax(1) == direct[key].argmax(1)).all()


def test_without_network_or_cache_the_run_says_which_weights_and_how_to_go_on(tmp_path):
    data = make_imagenet_val(tmp_path / "data", 2, size=(40, 30))
    env = offline_env(tmp_path / "empty-hf")
    for model, hub_id in ((TIMM_MODEL, TIMM_HUB), (CLIP_MODEL, CLIP_HUB)):
        store = tmp_path / f"{model}.zarr"
        p = extract(env, "run", "--store", store, "--models", model, "--datasets", "imagenet-val", "--data-root",
                    data, "--device", "cpu", "--allow-partial", "--no-progress")
        lines = [x for x in p.stderr.splitlines() if x.startswith("extract run: error:")]
        assert p.returncode == 2 and len(lines) == 1 and "Traceback" not in p.stderr, p.stderr
        assert model in lines[0] and hub_id in lines[0] and f"--weights {model}=FILE" in lines[0], lines[0]
        assert "HF_HUB_OFFLINE" in lines[0] and str(tmp_path / "empty-hf" / "hub") in lines[0]
        assert not store.exists()  # refused before anything was written
